"""The simulated machine's sensors, the SDR repository describing them, and their commands.

Five threshold sensors (full SDRs, linear readings): CPU and inlet temperature, two fans and
the 12 V rail; and three event-only sensors the SEL's power events name (power unit, system
boot, ACPI state). A sensor on main power reads "unavailable" while the host is off, as on
most BMCs; the inlet temperature is on standby power and always reads.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from edgeplane_dev.ipmi_sim.codes import (
    CC_NOT_PRESENT,
    CC_OUT_OF_RANGE,
    Answer,
    error,
    ok,
)
from edgeplane_dev.ipmi_sim.reservation import ReadRequest, Reserved

SDR_VERSION = 0x51
OWNER_BMC = 0x20
FULL_RECORD, EVENT_ONLY_RECORD = 0x01, 0x03
THRESHOLD_BASED, SENSOR_SPECIFIC = 0x01, 0x6F  # event/reading type codes (table 42-1)
# Sensor types (table 42-3), units (table 43-15) and entity ids (table 43-13).
TEMPERATURE, VOLTAGE, FAN = 0x01, 0x02, 0x04
POWER_UNIT, SYSTEM_BOOT, ACPI_POWER_STATE = 0x09, 0x1D, 0x22
CELSIUS, VOLTS, RPM = 1, 4, 18
PROCESSOR, SYSTEM_BOARD, POWER_DOMAIN, COOLING, AIR_INLET = 0x03, 0x07, 0x13, 0x1D, 0x37
# Thresholds in the order of the reading's status bits and the readable mask (table 35-15).
THRESHOLDS = ("lnc", "lc", "lnr", "unc", "uc", "unr")
LOWER = ("lnc", "lc", "lnr")
# The repository's last change: fixed, so clients may cache the SDR across runs.
SDR_CHANGED = int(datetime(2024, 3, 1, tzinfo=UTC).timestamp())
ONE_ID_STRING = 0xC0  # type/length byte: 8-bit ASCII + Latin 1


@dataclass(frozen=True)
class ThresholdSensor:
    """A linear sensor: value = m * raw * 10**exponent."""

    number: int
    name: str
    sensor_type: int
    entity: int
    unit: int
    nominal: float  # what it reads while the host runs
    thresholds: Mapping[str, float] = field(default_factory=dict)
    m: int = 1
    exponent: int = 0
    standby: bool = False  # on standby power: reads while the host is off

    def raw(self, value: float) -> int:
        return max(0, min(255, round(value / (self.m * 10 ** self.exponent))))

    def status(self, raw: int) -> int:
        """The threshold comparison bits of a reading (Get Sensor Reading, byte 4)."""
        bits = 0
        for index, name in enumerate(THRESHOLDS):
            limit = self.thresholds.get(name)
            if limit is None:
                continue
            crossed = raw <= self.raw(limit) if name in LOWER else raw >= self.raw(limit)
            bits |= crossed << index
        return bits

    def readable_mask(self) -> int:
        return sum(1 << i for i, name in enumerate(THRESHOLDS) if name in self.thresholds)

    def record(self, record_id: int) -> bytes:
        """The full sensor record (table 43-1)."""
        present = self.readable_mask()
        # Assertion event mask: "going low" for a lower threshold, "going high" for an upper.
        events = sum(1 << (2 * i if i < 3 else 2 * i + 1) for i in range(6) if present >> i & 1)
        lower_reading = (present & 0x07) << 12
        upper_reading = (present >> 3 & 0x07) << 12
        raw = {name: self.raw(value) for name, value in self.thresholds.items()}
        body = bytes([
            OWNER_BMC, 0, self.number, self.entity, 1,  # entity instance 1
            0x63,  # init scanning and events; events and scanning enabled
            0x44,  # auto re-arm; thresholds readable
            self.sensor_type, THRESHOLD_BASED,
            *struct.pack("<HHH", lower_reading | events, upper_reading | events, present),
            0x00, self.unit, 0,  # unsigned readings; base unit; no modifier unit
            0,  # linear
            self.m & 0xFF, (self.m >> 8 & 0x03) << 6,  # M, tolerance 0
            0, 0, 0,  # B = 0, accuracy 0, direction unspecified
            (self.exponent & 0x0F) << 4,  # R (result) exponent, B exponent 0
            0x01, self.raw(self.nominal), 0, 0,  # nominal reading given
            0xFF, 0x00,  # sensor maximum, minimum
            *(raw.get(name, 0) for name in ("unr", "uc", "unc", "lnr", "lc", "lnc")),
            0, 0, 0, 0, 0,  # hysteresis +/-, reserved, OEM
        ])
        return _record(record_id, FULL_RECORD, body, self.name)


@dataclass(frozen=True)
class EventSensor:
    """A sensor that only generates events (the SEL's power events name these)."""

    number: int
    name: str
    sensor_type: int
    entity: int

    def record(self, record_id: int) -> bytes:
        """The event-only sensor record (table 43-3)."""
        body = bytes([OWNER_BMC, 0, self.number, self.entity, 1, self.sensor_type,
                      SENSOR_SPECIFIC, 0, 0, 0, 0])
        return _record(record_id, EVENT_ONLY_RECORD, body, self.name)


def _record(record_id: int, record_type: int, body: bytes, name: str) -> bytes:
    text = name.encode("latin-1")[:16]
    body += bytes([ONE_ID_STRING | len(text)]) + text
    return struct.pack("<HBBB", record_id, SDR_VERSION, record_type, len(body)) + body


CPU_TEMP = ThresholdSensor(0x01, "CPU Temp", TEMPERATURE, PROCESSOR, CELSIUS, 45.0,
                           {"unc": 85.0, "uc": 90.0, "unr": 95.0})
INLET_TEMP = ThresholdSensor(0x02, "Inlet Temp", TEMPERATURE, AIR_INLET, CELSIUS, 24.0,
                             {"lnc": 10.0, "lc": 5.0, "unc": 40.0, "uc": 45.0},
                             standby=True)
FAN1 = ThresholdSensor(0x30, "FAN1", FAN, COOLING, RPM, 8400.0,
                       {"lnc": 800.0, "lc": 500.0, "lnr": 300.0}, m=100)
FAN2 = ThresholdSensor(0x31, "FAN2", FAN, COOLING, RPM, 8500.0,
                       {"lnc": 800.0, "lc": 500.0, "lnr": 300.0}, m=100)
P12V = ThresholdSensor(0x40, "12V", VOLTAGE, SYSTEM_BOARD, VOLTS, 12.06,
                       {"lc": 10.8, "lnc": 11.4, "unc": 12.6, "uc": 13.2}, m=6, exponent=-2)
POWER_UNIT_SENSOR = EventSensor(0x60, "Power Unit", POWER_UNIT, POWER_DOMAIN)
SYSTEM_BOOT_SENSOR = EventSensor(0x61, "Sys Boot", SYSTEM_BOOT, SYSTEM_BOARD)
ACPI_SENSOR = EventSensor(0x62, "ACPI State", ACPI_POWER_STATE, SYSTEM_BOARD)

THRESHOLD_SENSORS = (CPU_TEMP, INLET_TEMP, FAN1, FAN2, P12V)
EVENT_SENSORS = (POWER_UNIT_SENSOR, SYSTEM_BOOT_SENSOR, ACPI_SENSOR)

# Get Sensor Reading, byte 3: event messages and scanning enabled; reading unavailable.
SCANNING = 0xC0
UNAVAILABLE = 0x20


class SdrRepository(Reserved):
    """Get SDR Repository Info, Reserve SDR Repository and Get SDR (IPMI 2.0 33.9-33.12)."""

    def __init__(self, records: list[bytes]) -> None:
        self.records = records
        self.reservation = 0

    def info(self, request: bytes) -> Answer:
        return ok(struct.pack("<BHHIIB", SDR_VERSION, len(self.records), 0, SDR_CHANGED,
                              SDR_CHANGED, 0x02))  # operations: reserve supported

    def get(self, request: bytes) -> Answer:
        asked = self.read_request(request)
        if not isinstance(asked, ReadRequest):
            return asked
        record_id, offset, count = asked.record_id, asked.offset, asked.count
        index = 0 if record_id == 0 else record_id - 1  # 0000h: the first record
        if not 0 <= index < len(self.records):
            return error(CC_NOT_PRESENT)
        record = self.records[index]
        if offset >= len(record):
            return error(CC_OUT_OF_RANGE)
        following = index + 2 if index + 1 < len(self.records) else 0xFFFF
        end = len(record) if count == 0xFF else offset + count
        return ok(struct.pack("<H", following) + record[offset:end])


class SensorDevice:
    """Get Sensor Reading, Get Sensor Thresholds and Get Sensor Hysteresis (IPMI 2.0 35)."""

    def __init__(self, sensors: tuple[ThresholdSensor, ...],
                 value_of: Callable[[ThresholdSensor], float | None]) -> None:
        self.sensors = {sensor.number: sensor for sensor in sensors}
        self.value_of = value_of  # None: no reading now (the host is off)

    def repository(self) -> SdrRepository:
        records = [*self.sensors.values(), *EVENT_SENSORS]
        return SdrRepository([s.record(i) for i, s in enumerate(records, start=1)])

    def reading(self, request: bytes) -> Answer:
        sensor = self._sensor(request)
        if sensor is None:
            return error(CC_NOT_PRESENT)
        value = self.value_of(sensor)
        if value is None:
            return ok(bytes([0, SCANNING | UNAVAILABLE, 0, 0x80]))
        raw = sensor.raw(value)
        return ok(bytes([raw, SCANNING, sensor.status(raw), 0x80]))

    def thresholds(self, request: bytes) -> Answer:
        sensor = self._sensor(request)
        if sensor is None:
            return error(CC_NOT_PRESENT)
        limits = [sensor.raw(sensor.thresholds[name]) if name in sensor.thresholds else 0
                  for name in THRESHOLDS]
        return ok(bytes([sensor.readable_mask(), *limits]))

    def hysteresis(self, request: bytes) -> Answer:
        if self._sensor(request) is None:
            return error(CC_NOT_PRESENT)
        return ok(bytes([0, 0]))  # none

    def _sensor(self, request: bytes) -> ThresholdSensor | None:
        return self.sensors.get(request[0]) if request else None
