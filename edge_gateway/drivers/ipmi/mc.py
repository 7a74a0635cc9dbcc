"""The BMC itself: what it offers, and its cold reset."""

from __future__ import annotations

import logging
import time
from typing import Any

from pyghmi.ipmi.command import Command

from edge_gateway.drivers.interfaces import BmcInterface
from edge_gateway.drivers.ipmi.errors import IpmiException, Refusal
from edge_gateway.drivers.ipmi.link import Connection
from edgeplane.protocol import Capability

LOG = logging.getLogger(__name__)

NETFN_APP, NETFN_STORAGE = 0x06, 0x0A
COLD_RESET = 0x02
GET_SDR_REPOSITORY_INFO, GET_SEL_INFO = 0x20, 0x40
SDR_VERSION = 0x51
# How long to listen for the answer to a cold reset. Many BMCs restart before answering,
# so silence is no failure; an error answer is a refusal.
RESET_ANSWER_WAIT = 0.5
ALWAYS = frozenset({Capability.POWER, Capability.BOOT, Capability.INVENTORY,
                    Capability.BMC_RESET})


class IpmiBmc(BmcInterface):
    """Cold Reset of the BMC."""

    _bmc: Connection

    def reset_bmc(self) -> None:
        """Cold reset. The BMC forgets its sessions, so this driver's is logged out too; the
        next call logs in anew (and fails as unreachable until the BMC is back)."""
        self._bmc.call("reset BMC", lambda cmd: cold_reset(cmd, self._bmc.address),
                       forget_session=True)


def offered(cmd: Command) -> frozenset[Capability]:
    """POWER, BOOT, INVENTORY and BMC_RESET (mandatory commands of a BMC); HEALTH if the BMC
    answers Get SDR Repository Info with records, SEL if it answers Get SEL Info. Asked
    rather than read from Get Device ID's support bits, which BMCs often get wrong."""
    capabilities = set(ALWAYS)
    sdr = _answer(cmd, NETFN_STORAGE, GET_SDR_REPOSITORY_INFO)
    if len(sdr) >= 3 and sdr[0] == SDR_VERSION and int.from_bytes(sdr[1:3], "little"):
        capabilities.add(Capability.HEALTH)
    if _answer(cmd, NETFN_STORAGE, GET_SEL_INFO):
        capabilities.add(Capability.SEL)
    return frozenset(capabilities)


def _answer(cmd: Command, netfn: int, command: int) -> bytes:
    """The data of a successful answer; b"" if the BMC refuses the command."""
    answer = cmd.raw_command(netfn=netfn, command=command)
    code = answer.get("code", 0)
    if "error" in answer:
        if code in (0, 0xFFFF):  # no completion code: no answer at all
            raise IpmiException(answer["error"])
        return b""
    return bytes(answer.get("data", b""))


def cold_reset(cmd: Command, address: str) -> None:
    """Send Cold Reset once (pyghmi's retry could reset the BMC again once it is back) and
    listen briefly for its answer; the caller then forgets the session."""
    session = cmd.ipmi_session
    session.raw_command(netfn=NETFN_APP, command=COLD_RESET, retry=False)
    answer = _late_answer(session, RESET_ANSWER_WAIT)
    if answer is None:
        LOG.info("BMC %s: cold reset sent; no answer (the BMC may restart before answering)",
                 address)
        return
    code = answer.get("code", 0)
    if code:
        raise Refusal(f"the BMC refused the cold reset: {answer.get('error') or 'error'} "
                      f"(completion code {code:#04x})")
    LOG.info("BMC %s: cold reset accepted; the BMC restarts", address)


def _late_answer(session: Any, wait: float) -> dict[str, Any] | None:
    """The answer to a request sent without retries, if it comes within ``wait`` seconds.

    pyghmi does not wait for such an answer; its I/O thread still queues it for the
    session, and processing that queue hands it to the command's callback, which keeps it
    as ``lastresponse`` (pyghmi 1.6). Without those attributes: no answer known.
    """
    if not hasattr(session, "process_pktqueue") or not hasattr(session, "lastresponse"):
        return None
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        session.process_pktqueue()
        if session.lastresponse is not None:
            answer: dict[str, Any] = session.lastresponse
            return answer
        time.sleep(0.01)
    return None
