"""One simulated Redfish BMC: a mockup's resources with the behaviour of a real service.

Nothing here knows the ids or paths of a particular mockup: systems are the members of the
root's ``Systems``, the BIOS is what a system's ``Bios`` links to, actions are dispatched by
the ``target`` the documents advertise, and so on, as a client would find them.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeplane_dev.redfish_sim.auth import Auth
from edgeplane_dev.redfish_sim.faults import FaultBook
from edgeplane_dev.redfish_sim.install import Installer
from edgeplane_dev.redfish_sim.logs import Logs
from edgeplane_dev.redfish_sim.media import EJECT_STYLES, INSERT_RULES, Media
from edgeplane_dev.redfish_sim.replies import RedfishError, Reply, bad_value, not_allowed, not_found
from edgeplane_dev.redfish_sim.resources import (
    ROOT,
    SHIPPED,
    SHIPPED_REGISTRIES,
    Document,
    Mockup,
    Resources,
    normalize,
)
from edgeplane_dev.redfish_sim.system import System
from edgeplane_dev.redfish_sim.update import Updates
from edgeplane_dev.redfish_sim.vendors import (
    MEDIA_APIS,
    MEDIA_PLACES,
    shape_media,
    slot_types,
    slots,
)

LOG = logging.getLogger(__name__)

DEFAULT_USERNAME = "admin"
DEFAULT_PASSWORD = "password"  # noqa: S105 - the simulator's well-known demo credential
JSON = "application/json; charset=utf-8"


@dataclass(frozen=True)
class BmcOptions:
    """How one simulated BMC behaves (every field has a realistic-but-quick default)."""

    username: str = DEFAULT_USERNAME
    password: str = DEFAULT_PASSWORD
    power_delay: float = 1.0  # seconds before a power change reads back
    acpi: bool = True  # False: the OS ignores GracefulShutdown
    update_seconds: float = 3.0  # how long a firmware update runs
    update_stalls_at: int | None = None  # a percentage where updates stop forever
    monitor_style: str = "standard"  # see update.MONITOR_STYLES
    reset_seconds: float = 2.0  # how long the BMC is gone after Manager.Reset
    latency: float = 0.0  # seconds added to every Redfish request
    # Vendor differences (docs/vendors.md); the defaults keep the mockup as it is.
    media_place: str = "mockup"  # vendors.MEDIA_PLACES: VirtualMedia under system/manager
    media_api: str = "mockup"  # vendors.MEDIA_APIS: PATCH only, actions only, both
    media_slots: tuple[str, ...] = ()  # slots instead of the mockup's: ("CD/DVD", "USBStick")
    stale_image: str | None = None  # every slot starts holding this image URL
    insert_rule: str = "refuse_other"  # media.INSERT_RULES: an insert over an image
    eject_style: str = "cleared"  # media.EJECT_STYLES: how an ejected slot reads
    boot_once_ignored: bool = False  # a "Once" override is consumed, the disk boots
    power_on_refused_s: float = 0.0  # 409 to a power-on for this long after a power-off
    # The simulated OS install at a boot from the CD (install.py).
    install_seconds: float = 5.0  # how long the installer works once it has its seed
    install_read_bytes: int | None = None  # installer bytes read; None: the whole image
    media_read_bps: float = 0.0  # the pace the BMC reads virtual media at; 0: no limit
    install_hangs: bool = False  # the installer stops at a prompt: it never phones home

    def __post_init__(self) -> None:
        for name, value, allowed in (("media_place", self.media_place, MEDIA_PLACES),
                                     ("media_api", self.media_api, MEDIA_APIS),
                                     ("insert_rule", self.insert_rule, INSERT_RULES),
                                     ("eject_style", self.eject_style, EJECT_STYLES)):
            if value not in allowed:
                raise ValueError(f"{name} {value!r}: use one of {', '.join(allowed)}")
        for spec in self.media_slots:
            slot_types(spec)
        if self.power_on_refused_s < 0:
            raise ValueError("power_on_refused_s must be 0 or more seconds")
        if self.install_seconds < 0 or self.media_read_bps < 0:
            raise ValueError("install_seconds and media_read_bps must be 0 or more")
        if self.install_read_bytes is not None and self.install_read_bytes < 1:
            raise ValueError("install_read_bytes must be 1 or more (or None: the whole image)")


DEFAULT_OPTIONS = BmcOptions()


@dataclass(frozen=True)
class _Action:
    owner: str  # the document advertising it
    name: str  # e.g. "ComputerSystem.Reset"
    spec: Document  # the action's object (target, AllowableValues, ActionInfo)


class RedfishBmc:
    def __init__(self, mockup: Mockup, options: BmcOptions = DEFAULT_OPTIONS,
                 registries: list[Document] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.options = options
        self.clock = clock
        self.resources = Resources(mockup)
        self.metadata = mockup.metadata
        self.faults = FaultBook()
        self.received: list[tuple[str, str, Any]] = []  # (method, path, body) of each request
        self.connections = 0  # connections that carried a request
        self._lock = threading.RLock()
        self._down_until = 0.0
        for registry in registries or []:
            self._publish_registry(registry)
        self.auth = Auth(self.resources, options.username, options.password)
        self.logs = Logs(self.resources)
        self.media = Media(self.resources, options.insert_rule, options.eject_style,
                           actions_only=options.media_api == "action")
        self.updates = Updates(self.resources, clock, options.update_seconds,
                               options.monitor_style, options.update_stalls_at)
        root = self.resources.get_raw(ROOT) or {}
        self.systems = {
            path: System(self.resources, path, clock, options.power_delay, options.acpi,
                         self._system_event, options.boot_once_ignored,
                         options.power_on_refused_s)
            for path in self.resources.members(self.resources.link(root, "Systems"))
        }
        self.installers = {path: Installer(system, self.resources, self._lock, options,
                                           self.settle)
                           for path, system in self.systems.items()}
        for path, installer in self.installers.items():
            self.systems[path].on_boot = installer.on_boot
        shape_media(self.resources, list(self.systems), options.media_place,
                    options.media_api, options.media_slots, options.stale_image)
        self._actions = self._find_actions()
        self._slots = set(slots(self.resources, list(self.systems)))

    # --- discovery -----------------------------------------------------------------

    def _find_actions(self) -> dict[str, _Action]:
        actions = {}
        for path in self.resources.paths():
            document = self.resources.get_raw(path) or {}
            for key, spec in (document.get("Actions") or {}).items():
                if key.startswith("#") and isinstance(spec, dict) and spec.get("target"):
                    actions[normalize(spec["target"])] = _Action(path, key[1:], spec)
        return actions

    def _publish_registry(self, registry: Document) -> None:
        """List an attribute registry the mockup names but does not carry."""
        root = self.resources.get_raw(ROOT) or {}
        collection = self.resources.link(root, "Registries")
        registry_id = registry.get("Id")
        if not collection or not isinstance(registry_id, str):
            return
        for path in self.resources.members(collection):
            if (self.resources.get_raw(path) or {}).get("Id") == registry_id:
                return  # the mockup has its own
        file_path = f"{collection}/{registry_id}"
        uri = f"{file_path}.json"
        self.resources.put(uri, registry)
        self.resources.add_member(collection, file_path, {
            "@odata.type": "#MessageRegistryFile.v1_1_5.MessageRegistryFile",
            "@odata.id": file_path, "Id": registry_id, "Registry": registry_id,
            "Name": f"{registry_id} registry file", "Languages": ["en"],
            "Location": [{"Language": "en", "Uri": uri}],
        })

    def bios_registry(self, system: System) -> dict[str, Document] | None:
        """The attribute entries of the registry the system's Bios names, if published."""
        bios = self.resources.get_raw(system.bios_path or "") or {}
        name = bios.get("AttributeRegistry")
        root = self.resources.get_raw(ROOT) or {}
        for path in self.resources.members(self.resources.link(root, "Registries")):
            file = self.resources.get_raw(path) or {}
            if name not in (file.get("Id"), file.get("Registry")):
                continue
            for location in file.get("Location") or []:
                document = self.resources.get_raw(location.get("Uri") or "")
                entries = ((document or {}).get("RegistryEntries") or {}).get("Attributes")
                if isinstance(entries, list):
                    return {e["AttributeName"]: e for e in entries if "AttributeName" in e}
        return None

    def close(self) -> None:
        """Stop what runs on its own (installs)."""
        for installer in self.installers.values():
            installer.close()

    # --- state over time -----------------------------------------------------------

    @property
    def down(self) -> bool:
        """True while the BMC restarts after Manager.Reset."""
        return self.clock() < self._down_until

    def settle(self) -> None:
        with self._lock:
            for system in self.systems.values():
                system.settle()
            self.updates.settle()

    def _settle_at(self, at: float | None) -> None:
        """Complete a power change when its time comes, requests or not: the host boots
        (and an install starts) whether or not a client is looking."""
        if at is None:
            return
        timer = threading.Timer(max(0.0, at - self.clock()) + 0.01, self.settle)
        timer.daemon = True
        timer.start()

    def _system_event(self, system: str, severity: str, message: str) -> None:
        self.logs.record(self.logs.service_for(system), severity, message)

    # --- requests ------------------------------------------------------------------

    def count_connection(self) -> None:
        with self._lock:
            self.connections += 1

    def forget_requests(self) -> None:
        with self._lock:
            self.received.clear()
            self.connections = 0

    def handle(self, method: str, raw_path: str, headers: Mapping[str, str],
               body: bytes) -> Reply:
        path = normalize(raw_path)
        try:
            document = json.loads(body) if body.strip() else {}
        except ValueError:
            document = None
        with self._lock:
            self.received.append((method, path, document))
            try:
                self.auth.check(method, path, headers)
                if document is None or not isinstance(document, dict):
                    raise RedfishError(400, "MalformedJSON",
                                       "The request body is not a JSON object.")
                self.settle()
                return self._dispatch(method, path, headers, document)
            except RedfishError as exc:
                return exc.reply()

    def _dispatch(self, method: str, path: str, headers: Mapping[str, str],
                  body: Document) -> Reply:
        if method in ("GET", "HEAD"):
            return self._get(path)
        if method == "POST":
            return self._post(path, body)
        if method == "PATCH":
            return self._patch(path, headers, body)
        if method == "DELETE":
            if self.auth.is_session(path):
                return self.auth.logout(path)
            if path in self.resources:
                raise not_allowed(method, path)
            raise not_found(path)
        raise not_allowed(method, path)

    def _get(self, path: str) -> Reply:
        if path == "/redfish":
            return Reply(200, {"v1": f"{ROOT}/"})
        if path == f"{ROOT}/$metadata" and self.metadata is not None:
            return Reply(200, self.metadata, {"Content-Type": "application/xml"})
        if self.updates.is_monitor(path):
            return self.updates.monitor(path)
        found = self.resources.encoded(path)
        if found is None:
            raise not_found(path)
        body, tag = found
        return Reply(200, body, {"Content-Type": JSON, "ETag": tag})

    def _post(self, path: str, body: Document) -> Reply:
        if path == self.auth.sessions:
            return self.auth.login(body)
        action = self._actions.get(path)
        if action is None:
            if path in self.resources:
                raise not_allowed("POST", path)
            raise not_found(path)
        LOG.info("action %s on %s: %s", action.name, action.owner, body)
        if action.name == "ComputerSystem.Reset" and action.owner in self.systems:
            system = self.systems[action.owner]
            system.reset(body, self._allowed(action, "ResetType"))
            self._settle_at(system.settles_at)
        elif action.name == "VirtualMedia.InsertMedia":
            self.media.insert(action.owner, body)
        elif action.name == "VirtualMedia.EjectMedia":
            self.media.eject(action.owner)
        elif action.name == "UpdateService.SimpleUpdate":
            info = self.resources.get_raw(action.spec.get("@Redfish.ActionInfo") or "")
            return self.updates.simple_update(body, info)
        elif action.name == "LogService.ClearLog":
            self.logs.clear(action.owner)
        elif action.name == "Manager.Reset":
            self._reset_manager(body, self._allowed(action, "ResetType"))
        else:
            raise RedfishError(400, "ActionNotSupported",
                               f"The action {action.name} is not supported by the service.")
        return Reply(204)

    def _etag(self, path: str) -> str | None:
        found = self.resources.encoded(path)
        return None if found is None else found[1]

    def _allowed(self, action: _Action, parameter: str) -> list[str] | None:
        allowed = action.spec.get(f"{parameter}@Redfish.AllowableValues")
        if isinstance(allowed, list):
            return allowed
        info = self.resources.get_raw(action.spec.get("@Redfish.ActionInfo") or "")
        for entry in (info or {}).get("Parameters") or []:
            if entry.get("Name") == parameter and isinstance(entry.get("AllowableValues"),
                                                              list):
                return entry["AllowableValues"]
        return None

    def _reset_manager(self, body: Document, allowed: list[str] | None) -> None:
        kind = body.get("ResetType", "GracefulRestart")
        if allowed is not None and kind not in allowed:
            raise bad_value("ResetType", kind, allowed)
        self._down_until = self.clock() + self.options.reset_seconds
        self.auth.forget_sessions()
        LOG.info("BMC restarting (%s) for %.1f s", kind, self.options.reset_seconds)

    def _patch(self, path: str, headers: Mapping[str, str], body: Document) -> Reply:
        current = self.resources.get_raw(path)
        if current is None:
            raise not_found(path)
        wanted = headers.get("If-Match")
        if wanted and wanted != "*" and wanted != self._etag(path):
            raise RedfishError(412, "PreconditionFailed",
                               f"The ETag {wanted} does not match the resource's current "
                               "ETag; read it again.")
        system = self.systems.get(path)
        settings_of = [s for s in self.systems.values() if s.settings_path == path]
        if system is not None:
            system.patch(body)
        elif settings_of:
            settings_of[0].patch_bios_settings(body, self.bios_registry(settings_of[0]))
        elif path in self._slots:
            self.media.patch(path, body)
        else:
            raise not_allowed("PATCH", path)
        return Reply(204)


def load_registries(directory: Path = SHIPPED_REGISTRIES) -> list[Document]:
    """The attribute registries shipped beside the simulator (for mockups that lack them)."""
    return [json.loads(file.read_text(encoding="utf-8"))
            for file in sorted(directory.glob("*.json"))]


def shipped_bmc(options: BmcOptions = DEFAULT_OPTIONS, mockup: Path | None = None,
                clock: Callable[[], float] = time.monotonic) -> RedfishBmc:
    """A BMC on ``mockup`` (default: the shipped public-rackmount1), with the shipped
    registries published where the mockup lacks them."""
    return RedfishBmc(Mockup.load(mockup or SHIPPED), options, load_registries(), clock)
