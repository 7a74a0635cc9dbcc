"""``edgeplane rollout``: start a rollout and follow it."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer

from edgeplane.cli.client import ApiClient
from edgeplane.cli.options import ApiUrl, Json, Token, client
from edgeplane.cli.render import console, print_json, rollout_table

app = typer.Typer(no_args_is_help=True, help="Rollouts of actions to sites.")

TERMINAL_ROLLOUT_STATES = frozenset({"succeeded", "failed", "canceled", "aborted"})


def parse_step(text: str) -> dict[str, Any]:
    """``"power.ensure state=on"`` -> ``{"task": "power.ensure", "params": {"state": "on"}}``."""
    task, *pairs = text.split()
    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{pair!r} in step {text!r} is not key=value")
        params[key] = value
    return {"task": task, "params": params}


def wait_for_rollout(api: ApiClient, rollout_id: str, timeout: float,
                     interval: float = 0.5) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        data = api.get(f"/rollouts/{rollout_id}")
        if data["rollout"]["state"] in TERMINAL_ROLLOUT_STATES:
            return data
        if time.monotonic() > deadline:
            raise TimeoutError(f"rollout {rollout_id} still {data['rollout']['state']} "
                               f"after {timeout:.0f} s")
        time.sleep(interval)


@app.command("start")
def start(
    step: Annotated[list[str] | None, typer.Option(
        "--step", help='repeatable, in order: "power.ensure state=on", '
        '"boot.override target=pxe mode=once"')] = None,
    blueprint: Annotated[str | None, typer.Option(
        help="roll out a blueprint instead of --step actions")] = None,
    revision: Annotated[int | None, typer.Option(
        help="the blueprint's revision (default: its latest)")] = None,
    site: Annotated[list[str] | None, typer.Option("--site", help="repeatable")] = None,
    tag: Annotated[str | None, typer.Option(help="every site with this tag")] = None,
    name: Annotated[str | None, typer.Option()] = None,
    wait: Annotated[bool, typer.Option(help="wait for the end and print the result")] = False,
    timeout: Annotated[float, typer.Option(help="seconds to wait with --wait")] = 600,
    api_url: ApiUrl = None, token: Token = None, json: Json = False,
) -> None:
    """Start a rollout of a blueprint, or of actions, on sites (by id or by tag)."""
    if bool(site) == bool(tag):
        raise typer.BadParameter("give --site (one or more) or --tag, not both")
    if bool(step) == bool(blueprint):
        raise typer.BadParameter("give --blueprint, or one or more --step, not both")
    body: dict[str, Any] = ({"blueprint": blueprint} if blueprint
                            else {"steps": [parse_step(s) for s in step or []]})
    if revision:
        body["revision"] = revision
    body.update({"sites": site} if site else {"tag": tag})
    if name:
        body["name"] = name
    api = client(api_url, token)
    created = api.post("/rollouts", body)
    rollout_id = created["rollout"]["rollout_id"]
    if not wait:
        print_json(created) if json else console.print(f"rollout {rollout_id} started")
        return
    data = wait_for_rollout(api, rollout_id, timeout)
    print_json(data) if json else console.print(rollout_table(data))
    raise typer.Exit(0 if data["rollout"]["state"] == "succeeded" else 1)


@app.command("status")
def status(rollout_id: str, api_url: ApiUrl = None, token: Token = None,
           json: Json = False) -> None:
    """A rollout with every site's and machine's state."""
    data = client(api_url, token).get(f"/rollouts/{rollout_id}")
    print_json(data) if json else console.print(rollout_table(data))


@app.command("list")
def list_rollouts(api_url: ApiUrl = None, token: Token = None, json: Json = False) -> None:
    """Recent rollouts, newest first."""
    data = client(api_url, token).get("/rollouts")
    if json:
        print_json(data)
        return
    for rollout in data["rollouts"]:
        console.print(f"{rollout['rollout_id']}  {rollout['state']:<10} "
                      f"{rollout.get('name') or ''}")
