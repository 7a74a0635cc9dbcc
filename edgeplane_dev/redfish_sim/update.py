"""UpdateService.SimpleUpdate: a Task that progresses, then a new firmware version.

The BMC fetches the image first (an unreachable URL fails the task, as on a real BMC). The
version it installs is read from the image's file name, ``NAME-VERSION.EXT`` (for example
``bmc-1.46.0.bin``), or a ``version=`` query parameter; the component is the first of the
``Targets``, else the updateable FirmwareInventory member named in the file name, else the
first updateable one. The task runs ``duration`` seconds; ``stall_at`` (a percentage) makes
it stop there forever, like a wedged BMC.

How the task monitor answers is a vendor difference, chosen by ``monitor_style``:
``standard`` (202 with the Task while running, 200 with the Task when done), ``always-200``
(200 with the Task throughout) or ``empty-202`` (202 with no body while running, 204 when
done).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from edgeplane_dev.redfish_sim.media import fetch_head
from edgeplane_dev.redfish_sim.replies import RedfishError, Reply, bad_value
from edgeplane_dev.redfish_sim.resources import Document, Resources, normalize
from edgeplane_dev.redfish_sim.system import now

MONITOR_STYLES = ("standard", "always-200", "empty-202")
_EXTENSIONS = re.compile(r"\.(bin|img|fwpkg|hpm|exe|zip|tar|gz|tgz|iso|efi|pldm|cap|rom)$",
                         re.IGNORECASE)
_VERSION = re.compile(r"[-_]v?(?P<version>\d[\w.]*)$")


def image_version(url: str) -> str | None:
    query = parse_qs(urlsplit(url).query).get("version")
    if query:
        return query[0]
    stem = urlsplit(url).path.rsplit("/", 1)[-1]
    while _EXTENSIONS.search(stem):
        stem = _EXTENSIONS.sub("", stem)
    match = _VERSION.search(stem)
    return match["version"] if match else None


@dataclass
class _Job:
    task: str
    component: str | None  # FirmwareInventory member path
    version: str | None
    started: float
    failure: str | None  # why the task ends in Exception


class Updates:
    def __init__(self, resources: Resources, clock: Callable[[], float], duration: float,
                 monitor_style: str = "standard", stall_at: int | None = None) -> None:
        if monitor_style not in MONITOR_STYLES:
            raise ValueError(f"monitor style {monitor_style!r}: use one of "
                             f"{', '.join(MONITOR_STYLES)}")
        self.resources = resources
        self.clock = clock
        self.duration = duration
        self.monitor_style = monitor_style
        self.stall_at = stall_at
        self._jobs: dict[str, _Job] = {}  # monitor path -> job
        root = resources.get_raw("/redfish/v1") or {}
        self.update_service = resources.link(root, "UpdateService")
        task_service = resources.get_raw(resources.link(root, "Tasks") or "")
        self.tasks = resources.link(task_service, "Tasks")

    def is_monitor(self, path: str) -> bool:
        return normalize(path) in self._jobs

    # --- SimpleUpdate --------------------------------------------------------------

    def simple_update(self, body: dict[str, Any], info: Document | None) -> Reply:
        image = body.get("ImageURI")
        if not isinstance(image, str) or not image:
            raise RedfishError(400, "ActionParameterMissing",
                               "The action SimpleUpdate requires the parameter ImageURI.")
        protocol = body.get("TransferProtocol")
        allowed = _allowed(info, "TransferProtocol")
        if protocol is not None and allowed is not None and protocol not in allowed:
            raise bad_value("TransferProtocol", protocol, allowed)
        inventory = self._inventory()
        targets = body.get("Targets") or []
        if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
            raise RedfishError(400, "ActionParameterValueTypeError",
                               "The parameter Targets must be a list of URIs.")
        for target in targets:
            if normalize(target) not in inventory:
                raise RedfishError(400, "ActionParameterValueNotInList",
                                   f"The target {target} is not a member of the firmware "
                                   "inventory.")
        if self.tasks is None:
            raise RedfishError(500, "InternalError", "The service has no TaskService.")
        failure = None
        try:
            fetch_head(image, "image")
        except RedfishError as exc:
            failure = exc.message
        version = image_version(image)
        if failure is None and version is None:
            failure = (f"The image {image} is not a firmware package this BMC recognizes: "
                       "its name carries no version (NAME-VERSION.bin).")
        component = (normalize(targets[0]) if targets else self._component_for(image,
                                                                               inventory))
        task = self._new_task(image)
        monitor = f"{task}/Monitor"
        self._jobs[monitor] = _Job(task, component, version, self.clock(), failure)
        self.resources.edit(task)["TaskMonitor"] = monitor
        return Reply(202, self.resources.get(task), {"Location": monitor})

    def _inventory(self) -> dict[str, Document]:
        service = self.resources.get_raw(self.update_service or "") or {}
        collection = self.resources.link(service, "FirmwareInventory")
        return {path: self.resources.get_raw(path) or {}
                for path in self.resources.members(collection)}

    def _component_for(self, image: str, inventory: dict[str, Document]) -> str | None:
        name = urlsplit(image).path.rsplit("/", 1)[-1].lower()
        updateable = [p for p, d in inventory.items() if d.get("Updateable")]
        for path in updateable:
            if str(inventory[path].get("Id", "")).lower() in name:
                return path
        return updateable[0] if updateable else None

    def _new_task(self, image: str) -> str:
        assert self.tasks is not None
        taken = {p.rsplit("/", 1)[-1] for p in self.resources.members(self.tasks)}
        number = 1000
        while str(number) in taken:
            number += 1
        path = f"{self.tasks}/{number}"
        self.resources.add_member(self.tasks, path, {
            "@odata.type": "#Task.v1_7_4.Task", "@odata.id": path, "Id": str(number),
            "Name": f"Firmware update from {image}", "TaskState": "Running",
            "TaskStatus": "OK", "StartTime": now(), "PercentComplete": 0, "Messages": [],
        })
        return path

    # --- progress ------------------------------------------------------------------

    def settle(self) -> None:
        for job in self._jobs.values():
            task = self.resources.get_raw(job.task) or {}
            if task.get("TaskState") != "Running":
                continue
            elapsed = self.clock() - job.started
            percent = 100 if self.duration <= 0 else min(100, int(100 * elapsed / self.duration))
            if self.stall_at is not None:
                percent = min(percent, self.stall_at)
            if job.failure and percent >= 10:
                self._finish(job, "Exception", "Critical", job.failure)
            elif percent >= 100:
                self._install(job)
                self._finish(job, "Completed", "OK",
                             f"The firmware was updated to {job.version}.")
            else:
                self.resources.edit(job.task)["PercentComplete"] = percent

    def _install(self, job: _Job) -> None:
        if job.component is None or job.version is None:
            return
        component = self.resources.edit(job.component)
        old = component.get("Version")
        component["Version"] = job.version
        # The BMC's own firmware also shows in its Manager (and a BIOS in the system).
        identity = f"{component.get('Id', '')} {component.get('Name', '')}".upper()
        for path in self.resources.paths():
            document = self.resources.get_raw(path) or {}
            if "BMC" in identity and document.get("FirmwareVersion") == old \
                    and "Manager." in str(document.get("@odata.type")):
                self.resources.edit(path)["FirmwareVersion"] = job.version
            if "BIOS" in identity and document.get("BiosVersion") == old:
                self.resources.edit(path)["BiosVersion"] = job.version

    def _finish(self, job: _Job, state: str, health: str, message: str) -> None:
        task = self.resources.edit(job.task)
        task.update(TaskState=state, TaskStatus=health, EndTime=now(),
                    PercentComplete=100 if state == "Completed" else task["PercentComplete"])
        task["Messages"] = [{"MessageId": "Update.1.0.UpdateSuccessful" if state == "Completed"
                             else "Update.1.0.ApplyFailed", "Message": message,
                             "Severity": health}]

    def monitor(self, path: str) -> Reply:
        job = self._jobs[normalize(path)]
        task = self.resources.get(job.task) or {}
        running = task.get("TaskState") == "Running"
        if self.monitor_style == "always-200":
            return Reply(200, task)
        if self.monitor_style == "empty-202":
            if running:
                return Reply(202, None, {"Location": normalize(path)})
            if task.get("TaskState") != "Completed":
                return RedfishError(500, "InternalError",
                                    "; ".join(m["Message"] for m in task["Messages"])).reply()
            return Reply(204)
        return Reply(202 if running else 200, task,
                     {"Location": normalize(path)} if running else {})


def _allowed(info: Document | None, name: str) -> list[str] | None:
    for parameter in (info or {}).get("Parameters") or []:
        if isinstance(parameter, dict) and parameter.get("Name") == name:
            values = parameter.get("AllowableValues")
            return list(values) if isinstance(values, list) else None
    return None
