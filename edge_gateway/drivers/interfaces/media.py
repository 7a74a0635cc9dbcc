"""Virtual media: the BMC's slots, and images inserted into them by URL."""

from __future__ import annotations

import abc
from dataclasses import dataclass


@dataclass(frozen=True)
class VirtualMedia:
    """One virtual media slot of the BMC."""

    slot: str  # the BMC's id of the slot (Redfish: the VirtualMedia resource's @odata.id)
    media_types: tuple[str, ...]  # e.g. ("CD", "DVD") or ("USBStick",)
    inserted: bool
    image: str | None = None


class MediaInterface(abc.ABC):
    """Virtual media (``Capability.MEDIA``)."""

    @abc.abstractmethod
    def get_virtual_media(self) -> list[VirtualMedia]:
        """Every slot, with what it holds."""

    @abc.abstractmethod
    def insert_media(self, image: str, slot: str | None = None) -> None:
        """Insert the image (by URL) into ``slot``, or the first slot that takes a CD/DVD.
        Idempotent: no error if the slot already holds that image; refused if it holds
        another (eject it first)."""

    @abc.abstractmethod
    def eject_media(self, slot: str) -> None:
        """Eject what ``slot`` holds. Idempotent: no error if it holds nothing."""
