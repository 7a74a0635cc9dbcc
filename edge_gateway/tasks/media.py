"""media.insert and media.eject (Redfish virtual media)."""

from __future__ import annotations

from typing import Any

from edge_gateway.drivers.base import VirtualMedia, interface
from edge_gateway.tasks.artifacts import image_url
from edge_gateway.tasks.context import Outcome, TaskContext
from edgeplane.protocol import BootMode, BootTarget, Capability

CD_TYPES = frozenset({"CD", "DVD"})


def media_insert(ctx: TaskContext, params: dict[str, Any]) -> Outcome:
    image, wanted_slot = image_url(ctx, params), params.get("slot")
    media = interface(ctx.driver, Capability.MEDIA)
    slot = _pick_slot(ctx, media.get_virtual_media(), wanted_slot)
    changed = False
    if not (slot.inserted and slot.image == image):
        if slot.inserted:
            media.eject_media(slot.slot)
        media.insert_media(image, slot.slot)
        after = _pick_slot(ctx, media.get_virtual_media(), slot.slot)
        if not (after.inserted and after.image == image):
            raise ctx.fail(f"insert {image} into {slot.slot}",
                           f"reads back inserted={after.inserted} image={after.image!r}")
        changed = True
    message = f"{image} in {slot.slot}" if changed else f"{image} was already in {slot.slot}"
    if params.get("boot"):
        boot = interface(ctx.driver, Capability.BOOT)
        if boot.get_boot_override().target != BootTarget.CD:
            boot.set_boot_override(BootTarget.CD, BootMode.ONCE)
            changed = True
        message += "; next boot: cd (once)"
    return Outcome(changed=changed, message=message, data={"slot": slot.slot, "image": image})


def media_eject(ctx: TaskContext, params: dict[str, Any]) -> Outcome:
    media = interface(ctx.driver, Capability.MEDIA)
    slots = media.get_virtual_media()
    if params.get("slot"):
        slots = [_pick_slot(ctx, slots, params["slot"])]
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


def _pick_slot(ctx: TaskContext, slots: list[VirtualMedia], wanted: str | None) -> VirtualMedia:
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
    raise ctx.fail("virtual media", "no slot takes a CD or DVD image; slots: " +
                   ", ".join(f"{s.slot} ({'/'.join(s.media_types)})" for s in slots))
