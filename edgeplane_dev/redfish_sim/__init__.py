"""A stateful Redfish BMC simulator serving any DMTF-format mockup, for the local stack,
the tests and the benchmarks.

It serves the mockup's documents and behaves like a BMC where clients act: power changes
that take time and write the event log, boot override (a "Once" override consumed at the
next boot), virtual media that really fetches its image, BIOS pending settings checked
against the attribute registry and applied at the next boot, SimpleUpdate with a task
monitor that progresses and then changes the firmware version, ClearLog, Manager.Reset
(the BMC is gone for a while and forgets its sessions), sessions and basic auth (a wrong
password is a 401). It finds everything by following the links in the payloads, as a client
does, so it serves other mockups too; faults (latency, 5xx, hangs, dropped connections,
malformed JSON) are injected on request.

- ``resources``: the mockup, read once, and each BMC's changes on top of it;
- ``system``: power, boot override and BIOS of one ComputerSystem;
- ``media``, ``update``, ``logs``, ``auth``: virtual media, firmware updates and tasks,
  event logs, sessions and basic auth;
- ``faults``: what can be injected;
- ``bmc``: ``RedfishBmc``, dispatching requests to the above;
- ``server``: HTTP, or HTTPS with a given certificate, on loopback ports
  (``RedfishSimulator`` in process, ``serve`` and ``main`` for
  ``python -m edgeplane_dev.redfish_sim --port P``).

The shipped mockup is DMTF's public-rackmount1 (BSD-3-Clause, ``mockups/.../LICENSE.md``);
its Bios names the attribute registry ``BiosAttributeRegistryP89.v1_0_0`` without carrying
it, so the simulator publishes one written for it (``registries/``).
"""

from edgeplane_dev.redfish_sim.bmc import (
    DEFAULT_PASSWORD,
    DEFAULT_USERNAME,
    BmcOptions,
    RedfishBmc,
    shipped_bmc,
)
from edgeplane_dev.redfish_sim.faults import KINDS as FAULT_KINDS
from edgeplane_dev.redfish_sim.faults import Fault
from edgeplane_dev.redfish_sim.resources import SHIPPED, Mockup, MockupError
from edgeplane_dev.redfish_sim.server import RedfishSimulator, main, serve

__all__ = ["DEFAULT_PASSWORD", "DEFAULT_USERNAME", "FAULT_KINDS", "SHIPPED", "BmcOptions",
           "Fault", "Mockup", "MockupError", "RedfishBmc", "RedfishSimulator", "main",
           "serve", "shipped_bmc"]
