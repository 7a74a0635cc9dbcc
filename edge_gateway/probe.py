"""``edge-gateway bmc probe``: an operator's first look at a new BMC.

The URL says the protocol: ``http(s)://host[:port]`` is Redfish, ``ipmi://host[:port]`` is
IPMI. A Redfish URL may end in a ComputerSystem's ``@odata.id``
(``https://10.0.0.11/redfish/v1/Systems/1``) to pick one system of a BMC that has several.

An HTTPS BMC's certificate is read first, and its SHA-256 fingerprint reported (``tls``),
so an operator can pin it (``tls_fingerprint``) once they have compared it with what the
BMC itself shows. How the probe trusted the certificate is reported too: ``ca`` (the
system's CAs), ``pin`` (the fingerprint given), or ``none`` (``verify_tls=False``: the
Redfish calls are then pinned to the certificate just read, so whoever answered them holds
the certificate reported, but nothing vouches for it).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

from edge_gateway.drivers import create_driver
from edge_gateway.drivers.base import BmcCredentials, Driver, MachineInfo, interface
from edge_gateway.errors import BmcTlsError, ConfigError, GatewayError
from edge_gateway.fingerprints import fingerprint_of, parse_fingerprint, presented_certificate
from edgeplane.protocol import BmcProtocol, Capability

LOG = logging.getLogger(__name__)

PROTOCOL_FOR_SCHEME = {
    "http": BmcProtocol.REDFISH,
    "https": BmcProtocol.REDFISH,
    "ipmi": BmcProtocol.IPMI,
}

# A path that names the Redfish service rather than one system.
_SERVICE_PATHS = {"", "/redfish", "/redfish/v1"}


def parse_bmc_url(url: str, username: str, password: str, verify_tls: bool = True,
                  tls_fingerprint: str | None = None) -> tuple[BmcProtocol, BmcCredentials]:
    """The protocol and the driver credentials a probe URL stands for."""
    parts = urlsplit(url)
    protocol = PROTOCOL_FOR_SCHEME.get(parts.scheme.lower())
    if protocol is None or not parts.netloc:
        raise ConfigError(f"cannot probe {url!r}: use http(s)://host[:port] for Redfish or "
                          "ipmi://host[:port] for IPMI")
    if tls_fingerprint is not None:
        if parts.scheme.lower() != "https" or not verify_tls:
            raise ConfigError(f"cannot pin the certificate of {url!r}: a fingerprint needs an "
                              "https:// URL, and certificate checks (not --insecure)")
        try:
            tls_fingerprint = parse_fingerprint(tls_fingerprint)
        except ValueError as exc:
            raise ConfigError(f"the fingerprint {tls_fingerprint!r} {exc}") from None
    if protocol == BmcProtocol.IPMI:
        return protocol, BmcCredentials(address=parts.netloc, username=username,
                                        password=password)
    path = parts.path.rstrip("/")
    return protocol, BmcCredentials(
        address=f"{parts.scheme}://{parts.netloc}", username=username, password=password,
        system_id=None if path in _SERVICE_PATHS else path, verify_tls=verify_tls,
        tls_fingerprint=tls_fingerprint,
    )


def probe(url: str, username: str, password: str, timeout: float = 30.0,
          verify_tls: bool = True, tls_fingerprint: str | None = None) -> dict[str, Any]:
    """Describe the BMC at ``url`` as a JSON-serialisable dict; raise the BmcError if not.

    Redfish services with several systems also get ``systems``: one entry per system. If
    the URL names none of them, the top-level machine fields are None. HTTPS BMCs also get
    ``tls``: their certificate's ``fingerprint`` and how it was ``trusted_by``.
    """
    protocol, credentials = parse_bmc_url(url, username, password, verify_tls,
                                          tls_fingerprint)
    tls: dict[str, str] | None = None
    if credentials.address.lower().startswith("https://"):
        presented = fingerprint_of(presented_certificate(credentials.address, timeout))
        trusted_by = ("pin" if credentials.tls_fingerprint else "ca" if verify_tls else "none")
        tls = {"fingerprint": presented, "trusted_by": trusted_by}
        if trusted_by == "none":
            credentials = replace(credentials, verify_tls=True, tls_fingerprint=presented)
    try:
        result = _probe(url, protocol, credentials, timeout)
    except BmcTlsError as exc:
        if tls is None or tls["trusted_by"] != "ca":
            raise  # a pin's error already names both fingerprints
        raise BmcTlsError(exc.address, exc.what, (
            f"{exc.detail}; it presents the certificate {tls['fingerprint']}: if that is the "
            "fingerprint the BMC itself shows (its console or label), pin it "
            "(tls_fingerprint)")) from exc
    if tls is not None:
        result["tls"] = tls
    LOG.debug("probe %s: %s", url, result)
    return result


def _probe(url: str, protocol: BmcProtocol, credentials: BmcCredentials,
           timeout: float) -> dict[str, Any]:
    driver = create_driver(protocol, credentials, timeout=timeout)
    try:
        system_ids = _system_ids(driver)
        several = len(system_ids) > 1
        info = None if several and credentials.system_id is None else driver.describe()
        details = _details(driver) if info else {"capabilities": _names(driver.capabilities)}
        systems = ([_system_entry(protocol, replace(credentials, system_id=s), timeout)
                    for s in system_ids] if several else None)
    finally:
        driver.close()
    result: dict[str, Any] = {"url": url, "protocol": str(protocol), **_machine_fields(info),
                              **details}
    if systems is not None:
        result["systems"] = systems
    return result


def _system_ids(driver: Driver) -> list[str]:
    """The systems behind one BMC, for drivers that can tell (Redfish); else none."""
    list_systems = getattr(driver, "system_ids", None)
    return list(list_systems()) if callable(list_systems) else []


def _system_entry(protocol: BmcProtocol, credentials: BmcCredentials,
                  timeout: float) -> dict[str, Any]:
    driver = create_driver(protocol, credentials, timeout=timeout)
    try:
        info = driver.describe()
        details = _details(driver)
    finally:
        driver.close()
    return {"id": credentials.system_id, **_machine_fields(info), **details}


def _details(driver: Driver) -> dict[str, Any]:
    """What this machine's BMC really offers, and its full inventory where it has one."""
    capabilities = driver.machine_capabilities()
    details: dict[str, Any] = {"capabilities": _names(capabilities)}
    if Capability.INVENTORY in capabilities:
        try:
            details["inventory"] = interface(driver, Capability.INVENTORY).collect_inventory()
        except GatewayError as exc:  # the identity above is still worth printing
            details["inventory_error"] = str(exc)
    return details


def _names(capabilities: frozenset[Capability]) -> list[str]:
    return sorted(str(c) for c in capabilities)


def _machine_fields(info: MachineInfo | None) -> dict[str, Any]:
    return {
        "manufacturer": info.manufacturer if info else None,
        "model": info.model if info else None,
        "serial": info.serial if info else None,
        "power": str(info.power) if info and info.power else None,
    }
