"""A machine's NoCloud seed: the ISO that tells cloud-init who the machine is and how it joins.

The image (volume ``CIDATA``, see ``iso9660``) holds three files:

- ``meta-data``: ``instance-id`` and ``local-hostname``;
- ``user-data``: ``#cloud-config`` then a JSON document (JSON is YAML, and the gateway's
  base install has no YAML library): the host name, the SSH keys, a file with the k3s
  server URL and join token (mode 0600), a phone-home script, and the ``runcmd`` that
  installs k3s as an agent and then runs the script. The top-level key
  ``edgeplane_phone_home: {url: ...}`` (ignored by cloud-init) names the URL the script
  POSTs the node's facts to;
- ``network-config``: netplan v2, DHCP on the first Ethernet NIC, or the static address
  the step gave.

Everything is validated here, before it is written into a script that runs as root.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from edge_gateway.provision.iso9660 import read_iso, write_iso

VOLUME_ID = "CIDATA"
SEED_FILES = ("meta-data", "user-data", "network-config")
PHONE_HOME_KEY = "edgeplane_phone_home"
K3S_ENV_PATH = "/etc/edgeplane/k3s.env"
PHONE_HOME_PATH = "/usr/local/sbin/edgeplane-phone-home"
GATEWAY_CA_PATH = "/etc/edgeplane/gateway-ca.pem"
MAX_FACT_CHARS = 128

_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_INSTANCE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
_TOKEN_TEXT = re.compile(r"^[\x21-\x7e]{1,512}$")  # printable, no spaces or quotes checked below
_SSH_KEY = re.compile(r"^(ssh-|ecdsa-|sk-)[A-Za-z0-9@._+-]+ [A-Za-z0-9+/=]+( [\x20-\x7e]*)?$")
MAX_SSH_KEYS = 64
MAX_URL = 512

_PHONE_HOME_SCRIPT = """#!/bin/sh
# Tells the site gateway this machine is installed: POSTs its facts once, with retries.
set -u
url="$1"
clean() { printf '%s' "$1" | tr -d '"\\\\[:cntrl:]' | cut -c1-{limit}; }
os=$(. /etc/os-release 2>/dev/null && printf '%s' "${PRETTY_NAME:-unknown}")
k3s=$(k3s --version 2>/dev/null | head -n 1)
body=$(printf '{"os":"%s","kernel":"%s","k3s_version":"%s","node_name":"%s"}' \\
  "$(clean "${os:-unknown}")" "$(clean "$(uname -r)")" "$(clean "${k3s:-none}")" \\
  "$(clean "$(hostname)")")
ca=""
[ -s {ca_path} ] && ca="--cacert {ca_path}"
exec curl -sS --fail --retry 60 --retry-delay 10 --retry-all-errors --max-time 30 $ca \\
  -H 'Content-Type: application/json' --data "$body" "$url"
"""
_INSTALL_K3S = (
    f"set -a; . {K3S_ENV_PATH}; set +a; "
    "command -v k3s >/dev/null 2>&1 || curl -sfL https://get.k3s.io | sh -s - agent"
)


@dataclass(frozen=True)
class StaticNetwork:
    """A static address for the first NIC: ``address`` with its prefix (``10.0.0.5/24``)."""

    address: str
    gateway: str | None = None
    dns: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        try:
            interface = ipaddress.ip_interface(self.address)
        except ValueError:
            raise ValueError(f"address {self.address!r} is not an IP address with a prefix "
                             "(10.0.0.5/24)") from None
        if "/" not in self.address:
            raise ValueError(f"address {self.address!r} has no prefix length (10.0.0.5/24)")
        if self.gateway is not None:
            gateway = _ip(self.gateway, "gateway")
            if gateway.version != interface.version:
                raise ValueError(f"gateway {self.gateway} is not an IPv{interface.version} "
                                 "address like the address")
        if len(self.dns) > 3:
            raise ValueError(f"dns lists {len(self.dns)} servers; at most 3")
        for server in self.dns:
            _ip(server, "dns server")


@dataclass(frozen=True)
class SeedSpec:
    """What one machine's seed says. ``k3s_token`` and ``ssh_keys`` are the site's secrets
    (from the gateway's ``[provision]`` settings); the rest comes from the plan's step."""

    machine_id: str
    hostname: str
    instance_id: str
    phone_home_url: str
    k3s_url: str
    k3s_token: str
    ssh_keys: tuple[str, ...] = ()
    network: StaticNetwork | None = None
    phone_home_ca: str | None = None  # PEM the installed system trusts the gateway by
    nic_mac: str | None = None  # the first NIC, if known; else the first Ethernet name

    def __post_init__(self) -> None:
        check_hostname(self.hostname)
        if not _INSTANCE_ID.fullmatch(self.instance_id):
            raise ValueError(f"instance id {self.instance_id!r} is not 1-128 of "
                             "A-Z a-z 0-9 . _ : -")
        _url(self.phone_home_url, "phone-home URL", ("http", "https"))
        _url(self.k3s_url, "k3s URL", ("https",))
        if not _TOKEN_TEXT.fullmatch(self.k3s_token) or set(self.k3s_token) & set("'\"\\$`"):
            raise ValueError("the k3s token must be 1-512 printable characters without "
                             "spaces, quotes, backslashes, $ or `")
        if len(self.ssh_keys) > MAX_SSH_KEYS:
            raise ValueError(f"{len(self.ssh_keys)} SSH keys; at most {MAX_SSH_KEYS}")
        for number, key in enumerate(self.ssh_keys, 1):
            if len(key) > 16384 or not _SSH_KEY.fullmatch(key):
                raise ValueError(f"SSH key {number} is not one OpenSSH public key line "
                                 f"({key[:40]!r}...)")
        if self.phone_home_ca is not None and (
                "-----BEGIN CERTIFICATE-----" not in self.phone_home_ca
                or len(self.phone_home_ca) > 65536):
            raise ValueError("phone-home CA is not a PEM certificate of at most 64 KiB")
        if self.nic_mac is not None and not re.fullmatch(r"([0-9a-f]{2}:){5}[0-9a-f]{2}",
                                                         self.nic_mac):
            raise ValueError(f"NIC MAC {self.nic_mac!r} is not six lowercase hex pairs "
                             "separated by colons")


def check_hostname(hostname: str) -> str:
    """``hostname`` if it is a DNS name (labels of 1-63 letters, digits, hyphens)."""
    if (not isinstance(hostname, str) or not 1 <= len(hostname) <= 253
            or not all(_LABEL.fullmatch(label) for label in hostname.split("."))):
        raise ValueError(f"hostname {hostname!r} is not a DNS name (labels of 1-63 letters, "
                         "digits and hyphens, not starting or ending with a hyphen)")
    return hostname


def _ip(value: Any, what: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"{what} {value!r} is not an IP address") from None


def _url(value: str, what: str, schemes: tuple[str, ...]) -> None:
    parts = urlsplit(value) if isinstance(value, str) and len(value) <= MAX_URL else None
    if (parts is None or parts.scheme not in schemes or not parts.hostname
            or any(c.isspace() or c in "'\"\\$`" or ord(c) < 32 for c in value)):
        raise ValueError(f"{what} {value!r} is not a {' or '.join(schemes)} URL of at most "
                         f"{MAX_URL} characters without spaces or quotes")


def meta_data(spec: SeedSpec) -> bytes:
    return (f"instance-id: {json.dumps(spec.instance_id)}\n"
            f"local-hostname: {json.dumps(spec.hostname)}\n").encode()


def user_data(spec: SeedSpec) -> bytes:
    files = [
        {"path": K3S_ENV_PATH, "permissions": "0600", "owner": "root:root",
         "content": f"K3S_URL={spec.k3s_url}\nK3S_TOKEN={spec.k3s_token}\n"},
        {"path": PHONE_HOME_PATH, "permissions": "0755", "owner": "root:root",
         "content": _PHONE_HOME_SCRIPT.replace("{limit}", str(MAX_FACT_CHARS))
         .replace("{ca_path}", GATEWAY_CA_PATH)},
    ]
    if spec.phone_home_ca:
        files.append({"path": GATEWAY_CA_PATH, "permissions": "0644", "owner": "root:root",
                      "content": spec.phone_home_ca})
    document = {
        "hostname": spec.hostname,
        "preserve_hostname": False,
        "ssh_authorized_keys": list(spec.ssh_keys),
        "write_files": files,
        "runcmd": [["sh", "-c", _INSTALL_K3S], [PHONE_HOME_PATH, spec.phone_home_url]],
        PHONE_HOME_KEY: {"url": spec.phone_home_url},
    }
    return b"#cloud-config\n" + json.dumps(document, indent=1, sort_keys=True).encode() + b"\n"


def network_config(spec: SeedSpec) -> bytes:
    match = {"macaddress": spec.nic_mac} if spec.nic_mac else {"name": "e*"}
    nic: dict[str, Any] = {"match": match}
    if spec.network is None:
        nic["dhcp4"] = True
    else:
        nic.update({"dhcp4": False, "addresses": [spec.network.address]})
        if spec.network.gateway:
            nic["routes"] = [{"to": "default", "via": spec.network.gateway}]
        if spec.network.dns:
            nic["nameservers"] = {"addresses": list(spec.network.dns)}
    document = {"version": 2, "ethernets": {"nic0": nic}}
    return json.dumps(document, indent=1, sort_keys=True).encode() + b"\n"


def build_seed(spec: SeedSpec) -> bytes:
    """The seed ISO of ``spec``; the same spec always gives the same bytes."""
    return write_iso(VOLUME_ID, {"meta-data": meta_data(spec), "user-data": user_data(spec),
                                 "network-config": network_config(spec)})


def read_seed(data: bytes) -> dict[str, bytes]:
    """The files of a seed image (name -> content); ValueError naming what is wrong if it
    is not an ISO 9660 image of volume ``CIDATA`` with ``meta-data`` and ``user-data``."""
    volume_id, files = read_iso(data)
    if volume_id.upper() != VOLUME_ID:
        raise ValueError(f"volume identifier {volume_id!r} is not {VOLUME_ID}: cloud-init "
                         "would not take it for a seed")
    missing = [name for name in ("meta-data", "user-data") if name not in files]
    if missing:
        raise ValueError(f"seed has no {' or '.join(missing)} (it has "
                         f"{', '.join(sorted(files)) or 'no files'})")
    return files


def phone_home_url(files: dict[str, bytes]) -> str:
    """The phone-home URL a seed's user-data names (what the installed system POSTs to)."""
    text = files["user-data"].decode("utf-8", "replace")
    if not text.startswith("#cloud-config\n"):
        raise ValueError("user-data does not start with #cloud-config")
    try:
        document = json.loads(text.split("\n", 1)[1])
        url = document[PHONE_HOME_KEY]["url"]
    except (ValueError, KeyError, TypeError):
        raise ValueError(f"user-data has no {PHONE_HOME_KEY}: {{url: ...}}") from None
    if not isinstance(url, str):
        raise ValueError(f"user-data {PHONE_HOME_KEY}.url is not a string")
    return url
