"""media.insert and media.eject (Redfish virtual media), and the choice of a slot: the
first CD/DVD slot for an installer, ``removable_slot`` for a second, small image (a seed).

Some BMCs refuse an image URL with a query string or longer than 255 characters; the site
cache's URLs are short and plain, so only a plain URL given by the plan is checked, and
warned about in the outcome, not refused (the BMC at hand may take it).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from edge_gateway.drivers.base import VirtualMedia, interface
from edge_gateway.tasks.artifacts import image_url
from edge_gateway.tasks.context import Outcome, TaskContext
from edgeplane.protocol import BootMode, BootTarget, Capability

CD_TYPES = frozenset({"CD", "DVD"})
REMOVABLE_TYPES = frozenset({"USBStick", "RemovableDisk", "Floppy"})
URL_LENGTH_LIMIT = 255


def media_insert(ctx: TaskContext, params: dict[str, Any]) -> Outcome:
    image, wanted_slot = image_url(ctx, params, per_machine=True), params.get("slot")
    warnings = url_warnings(image) if params.get("sha256") is None else []
    media = interface(ctx.driver, Capability.MEDIA)
    slot = pick_slot(ctx, media.get_virtual_media(), wanted_slot)
    changed = False
    if not (slot.inserted and slot.image == image):
        if slot.inserted:
            media.eject_media(slot.slot)
        media.insert_media(image, slot.slot)
        after = pick_slot(ctx, media.get_virtual_media(), slot.slot)
        if not (after.inserted and after.image == image):
            raise ctx.fail(f"insert {image} into {slot.slot}",
                           f"reads back inserted={after.inserted} image={after.image!r}")
        changed = True
    message = f"{image} in {slot.slot}" if changed else f"{image} was already in {slot.slot}"
    message += "".join(f"; warning: {warning}" for warning in warnings)
    if params.get("boot"):
        boot = interface(ctx.driver, Capability.BOOT)
        if boot.get_boot_override().target != BootTarget.CD:
            boot.set_boot_override(BootTarget.CD, BootMode.ONCE)
            changed = True
        message += "; next boot: cd (once)"
    data: dict[str, Any] = {"slot": slot.slot, "image": image}
    if warnings:
        data["warnings"] = warnings
    return Outcome(changed=changed, message=message, data=data)


def url_warnings(url: str) -> list[str]:
    """What in an image URL some BMCs refuse: a query string, more than 255 characters."""
    warnings = []
    if urlsplit(url).query or "&" in url:
        warnings.append("the image URL has a query string ('?' or '&'), which some BMCs "
                        "refuse")
    if len(url) > URL_LENGTH_LIMIT:
        warnings.append(f"the image URL is {len(url)} characters long; some BMCs refuse "
                        f"more than {URL_LENGTH_LIMIT}")
    return warnings


def removable_slot(ctx: TaskContext, slots: list[VirtualMedia],
                   besides: str | None = None) -> VirtualMedia:
    """The slot for a second, small image beside the installer in slot ``besides`` (default:
    the first CD/DVD slot): the first slot taking a USBStick, RemovableDisk or Floppy, else
    another CD/DVD slot. A BmcError naming every slot and its media types if none fits."""
    if besides is None:
        besides = next((s.slot for s in slots if CD_TYPES & set(s.media_types)), None)
    for slot in slots:
        if slot.slot != besides and REMOVABLE_TYPES & set(slot.media_types):
            return slot
    for slot in slots:
        if slot.slot != besides and CD_TYPES & set(slot.media_types):
            return slot
    raise ctx.fail("virtual media", "no slot for a second image: none takes a USBStick, "
                   "RemovableDisk or Floppy, and no second CD/DVD slot; slots: "
                   + _listing(slots))


def media_eject(ctx: TaskContext, params: dict[str, Any]) -> Outcome:
    media = interface(ctx.driver, Capability.MEDIA)
    slots = media.get_virtual_media()
    if params.get("slot"):
        slots = [pick_slot(ctx, slots, params["slot"])]
    ejected = [s.slot for s in slots if s.inserted]
    for slot in ejected:
        media.eject_media(slot)
    still = [s.slot for s in media.get_virtual_media() if s.slot in ejected and s.inserted]
    if still:
        raise ctx.fail("eject media", f"still inserted after ejecting: {', '.join(still)}")
    if not ejected:
        return Outcome(changed=False, message="no media inserted")
    return Outcome(changed=True, message=f"ejected {', '.join(ejected)}",
                   data={"ejected": ejected})


def pick_slot(ctx: TaskContext, slots: list[VirtualMedia], wanted: str | None) -> VirtualMedia:
    """The slot ``wanted`` (its id or last path segment), else the first CD/DVD slot (slots
    for other media are skipped); a BmcError naming the slots if there is none."""
    if not slots:
        raise ctx.fail("virtual media", "the BMC has no virtual media slots")
    if wanted:
        for slot in slots:
            if wanted in (slot.slot, slot.slot.rstrip("/").rsplit("/", 1)[-1]):
                return slot
        raise ctx.fail("virtual media", f"no slot {wanted!r}; it has "
                       f"{', '.join(s.slot for s in slots)}")
    for slot in slots:
        if CD_TYPES & set(slot.media_types):
            return slot
    raise ctx.fail("virtual media", "no slot takes a CD or DVD image; slots: " + _listing(slots))


def _listing(slots: list[VirtualMedia]) -> str:
    return ", ".join(f"{s.slot} ({'/'.join(s.media_types) or 'no media types'})"
                     for s in slots) or "none"
