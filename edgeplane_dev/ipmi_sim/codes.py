"""IPMI numbers the simulator's modules share: network functions and completion codes."""

from __future__ import annotations

# Network functions (IPMI 2.0 table 5-1), request side.
NETFN_CHASSIS = 0x00
NETFN_SENSOR = 0x04
NETFN_APP = 0x06
NETFN_STORAGE = 0x0A

# Completion codes (IPMI 2.0 table 5-2).
CC_OK = 0x00
CC_PARAM_NOT_SUPPORTED = 0x80
CC_INVALID_COMMAND = 0xC1
CC_RESERVATION_CANCELED = 0xC5
CC_REQUEST_LENGTH_INVALID = 0xC7
CC_OUT_OF_RANGE = 0xC9
CC_NOT_PRESENT = 0xCB
CC_INVALID_DATA = 0xCC
CC_NOT_IN_PRESENT_STATE = 0xD5

# A handler's answer: completion code and response data (without the code).
Answer = tuple[int, bytes]


def ok(data: bytes = b"") -> Answer:
    return CC_OK, data


def error(code: int) -> Answer:
    return code, b""
