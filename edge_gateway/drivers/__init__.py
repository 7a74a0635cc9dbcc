"""Hardware drivers. Each protocol's module is imported only when a machine needs it, so a
site with only IPMI BMCs never loads sushy (and the other way round)."""

from __future__ import annotations

import importlib

from edge_gateway.drivers.base import BmcCredentials, Driver
from edge_gateway.errors import ConfigError
from edgeplane.protocol import BmcProtocol

_DRIVER_CLASSES = {
    BmcProtocol.REDFISH: ("edge_gateway.drivers.redfish", "RedfishDriver"),
    BmcProtocol.IPMI: ("edge_gateway.drivers.ipmi", "IpmiDriver"),
}


def driver_class(protocol: str) -> type[Driver]:
    try:
        module_name, class_name = _DRIVER_CLASSES[BmcProtocol(protocol)]
    except ValueError:
        raise ConfigError(
            f"unknown BMC protocol {protocol!r}; use one of "
            f"{', '.join(p.value for p in BmcProtocol)}"
        ) from None
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"the {protocol} driver cannot be loaded: {exc}") from None
    return getattr(module, class_name)


def create_driver(protocol: str, credentials: BmcCredentials, timeout: float = 30.0) -> Driver:
    return driver_class(protocol)(credentials, timeout=timeout)
