"""BIOS settings: current and pending attributes, and what each attribute may be."""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class BiosAttribute:
    """What the BMC says one BIOS attribute may be (from its attribute registry)."""

    name: str
    type: str  # "Enumeration", "String", "Integer", "Boolean", "Password"
    allowed_values: tuple[str, ...] | None = None
    read_only: bool = False
    minimum: int | None = None
    maximum: int | None = None


@dataclass(frozen=True)
class BiosSettings:
    current: dict[str, Any]
    pending: dict[str, Any]  # written, not yet in effect (until the next reset)
    # None: the BMC publishes no registry; attributes are then checked against ``current``.
    # Read-only: a driver may share one registry among the machines of one model.
    registry: Mapping[str, BiosAttribute] | None = None


class BiosInterface(abc.ABC):
    """BIOS settings (``Capability.BIOS``). Values are checked by the caller against what
    ``get_bios`` returns; the driver only reads and writes."""

    @abc.abstractmethod
    def get_bios(self) -> BiosSettings:
        """The current attributes, those pending the next reset, and the registry."""

    @abc.abstractmethod
    def set_bios_pending(self, attributes: dict[str, Any]) -> None:
        """Write attributes to the pending settings; they take effect at the next reset.
        Idempotent: writing the values already pending changes nothing."""
