"""The system event log: 16-byte records, a reservation, and the storage commands on it.

Commands (IPMI 2.0 section 31): Get SEL Info, Reserve SEL, Get SEL Entry, Add SEL Entry,
Clear SEL and Get SEL Time. The log is circular (the oldest record goes when it is full),
record ids grow from 1 and are not reused after a clear, and a clear cancels the
reservation, as the specification asks.
"""

from __future__ import annotations

import struct
import time
from collections import deque
from collections.abc import Callable

from edgeplane_dev.ipmi_sim.codes import (
    CC_INVALID_DATA,
    CC_NOT_PRESENT,
    CC_OUT_OF_RANGE,
    CC_REQUEST_LENGTH_INVALID,
    CC_RESERVATION_CANCELED,
    Answer,
    error,
    ok,
)
from edgeplane_dev.ipmi_sim.reservation import ReadRequest, Reserved

SEL_VERSION = 0x51
RECORD_SIZE = 16
SYSTEM_EVENT = 0x02  # record type of a standard system event record (table 32-1)
GENERATOR_BMC = 0x0020  # the BMC itself, IPMB LUN 0
EVM_REV = 0x04  # event message format of IPMI 1.5 and 2.0
FIRST, LAST = 0x0000, 0xFFFF  # record ids Get SEL Entry understands as such
CLEAR_MAGIC = b"CLR"
CLEAR_INITIATE, CLEAR_STATUS = 0xAA, 0x00
ERASE_DONE = 0x01
RESERVE_SUPPORTED = 0x02  # SEL info "operation support" bit


class EventLog(Reserved):
    def __init__(self, capacity: int = 512, clock: Callable[[], float] = time.time) -> None:
        self.capacity = capacity
        self.clock = clock
        self.records: deque[bytes] = deque(maxlen=capacity)
        self.next_id = 1
        self.reservation = 0
        self.last_add = 0
        self.last_erase = 0

    def log(self, sensor_type: int, sensor: int, offset: int, *, deassert: bool = False,
            event_type: int = 0x6F, data2: int = 0xFF, data3: int = 0xFF,
            when: float | None = None) -> int:
        """Add a system event record, as the BMC does on its own events; its record id."""
        data1 = offset & 0x0F
        if event_type == 0x01:  # threshold: bytes 2 and 3 hold the reading and the threshold
            data1 |= 0x50
        record = struct.pack("<HBIHBBBBBBB", 0, SYSTEM_EVENT, 0, GENERATOR_BMC, EVM_REV,
                             sensor_type, sensor, deassert << 7 | event_type, data1, data2,
                             data3)
        return self._append(record, when)

    def _append(self, record: bytes, when: float | None = None) -> int:
        record_id = self.next_id
        self.next_id = self.next_id % 0xFFFE + 1  # 0000h and FFFFh are not record ids
        if record[2] < 0xE0:  # the BMC stamps every record type that has a timestamp
            stamp = int(self.clock() if when is None else when)
            record = record[:3] + struct.pack("<I", stamp) + record[7:]
        self.records.append(struct.pack("<H", record_id) + record[2:])
        self.last_add = int(self.clock())
        return record_id

    # --- commands ------------------------------------------------------------------------

    def info(self, request: bytes) -> Answer:
        free = (self.capacity - len(self.records)) * RECORD_SIZE
        return ok(struct.pack("<BHHIIB", SEL_VERSION, len(self.records), min(free, 0xFFFE),
                              self.last_add, self.last_erase, RESERVE_SUPPORTED))

    def get_entry(self, request: bytes) -> Answer:
        asked = self.read_request(request)
        if not isinstance(asked, ReadRequest):
            return asked
        record_id, offset, count = asked.record_id, asked.offset, asked.count
        index = self._index(record_id)
        if index is None:
            return error(CC_NOT_PRESENT)
        if offset >= RECORD_SIZE:
            return error(CC_OUT_OF_RANGE)
        following = LAST if index + 1 == len(self.records) else \
            struct.unpack_from("<H", self.records[index + 1])[0]
        end = RECORD_SIZE if count == 0xFF else offset + count
        return ok(struct.pack("<H", following) + self.records[index][offset:end])

    def add_entry(self, request: bytes) -> Answer:
        if len(request) != RECORD_SIZE:
            return error(CC_REQUEST_LENGTH_INVALID)
        return ok(struct.pack("<H", self._append(request)))

    def clear(self, request: bytes) -> Answer:
        if len(request) != 6:
            return error(CC_REQUEST_LENGTH_INVALID)
        reservation, magic, action = struct.unpack("<H3sB", request)
        if magic != CLEAR_MAGIC or action not in (CLEAR_INITIATE, CLEAR_STATUS):
            return error(CC_INVALID_DATA)
        if reservation != self.reservation:
            return error(CC_RESERVATION_CANCELED)
        if action == CLEAR_INITIATE:
            self.records.clear()
            self.last_erase = int(self.clock())
            self.reservation = 0  # a clear cancels the reservation
        return ok(bytes([ERASE_DONE]))

    def get_time(self, request: bytes) -> Answer:
        return ok(struct.pack("<I", int(self.clock())))

    def _index(self, record_id: int) -> int | None:
        if not self.records:
            return None
        if record_id == FIRST:
            return 0
        if record_id == LAST:
            return len(self.records) - 1
        for index, record in enumerate(self.records):
            if struct.unpack_from("<H", record)[0] == record_id:
                return index
        return None
