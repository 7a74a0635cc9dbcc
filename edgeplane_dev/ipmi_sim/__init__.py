"""An IPMI BMC simulator on pyghmi's BMC server class, for the local stack and the tests.

It keeps one machine's state in memory: power (with an optional delay before a change reads
back, like a real chassis), the boot flags (device, "once" or persistent, UEFI or legacy,
consumed by the next boot when "once"), device id and FRU 0, an SDR repository with five
threshold sensors, a system event log that power changes write to, and a BMC that goes
silent for a second on a cold reset and forgets its sessions. ``ipmitool -I lanplus`` and
pyghmi's own client both log in to it (cipher suite 3 only).

- ``session``: the RMCP+ session (cipher suite 3, refusals like a real BMC);
- ``chassis``: the machine: power that changes after a delay, boot flags, sensor values,
  the SEL events of its power changes;
- ``bmc``: ``SimulatedBmc``, the machine's IPMI face: the command table, cold reset;
- ``fru``, ``sensors``, ``sel``: FRU 0, the sensors with their SDR repository, the SEL;
- ``codes``: network functions and completion codes;
- ``serve``: ``serve``/``serve_many`` in this process, ``SimulatorProcess`` in a child.

Run it from a shell (it binds loopback addresses only)::

    python -m edgeplane_dev.ipmi_sim --port 6230 [--port 6231 ...] \
        [--username admin --password password] [--power-delay 0.5] [--fault fan-failed]

It prints ``ready <port> ...`` on stdout once its sockets are bound, and exits cleanly on
SIGTERM or Ctrl-C. pyghmi keeps its sockets and event loop in process-wide state that cannot
be torn down, so a simulator runs in a process of its own: ``SimulatorProcess`` starts and
stops one for tests. Never run it in the process of a pyghmi client: both would share that
state.
"""

from edgeplane_dev.ipmi_sim.bmc import DEFAULT_PASSWORD, DEFAULT_USERNAME, FAULTS, SimulatedBmc
from edgeplane_dev.ipmi_sim.chassis import BootFlags
from edgeplane_dev.ipmi_sim.fru import build_fru
from edgeplane_dev.ipmi_sim.serve import SimulatorProcess, main, serve, serve_many

__all__ = ["DEFAULT_PASSWORD", "DEFAULT_USERNAME", "FAULTS", "BootFlags", "SimulatedBmc",
           "SimulatorProcess", "build_fru", "main", "serve", "serve_many"]
