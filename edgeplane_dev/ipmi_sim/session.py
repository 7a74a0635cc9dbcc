"""The server side of an RMCP+ session: pyghmi's, made to offer cipher suite 3 only."""

from __future__ import annotations

import logging
from typing import Any

from pyghmi.ipmi.private import constants, serversession
from pyghmi.ipmi.private import session as ipmisession

LOG = logging.getLogger(__name__)

# RMCP+ status codes (IPMI 2.0 table 13-15).
RMCP_NO_CIPHER_SUITE_MATCH = 0x11
RMCP_UNAUTHORIZED_NAME = 0x0D


class CipherSuite3Session(serversession.ServerSession):
    """pyghmi's server session, answering like a BMC that offers cipher suite 3 only.

    As shipped, pyghmi's server accepts any proposal and answers with suite 3, so pyghmi's
    client (which proposes RAKP-HMAC-SHA256 first) computes SHA-256 hashes over SHA-1 answers
    and fails in RAKP2. Refusing the proposal makes it retry with SHA-1, as ipmitool's suite 3
    does from the start. An unknown user name gets the "unauthorized name" status in RAKP2
    instead of silence, like real BMCs.
    """

    def create_open_session_response(self, request: bytearray) -> bytearray:
        if proposes_suite_3(request):
            return super().create_open_session_response(request)
        self.clientsessionid = request[4:8]
        return bytearray([request[0], RMCP_NO_CIPHER_SUITE_MATCH, 0, 0]) + request[4:8]

    def _got_rmcp_openrequest(self, data: bytearray) -> None:
        # pyghmi keys server sessions by the client's address and port, and its clients reuse
        # their socket for the next session: a new open request from that address starts a
        # new session (as on a real BMC), not a renegotiation under the old session's keys.
        self.close_server_session()
        CipherSuite3Session(self.authdata, self.kg, self.sockaddr, self.socket, data,
                            self.uuid, bmc=self.bmc)

    def _handle_ipmi_packet(self, data: bytearray, sockaddr: Any = None,
                            qent: Any = None) -> Any:
        # An IPMI 1.5 packet outside any session from this session's client: it starts over
        # (a login begins with one). pyghmi then forgets every session of the client's address
        # and port, with every BMC of the process: forget this one only, as a real BMC would.
        if is_sessionless_ipmi15(data):
            self.close_server_session()
            self.bmc.sessionless_data(bytes(data), sockaddr)
            return None
        return super()._handle_ipmi_packet(data, sockaddr, qent)

    def sessionless_data(self, data: bytes, sockaddr: Any) -> None:
        # pyghmi hands a packet queued for a session that has since closed to the session's
        # own sessionless_data, which only its IpmiServer has.
        self.bmc.sessionless_data(data, sockaddr)

    def close_server_session(self) -> None:
        """Forget this session: what comes next from its client is sessionless again."""
        handlers = ipmisession.Session.bmc_handlers.get(self.sockaddr, {})
        if handlers.get(self.bmc.port) is self:
            del handlers[self.bmc.port]
            if not handlers:
                ipmisession.Session.bmc_handlers.pop(self.sockaddr, None)

    def _got_rakp1(self, data: bytearray) -> None:
        namelength = data[27] if len(data) > 27 else 0
        name = bytes(data[28:28 + namelength]).decode("utf-8", "replace")
        if namelength and self.authdata.get(name) is None:
            LOG.info("IPMI login as unknown user %r refused", name)
            reply = bytearray([data[0], RMCP_UNAUTHORIZED_NAME, 0, 0]) + self.clientsessionid
            self.send_payload(reply, constants.payload_types["rakp2"], retry=False)
            return
        super()._got_rakp1(data)


def proposes_suite_3(request: bytearray) -> bool:
    """True if an RMCP+ open session request accepts HMAC-SHA1 / HMAC-SHA1-96 / AES-CBC-128.

    Each proposal is an 8-byte record (type, 2 reserved, length, algorithm, 3 reserved) at
    offsets 8, 16 and 24; a record of length 0 lets the BMC choose.
    """
    if len(request) < 32:
        return False
    for offset in (8, 16, 24):
        if request[offset + 3] and request[offset + 4] & 0x3F != 1:
            return False
    return True


def is_sessionless_ipmi15(packet: bytearray) -> bool:
    """An IPMI 1.5 packet (authentication type none or MD5) with session id and sequence 0."""
    return (len(packet) >= 13 and packet[0] == 6 and packet[2:4] == b"\xff\x07"
            and packet[4] in (0, 2) and not any(packet[5:13]))


def is_open_session_request(packet: bytearray) -> bool:
    """An RMCP+ open session request (IPMI 2.0 payload type 0x10) outside any session."""
    return (len(packet) >= 22 and packet[0] == 6 and packet[2:4] == b"\xff\x07"
            and packet[4] == 6 and packet[5] == 0x10)


def open_session(bmc: Any, packet: bytearray, sockaddr: Any) -> None:
    """Start a session of ours for an open session request."""
    CipherSuite3Session(bmc.authdata, bmc.kg, sockaddr, bmc.serversocket, packet[16:],
                        bmc.uuid, bmc=bmc)


def forget_sessions(bmc: Any) -> int:
    """Drop every session of ``bmc`` (a BMC that restarts forgets them); how many."""
    dropped = 0
    for handlers in list(ipmisession.Session.bmc_handlers.values()):
        session = handlers.get(bmc.port)
        if isinstance(session, CipherSuite3Session) and session.bmc is bmc:
            session.close_server_session()
            dropped += 1
    return dropped
