"""Virtual media: insert an image by URL (the BMC really fetches it), eject.

Both ways a BMC offers it work on every slot: the InsertMedia/EjectMedia actions where the
slot advertises them, and a PATCH of ``Image``/``Inserted`` (VirtualMedia v1.3+).
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
    def __init__(self, resources: Resources) -> None:
        self.resources = resources

    def insert(self, slot: str, body: dict[str, Any]) -> None:
        image = body.get("Image")
        if not isinstance(image, str) or not image:
            raise RedfishError(400, "ActionParameterMissing",
                               "InsertMedia requires the parameter Image.")
        current = self.resources.get_raw(slot) or {}
        if current.get("Inserted") and current.get("Image") not in (None, "", image):
            raise RedfishError(409, "ResourceInUse",
                               f"{slot} already holds {current.get('Image')}; eject it first.")
        fetch_head(image, "image")
        document = self.resources.edit(slot)
        document.update(Image=image, ImageName=os.path.basename(urlsplit(image).path),
                        Inserted=True, ConnectedVia="URI",
                        WriteProtected=bool(body.get("WriteProtected", True)))

    def eject(self, slot: str) -> None:
        document = self.resources.edit(slot)
        document.update(Image=None, ImageName=None, Inserted=False,
                        ConnectedVia="NotConnected")

    def patch(self, slot: str, body: dict[str, Any]) -> None:
        unknown = set(body) - {"Image", "Inserted", "WriteProtected", "TransferProtocolType",
                               "UserName", "Password", "TransferMethod"}
        if unknown:
            raise RedfishError(400, "PropertyNotWritable",
                               f"The properties {', '.join(sorted(unknown))} of {slot} "
                               "cannot be written.")
        if body.get("Image") and body.get("Inserted", True):
            self.insert(slot, body)
        elif "Image" in body and not body["Image"] or body.get("Inserted") is False:
            self.eject(slot)
        elif "WriteProtected" in body:
            self.resources.edit(slot)["WriteProtected"] = bool(body["WriteProtected"])
