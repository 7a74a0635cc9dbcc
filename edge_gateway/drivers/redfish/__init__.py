"""The Redfish driver, on sushy: one module per concern.

- ``service``: the connection (lazy root, connector with timeouts and retries, auth,
  system selection) and the error boundary (``RedfishService.call``);
- ``tls``: the connector for a BMC whose certificate is pinned (``tls_fingerprint``);
- ``tables``: Redfish words and sushy constants <-> Edgeplane's;
- ``power``, ``boot``, ``media``, ``bios``, ``firmware``, ``inventory``, ``health``,
  ``logs``, ``bmc``: one hardware interface each (``RedfishPower`` implements
  ``PowerInterface``...), with the check of whether a given BMC offers it;
- ``driver``: ``RedfishDriver``, the driver core composed with those parts.

sushy's resource classes are used where they act (system reset and boot, virtual media
actions, manager reset); raw documents through sushy's connector where sushy has no class
or hides what we need (Memory, LogService, ThermalSubsystem, attribute registries, task
monitors, the settings object's ETag). sushy and requests types never leave this package.
"""

from edge_gateway.drivers.redfish.driver import RedfishDriver

__all__ = ["RedfishDriver"]
