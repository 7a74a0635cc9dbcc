"""Mockups of other shapes than the shipped one, written by the tests that need them."""

from __future__ import annotations

import json
from pathlib import Path


def two_system_mockup(directory: Path) -> Path:
    """A BMC of another shape: two systems with other ids, no Bios, virtual media under
    the manager with InsertMedia/EjectMedia actions, no UpdateService."""

    def write(relative: str, document: dict) -> None:
        path = directory / relative / "index.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(document))

    base = "/redfish/v1"
    write("", {"@odata.id": f"{base}/", "Id": "Root", "Systems": {"@odata.id": f"{base}/Systems"},
               "Managers": {"@odata.id": f"{base}/Managers"},
               "SessionService": {"@odata.id": f"{base}/SessionService"}})
    write("SessionService", {"@odata.id": f"{base}/SessionService",
                             "Sessions": {"@odata.id": f"{base}/SessionService/Sessions"}})
    write("SessionService/Sessions", {"@odata.id": f"{base}/SessionService/Sessions",
                                      "Members": []})
    members = [{"@odata.id": f"{base}/Systems/node-{n}"} for n in "ab"]
    write("Systems", {"@odata.id": f"{base}/Systems", "Members": members})
    for n in "ab":
        path = f"{base}/Systems/node-{n}"
        write(f"Systems/node-{n}", {
            "@odata.id": path, "Id": f"node-{n}", "Manufacturer": "Other", "PowerState": "Off",
            "Boot": {"BootSourceOverrideTarget": "None", "BootSourceOverrideEnabled": "Disabled"},
            "Actions": {"#ComputerSystem.Reset": {"target": f"{path}/Actions/Reset"}},
            "Links": {"ManagedBy": [{"@odata.id": f"{base}/Managers/mgr"}]},
        })
    write("Managers", {"@odata.id": f"{base}/Managers",
                       "Members": [{"@odata.id": f"{base}/Managers/mgr"}]})
    write("Managers/mgr", {"@odata.id": f"{base}/Managers/mgr", "Id": "mgr",
                           "VirtualMedia": {"@odata.id": f"{base}/Managers/mgr/VM"}})
    write("Managers/mgr/VM", {"@odata.id": f"{base}/Managers/mgr/VM",
                              "Members": [{"@odata.id": f"{base}/Managers/mgr/VM/usb0"}]})
    slot = f"{base}/Managers/mgr/VM/usb0"
    write("Managers/mgr/VM/usb0", {
        "@odata.id": slot, "Id": "usb0", "Name": "Virtual USB", "MediaTypes": ["CD", "USBStick"],
        "Inserted": False, "Image": None,
        "Actions": {"#VirtualMedia.InsertMedia": {"target": f"{slot}/Actions/Insert"},
                    "#VirtualMedia.EjectMedia": {"target": f"{slot}/Actions/Eject"}}})
    return directory
