"""TLS to a BMC whose certificate is pinned (``tls_fingerprint``), and what a failed
handshake says.

sushy makes its own ``requests.Session`` inside its ``Connector`` and offers no way to hand
it one, so ``PinnedConnector`` mounts ``PinnedAdapter`` on that session. The adapter asks
urllib3 to compare the certificate's fingerprint right after the handshake of every new
connection, before a byte of the request is written; the chain and the host name are not
checked (a self-signed BMC certificate passes neither). The connector itself is made with
``verify=True``: were the adapter ever bypassed, the certificate would be checked against
the system's CAs and a self-signed one refused, never accepted unchecked.
"""

from __future__ import annotations

import functools
import os
import re
import ssl
from typing import Any
from urllib.parse import urlsplit

import requests
from sushy import connector as sushy_connector

from edge_gateway.drivers.redfish.pools import BmcAdapter
from edge_gateway.fingerprints import format_fingerprint, hex_digits

# urllib3's words when the fingerprint differs (urllib3.util.ssl_.assert_fingerprint).
_MISMATCH = re.compile(r'Fingerprints did not match\. Expected "[0-9a-f]+", '
                       r'got "(?P<presented>[0-9a-f]+)"')


# Client contexts shared by every BMC connection that checks the same way. Given none,
# urllib3 builds a context per connection and, unless told a CA bundle, loads the system's CA
# store into it: ~1 MiB and tens of milliseconds of CPU per BMC connection (a 20-machine
# plan over pinned HTTPS took 40 s of the gateway's CPU instead of 3).


@functools.cache
def _unchecked_context() -> ssl.SSLContext:
    """No CA store and no check in the handshake: for a pinned BMC (the pin is checked right
    after it) and for one with ``verify_tls = false``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


@functools.cache
def _bundle_context(bundle: str) -> ssl.SSLContext:
    """The chain and host name checked against one CA bundle (``tls_ca_bundle``), loaded
    once per gateway process."""
    context = ssl.create_default_context(cafile=bundle)
    return context


class SharedContextAdapter(BmcAdapter):
    """requests' adapter, with the shared context of its way of checking (``verify``)."""

    def build_connection_pool_key_attributes(
            self, request: requests.PreparedRequest, verify: bool | str | None,
            cert: Any = None) -> tuple[Any, Any]:
        host, typed = super().build_connection_pool_key_attributes(
            request, True if verify is None else verify, cert)
        if verify is False:
            return host, {**typed, "ssl_context": _unchecked_context()}
        if isinstance(verify, str) and not os.path.isdir(verify):
            pool: dict[str, Any] = dict(typed)
            pool.pop("ca_certs", None)
            pool["ssl_context"] = _bundle_context(verify)
            return host, pool
        return host, typed  # True: requests' own context, made once


class PinnedAdapter(BmcAdapter):
    """HTTPS whose one check of the server is its certificate's SHA-256 fingerprint."""

    def __init__(self, fingerprint: str) -> None:
        self.fingerprint = fingerprint
        super().__init__()

    def build_connection_pool_key_attributes(
            self, request: requests.PreparedRequest, verify: bool | str | None,
            cert: Any = None) -> tuple[Any, Any]:
        # The chain and host name are not checked (CERT_NONE): the handshake completes,
        # and then urllib3 compares the certificate's fingerprint.
        host, typed = super().build_connection_pool_key_attributes(request, False, cert)
        pool: dict[str, Any] = dict(typed)
        for key in ("ssl_context", "ca_certs", "ca_cert_dir"):
            pool.pop(key, None)
        pool["cert_reqs"] = "CERT_NONE"
        pool["ssl_context"] = _unchecked_context()
        pool["assert_fingerprint"] = hex_digits(self.fingerprint)
        return host, pool

    def send(self, request: requests.PreparedRequest, stream: bool = False,
             timeout: Any = None, verify: bool | str | None = True, cert: Any = None,
             proxies: Any = None) -> requests.Response:
        if urlsplit(request.url or "").scheme.lower() != "https":
            raise requests.exceptions.SSLError(
                f"refused to send {request.method} {request.url} in clear text: the BMC's "
                "certificate is pinned", request=request)
        # verify=True would make requests set CERT_REQUIRED on the pool (cert_verify):
        # the pin replaces that check, it does not add to it.
        return super().send(request, stream=stream, timeout=timeout, verify=False, cert=cert,
                            proxies=proxies)


class PinnedConnector(sushy_connector.Connector):
    """sushy's connector, every request of it (https:// or, refused, http://) through a
    ``PinnedAdapter``."""

    def __init__(self, url: str, fingerprint: str, **kwargs: Any) -> None:
        super().__init__(url, verify=True, **kwargs)
        adapter = PinnedAdapter(fingerprint)
        for prefix in ("https://", "http://"):
            self._session.mount(prefix, adapter)


def connector(address: str, verify: bool | str, fingerprint: str | None,
              **kwargs: Any) -> sushy_connector.Connector:
    """sushy's connector to a BMC: pinned to ``fingerprint`` if given, else checking the
    certificate as ``verify`` says (True: the system's CAs; a path: that bundle).

    Its session takes nothing from the process's environment (``trust_env``): no proxy
    (a BMC is on the site's own network, and its credentials go to no one else), no netrc,
    no ``REQUESTS_CA_BUNDLE``; the site's config says how a BMC is reached and checked.
    requests would otherwise look all of that up on every request (see BENCHMARKS.md,
    "Where the time goes")."""
    if fingerprint is not None:
        made: sushy_connector.Connector = PinnedConnector(address, fingerprint, **kwargs)
    else:
        made = sushy_connector.Connector(address, verify=verify, **kwargs)
        made._session.mount("https://", SharedContextAdapter())  # noqa: SLF001 - see above
    made._session.trust_env = False  # noqa: SLF001 - sushy makes the session itself
    return made


def tls_failure(said: str, fingerprint: str | None) -> str:
    """What a failed TLS check means, from the library's words for it."""
    mismatch = _MISMATCH.search(said)
    if fingerprint is not None and mismatch:
        presented = format_fingerprint(bytes.fromhex(mismatch["presented"]))
        return (f"the BMC's certificate is not the pinned one: expected {fingerprint}, "
                f"presented {presented}; refused before sending any request. If the BMC's "
                "certificate was replaced on purpose, compare the new fingerprint with what "
                "the BMC itself shows, then update tls_fingerprint")
    if fingerprint is not None:
        return f"TLS failed: {said} (the certificate is pinned to {fingerprint})"
    return f"TLS failed: {said}"
