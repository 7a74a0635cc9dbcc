"""The error boundary: pyghmi's exceptions (and what it lets escape) become ``BmcError``s."""

from __future__ import annotations

import socket
import struct

from pyghmi import exceptions as pyghmi_exceptions

from edge_gateway.errors import BmcAuthError, BmcError, BmcUnreachableError

# pyghmi raises IpmiException with a text only; these texts mean "wrong credentials" and
# "no answer". IpmiException(None) is how its login reports running out of retries.
_AUTH_FAILURES = ("incorrect password", "unauthorized name", "unauthorized role",
                  "invalid role", "privelege level", "privilege level")
_NO_ANSWER = ("timeout", "session no longer connected", "unable to transmit")
# What pyghmi lets escape besides its own exceptions when a BMC answers nonsense (and
# NotImplementedError: its SDR reader's word for a record format it does not know).
MALFORMED = (struct.error, AssertionError, IndexError, KeyError, TypeError, ValueError,
             NotImplementedError)
# What a call converts; anything else is a bug of pyghmi or ours, converted all the same.
LIBRARY_ERRORS = (pyghmi_exceptions.PyghmiException, OSError, *MALFORMED)
IpmiException = pyghmi_exceptions.IpmiException


class NoAnswer(Exception):
    """Raised in a worker: the BMC did not answer (becomes BmcUnreachableError)."""


class Busy(Exception):
    """Raised in a worker: the gateway gave up waiting for its own turn (becomes BmcError)."""


class Refusal(Exception):
    """Raised in a worker: the BMC answered, but not what the operation needs (BmcError)."""


def completion_code(exc: BaseException) -> int:
    """The IPMI completion code of a pyghmi exception; 0 if it carries none."""
    code = getattr(exc, "ipmicode", 0)
    return code if isinstance(code, int) and code != 0xFFFF else 0  # FFFFh: pyghmi's timeout


def convert_error(address: str, what: str, exc: BaseException) -> BmcError:
    """The gateway's error for a failure in a call, naming the BMC and what failed."""
    if isinstance(exc, NoAnswer):
        return BmcUnreachableError(address, what, str(exc))
    if isinstance(exc, Busy | Refusal):
        return BmcError(address, what, str(exc))
    if isinstance(exc, socket.gaierror):
        return BmcUnreachableError(address, what, f"cannot resolve the host name ({exc})")
    if isinstance(exc, OSError):
        return BmcUnreachableError(address, what, f"network error ({exc})")
    if isinstance(exc, IpmiException):
        text = str(exc.args[0]) if exc.args and exc.args[0] else ""
        lowered = text.lower()
        if any(marker in lowered for marker in _AUTH_FAILURES):
            return BmcAuthError(address, what, f"credentials rejected ({text})")
        if not text or any(marker in lowered for marker in _NO_ANSWER):
            return BmcUnreachableError(address, what,
                                       f"no answer ({text})" if text else "no answer")
        code = completion_code(exc)
        return BmcError(address, what,
                        f"{text} (completion code {code:#04x})" if code else text)
    if isinstance(exc, pyghmi_exceptions.PyghmiException):
        return BmcError(address, what, str(exc) or type(exc).__name__)
    return BmcError(address, what, f"unexpected answer ({type(exc).__name__}: {exc})")
