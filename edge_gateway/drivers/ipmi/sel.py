"""The system event log: read (decoded by pyghmi) and clear (Reserve SEL + Clear SEL).

IPMI can only walk the SEL forward from its first record, one Get SEL Entry per record, so
reading the newest ``limit`` entries still reads them all (a full 512-entry SEL takes about
100 s on a BMC answering in 0.2 s: give ``sel.collect`` the timeout for it). pyghmi decodes
each record against the SDR (sensor names) and the BMC's clock (timestamps of records logged
before the BMC knew the time); without an SDR the sensors are named by number.
"""

from __future__ import annotations

import logging
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from pyghmi.ipmi import events as pyghmi_events
from pyghmi.ipmi.command import Command

from edge_gateway.drivers.interfaces import LogEntry, LogsInterface
from edge_gateway.drivers.ipmi.errors import MALFORMED, IpmiException, Refusal, completion_code
from edge_gateway.drivers.ipmi.link import Connection
from edge_gateway.drivers.ipmi.tables import health_word

LOG = logging.getLogger(__name__)

NETFN_STORAGE = 0x0A
RESERVE_SEL, CLEAR_SEL = 0x42, 0x47
CLEAR_INITIATE, CLEAR_STATUS = 0xAA, 0x00
ERASE_DONE = 0x01
CLEAR_WAIT = 10.0  # seconds an erase may take before we call it stuck
PRE_INIT = 0x20000000  # timestamps below this count seconds since the BMC started
UNSPECIFIED = 0xFFFFFFFF
INVALID_COMMAND = 0xC1


class _NoSdr:
    """Stands in for pyghmi's SDR when the BMC has none: no sensor or FRU names."""

    sensors: dict[str, Any] = {}
    fru: dict[int, Any] = {}


class IpmiLogs(LogsInterface):
    """The SEL, read and cleared through the storage commands."""

    _bmc: Connection

    def read_sel(self, limit: int | None = None) -> list[LogEntry]:
        return self._bmc.call("read event log", lambda cmd: read(cmd, self._bmc.address, limit))

    def clear_sel(self) -> None:
        self._bmc.call("clear event log", lambda cmd: clear(cmd, self._bmc.address))


def read(cmd: Command, address: str, limit: int | None = None) -> list[LogEntry]:
    """The newest ``limit`` entries (all if None), oldest first."""
    if limit is not None and limit <= 0:
        return []
    handler = _event_handler(cmd, address)
    with _without_sel_a_refusal():
        records = handler.fetch_sel(cmd)
    entries = [_entry(record) for record in records]
    return entries if limit is None else entries[-limit:]


def clear(cmd: Command, address: str) -> None:
    with _without_sel_a_refusal():
        progress = _clear(cmd, _reserve(cmd), CLEAR_INITIATE)
    waited_until = time.monotonic() + CLEAR_WAIT
    while progress != ERASE_DONE:
        if time.monotonic() > waited_until:
            raise Refusal(f"the SEL erase is still in progress after {CLEAR_WAIT:g} s")
        time.sleep(0.1)
        # A fresh reservation each time: OpenBMC cancels the reservation the clear used.
        progress = _clear(cmd, _reserve(cmd), CLEAR_STATUS)
    LOG.info("BMC %s: SEL cleared", address)


@contextmanager
def _without_sel_a_refusal() -> Iterator[None]:
    """An "invalid command" answer to a SEL command: the BMC has no SEL (it did answer)."""
    try:
        yield
    except IpmiException as exc:
        if completion_code(exc) != INVALID_COMMAND:
            raise
        raise Refusal(f"the BMC has no system event log ({exc}, completion code "
                      f"{INVALID_COMMAND:#04x})") from None


def _reserve(cmd: Command) -> int:
    try:
        data = bytes(cmd.xraw_command(netfn=NETFN_STORAGE, command=RESERVE_SEL)["data"])
    except IpmiException as exc:
        if completion_code(exc) == INVALID_COMMAND:
            return 0  # a BMC without reservations takes 0000h
        raise
    return struct.unpack_from("<H", data)[0]


def _clear(cmd: Command, reservation: int, action: int) -> int:
    data = struct.pack("<H3sB", reservation, b"CLR", action)
    answer = bytes(cmd.xraw_command(netfn=NETFN_STORAGE, command=CLEAR_SEL, data=data)["data"])
    return answer[0] & 0x0F if answer else ERASE_DONE


def _event_handler(cmd: Command, address: str) -> Any:
    try:
        sdr: Any = cmd.init_sdr()
    except IpmiException as exc:
        if not completion_code(exc):
            raise
        LOG.info("BMC %s: no SDR (%s); SEL sensors are named by number", address, exc)
        sdr = _NoSdr()
    except MALFORMED as exc:
        LOG.info("BMC %s: unreadable SDR (%s); SEL sensors are named by number", address, exc)
        sdr = _NoSdr()
    return pyghmi_events.EventHandler(sdr, cmd)


def _entry(record: dict[str, Any]) -> LogEntry:
    parts = [str(record.get("component") or record.get("component_type") or "").strip(),
             str(record.get("event") or "").strip()]
    message = ": ".join(part for part in parts if part)
    if record.get("event_data"):
        message += f" ({record['event_data']})"
    if not message:  # an OEM record: pyghmi keeps its bytes
        oem = record.get("oemdata")
        message = f"OEM record {bytes(oem).hex()}" if oem else "record without event data"
    severity = record.get("severity")
    return LogEntry(id=str(record.get("record_id", "")), created=_created(record),
                    severity=health_word(severity) if isinstance(severity, int) else "unknown",
                    message=message)


def _created(record: dict[str, Any]) -> str | None:
    """ISO 8601 in UTC. A pre-init timestamp only has pyghmi's estimate in local time."""
    timecode = record.get("timecode")
    if isinstance(timecode, int) and PRE_INIT <= timecode != UNSPECIFIED:
        return datetime.fromtimestamp(timecode, UTC).isoformat()
    estimate = record.get("timestamp")
    if isinstance(estimate, str):
        try:
            return datetime.fromisoformat(estimate).astimezone(UTC).isoformat()
        except ValueError:
            return None
    return None
