"""The ``[cache]`` table of the site's configuration::

    [cache]
    directory = "/var/lib/edge-gateway/cache"   # relative: next to the config file
    max_size = "200GiB"                         # bytes, or a number with KiB/MiB/GiB/TiB
    listen = "10.0.0.2"                         # the gateway's address on the site LAN
    port = 8080                                 # 0: any free port (tests)
    advertise = "10.0.0.2"                      # the host BMCs are told (default: listen)
    max_clients = 32                            # requests served at once
    tls_cert = "cache.crt"                      # optional: serve HTTPS, for BMCs that can
    tls_key = "cache.key"                       # verify this certificate

Without the table the gateway has no cache: steps that name an artifact by digest fail,
saying so; steps with a plain image URL hand it to the BMC as before.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_gateway.errors import ConfigError, config_table

_UNITS = {"": 1, "B": 1, "KIB": 1024, "MIB": 1024**2, "GIB": 1024**3, "TIB": 1024**4}
_SIZE = re.compile(r"^\s*(\d{1,15})\s*([KMGT]iB|B)?\s*$", re.IGNORECASE)
_HOST = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,252})$")
KNOWN = frozenset({"directory", "max_size", "listen", "port", "advertise", "max_clients",
                   "tls_cert", "tls_key"})


@dataclass(frozen=True)
class CacheSettings:
    directory: Path
    max_bytes: int
    listen: str
    port: int
    advertise: str
    max_clients: int = 32
    tls_cert: Path | None = None
    tls_key: Path | None = None


def parse_cache(raw: Any, base_dir: Path, source: str) -> CacheSettings | None:
    """The table's settings, or None if there is none; ConfigError naming what is wrong."""
    if raw is None:
        return None
    where = f"{source}: [cache]"
    raw = config_table(raw, where, KNOWN)
    for name in ("directory", "max_size", "listen"):
        if name not in raw:
            raise ConfigError(f"{where} {name} is required")
    listen = _host(raw["listen"], f"{where} listen")
    advertise = _host(raw.get("advertise", listen), f"{where} advertise")
    if advertise in ("0.0.0.0", "::"):  # noqa: S104 - a check, not a bind
        raise ConfigError(f"{where} listens on every address: set advertise to the address "
                          "the BMCs reach the gateway at")
    port = raw.get("port", 8080)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ConfigError(f"{where} port must be a number from 0 to 65535, not {port!r}")
    clients = raw.get("max_clients", CacheSettings.max_clients)
    if isinstance(clients, bool) or not isinstance(clients, int) or not 1 <= clients <= 1024:
        raise ConfigError(f"{where} max_clients must be from 1 to 1024, not {clients!r}")
    cert, key = (_file(raw.get(name), base_dir, f"{where} {name}")
                 for name in ("tls_cert", "tls_key"))
    if (cert is None) != (key is None):
        raise ConfigError(f"{where} HTTPS needs both tls_cert and tls_key")
    return CacheSettings(directory=_path(raw["directory"], base_dir, f"{where} directory"),
                         max_bytes=parse_size(raw["max_size"], f"{where} max_size"),
                         listen=listen, port=port, advertise=advertise, max_clients=clients,
                         tls_cert=cert, tls_key=key)


def parse_size(value: Any, where: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    match = _SIZE.match(value) if isinstance(value, str) else None
    if match is None or int(match[1]) < 1:
        raise ConfigError(f"{where} must be a positive number of bytes (or with KiB, MiB, "
                          f"GiB, TiB), not {value!r}")
    return int(match[1]) * _UNITS[(match[2] or "").upper()]


def _host(value: Any, where: str) -> str:
    if isinstance(value, str):
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            if _HOST.fullmatch(value):
                return value
    raise ConfigError(f"{where} must be an IP address or a host name, not {value!r}")


def _path(value: Any, base_dir: Path, where: str) -> Path:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where} must be a path")
    path = Path(value)
    return path if path.is_absolute() else base_dir / path


def _file(value: Any, base_dir: Path, where: str) -> Path | None:
    if value is None:
        return None
    path = _path(value, base_dir, where)
    if not path.is_file():
        raise ConfigError(f"{where} {path} is not a file")
    return path
