"""Power: read the state, ask for on or off, shut down gracefully, power cycle."""

from __future__ import annotations

import abc

from edgeplane.protocol import PowerState


class PowerInterface(abc.ABC):
    """The machine's power (``Capability.POWER``). Requests do not wait: the caller reads
    back until the state is reached."""

    @abc.abstractmethod
    def get_power_state(self) -> PowerState:
        """Read the machine's power state (a transition reads as the state being left)."""

    @abc.abstractmethod
    def request_power_state(self, state: PowerState) -> None:
        """Ask for ON, or a hard OFF. Idempotent: nothing is sent if the machine is already
        in ``state`` or on its way there."""

    @abc.abstractmethod
    def request_graceful_shutdown(self) -> None:
        """Ask the OS to shut down (ACPI soft off); it may never finish. Idempotent: nothing
        is sent if the machine is already off."""

    @abc.abstractmethod
    def request_power_cycle(self) -> None:
        """Power off then on (a hard reset where the BMC has no cycle). Not idempotent."""
