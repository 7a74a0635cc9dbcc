"""The connection to one Redfish service: root, connector, auth, system selection, errors.

Everything that crosses the wire goes through ``RedfishService``. ``call(what)`` is the
boundary: inside it, sushy and requests may raise whatever they like; outside it, only
``edge_gateway.errors`` exist, each naming the BMC, the operation and what the BMC said.

Retries: sushy retries a request that fails in transport (refused, timed out) and a GET
answered with 5xx. We keep that short (``retries`` attempts, ``retry_delay`` s apart), so a
BMC that never answers costs about ``retries * timeout + retry_delay`` seconds per request;
patience over minutes belongs to the caller (the executor polls and retries).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import requests
import sushy
from sushy import auth as sushy_auth
from sushy import connector as sushy_connector
from sushy import exceptions as sushy_exc
from sushy.resources.system.system import System

from edge_gateway.drivers.base import BmcCredentials
from edge_gateway.drivers.redfish import tls
from edge_gateway.drivers.redfish.documents import Document, link, links, shared_names
from edge_gateway.errors import BmcAuthError, BmcError, BmcTlsError, BmcUnreachableError

LOG = logging.getLogger(__name__)

# sushy turns 0 into its own default (3 attempts, 2 s apart): keep these >= 1 / > 0.
RETRIES = 2
RETRY_DELAY = 1.0

# Answers that mean "this BMC has no such resource" (not "the BMC failed").
_ABSENT_STATUS = frozenset({404, 405, 501})

# The ComputerSystem chosen for each BMC and ``system_id`` (its @odata.id), for the process:
# a BMC's next driver reads it straight away, without listing the systems first; chosen
# again if the BMC no longer has it.
_SYSTEM_PATHS: dict[tuple[str, str | None], str] = {}


class Refusal(Exception):
    """What the BMC answered that makes the current operation impossible (internal)."""


class RedfishService:
    """One BMC's Redfish service, connected on first use and kept until ``close()``."""

    def __init__(self, credentials: BmcCredentials, timeout: float,
                 retries: int = RETRIES, retry_delay: float = RETRY_DELAY) -> None:
        self.credentials = credentials
        self.timeout = timeout
        self.retries = max(1, retries)
        self.retry_delay = retry_delay if retry_delay > 0 else RETRY_DELAY
        self._root: sushy.Sushy | None = None
        self._connector: sushy_connector.Connector | None = None
        self._auth: sushy_auth.AuthBase | None = None
        self._system: System | None = None

    @property
    def address(self) -> str:
        return self.credentials.address

    # --- the service and the system ------------------------------------------------------

    def root(self) -> sushy.Sushy:
        if self._root is None:
            connector = tls.connector(
                self.address, self.credentials.verify_tls, self.credentials.tls_fingerprint,
                server_side_retries=self.retries, server_side_retries_delay=self.retry_delay,
                default_request_timeout=self.timeout, response_callback=_shared_names,
            )
            if self.credentials.keep_alive:
                # sushy asks the BMC to close the connection after every answer; the
                # requests of one call share it instead, and ``call`` closes it at the end.
                connector._session.headers.pop("Connection", None)  # noqa: SLF001
            # Session first, HTTP basic if the BMC has no session service. Credentials go
            # into the auth object only: sushy refuses both auth and username/password.
            auth = sushy_auth.SessionOrBasicAuth(username=self.credentials.username,
                                                 password=self.credentials.password)
            try:
                self._root = sushy.Sushy(self.address, auth=auth, connector=connector)
            except BaseException:
                connector.close()
                raise
            self._connector, self._auth = connector, auth
        return self._root

    @property
    def connector(self) -> sushy_connector.Connector:
        self.root()
        assert self._connector is not None
        return self._connector

    def system_paths(self) -> list[str]:
        return list(self.root().get_system_collection().members_identities)

    def system(self, fresh: bool = True) -> System:
        """The selected ComputerSystem, its document just read from the BMC.

        ``fresh=False``: as last read by this driver, for what a running BMC does not change
        (its links, the actions and values it allows), not for its state (power, boot)."""
        if self._system is None:
            key = (self.address, self.credentials.system_id)
            known = _SYSTEM_PATHS.get(key)
            if known is not None:
                try:
                    self._system = self.root().get_system(known)
                except sushy_exc.HTTPError as exc:
                    if exc.status_code not in _ABSENT_STATUS:
                        raise
                    LOG.info("BMC %s: %s is gone; choosing the system again", self.address,
                             known)
                    _SYSTEM_PATHS.pop(key, None)
            if self._system is None:
                path = self._select_system_path()
                self._system = self.root().get_system(path)
                _SYSTEM_PATHS[key] = path
        elif fresh:
            self._system.refresh()
        return self._system

    def manager_paths(self, system: Document) -> list[str]:
        """The managers of the system (``Links.ManagedBy``), else every manager listed."""
        managers = links(system, "Links", "ManagedBy")
        if managers:
            return managers
        collection = link(self.root().json, "Managers")
        return self.member_paths(collection) if collection else []

    def _select_system_path(self) -> str:
        paths = self.system_paths()
        wanted = self.credentials.system_id
        if wanted is None:
            if len(paths) == 1:
                return paths[0]
            if not paths:
                raise Refusal("the service lists no ComputerSystem")
            raise Refusal(f"the service has {len(paths)} systems ({', '.join(paths)}) and "
                          "none was named: set system_id to one of them")
        for path in paths:
            if path.rstrip("/") == wanted.rstrip("/"):
                return path
        raise Refusal(f"system {wanted} is not listed by the service; it lists "
                      f"{', '.join(paths) or 'none'}")

    # --- raw requests through sushy's connector ------------------------------------------

    def get(self, path: str) -> requests.Response:
        return self.connector.get(path)

    def get_json(self, path: str) -> Document:
        return document_of(path, self.get(path))

    def optional_get(self, path: str | None) -> requests.Response | None:
        """The answer at ``path``; None if there is no link or the BMC has no such thing."""
        if path is None:
            return None
        try:
            return self.get(path)
        except sushy_exc.HTTPError as exc:
            if exc.status_code in _ABSENT_STATUS:
                LOG.debug("BMC %s: %s is absent (HTTP %s)", self.address, path,
                          exc.status_code)
                return None
            raise

    def optional_json(self, path: str | None) -> Document | None:
        """The document at ``path``; None if there is no link or the BMC has no such thing."""
        response = self.optional_get(path)
        return None if response is None or path is None else document_of(path, response)

    def post(self, path: str, body: Document | None = None) -> requests.Response:
        return self.connector.post(path, data=body)

    def patch(self, path: str, body: Document, etag: str | None = None) -> requests.Response:
        """PATCH with ``If-Match: etag`` when given; on 412, once more without it.

        Some BMCs answer 412 to an ETag they issued themselves (a weak one, or one that
        changes on every read): the second attempt is what makes those work at all.
        """
        headers = {"If-Match": etag} if etag else None
        try:
            return self.connector.patch(path, data=body, headers=headers)
        except sushy_exc.HTTPError as exc:
            if not etag or exc.status_code != 412:
                raise
            LOG.warning("BMC %s: PATCH %s with If-Match %s answered 412; retrying once "
                        "without If-Match", self.address, path, etag)
            return self.connector.patch(path, data=body)

    def member_paths(self, collection: str) -> list[str]:
        return [member["@odata.id"] for member in self._member_refs(collection) or []]

    def members(self, collection: str) -> list[Document]:
        """Every member's document; members the BMC already expanded are not fetched."""
        return self._documents(self._member_refs(collection) or [])

    def optional_members(self, collection: str | None) -> list[Document] | None:
        """Like ``members``; None if there is no link or the BMC has no such collection."""
        if collection is None:
            return None
        refs = self._member_refs(collection, optional=True)
        return None if refs is None else self._documents(refs)

    def _documents(self, refs: list[Document]) -> list[Document]:
        return [member if "Id" in member else self.get_json(member["@odata.id"])
                for member in refs]

    def _member_refs(self, collection: str, optional: bool = False) -> list[Document] | None:
        """The collection's members, following ``Members@odata.nextLink`` pages.

        A next page that repeats members already seen, or a page the BMC cannot find, ends
        the walk (the DMTF mockups carry a nextLink that their static servers cannot page).
        """
        found: dict[str, Document] = {}
        page: str | None = collection
        visited: set[str] = set()
        while page and page not in visited:
            visited.add(page)
            if page == collection and not optional:
                document = self.get_json(page)
            else:
                document = self.optional_json(page)
                if document is None and page == collection:
                    return None
                if document is None:
                    LOG.warning("BMC %s: next page %s of %s is not there; using the %d "
                                "members read so far", self.address, page, collection,
                                len(found))
                    break
            fresh = 0
            for member in document.get("Members") or []:
                path = link(member)
                if path and path not in found:
                    found[path] = member
                    fresh += 1
            if not fresh:
                break
            page = document.get("Members@odata.nextLink") or document.get("@odata.nextLink")
        return list(found.values())

    # --- the error boundary --------------------------------------------------------------

    @contextlib.contextmanager
    def call(self, what: str) -> Iterator[None]:
        """One call to the BMC: whatever sushy, requests or the BMC raised becomes a
        BmcError, and the call's connection is closed when it ends.

        One TCP and TLS handshake per call rather than per request (``keep_alive``): an
        inventory reads some twenty documents. No connection outlives its call: none waits
        through ``min_interval`` or a power poll, for a BMC to drop (some keep persistent
        connections badly, hence sushy's ``Connection: close``)."""
        try:
            with self._converted(what):
                yield
        finally:
            if self._connector is not None:
                self._connector.close()  # the pools emptied; the next request opens one

    @contextlib.contextmanager
    def _converted(self, what: str) -> Iterator[None]:
        try:
            yield
        except Refusal as exc:
            raise BmcError(self.address, what, str(exc)) from None
        except sushy_exc.AccessError as exc:
            user = self.credentials.username
            said = (f"the BMC rejected the credentials of user {user!r}"
                    if exc.status_code == 401 else f"user {user!r} lacks the privilege")
            raise BmcAuthError(self.address, what, f"{said} ({http_detail(exc)})") from exc
        except sushy_exc.ConnectionError as exc:
            cause = exc.__context__
            if isinstance(cause, requests.exceptions.SSLError):
                raise self._tls_error(what, cause) from exc
            raise BmcUnreachableError(self.address, what,
                                      reason(cause) if cause else str(exc)) from exc
        except sushy_exc.HTTPError as exc:
            raise BmcError(self.address, what, http_detail(exc)) from exc
        except sushy_exc.SushyError as exc:
            raise BmcError(self.address, what, str(exc)) from exc
        except (requests.exceptions.InvalidJSONError, json.JSONDecodeError) as exc:
            raise BmcError(self.address, what, f"the answer is not valid JSON: {exc}") from exc
        except requests.exceptions.SSLError as exc:
            raise self._tls_error(what, exc) from exc
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
            raise BmcUnreachableError(self.address, what, reason(exc)) from exc
        except requests.exceptions.RequestException as exc:
            raise BmcError(self.address, what, reason(exc)) from exc

    def _tls_error(self, what: str, exc: requests.exceptions.SSLError) -> BmcTlsError:
        return BmcTlsError(self.address, what,
                           tls.tls_failure(reason(exc), self.credentials.tls_fingerprint))

    # --- lifetime ------------------------------------------------------------------------

    def forget(self) -> None:
        """Drop the connection without logging out (the BMC is restarting, say)."""
        connector, root = self._connector, self._root
        self._root = self._system = self._auth = self._connector = None
        if root is not None:
            # sushy.Sushy.__del__ logs the session out: from whichever thread the garbage
            # collector runs in, at any later time, with network timeouts and retries. We
            # log out in close() or not at all (a restarted BMC forgot the session anyway).
            root._auth = None
        if connector is not None:
            # The connector and sushy's auth object point at each other (and the auth at
            # the root): unlinked, all of them are freed with the driver, not left for the
            # garbage collector's next full pass (with a whole site's worth of sessions).
            connector.set_auth(None)
            connector.close()

    def close(self) -> None:
        """Delete the Redfish session (if one was made) and close the HTTP connection."""
        auth = self._auth
        self._auth = None
        if auth is not None:
            try:
                auth.close()
            except (sushy_exc.SushyError, requests.RequestException) as exc:
                LOG.warning("BMC %s: closing the Redfish session failed: %s", self.address, exc)
        self.forget()


class _SharedNamesResponse(requests.Response):
    """requests' response whose JSON is parsed with ``shared_names`` (requests' own
    ``json`` otherwise: encodings, errors)."""

    def json(self, **kwargs: Any) -> Any:
        return super().json(object_pairs_hook=shared_names, **kwargs)


def _shared_names(response: requests.Response) -> None:
    """sushy's hook on every response: its JSON, read by sushy or by us, shares names.
    (A subclass, not a function stored on the response: that would be a reference cycle,
    and every response would wait for the garbage collector.)"""
    response.__class__ = _SharedNamesResponse


def document_of(path: str, response: requests.Response) -> Document:
    """The JSON object the BMC answered for ``path`` (a Refusal if it is another value)."""
    document = response.json()
    if not isinstance(document, dict):
        raise Refusal(f"{path} answered {type(document).__name__}, not a JSON object")
    return document


_SUSHY_HTTP_MESSAGE = re.compile(r"^HTTP (?P<method>[A-Z]+) (?P<url>\S+) returned code")
_SUSHY_NOT_FOUND = re.compile(r"^Resource (?P<url>\S+) not found")


def http_detail(exc: sushy_exc.HTTPError) -> str:
    """``HTTP 400 on PATCH /redfish/v1/...: <the BMC's messages>``.

    The messages are the error's ``message`` and every ``@Message.ExtendedInfo`` Message
    (sushy keeps only the most severe one, and none if no entry has a severity).
    """
    said: list[str] = []
    body = exc.body if isinstance(exc.body, dict) else {}
    extended = exc.extended_info
    entries = extended if isinstance(extended, list) else [extended] if extended else []
    for entry in entries:
        if isinstance(entry, dict):
            text = entry.get("Message") or entry.get("MessageId")
            if text and text not in said:
                said.append(str(text))
    message = body.get("message")
    if message and message not in said:
        said.insert(0, str(message))
    text = str(exc)
    match = _SUSHY_HTTP_MESSAGE.match(text) or _SUSHY_NOT_FOUND.match(text)
    where = ""
    if match:
        url = urlsplit(match["url"])
        target = url.path + (f"?{url.query}" if url.query else "")
        method = match.groupdict().get("method")
        where = f" on {method} {target}" if method else f" on {target}"
    return f"HTTP {exc.status_code}{where}: {'; '.join(said) or 'no error details'}"


def reason(exc: BaseException) -> str:
    """The innermost reason of a requests/urllib3 error, without the pool's wrapping."""
    inner_most: BaseException = exc
    for _ in range(5):
        inner = getattr(inner_most, "reason", None)
        if not isinstance(inner, BaseException) and inner_most.args:
            inner = inner_most.args[0]
        if not isinstance(inner, BaseException):
            break
        inner_most = inner
    text = str(inner_most)
    # urllib3 prefixes the connection object: "HTTPConnection(host=..., port=...): ..."
    _, sep, rest = text.partition("): ")
    return rest if sep and text.startswith(("HTTPConnection", "HTTPSConnection")) else text
