"""BIOS: current attributes, pending ones (the settings object), the attribute registry.

Raw documents rather than sushy's ``Bios``: we need the settings object's ETag header and
the registry file's Location, which sushy keeps to itself. Names and values are checked in
the task layer against what ``get_bios()`` returns; here we only read and write.

An attribute registry is the same document on every machine of one model and firmware, and
a large one (1-2 MB of JSON on some BMCs): ``SHARED_REGISTRIES`` parses each registry once
per process and every driver reads that one copy.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

from edge_gateway.drivers.interfaces import BiosAttribute, BiosInterface, BiosSettings
from edge_gateway.drivers.redfish.documents import Document, link
from edge_gateway.drivers.redfish.service import RedfishService, Refusal, document_of

LOG = logging.getLogger(__name__)

# "BiosAttributeRegistryP89.v1_0_0", "BiosAttributeRegistry.1.0": name, major, minor
_REGISTRY_NAME = re.compile(r"^(?P<name>.+?)\.v?(?P<major>\d+)[._](?P<minor>\d+)")


class RedfishBios(BiosInterface):
    """The system's Bios resource, its settings object and its attribute registry."""

    _service: RedfishService

    def get_bios(self) -> BiosSettings:
        with self._service.call("read BIOS settings"):
            bios = _bios(self._service)
            current = bios.get("Attributes") or {}
            settings_path = link(bios, "@Redfish.Settings", "SettingsObject")
            pending: dict[str, Any] = {}
            self._bios_read.clear()
            if settings_path:
                written = self._read_settings(settings_path).get("Attributes") or {}
                # Some BMCs list every attribute in the settings object, others only those
                # written: either way, pending is what differs from the current value.
                pending = {k: v for k, v in written.items() if current.get(k) != v}
            name = bios.get("AttributeRegistry")
            registry = self._bios_registry(name) if isinstance(name, str) and name else None
            return BiosSettings(current=dict(current), pending=pending, registry=registry)

    def set_bios_pending(self, attributes: dict[str, Any]) -> None:
        """PATCH the settings object; they take effect at the next reset.

        The settings object as ``get_bios`` last read it: its link (a link does not change)
        and, as ``If-Match``, its ETag, so the BMC refuses the write (412) if the object
        changed since the caller read what it decided on. Without a read before, both are
        read here."""
        names = ", ".join(sorted(attributes))
        with self._service.call(f"write BIOS settings {names}"):
            if self._bios_read:
                settings_path, etag = self._bios_read.popitem()
            else:
                bios = _bios(self._service)
                settings_path = link(bios, "@Redfish.Settings", "SettingsObject")
                if not settings_path:
                    raise Refusal("the Bios resource has no settings object "
                                  "(@Redfish.Settings) to write pending attributes to")
                etag = self._service.get(settings_path).headers.get("ETag")
            LOG.info("BMC %s: PATCH %s with %s", self._service.address, settings_path, names)
            self._service.patch(settings_path, {"Attributes": attributes}, etag)

    def _read_settings(self, path: str) -> Document:
        """The settings object; its ETag is kept for the next write. (The answer itself is
        not kept: held through the registry's reads, every machine's would add up.)"""
        answer = self._service.get(path)
        self._bios_read[path] = answer.headers.get("ETag")
        return document_of(path, answer)

    @functools.cached_property
    def _bios_registries(self) -> dict[str, Mapping[str, BiosAttribute] | None]:
        """The attribute registries read so far, by name: each is read once per driver."""
        return {}

    @functools.cached_property
    def _bios_read(self) -> dict[str, str | None]:
        """The settings object ``get_bios`` last read (path: ETag), until a write uses it."""
        return {}

    def _bios_registry(self, name: str) -> Mapping[str, BiosAttribute] | None:
        """The attribute registry ``name`` as BiosAttributes; None if the BMC has none."""
        if name not in self._bios_registries:
            registry = _find_registry(self._service, name)
            self._bios_registries[name] = registry.attributes if registry else None
            if registry is None:
                LOG.info("BMC %s: attribute registry %s is not published",
                         self._service.address, name)
        return self._bios_registries[name]


def offered(system: Document) -> bool:
    return link(system, "Bios") is not None


def _bios(service: RedfishService) -> Document:
    # The link to the Bios resource, not the system's state: the system need not be read.
    path = link(service.system(fresh=False).json, "Bios")
    if not path:
        raise Refusal("the system has no Bios resource")
    return service.get_json(path)


# --- the attribute registry --------------------------------------------------------------


class Registry(NamedTuple):
    """An attribute registry as read: its Id, and its attributes (None if it lists none)."""

    id: object
    attributes: Mapping[str, BiosAttribute] | None

    @classmethod
    def of(cls, document: Document) -> Registry:
        return cls(document.get("Id"), _parse_registry(document))


class SharedRegistries:
    """Registries parsed once per content, for every driver of the process: keyed by the
    SHA-256 of the bytes the BMC sent, not by name or URI (vendors give different registries
    the same name). The ``size`` most recently used are kept. Parsing holds the lock: the
    machines of a site ask for the same registry at the same moment, and one parses it.

    Also where each BMC keeps each registry (its URI, by BMC address and registry name): a
    driver that reads a BMC's BIOS again goes straight there, not through the Registries
    collection and its files; it searches again if the BMC no longer has it there."""

    def __init__(self, size: int = 8) -> None:
        self.size = size
        self._registries: OrderedDict[bytes, Registry] = OrderedDict()
        self._locations: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()

    def location(self, address: str, name: str) -> str | None:
        with self._lock:
            return self._locations.get((address, name))

    def locate(self, address: str, name: str, uri: str | None) -> None:
        """Remember (or, with None, forget) where BMC ``address`` keeps registry ``name``."""
        with self._lock:
            if uri is None:
                self._locations.pop((address, name), None)
            else:
                self._locations[(address, name)] = uri

    def parsed(self, content: bytes, parse: Callable[[], Registry]) -> Registry:
        key = hashlib.sha256(content).digest()
        with self._lock:
            registry = self._registries.get(key)
            if registry is None:
                registry = self._registries[key] = parse()
                while len(self._registries) > self.size:
                    self._registries.popitem(last=False)
            else:
                self._registries.move_to_end(key)
            return registry

    def clear(self) -> None:
        with self._lock:
            self._registries.clear()
            self._locations.clear()


SHARED_REGISTRIES = SharedRegistries()


def _find_registry(service: RedfishService, name: str) -> Registry | None:
    """The registry ``name``: where this BMC had it before, else searched for."""
    known = SHARED_REGISTRIES.location(service.address, name)
    if known is not None:
        registry = _read_registry(service, known)
        if registry is not None and registry.attributes is not None:
            return registry
        LOG.info("BMC %s: registry %s is no longer at %s; searching for it",
                 service.address, name, known)
    found = _search_registry(service, name)
    SHARED_REGISTRIES.locate(service.address, name, found[0] if found else None)
    return found[1] if found else None


def _search_registry(service: RedfishService, name: str) -> tuple[str, Registry] | None:
    """Find ``name`` in the Registries collection and follow its Location: its URI and
    the registry read there.

    A registry file whose Id or Registry is ``name`` (or the same name and major.minor
    version) is taken at its word. Failing that, a file whose name starts the wanted name
    with the same version is tried, and kept only if the registry it points to has the Id
    ``name`` (sushy-tools lists "BiosAttributeRegistry.v1_0_0" for a registry whose Id is
    "BiosAttributeRegistryP89.v1_0_0").
    """
    collection = link(service.root().json, "Registries")
    if not collection:
        return None
    # Most BMCs name the file after the registry: look at those first.
    paths = sorted(service.member_paths(collection),
                   key=lambda path: not path.rstrip("/").endswith("/" + name))
    related = []
    for path in paths:
        file = service.optional_json(path)
        if file is None:
            continue
        if _same_registry(name, file):
            return _registry_of_file(service, path, file)
        if _related_registry(name, file):
            related.append((path, file))
    for path, file in related:
        found = _registry_of_file(service, path, file)
        if found is not None and found[1].id == name:
            return found
    return None


def _registry_of_file(service: RedfishService, path: str,
                      file: Document) -> tuple[str, Registry] | None:
    if "RegistryEntries" in file:  # the registry itself, inline in the collection
        return path, Registry.of(file)
    locations = [entry for entry in file.get("Location") or [] if isinstance(entry, dict)]
    locations.sort(key=lambda entry: entry.get("Language") != "en")
    for location in locations:
        uri = location.get("Uri")
        if isinstance(uri, str) and uri:
            registry = _read_registry(service, uri)
            return None if registry is None else (uri, registry)
    # PublicationUri is on the Internet and ArchiveUri a zip: neither is fetched here.
    LOG.info("BMC %s: registry file %s has no Location Uri on the BMC", service.address,
             file.get("@odata.id"))
    return None


def _read_registry(service: RedfishService, uri: str) -> Registry | None:
    """The registry at ``uri`` (None if the BMC has none there), parsed only if no other
    BMC sent the same bytes before."""
    response = service.optional_get(uri)
    if response is None:
        return None
    return SHARED_REGISTRIES.parsed(response.content,
                                    lambda: Registry.of(document_of(uri, response)))


def _key(name: object) -> tuple[str, str, str] | None:
    match = _REGISTRY_NAME.match(name) if isinstance(name, str) else None
    return (match["name"], match["major"], match["minor"]) if match else None


def _same_registry(name: str, file: Document) -> bool:
    candidates = [file.get("Id"), file.get("Registry")]
    if name in candidates:
        return True
    wanted = _key(name)
    return wanted is not None and any(_key(c) == wanted for c in candidates)


def _related_registry(name: str, file: Document) -> bool:
    wanted = _key(name)
    for candidate in (_key(file.get("Id")), _key(file.get("Registry"))):
        if wanted and candidate and wanted[0].startswith(candidate[0]) \
                and wanted[1:] == candidate[1:]:
            return True
    return False


def _parse_registry(document: Document) -> Mapping[str, BiosAttribute] | None:
    """The registry's attributes, read-only (one copy serves every driver)."""
    entries = (document.get("RegistryEntries") or {}).get("Attributes")
    if not isinstance(entries, list):
        return None
    registry = {}
    for entry in entries:
        attribute = _attribute(entry) if isinstance(entry, dict) else None
        if attribute is not None:
            registry[attribute.name] = attribute
    return MappingProxyType(registry)


def _attribute(entry: Document) -> BiosAttribute | None:
    name = entry.get("AttributeName")
    if not isinstance(name, str) or not name:
        return None
    kind = entry.get("Type") if isinstance(entry.get("Type"), str) else "String"
    allowed = None
    if kind == "Enumeration":
        allowed = tuple(str(value["ValueName"]) for value in entry.get("Value") or []
                        if isinstance(value, dict) and value.get("ValueName") is not None)
    return BiosAttribute(
        name=name, type=kind, allowed_values=allowed,
        # Immutable: "shall not be modified, typically reflects a hardware value".
        read_only=bool(entry.get("ReadOnly") or entry.get("Immutable")),
        minimum=_int(entry.get("LowerBound")), maximum=_int(entry.get("UpperBound")),
    )


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
