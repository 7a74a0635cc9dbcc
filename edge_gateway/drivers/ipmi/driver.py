"""``IpmiDriver``: the driver core over IPMI 2.0 (RMCP+, "lanplus"), on pyghmi, composed
with one part per concern module.

Every method is one ``Connection.call``: a function of a concern module run on the BMC's
shared session in a worker thread, within the driver's timeout, its failures converted to
``BmcError`` naming the BMC and the operation. IPMI has no standard virtual media, BIOS
settings or firmware update, so the driver has no such parts (nor their capabilities).
"""

from __future__ import annotations

import time

from pyghmi.ipmi.command import Command

from edge_gateway.drivers.base import CAPABILITIES_TTL, BmcCredentials, Driver, MachineInfo
from edge_gateway.drivers.ipmi import inventory, mc
from edge_gateway.drivers.ipmi.boot import IpmiBoot
from edge_gateway.drivers.ipmi.inventory import IpmiInventory
from edge_gateway.drivers.ipmi.link import Connection
from edge_gateway.drivers.ipmi.mc import IpmiBmc
from edge_gateway.drivers.ipmi.power import IpmiPower
from edge_gateway.drivers.ipmi.sel import IpmiLogs
from edge_gateway.drivers.ipmi.sensors import IpmiHealth
from edgeplane.protocol import BmcProtocol, Capability


class IpmiDriver(IpmiPower, IpmiBoot, IpmiInventory, IpmiHealth, IpmiLogs, IpmiBmc, Driver):
    """A machine's BMC over IPMI 2.0. The address is "host", "host:port", "[v6 address]:port"
    or "ipmi://host:port"; the port defaults to 623."""

    protocol = BmcProtocol.IPMI.value

    def __init__(self, credentials: BmcCredentials, timeout: float = 30.0) -> None:
        super().__init__(credentials, timeout)
        self._bmc = Connection(credentials, timeout)
        self.host, self.port = self._bmc.host, self._bmc.port
        self._offered: tuple[float, frozenset[Capability]] | None = None

    def machine_capabilities(self) -> frozenset[Capability]:
        """Asked of the BMC (kept for ``CAPABILITIES_TTL``): no SDR, no HEALTH; no SEL, no
        SEL."""
        return self._bmc.call("read capabilities", self._capabilities)

    def _capabilities(self, cmd: Command) -> frozenset[Capability]:
        now = time.monotonic()
        if self._offered is None or now - self._offered[0] > CAPABILITIES_TTL:
            self._offered = (now, mc.offered(cmd) & self.capabilities)
        return self._offered[1]

    def describe(self) -> MachineInfo:
        """Identity from FRU 0 and Get Device ID; capabilities as ``machine_capabilities``."""
        return self._bmc.call("describe", lambda cmd: inventory.describe(
            cmd, self.address, self._capabilities(cmd)))

    def close(self) -> None:
        self._offered = None
        self._bmc.close()
