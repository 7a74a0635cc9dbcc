"""The ``[provision]`` table of the site's configuration: the secrets a new node joins with::

    [provision]
    k3s_url = "https://k3s.example.net:6443"        # the k3s server the agents join
    k3s_token_file = "k3s.token"                    # the join token; mode 0600 (refused
                                                    # otherwise); relative: next to the config
    ssh_authorized_keys_file = "authorized_keys"    # optional: keys for the node's default user

The token and the keys stay on the gateway: a plan carries only the host name and the
address, and the gateway writes the secrets into each machine's seed (docs/provisioning.md).
The files are read again whenever a seed is built, so a rotated token takes effect without
a restart. Provisioning needs the ``[cache]`` table: its LAN server serves the seeds and
takes the phone-home calls.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_gateway.errors import ConfigError, config_table
from edge_gateway.provision.seed import MAX_SSH_KEYS, SeedSpec

KNOWN = frozenset({"k3s_url", "k3s_token_file", "ssh_authorized_keys_file"})
MAX_SECRET_FILE_BYTES = 256 * 1024


@dataclass(frozen=True)
class JoinSecrets:
    k3s_url: str
    k3s_token: str
    ssh_keys: tuple[str, ...]

    def __repr__(self) -> str:  # never in a log line
        return f"JoinSecrets(k3s_url={self.k3s_url!r}, {len(self.ssh_keys)} SSH keys)"


@dataclass(frozen=True)
class ProvisionSettings:
    k3s_url: str
    k3s_token_file: Path
    ssh_authorized_keys_file: Path | None = None

    def secrets(self) -> JoinSecrets:
        """The join secrets as the files hold them now; ConfigError naming what is wrong."""
        token = _read(self.k3s_token_file, "k3s_token_file", private=True).strip()
        keys: tuple[str, ...] = ()
        if self.ssh_authorized_keys_file is not None:
            text = _read(self.ssh_authorized_keys_file, "ssh_authorized_keys_file",
                         private=False)
            keys = tuple(line.strip() for line in text.splitlines()
                         if line.strip() and not line.lstrip().startswith("#"))
        secrets = JoinSecrets(self.k3s_url, token, keys)
        try:  # the checks a seed makes, before any machine needs one
            SeedSpec(machine_id="check", hostname="check", instance_id="check",
                     phone_home_url="http://check/p/x", k3s_url=self.k3s_url,
                     k3s_token=token, ssh_keys=keys)
        except ValueError as exc:
            raise ConfigError(f"[provision]: {exc}") from None
        return secrets


def parse_provision(raw: Any, base_dir: Path, source: str,
                    has_cache: bool) -> ProvisionSettings | None:
    """The table's settings, or None if there is none; ConfigError naming what is wrong
    (the files are read once here, so a wrong one stops the gateway at start)."""
    if raw is None:
        return None
    where = f"{source}: [provision]"
    raw = config_table(raw, where, KNOWN)
    if not has_cache:
        raise ConfigError(f"{where} needs a [cache] table: its LAN server serves the seeds "
                          "and takes the installed machines' phone-home calls")
    for name in ("k3s_url", "k3s_token_file"):
        if name not in raw:
            raise ConfigError(f"{where} {name} is required")
    if not isinstance(raw["k3s_url"], str):
        raise ConfigError(f"{where} k3s_url must be a string")
    keys_file = raw.get("ssh_authorized_keys_file")
    settings = ProvisionSettings(
        k3s_url=raw["k3s_url"],
        k3s_token_file=_path(raw["k3s_token_file"], base_dir, f"{where} k3s_token_file"),
        ssh_authorized_keys_file=(None if keys_file is None else _path(
            keys_file, base_dir, f"{where} ssh_authorized_keys_file")))
    try:
        settings.secrets()
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return settings


def _path(value: Any, base_dir: Path, where: str) -> Path:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where} must be a path")
    path = Path(value)
    return path if path.is_absolute() else base_dir / path


def _read(path: Path, name: str, private: bool) -> str:
    where = f"[provision] {name} {path}"
    try:
        info = path.stat()
    except OSError as exc:
        raise ConfigError(f"{where} cannot be read: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"{where} is not a file")
    if private and info.st_mode & 0o077:
        raise ConfigError(f"{where} is readable by others (mode {info.st_mode & 0o777:o}): "
                          f"it holds the cluster's join token; run chmod 600 {path}")
    if info.st_size > MAX_SECRET_FILE_BYTES:
        raise ConfigError(f"{where} has {info.st_size} bytes, more than "
                          f"{MAX_SECRET_FILE_BYTES}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where} cannot be read: {exc}") from None
    if name == "ssh_authorized_keys_file" and len(text.splitlines()) > MAX_SSH_KEYS * 4:
        raise ConfigError(f"{where} has more lines than {MAX_SSH_KEYS * 4}")
    return text
