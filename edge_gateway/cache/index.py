"""The cache's index: per artifact its size, when it came, when it was last used and how
often it was found there; and the cache's counters. One JSON file beside the artifacts,
written whole to a temporary file and renamed over the old one, so a crash leaves the old
or the new index, never half of one. The files themselves are the truth: an index that
cannot be read is rebuilt from them (``reconcile``), losing only the counters.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgeplane.protocol import SHA256_PATTERN

LOG = logging.getLogger(__name__)

INDEX_NAME = "index.json"
MAX_INDEX_BYTES = 16 * 1024 * 1024
INDEX_VERSION = 1


@dataclass
class Entry:
    size: int
    added: float
    last_used: float
    hits: int = 0


@dataclass
class Index:
    entries: dict[str, Entry] = field(default_factory=dict)
    hits: int = 0  # artifacts a step found in the cache
    downloads: int = 0  # artifacts that came over the WAN
    wire_bytes: int = 0  # bytes that came over the WAN
    evictions: int = 0

    def to_json(self) -> bytes:
        return json.dumps({"v": INDEX_VERSION, "hits": self.hits, "downloads": self.downloads,
                           "wire_bytes": self.wire_bytes, "evictions": self.evictions,
                           "artifacts": {k: asdict(v) for k, v in self.entries.items()}},
                          sort_keys=True).encode()


def load(directory: Path) -> Index:
    """The index as written, reconciled with the files there; an empty index, rebuilt from
    the files, if it cannot be read."""
    path = directory / INDEX_NAME
    index = Index()
    try:
        if path.stat().st_size > MAX_INDEX_BYTES:
            raise ValueError(f"over {MAX_INDEX_BYTES} bytes")
        index = _parse(json.loads(path.read_bytes()))
    except FileNotFoundError:
        pass
    except (OSError, ValueError, TypeError, KeyError) as exc:
        LOG.warning("artifact cache index %s unreadable (%s): rebuilt from the files", path,
                    exc)
    reconcile(directory, index)
    return index


def save(directory: Path, index: Index) -> None:
    path = directory / INDEX_NAME
    temporary = path.with_suffix(".tmp")
    with open(temporary, "wb") as out:
        out.write(index.to_json())
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)


def reconcile(directory: Path, index: Index) -> None:
    """Drop entries whose file is gone; add files no entry names (a file is named by its
    digest only once that digest was checked, so it is trusted)."""
    present: dict[str, os.stat_result] = {}
    for child in directory.iterdir():
        if SHA256_PATTERN.fullmatch(child.name) and child.is_file():
            present[child.name] = child.stat()
    for digest in list(index.entries):
        if digest not in present:
            del index.entries[digest]
    for digest, stat in present.items():
        entry = index.entries.get(digest)
        if entry is None or entry.size != stat.st_size:
            index.entries[digest] = Entry(stat.st_size, stat.st_mtime, stat.st_mtime,
                                          entry.hits if entry else 0)


def _parse(raw: Any) -> Index:
    if not isinstance(raw, dict) or raw.get("v") != INDEX_VERSION:
        raise ValueError("not an index of this version")
    entries: dict[str, Entry] = {}
    for digest, item in dict(raw["artifacts"]).items():
        if not SHA256_PATTERN.fullmatch(str(digest)):
            raise ValueError(f"artifact key {digest[:80]!r} is not a digest")
        entries[digest] = Entry(int(item["size"]), float(item["added"]),
                                float(item["last_used"]), int(item.get("hits", 0)))
    return Index(entries, int(raw.get("hits", 0)), int(raw.get("downloads", 0)),
                 int(raw.get("wire_bytes", 0)), int(raw.get("evictions", 0)))
