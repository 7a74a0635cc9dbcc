"""``edgeplane params explain|variation``: where every value comes from, and how much varies."""

from __future__ import annotations

import json as jsonlib
from typing import Annotated, Any
from urllib.parse import urlencode

import typer
from rich.table import Table

from edgeplane_cli.options import ApiUrl, Json, Token, client
from edgeplane_cli.render import console, print_json

app = typer.Typer(no_args_is_help=True, help="Resolved parameters across the fleet.")


def _value(value: Any) -> str:
    return value if isinstance(value, str) else jsonlib.dumps(value)


@app.command("explain")
def explain(
    site: Annotated[str, typer.Option(help="the site id")],
    machine: Annotated[str | None, typer.Option(help="one of its machines")] = None,
    blueprint: Annotated[str | None, typer.Option(
        help="include this blueprint's defaults")] = None,
    api_url: ApiUrl = None, token: Token = None, json: Json = False,
) -> None:
    """Every resolved value, the profile and level it comes from, and what it overrides."""
    query = {"site": site, **({"machine": machine} if machine else {}),
             **({"blueprint": blueprint} if blueprint else {})}
    data = client(api_url, token).get(f"/params/explain?{urlencode(query)}")
    print_json(data) if json else console.print(explain_table(data))


def explain_table(data: dict[str, Any]) -> Table:
    where = f"site {data['site']}" + (
        f" machine {data['machine']} (class {data['machine_class'] or 'none'})"
        if data.get("machine") else "")
    groups = ", ".join(data["groups"]) or "none"
    table = Table(title=f"{where}; groups: {groups}")
    for column in ("parameter", "value", "from", "overrides"):
        table.add_column(column)
    for param in data["params"]:
        source = f"{param['level']} {param['profile'] or '(blueprint default)'}"
        overrides = "\n".join(f"{o['level']} {o['profile'] or '(default)'}: {_value(o['value'])}"
                              for o in param["overrides"])
        if param["redundant"]:
            overrides += "\n[yellow](redundant: same value)[/]"
        table.add_row(param["name"], _value(param["value"]), source, overrides or "-")
    return table


@app.command("variation")
def variation(api_url: ApiUrl = None, token: Token = None, json: Json = False) -> None:
    """Which parameters vary across the fleet, how many sites override each, and which
    overrides are redundant."""
    data = client(api_url, token).get("/params/variation")
    if json:
        print_json(data)
        return
    console.print(variation_table(data))
    for conflict in data["conflicts"]:
        console.print(f"[red]conflict:[/] {conflict}")
    console.print(f"computed in {data['computed_in_ms']} ms")


def variation_table(data: dict[str, Any]) -> Table:
    table = Table(title=f"{data['sites']} sites; {data['customized_sites']} with overrides "
                        "of their own that change something")
    for column in ("parameter", "values", "fleet", "group", "site", "class/machine",
                   "no value", "redundant"):
        table.add_column(column)
    for param in data["parameters"]:
        levels = param["sites_by_level"]
        table.add_row(param["name"], str(param["distinct_values"]),
                      *(str(levels.get(level, 0)) for level in ("fleet", "group", "site")),
                      str(param["machine_overrides"]), str(param["sites_without_value"]),
                      ", ".join(param["redundant_overrides"]) or "-")
    return table
