"""Vendor layouts of virtual media, applied to one BMC's resources when it starts.

Real BMCs differ in where they list their virtual media slots, which slots they have, and
how a client inserts an image (docs/vendors.md). A ``BmcOptions`` field picks each of these;
its default keeps the mockup as it is. Nothing here assumes a mockup's ids: the collections
are found by following the links, as a client finds them.
"""

from __future__ import annotations

import json
import os
from urllib.parse import urlsplit

from edgeplane_dev.redfish_sim.resources import ROOT, Document, Resources

# Where the VirtualMedia collection is listed: as in the mockup; under the ComputerSystem
# (Redfish 2021+, iDRAC 6+); under the Manager (older iDRAC, iLO, Supermicro, OpenBMC).
MEDIA_PLACES = ("mockup", "system", "manager")
# How an image is inserted: as in the mockup; only by PATCH of Image/Inserted, no actions
# (Lenovo XCC); only by the InsertMedia/EjectMedia actions (iDRAC, iLO); both.
MEDIA_APIS = ("mockup", "patch", "action", "both")
MEDIA_TYPES = ("CD", "DVD", "Floppy", "USBStick", "RemovableDisk")
_INSERT, _EJECT = "#VirtualMedia.InsertMedia", "#VirtualMedia.EjectMedia"
_SLOT_NAMES = {"CD": "CD", "DVD": "CD", "Floppy": "Floppy", "USBStick": "USB",
               "RemovableDisk": "Removable"}


def slot_types(spec: str) -> tuple[str, ...]:
    """``"CD/DVD"`` -> ``("CD", "DVD")``; ValueError naming an unknown media type."""
    types = tuple(part.strip() for part in spec.split("/") if part.strip())
    unknown = [t for t in types if t not in MEDIA_TYPES]
    if not types or unknown:
        raise ValueError(f"media slot {spec!r}: use media types from {', '.join(MEDIA_TYPES)}"
                         " joined by '/', e.g. 'CD/DVD' or 'USBStick'")
    return types


def collections(resources: Resources, systems: list[str]) -> dict[str, str]:
    """The VirtualMedia collections, by the system or manager that links to each."""
    root = resources.get_raw(ROOT) or {}
    owners = systems + resources.members(resources.link(root, "Managers"))
    found = {}
    for owner in owners:
        collection = resources.link(resources.get_raw(owner), "VirtualMedia")
        if collection and collection in resources:
            found[owner] = collection
    return found


def slots(resources: Resources, systems: list[str]) -> list[str]:
    return [slot for collection in collections(resources, systems).values()
            for slot in resources.members(collection)]


def shape_media(resources: Resources, systems: list[str], place: str, api: str,
                kinds: tuple[str, ...], stale_image: str | None) -> None:
    """Lay out the virtual media as asked: its slots (``kinds``, each ``"CD/DVD"``-style;
    empty: the mockup's), where they are listed, how they take an image, and a ``stale_image``
    every slot starts holding (left by an earlier install)."""
    if kinds:
        _replace_slots(resources, systems, kinds)
    if place != "mockup":
        _place(resources, systems, place)
    for slot in slots(resources, systems):
        document = resources.edit(slot)
        if api != "mockup":
            _set_api(slot, document, api)
        if stale_image:
            document.update(Image=stale_image, Inserted=True, ConnectedVia="URI",
                            ImageName=os.path.basename(urlsplit(stale_image).path))


def _replace_slots(resources: Resources, systems: list[str], kinds: tuple[str, ...]) -> None:
    found = collections(resources, systems)
    if found:
        collection = next(iter(found.values()))
        for member in resources.members(collection):
            resources.remove_member(collection, member)
    elif systems:
        collection = f"{systems[0]}/VirtualMedia"
        resources.put(collection, {"@odata.type": "#VirtualMediaCollection."
                                   "VirtualMediaCollection", "@odata.id": collection,
                                   "Name": "Virtual Media Services", "Members": [],
                                   "Members@odata.count": 0})
        resources.edit(systems[0])["VirtualMedia"] = {"@odata.id": collection}
    else:
        return
    counts: dict[str, int] = {}
    for spec in kinds:
        types = slot_types(spec)
        name = _SLOT_NAMES[types[0]]
        counts[name] = counts.get(name, 0) + 1
        slot_id = f"{name}{counts[name]}"
        path = f"{collection}/{slot_id}"
        resources.add_member(collection, path, {
            "@odata.type": "#VirtualMedia.v1_6_5.VirtualMedia", "@odata.id": path,
            "Id": slot_id, "Name": f"Virtual {types[0]}", "MediaTypes": list(types),
            "Image": None, "ImageName": None, "Inserted": False,
            "ConnectedVia": "NotConnected", "WriteProtected": True})


def _place(resources: Resources, systems: list[str], place: str) -> None:
    root = resources.get_raw(ROOT) or {}
    managers = resources.members(resources.link(root, "Managers"))
    for owner, collection in collections(resources, systems).items():
        if place == "manager" and owner in systems:
            target = resources.link(resources.get_raw(owner), "Links", "ManagedBy") or \
                (managers[0] if managers else None)
        elif place == "system" and owner not in systems:
            target = resources.link(resources.get_raw(owner), "Links",
                                    "ManagerForServers") or (systems[0] if systems else None)
        else:
            continue
        if target is None or resources.link(resources.get_raw(target), "VirtualMedia"):
            continue
        moved = f"{target}/VirtualMedia"
        _move(resources, collection, moved)
        resources.edit(owner).pop("VirtualMedia", None)
        resources.edit(target)["VirtualMedia"] = {"@odata.id": moved}


def _move(resources: Resources, old: str, new: str) -> None:
    """Every document at ``old`` and below, to ``new``, its links rewritten."""
    for path in [p for p in resources.paths() if p == old or p.startswith(old + "/")]:
        document = resources.get(path) or {}
        resources.put(new + path[len(old):], json.loads(json.dumps(document).replace(old, new)))
        resources.delete(path)


def _set_api(slot: str, document: Document, api: str) -> None:
    actions = document.setdefault("Actions", {})
    if api == "patch":
        actions.pop(_INSERT, None)
        actions.pop(_EJECT, None)
    else:
        actions.setdefault(_INSERT, {"target": f"{slot}/Actions/VirtualMedia.InsertMedia"})
        actions.setdefault(_EJECT, {"target": f"{slot}/Actions/VirtualMedia.EjectMedia"})
    if not actions:
        document.pop("Actions")
