"""The resource tree of one simulated BMC: a DMTF mockup read once, changes kept per BMC.

A mockup is the directory layout of DMTF's published mockups: ``X/Y/index.json`` holds the
resource at ``/redfish/v1/X/Y``, and a file ``X/Y.json`` the one at ``/redfish/v1/X/Y.json``
(registries are served that way). ``Mockup`` is read-only and shared by every BMC of a
process; ``Resources`` is one BMC's view of it, copying a document the first time it changes.

What a GET answers is encoded (JSON bytes and ETag) once per change of the document, not
once per request: once per process for a document no BMC changed, once per BMC for its own.
The simulator stands for many BMCs on one machine; its cost per request is not theirs.
"""

from __future__ import annotations

import copy
import hashlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

Document = dict[str, Any]

ROOT = "/redfish/v1"
SHIPPED = Path(__file__).parent / "mockups" / "public-rackmount1"
SHIPPED_REGISTRIES = Path(__file__).parent / "registries"


def normalize(path: str) -> str:
    """``/redfish/v1/Systems/`` and ``/redfish/v1/Systems?x`` -> ``/redfish/v1/Systems``."""
    path = path.split("?", 1)[0].split("#", 1)[0]
    return path.rstrip("/") or "/"


class MockupError(ValueError):
    """The directory is not a Redfish mockup."""


Encoded = tuple[bytes, str]  # a document as JSON bytes, and its ETag


class Mockup:
    """The documents of a mockup directory, by normalized URL path."""

    def __init__(self, directory: Path, documents: dict[str, Document], metadata: bytes | None):
        self.directory = directory
        self.documents = documents
        self.metadata = metadata  # $metadata (CSDL XML), if the mockup has it
        self._encoded: dict[str, Encoded] = {}  # by path; the documents never change

    def encoded(self, path: str) -> Encoded | None:
        """The document at (normalized) ``path``, encoded once for every BMC."""
        found = self._encoded.get(path)
        if found is None:
            document = self.documents.get(path)
            if document is None:
                return None
            # Two threads may encode the same document at once: both get the same answer.
            found = self._encoded[path] = encode(document)
        return found

    @classmethod
    def load(cls, directory: Path | str = SHIPPED) -> Mockup:
        directory = Path(directory)
        if not (directory / "index.json").is_file():
            raise MockupError(f"{directory} is not a Redfish mockup: it has no index.json "
                              "(the service root)")
        documents: dict[str, Document] = {}
        for file in sorted(directory.rglob("*.json")):
            relative = file.relative_to(directory)
            if relative.parts[0] in ("$metadata",) or file.name == "explorer_config.json":
                continue
            if file.name == "index.json":
                url = "/".join((ROOT, *relative.parts[:-1]))
            else:
                url = "/".join((ROOT, *relative.parts))
            try:
                document = json.loads(file.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise MockupError(f"{file}: not a JSON document: {exc}") from exc
            if isinstance(document, dict):
                documents[normalize(url)] = document
        metadata_file = directory / "$metadata" / "index.xml"
        metadata = metadata_file.read_bytes() if metadata_file.is_file() else None
        return cls(directory, documents, metadata)


class Resources:
    """One BMC's documents: the mockup's, with this BMC's changes and additions on top.

    Every read returns a deep copy (callers may not change what they read); ``edit`` gives
    the BMC's own copy to change in place. One lock guards the whole tree: a BMC handles
    few requests at a time, and simple beats clever here.
    """

    def __init__(self, mockup: Mockup) -> None:
        self._mockup = mockup
        self._base = mockup.documents
        self._own: dict[str, Document | None] = {}  # None: deleted
        self._encoded: dict[str, Encoded] = {}  # of documents in _own, until they change
        self.lock = threading.RLock()

    def __contains__(self, path: str) -> bool:
        return self.get_raw(path) is not None

    def get_raw(self, path: str) -> Document | None:
        path = normalize(path)
        if path in self._own:
            return self._own[path]
        return self._base.get(path)

    def get(self, path: str) -> Document | None:
        with self.lock:
            document = self.get_raw(path)
            return copy.deepcopy(document) if document is not None else None

    def encoded(self, path: str) -> Encoded | None:
        """The document at ``path`` as JSON bytes, and its ETag; None if there is none.

        Encoded again only after ``edit``, ``put`` or ``delete``: whoever edits a document
        changes it before the BMC answers its next request (they hold the BMC's lock)."""
        path = normalize(path)
        with self.lock:
            if path not in self._own:
                return self._mockup.encoded(path)
            found = self._encoded.get(path)
            if found is None:
                document = self._own[path]
                if document is None:
                    return None
                found = self._encoded[path] = encode(document)
            return found

    def edit(self, path: str) -> Document:
        """This BMC's own copy of the document at ``path``, to change in place."""
        path = normalize(path)
        with self.lock:
            self._encoded.pop(path, None)
            if path not in self._own or self._own[path] is None:
                base = self._base.get(path)
                if base is None:
                    raise KeyError(path)
                self._own[path] = copy.deepcopy(base)
            document = self._own[path]
            assert document is not None
            return document

    def put(self, path: str, document: Document) -> None:
        with self.lock:
            self._encoded.pop(normalize(path), None)
            self._own[normalize(path)] = document

    def delete(self, path: str) -> None:
        with self.lock:
            self._encoded.pop(normalize(path), None)
            self._own[normalize(path)] = None

    def paths(self) -> Iterator[str]:
        with self.lock:
            every = set(self._base) | set(self._own)
            return iter(sorted(p for p in every if self.get_raw(p) is not None))

    # --- links and collections --------------------------------------------------------

    def link(self, document: Document | None, *keys: str) -> str | None:
        """The ``@odata.id`` found under ``keys``, e.g. link(system, "Links", "Chassis")."""
        value: Any = document
        for key in keys:
            if not isinstance(value, dict):
                return None
            value = value.get(key)
        if isinstance(value, list):
            value = value[0] if value else None
        if isinstance(value, dict):
            value = value.get("@odata.id")
        return normalize(value) if isinstance(value, str) and value else None

    def members(self, collection: str | None) -> list[str]:
        """The member paths of a collection (those that exist)."""
        document = self.get_raw(collection) if collection else None
        found = []
        for member in (document or {}).get("Members") or []:
            path = member.get("@odata.id") if isinstance(member, dict) else None
            if isinstance(path, str) and self.get_raw(path) is not None:
                found.append(normalize(path))
        return found

    def add_member(self, collection: str, path: str, document: Document) -> None:
        with self.lock:
            self.put(path, document)
            listing = self.edit(collection)
            members = listing.setdefault("Members", [])
            members.append({"@odata.id": path})
            listing["Members@odata.count"] = len(members)

    def remove_member(self, collection: str, path: str) -> None:
        path = normalize(path)
        with self.lock:
            self.delete(path)
            listing = self.edit(collection)
            members = [m for m in listing.get("Members") or []
                       if normalize(m.get("@odata.id", "")) != path]
            listing["Members"] = members
            listing["Members@odata.count"] = len(members)


def etag(document: Document) -> str:
    """A weak ETag that changes whenever the document does."""
    digest = hashlib.sha1(json.dumps(document, sort_keys=True).encode(),
                          usedforsecurity=False).hexdigest()[:16]
    return f'W/"{digest}"'


def encode(document: Document) -> Encoded:
    return json.dumps(document).encode(), etag(document)
