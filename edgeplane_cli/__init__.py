"""``edgeplane``: the operator's command line."""

from __future__ import annotations

import sys

import typer

from edgeplane_cli import (
    audit,
    definitions,
    dev,
    drift,
    enroll,
    params,
    principals,
    rollouts,
    sites,
)
from edgeplane_cli.client import ApiError
from edgeplane_cli.config import ConfigMissing

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="Edgeplane: the physical layer of large edge fleets.")
sites.app.command("enroll", help=enroll.HELP)(enroll.enroll)
app.add_typer(sites.app, name="sites")
app.add_typer(sites.app, name="site", hidden=True)  # `edgeplane site enroll` too
app.add_typer(rollouts.app, name="rollout")
app.add_typer(params.app, name="params")
app.add_typer(dev.app, name="dev")
definitions.register(app)
app.command("drift")(drift.drift)
app.add_typer(principals.app, name="principals")
app.command("audit")(audit.audit)


def main() -> None:
    from edgeplane_dev.mosquitto import MosquittoMissing
    from edgeplane_dev.stack import StackError

    try:
        app()
    except (ApiError, ConfigMissing, StackError, MosquittoMissing, TimeoutError) as exc:
        print(f"edgeplane: {exc}", file=sys.stderr)
        sys.exit(2)
