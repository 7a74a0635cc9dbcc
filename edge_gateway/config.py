"""The site's configuration file (TOML): who the site is, its broker, its machines.

BMC credentials live here and only here: nothing in this file but the machine ids, protocols
and addresses is ever sent to the cloud. A password can be given inline, or by reference
(``password_file`` or ``password_env``) so the file itself can be shared without the secret.
The gateway warns when this file or a password file is readable by others than its owner.

    site = "shop-0042"
    journal = "/var/lib/edge-gateway/journal.db"   # relative paths: next to this file
    max_parallel = 64                               # machines worked on at once
    observe_interval = 3600                         # seconds; 0: observe only after plans

    [mqtt]
    host = "broker.example.net"
    port = 8883
    tls = true
    ca_file = "ca.pem"
    cert_file = "site.crt"
    key_file = "site.key"

    [[machines]]
    id = "srv-1"
    protocol = "redfish"                            # or "ipmi"
    address = "https://10.0.0.11"                   # ipmi: "10.0.0.12" or "10.0.0.12:623"
    system_id = "/redfish/v1/Systems/1"             # optional: which system of the BMC
    username = "admin"
    password_file = "/etc/edge-gateway/srv-1.password"
    tls_ca_bundle = "bmc-ca.pem"                    # optional: check the BMC's certificate
                                                    # against this CA (else the system's);
                                                    # verify_tls = false: not at all
    timeout = 30                                    # seconds per BMC call
    power_timeout = 300                             # seconds for a power change to read back
    min_interval = 0.2                              # seconds between two calls to the BMC
    class = "r650"                                  # settings shared by a class of machines

    [classes.r650]                                  # any machine setting but id/address
    power_timeout = 600
    min_interval = 1.0
"""

from __future__ import annotations

import logging
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_gateway.drivers.base import BmcCredentials
from edge_gateway.errors import ConfigError
from edgeplane.protocol import MACHINE_ID_PATTERN, SITE_ID_PATTERN, BmcProtocol

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class MqttSettings:
    host: str = "127.0.0.1"
    port: int = 1883
    client_id: str | None = None  # default: the site id (what an IoT policy keys on)
    keepalive: int = 30
    tls: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    reconnect_min_delay: float = 1.0
    reconnect_max_delay: float = 60.0


@dataclass(frozen=True)
class MachineConfig:
    id: str
    protocol: BmcProtocol
    credentials: BmcCredentials
    timeout: float = 30.0
    power_timeout: float = 300.0
    poll_interval: float = 1.0
    min_interval: float = 0.2
    machine_class: str | None = None


@dataclass(frozen=True)
class SiteConfig:
    site: str
    journal: Path
    mqtt: MqttSettings
    machines: tuple[MachineConfig, ...]
    # Machines worked on at once. Each waits on its own BMC, so a site's machines normally
    # all run together; the cap bounds threads and memory (~0.2 MiB each; BENCHMARKS.md).
    max_parallel: int = 64
    progress_interval: float = 1.0
    # Seconds between two observations of every machine (for drift); 0: only after plans.
    observe_interval: float = 3600.0

    def machine(self, machine_id: str) -> MachineConfig | None:
        return next((m for m in self.machines if m.id == machine_id), None)


def load_config(path: str | Path) -> SiteConfig:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc}") from None
    warn_if_readable(path, "config file")
    return parse_config(data, base_dir=path.parent, source=str(path))


def parse_config(data: dict[str, Any], base_dir: Path, source: str = "config") -> SiteConfig:
    site = _require(data, "site", str, source)
    if not SITE_ID_PATTERN.match(site):
        raise ConfigError(f"{source}: site {site!r} is not a valid site id "
                          "(lowercase letters, digits and '-')")
    mqtt_data = data.get("mqtt", {})
    if not isinstance(mqtt_data, dict):
        raise ConfigError(f"{source}: [mqtt] must be a table")
    try:
        mqtt = MqttSettings(**mqtt_data)
    except TypeError as exc:
        raise ConfigError(f"{source}: [mqtt] {exc}") from None
    raw_machines = data.get("machines", [])
    if not isinstance(raw_machines, list):
        raise ConfigError(f"{source}: machines must be an array of tables ([[machines]])")
    classes = data.get("classes", {})
    if not isinstance(classes, dict) or not all(isinstance(c, dict) for c in classes.values()):
        raise ConfigError(f"{source}: classes must be tables ([classes.NAME])")
    machines = tuple(_machine(_with_class(raw, i, classes, source), i, base_dir, source)
                     for i, raw in enumerate(raw_machines))
    ids = [m.id for m in machines]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ConfigError(f"{source}: machine id(s) used twice: {', '.join(duplicates)}")
    journal = Path(data.get("journal", f"{site}.journal.db"))
    return SiteConfig(
        site=site,
        journal=journal if journal.is_absolute() else base_dir / journal,
        mqtt=mqtt,
        machines=machines,
        max_parallel=int(data.get("max_parallel", SiteConfig.max_parallel)),
        progress_interval=float(data.get("progress_interval", 1.0)),
        observe_interval=float(data.get("observe_interval", SiteConfig.observe_interval)),
    )


CLASS_ONLY_FORBIDDEN = frozenset({"id", "address", "system_id"})


def _with_class(raw: Any, index: int, classes: dict[str, dict[str, Any]],
                source: str) -> Any:
    """The machine's table with its class's settings under it (the machine's own win)."""
    if not isinstance(raw, dict) or "class" not in raw:
        return raw
    name = raw["class"]
    if name not in classes:
        known = ", ".join(sorted(classes)) or "none"
        raise ConfigError(f"{source}: machines[{index}] names class {name!r}, which is not "
                          f"defined (classes: {known})")
    shared = classes[name]
    wrong = sorted(CLASS_ONLY_FORBIDDEN & set(shared))
    if wrong:
        raise ConfigError(f"{source}: class {name!r} sets {', '.join(wrong)}, which belong to "
                          "one machine")
    return {**shared, **raw}


def _machine(raw: Any, index: int, base_dir: Path, source: str) -> MachineConfig:
    where = f"{source}: machines[{index}]"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a table")
    machine_id = _require(raw, "id", str, where)
    where = f"{source}: machine {machine_id!r}"
    if not MACHINE_ID_PATTERN.match(machine_id):
        raise ConfigError(f"{where}: id is invalid (letters, digits, '_', '.', '-')")
    protocol = _require(raw, "protocol", str, where)
    try:
        protocol = BmcProtocol(protocol)
    except ValueError:
        raise ConfigError(f"{where}: protocol {protocol!r} is not one of "
                          f"{', '.join(p.value for p in BmcProtocol)}") from None
    credentials = BmcCredentials(
        address=_require(raw, "address", str, where),
        username=_require(raw, "username", str, where),
        password=_password(raw, base_dir, where),
        system_id=raw.get("system_id"),
        verify_tls=_verify_tls(raw, base_dir, where),
    )
    return MachineConfig(
        id=machine_id,
        protocol=protocol,
        credentials=credentials,
        timeout=float(raw.get("timeout", 30.0)),
        power_timeout=float(raw.get("power_timeout", 300.0)),
        poll_interval=float(raw.get("poll_interval", 1.0)),
        min_interval=float(raw.get("min_interval", 0.2)),
        machine_class=raw.get("class"),
    )


def _verify_tls(raw: dict[str, Any], base_dir: Path, where: str) -> bool | str:
    """BMC certificates are checked unless a machine says ``verify_tls = false``; with
    ``tls_ca_bundle = "path"`` they are checked against that bundle (a BMC's own CA)."""
    verify: object = raw.get("verify_tls", True)
    if not isinstance(verify, bool):
        raise ConfigError(f"{where}: verify_tls must be true or false, not {verify!r}")
    bundle = raw.get("tls_ca_bundle")
    if bundle is not None:
        if not isinstance(bundle, str) or not verify:
            raise ConfigError(f"{where}: tls_ca_bundle must be a path, and goes with "
                              "verify_tls = true")
        path = Path(bundle) if Path(bundle).is_absolute() else base_dir / bundle
        if not path.is_file():
            raise ConfigError(f"{where}: tls_ca_bundle {path} is not a file")
        return str(path)
    if not verify and str(raw.get("address", "")).startswith("https://"):
        LOG.warning("%s: the BMC's TLS certificate is not checked (verify_tls = false)", where)
    return verify


def warn_if_readable(path: Path, what: str) -> bool:
    """Log a warning (and answer True) when others than the owner may read ``path``."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    if mode & 0o077:
        LOG.warning("%s %s is readable by others (mode %o): it holds secrets; run chmod 600 %s",
                    what, path, mode & 0o777, path)
        return True
    return False


def _password(raw: dict[str, Any], base_dir: Path, where: str) -> str:
    if "password" in raw:
        return str(raw["password"])
    if "password_env" in raw:
        value = os.environ.get(raw["password_env"])
        if value is None:
            raise ConfigError(f"{where}: environment variable {raw['password_env']} is not set")
        return value
    if "password_file" in raw:
        path = Path(raw["password_file"])
        path = path if path.is_absolute() else base_dir / path
        warn_if_readable(path, f"{where}: password_file")
        try:
            return path.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"{where}: password_file {path} cannot be read: {exc}") from None
    raise ConfigError(f"{where}: give password, password_env or password_file")


def _require(data: dict[str, Any], key: str, kind: type, where: str) -> Any:
    if key not in data:
        raise ConfigError(f"{where}: {key} is required")
    value = data[key]
    if not isinstance(value, kind):
        raise ConfigError(f"{where}: {key} must be a {kind.__name__}, not {value!r}")
    return value
