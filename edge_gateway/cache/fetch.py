"""Bringing one artifact over HTTP into a ``.partial`` file, resuming what is there.

A try that finds a partial file asks only for the rest (``Range: bytes=N-``); an origin
that answers 200 instead (it ignores ranges), or a range that does not start at N, makes
the try start again from the first byte. A try cut short (the WAN went away, a timeout)
leaves what arrived, for the next try, in this call or after a restart. The SHA-256 is
computed over the whole file (the part on disk read once, the rest as it streams) and the
file is complete only once it matches; a file whose digest differs is deleted.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_gateway import __version__
from edge_gateway.cache.artifact import CacheError, check_url
from edgeplane.protocol import excerpt

LOG = logging.getLogger(__name__)

CHUNK_BYTES = 256 * 1024
READ_TIMEOUT = 30.0  # seconds without a byte before a try is given up
_CONTENT_RANGE = re.compile(r"^bytes (\d{1,19})-(\d{1,19})/(\d{1,19}|\*)$")

Opener = Callable[..., Any]  # urllib.request.urlopen


class _HttpRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects to http(s) only (urllib would follow one to ftp too)."""

    def redirect_request(self, req: urllib.request.Request, fp: Any, code: int, msg: str,
                         headers: Any, newurl: str) -> urllib.request.Request | None:
        check_url(newurl)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(_HttpRedirects())


def open_url(request: urllib.request.Request, timeout: float) -> Any:
    """``urlopen``, following redirects only to http:// and https:// URLs."""
    return _OPENER.open(request, timeout=timeout)


class FetchInterrupted(CacheError):
    """Every try ended early (the link, the origin's 5xx): what arrived is kept to resume."""


class DigestMismatch(CacheError):
    """The bytes are not the ones the plan names (nothing of them is kept)."""


class _Transient(Exception):
    """A try ended early for a reason another try may not meet (the link, a 5xx)."""


@dataclass(frozen=True)
class Fetched:
    path: Path  # the complete, checked file (still named ``.partial``)
    size: int
    wire_bytes: int  # what came over the network in this call
    resumed_from: int  # the bytes already on disk when the first try started


def fetch(url: str, sha256: str, partial: Path, *, size: int | None, max_bytes: int,
          what: str = "artifact", opener: Opener = open_url,
          resume: bool = True, attempts: int = 4, backoff: float = 2.0,
          sleep: Callable[[float], None] = time.sleep) -> Fetched:
    """Fetch ``url`` into ``partial`` until its SHA-256 is ``sha256``.

    ``size``: the exact byte count the cloud gave (None: unknown, at most ``max_bytes``).
    ``resume`` False: every try starts from nothing, and nothing is left on failure.
    CacheError saying why, after ``attempts`` tries for what may pass (the link, 5xx)."""
    check_url(url)
    limit = size if size is not None else max_bytes
    if limit > max_bytes:
        raise CacheError(f"{excerpt(url)} is {limit} bytes; a {what} may have {max_bytes}")
    partial.parent.mkdir(parents=True, exist_ok=True)
    if not resume:
        partial.unlink(missing_ok=True)
    start = _size_on_disk(partial)
    if start > limit:
        partial.unlink()
        start = 0
    wire = 0
    try:
        got, total, found = _tries(url, partial, size, limit, what, opener, attempts, backoff,
                                   sleep, resume)
        wire += got
        if found != sha256 and start:
            # The part kept from an earlier try may be what is wrong: once more, whole.
            LOG.warning("%s %s: SHA-256 %s over a resumed file; fetching it whole again",
                        what, url, found)
            partial.unlink(missing_ok=True)
            got, total, found = _tries(url, partial, size, limit, what, opener, attempts,
                                       backoff, sleep, resume)
            wire += got
        if found != sha256:
            raise DigestMismatch(f"the file at {excerpt(url)} ({total} bytes) has SHA-256 "
                                 f"{found}, not {sha256} as the plan says: refused")
    except FetchInterrupted:
        if not resume:
            partial.unlink(missing_ok=True)
        raise
    except CacheError:  # refused: what is on disk is not the artifact
        partial.unlink(missing_ok=True)
        raise
    return Fetched(partial, total, wire, start)


def _tries(url: str, partial: Path, size: int | None, limit: int, what: str,
           opener: Opener, attempts: int, backoff: float, sleep: Callable[[float], None],
           resume: bool) -> tuple[int, int, str]:
    """Up to ``attempts`` tries until the body is whole: the bytes that came, the file's
    size and its SHA-256."""
    wire = 0
    for attempt in range(1, attempts + 1):
        try:
            got, digest = _try(url, partial, size, limit, what, opener)
            wire += got
            break
        except _Transient as exc:
            wire += exc.args[1]
            if attempt == attempts:
                kept = _size_on_disk(partial) if resume else 0
                raise FetchInterrupted(
                    f"downloading {what} {excerpt(url)} failed {attempts} times, the "
                    f"last: {exc.args[0]} ({kept} bytes kept to resume)") from None
            LOG.warning("downloading %s %s: %s; try %d of %d in %.0f s", what, url,
                        exc.args[0], attempt + 1, attempts, backoff * attempt)
            sleep(backoff * attempt)
    total = _size_on_disk(partial)
    if size is not None and total != size:
        raise CacheError(f"{what} {excerpt(url)} is {total} bytes, not {size} as the plan "
                         "says: refused")
    return wire, total, digest.hexdigest()


def _try(url: str, partial: Path, size: int | None, limit: int, what: str,
         opener: Opener) -> tuple[int, Any]:
    """One request: the bytes it brought, and the digest of the whole file so far."""
    offset = _size_on_disk(partial)
    if size is not None and offset == size:
        return 0, _hash_prefix(partial, offset)  # all there (a restart before the check)
    headers = {"User-Agent": f"edge-gateway/{__version__}"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 - http(s), checked
    got = 0
    try:
        with opener(request, timeout=READ_TIMEOUT) as response:
            offset = _position(response, offset, size, url)
            digest = _hash_prefix(partial, offset)
            _check_length(response, offset, size, limit, what, url)
            with open(partial, "r+b" if offset else "wb") as out:
                out.seek(offset)
                out.truncate()
                while chunk := response.read(CHUNK_BYTES):
                    got += len(chunk)
                    if offset + got > limit:
                        raise CacheError(f"{excerpt(url)} sent more than {limit} bytes; a "
                                         f"{what} may have that many: refused")
                    digest.update(chunk)
                    out.write(chunk)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and size is not None and offset == size:
            return 0, _hash_prefix(partial, offset)  # it was all there
        if exc.code == 416:
            partial.unlink(missing_ok=True)
            raise _Transient(f"HTTP 416 for bytes {offset}-: starting again", got) from None
        if exc.code >= 500 or exc.code == 429:
            raise _Transient(f"HTTP {exc.code} {exc.reason}", got) from None
        raise CacheError(f"downloading {what} {excerpt(url)} failed: HTTP {exc.code} "
                         f"{exc.reason}") from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc or type(exc).__name__
        raise _Transient(f"{reason}", got) from None
    if size is not None and offset + got < size:
        raise _Transient(f"the connection ended after {offset + got} of {size} bytes", got)
    return got, digest


def _position(response: Any, offset: int, size: int | None, url: str) -> int:
    """Where the body starts: ``offset`` for a 206 that continues the file, else 0."""
    status = getattr(response, "status", 200)
    if status != 206:
        if offset:
            LOG.info("%s ignores ranges (HTTP %s): downloading from the first byte", url, status)
        return 0
    match = _CONTENT_RANGE.match(response.headers.get("Content-Range", "").strip())
    if not match or int(match[1]) != offset or (
            size is not None and match[3] not in ("*", str(size))):
        raise _Transient(f"HTTP 206 with Content-Range "
                         f"{excerpt(response.headers.get('Content-Range'))}, not from byte "
                         f"{offset}" + (f" of {size}" if size is not None else ""), 0)
    return offset


def _check_length(response: Any, offset: int, size: int | None, limit: int, what: str,
                  url: str) -> None:
    """Refuse a body whose announced length does not fit the size the plan gave."""
    length = response.headers.get("Content-Length")
    if length is None or not length.strip().isdigit():
        return
    count = int(length)
    if offset + count > limit or (size is not None and offset + count != size):
        bound = f"the plan says {size}" if size is not None else f"a {what} may have {limit}"
        raise CacheError(f"{excerpt(url)} is {offset + count} bytes; {bound}: refused")


def _hash_prefix(partial: Path, length: int) -> Any:
    digest = hashlib.sha256()
    if length:
        with open(partial, "rb") as done:
            while length > 0 and (chunk := done.read(min(CHUNK_BYTES, length))):
                digest.update(chunk)
                length -= len(chunk)
    return digest


def _size_on_disk(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
