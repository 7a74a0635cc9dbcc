"""A site's provisioning as the gateway runs it: its join secrets, its tokens, and the two
LAN routes the cache's server hands it (``/s/<token>/seed.iso``, ``POST /p/<token>``)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from edge_gateway.errors import ConfigError
from edge_gateway.provision.facts import MAX_BODY_BYTES, parse_facts
from edge_gateway.provision.seed import SeedSpec, StaticNetwork, build_seed
from edge_gateway.provision.settings import ProvisionSettings
from edge_gateway.provision.tokens import TokenStore, tokens_path

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreparedSeed:
    token: str
    seed_url: str
    phone_home_url: str
    instance_id: str
    size: int


class Provisioning:
    max_body = MAX_BODY_BYTES

    def __init__(self, settings: ProvisionSettings, tokens: TokenStore,
                 ca_file: Path | None = None) -> None:
        self.settings = settings
        self.tokens = tokens
        self.ca_file = ca_file  # the LAN server's certificate, if it serves HTTPS

    def close(self) -> None:
        self.tokens.close()

    def prepare(self, machine: str, hostname: str, network: StaticNetwork | None,
                base_url: str) -> PreparedSeed:
        """Build (again) the machine's seed under its unused token, or a new one, and keep
        it to serve. ConfigError if the join secrets cannot be read, ValueError if the
        step's values are not fit for a seed."""
        secrets = self.settings.secrets()
        try:
            ca = self.ca_file.read_text() if self.ca_file else None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"[cache] tls_cert {self.ca_file} cannot be read for the "
                              f"seeds: {exc}") from None
        token = self.tokens.token_for(machine)
        phone_home = f"{base_url}/p/{token}"
        spec = SeedSpec(machine_id=machine, hostname=hostname,
                        instance_id=f"{machine}-{token[:8]}", phone_home_url=phone_home,
                        k3s_url=secrets.k3s_url, k3s_token=secrets.k3s_token,
                        ssh_keys=secrets.ssh_keys, network=network,
                        phone_home_ca=ca)
        seed = build_seed(spec)
        self.tokens.set_seed(token, seed)
        return PreparedSeed(token=token, seed_url=f"{base_url}/s/{token}/seed.iso",
                            phone_home_url=phone_home, instance_id=spec.instance_id,
                            size=len(seed))

    # --- the LAN routes ----------------------------------------------------------------

    def seed(self, token: str) -> bytes | None:
        return self.tokens.seed(token)

    def phone_home(self, token: str, body: bytes, content_type: str | None,
                   peer: str) -> tuple[int, str]:
        """HTTP status and text for a phone-home call."""
        if not self.tokens.has_unused(token):
            return 404, "no such token (unknown, or already used)"
        try:
            facts = parse_facts(body, content_type)
        except ValueError as exc:
            return 400, str(exc)
        machine = self.tokens.phone_home(token, facts)
        if machine is None:
            return 404, "no such token (unknown, or already used)"
        LOG.info("machine %s phoned home from %s: %s", machine, peer, facts)
        return 204, ""


def open_provisioning(settings: ProvisionSettings | None, journal: Path,
                      ca_file: Path | None) -> Provisioning | None:
    """The site's provisioning if its configuration has ``[provision]``: its tokens beside
    the journal; ``ca_file``: the LAN server's certificate, if it speaks HTTPS."""
    if settings is None:
        return None
    return Provisioning(settings, TokenStore(tokens_path(journal)), ca_file=ca_file)
