"""``edgeplane drift``: machines whose observed state differs from their desired state, and
gateways that run another version than the one desired."""

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
    """Drift per machine: desired (blueprint revision) against what its BMC reads; per
    site's gateway: the version a gateway.upgrade rollout asked for against the one it runs."""
    query = f"?{urlencode({'site': site})}" if site else ""
    data = client(api_url, token).get(f"/drift{query}")
    if json:
        print_json(data)
        return
    console.print(drift_table(data))
    if data.get("gateways"):
        console.print(gateway_drift_table(data))


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


def gateway_drift_table(data: dict[str, Any]) -> Table:
    gateways = data.get("gateways") or []
    table = Table(title=f"{len(gateways)} gateways with a desired version; "
                        f"{data.get('gateways_drifted', 0)} drifted")
    for column in ("site", "state", "desired", "running", "online", "rollout"):
        table.add_column(column)
    for row in gateways:
        table.add_row(row["site_id"], "[green]in sync[/]" if row["in_sync"] else
                      "[red]drifted[/]", row["desired"] or "-", row["running"] or "-",
                      "yes" if row["online"] else "no", row["rollout_id"] or "-")
    return table


def _text(value: Any) -> str:
    return value if isinstance(value, str) else jsonlib.dumps(value)
