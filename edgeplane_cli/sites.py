"""``edgeplane sites``: the fleet's sites and their machines."""

from __future__ import annotations

from typing import Annotated

import typer

from edgeplane_cli.options import ApiUrl, Json, Token, client
from edgeplane_cli.render import (
    cache_line,
    console,
    machines_table,
    print_json,
    sites_table,
)

app = typer.Typer(no_args_is_help=True, help="Sites and their machines.")


@app.command("list")
def list_sites(api_url: ApiUrl = None, token: Token = None, json: Json = False) -> None:
    """Every site, with its presence."""
    data = client(api_url, token).get("/sites")
    print_json(data) if json else console.print(sites_table(data["sites"]))


@app.command("show")
def show_site(site_id: str, api_url: ApiUrl = None, token: Token = None,
              json: Json = False) -> None:
    """One site, its artifact cache and its machines (as its gateway reported them)."""
    data = client(api_url, token).get(f"/sites/{site_id}")
    if json:
        print_json(data)
        return
    console.print(sites_table([data["site"]]))
    console.print(cache_line(data["site"]))
    console.print(machines_table(site_id, data["machines"]))


@app.command("register")
def register_site(
    site_id: str,
    name: Annotated[str | None, typer.Option()] = None,
    region: Annotated[str | None, typer.Option()] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", help="repeatable")] = None,
    timezone: Annotated[str | None, typer.Option(help="IANA name, e.g. Europe/Paris")] = None,
    api_url: ApiUrl = None, token: Token = None,
) -> None:
    """Create or update a site."""
    body = {k: v for k, v in {"name": name, "region": region, "tags": tag,
                              "timezone": timezone}.items() if v is not None}
    print_json(client(api_url, token).put(f"/sites/{site_id}", body))
