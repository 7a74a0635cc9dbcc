"""``edgeplane apply|get|describe|delete``: definitions, kubectl-style."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.table import Table

from edgeplane_cli import documents
from edgeplane_cli.client import ApiError
from edgeplane_cli.options import ApiUrl, Json, Token, client
from edgeplane_cli.render import console, print_json

KINDS = ("blueprint", "profile", "site", "group", "machine-class")
ACTION_STYLE = {"created": "green", "updated": "yellow", "unchanged": "dim"}


def _kind(kind: str) -> str:
    aliases = {"blueprints": "blueprint", "profiles": "profile", "sites": "site",
               "groups": "group", "machine-classes": "machine-class", "class": "machine-class",
               "classes": "machine-class"}
    kind = aliases.get(kind, kind)
    if kind not in KINDS:
        raise typer.BadParameter(f"unknown kind {kind!r}; kinds: {', '.join(KINDS)}")
    return kind


def apply(
    file: Annotated[list[Path], typer.Option("-f", "--file",
                                             help="a YAML/JSON file or a folder (repeatable)")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="show what would change; "
                                          "write nothing")] = False,
    api_url: ApiUrl = None, token: Token = None, json: Json = False,
) -> None:
    """Create or update definitions from files (idempotent; --dry-run shows the diff)."""
    try:
        loaded = documents.load(file)
    except documents.DocumentError as exc:
        raise typer.BadParameter(str(exc)) from None
    try:
        results = client(api_url, token).post(
            "/definitions", {"documents": [d.document for d in loaded], "dry_run": dry_run})
    except ApiError as exc:
        raise ApiError(exc.status, documents.name_origins(exc.message, loaded)) from None
    if json:
        print_json(results)
        return
    suffix = " (dry run: nothing written)" if dry_run else ""
    for result in results["results"]:
        action = result["action"]
        revision = f" revision {result['revision']}" if "revision" in result else ""
        style = ACTION_STYLE.get(action, "")
        console.print(f"{result['kind']} {result['name']}: [{style}]{action}[/]{revision}")
        if dry_run or action == "updated":
            for line in result.get("diff", []):
                colour = {"+": "green", "-": "red", "~": "yellow"}.get(line[:1], "")
                console.print(f"    [{colour}]{line}[/]", highlight=False)
    changed = sum(r["action"] != "unchanged" for r in results["results"])
    console.print(f"{len(results['results'])} documents, {changed} changed{suffix}")


def get(
    kind: Annotated[str, typer.Argument(help=", ".join(KINDS))],
    name: Annotated[str | None, typer.Argument()] = None,
    api_url: ApiUrl = None, token: Token = None, json: Json = False,
) -> None:
    """List the definitions of a kind, or show one."""
    kind = _kind(kind)
    api = client(api_url, token)
    if name:
        item = api.get(f"/definitions/{kind}/{name}")["item"]
        print_json(item) if json else console.print(_yaml(item), highlight=False)
        return
    items = api.get(f"/definitions/{kind}")["items"]
    if json:
        print_json({"items": items})
        return
    table = Table(title=f"{len(items)} {kind} definitions")
    table.add_column("name")
    table.add_column("summary")
    for item in items:
        table.add_row(item["name"], _summary(kind, item))
    console.print(table)


def describe(
    kind: Annotated[str, typer.Argument(help=", ".join(KINDS))],
    name: str,
    revision: Annotated[int | None, typer.Option(help="a blueprint's revision")] = None,
    api_url: ApiUrl = None, token: Token = None, json: Json = False,
) -> None:
    """One definition in full (a blueprint with its revisions)."""
    kind = _kind(kind)
    path = f"/definitions/{kind}/{name}" + (f"?revision={revision}" if revision else "")
    item = client(api_url, token).get(path)["item"]
    if json:
        print_json(item)
        return
    if kind == "blueprint":
        console.print(f"blueprint {name} revision {item['revision']} of "
                      f"{', '.join(map(str, item['revisions']))}"
                      + (" (deleted)" if item.get("deleted") else ""))
    console.print(_yaml({"kind": item["kind"], "name": item["name"], "spec": item["spec"]}),
                  highlight=False)


def delete(
    kind: Annotated[str, typer.Argument(help=", ".join(KINDS))],
    name: str,
    api_url: ApiUrl = None, token: Token = None, json: Json = False,
) -> None:
    """Delete a definition (a blueprint's revisions are kept)."""
    kind = _kind(kind)
    result = client(api_url, token).request("DELETE", f"/definitions/{kind}/{name}")
    print_json(result) if json else console.print(f"{kind} {name} deleted")


def _yaml(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False).rstrip()


def _summary(kind: str, item: dict[str, Any]) -> str:
    spec = item["spec"]
    if kind == "blueprint":
        tasks = ", ".join(step["task"] for step in spec.get("steps", []))
        return f"revision {item.get('revision')}: {tasks}"
    if kind == "profile":
        target = f" {spec.get('target')}" if spec.get("target") else ""
        return (f"{spec['level']}{target}, priority {spec.get('priority', 0)}: "
                + ", ".join(f"{k}={v}" for k, v in spec.get("params", {}).items()))
    if kind == "group":
        return "sites tagged " + " and ".join(spec.get("tags", []))
    if kind == "site":
        return f"{', '.join(spec.get('tags') or [])} ({spec.get('timezone')})"
    return spec.get("description") or ""


def register(app: typer.Typer) -> None:
    for command in (apply, get, describe, delete):
        app.command(command.__name__)(command)
