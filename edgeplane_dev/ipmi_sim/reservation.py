"""The reservation a repository's partial reads need (SEL and SDR, IPMI 2.0 31.4 and 33.11)."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from edgeplane_dev.ipmi_sim.codes import (
    CC_REQUEST_LENGTH_INVALID,
    CC_RESERVATION_CANCELED,
    Answer,
    error,
    ok,
)


@dataclass(frozen=True)
class ReadRequest:
    record_id: int
    offset: int
    count: int  # 0xFF: to the end of the record


class Reserved:
    """Reserve, and the checks of a Get Entry / Get SDR request against the reservation."""

    reservation = 0

    def reserve(self, request: bytes) -> Answer:
        self.reservation = self.reservation % 0xFFFF + 1
        return ok(struct.pack("<H", self.reservation))

    def read_request(self, request: bytes) -> ReadRequest | Answer:
        """What a read asks for, or the error to answer it with."""
        if len(request) < 6:
            return error(CC_REQUEST_LENGTH_INVALID)
        reservation, record_id, offset, count = struct.unpack_from("<HHBB", request)
        if offset and reservation != self.reservation:
            return error(CC_RESERVATION_CANCELED)  # a partial read needs the reservation
        return ReadRequest(record_id, offset, count)
