"""What names an artifact: its SHA-256, where the cloud says to get it, and its size.

A plan step carries the three as parameters (``sha256``, ``image`` or ``url``, ``size``),
so the plan's signature covers them: the digest is the cloud's word on which bytes are
meant, wherever they come from.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from edge_gateway.errors import GatewayError
from edgeplane.protocol import SHA256_PATTERN, excerpt

MAX_URL_LENGTH = 2048
# A file name the LAN URL may end with (``/a/<sha256>/<name>``): some BMCs want to see
# ``.iso`` or the firmware package's name, none of them a query string.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class CacheError(GatewayError):
    """An artifact could not be fetched, checked, kept or served; the message says which
    and why."""


@dataclass(frozen=True)
class Artifact:
    sha256: str
    url: str
    size: int

    def __post_init__(self) -> None:
        if not isinstance(self.sha256, str) or not SHA256_PATTERN.fullmatch(self.sha256):
            raise CacheError(f"artifact digest {excerpt(self.sha256)} is not 64 lowercase hex "
                             "digits")
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 1:
            raise CacheError(f"artifact {self.sha256}: size {excerpt(self.size)} is not a "
                             "positive number of bytes")
        check_url(self.url)

    @property
    def name(self) -> str | None:
        """The origin URL's file name, if it is one a LAN URL can carry."""
        last = urlsplit(self.url).path.rsplit("/", 1)[-1]
        return last if NAME_PATTERN.fullmatch(last) and ".." not in last else None


def check_url(url: str) -> str:
    """``url`` if it is an http:// or https:// URL with a host, of a sane length."""
    if not isinstance(url, str) or len(url) > MAX_URL_LENGTH:
        raise CacheError(f"artifact URL {excerpt(url)} is not a string of at most "
                         f"{MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise CacheError(f"artifact URL {excerpt(url)} is not a URL: {exc}") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise CacheError(f"artifact URL {excerpt(url)} is not an http:// or https:// URL "
                         "with a host")
    if any(c.isspace() or ord(c) < 32 for c in url):
        raise CacheError(f"artifact URL {excerpt(url)} has spaces or control characters")
    return url
