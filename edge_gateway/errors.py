"""The gateway's errors. Library exceptions are converted into these at the driver boundary."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any


class GatewayError(Exception):
    """Root of every error the gateway raises on purpose."""


class ConfigError(GatewayError):
    """The site configuration file is missing, unreadable or wrong."""


def config_table(raw: object, where: str, known: Collection[str]) -> dict[str, Any]:
    """``raw`` as a table of the config that holds only ``known`` settings; ConfigError
    naming what is wrong (``where``: the file and the table, e.g. "gateway.toml: [cache]")."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a table")
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ConfigError(f"{where} has unknown setting(s) {', '.join(unknown)}; it takes "
                          f"{', '.join(sorted(known))}")
    return raw


class BmcError(GatewayError):
    """A BMC refused, failed or did not answer. The message names the BMC and what it said."""

    def __init__(self, address: str, what: str, detail: str) -> None:
        super().__init__(f"BMC {address}: {what} failed: {detail}")
        self.address = address
        self.what = what
        self.detail = detail


class BmcAuthError(BmcError):
    """The BMC rejected the credentials."""


class BmcTlsError(BmcError):
    """TLS with the BMC failed: its certificate is not trusted or not the pinned one, or
    the two sides share no protocol version or cipher."""


class BmcUnreachableError(BmcError):
    """The BMC did not answer at all (connection refused, timed out)."""


class UnsupportedError(GatewayError):
    """The machine's driver cannot do what was asked."""
