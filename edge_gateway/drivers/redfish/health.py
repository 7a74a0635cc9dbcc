"""Health: the roll-ups the BMC computes, and the chassis sensors behind them.

Components come from ``Status`` (``HealthRollup`` where the BMC gives one, else
``Health``) of the system, its processor and memory summaries, its storage, its chassis and
its BMC. Sensors come from each chassis' Thermal and Power resources (deprecated since 2020
but still what most BMCs serve), or, where a chassis has neither, from ThermalSubsystem,
PowerSubsystem and EnvironmentMetrics (whose readings carry no health of their own).
"""

from __future__ import annotations

import logging
from typing import Any

from sushy import exceptions as sushy_exc

from edge_gateway.drivers.interfaces import HealthInterface, HealthReport, SensorReading
from edge_gateway.drivers.redfish.documents import (
    Document,
    link,
    links,
    status_health,
    status_state,
)
from edge_gateway.drivers.redfish.service import RedfishService
from edge_gateway.drivers.redfish.tables import NOT_PRESENT_STATES, health_word, worst

LOG = logging.getLogger(__name__)


class RedfishHealth(HealthInterface):
    """Status roll-ups of the system and what it links to, and the chassis sensors."""

    _service: RedfishService

    def check_health(self) -> HealthReport:
        with self._service.call("check health"):
            system = self._service.system().json
            components = {"system": health_word(status_health(system, rollup=False))}
            for name, key in (("processors", "ProcessorSummary"), ("memory", "MemorySummary")):
                if isinstance(system.get(key), dict) and system[key].get("Status"):
                    components[name] = health_word(status_health(system[key]))
            storage = _storage(self._service, system)
            if storage:
                components["storage"] = worst(storage)
            chassis = [self._service.optional_json(path)
                       for path in links(system, "Links", "Chassis")]
            chassis_docs = [c for c in chassis if c is not None]
            if chassis_docs:
                components["chassis"] = worst([health_word(status_health(c))
                                               for c in chassis_docs])
            managers = [self._service.optional_json(path)
                        for path in self._service.manager_paths(system)[:1]]
            if managers and managers[0] is not None:
                components["bmc"] = health_word(status_health(managers[0], rollup=False))
            sensors: list[SensorReading] = []
            for document in chassis_docs:
                sensors += _sensors(self._service, document)
            overall = worst([health_word(status_health(system)), *components.values(),
                             *(s.health for s in sensors)])
            return HealthReport(health=overall, components=components, sensors=tuple(sensors))


def offered(system: Document) -> bool:
    return bool(system.get("Status") or links(system, "Links", "Chassis"))


def _storage(service: RedfishService, system: Document) -> list[str]:
    healths = []
    for name in ("Storage", "SimpleStorage"):
        try:
            members = service.optional_members(link(system, name)) or []
        except sushy_exc.HTTPError as exc:
            # sushy-tools 2.x (fake driver) answers 500 "Error finding storage collection
            # by UUID" for its Storage link; some BMCs fail storage reads while a RAID
            # controller resets. Storage is then unknown, not the whole check failed.
            if exc.status_code < 500:
                raise
            LOG.warning("BMC %s: %s is unreadable (HTTP %s); storage health unknown",
                        service.address, name, exc.status_code)
            healths.append("unknown")
            continue
        for member in members:
            if status_state(member) not in NOT_PRESENT_STATES:
                healths.append(health_word(status_health(member)))
    return healths


def _sensors(service: RedfishService, chassis: Document) -> list[SensorReading]:
    thermal = service.optional_json(link(chassis, "Thermal"))
    power = service.optional_json(link(chassis, "Power"))
    if thermal is not None or power is not None:
        return _legacy_thermal(thermal or {}) + _legacy_power(power or {})
    return _subsystems(service, chassis)


def _subsystems(service: RedfishService, chassis: Document) -> list[SensorReading]:
    sensors: list[SensorReading] = []
    thermal = service.optional_json(link(chassis, "ThermalSubsystem")) or {}
    metrics = service.optional_json(link(thermal, "ThermalMetrics")) or {}
    for reading in metrics.get("TemperatureReadingsCelsius") or []:
        if isinstance(reading, dict):
            sensors.append(SensorReading(
                name=str(reading.get("DeviceName") or reading.get("DataSourceUri")),
                kind="temperature", value=_number(reading.get("Reading")), units="Cel",
                health="unknown"))
    for fan in service.optional_members(link(thermal, "Fans")) or []:
        if status_state(fan) not in NOT_PRESENT_STATES:
            speed = fan.get("SpeedPercent") or {}
            sensors.append(SensorReading(
                name=str(fan.get("Name") or fan.get("Id")), kind="fan",
                value=_number(speed.get("Reading")), units="%",
                health=health_word(status_health(fan, rollup=False))))
    power = service.optional_json(link(chassis, "PowerSubsystem")) or {}
    for supply in service.optional_members(link(power, "PowerSupplies")) or []:
        if status_state(supply) not in NOT_PRESENT_STATES:
            sensors.append(SensorReading(
                name=str(supply.get("Name") or supply.get("Id")), kind="power",
                value=None, units=None,
                health=health_word(status_health(supply, rollup=False))))
    environment = service.optional_json(link(chassis, "EnvironmentMetrics")) or {}
    watts = (environment.get("PowerWatts") or {}).get("Reading")
    if watts is not None:
        sensors.append(SensorReading(name=f"{chassis.get('Id')} power", kind="power",
                                     value=_number(watts), units="W", health="unknown"))
    return sensors


def _legacy_thermal(thermal: Document) -> list[SensorReading]:
    sensors = [_reading(t, "temperature", t.get("ReadingCelsius"), "Cel")
               for t in _present(thermal.get("Temperatures"))]
    for fan in _present(thermal.get("Fans")):
        value = fan.get("Reading", fan.get("ReadingRPM"))
        units = fan.get("ReadingUnits") or ("RPM" if "ReadingRPM" in fan else None)
        sensors.append(_reading(fan, "fan", value, units))
    return sensors


def _legacy_power(power: Document) -> list[SensorReading]:
    sensors = [_reading(v, "voltage", v.get("ReadingVolts"), "V")
               for v in _present(power.get("Voltages"))]
    sensors += [_reading(p, "power", p.get("LastPowerOutputWatts"), "W")
                for p in _present(power.get("PowerSupplies"))]
    sensors += [_reading(c, "power", c.get("PowerConsumedWatts"), "W")
                for c in _present(power.get("PowerControl"))]
    return sensors


def _present(items: Any) -> list[Document]:
    """The entries of a sensor array that are there (a disabled CPU socket has no reading)."""
    return [item for item in items or [] if isinstance(item, dict)
            and status_state(item) not in NOT_PRESENT_STATES]


def _reading(item: Document, kind: str, value: Any, units: str | None) -> SensorReading:
    name = item.get("Name") or item.get("MemberId") or item.get("@odata.id")
    return SensorReading(name=str(name), kind=kind, value=_number(value), units=units,
                         health=health_word(status_health(item, rollup=False)))


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) \
        else None
