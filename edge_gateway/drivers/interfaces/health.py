"""Health: the roll-up, the components and the sensors behind them."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field


@dataclass(frozen=True)
class SensorReading:
    name: str
    kind: str  # "temperature", "fan", "voltage", "power", "other"
    value: float | None
    units: str | None
    health: str  # "ok", "warning", "critical", "unknown"


@dataclass(frozen=True)
class HealthReport:
    health: str  # the roll-up: "ok", "warning", "critical", "unknown"
    components: dict[str, str] = field(default_factory=dict)  # e.g. {"processors": "ok"}
    sensors: tuple[SensorReading, ...] = ()


class HealthInterface(abc.ABC):
    """Health (``Capability.HEALTH``)."""

    @abc.abstractmethod
    def check_health(self) -> HealthReport:
        """Read the health the BMC reports (a read: safe to repeat)."""
