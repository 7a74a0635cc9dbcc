"""Virtual media: insert an image by URL (the BMC really fetches it), eject.

Both ways a BMC offers it work on every slot: the InsertMedia/EjectMedia actions where the
slot advertises them, and a PATCH of ``Image``/``Inserted`` (VirtualMedia v1.3+), unless
``actions_only`` (iDRAC, iLO: the properties are read-only). What an insert into a slot that
holds an image does, and how an ejected slot reads, follow the vendor (``INSERT_RULES``,
``EJECT_STYLES``; docs/vendors.md).
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit

from edgeplane_dev.redfish_sim.replies import RedfishError
from edgeplane_dev.redfish_sim.resources import Resources

FETCH_TIMEOUT = 10.0
FETCH_BYTES = 64 * 1024  # enough to know the image is there

# An insert into a slot that holds an image: "refuse_other" answers 409 if it holds another
# image; "refuse" (iDRAC: "already connected") answers 409 whatever it holds; "replace" mounts
# the new image over the old one.
INSERT_RULES = ("refuse_other", "refuse", "replace")
# An ejected slot reads Inserted false and no Image ("cleared"), or Inserted null and
# ConnectedVia NotConnected with the last Image still named ("null").
EJECT_STYLES = ("cleared", "null")


def fetch_head(url: str, what: str) -> bytes:
    """The first bytes of ``url``, as a BMC checks an image before it mounts or flashes it."""
    if urlsplit(url).scheme not in ("http", "https"):
        raise RedfishError(400, "ActionParameterValueFormatError",
                           f"The {what} {url!r} is not an http(s) URL.")
    try:
        with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT) as answer:  # noqa: S310
            return answer.read(FETCH_BYTES)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise RedfishError(400, "ResourceAtUriUnauthorized"
                           if getattr(exc, "code", None) in (401, 403)
                           else "ResourceAtUriInUnknownFormat",
                           f"The {what} {url} could not be fetched: {reason}.") from None


class Media:
    def __init__(self, resources: Resources, insert_rule: str = "refuse_other",
                 eject_style: str = "cleared", actions_only: bool = False) -> None:
        self.resources = resources
        self.insert_rule = insert_rule
        self.eject_style = eject_style
        self.actions_only = actions_only

    def insert(self, slot: str, body: dict[str, Any]) -> None:
        image = body.get("Image")
        if not isinstance(image, str) or not image:
            raise RedfishError(400, "ActionParameterMissing",
                               "InsertMedia requires the parameter Image.")
        current = self.resources.get_raw(slot) or {}
        held = current.get("Image") if current.get("Inserted") else None
        if held and self.insert_rule == "refuse":
            raise RedfishError(409, "ResourceInUse",
                               f"{slot} is already connected (to {held}); eject it first.")
        if held and held != image and self.insert_rule == "refuse_other":
            raise RedfishError(409, "ResourceInUse",
                               f"{slot} already holds {held}; eject it first.")
        fetch_head(image, "image")
        document = self.resources.edit(slot)
        document.update(Image=image, ImageName=os.path.basename(urlsplit(image).path),
                        Inserted=True, ConnectedVia="URI",
                        WriteProtected=bool(body.get("WriteProtected", True)))

    def eject(self, slot: str) -> None:
        document = self.resources.edit(slot)
        if self.eject_style == "null":
            document.update(Inserted=None, ConnectedVia="NotConnected")
        else:
            document.update(Image=None, ImageName=None, Inserted=False,
                            ConnectedVia="NotConnected")

    def patch(self, slot: str, body: dict[str, Any]) -> None:
        unknown = set(body) - {"Image", "Inserted", "WriteProtected", "TransferProtocolType",
                               "UserName", "Password", "TransferMethod"}
        if unknown:
            raise RedfishError(400, "PropertyNotWritable",
                               f"The properties {', '.join(sorted(unknown))} of {slot} "
                               "cannot be written.")
        if self.actions_only and {"Image", "Inserted"} & set(body):
            raise RedfishError(400, "PropertyNotWritable",
                               f"The properties Image and Inserted of {slot} are read only: "
                               "use the actions InsertMedia and EjectMedia.")
        if body.get("Image") and body.get("Inserted", True):
            self.insert(slot, body)
        elif "Image" in body and not body["Image"] or body.get("Inserted") is False:
            self.eject(slot)
        elif "WriteProtected" in body:
            self.resources.edit(slot)["WriteProtected"] = bool(body["WriteProtected"])
