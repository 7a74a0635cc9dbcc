"""The artifacts on the gateway's disk, and what decides which stay.

``cache/<sha256>`` is an artifact whose digest was checked; ``cache/<sha256>.partial`` one
still coming (or cut short, to resume). ``ensure`` gives the checked file, fetching it if
it is not there: one download per digest at a time, however many machines ask for it at
once, the others waiting for it. Room is made before a download: least recently used first
out, never an artifact pinned (by a running plan, ``pin``) or being read (``reading``).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from edge_gateway.cache import index as index_file
from edge_gateway.cache.artifact import Artifact, CacheError
from edge_gateway.cache.fetch import Opener, fetch, open_url

LOG = logging.getLogger(__name__)

PARTIAL_SUFFIX = ".partial"


@dataclass(frozen=True)
class CacheStats:
    """What the site reports of its cache (``edgeplane sites show``)."""

    artifacts: int
    bytes: int
    max_bytes: int
    hits: int
    downloads: int
    wire_bytes: int
    served_requests: int
    served_bytes: int
    evictions: int


class ArtifactStore:
    def __init__(self, directory: Path, max_bytes: int,
                 opener: Opener = open_url, attempts: int = 4,
                 backoff: float = 2.0, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.time) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.opener = opener
        self.attempts = attempts
        self.backoff = backoff
        self.sleep = sleep
        self.clock = clock
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._index = index_file.load(self.directory)
        except OSError as exc:
            raise CacheError(f"artifact cache {self.directory}: {exc}") from None
        self._lock = threading.Lock()  # the index, pins, readers, reservations
        self._fetching: dict[str, threading.Lock] = {}
        # digest -> when its last download failed, why, and as which error
        self._failed: dict[str, tuple[float, str, type[CacheError]]] = {}
        self._pins: dict[str, set[str]] = {}  # holder -> digests
        self._readers: Counter[str] = Counter()
        self._reserved: dict[str, int] = {}  # digests being fetched -> their size
        self._served_requests = 0
        self._served_bytes = 0

    def path(self, sha256: str) -> Path:
        return self.directory / sha256

    # --- getting one -----------------------------------------------------------------

    def ensure(self, artifact: Artifact) -> Path:
        """The checked file of ``artifact``, fetched first if the cache does not have it.
        CacheError saying why not (the download, the digest, no room)."""
        digest = artifact.sha256
        arrived = time.monotonic()
        with self._lock:
            fetching = self._fetching.setdefault(digest, threading.Lock())
        with fetching:  # one download per digest; the others wait and then find it here
            failed = self._failed.get(digest)
            if failed is not None and failed[0] >= arrived:
                # It failed while this step waited for it: fifty machines waiting on one
                # image over a dead link fail together, not one download after another.
                raise failed[2](f"{failed[1]} (while this step waited for that download)")
            with self._lock:
                entry = self._index.entries.get(digest)
                if entry is not None and self.path(digest).is_file():
                    entry.hits += 1
                    entry.last_used = self.clock()
                    self._index.hits += 1
                    self._save()
                    return self.path(digest)
                self._make_room(artifact.size, digest)
                self._reserved[digest] = artifact.size
            try:
                fetched = fetch(artifact.url, digest, self._partial(digest),
                                size=artifact.size, max_bytes=self.max_bytes,
                                opener=self.opener, attempts=self.attempts,
                                backoff=self.backoff, sleep=self.sleep)
                os.replace(fetched.path, self.path(digest))
            except OSError as exc:
                why = f"artifact cache {self.directory}: storing {digest}: {exc}"
                self._failed[digest] = (time.monotonic(), why, CacheError)
                raise CacheError(why) from None
            except CacheError as exc:
                self._failed[digest] = (time.monotonic(), str(exc), type(exc))
                raise
            finally:
                with self._lock:
                    self._reserved.pop(digest, None)
            with self._lock:
                now = self.clock()
                self._index.entries[digest] = index_file.Entry(fetched.size, now, now)
                self._failed.pop(digest, None)
                self._index.downloads += 1
                self._index.wire_bytes += fetched.wire_bytes
                self._save()
            LOG.info("artifact %s: %d bytes downloaded from %s (%d fetched now, %d resumed)",
                     digest, fetched.size, artifact.url, fetched.wire_bytes,
                     fetched.resumed_from)
            return self.path(digest)

    # --- what may not go -------------------------------------------------------------

    def pin(self, holder: str, digests: Iterable[str]) -> None:
        """Keep ``digests`` (present or still to come) until ``release(holder)``."""
        with self._lock:
            self._pins.setdefault(holder, set()).update(digests)

    def release(self, holder: str) -> None:
        with self._lock:
            self._pins.pop(holder, None)

    @contextmanager
    def reading(self, sha256: str) -> Iterator[int | None]:
        """The artifact's size while it is read (it cannot be evicted meanwhile); None if
        the cache has no complete file of it."""
        with self._lock:
            entry = self._index.entries.get(sha256)
            if entry is None:
                size = None
            else:
                size = entry.size
                entry.last_used = self.clock()
                self._readers[sha256] += 1
        try:
            yield size
        finally:
            if size is not None:
                with self._lock:
                    self._readers[sha256] -= 1
                    if not self._readers[sha256]:
                        del self._readers[sha256]

    def served(self, requests: int, sent: int) -> None:
        with self._lock:
            self._served_requests += requests
            self._served_bytes += sent

    # --- what it holds ---------------------------------------------------------------

    def stats(self) -> CacheStats:
        with self._lock:
            entries = self._index.entries
            return CacheStats(
                artifacts=len(entries), bytes=sum(e.size for e in entries.values()),
                max_bytes=self.max_bytes, hits=self._index.hits,
                downloads=self._index.downloads, wire_bytes=self._index.wire_bytes,
                served_requests=self._served_requests, served_bytes=self._served_bytes,
                evictions=self._index.evictions)

    def holds(self, sha256: str) -> bool:
        with self._lock:
            return sha256 in self._index.entries

    def flush(self) -> None:
        """Write down the last uses the LAN server noted since the last write."""
        with self._lock:
            self._save()

    # --- room ------------------------------------------------------------------------

    def _make_room(self, needed: int, coming: str) -> None:
        """Evict until ``needed`` more bytes fit (called with the lock held): first
        partial files no download is using, then least recently used artifacts that no
        plan pins and nobody reads. CacheError if that is not enough."""
        if needed > self.max_bytes:
            raise CacheError(f"artifact {coming} is {needed} bytes; the site's cache holds "
                             f"at most {self.max_bytes} ([cache] max_size)")
        entries = self._index.entries
        partials = {p: p.stat() for p in self.directory.glob(f"*{PARTIAL_SUFFIX}")
                    if p.name.removesuffix(PARTIAL_SUFFIX) not in self._reserved
                    and p.name.removesuffix(PARTIAL_SUFFIX) != coming}
        used = (sum(e.size for e in entries.values()) + sum(self._reserved.values())
                + sum(s.st_size for s in partials.values()))
        for partial in sorted(partials, key=lambda p: partials[p].st_mtime):
            if used + needed <= self.max_bytes:
                return
            partial.unlink(missing_ok=True)
            used -= partials[partial].st_size
            LOG.info("artifact cache: dropped the unfinished %s to make room", partial.name)
        pinned = set().union(*self._pins.values()) if self._pins else set()
        for digest in sorted(entries, key=lambda d: entries[d].last_used):
            if used + needed <= self.max_bytes:
                break
            if digest in pinned or self._readers[digest] or digest == coming:
                continue
            self.path(digest).unlink(missing_ok=True)
            used -= entries.pop(digest).size
            self._index.evictions += 1
            LOG.info("artifact cache: evicted %s (least recently used)", digest)
        if used + needed > self.max_bytes:
            self._save()
            held = sorted(d for d in entries if d in pinned or self._readers[d])
            raise CacheError(f"no room for artifact {coming} ({needed} bytes): the cache "
                             f"holds {used} of {self.max_bytes} bytes, and "
                             f"{len(held)} artifact(s) in use may not be evicted"
                             + (f" ({', '.join(d[:12] for d in held)})" if held else ""))
        self._save()

    def _partial(self, sha256: str) -> Path:
        return self.directory / f"{sha256}{PARTIAL_SUFFIX}"

    def _save(self) -> None:
        try:
            index_file.save(self.directory, self._index)
        except OSError as exc:
            raise CacheError(f"artifact cache {self.directory}: writing its index: "
                             f"{exc}") from None
