"""``IpmiDriver``: the Driver interface over IPMI 2.0 (RMCP+, "lanplus"), on pyghmi.

Every method is one ``Connection.call``: a function of a concern module run on the BMC's
shared session in a worker thread, within the driver's timeout, its failures converted to
``BmcError`` naming the BMC and the operation.
"""

from __future__ import annotations

import time
from typing import Any

from pyghmi.ipmi.command import Command

from edge_gateway.drivers.base import (
    CAPABILITIES_TTL,
    BmcCredentials,
    BootOverride,
    Driver,
    HealthReport,
    LogEntry,
    MachineInfo,
)
from edge_gateway.drivers.ipmi import chassis, inventory, mc, sel, sensors
from edge_gateway.drivers.ipmi.link import Connection
from edgeplane.protocol import (
    BmcProtocol,
    BootFirmwareMode,
    BootMode,
    BootTarget,
    Capability,
    PowerState,
)


class IpmiDriver(Driver):
    """A machine's BMC over IPMI 2.0. The address is "host", "host:port", "[v6 address]:port"
    or "ipmi://host:port"; the port defaults to 623."""

    protocol = BmcProtocol.IPMI.value
    capabilities = frozenset({Capability.POWER, Capability.BOOT, Capability.INVENTORY,
                              Capability.HEALTH, Capability.SEL, Capability.BMC_RESET})

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

    # --- power ---------------------------------------------------------------------------

    def get_power_state(self) -> PowerState:
        return self._bmc.call("read power state", chassis.read_power)

    def request_power_state(self, state: PowerState) -> None:
        """Ask for ``state`` and return; no error (and no request sent) if already so."""
        self._bmc.call(f"power {state}", lambda cmd: chassis.request_power(cmd, state))

    def request_graceful_shutdown(self) -> None:
        """Chassis Control soft off (ACPI); nothing is sent if the machine is already off."""
        self._bmc.call("graceful shutdown",
                       lambda cmd: chassis.request_soft_off(cmd, self.address))

    def request_power_cycle(self) -> None:
        """Chassis Control power cycle; a hard reset where the BMC refuses a cycle (logged).
        Refused for a machine that is off, as IPMI requires. Not idempotent."""
        self._bmc.call("power cycle", lambda cmd: chassis.power_cycle(cmd, self.address))

    # --- boot ----------------------------------------------------------------------------

    def get_boot_override(self) -> BootOverride:
        return self._bmc.call("read boot override",
                              lambda cmd: chassis.read_boot(cmd, self.address))

    def set_boot_override(self, target: BootTarget, mode: BootMode,
                          firmware_mode: BootFirmwareMode | None = None) -> None:
        """USB boots as IPMI's "primary removable media", BIOS as "setup". Without
        ``firmware_mode`` the BMC's UEFI/legacy flag is kept."""
        what = f"set boot override {target} ({mode}{f', {firmware_mode}' if firmware_mode else ''})"
        self._bmc.call(what, lambda cmd: chassis.set_boot(cmd, target, mode, firmware_mode))

    # --- inventory, health, SEL ----------------------------------------------------------

    def describe(self) -> MachineInfo:
        """Identity from FRU 0 and Get Device ID; capabilities as ``machine_capabilities``."""
        return self._bmc.call("describe", lambda cmd: inventory.describe(
            cmd, self.address, self._capabilities(cmd)))

    def collect_inventory(self) -> dict[str, Any]:
        """{"system", "fru": {"chassis", "board", "product"}, "device_id", "system_guid",
        "bmc": {"firmware", "ipmi_version"}}; parts the BMC does not keep are left out."""
        return self._bmc.call("collect inventory",
                              lambda cmd: inventory.collect(cmd, self.address))

    def check_health(self) -> HealthReport:
        return self._bmc.call("check health", sensors.check)

    def read_sel(self, limit: int | None = None) -> list[LogEntry]:
        return self._bmc.call("read event log", lambda cmd: sel.read(cmd, self.address, limit))

    def clear_sel(self) -> None:
        self._bmc.call("clear event log", lambda cmd: sel.clear(cmd, self.address))

    # --- the BMC itself ------------------------------------------------------------------

    def reset_bmc(self) -> None:
        """Cold reset. The BMC forgets its sessions, so this driver's is logged out too; the
        next call logs in anew (and fails as unreachable until the BMC is back)."""
        self._bmc.call("reset BMC", lambda cmd: mc.cold_reset(cmd, self.address),
                       forget_session=True)

    def close(self) -> None:
        self._offered = None
        self._bmc.close()
