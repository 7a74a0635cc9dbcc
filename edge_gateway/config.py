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

    [trust]                                         # the cloud's plan-signing keys (base64
    plan_keys = ["6OW5K9Mok9014418VclQ7M0WplhdiG9uhfMSxF2rn0I="]  # of the raw Ed25519
                                                    # key): the gateway runs only the plans
                                                    # and cancels one of them signed

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
    # tls_fingerprint = "sha256:AB:CD:...:EF"       # or: accept only this one certificate
                                                    # (self-signed BMCs; see bmc probe)
    timeout = 30                                    # seconds per BMC call
    power_timeout = 300                             # seconds for a power change to read back
    min_interval = 0.2                              # seconds between two calls to the BMC
    # keep_alive = false                            # Redfish: a new connection for every
                                                    # request (default: one per BMC call)
    class = "r650"                                  # settings shared by a class of machines

    [classes.r650]                                  # any machine setting but id/address
    power_timeout = 600                             # (a machine's own verify_tls,
    min_interval = 1.0                              # tls_ca_bundle or tls_fingerprint
                                                    # replaces its class's three)

An HTTPS BMC's certificate is trusted in one of three ways: checked against the system's
CAs (the default) or ``tls_ca_bundle``; pinned by its SHA-256 fingerprint
(``tls_fingerprint``: that certificate and no other, its chain and host name unchecked);
or not checked at all (``verify_tls = false``, with a warning). Most BMCs ship a
self-signed certificate, which only a pin trusts securely:

1. ``edge-gateway bmc probe https://10.0.0.11 -u admin -p ... --insecure`` prints the
   certificate's fingerprint and the line to add;
2. compare that fingerprint with the one the BMC itself shows (its local console or web
   interface, or the label of a new machine): only if they match is it the BMC's;
3. add ``tls_fingerprint = "sha256:..."`` to the machine (``--tls-fingerprint`` tries it
   with the probe first). Hex in either case, with or without colons, is accepted.

A replaced certificate is then refused, naming the pinned and the presented fingerprints,
before any request (or password) is sent: check the new one the same way and update the
pin. A class may carry a pin only for machines that present the very same certificate.

``[trust] plan_keys`` pins the public keys the cloud signs plans with (its operator gives
them out; from the cloud's PEM key: ``openssl pkey -in key.pem -pubout -outform DER |
tail -c 32 | base64``). A plan signed by any of them runs, so a key rotates without a flag
day: pin the new key at every site, switch the cloud to it, then unpin the old one. A
config without any key is refused: the gateway would refuse every plan.

``[cache]`` sets up the site's artifact cache and the address it serves the BMCs on
(``edge_gateway.cache.settings``, docs/artifacts.md).

``[provision]`` holds the secrets new nodes join their cluster with (k3s server, join
token, SSH keys; ``edge_gateway.provision.settings``, docs/provisioning.md); it needs
``[cache]``.
"""

from __future__ import annotations

import logging
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_gateway.cache.settings import CacheSettings, parse_cache
from edge_gateway.drivers.base import BmcCredentials
from edge_gateway.errors import ConfigError, config_table
from edge_gateway.fingerprints import parse_fingerprint
from edge_gateway.provision.settings import ProvisionSettings, parse_provision
from edge_gateway.trust import public_key
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
    # all run together; the cap bounds threads and memory (~0.14 MiB each; BENCHMARKS.md).
    max_parallel: int = 64
    progress_interval: float = 1.0
    # Seconds between two observations of every machine (for drift); 0: only after plans.
    observe_interval: float = 3600.0
    # The cloud's plan-signing public keys (base64 of the raw key), any of which it believes.
    plan_keys: tuple[str, ...] = ()
    # The site's artifact cache (``[cache]``, edge_gateway.cache.settings); None: none.
    cache: CacheSettings | None = None
    # The join secrets for new nodes (``[provision]``); None: the site does not provision.
    provision: ProvisionSettings | None = None

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
    mqtt = _mqtt(data.get("mqtt", {}), base_dir, source)
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
        plan_keys=_plan_keys(data.get("trust", {}), source),
        cache=parse_cache(data.get("cache"), base_dir, source),
        provision=parse_provision(data.get("provision"), base_dir, source,
                                  has_cache=data.get("cache") is not None),
    )


CLASS_ONLY_FORBIDDEN = frozenset({"id", "address", "system_id"})
# The ways to trust a BMC's certificate: one choice, made by the machine or by its class.
TRUST_SETTINGS = frozenset({"verify_tls", "tls_ca_bundle", "tls_fingerprint"})
TLS_FILES = ("ca_file", "cert_file", "key_file")


def _mqtt(raw: Any, base_dir: Path, source: str) -> MqttSettings:
    """The broker link. With a certificate (``cert_file``) TLS is on unless said otherwise,
    and the three files must exist (relative paths: next to the config); the key is the
    site's identity, so the gateway warns when others may read it. Without TLS the link
    is in clear text, which is fit only for a broker on the same machine: a warning says so."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: [mqtt] must be a table")
    data = dict(raw)
    data.setdefault("tls", bool(data.get("cert_file")))
    if not isinstance(data["tls"], bool):
        raise ConfigError(f"{source}: [mqtt] tls must be true or false, not {data['tls']!r}")
    for name in TLS_FILES:
        if data.get(name) is None:
            continue
        if not isinstance(data[name], str) or not data[name]:
            raise ConfigError(f"{source}: [mqtt] {name} must be a path")
        path = Path(data[name]) if Path(data[name]).is_absolute() else base_dir / data[name]
        if not path.is_file():
            raise ConfigError(f"{source}: [mqtt] {name} {path} is not a file")
        data[name] = str(path)
    if data["tls"]:
        missing = [name for name in TLS_FILES if not data.get(name)]
        if missing:
            raise ConfigError(f"{source}: [mqtt] tls = true needs {', '.join(missing)} (the "
                              "broker's CA, and the site's certificate and key)")
        warn_if_readable(Path(data["key_file"]), "the site's MQTT key")
    else:
        LOG.warning("%s: the MQTT link is not encrypted (tls = false): fit only for a broker "
                    "on this machine", source)
    try:
        return MqttSettings(**data)
    except TypeError as exc:
        raise ConfigError(f"{source}: [mqtt] {exc}") from None


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
    if TRUST_SETTINGS & set(raw):
        shared = {key: value for key, value in shared.items() if key not in TRUST_SETTINGS}
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
    address = _require(raw, "address", str, where)
    fingerprint = _tls_fingerprint(raw, protocol, address, where)
    credentials = BmcCredentials(
        address=address,
        username=_require(raw, "username", str, where),
        password=_password(raw, base_dir, where),
        system_id=raw.get("system_id"),
        verify_tls=_verify_tls(raw, base_dir, where),
        tls_fingerprint=fingerprint,
        keep_alive=_flag(raw, "keep_alive", True, where),
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


def _flag(raw: dict[str, Any], name: str, default: bool, where: str) -> bool:
    value: object = raw.get(name, default)
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: {name} must be true or false, not {value!r}")
    return value


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


def _tls_fingerprint(raw: dict[str, Any], protocol: BmcProtocol, address: str,
                     where: str) -> str | None:
    """``tls_fingerprint = "sha256:AB:CD:..."`` pins the BMC's certificate: that one is
    accepted, any other refused; its chain and host name are not checked (self-signed BMCs).
    It replaces the other ways to trust a certificate, so it goes with neither of them."""
    text = raw.get("tls_fingerprint")
    if text is None:
        return None
    if not isinstance(text, str):
        raise ConfigError(f'{where}: tls_fingerprint must be a string ("sha256:AB:CD:..."), '
                          f"not {text!r}")
    try:
        fingerprint = parse_fingerprint(text)
    except ValueError as exc:
        raise ConfigError(f"{where}: tls_fingerprint {text!r} {exc}") from None
    if protocol != BmcProtocol.REDFISH or not address.lower().startswith("https://"):
        raise ConfigError(f"{where}: tls_fingerprint pins the certificate of an HTTPS (Redfish) "
                          f"BMC; this machine is {protocol} at {address!r}")
    if raw.get("verify_tls") is False:
        raise ConfigError(f"{where}: tls_fingerprint and verify_tls = false contradict each "
                          "other: with a fingerprint the certificate is checked (against it); "
                          "remove verify_tls")
    if "tls_ca_bundle" in raw:
        raise ConfigError(f"{where}: tls_fingerprint and tls_ca_bundle are two ways to trust "
                          "the BMC's certificate: give one")
    return fingerprint


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


def _plan_keys(raw: Any, source: str) -> tuple[str, ...]:
    """``[trust] plan_keys``: one key at least, each an Ed25519 public key."""
    keys = config_table(raw, f"{source}: [trust]", {"plan_keys"}).get("plan_keys", [])
    if not isinstance(keys, list):
        raise ConfigError(f"{source}: [trust] plan_keys must be a list of keys (base64)")
    if not keys:
        raise ConfigError(f"{source}: no plan key is pinned, and the gateway runs only plans "
                          "the cloud signed: add the cloud's public key, [trust] plan_keys "
                          '= ["<base64>"]')
    for index, key in enumerate(keys):
        try:
            public_key(key)
        except ValueError as exc:
            raise ConfigError(f"{source}: [trust] plan_keys[{index}] {exc}") from None
    return tuple(key.strip() for key in keys)


def _require(data: dict[str, Any], key: str, kind: type, where: str) -> Any:
    if key not in data:
        raise ConfigError(f"{where}: {key} is required")
    value = data[key]
    if not isinstance(value, kind):
        raise ConfigError(f"{where}: {key} must be a {kind.__name__}, not {value!r}")
    return value
