"""``edgeplane audit``: who changed what, by site, rollout, principal and time."""

from __future__ import annotations

import json as jsonlib
import re
import time
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import urlencode

import typer
from rich.table import Table

from edgeplane_cli.client import ApiClient
from edgeplane_cli.options import ApiUrl, Json, Token, client
from edgeplane_cli.render import console, print_json

PAGE = 500  # the most the API answers at once
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
Time = Annotated[str | None, typer.Option(
    help="ISO 8601 (2025-03-01, 2025-03-01T09:30:00Z), epoch seconds, or an age: 30m, 2h, 7d")]


def audit(
    site: Annotated[str | None, typer.Option(help="records about this site")] = None,
    rollout: Annotated[str | None, typer.Option(help="records about this rollout")] = None,
    principal: Annotated[str | None, typer.Option(help="records of this principal")] = None,
    since: Time = None,
    until: Time = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000,
                                       help="at most this many records, newest first")] = 50,
    next_page: Annotated[str | None, typer.Option(
        "--next", help="go on from where an earlier listing stopped")] = None,
    api_url: ApiUrl = None, token: Token = None, json: Json = False,
) -> None:
    """The audit: every change made through the API, with who made it (admins only)."""
    filters = {"site": site, "rollout": rollout, "principal": principal,
               "since": moment(since, "--since"), "until": moment(until, "--until")}
    records, following = fetch(client(api_url, token),
                               {k: v for k, v in filters.items() if v is not None},
                               limit, next_page)
    if json:
        print_json({"records": records, "next": following})
        return
    console.print(audit_table(records))
    if following:
        console.print(f"more: add --next {following}", highlight=False)


def moment(text: str | None, option: str) -> str | None:
    """What the API takes (ISO 8601 or epoch seconds); an age becomes the time it names."""
    if text is None:
        return None
    text = text.strip()
    age = re.fullmatch(r"(\d{1,9})([smhd])", text)
    if age is None:
        try:
            float(text) if re.fullmatch(r"\d{1,10}(\.\d{1,6})?", text) else \
                datetime.fromisoformat(text)
        except ValueError:
            raise typer.BadParameter(f"{option} {text!r}: give ISO 8601 (2025-03-01, "
                                     "2025-03-01T09:30:00Z), epoch seconds, or an age (30m, "
                                     "2h, 7d)") from None
        return text
    then = time.time() - int(age.group(1)) * UNITS[age.group(2)]
    if then < 0:
        raise typer.BadParameter(f"{option} {text!r} is before 1970")
    return datetime.fromtimestamp(then, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def fetch(api: ApiClient, filters: dict[str, str], limit: int,
          following: str | None) -> tuple[list[dict[str, Any]], str | None]:
    """Pages of the audit until ``limit`` records; and where the next page would start."""
    records: list[dict[str, Any]] = []
    while len(records) < limit:
        query = {**filters, "limit": str(min(PAGE, limit - len(records)))}
        if following:
            query["next"] = following
        page = api.get(f"/audit?{urlencode(query)}")
        records += page["records"]
        following = page["next"]
        if not following:
            break
    return records, following


def audit_table(records: list[dict[str, Any]]) -> Table:
    table = Table(title=f"{len(records)} audit records, newest first")
    for column in ("when", "principal", "action", "target", "route", "what changed"):
        table.add_column(column)
    for record in records:
        target = record["target"]
        who = f"{record['principal']} ({record['role']})" if record.get("role") else \
            record["principal"]
        table.add_row(record["at"], who, record["action"], f"{target['kind']} {target['id']}",
                      f"{record['method']} {record['path']}", what_changed(record))
    return table


def what_changed(record: dict[str, Any]) -> str:
    """A line or a few: a definition's diff, the fields of a site or machine that changed,
    a rollout's state."""
    summary = record.get("summary") or {}
    if summary.get("diff"):
        lines = summary["diff"]
        return "\n".join(lines[:5]) + (f"\n… {len(lines) - 5} more" if len(lines) > 5 else "")
    before, after = record.get("before"), record.get("after")
    if isinstance(before, dict) and isinstance(after, dict):
        return "\n".join(f"{key}: {_text(before.get(key))} -> {_text(after.get(key))}"
                         for key in sorted(set(before) | set(after))
                         if before.get(key) != after.get(key)) or "-"
    if record["action"] == "started":
        target = summary.get("target") or {}
        where = f"tag {target['tag']}" if "tag" in target else f"{target.get('sites')} sites"
        what = summary.get("blueprint") or [s.get("task") for s in summary.get("steps") or []]
        return f"{_text(what)} on {where}"
    return "-"


def _text(value: Any) -> str:
    text = value if isinstance(value, str) else jsonlib.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."
