"""``edgeplane rollout``: start a rollout and follow it."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer

from edgeplane_cli.client import ApiClient
from edgeplane_cli.options import ApiUrl, Json, Token, client
from edgeplane_cli.render import console, print_json, rollout_table

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
    canary: Annotated[str | None, typer.Option(
        help="first wave, which must pass: N sites or P%")] = None,
    first_wave: Annotated[int | None, typer.Option(help="sites in the wave after it")] = None,
    growth: Annotated[float, typer.Option(help="each wave this many times the last")] = 2.0,
    max_in_flight: Annotated[int | None, typer.Option(help="sites running at once")] = None,
    max_per_minute: Annotated[int | None, typer.Option(help="sites started per minute")] = None,
    abort_percent: Annotated[float, typer.Option(
        help="abort when this % of a wave's finished sites failed")] = 20.0,
    abort_min: Annotated[int, typer.Option(help="... once this many finished")] = 5,
    site_timeout: Annotated[float, typer.Option(help="seconds a site may take")] = 3600,
    retries: Annotated[int, typer.Option(help="retries of retryable failures")] = 0,
    retry_backoff: Annotated[float, typer.Option(help="seconds before a retry")] = 60,
    ignore_windows: Annotated[bool, typer.Option(
        help="start sites outside their maintenance windows")] = False,
    expires_in: Annotated[float, typer.Option(
        help="seconds until sites that have not started are marked expired")] = 7 * 86400,
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
    body["policy"] = policy_body(canary, first_wave, growth, max_in_flight, max_per_minute,
                                 abort_percent, abort_min, site_timeout, retries,
                                 retry_backoff, ignore_windows, expires_in)
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


def policy_body(canary: str | None, first_wave: int | None, growth: float,
                max_in_flight: int | None, max_per_minute: int | None, abort_percent: float,
                abort_min: int, site_timeout: float, retries: int, retry_backoff: float,
                ignore_windows: bool, expires_in: float) -> dict[str, Any]:
    policy: dict[str, Any] = {
        "growth": growth, "abort": {"percent": abort_percent, "min_sample": abort_min},
        "site_timeout": site_timeout, "retries": {"max": retries, "backoff": retry_backoff},
        "maintenance_windows": not ignore_windows, "expires_in": expires_in}
    if canary:
        try:
            policy["canary"] = ({"percent": float(canary[:-1])} if canary.endswith("%")
                                else {"sites": int(canary)})
        except ValueError:
            raise typer.BadParameter(f"--canary {canary!r}: give a number of sites (5) or a "
                                     "percentage (2%)") from None
    for key, value in (("first_wave", first_wave), ("max_in_flight", max_in_flight),
                       ("max_per_minute", max_per_minute)):
        if value is not None:
            policy[key] = value
    return policy


@app.command("watch")
def watch(rollout_id: str, interval: Annotated[float, typer.Option(
              help="seconds between looks")] = 1.0,
          timeout: Annotated[float, typer.Option(help="give up after seconds")] = 86400,
          api_url: ApiUrl = None, token: Token = None) -> None:
    """Live progress per wave and counts of succeeded, failed, pending and offline sites;
    exits 0 if the rollout succeeds, 1 if it fails, aborts or is canceled."""
    from edgeplane_cli.watch import follow

    state = follow(client(api_url, token), rollout_id, interval, timeout)
    raise typer.Exit(0 if state == "succeeded" else 1)


def _act(action: str, rollout_id: str, api_url: str | None, token: str | None,
         json: bool) -> None:
    data = client(api_url, token).post(f"/rollouts/{rollout_id}/{action}", {})
    rollout = data["rollout"]
    print_json(data) if json else console.print(
        f"rollout {rollout_id}: {rollout['state']}"
        + (f" ({rollout['message']})" if rollout.get("message") else ""))


@app.command("pause")
def pause(rollout_id: str, api_url: ApiUrl = None, token: Token = None,
          json: Json = False) -> None:
    """Dispatch nothing new; sites already running carry on."""
    _act("pause", rollout_id, api_url, token, json)


@app.command("resume")
def resume(rollout_id: str, api_url: ApiUrl = None, token: Token = None,
           json: Json = False) -> None:
    """Carry on a paused rollout."""
    _act("resume", rollout_id, api_url, token, json)


@app.command("cancel")
def cancel(rollout_id: str, api_url: ApiUrl = None, token: Token = None,
           json: Json = False) -> None:
    """Sites not yet started drop the plan; running ones stop after their current step."""
    _act("cancel", rollout_id, api_url, token, json)


@app.command("events")
def events(rollout_id: str, api_url: ApiUrl = None, token: Token = None,
           json: Json = False) -> None:
    """The rollout's event log: every state change and operator action."""
    data = client(api_url, token).get(f"/rollouts/{rollout_id}/events")
    if json:
        print_json(data)
        return
    for event in data["events"]:
        detail = event["detail"]
        what = " ".join(f"{k}={v}" for k, v in detail.items()
                        if k != "rollout_id" and v not in (None, "", []))
        console.print(f"{event['ts']:.3f}  {event['type']}: {what}", highlight=False)


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
