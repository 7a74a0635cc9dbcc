"""The Redfish driver, on sushy.

``credentials.address`` is the BMC's base URL (``https://10.0.0.11``); ``system_id`` is the
``@odata.id`` of the ComputerSystem to drive, or None for "the only one". The system is
found by following the service root's ``Systems`` link, never by building a path.

Every sushy and requests exception is converted here into ``edge_gateway.errors``; sushy's
types and constants do not leave this module. The sushy root is created on first use (it
costs HTTP requests) and kept until ``close()``.

Retries: sushy retries a request that fails in transport (refused, timed out) and a GET
answered with 5xx. We keep that short (``RETRIES`` attempts, ``RETRY_DELAY`` s apart), so a
BMC that never answers costs about ``RETRIES * timeout + RETRY_DELAY`` seconds per call;
patience over minutes belongs to the caller (the executor polls and retries).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator

import requests
import sushy
from sushy import auth as sushy_auth
from sushy import connector as sushy_connector
from sushy import exceptions as sushy_exc
from sushy.resources.system.system import System

from edge_gateway.drivers.base import BmcCredentials, BootOverride, Driver, MachineInfo
from edge_gateway.errors import BmcAuthError, BmcError, BmcUnreachableError
from edgeplane.protocol import BmcProtocol, BootMode, BootTarget, Capability, PowerState

LOG = logging.getLogger(__name__)

# sushy turns 0 into its own default (3 attempts, 2 s apart): keep these >= 1.
RETRIES = 2
RETRY_DELAY = 1.0

# --- translation tables ------------------------------------------------------------------

# A transitional state reads as the state being left, so a caller waiting for the new
# state keeps polling until the BMC says it is reached.
POWER_FROM_REDFISH: dict[sushy.PowerState, PowerState] = {
    sushy.PowerState.ON: PowerState.ON,
    sushy.PowerState.OFF: PowerState.OFF,
    sushy.PowerState.POWERING_ON: PowerState.OFF,
    sushy.PowerState.POWERING_OFF: PowerState.ON,
    sushy.PowerState.PAUSED: PowerState.ON,  # powered, execution suspended
}

# Graceful off (GracefulShutdown, then ForceOff after a while) comes in a later change.
RESET_FOR: dict[PowerState, sushy.ResetType] = {
    PowerState.ON: sushy.ResetType.ON,
    PowerState.OFF: sushy.ResetType.FORCE_OFF,
}

# Already there, or on the way: asking again is not needed (some BMCs answer it with 409).
SETTLED_OR_ON_THE_WAY: dict[PowerState, frozenset[sushy.PowerState]] = {
    PowerState.ON: frozenset({sushy.PowerState.ON, sushy.PowerState.POWERING_ON}),
    PowerState.OFF: frozenset({sushy.PowerState.OFF, sushy.PowerState.POWERING_OFF}),
}

BOOT_SOURCE_FOR: dict[BootTarget, sushy.BootSource] = {
    BootTarget.PXE: sushy.BootSource.PXE,
    BootTarget.DISK: sushy.BootSource.HDD,
    BootTarget.CD: sushy.BootSource.CD,
}

BOOT_TARGET_FROM_REDFISH: dict[sushy.BootSource, BootTarget] = {
    sushy.BootSource.PXE: BootTarget.PXE,
    sushy.BootSource.HDD: BootTarget.DISK,
    sushy.BootSource.CD: BootTarget.CD,
    # sushy itself replaces Cd by UsbCd on Supermicro X11/X12 (virtual media is a USB CD there).
    sushy.BootSource.USB_CD: BootTarget.CD,
}

OVERRIDE_ENABLED_FOR: dict[BootMode, sushy.BootSourceOverrideEnabled] = {
    BootMode.ONCE: sushy.BootSourceOverrideEnabled.ONCE,
    BootMode.CONTINUOUS: sushy.BootSourceOverrideEnabled.CONTINUOUS,
}

BOOT_MODE_FROM_REDFISH: dict[sushy.BootSourceOverrideEnabled, BootMode] = {
    enabled: mode for mode, enabled in OVERRIDE_ENABLED_FOR.items()
}


class _Refusal(Exception):
    """What the BMC answered that makes the current operation impossible (internal)."""


class RedfishDriver(Driver):
    protocol = BmcProtocol.REDFISH.value
    capabilities = frozenset({Capability.POWER, Capability.BOOT, Capability.INVENTORY})

    def __init__(self, credentials: BmcCredentials, timeout: float = 30.0) -> None:
        super().__init__(credentials, timeout)
        self._root: sushy.Sushy | None = None
        self._connector: sushy_connector.Connector | None = None
        self._auth: sushy_auth.AuthBase | None = None
        self._system: System | None = None

    # --- the Driver interface -------------------------------------------------------------

    def get_power_state(self) -> PowerState:
        with self._bmc_call("read power state"):
            system = self._fresh_system()
            state = POWER_FROM_REDFISH.get(system.power_state)
            if state is None:
                raise _Refusal(f"the system reports PowerState "
                               f"{system.json.get('PowerState')!r}, not a known power state")
            return state

    def request_power_state(self, state: PowerState) -> None:
        """Ask for ``state``; no request is sent if the system is there or on its way."""
        with self._bmc_call(f"power {state}"):
            system = self._fresh_system()
            if system.power_state in SETTLED_OR_ON_THE_WAY[state]:
                LOG.debug("BMC %s: %s already reads %s", self.address, system.path,
                          system.power_state.value)
                return
            reset = RESET_FOR[state]
            allowed = system.get_allowed_reset_system_values()  # all types if none advertised
            if reset not in allowed:
                raise _Refusal(f"the BMC does not offer reset type {reset.value}; it offers "
                               f"{', '.join(sorted(v.value for v in allowed)) or 'none'}")
            LOG.info("BMC %s: reset %s to %s", self.address, system.path, reset.value)
            system.reset_system(reset)

    def get_boot_override(self) -> BootOverride:
        with self._bmc_call("read boot override"):
            boot = self._fresh_system().boot
            if boot is None:
                raise _Refusal("the system has no Boot property")
            if (boot.enabled == sushy.BootSourceOverrideEnabled.DISABLED
                    or boot.target in (None, sushy.BootSource.NONE)):
                return BootOverride(target=None, mode=None)
            target = BOOT_TARGET_FROM_REDFISH.get(boot.target)
            if target is None:
                # An override we cannot name (UefiHttp, BiosSetup...): reading it as "none"
                # lets a boot.override step replace it.
                LOG.info("BMC %s: boot override target %s has no Edgeplane equivalent",
                         self.address, boot.target.value)
                return BootOverride(target=None, mode=None)
            # sushy-tools 2.x (fake and libvirt drivers) ignores BootSourceOverrideEnabled
            # and always reports "Continuous": an override set "Once" reads back as
            # CONTINUOUS. The executor therefore compares the target only.
            return BootOverride(target=target, mode=BOOT_MODE_FROM_REDFISH.get(boot.enabled))

    def set_boot_override(self, target: BootTarget, mode: BootMode) -> None:
        with self._bmc_call(f"set boot override {target} ({mode})"):
            system = self._fresh_system()
            source, enabled = BOOT_SOURCE_FOR[target], OVERRIDE_ENABLED_FOR[mode]
            boot = system.boot
            if boot is not None and boot.target == source and boot.enabled == enabled:
                LOG.debug("BMC %s: boot override already %s %s", self.address,
                          source.value, enabled.value)
                return
            allowed_targets = boot.allowed_values if boot is not None else None
            if allowed_targets and source.value not in allowed_targets:
                raise _Refusal(f"the BMC does not offer boot target {source.value} (for "
                               f"{target}); it offers {', '.join(allowed_targets)}")
            allowed_enabled = (system.json.get("Boot") or {}).get(
                "BootSourceOverrideEnabled@Redfish.AllowableValues")
            if allowed_enabled and enabled.value not in allowed_enabled:
                raise _Refusal(f"the BMC does not offer override mode {enabled.value}; it "
                               f"offers {', '.join(allowed_enabled)}")
            LOG.info("BMC %s: boot override of %s to %s %s", self.address, system.path,
                     source.value, enabled.value)
            system.set_system_boot_options(target=source, enabled=enabled)

    def describe(self) -> MachineInfo:
        """Identify the system; capabilities drop what the system does not advertise."""
        with self._bmc_call("describe"):
            system = self._fresh_system()
            document = system.json
            capabilities = set(self.capabilities)
            if "#ComputerSystem.Reset" not in (document.get("Actions") or {}):
                capabilities.discard(Capability.POWER)
            if not document.get("Boot"):
                capabilities.discard(Capability.BOOT)
            extra = {"system_id": system.path, "name": system.name, "uuid": system.uuid}
            return MachineInfo(
                protocol=self.protocol,
                manufacturer=system.manufacturer,
                model=system.model,
                serial=system.serial_number,
                power=POWER_FROM_REDFISH.get(system.power_state),
                capabilities=frozenset(capabilities),
                extra={k: str(v) for k, v in extra.items() if v},
            )

    def close(self) -> None:
        """Delete the Redfish session (if one was made) and close the HTTP connection."""
        auth, connector = self._auth, self._connector
        self._root = self._system = self._auth = self._connector = None
        if auth is not None:
            try:
                auth.close()
            except (sushy_exc.SushyError, requests.RequestException) as exc:
                LOG.warning("BMC %s: closing the Redfish session failed: %s", self.address, exc)
        if connector is not None:
            connector.close()

    # --- Redfish only ---------------------------------------------------------------------

    def system_ids(self) -> list[str]:
        """The ``@odata.id`` of every ComputerSystem the service lists."""
        with self._bmc_call("list systems"):
            return self._system_paths()

    # --- internals ------------------------------------------------------------------------

    def _service(self) -> sushy.Sushy:
        if self._root is None:
            connector = sushy_connector.Connector(
                self.address, verify=self.credentials.verify_tls,
                server_side_retries=RETRIES, server_side_retries_delay=RETRY_DELAY,
                default_request_timeout=self.timeout,
            )
            # Session first, HTTP basic if the BMC has no session service. Credentials go
            # into the auth object only: sushy refuses both auth and username/password.
            auth = sushy_auth.SessionOrBasicAuth(username=self.credentials.username,
                                                 password=self.credentials.password)
            try:
                self._root = sushy.Sushy(self.address, auth=auth, connector=connector)
            except BaseException:
                connector.close()
                raise
            self._connector, self._auth = connector, auth
        return self._root

    def _system_paths(self) -> list[str]:
        return list(self._service().get_system_collection().members_identities)

    def _select_system_path(self) -> str:
        paths = self._system_paths()
        wanted = self.credentials.system_id
        if wanted is None:
            if len(paths) == 1:
                return paths[0]
            if not paths:
                raise _Refusal("the service lists no ComputerSystem")
            raise _Refusal(f"the service has {len(paths)} systems ({', '.join(paths)}) and "
                           "none was named: set system_id to one of them")
        for path in paths:
            if path.rstrip("/") == wanted.rstrip("/"):
                return path
        raise _Refusal(f"system {wanted} is not listed by the service; it lists "
                       f"{', '.join(paths) or 'none'}")

    def _fresh_system(self) -> System:
        """The selected system, its document just read from the BMC."""
        if self._system is None:
            root = self._service()
            self._system = root.get_system(self._select_system_path())
        else:
            self._system.refresh()
        return self._system

    @contextlib.contextmanager
    def _bmc_call(self, what: str) -> Iterator[None]:
        """Convert whatever sushy, requests or the BMC raised into a BmcError."""
        try:
            yield
        except _Refusal as exc:
            raise BmcError(self.address, what, str(exc)) from None
        except sushy_exc.AccessError as exc:
            raise BmcAuthError(
                self.address, what,
                f"the BMC rejected the credentials of user {self.credentials.username!r} "
                f"({_http_detail(exc)})",
            ) from exc
        except sushy_exc.ConnectionError as exc:
            cause = exc.__context__
            if isinstance(cause, requests.exceptions.SSLError):
                raise BmcError(self.address, what, f"TLS failed: {_reason(cause)}") from exc
            raise BmcUnreachableError(self.address, what,
                                      _reason(cause) if cause else str(exc)) from exc
        except sushy_exc.HTTPError as exc:
            raise BmcError(self.address, what, _http_detail(exc)) from exc
        except sushy_exc.SushyError as exc:
            raise BmcError(self.address, what, str(exc)) from exc
        except (requests.exceptions.InvalidJSONError, json.JSONDecodeError) as exc:
            raise BmcError(self.address, what, f"the answer is not valid JSON: {exc}") from exc
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
            raise BmcUnreachableError(self.address, what, _reason(exc)) from exc
        except requests.exceptions.RequestException as exc:
            raise BmcError(self.address, what, _reason(exc)) from exc


def _http_detail(exc: sushy_exc.HTTPError) -> str:
    said = exc.detail or (exc.code if exc.body is not None else None) or "no error details"
    return f"HTTP {exc.status_code}: {said}"


def _reason(exc: BaseException) -> str:
    """The innermost reason of a requests/urllib3 error, without the pool's wrapping."""
    reason: BaseException = exc
    for _ in range(5):
        inner = getattr(reason, "reason", None)
        if not isinstance(inner, BaseException) and reason.args:
            inner = reason.args[0]
        if not isinstance(inner, BaseException):
            break
        reason = inner
    text = str(reason)
    # urllib3 prefixes the connection object: "HTTPConnection(host=..., port=...): ..."
    _, sep, rest = text.partition("): ")
    return rest if sep and text.startswith(("HTTPConnection", "HTTPSConnection")) else text
