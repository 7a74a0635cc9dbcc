"""``edge-gateway versions show|adopt``: the versions folder, for the operator on site."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

from edge_gateway import __version__
from edge_gateway.errors import GatewayError
from edge_gateway.upgrade.layout import Layout, LayoutError


def versions_command(command: str, root: Path) -> int:
    layout = Layout(root)
    try:
        if command == "adopt":
            return adopt(layout)
        trial, outcome = layout.read_trial(), layout.read_outcome()
        print(json.dumps({
            "root": str(layout.root), "current": layout.version_of("current"),
            "previous": layout.version_of("previous"), "installed": layout.installed(),
            "trial": asdict(trial) if trial else None,
            "outcome": asdict(outcome) if outcome else None}, indent=2))
        return 0
    except (LayoutError, OSError) as exc:
        raise GatewayError(f"versions folder {layout.root}: {exc}") from None


def adopt(layout: Layout) -> int:
    """This installation (the environment running this command) as version
    ``__version__``, current unless a current version is there already."""
    prefix = Path(sys.prefix)
    if layout.adopt(prefix, __version__):
        print(f"{layout.root}: version {__version__} ({prefix}) is current")
    else:
        print(f"{layout.root}: version {layout.version_of('current')} is current already; "
              "nothing changed")
    return 0
