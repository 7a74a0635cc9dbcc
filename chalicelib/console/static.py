"""The console's files as HTTP answers: a fixed set read from ``assets/``, each with its
content type, an entity tag, and headers that keep the page to its own origin.

The files are the same for every caller, so they are served without a token; the page asks
for one and sends it with each API call. ``no-cache`` makes the browser revalidate each file
(a 304 when its tag has not changed), so a deployment's new console is never mixed with an
old one's modules.
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

ASSETS = Path(__file__).resolve().parent / "assets"
INDEX = "index.html"
NAME = re.compile(r"^[a-z][a-z0-9-]{0,40}\.(html|css|js)$")
CONTENT_TYPES = {"html": "text/html; charset=utf-8", "css": "text/css; charset=utf-8",
                 "js": "text/javascript; charset=utf-8"}
# Scripts, styles and API calls from this origin only; no inline script, no frames.
POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
          "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
HEADERS: dict[str, str | list[str]] = {
    "Content-Security-Policy": POLICY, "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY", "Cache-Control": "no-cache"}


@dataclass(frozen=True)
class Asset:
    name: str
    body: str
    content_type: str
    etag: str

    def headers(self) -> dict[str, str | list[str]]:
        return {**HEADERS, "Content-Type": self.content_type, "ETag": self.etag}


@functools.cache
def assets() -> dict[str, Asset]:
    """Every file the console serves, by name (read once per process)."""
    found = {}
    for path in sorted(ASSETS.iterdir()):
        match = NAME.match(path.name)
        if match is None or not path.is_file():
            continue
        body = path.read_text(encoding="utf-8")
        digest = hashlib.sha256(body.encode()).hexdigest()[:20]
        found[path.name] = Asset(path.name, body, CONTENT_TYPES[match.group(1)], f'"{digest}"')
    return found


def find(name: str) -> Asset | None:
    """The asset of that name; None for any other name (checked against the set, never
    joined to a path)."""
    return assets().get(name) if NAME.match(name) else None


def not_modified(asset: Asset, if_none_match: str | None) -> bool:
    """The browser's copy (its ``If-None-Match``) is this asset."""
    if not if_none_match:
        return False
    return asset.etag in {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
