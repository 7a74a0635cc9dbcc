"""Health from the sensors the SDR repository describes, read one by one.

pyghmi reads the SDR once per session (and keeps it per BMC model and SDR timestamp for
the process), then one Get Sensor Reading per sensor. A threshold sensor's health is the
BMC's own comparison with its thresholds: at or past a non-critical one is a warning, a
critical or non-recoverable one critical. A sensor without a reading (most sensors on main
power while the host is off) is "unknown" and does not count in the roll-up.
"""

from __future__ import annotations

from typing import Any

from pyghmi.ipmi.command import Command

from edge_gateway.drivers.interfaces import HealthInterface, HealthReport, SensorReading
from edge_gateway.drivers.ipmi.errors import MALFORMED, IpmiException, Refusal, completion_code
from edge_gateway.drivers.ipmi.link import Connection
from edge_gateway.drivers.ipmi.tables import (
    COMPONENTS,
    SENSOR_KINDS,
    UNITS_FROM_PYGHMI,
    health_word,
    worst,
)


class IpmiHealth(HealthInterface):
    """Health from the sensors of the SDR."""

    _bmc: Connection

    def check_health(self) -> HealthReport:
        return self._bmc.call("check health", check)


def check(cmd: Command) -> HealthReport:
    require_sdr(cmd)
    sensors = tuple(_reading(reading) for reading in cmd.get_sensor_data())
    kinds: dict[str, list[str]] = {}
    for sensor in sensors:
        kinds.setdefault(COMPONENTS[sensor.kind], []).append(sensor.health)
    components = {name: worst(healths) for name, healths in kinds.items()}
    return HealthReport(health=worst([s.health for s in sensors]), components=components,
                        sensors=sensors)


def require_sdr(cmd: Command) -> None:
    """Read the SDR if need be; a BMC without one (or with one pyghmi cannot read) is a
    refusal, not a failure to answer."""
    try:
        cmd.init_sdr()
    except IpmiException as exc:
        if not completion_code(exc):
            raise  # no answer: the caller's error, not the BMC's lack of an SDR
        raise Refusal(f"the BMC has no SDR repository to read sensors from ({exc})") from None
    except MALFORMED as exc:
        raise Refusal(f"the BMC's SDR cannot be read ({type(exc).__name__}: {exc})") from None


def _reading(reading: Any) -> SensorReading:
    """pyghmi's reading as ours; a discrete sensor has a health but no value."""
    value = reading.value if isinstance(reading.value, int | float) else None
    suffix = (reading.units or "").strip()
    return SensorReading(name=str(reading.name), kind=SENSOR_KINDS.get(reading.type, "other"),
                         value=None if reading.unavailable else value,
                         units=UNITS_FROM_PYGHMI.get(suffix, suffix) or None,
                         health="unknown" if reading.unavailable else health_word(reading.health))
