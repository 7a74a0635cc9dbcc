"""Firmware: the inventory, SimpleUpdate by image URL, and following the BMC's task.

Raw documents rather than sushy's ``UpdateService``: sushy refuses an UpdateService without
Actions (which breaks reading the inventory) and turns the SimpleUpdate answer into a
TaskMonitor that hides what we need to report (the 202-vs-200 answers below).

How a BMC reports a running update differs by vendor. SimpleUpdate answers 202 with a task
monitor in ``Location`` (the standard), or 200/202 with a Task in the body and no Location
(we then follow the Task's ``@odata.id``). The monitor then answers 202 while the task runs
(an empty body on some BMCs, a Task on others) and, once it is done, either 200 with the
Task (iDRAC, OpenBMC, the DMTF emulator) or the operation's own final answer (204, or an
error status when the update failed), as the Redfish spec describes for task monitors.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

import requests
from sushy import exceptions as sushy_exc

from edge_gateway.drivers.interfaces import (
    FirmwareComponent,
    FirmwareInterface,
    FirmwareJob,
    JobState,
)
from edge_gateway.drivers.redfish.documents import Document, link
from edge_gateway.drivers.redfish.service import RedfishService, Refusal, http_detail
from edge_gateway.drivers.redfish.tables import JOB_STATE_FROM_TASK

LOG = logging.getLogger(__name__)

_SIMPLE_UPDATE = "#UpdateService.SimpleUpdate"
# A monitor answering these is the BMC failing, not the update: the caller may ask again.
_BMC_TROUBLE = frozenset({401, 403, 404, 410, 502, 503, 504})


class RedfishFirmware(FirmwareInterface):
    """The UpdateService: FirmwareInventory, SimpleUpdate and the task monitors."""

    _service: RedfishService

    def get_firmware(self) -> list[FirmwareComponent]:
        with self._service.call("read firmware inventory"):
            collection = link(_update_service(self._service), "FirmwareInventory")
            if not collection:
                raise Refusal("the UpdateService has no FirmwareInventory")
            return [FirmwareComponent(
                id=member.get("@odata.id") or "",
                name=str(member.get("Name") or member.get("Id") or ""),
                version=member.get("Version"),
                updateable=bool(member.get("Updateable")),
            ) for member in self._service.members(collection)]

    def start_firmware_update(self, image: str, targets: list[str] | None = None) -> FirmwareJob:
        with self._service.call(f"start firmware update from {image}"):
            action = (_update_service(self._service).get("Actions") or {}).get(_SIMPLE_UPDATE)
            if not isinstance(action, dict) or not action.get("target"):
                raise Refusal("the UpdateService offers no SimpleUpdate action")
            body: dict[str, Any] = {"ImageURI": image}
            parameters = _parameters(self._service, action)
            protocol = urlsplit(image).scheme.upper()
            allowed = parameters.get("TransferProtocol")
            if allowed is not None:
                if allowed and protocol not in allowed:
                    raise Refusal(f"SimpleUpdate does not take {protocol} image URLs; its "
                                  f"TransferProtocol allows {', '.join(allowed)}")
                body["TransferProtocol"] = protocol
            if targets:
                # Sent even where the ActionInfo does not list it (the DMTF mockups, some
                # iLO firmware): a BMC that does not take it answers 400, which we report.
                if parameters and "Targets" not in parameters:
                    LOG.warning("BMC %s: SimpleUpdate's ActionInfo does not list Targets; "
                                "sending them anyway", self._service.address)
                body["Targets"] = list(targets)
            LOG.info("BMC %s: SimpleUpdate %s (targets: %s)", self._service.address, image,
                     ", ".join(targets or []) or "the BMC's choice")
            return _job_from_start(self._service.post(action["target"], body))

    def get_firmware_job(self, job: FirmwareJob) -> FirmwareJob:
        if job.monitor is None:
            return job  # nothing to follow: the BMC gave no task
        with self._service.call(f"read firmware task {job.monitor}"):
            try:
                response = self._service.get(job.monitor)
            except sushy_exc.HTTPError as exc:
                if exc.status_code in _BMC_TROUBLE:
                    raise
                # The monitor's final answer is the operation's: here, its failure.
                return FirmwareJob(monitor=job.monitor, state=JobState.FAILED,
                                   percent=job.percent, bmc_state=job.bmc_state,
                                   messages=(http_detail(exc),))
            task = _task_document(response)
            if response.status_code == 202:
                if task is None:  # still running, no news (some BMCs send no body)
                    return FirmwareJob(monitor=job.monitor, state=JobState.RUNNING,
                                       percent=job.percent, bmc_state=job.bmc_state,
                                       messages=job.messages)
                return _job_from_task(job.monitor, task, default=JobState.RUNNING)
            if task is None:  # 200/204 with the operation's own answer: it is done
                return FirmwareJob(monitor=job.monitor, state=JobState.COMPLETED,
                                   percent=100, bmc_state=job.bmc_state)
            return _job_from_task(job.monitor, task, default=JobState.COMPLETED)


def offered(service: RedfishService) -> bool:
    update_service = service.optional_json(link(service.root().json, "UpdateService"))
    return bool(update_service and (update_service.get("Actions") or {}).get(_SIMPLE_UPDATE))


def _update_service(service: RedfishService) -> Document:
    path = link(service.root().json, "UpdateService")
    if not path:
        raise Refusal("the service has no UpdateService")
    return service.get_json(path)


def _parameters(service: RedfishService, action: Document) -> dict[str, list[str]]:
    """SimpleUpdate's parameters -> allowed values ([] = any), as far as advertised."""
    parameters: dict[str, list[str]] = {}
    info = action.get("@Redfish.ActionInfo")
    if isinstance(info, str) and info:
        document = service.optional_json(info) or {}
        for parameter in document.get("Parameters") or []:
            if isinstance(parameter, dict) and parameter.get("Name"):
                parameters[parameter["Name"]] = list(parameter.get("AllowableValues") or [])
    allowed = action.get("TransferProtocol@Redfish.AllowableValues")
    if isinstance(allowed, list):
        parameters["TransferProtocol"] = [str(value) for value in allowed]
    return parameters


def _task_document(response: requests.Response) -> Document | None:
    """The Task in a response body, if it holds one (a TaskState is the sign)."""
    if not response.content:
        return None
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) and "TaskState" in body else None


def _job_from_start(response: requests.Response) -> FirmwareJob:
    task = _task_document(response)
    monitor = response.headers.get("Location") or (task or {}).get("@odata.id")
    if task is not None:
        return _job_from_task(monitor, task, default=JobState.RUNNING)
    if monitor:
        return FirmwareJob(monitor=monitor, state=JobState.RUNNING)
    LOG.warning("SimpleUpdate answered HTTP %s with neither a task monitor nor a Task",
                response.status_code)
    return FirmwareJob(monitor=None, state=JobState.COMPLETED,
                       messages=("the BMC accepted the update without a task to follow",))


def _job_from_task(monitor: str | None, task: Document, default: str) -> FirmwareJob:
    bmc_state = task.get("TaskState")
    state = JOB_STATE_FROM_TASK.get(bmc_state, default) if isinstance(bmc_state, str) \
        else default
    if isinstance(bmc_state, str) and bmc_state not in JOB_STATE_FROM_TASK:
        LOG.info("firmware task %s reports TaskState %r; reading it as %s", monitor,
                 bmc_state, state)
    percent = task.get("PercentComplete")
    messages = tuple(str(m.get("Message") or m.get("MessageId"))
                     for m in task.get("Messages") or []
                     if isinstance(m, dict) and (m.get("Message") or m.get("MessageId")))
    return FirmwareJob(monitor=monitor, state=state,
                       percent=percent if isinstance(percent, int) else None,
                       bmc_state=bmc_state if isinstance(bmc_state, str) else None,
                       messages=messages)
