"""Options every API command takes, and the client they build."""

from __future__ import annotations

from typing import Annotated

import typer

from edgeplane_cli.client import ApiClient
from edgeplane_cli.config import load_context

ApiUrl = Annotated[str | None, typer.Option("--api-url", help="API base URL (else config)")]
Token = Annotated[str | None, typer.Option("--token", help="bearer token (else config)")]
Json = Annotated[bool, typer.Option("--json", help="print JSON instead of a table")]


def client(api_url: str | None, token: str | None) -> ApiClient:
    return ApiClient(load_context(api_url, token))
