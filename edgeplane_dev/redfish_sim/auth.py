"""Who may ask: HTTP basic auth or a Redfish session (``X-Auth-Token``).

The service root, ``/redfish``, ``$metadata`` and ``odata`` answer without credentials, and
so does the login itself (POST to the Sessions collection), as the Redfish spec requires.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Mapping
from typing import Any

from edgeplane_dev.redfish_sim.replies import RedfishError, Reply
from edgeplane_dev.redfish_sim.resources import ROOT, Resources, normalize

OPEN_PATHS = frozenset({"/redfish", ROOT, f"{ROOT}/odata", f"{ROOT}/$metadata"})


def unauthorized(text: str) -> RedfishError:
    return RedfishError(401, "InsufficientPrivilege", text,
                        {"WWW-Authenticate": 'Basic realm="Edgeplane simulated BMC"'})


class Auth:
    def __init__(self, resources: Resources, username: str, password: str) -> None:
        self.resources = resources
        self.username = username
        self.password = password
        self._tokens: dict[str, str] = {}  # token -> session path
        root = resources.get_raw(ROOT) or {}
        service = resources.get_raw(resources.link(root, "SessionService") or "")
        self.sessions = (resources.link(root, "Links", "Sessions")
                         or resources.link(service, "Sessions"))

    def check(self, method: str, path: str, headers: Mapping[str, str]) -> None:
        """Raise a 401 unless the request may go ahead."""
        if path in OPEN_PATHS or (method == "POST" and path == self.sessions):
            return
        token = headers.get("X-Auth-Token")
        if token:
            if token in self._tokens:
                return
            raise unauthorized("The session token is not valid (the session ended or never "
                               "existed).")
        header = headers.get("Authorization") or ""
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            raise unauthorized("This resource requires credentials: HTTP basic auth or a "
                               "session token.")
        try:
            user, _, password = base64.b64decode(encoded).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise unauthorized("The Authorization header is not valid basic auth.") from None
        if not self._valid(user, password):
            raise unauthorized(f"Login as {user!r} failed: wrong user name or password.")

    def _valid(self, user: str, password: str) -> bool:
        return secrets.compare_digest(user, self.username) and \
            secrets.compare_digest(password, self.password)

    def login(self, body: dict[str, Any]) -> Reply:
        user, password = body.get("UserName"), body.get("Password")
        if not isinstance(user, str) or not isinstance(password, str):
            raise RedfishError(400, "ActionParameterMissing",
                               "A session needs UserName and Password.")
        if not self._valid(user, password):
            raise unauthorized(f"Login as {user!r} failed: wrong user name or password.")
        assert self.sessions is not None
        token = secrets.token_hex(16)
        session_id = secrets.token_hex(8)
        path = f"{self.sessions}/{session_id}"
        document = {"@odata.type": "#Session.v1_7_0.Session", "@odata.id": path,
                    "Id": session_id, "Name": f"Session of {user}", "UserName": user}
        self.resources.add_member(self.sessions, path, document)
        self._tokens[token] = path
        return Reply(201, document, {"X-Auth-Token": token, "Location": path})

    def is_session(self, path: str) -> bool:
        return normalize(path) in self._tokens.values()

    def logout(self, path: str) -> Reply:
        path = normalize(path)
        self._tokens = {t: p for t, p in self._tokens.items() if p != path}
        assert self.sessions is not None
        self.resources.remove_member(self.sessions, path)
        return Reply(204)

    def forget_sessions(self) -> None:
        """A restarted BMC knows no session."""
        for path in set(self._tokens.values()):
            self.logout(path)
