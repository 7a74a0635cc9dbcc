"""Firmware: the components and their versions, and updates the BMC runs as jobs."""

from __future__ import annotations

import abc
from dataclasses import dataclass


@dataclass(frozen=True)
class FirmwareComponent:
    id: str  # the BMC's id (Redfish: the FirmwareInventory member's @odata.id)
    name: str
    version: str | None
    updateable: bool = False


class JobState:
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"


@dataclass(frozen=True)
class FirmwareJob:
    """A firmware update the BMC is running; ``monitor`` is how to ask about it again."""

    monitor: str | None
    state: str = JobState.RUNNING
    percent: int | None = None
    bmc_state: str | None = None  # the BMC's own word for the state (e.g. "Running")
    messages: tuple[str, ...] = ()


class FirmwareInterface(abc.ABC):
    """Firmware inventory and updates (``Capability.FIRMWARE``)."""

    @abc.abstractmethod
    def get_firmware(self) -> list[FirmwareComponent]:
        """Every firmware component the BMC lists, with its version."""

    @abc.abstractmethod
    def start_firmware_update(self, image: str, targets: list[str] | None = None) -> FirmwareJob:
        """Start an update from the image URL (on ``targets``, else the BMC's choice) and
        return at once. Not idempotent: the caller compares versions first."""

    @abc.abstractmethod
    def get_firmware_job(self, job: FirmwareJob) -> FirmwareJob:
        """Ask the BMC again how ``job`` is going (a read: safe to repeat)."""
