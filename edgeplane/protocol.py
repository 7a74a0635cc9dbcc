"""The wire contract between the cloud and the site gateways.

This module is the only place that knows MQTT topic names and message shapes. It imports
nothing outside the standard library, so the gateway, the cloud (it is vendored into the
Lambda bundle) and the tests all share one definition.

Topics are per site so that a broker ACL or an AWS IoT policy can scope each gateway to its
own subtree (the MQTT client id is the site id):

    edgeplane/v1/sites/{site}/down/plan       cloud -> gateway   Plan
    edgeplane/v1/sites/{site}/down/cancel     cloud -> gateway   Cancel
    edgeplane/v1/sites/{site}/up/presence     gateway -> cloud   Presence (retained, last will)
    edgeplane/v1/sites/{site}/up/inventory    gateway -> cloud   Inventory
    edgeplane/v1/sites/{site}/up/progress     gateway -> cloud   Progress
    edgeplane/v1/sites/{site}/up/result       gateway -> cloud   Result
    edgeplane/v1/sites/{site}/up/observed     gateway -> cloud   Observed
    edgeplane/v1/sites/{site}/up/cache        gateway -> cloud   CacheStatus

Every message carries ``v`` (protocol version), ``kind``, ``id`` (unique per message, so a
receiver can drop duplicates) and ``site``. Progress and results carry ``seq``, which grows
with every report the gateway makes for one execution, so a receiver can drop reports that
arrive late. Unknown fields are ignored on decode: a newer sender may add fields, and an
older receiver keeps working.

Plans and cancels are signed by the cloud (Ed25519), and a gateway acts only on what
verifies with a key its site pins. The signature is one more field of the message's object:

    "signature": {"key": <key id>, "expires": <seconds since the epoch>,
                  "value": <the signature, base64url without padding>}

What is signed (``signed_bytes``) is the canonical form (``canonical``: sorted keys, no
spaces, UTF-8) of the whole object with ``signature`` reduced to ``key`` and ``expires``. A
receiver verifies the canonical form of what it parsed, not the bytes it received, so it
verifies exactly what it will act on: duplicate keys, spaces or escapes change nothing. The
key id is ``key_id`` of the raw public key; ``split_signature`` reads the envelope within
bounds. This module holds no cryptography (standard library only): the gateway verifies
(``edge_gateway.trust``), the cloud signs (``chalicelib.signing``).

Version history:
    1 -- first version: plans of power.ensure / boot.override steps, presence, inventory,
         per-machine progress snapshots and final results.
         Additions within version 1 (optional, ignored by older receivers): every task of
         TASKS in plans; ``machine_class`` in inventory reports; the ``observed`` message
         (observed state for drift); the ``cancel`` message; plans honour ``expires_at``;
         ``retryable`` on step results; execution states ``expired`` and ``canceled`` in
         results. A cloud that predates ``observed`` drops it as an
         unknown kind and loses nothing else.
         Compact reports: a plan's ``detail`` ("outcomes") asks the gateway to report each
         machine as ``summary``, one letter per step (``STEP_LETTERS``), with in full only
         the steps that say more (``index`` gives their place); a plan's ``observe``
         (false) tells the gateway the cloud judges no drift there, so it sends no observed
         state after the plan. A gateway that predates them ignores both and reports in
         full, which every cloud reads.
         Bounds (``MAX_*``, checked by ``decode``) and the execution state ``rejected``: a
         gateway answers a plan it refuses with a result in that state, saying why. A cloud
         that predates it drops such a result (not a state it knows) and times the site
         out, as it did before.
         Signatures (``signature`` on plans and cancels, ``MAX_SIGNATURE_TTL``): a gateway
         runs only plans and cancels the cloud signed with a key its site pins, and answers
         any other plan with a ``rejected`` result. A gateway that predates them ignores
         the field; one that requires them rejects every plan of a cloud that predates them.
         Reports that fit (``MAX_REPORT_BYTES``): a gateway publishes no message larger. A
         result or an inventory that would be goes in parts (``part`` of ``parts``, each a
         complete message with some of the machines, every machine in one); progress and
         observed state go in several messages (each progress with its own ``seq``); one
         machine's result too large alone has its steps' output trimmed, and each such step
         says what it lost (``trimmed``). A cloud that predates parts takes the first part
         of a result it gets for the whole: the execution ends as that part says, with only
         its machines stored.
         Field upgrades: the task ``gateway.upgrade``, the first on the gateway itself
         (``TaskSpec.on_gateway``: no capability, its step names no machine, and it is the
         plan's last step). The gateway installs the version, restarts into it, and the
         plan's result comes from whichever version runs after: succeeded once the new
         one proved healthy, failed (saying why) once the previous one is back. A
         gateway that predates it refuses such a plan (unknown task: a ``rejected``
         result). A string parameter may have a ``pattern`` (checked by both sides).
         Exactly once on the site: the step state ``uncertain`` (summary letter ``?``): a
         step that acts every time (``TaskSpec.idempotent`` False) was in flight when the
         gateway stopped, and is not run again; its message says what the BMC shows, and
         its machine is ``failed``, which no retry may run again. A cloud that predates it
         sees the machine failed, but may retry an execution whose other failures are
         retryable, and drops a summary with the new letter: update the cloud first.
         Maintenance windows on the site: a plan's ``window`` (start, end, days, time zone;
         the rule is ``edgeplane.windows``) makes a gateway that receives it outside the
         window hold it until the window opens, saying so in a progress with
         ``waiting_until`` (and no machines); a plan held past its ``expires_at`` ends
         ``expired``, unrun; a zone the gateway does not know gets a ``rejected`` result.
         A gateway that predates it runs the plan at once, as before; a cloud that predates
         ``waiting_until`` takes that progress for the start of the execution (and may
         time it out while it waits): update the cloud first.
         Site artifact cache: ``media.insert`` and ``firmware.update`` take ``sha256`` and
         ``size`` (optional, together) beside ``image``: the gateway fetches the image
         into its cache once per site, checks the digest, and hands its BMCs a URL on the
         site LAN instead (docs/artifacts.md). A gateway that predates them refuses such a
         plan (unknown parameters: a ``rejected`` result). The ``cache`` message: what
         the site's cache holds and served, sent at each connection and after each plan
         that named an artifact. A cloud that predates it drops it as an unknown kind.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import json
import math
import re
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import MISSING, Field, dataclass, field, fields, is_dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar, Self, TypeVar

from edgeplane.windows import Window, WindowError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

PROTOCOL_VERSION = 1
SUPPORTED_VERSIONS = frozenset({1})
TOPIC_ROOT = "edgeplane/v1/sites"

SITE_ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
MACHINE_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
# The cloud makes them ``<rollout>.<site>`` (``.<attempt>`` from the second attempt on).
EXECUTION_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,159}$")

# --- bounds ----------------------------------------------------------------------------
# The most a receiver reads. ``decode`` refuses a message past any of them before anything
# acts on it, so that no message can make a receiver recurse, loop or store without end;
# the cloud and the gateways share them.

MAX_MESSAGE_BYTES = 256 * 1024  # one message (what SQS carries; AWS IoT carries 128 KB)
MAX_DEPTH = 32  # objects and arrays inside each other (a plan needs 5, a report about 9)
MAX_STEPS = 50  # steps in a plan (the cloud's cap on a rollout); step results per machine
MAX_MACHINES = 1000  # machines in a plan step, in a plan, in a report
MAX_NAME_LENGTH = 128  # characters of a short string: task, state, version, message id...
MAX_TEXT_LENGTH = 64 * 1024  # characters of free text: messages, reasons, errors, addresses
MAX_TIME = 1e11  # times are seconds since the epoch, from 0 to this
MIN_TIME = 1e-3  # and a time that is not 0 is at least this (DynamoDB has none < 1e-130)
MAX_COUNT = 2**53 - 1  # seq and index: non-negative integers, at most this
# How far ahead of a gateway's clock a signature may expire (30 days; checked when the
# gateway verifies it, not by decode): it remembers every plan it received for longer.
MAX_SIGNATURE_TTL = 30 * 86400

# The most a gateway publishes in one message: every report it sends (result, progress,
# observed state, inventory) fits in this many bytes. AWS IoT Core refuses a publish over
# 128 KB, and a refused QoS 1 message is never acknowledged: the gateway's outbox would
# offer it again at every connection, for ever, and the cloud would never learn how the plan
# ended. 120 KiB leaves 5 KB under 128,000 bytes for the MQTT header and the topic. Nothing
# per machine is fixed: a report of more machines than fit goes in several messages, each
# complete for its machines (``Result.part``), and one machine's result that cannot fit
# alone has its steps' output trimmed, saying so (``StepResult.trimmed``); every machine's
# outcome is sent. Receivers read up to MAX_MESSAGE_BYTES (a gateway that predates this
# bound sends up to that).
MAX_REPORT_BYTES = 120 * 1024


class ProtocolError(ValueError):
    """A message or topic that does not follow this contract.

    ``kind`` and ``execution_id`` are the refused message's, when they could be read and are
    well-formed (a gateway answers a refused plan with a ``rejected`` result); else None.
    """

    def __init__(self, message: str, *, kind: str | None = None,
                 execution_id: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.execution_id = execution_id

    def about(self, data: object) -> Self:
        """This error, naming the kind and execution id of the refused message's object
        ``data`` where they are there and well-formed (else None)."""
        kind = data.get("kind") if isinstance(data, dict) else None
        execution_id = data.get("execution_id") if isinstance(data, dict) else None
        self.kind = kind if isinstance(kind, str) and kind in MESSAGE_TYPES else None
        self.execution_id = execution_id if isinstance(execution_id, str) and \
            EXECUTION_ID_PATTERN.fullmatch(execution_id) else None
        return self


def excerpt(value: object, limit: int = 80) -> str:
    """``repr(value)``, cut to ``limit`` characters: what an error or a log line shows of a
    value a peer sent, however large it is."""
    return _cut(repr(value[:limit] if isinstance(value, str | bytes) else value), limit)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


# --- domain enums shared by both sides -------------------------------------------------


class PowerState(enum.StrEnum):
    ON = "on"
    OFF = "off"


class BootTarget(enum.StrEnum):
    PXE = "pxe"
    DISK = "disk"
    CD = "cd"
    USB = "usb"
    BIOS = "bios"  # the firmware's setup menu


class BootFirmwareMode(enum.StrEnum):
    UEFI = "uefi"
    LEGACY = "legacy"


class BootMode(enum.StrEnum):
    ONCE = "once"
    CONTINUOUS = "continuous"


class BmcProtocol(enum.StrEnum):
    REDFISH = "redfish"
    IPMI = "ipmi"


class Capability(enum.StrEnum):
    """What a driver can do for a machine; a plan step needs its task's capability."""

    POWER = "power"
    BOOT = "boot"
    MEDIA = "media"
    BIOS = "bios"
    FIRMWARE = "firmware"
    INVENTORY = "inventory"
    HEALTH = "health"
    SEL = "sel"
    BMC_RESET = "bmc_reset"


class StepState(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    # A step that acts every time was in flight when the gateway stopped: it may or may
    # not have happened, so it is not run again; its message says what the BMC shows. Its
    # machine fails there, and an operator decides (never retried by itself).
    UNCERTAIN = "uncertain"


class MachineState(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class Detail(enum.StrEnum):
    """How a gateway reports a plan's steps: every step in full, or a letter per step
    (``summarize``) with in full only what the letter cannot say."""

    FULL = "full"
    OUTCOMES = "outcomes"


class ExecutionState(enum.StrEnum):
    QUEUED = "queued"
    SENT = "sent"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELED = "canceled"
    EXPIRED = "expired"  # the site did not start the plan before the rollout's expiry
    REJECTED = "rejected"  # the site's gateway refused the plan (the message says why)


TERMINAL_MACHINE_STATES = frozenset({MachineState.SUCCEEDED, MachineState.FAILED})


# --- tasks -----------------------------------------------------------------------------


class ParamType(enum.StrEnum):
    STRING = "string"
    INTEGER = "integer"
    BOOLEAN = "boolean"
    URL = "url"  # an http(s) URL the BMC fetches (images)
    MAP = "map"  # an object of names to strings, integers or booleans (BIOS attributes)


_REQUIRED: Any = object()


@dataclass(frozen=True)
class Param:
    """One parameter of a task: its type, allowed values, range and default."""

    type: ParamType = ParamType.STRING
    choices: tuple[str, ...] | None = None
    default: Any = _REQUIRED  # _REQUIRED: must be given; None: optional without a value
    minimum: int | None = None
    maximum: int | None = None
    help: str = ""
    # A string must match it whole (``pattern.fullmatch``); ``shape`` says what it is.
    pattern: re.Pattern[str] | None = None
    shape: str = ""

    @property
    def required(self) -> bool:
        return self.default is _REQUIRED

    def check(self, task: str, name: str, value: Any) -> Any:
        def refuse(why: str) -> ProtocolError:
            return ProtocolError(f"task {task}: parameter {name!r} is {excerpt(value)}; {why}")

        if self.type in (ParamType.STRING, ParamType.URL):
            if not isinstance(value, str):
                raise refuse("it must be a string")
            if self.type == ParamType.URL and not re.match(r"^https?://[^\s/]+", value):
                raise refuse("it must be an http:// or https:// URL")
            if self.pattern is not None and not self.pattern.fullmatch(value):
                raise refuse(f"it must be {self.shape or self.pattern.pattern}")
        elif self.type == ParamType.INTEGER:
            if isinstance(value, str) and re.fullmatch(r"-?[0-9]{1,18}", value):
                value = int(value)  # from a command line or a template
            if isinstance(value, bool) or not isinstance(value, int):
                raise refuse("it must be an integer")
            if self.minimum is not None and value < self.minimum:
                raise refuse(f"the minimum is {self.minimum}")
            if self.maximum is not None and value > self.maximum:
                raise refuse(f"the maximum is {self.maximum}")
        elif self.type == ParamType.BOOLEAN:
            if isinstance(value, str) and value.lower() in ("true", "false"):
                value = value.lower() == "true"
            if not isinstance(value, bool):
                raise refuse("it must be true or false")
        elif self.type == ParamType.MAP:
            if not isinstance(value, dict) or not value:
                raise refuse("it must be a non-empty object")
            for key, item in value.items():
                if not isinstance(item, str | int | bool):
                    raise refuse(f"the value of {excerpt(key)} must be a string, integer or "
                                 "boolean")
        if self.choices is not None and value not in self.choices:
            raise refuse(f"allowed: {', '.join(self.choices)}")
        return value


@dataclass(frozen=True)
class TaskSpec:
    """A task the gateway knows: its name, the capability it needs, its parameters.

    ``idempotent`` is False for tasks that act every time they run (power.cycle,
    bmc.reset): their result always says "changed". A task whose ``capability`` is None
    acts on the gateway itself, not on machines (``on_gateway``): its step names no
    machine, and comes last in its plan (``check_gateway_steps``).
    """

    name: str
    capability: Capability | None
    params: dict[str, Param] = field(default_factory=dict)
    idempotent: bool = True
    help: str = ""

    @property
    def on_gateway(self) -> bool:
        return self.capability is None

    def validate(self, params: dict[str, Any]) -> dict[str, Any]:
        """Return the full parameter set, or raise ProtocolError naming what is wrong."""
        if not isinstance(params, dict):
            raise ProtocolError(f"task {self.name}: parameters must be an object")
        unknown = sorted(set(params) - set(self.params))
        if unknown:
            takes = ", ".join(sorted(self.params)) or "no parameters"
            raise ProtocolError(f"task {self.name}: unknown parameter(s) "
                                f"{_cut(', '.join(unknown), MAX_NAME_LENGTH)}; it takes {takes}")
        resolved: dict[str, Any] = {}
        for name, param in self.params.items():
            if name in params and params[name] is not None:
                resolved[name] = param.check(self.name, name, params[name])
            elif param.required:
                raise ProtocolError(f"task {self.name}: parameter {name!r} is required")
            elif param.default is not None:
                resolved[name] = param.default
        return resolved


def _choices(values: type[enum.StrEnum]) -> tuple[str, ...]:
    return tuple(v.value for v in values)


_TIMEOUT = Param(ParamType.INTEGER, default=300, minimum=1, maximum=86400,
                 help="seconds to wait for the BMC to reach the state")
# A gateway's version as its wheel names it (PEP 440: 1.4.0, 1.4.0rc1, 1.4.0+site.2): it
# is also the name of its folder on the site, so no separator and no leading dot.
GATEWAY_VERSION_PATTERN = re.compile(r"^[0-9][0-9A-Za-z.+!_-]{0,63}$")
SHA256_PATTERN = re.compile(r"^[0-9a-f]{64}$")
MAX_ARTIFACT_BYTES = 2**40  # an artifact (image, firmware) a plan may name: 1 TiB
# An image fetched through the site's cache (docs/artifacts.md): the digest and size the
# cloud signs with the plan; the gateway hands the BMC its LAN copy's URL.
_ARTIFACT_PARAMS = {
    "sha256": Param(pattern=SHA256_PATTERN, shape="64 lowercase hex digits", default=None,
                    help="the image's SHA-256: fetch it once into the site's cache, check "
                    "it, and give the BMC the cache's LAN URL"),
    "size": Param(ParamType.INTEGER, default=None, minimum=1, maximum=MAX_ARTIFACT_BYTES,
                  help="the image's size in bytes (with sha256)"),
}

# What os.seed takes from a plan (docs/provisioning.md): never a secret, only what names and
# addresses the node; the gateway checks each again when it writes the seed.
HOSTNAME_PATTERN = re.compile(r"^(?=.{1,253}$)(?!-)[A-Za-z0-9-]{1,63}(?<!-)"
                              r"(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*$")
_IP = r"[0-9A-Fa-f:.]{2,45}"
_SEED_PARAMS = {
    "hostname": Param(pattern=HOSTNAME_PATTERN, shape="a DNS name", default=None,
                      help="the node's host name; default: the machine id"),
    "address": Param(pattern=re.compile(_IP + r"/[0-9]{1,3}"), shape="an IP address with a "
                     "prefix length (10.0.0.5/24)", default=None,
                     help="a static address for the first NIC; default: DHCP"),
    "gateway": Param(pattern=re.compile(_IP), shape="an IP address", default=None,
                     help="the default route (with address)"),
    "dns": Param(pattern=re.compile(_IP + r"(," + _IP + r"){0,2}"),
                 shape="1-3 IP addresses separated by commas", default=None,
                 help="name servers (with address)"),
    "slot": Param(default=None, help="the BMC's slot for the seed; default: a removable "
                  "(USB stick, removable disk, floppy) slot, else a CD slot other than the "
                  "first"),
}

TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec("power.ensure", Capability.POWER, {
            "state": Param(choices=_choices(PowerState)),
            "graceful": Param(ParamType.BOOLEAN, default=True,
                              help="off: ask the OS to shut down first, force after a while"),
            "graceful_timeout": Param(ParamType.INTEGER, default=120, minimum=0,
                                      maximum=3600),
        }, help="power on or off; waits until the BMC reads the state back"),
        TaskSpec("power.cycle", Capability.POWER, idempotent=False,
                 help="power off and on again (a hard reset); acts every time"),
        TaskSpec("boot.override", Capability.BOOT, {
            "target": Param(choices=_choices(BootTarget)),
            "mode": Param(choices=_choices(BootMode), default=BootMode.ONCE.value),
            "firmware_mode": Param(choices=_choices(BootFirmwareMode), default=None),
        }, help="boot from a device at the next boot (once) or every boot"),
        TaskSpec("media.insert", Capability.MEDIA, {
            "image": Param(ParamType.URL),
            "slot": Param(default=None, help="the BMC's slot id; default: the first CD slot"),
            "boot": Param(ParamType.BOOLEAN, default=False,
                          help="also boot from it once (boot.override target=cd)"),
            **_ARTIFACT_PARAMS,
        }, help="insert an image as virtual media"),
        TaskSpec("media.eject", Capability.MEDIA, {
            "slot": Param(default=None, help="default: every slot with media"),
        }),
        TaskSpec("bios.read", Capability.BIOS, help="read BIOS attributes, current and pending"),
        TaskSpec("bios.apply", Capability.BIOS, {
            "attributes": Param(ParamType.MAP),
            "reboot": Param(ParamType.BOOLEAN, default=False,
                            help="reset now and verify the values took effect"),
            "timeout": _TIMEOUT,
        }, help="write BIOS attributes (checked against what the BMC allows first)"),
        TaskSpec("firmware.inventory", Capability.FIRMWARE),
        TaskSpec("firmware.update", Capability.FIRMWARE, {
            "image": Param(ParamType.URL),
            "component": Param(default=None, help="FirmwareInventory id or name to update"),
            "version": Param(default=None, help="the version the image holds: skip if the "
                             "component has it already, verify it afterwards"),
            "timeout": Param(ParamType.INTEGER, default=1800, minimum=10, maximum=86400),
            **_ARTIFACT_PARAMS,
        }, help="update firmware from an image URL and follow the BMC's task to the end"),
        TaskSpec("inventory.collect", Capability.INVENTORY),
        TaskSpec("health.check", Capability.HEALTH, {
            "fail_on": Param(choices=("warning", "critical", "never"), default="critical"),
        }),
        TaskSpec("sel.collect", Capability.SEL, {
            "limit": Param(ParamType.INTEGER, default=100, minimum=1, maximum=10000),
        }),
        TaskSpec("sel.clear", Capability.SEL),
        TaskSpec("wait.for", Capability.POWER, {
            "power": Param(choices=_choices(PowerState)),
            "timeout": _TIMEOUT,
        }, help="wait until the machine reaches a power state"),
        TaskSpec("bmc.reset", Capability.BMC_RESET, {
            "timeout": _TIMEOUT,
        }, idempotent=False, help="restart a wedged BMC and wait until it answers again"),
        TaskSpec("os.seed", Capability.MEDIA, _SEED_PARAMS,
                 help="build the machine's NoCloud seed (its host name, the site's join "
                 "secrets, a one-time phone-home token) and insert it as virtual media"),
        TaskSpec("os.wait_installed", Capability.POWER, {
            "timeout_s": Param(ParamType.INTEGER, default=3600, minimum=60, maximum=86400,
                               help="seconds the install may take, from the reset"),
            "boot_read_s": Param(ParamType.INTEGER, default=300, minimum=10, maximum=3600,
                                 help="seconds the BMC has to start reading the installer "
                                 "after the reset, else boot-once did not take"),
        }, idempotent=False, help="wait until the installed system phones home with its "
           "facts, checking that the machine booted the installer"),
        TaskSpec("gateway.upgrade", None, {
            "version": Param(pattern=GATEWAY_VERSION_PATTERN,
                             shape="a version (1-64 letters, digits and . + ! _ -, from a "
                                   "digit)",
                             help="the version the wheel holds; the gateway runs it after"),
            "url": Param(ParamType.URL, help="where the gateway downloads the wheel from"),
            "sha256": Param(pattern=SHA256_PATTERN, shape="64 lowercase hex digits",
                            help="the wheel's SHA-256: the bytes the cloud signed for"),
            "health_timeout": Param(ParamType.INTEGER, default=300, minimum=10,
                                    maximum=3600,
                                    help="seconds the new version has to prove its health, "
                                    "else the previous one comes back"),
        }, help="install a new version of the gateway beside the running one, restart into "
           "it, and roll back by itself unless it proves healthy in time"),
    )
}


def check_gateway_steps(tasks: Sequence[str]) -> None:
    """Raise ProtocolError unless a task on the gateway itself (``TaskSpec.on_gateway``) is
    the last of the plan's tasks: what runs after it would run on another version of the
    gateway than the one that accepted the plan, so nothing may."""
    for index, name in enumerate(tasks):
        spec = TASKS.get(name)
        if spec is not None and spec.on_gateway and index != len(tasks) - 1:
            raise ProtocolError(f"step {index} ({name}) must be the plan's last step: the "
                                f"gateway restarts into another version after it, and "
                                f"{len(tasks) - 1 - index} step(s) follow it")


def task_spec(name: str) -> TaskSpec:
    try:
        return TASKS[name]
    except (KeyError, TypeError):
        raise ProtocolError(
            f"unknown task {excerpt(name)}; known tasks: {', '.join(sorted(TASKS))}"
        ) from None


# --- topics ----------------------------------------------------------------------------


def _check_site(site: str) -> str:
    if not isinstance(site, str) or not SITE_ID_PATTERN.fullmatch(site):
        raise ProtocolError(
            f"site id {excerpt(site)} is invalid: use 1-63 lowercase letters, digits and '-', "
            "starting with a letter or digit"
        )
    return site


def site_topic_root(site: str) -> str:
    return f"{TOPIC_ROOT}/{_check_site(site)}"


def plan_topic(site: str) -> str:
    return f"{site_topic_root(site)}/down/plan"


def cancel_topic(site: str) -> str:
    return f"{site_topic_root(site)}/down/cancel"


def down_filter(site: str) -> str:
    """What a gateway subscribes to: everything the cloud sends its site."""
    return f"{site_topic_root(site)}/down/#"


def up_topic(site: str, kind: str) -> str:
    if kind not in UP_KINDS:
        raise ProtocolError(f"{kind!r} is not a gateway-to-cloud message kind")
    return f"{site_topic_root(site)}/up/{kind}"


# What the cloud's ingestion (the IoT rule, or the local bridge) subscribes to.
UP_FILTER = f"{TOPIC_ROOT}/+/up/+"


def parse_topic(topic: str) -> tuple[str, str, str]:
    """Split a topic into (site, direction, kind); raise ProtocolError if it is not ours."""
    prefix = TOPIC_ROOT + "/"
    parts = topic[len(prefix):].split("/") if topic.startswith(prefix) else []
    if len(parts) != 3 or parts[1] not in ("up", "down"):
        raise ProtocolError(f"topic {excerpt(topic)} is not an Edgeplane topic")
    site, direction, kind = parts
    _check_site(site)
    return site, direction, kind


# --- messages --------------------------------------------------------------------------


def new_id() -> str:
    return uuid.uuid4().hex


def now() -> float:
    return round(time.time(), 3)


# --- field checks: each takes the value a peer sent and where it is, raises ProtocolError --

Check = Callable[[Any, str], None]


def _string(limit: int) -> Check:
    def check(value: Any, where: str) -> None:
        if not isinstance(value, str):
            raise ProtocolError(f"{where} must be a string, not {excerpt(value)}")
        if len(value) > limit:
            raise ProtocolError(f"{where} is {len(value)} characters long; at most {limit}")
    return check


_name = _string(MAX_NAME_LENGTH)
_text = _string(MAX_TEXT_LENGTH)


def _matching(pattern: re.Pattern[str], what: str) -> Check:
    def check(value: Any, where: str) -> None:
        if not isinstance(value, str) or not pattern.fullmatch(value):
            raise ProtocolError(f"{where} must be {what}, not {excerpt(value)}")
    return check


_site = _matching(SITE_ID_PATTERN, "a site id (1-63 lowercase letters, digits and '-')")
_machine_id = _matching(MACHINE_ID_PATTERN, "a machine id (1-63 letters, digits, '_', '.', '-')")
_execution_id = _matching(EXECUTION_ID_PATTERN,
                          "an execution id (1-160 letters, digits, '_', '.', '-')")


def _time(value: Any, where: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProtocolError(f"{where} must be a number, not {excerpt(value)}")
    if not (value == 0 or MIN_TIME <= value <= MAX_TIME):  # NaN and infinities fail too
        raise ProtocolError(f"{where} must be 0 or a number from {MIN_TIME:g} to "
                            f"{MAX_TIME:g}, not {excerpt(value)}")


def _count(value: Any, where: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ProtocolError(f"{where} must be a non-negative integer, not {excerpt(value)}")
    if value > MAX_COUNT:
        raise ProtocolError(f"{where} must be a non-negative integer no greater than "
                            f"{MAX_COUNT}, not {excerpt(value)}")


def _flag(value: Any, where: str) -> None:
    if not isinstance(value, bool):
        raise ProtocolError(f"{where} must be true or false, not {excerpt(value)}")


def _object(value: Any, where: str) -> None:
    if not isinstance(value, dict):
        raise ProtocolError(f"{where} must be an object, not {excerpt(value)}")


def _parameters(value: Any, where: str) -> None:
    _object(value, where)
    for key in value:
        _name(key, f"{where}: a parameter name")


def _window(value: Any, where: str) -> None:
    """A maintenance window: an object of exactly its fields, each well-formed."""
    if isinstance(value, Window):
        value = {f.name: getattr(value, f.name) for f in fields(Window)}
    _object(value, where)
    if "start" not in value or "end" not in value:
        raise ProtocolError(f"{where} must have a start and an end, not "
                            f"{excerpt(sorted(value))}")
    try:
        _window_of(value).check()
    except WindowError as exc:
        raise ProtocolError(f"{where}: {exc}") from None


def _window_of(value: dict[str, Any]) -> Window:
    """The window of an object (fields it does not know are left out, as in a message)."""
    return Window(**{f.name: value[f.name] for f in fields(Window) if f.name in value})


def _optional(check: Check) -> Check:
    def optional(value: Any, where: str) -> None:
        if value is not None:
            check(value, where)
    return optional


def _list(limit: int | None, item: Check) -> Check:
    def check(value: Any, where: str) -> None:
        if not isinstance(value, list):
            raise ProtocolError(f"{where} must be a list, not {excerpt(value)}")
        if limit is not None and len(value) > limit:
            raise ProtocolError(f"{where} has {len(value)} items; at most {limit}")
        for index, entry in enumerate(value):
            item(entry, f"{where}[{index}]")
    return check


@dataclass(frozen=True)
class Message:
    """Fields every message has. Subclasses set ``KIND`` and add their own fields.

    ``_CHECKS`` (here and in every class a message is made of) checks each field a peer
    sent before the message is built: its type and its bounds.
    """

    KIND: ClassVar[str] = ""
    _CHECKS: ClassVar[dict[str, Check]] = {"site": _site, "id": _name, "ts": _time}

    site: str
    id: str = field(default_factory=new_id)
    ts: float = field(default_factory=now)

    def to_dict(self) -> dict[str, Any]:
        return {"v": PROTOCOL_VERSION, "kind": self.KIND, **_plain(self)}

    def encode(self) -> bytes:
        return encode_object(self.to_dict())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Message:
        return _build(cls, data, f"{cls.KIND} message", "is incomplete")


def plain(value: Any) -> Any:
    """A message, or a value it holds (a machine's result, a step's...), as plain JSON
    values, exactly as it goes on the wire."""
    return _plain(value)


def encoded_size(value: Any) -> int:
    """The bytes ``value`` (a message, or what a message holds: a machine's result, an
    observation...) takes in a message on the wire: a message's size is its fields' and
    its items' sizes, each encoded alone, plus the JSON between them."""
    return len(json.dumps(_plain(value), separators=(",", ":"), sort_keys=True))


def encode_object(data: dict[str, Any]) -> bytes:
    """A message's object as it goes on the wire: compact JSON with sorted keys."""
    return json.dumps(data, separators=(",", ":"), sort_keys=True).encode()


def _default(spec: Field[Any]) -> Any:
    if spec.default is not MISSING:
        return spec.default
    if spec.default_factory in (list, dict):  # not ids or times: each call is new
        return spec.default_factory()
    return MISSING


def _plain(value: Any) -> Any:
    """A message's value as it goes on the wire, in one walk: dataclasses as objects, enums
    as their values, no None in an object; step and machine results, observations and plans
    also leave out the fields that hold their default (a receiver fills them in again)."""
    if is_dataclass(value) and not isinstance(value, type):
        terse = isinstance(value, StepResult | MachineResult | MachineObservation | Plan)
        return {f.name: _plain(item) for f in fields(value)
                if (item := getattr(value, f.name)) is not None
                and not (terse and item == _default(f))}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


@dataclass(frozen=True)
class PlanStep:
    """One step of a plan: a task with concrete parameters, on some of the site's machines."""

    _CHECKS: ClassVar[dict[str, Check]] = {
        "task": _name, "params": _parameters, "machines": _list(MAX_MACHINES, _machine_id)}

    task: str
    params: dict[str, Any]
    machines: list[str]


@dataclass(frozen=True)
class Plan(Message):
    """The one message a site gets per rollout: every step, already rendered for it."""

    KIND: ClassVar[str] = "plan"
    _CHECKS: ClassVar[dict[str, Check]] = {
        **Message._CHECKS, "execution_id": _execution_id, "rollout_id": _name,
        "expires_at": _optional(_time), "detail": _name, "observe": _flag,
        "window": _optional(_window)}

    execution_id: str = ""
    rollout_id: str = ""
    steps: list[PlanStep] = field(default_factory=list)
    expires_at: float | None = None
    detail: str = Detail.FULL  # how much the gateway reports of each step (``Detail``)
    observe: bool = True  # send the machines' observed state after the plan (for drift)
    # The site's maintenance window: a gateway that receives the plan outside it holds it
    # until it opens (or the plan expires). None: the plan runs at once.
    window: Window | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Plan:
        raw_steps = data.get("steps")
        if not isinstance(raw_steps, list) or not raw_steps:
            raise ProtocolError("plan has no steps")
        if len(raw_steps) > MAX_STEPS:
            raise ProtocolError(f"plan has {len(raw_steps)} steps; at most {MAX_STEPS}")
        steps = []
        for index, raw in enumerate(raw_steps):
            if not isinstance(raw, dict):
                raise ProtocolError(f"plan step {index} is not an object")
            try:
                steps.append(_build(PlanStep, raw, ""))
            except ProtocolError as exc:
                raise ProtocolError(f"plan step {index} is malformed: {exc}") from None
        raw_window = data.get("window")
        if isinstance(raw_window, dict):  # checked as it is built (``_window``)
            _window(raw_window, "plan field 'window'")
            raw_window = _window_of(raw_window)
        plan = super().from_dict({**data, "steps": steps, "window": raw_window})
        assert isinstance(plan, Plan)
        if not plan.execution_id:
            raise ProtocolError("plan has no execution_id")
        if len(plan.machines) > MAX_MACHINES:
            raise ProtocolError(f"plan names {len(plan.machines)} machines; at most "
                                f"{MAX_MACHINES}")
        return plan

    def check_tasks(self) -> None:
        """Raise ProtocolError unless every step names a known task with valid parameters
        (what the gateway checks before it accepts a plan)."""
        for index, step in enumerate(self.steps):
            try:
                spec = task_spec(step.task)
                spec.validate(step.params)
                if spec.on_gateway and step.machines:
                    raise ProtocolError(f"task {step.task} runs on the gateway itself: its "
                                        "step names no machine")
            except ProtocolError as exc:
                raise ProtocolError(f"plan step {index}: {exc}", kind=self.KIND,
                                    execution_id=self.execution_id) from None
        try:
            check_gateway_steps([step.task for step in self.steps])
        except ProtocolError as exc:
            raise ProtocolError(f"plan {exc}", kind=self.KIND,
                                execution_id=self.execution_id) from None

    @property
    def machines(self) -> list[str]:
        seen: dict[str, None] = {}
        for step in self.steps:
            seen.update(dict.fromkeys(step.machines))
        return list(seen)


@dataclass(frozen=True)
class Cancel(Message):
    """The cloud canceled a rollout: drop the plan if it has not started; if it is running,
    finish the current step and skip the rest. The gateway answers with a Result."""

    KIND: ClassVar[str] = "cancel"
    _CHECKS: ClassVar[dict[str, Check]] = {
        **Message._CHECKS, "execution_id": _execution_id, "reason": _text}

    execution_id: str = ""
    reason: str = ""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Cancel:
        cancel = super().from_dict(data)
        assert isinstance(cancel, Cancel)
        if not cancel.execution_id:
            raise ProtocolError("cancel has no execution_id")
        return cancel


@dataclass(frozen=True)
class Presence(Message):
    """Whether a site's gateway is connected; also its last will (online=False).

    ``session`` identifies one MQTT connection of the gateway (it is the time the gateway
    set up that connection's last will). The will is written when the connection is made
    and delivered much later, so its ``ts`` says nothing about order; instead a receiver
    orders presence by (session, offline after online): a later connection wins, and
    within one connection the will (offline) wins over the online report.
    """

    KIND: ClassVar[str] = "presence"
    _CHECKS: ClassVar[dict[str, Check]] = {
        **Message._CHECKS, "online": _flag, "session": _time, "gateway_version": _name}

    online: bool = True
    session: float = 0.0
    gateway_version: str = ""

    @property
    def order(self) -> tuple[float, int]:
        return (self.session, 0 if self.online else 1)


@dataclass(frozen=True)
class CacheStatus(Message):
    """What the site's artifact cache holds and did (docs/artifacts.md): current state,
    so a receiver keeps the one with the latest ``ts``. Counters count since the cache
    was created (``hits``, ``downloads``, ``wire_bytes``, ``evictions``) or since the
    gateway started (``served_*``: what the BMCs fetched from it)."""

    KIND: ClassVar[str] = "cache"
    _CHECKS: ClassVar[dict[str, Check]] = {
        **Message._CHECKS, "artifacts": _count, "bytes": _count, "max_bytes": _count,
        "hits": _count, "downloads": _count, "wire_bytes": _count,
        "served_requests": _count, "served_bytes": _count, "evictions": _count}

    artifacts: int = 0
    bytes: int = 0
    max_bytes: int = 0
    hits: int = 0
    downloads: int = 0
    wire_bytes: int = 0
    served_requests: int = 0
    served_bytes: int = 0
    evictions: int = 0


@dataclass(frozen=True)
class MachineReport:
    """What a gateway knows about one machine. Never carries BMC credentials."""

    _CHECKS: ClassVar[dict[str, Check]] = {
        "id": _name, "protocol": _name, "address": _text,
        "capabilities": _list(None, _name), "manufacturer": _optional(_text),
        "model": _optional(_text), "serial": _optional(_text), "power": _optional(_name),
        "error": _optional(_text), "machine_class": _optional(_name)}

    id: str
    protocol: str
    address: str
    capabilities: list[str] = field(default_factory=list)
    manufacturer: str | None = None
    model: str | None = None
    serial: str | None = None
    power: str | None = None
    error: str | None = None
    machine_class: str | None = None  # from the site's config (``class = ...``)


def _check_parts(kind: str, part: int | None, parts: int | None) -> None:
    """A report in parts numbers each part from 1 to ``parts`` (at most one per machine);
    a whole report has neither number."""
    if (part is None) != (parts is None):
        given, missing = ("part", "parts") if parts is None else ("parts", "part")
        raise ProtocolError(f"{kind} message has field {given!r} but no {missing!r}")
    if part is None or parts is None:
        return
    if not 1 <= parts <= MAX_MACHINES:
        raise ProtocolError(f"{kind} message field 'parts' is {parts}; it must be from 1 to "
                            f"{MAX_MACHINES}")
    if not 1 <= part <= parts:
        raise ProtocolError(f"{kind} message field 'part' is {part}; it must be from 1 to "
                            f"{parts} (its 'parts')")


@dataclass(frozen=True)
class Inventory(Message):
    """What every machine of the site is. One too large for a message (MAX_REPORT_BYTES)
    goes in ``parts`` messages, each with some of the machines, numbered by ``part``."""

    KIND: ClassVar[str] = "inventory"
    _CHECKS: ClassVar[dict[str, Check]] = {
        **Message._CHECKS, "gateway_version": _name, "part": _optional(_count),
        "parts": _optional(_count)}

    gateway_version: str = ""
    machines: list[MachineReport] = field(default_factory=list)
    part: int | None = None
    parts: int | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Inventory:
        machines = [_build(MachineReport, m, f"inventory machine {index}") for index, m in
                    enumerate(_objects(data, "machines", MAX_MACHINES, cls.KIND))]
        inventory = super().from_dict({**data, "machines": machines})
        assert isinstance(inventory, Inventory)
        _check_parts(cls.KIND, inventory.part, inventory.parts)
        return inventory


MAX_TRIMMED_FIELDS = 8  # fields a step result may say it trimmed


def _trimmed(value: Any, where: str) -> None:
    _object(value, where)
    if len(value) > MAX_TRIMMED_FIELDS:
        raise ProtocolError(f"{where} names {len(value)} fields; at most {MAX_TRIMMED_FIELDS}")
    for name, count in value.items():
        _name(name, f"{where}: a field name")
        _count(count, f"{where} of {excerpt(name)}")


@dataclass(frozen=True)
class StepResult:
    """The outcome of one step on one machine. ``changed`` is False when it was already so."""

    _CHECKS: ClassVar[dict[str, Check]] = {
        "task": _name, "state": _name, "changed": _flag, "message": _text,
        "started_at": _optional(_time), "finished_at": _optional(_time),
        "data": _optional(_object), "retryable": _flag, "index": _optional(_count),
        "trimmed": _optional(_trimmed)}

    task: str
    state: str = StepState.PENDING
    changed: bool = False
    message: str = ""
    started_at: float | None = None
    finished_at: float | None = None
    data: dict[str, Any] | None = None  # what a read task found (inventory, BIOS, SEL...)
    # A failure that may pass if tried again later (BMC unreachable, timed out, 5xx), as
    # opposed to one that will not (wrong credentials, refused parameters).
    retryable: bool = False
    index: int | None = None  # its place among the machine's steps, in a summarized report
    # What was left out of this step's output for the report to fit one message
    # (MAX_REPORT_BYTES): field name ("data", "message") -> how many characters of it.
    trimmed: dict[str, int] | None = None


@dataclass(frozen=True)
class MachineResult:
    """A snapshot of one machine's share of an execution."""

    _CHECKS: ClassVar[dict[str, Check]] = {
        "machine": _name, "state": _name, "summary": _optional(_text)}

    machine: str
    state: str = MachineState.PENDING
    steps: list[StepResult] = field(default_factory=list)
    summary: str | None = None  # a letter per step (STEP_LETTERS); ``steps`` then has the rest

    @classmethod
    def from_dict(cls, data: dict[str, Any], what: str = "machine result") -> MachineResult:
        steps = [_build(StepResult, s, f"{what} step {index}") for index, s in
                 enumerate(_objects(data, "steps", MAX_STEPS, what))]
        return _build(cls, {**data, "steps": steps}, what)


# One letter per step in a summarized machine result: (state, changed).
STEP_LETTERS: dict[str, tuple[StepState, bool]] = {
    "c": (StepState.SUCCEEDED, True),
    "u": (StepState.SUCCEEDED, False),
    "f": (StepState.FAILED, False),
    "s": (StepState.SKIPPED, False),
    "r": (StepState.RUNNING, False),
    "p": (StepState.PENDING, False),
    "?": (StepState.UNCERTAIN, False),
}
_LETTER_OF = {value: letter for letter, value in STEP_LETTERS.items()}
# Tasks whose data is what the operator asked for: a summary keeps it.
READ_TASKS = frozenset({"bios.read", "firmware.inventory", "inventory.collect",
                        "health.check", "sel.collect"})


def summarize(machine: MachineResult) -> MachineResult:
    """The machine's result with a letter per step, and in full only the steps that say
    more than their letter: a failure (its message, whether it is retryable) and what a read
    task found. The cloud knows each step's task from the plan; a succeeded step's message
    and times stay in the site's journal."""
    letters, kept = [], []
    for index, step in enumerate(machine.steps):
        letters.append(_LETTER_OF.get((StepState(step.state), bool(step.changed)
                                       and step.state == StepState.SUCCEEDED), "p"))
        if step.state in (StepState.FAILED, StepState.UNCERTAIN) or step.retryable or (
                step.data is not None and step.task in READ_TASKS):
            kept.append(replace(step, index=index, started_at=None, finished_at=None))
    return MachineResult(machine=machine.machine, state=machine.state, steps=kept,
                         summary="".join(letters))


def expand_steps(summary: str, kept: list[dict[str, Any]],
                 tasks: list[str] | None) -> list[dict[str, Any]]:
    """The steps of a summarized machine result, as plain step results: the letters give
    state and change, ``kept`` what was sent in full, ``tasks`` (the machine's steps in the
    plan, when known) each step's task."""
    by_index = {step.get("index"): step for step in kept}
    steps = []
    for index, letter in enumerate(summary):
        state, changed = STEP_LETTERS.get(letter, (StepState.PENDING, False))
        task = tasks[index] if tasks is not None and index < len(tasks) else f"step {index + 1}"
        steps.append({"task": task, "state": str(state), "changed": changed,
                      **{k: v for k, v in by_index.get(index, {}).items() if k != "index"}})
    return steps


@dataclass(frozen=True)
class Progress(Message):
    """Snapshots of the machines whose state changed since the last report."""

    KIND: ClassVar[str] = "progress"
    _CHECKS: ClassVar[dict[str, Check]] = {
        **Message._CHECKS, "execution_id": _execution_id, "seq": _count,
        "waiting_until": _optional(_time)}

    execution_id: str = ""
    seq: int = 0
    machines: list[MachineResult] = field(default_factory=list)
    # The gateway holds the plan until then, when the site's maintenance window opens: no
    # machine has started. None: the plan is not held.
    waiting_until: float | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Progress:
        machines = [MachineResult.from_dict(m, f"{cls.KIND} machine {index}") for index, m
                    in enumerate(_objects(data, "machines", MAX_MACHINES, cls.KIND))]
        progress = super().from_dict({**data, "machines": machines})
        assert isinstance(progress, Progress)
        return progress


@dataclass(frozen=True)
class Result(Progress):
    """The final report of an execution: every machine, and the execution's end state."""

    KIND: ClassVar[str] = "result"
    _CHECKS: ClassVar[dict[str, Check]] = {
        **Progress._CHECKS, "state": _name, "message": _text, "part": _optional(_count),
        "parts": _optional(_count)}

    state: str = ExecutionState.SUCCEEDED
    message: str = ""
    # A result too large for one message (MAX_REPORT_BYTES) goes in ``parts`` messages,
    # numbered ``part`` from 1: each has the execution's seq, state and message and some of
    # its machines, every machine in one part. None: the whole result in this message.
    part: int | None = None
    parts: int | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Result:
        result = super().from_dict(data)
        assert isinstance(result, Result)
        _check_parts(cls.KIND, result.part, result.parts)
        return result


def join_parts(results: Iterable[Result]) -> Result | None:
    """The whole result of one execution from the results received of it, duplicates and
    any order allowed: the one of the greatest ``seq``, or its parts put together once every
    one is there (machines in part order); None while a part is missing."""
    received = list(results)
    if not received:
        return None
    seq = max(result.seq for result in received)
    newest = [result for result in received if result.seq == seq]
    whole = next((result for result in newest if result.parts is None), None)
    if whole is not None:
        return whole
    parts = {result.part or 0: result for result in newest}
    if sorted(parts) != list(range(1, (newest[0].parts or 0) + 1)):
        return None
    return replace(parts[1], machines=[m for n in sorted(parts) for m in parts[n].machines],
                   part=None, parts=None)


def _objects(data: dict[str, Any], key: str, limit: int, what: str) -> list[dict[str, Any]]:
    """The list of objects ``data[key]`` (empty if absent), at most ``limit`` long."""
    value = data.get(key, [])
    where = f"{what} field {key!r}"
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ProtocolError(f"{where} must be a list of objects")
    if len(value) > limit:
        raise ProtocolError(f"{where} has {len(value)} items; at most {limit}")
    return value


_T = TypeVar("_T", bound="DataclassInstance")


_FIELD_NAMES: dict[type, frozenset[str]] = {}  # a class's field names, read once


def _build(cls: type[_T], data: dict[str, Any], what: str,
           incomplete: str = "is malformed") -> _T:
    """``cls`` from the fields of ``data`` it has, each checked first (``cls._CHECKS``)."""
    known = _FIELD_NAMES.get(cls)
    if known is None:  # dataclasses.fields() walks the class's fields at each call
        known = _FIELD_NAMES[cls] = frozenset(f.name for f in fields(cls))
    values = {k: v for k, v in data.items() if k in known}
    checks: dict[str, Check] = getattr(cls, "_CHECKS", {})
    for name, value in values.items():
        check = checks.get(name)
        if check is not None:
            check(value, f"{what} field {name!r}" if what else f"field {name!r}")
    try:
        return cls(**values)
    except TypeError as exc:
        raise ProtocolError(f"{what or 'it'} {incomplete}: {exc}") from None


@dataclass(frozen=True)
class MachineObservation:
    """What one machine's BMC reads now: the facts the cloud compares with desired state.

    A field is None where the machine has no such interface (no BIOS over IPMI) or the read
    failed (``error`` says why); the cloud then does not judge that field.
    """

    _CHECKS: ClassVar[dict[str, Check]] = {
        "machine": _name, "power": _optional(_name), "boot": _optional(_object),
        "bios": _optional(_object), "firmware": _optional(_list(None, _object)),
        "error": _optional(_text)}

    machine: str
    power: str | None = None
    boot: dict[str, Any] | None = None  # {"target": "pxe", "mode": "once"}, {} for none
    bios: dict[str, Any] | None = None  # current attributes
    firmware: list[dict[str, Any]] | None = None  # [{"id", "name", "version"}]
    error: str | None = None


@dataclass(frozen=True)
class Observed(Message):
    """The observed state of a site's machines, after a plan (``execution_id``) or on the
    gateway's interval."""

    KIND: ClassVar[str] = "observed"
    _CHECKS: ClassVar[dict[str, Check]] = {
        **Message._CHECKS, "trigger": _name, "execution_id": _optional(_execution_id)}

    trigger: str = "interval"  # "plan" or "interval"
    execution_id: str | None = None
    machines: list[MachineObservation] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Observed:
        machines = [_build(MachineObservation, m, f"observed machine {index}")
                    for index, m in enumerate(_objects(data, "machines", MAX_MACHINES, cls.KIND))]
        observed = super().from_dict({**data, "machines": machines})
        assert isinstance(observed, Observed)
        return observed


MESSAGE_TYPES: dict[str, type[Message]] = {
    cls.KIND: cls for cls in (Plan, Cancel, Presence, Inventory, Progress, Result, Observed,
                              CacheStatus)
}
UP_KINDS = frozenset({"presence", "inventory", "progress", "result", "observed", "cache"})


# --- decoding ------------------------------------------------------------------------

_STRING_OR_BRACKET = re.compile(r'["\[\]{}]')
_STRING_REST = re.compile(r'[^"\\]*+(?:\\.[^"\\]*+)*+"', re.DOTALL)  # after its '"'
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def parse_json(payload: bytes | bytearray | str, max_bytes: int = MAX_MESSAGE_BYTES,
               max_depth: int = MAX_DEPTH) -> Any:
    """The JSON value of ``payload``, if it is within the bounds; else ProtocolError.

    The size and the depth are measured before the payload is parsed: ``json.loads``
    recurses once per level (100,000 levels raise RecursionError), so the depth is found by
    a scan of the brackets outside strings, in one pass. The value must be UTF-8, hold no
    NaN or infinity, and no half of a surrogate pair (a string no store can encode).
    """
    if isinstance(payload, str):
        if len(payload) > max_bytes:
            raise ProtocolError(f"message is over {max_bytes} bytes; at most {max_bytes}")
        text, size = payload, len(payload.encode("utf-8", "surrogatepass"))
    else:
        size = len(payload)
        text = ""
    if size > max_bytes:
        raise ProtocolError(f"message is {size} bytes; at most {max_bytes}")
    if not isinstance(payload, str):
        try:
            text = bytes(payload).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError(f"message is not UTF-8: {exc}") from None
    if text.count("[") + text.count("{") > max_depth and _too_deep(text, max_depth):
        raise ProtocolError(f"message is nested more than {max_depth} levels deep")
    try:
        value = json.loads(text, parse_constant=_no_constant, parse_float=_finite)
    except ValueError as exc:  # json.JSONDecodeError, ProtocolError, int() of 4,300+ digits
        raise ProtocolError(f"message is not valid JSON: {_cut(str(exc), 200)}") from None
    if _SURROGATE_ESCAPE.search(text):
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise ProtocolError("message holds half of a surrogate pair") from None
    return value


def _too_deep(text: str, limit: int) -> bool:
    depth, position = 0, 0
    while (found := _STRING_OR_BRACKET.search(text, position)) is not None:
        position = found.end()
        char = found.group()
        if char == '"':
            rest = _STRING_REST.match(text, position)
            if rest is None:
                return False  # a string never closed: json.loads refuses it right there
            position = rest.end()
        elif char in "[{":
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def _no_constant(name: str) -> Any:
    raise ProtocolError(f"{name} is not a number a message may hold")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ProtocolError(f"number {_cut(text, 40)} is out of range")
    return value


def decode(payload: bytes | bytearray | str, topic: str | None = None,
           max_bytes: int = MAX_MESSAGE_BYTES) -> Message:
    """Parse a message within the bounds (``parse_json``) and check every field; when the
    topic is given, it must agree with the message's site and kind.

    The topic is what the broker's ACL (or the IoT policy) vouches for, so a gateway cannot
    report for another site by writing another site id into the payload. A ProtocolError
    names what is wrong, and carries the message's kind and execution id when they could
    be read.
    """
    return decode_object(parse_json(payload, max_bytes), topic)


def decode_object(data: Any, topic: str | None = None) -> Message:
    """``decode`` of a value ``parse_json`` gave: for a receiver that reads the object
    before it decodes it (a gateway checks the signature first)."""
    if not isinstance(data, dict):
        raise ProtocolError("message is not a JSON object")
    try:
        return _decode(data, topic)
    except ProtocolError as exc:
        exc.about(data)
        raise


def _decode(data: dict[str, Any], topic: str | None) -> Message:
    version = data.get("v")
    if type(version) is not int or version not in SUPPORTED_VERSIONS:
        raise ProtocolError(
            f"protocol version {excerpt(version)} is not supported (supported: "
            f"{', '.join(map(str, sorted(SUPPORTED_VERSIONS)))})"
        )
    kind = data.get("kind")
    cls = MESSAGE_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ProtocolError(f"unknown message kind {excerpt(kind)}")
    message = cls.from_dict(data)
    if topic is not None:
        site, _, topic_kind = parse_topic(topic)
        if site != message.site or topic_kind != kind:
            raise ProtocolError(
                f"{kind} message for site {message.site!r} arrived on topic {excerpt(topic)}"
            )
    return message


# --- signatures ------------------------------------------------------------------------

SIGNATURE_FIELD = "signature"
SIGNATURE_BYTES = 64  # an Ed25519 signature
_SIGNATURE_PARTS = ("key", "expires", "value")
_BASE64URL = re.compile(r"^[A-Za-z0-9_-]*={0,2}$")


@dataclass(frozen=True)
class Signature:
    """A message's signature as read (``split_signature``), not verified yet.

    ``expires`` is the number as the message holds it: an integer stays one, so that the
    signed bytes a receiver builds again are the sender's."""

    key: str
    expires: float
    value: bytes

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "expires": self.expires,
                "value": base64.urlsafe_b64encode(self.value).rstrip(b"=").decode()}


def key_id(raw_public_key: bytes) -> str:
    """The id a signature names its key by: from the raw 32-byte Ed25519 public key."""
    return "ed25519:" + hashlib.sha256(raw_public_key).hexdigest()[:16]


def canonical(value: Any) -> bytes:
    """The one encoding of a value that is signed: sorted keys, no spaces, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode()


def signed_bytes(data: dict[str, Any], key: str, expires: float) -> bytes:
    """What a signature by ``key`` expiring at ``expires`` signs: the canonical form of the
    message's object ``data`` with ``signature`` reduced to its key and expiry."""
    unsigned = {name: value for name, value in data.items() if name != SIGNATURE_FIELD}
    return canonical({**unsigned, SIGNATURE_FIELD: {"key": key, "expires": expires}})


def with_signature(data: dict[str, Any], signature: Signature) -> dict[str, Any]:
    """The message's object ``data`` carrying ``signature``."""
    return {**data, SIGNATURE_FIELD: signature.to_dict()}


def split_signature(data: dict[str, Any]) -> tuple[dict[str, Any], Signature]:
    """The message's object without its signature, and the signature, read within bounds
    (not verified: that takes the key). A ProtocolError names the field that is wrong, and
    carries the message's kind and execution id when they could be read."""
    try:
        return _split_signature(data)
    except ProtocolError as exc:
        exc.about(data)
        raise


def _split_signature(data: dict[str, Any]) -> tuple[dict[str, Any], Signature]:
    if SIGNATURE_FIELD not in data:
        raise ProtocolError(f"the message is not signed (no field {SIGNATURE_FIELD!r})")
    raw = data[SIGNATURE_FIELD]
    if not isinstance(raw, dict):
        raise ProtocolError(f"field {SIGNATURE_FIELD!r} must be an object, not {excerpt(raw)}")
    unknown = sorted(str(name) for name in raw if name not in _SIGNATURE_PARTS)
    if unknown:
        raise ProtocolError(f"field {SIGNATURE_FIELD!r} has unknown field(s) "
                            f"{_cut(', '.join(unknown), MAX_NAME_LENGTH)}; it has "
                            f"{', '.join(_SIGNATURE_PARTS)}")
    missing = [name for name in _SIGNATURE_PARTS if name not in raw]
    if missing:
        raise ProtocolError(f"field {SIGNATURE_FIELD!r} has no {', '.join(missing)}")
    key, expires, value = (raw[name] for name in _SIGNATURE_PARTS)
    _name(key, "signature field 'key'")
    if isinstance(expires, bool) or not isinstance(expires, int | float) or \
            not math.isfinite(expires):
        raise ProtocolError("signature field 'expires' must be a finite number (seconds "
                            f"since the epoch), not {excerpt(expires)}")
    _time(expires, "signature field 'expires'")
    _name(value, "signature field 'value'")
    if not _BASE64URL.fullmatch(value):
        raise ProtocolError(f"signature field 'value' is not base64url: {excerpt(value)}")
    digits = value.rstrip("=")
    try:
        signature = base64.urlsafe_b64decode(digits + "=" * (-len(digits) % 4))
    except (binascii.Error, ValueError):
        raise ProtocolError(f"signature field 'value' is not base64url: {excerpt(value)}") \
            from None
    if len(signature) != SIGNATURE_BYTES:
        raise ProtocolError(f"signature field 'value' is {len(signature)} bytes; an Ed25519 "
                            f"signature is {SIGNATURE_BYTES}")
    unsigned = {name: item for name, item in data.items() if name != SIGNATURE_FIELD}
    return unsigned, Signature(key, expires, signature)
