"""Where the CLI finds the API: a small config file, like a kubeconfig.

``$EDGEPLANE_HOME/config.json`` (default ``~/.edgeplane``) holds named contexts, each an API
URL and a bearer token, and which one is current. ``edgeplane dev up`` writes the ``local``
context; flags (``--api-url``, ``--token``) and the variables ``EDGEPLANE_API_URL`` /
``EDGEPLANE_TOKEN`` override the file.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from edgeplane_cli.private_files import write_private


def edgeplane_home() -> Path:
    return Path(os.environ.get("EDGEPLANE_HOME", Path.home() / ".edgeplane"))


def config_path() -> Path:
    return edgeplane_home() / "config.json"


@dataclass(frozen=True)
class Context:
    api_url: str
    token: str


class ConfigMissing(RuntimeError):
    pass


def load_context(api_url: str | None = None, token: str | None = None) -> Context:
    api_url = api_url or os.environ.get("EDGEPLANE_API_URL")
    token = token or os.environ.get("EDGEPLANE_TOKEN")
    if api_url and token:
        return Context(api_url, token)
    path = config_path()
    try:
        data = json.loads(path.read_text())
        stored = data["contexts"][data["current-context"]]
    except FileNotFoundError:
        raise ConfigMissing(
            f"no API configured: {path} does not exist. Run `edgeplane dev up` for the local "
            "stack, or pass --api-url and --token"
        ) from None
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigMissing(f"{path} is not a valid Edgeplane config: {exc}") from None
    return Context(api_url or stored["api_url"], token or stored["token"])


def save_context(name: str, context: Context) -> Path:
    path = config_path()
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        data = {}
    data.setdefault("contexts", {})[name] = {"api_url": context.api_url, "token": context.token}
    data["current-context"] = name
    return write_private(path, json.dumps(data, indent=2) + "\n")
