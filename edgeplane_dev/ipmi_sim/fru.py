"""FRU 0: the machine's chassis, board and product information, and the commands to read it."""

from __future__ import annotations

import struct
from datetime import UTC, datetime

from edgeplane_dev.ipmi_sim.codes import (
    CC_NOT_PRESENT,
    CC_OUT_OF_RANGE,
    CC_REQUEST_LENGTH_INVALID,
    Answer,
    error,
    ok,
)

FRU_EPOCH = datetime(1996, 1, 1, tzinfo=UTC)
BOARD_MADE = datetime(2024, 3, 1, tzinfo=UTC)  # fixed, so every run reads the same FRU
CHASSIS_RACK_MOUNT = 0x17


def build_fru(manufacturer: str, product: str, serial: str, part_number: str) -> bytes:
    """FRU 0 in the Platform Management FRU format 1.0: chassis, board and product areas."""
    chassis = _area([CHASSIS_RACK_MOUNT], [part_number, serial])
    minutes = int((BOARD_MADE - FRU_EPOCH).total_seconds() // 60)
    board = _area([0, *struct.pack("<I", minutes)[:3]],  # language 0 (English), date
                  [manufacturer, f"{product} Board", f"B{serial}", f"{part_number}-MB", ""])
    product_area = _area([0],  # language
                         [manufacturer, product, part_number, "1", serial, "", ""])
    offset = 1  # in multiples of 8 bytes; the common header takes the first 8
    offsets = []
    for area in (chassis, board, product_area):
        offsets.append(offset)
        offset += len(area) // 8
    header = bytes([1, 0, *offsets, 0, 0])
    return _with_checksum(header) + chassis + board + product_area


def _area(fixed: list[int], fields: list[str]) -> bytes:
    body = bytearray(fixed)
    for text in fields:
        encoded = text.encode("latin-1")[:63]
        body += bytes([0xC0 | len(encoded)]) + encoded  # type 3: 8-bit ASCII + Latin 1
    body.append(0xC1)  # end of fields
    length = -(-(len(body) + 3) // 8) * 8  # version, length and checksum bytes included
    area = bytes([1, length // 8]) + body + bytes(length - len(body) - 3)
    return _with_checksum(area)


def _with_checksum(data: bytes) -> bytes:
    return data + bytes([-sum(data) & 0xFF])


class FruDevice:
    """Get FRU Inventory Area Info and Read FRU Data (IPMI 2.0 34.1-34.2) for FRU 0 only."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def area_info(self, request: bytes) -> Answer:
        if not request:
            return error(CC_REQUEST_LENGTH_INVALID)
        if request[0] != 0:
            return error(CC_NOT_PRESENT)
        return ok(struct.pack("<HB", len(self.data), 0))  # size; accessed by bytes

    def read(self, request: bytes) -> Answer:
        if len(request) < 4:
            return error(CC_REQUEST_LENGTH_INVALID)
        if request[0] != 0:
            return error(CC_NOT_PRESENT)
        offset, count = struct.unpack_from("<HB", request, 1)
        if offset >= len(self.data):
            return error(CC_OUT_OF_RANGE)
        chunk = self.data[offset:offset + count]
        return ok(bytes([len(chunk)]) + chunk)
