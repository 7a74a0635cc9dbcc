"""Virtual media: list the slots, insert an image by URL, eject.

Where the slots live is a vendor difference: the Redfish 2021 schema (and newer iDRAC
firmware, 6.x on) puts the VirtualMedia collection under the ComputerSystem; older iDRACs,
iLO, Supermicro and OpenBMC put it under the Manager. We use the system's collection when it
has one, else those of the system's managers.

Inserting uses the InsertMedia action when the slot advertises it (through sushy, which
knows the payload quirks of several vendors), else a PATCH of ``Image`` and ``Inserted``
(VirtualMedia v1.3+ makes them writable; the DMTF mockups and Lenovo XCC work that way).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sushy.resources.manager.virtual_media import VirtualMedia as SushyVirtualMedia

from edge_gateway.drivers.interfaces import MediaInterface, VirtualMedia
from edge_gateway.drivers.redfish.documents import Document, link
from edge_gateway.drivers.redfish.service import RedfishService, Refusal
from edge_gateway.drivers.redfish.tables import CD_MEDIA_TYPES

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Slot:
    path: str  # the member link we followed
    document: Document
    etag: str | None

    def has_action(self, name: str) -> bool:
        return bool(link_target(self.document, name))

    def as_media(self) -> VirtualMedia:
        image = self.document.get("Image") or None  # sushy-tools reports "" when empty
        inserted = self.document.get("Inserted")
        if inserted is None:
            # Some BMCs leave Inserted null: an image means inserted, unless the slot says
            # it is not connected (an ejected slot that still names its last image).
            inserted = image is not None and self.document.get("ConnectedVia") != "NotConnected"
        return VirtualMedia(slot=self.path,
                            media_types=tuple(self.document.get("MediaTypes") or ()),
                            inserted=bool(inserted), image=image if inserted else None)


def link_target(document: Document, action: str) -> str | None:
    target = ((document.get("Actions") or {}).get(action) or {}).get("target")
    return target if isinstance(target, str) and target else None


def collections(service: RedfishService, system: Document) -> list[str]:
    """The VirtualMedia collections of the system: its own, else its managers'."""
    own = link(system, "VirtualMedia")
    if own:
        return [own]
    found: list[str] = []
    for manager in service.manager_paths(system):
        document = service.optional_json(manager)
        path = link(document, "VirtualMedia")
        if path and path not in found:
            found.append(path)
    return found


class RedfishMedia(MediaInterface):
    """VirtualMedia slots of the system, else of its managers."""

    _service: RedfishService

    def get_virtual_media(self) -> list[VirtualMedia]:
        with self._service.call("read virtual media"):
            return [slot.as_media() for slot in _slots(self._service)]

    def insert_media(self, image: str, slot: str | None = None) -> None:
        """Insert ``image`` into ``slot`` (or the first CD/DVD slot); no-op if it is there."""
        with self._service.call(f"insert media {image}"):
            chosen = _pick(_slots(self._service), slot)
            current = chosen.as_media()
            if current.inserted and current.image == image:
                LOG.debug("BMC %s: %s already holds %s", self._service.address, chosen.path,
                          image)
                return
            if current.inserted:
                raise Refusal(f"{chosen.path} holds {current.image}; eject it first")
            LOG.info("BMC %s: insert %s into %s", self._service.address, image, chosen.path)
            if chosen.has_action("#VirtualMedia.InsertMedia"):
                _sushy_slot(self._service, chosen.path).insert_media(image)
            else:
                self._service.patch(chosen.path, {"Image": image, "Inserted": True,
                                                  "WriteProtected": True}, chosen.etag)

    def eject_media(self, slot: str) -> None:
        """Eject whatever ``slot`` holds; no-op if it holds nothing."""
        with self._service.call(f"eject media from {slot}"):
            chosen = _pick(_slots(self._service), slot)
            if not chosen.as_media().inserted:
                LOG.debug("BMC %s: %s holds nothing", self._service.address, chosen.path)
                return
            LOG.info("BMC %s: eject %s", self._service.address, chosen.path)
            if chosen.has_action("#VirtualMedia.EjectMedia"):
                _sushy_slot(self._service, chosen.path).eject_media()
            else:
                self._service.patch(chosen.path, {"Image": None, "Inserted": False},
                                    chosen.etag)


def offered(service: RedfishService, system: Document) -> bool:
    return bool(collections(service, system))


def _slots(service: RedfishService) -> list[_Slot]:
    system = service.system().json
    paths = collections(service, system)
    if not paths:
        raise Refusal("neither the system nor its managers have VirtualMedia")
    slots = []
    for collection in paths:
        for member in service.member_paths(collection):
            response = service.get(member)
            document = response.json()
            if not isinstance(document, dict):
                raise Refusal(f"{member} is not a JSON object")
            slots.append(_Slot(member, document, response.headers.get("ETag")))
    return slots


def _sushy_slot(service: RedfishService, path: str) -> SushyVirtualMedia:
    root = service.root()
    return SushyVirtualMedia(service.connector, path,
                             redfish_version=root.redfish_version, root=root)


def _pick(slots: list[_Slot], wanted: str | None) -> _Slot:
    if wanted:
        for slot in slots:
            if wanted.rstrip("/") in (slot.path.rstrip("/"), slot.document.get("Id")):
                return slot
        raise Refusal(f"no virtual media slot {wanted}; the BMC has "
                      f"{', '.join(s.path for s in slots) or 'none'}")
    for slot in slots:
        if CD_MEDIA_TYPES & set(slot.document.get("MediaTypes") or ()):
            return slot
    raise Refusal("no virtual media slot takes a CD or DVD image; the slots take " +
                  "; ".join(f"{s.path}: {'/'.join(s.document.get('MediaTypes') or ())}"
                            for s in slots))
