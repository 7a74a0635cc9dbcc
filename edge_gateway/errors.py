"""The gateway's errors. Library exceptions are converted into these at the driver boundary."""

from __future__ import annotations


class GatewayError(Exception):
    """Root of every error the gateway raises on purpose."""


class ConfigError(GatewayError):
    """The site configuration file is missing, unreadable or wrong."""


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
