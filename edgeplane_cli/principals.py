"""``edgeplane principals``: who may call the API, with which role (an admin's commands)."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from edgeplane_cli.options import ApiUrl, Json, Token, client
from edgeplane_cli.render import console, print_json

ROLES = ("viewer", "operator", "admin")

app = typer.Typer(no_args_is_help=True,
                  help="Principals: named API tokens with a role (viewer, operator, admin).")


@app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="lowercase letters, digits and '-'")],
    role: Annotated[str, typer.Option(help="viewer, operator or admin")],
    api_url: ApiUrl = None, token: Token = None, json: Json = False,
) -> None:
    """Create a principal and print its token: shown this once, only its hash is kept."""
    if role not in ROLES:
        raise typer.BadParameter(f"unknown role {role!r}; roles: {', '.join(ROLES)}")
    data = client(api_url, token).post("/principals", {"name": name, "role": role})
    if json:
        print_json(data)
        return
    console.print(f"principal {name} created with role {role}; its token (shown once, "
                  "store it now):", highlight=False)
    print(data["token"])


@app.command("list")
def list_principals(api_url: ApiUrl = None, token: Token = None, json: Json = False) -> None:
    """Every principal, revoked ones too (a name is never given out twice)."""
    data = client(api_url, token).get("/principals")
    print_json(data) if json else console.print(principals_table(data["principals"]))


@app.command("revoke")
def revoke(name: str, api_url: ApiUrl = None, token: Token = None,
           json: Json = False) -> None:
    """Revoke a principal's token at once (its record and audit stay)."""
    data = client(api_url, token).request("DELETE", f"/principals/{name}")
    if json:
        print_json(data)
        return
    principal = data["principal"]
    console.print(f"principal {name} revoked at {principal['revoked_at']} by "
                  f"{principal['revoked_by']}", highlight=False)


def principals_table(principals: list[dict[str, Any]]) -> Table:
    table = Table(title=f"{len(principals)} principals")
    for column in ("name", "role", "state", "created", "by"):
        table.add_column(column)
    for p in principals:
        state = "[green]active[/]" if p["active"] else f"[red]revoked[/] {p['revoked_at']}"
        table.add_row(p["name"], p["role"], state, p["created_at"] or "-",
                      p["created_by"] or "-")
    return table
