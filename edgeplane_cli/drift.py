"""``edgeplane drift``: machines whose observed state differs from their desired state."""

from __future__ import annotations

import json as jsonlib
from typing import Annotated, Any
from urllib.parse import urlencode

import typer
from rich.table import Table

from edgeplane_cli.options import ApiUrl, Json, Token, client
from edgeplane_cli.render import console, print_json


def drift(
    site: Annotated[str | None, typer.Option(help="one site only")] = None,
    api_url: ApiUrl = None, token: Token = None, json: Json = False,
) -> None:
    """Drift per machine: desired (blueprint revision) against what its BMC reads."""
    query = f"?{urlencode({'site': site})}" if site else ""
    data = client(api_url, token).get(f"/drift{query}")
    print_json(data) if json else console.print(drift_table(data))


def drift_table(data: dict[str, Any]) -> Table:
    table = Table(title=f"{len(data['machines'])} machines with a desired state; "
                        f"{data['drifted']} drifted")
    for column in ("site", "machine", "blueprint", "state", "differences", "observed"):
        table.add_column(column)
    for row in data["machines"]:
        if row["in_sync"]:
            state, differences = "[green]in sync[/]", "-"
        elif row["observed"] is None:
            state, differences = "[dim]not observed yet[/]", "-"
        else:
            state = "[red]drifted[/]"
            differences = "\n".join(
                f"{d['field']}: {_text(d['observed'])} (desired {_text(d['desired'])})"
                for d in row["drift"])
        blueprint = f"{row['blueprint']} r{row['revision']}" if row["blueprint"] else "-"
        table.add_row(row["site_id"], row["machine_id"], blueprint, state, differences,
                      row["observed_at"] or "-")
    return table


def _text(value: Any) -> str:
    return value if isinstance(value, str) else jsonlib.dumps(value)
