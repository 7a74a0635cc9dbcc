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
            if settings_path:
                written = self._service.get_json(settings_path).get("Attributes") or {}
                # Some BMCs list every attribute in the settings object, others only those
                # written: either way, pending is what differs from the current value.
                pending = {k: v for k, v in written.items() if current.get(k) != v}
            name = bios.get("AttributeRegistry")
            registry = self._bios_registry(name) if isinstance(name, str) and name else None
            return BiosSettings(current=dict(current), pending=pending, registry=registry)

    def set_bios_pending(self, attributes: dict[str, Any]) -> None:
        """PATCH the settings object; they take effect at the next reset."""
        names = ", ".join(sorted(attributes))
        with self._service.call(f"write BIOS settings {names}"):
            bios = _bios(self._service)
            settings_path = link(bios, "@Redfish.Settings", "SettingsObject")
            if not settings_path:
                raise Refusal("the Bios resource has no settings object (@Redfish.Settings) "
                              "to write pending attributes to")
            etag = self._service.get(settings_path).headers.get("ETag")
            LOG.info("BMC %s: PATCH %s with %s", self._service.address, settings_path, names)
            self._service.patch(settings_path, {"Attributes": attributes}, etag)

    @functools.cached_property
    def _bios_registries(self) -> dict[str, Mapping[str, BiosAttribute] | None]:
        """The attribute registries read so far, by name: each is read once per driver."""
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
    path = link(service.system().json, "Bios")
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
    machines of a site ask for the same registry at the same moment, and one parses it."""

    def __init__(self, size: int = 8) -> None:
        self.size = size
        self._registries: OrderedDict[bytes, Registry] = OrderedDict()
        self._lock = threading.Lock()

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


SHARED_REGISTRIES = SharedRegistries()


def _find_registry(service: RedfishService, name: str) -> Registry | None:
    """Find ``name`` in the Registries collection and follow its Location.

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
            return _registry_of_file(service, file)
        if _related_registry(name, file):
            related.append(file)
    for file in related:
        registry = _registry_of_file(service, file)
        if registry is not None and registry.id == name:
            return registry
    return None


def _registry_of_file(service: RedfishService, file: Document) -> Registry | None:
    if "RegistryEntries" in file:  # the registry itself, inline in the collection
        return Registry.of(file)
    locations = [entry for entry in file.get("Location") or [] if isinstance(entry, dict)]
    locations.sort(key=lambda entry: entry.get("Language") != "en")
    for location in locations:
        uri = location.get("Uri")
        if isinstance(uri, str) and uri:
            return _read_registry(service, uri)
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
