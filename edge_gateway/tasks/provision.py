"""os.seed and os.wait_installed: a machine's seed in, then its installed system's word.

``os.seed`` builds the machine's NoCloud seed under its phone-home token (its unused one if
it has one: the step may run again) and inserts the seed's LAN URL into a slot that is not
the installer's. The URL holds the token, so neither it nor the token goes into the step's
message or data: they go to the cloud.

``os.wait_installed`` waits for the installed system's facts (``POST /p/<token>``). While
it waits it checks that the machine booted the installer: the installer's LAN URL names the
machine (``/a/<sha256>/<tag>.iso``) and the cache counts its reads, so no read within
``boot_read_s`` of the reset means the BMC ignored the boot-once override and booted the
disk. It then sets the CD as the boot source for every boot, resets the machine once more,
and, as soon as the installer is being read, sets the disk for every boot, so that the
installer's own reboot lands on the installed system. The step acts (a reset) only then; a
step in flight when the gateway stopped is re-checked, never run again: a reset in the
middle of an install would start it over.
"""

from __future__ import annotations

import logging
import re
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from edge_gateway.drivers.base import interface
from edge_gateway.errors import BmcError, GatewayError
from edge_gateway.provision.seed import StaticNetwork, check_hostname
from edge_gateway.provision.site import Provisioning
from edge_gateway.tasks import power
from edge_gateway.tasks.context import Outcome, Recheck, TaskContext
from edge_gateway.tasks.media import CD_TYPES, pick_slot, removable_slot
from edgeplane.protocol import BootMode, BootTarget, Capability, StepState

if TYPE_CHECKING:  # the cache's LAN server is loaded only by a site that has one
    from edge_gateway.cache.site import SiteCache

LOG = logging.getLogger(__name__)

_INSTALLER_PATH = re.compile(r"^/a/(?P<sha256>[0-9a-f]{64})/(?P<name>[A-Za-z0-9._-]{1,64})$")
wall_clock = time.time  # the clock of the cache's read log and of step results


def _site(ctx: TaskContext) -> tuple[SiteCache, Provisioning]:
    cache = ctx.artifacts
    provisioning = cache.provisioning if cache is not None else None
    if cache is None or not isinstance(provisioning, Provisioning):
        raise GatewayError("this gateway does not provision machines (its configuration "
                           "has no [provision] table, or no [cache] to serve seeds from)")
    return cache, provisioning


# --- os.seed ---------------------------------------------------------------------------


def os_seed(ctx: TaskContext, params: dict[str, Any]) -> Outcome:
    cache, provisioning = _site(ctx)
    hostname = params.get("hostname") or ctx.machine.id
    try:
        check_hostname(hostname)
        network = _network(params)
        prepared = provisioning.prepare(ctx.machine.id, hostname, network, cache.base_url)
    except ValueError as exc:
        raise GatewayError(f"os.seed: {exc}") from None
    media = interface(ctx.driver, Capability.MEDIA)
    slots = media.get_virtual_media()
    slot = (pick_slot(ctx, slots, params["slot"]) if params.get("slot")
            else removable_slot(ctx, slots))
    changed = False
    try:
        if not (slot.inserted and slot.image == prepared.seed_url):
            if slot.inserted:
                media.eject_media(slot.slot)
            media.insert_media(prepared.seed_url, slot.slot)
            after = next((s for s in media.get_virtual_media() if s.slot == slot.slot), None)
            if after is None or not (after.inserted and after.image == prepared.seed_url):
                raise ctx.fail(f"insert the seed into {slot.slot}",
                               f"reads back inserted={after.inserted if after else None} "
                               f"image={_redacted(after.image if after else None)}")
            changed = True
    except BmcError as exc:  # the BMC's words may quote the URL, and so the token
        token = prepared.token
        if token not in exc.what + exc.detail:
            raise
        raise type(exc)(exc.address, exc.what.replace(token, "<token>"),
                        exc.detail.replace(token, "<token>")) from None
    address = network.address if network else "DHCP"
    message = (f"seed for {hostname} ({address}) " +
               (f"in {slot.slot}" if changed else f"was already in {slot.slot}"))
    return Outcome(changed=changed, message=message, data={
        "slot": slot.slot, "hostname": hostname, "seed_bytes": prepared.size})


def _network(params: dict[str, Any]) -> StaticNetwork | None:
    address = params.get("address")
    if address is None:
        if params.get("gateway") or params.get("dns"):
            raise ValueError("gateway and dns go with a static address: give address too")
        return None
    dns = tuple(part for part in (params.get("dns") or "").split(",") if part)
    return StaticNetwork(address=address, gateway=params.get("gateway"), dns=dns)


def _redacted(url: str | None) -> str:
    return re.sub(r"/s/[A-Za-z0-9_-]{32}/", "/s/<token>/", repr(url))


# --- os.wait_installed -----------------------------------------------------------------


def os_wait_installed(ctx: TaskContext, params: dict[str, Any]) -> Outcome:
    cache, provisioning = _site(ctx)
    record = provisioning.tokens.latest(ctx.machine.id)
    if record is None:
        raise GatewayError("no seed was built for this machine: run os.seed first")
    start = ctx.monotonic()
    timeout, boot_read = params["timeout_s"], params["boot_read_s"]
    installer = _installer(ctx, cache)
    reset_at = _reset_at(ctx)
    phase = "boot" if installer else "installing"
    fallback = False
    notes = [] if installer else ["boot-once not verified: no installer from the site's "
                                  "cache in a CD slot"]
    phase_start = start
    while True:
        facts = provisioning.tokens.latest(ctx.machine.id)
        if facts is not None and facts.facts is not None:
            return _installed(facts.facts, fallback, notes)
        now = ctx.monotonic()
        if installer and phase in ("boot", "fallback"):
            sha256, name = installer
            if cache.reads.read_since(sha256, name, reset_at):
                if phase == "fallback":
                    _boot(ctx, BootTarget.DISK, BootMode.CONTINUOUS)
                    notes.append("the installer is running; the disk boots from now on")
                phase = "installing"
            elif now - phase_start >= boot_read:
                if phase == "fallback":
                    raise ctx.fail("os.wait_installed", _stuck(
                        ctx, f"the BMC did not read the installer within {boot_read} s of "
                        "a reset with the CD as boot source, once or for every boot"))
                LOG.warning("BMC %s: machine %s did not read its installer within %s s of "
                            "the reset: boot-once was ignored; booting the CD continuously",
                            ctx.driver.address, ctx.machine.id, boot_read)
                _boot(ctx, BootTarget.CD, BootMode.CONTINUOUS)
                reset_at = wall_clock()
                power.power_cycle(ctx, {})
                phase, phase_start, fallback = "fallback", ctx.monotonic(), True
                notes.append("boot-once was ignored: reset again with the CD for every boot")
        if now - start >= timeout:
            raise ctx.fail("os.wait_installed", _stuck(
                ctx, f"no phone-home within {timeout} s ({phase})"))
        ctx.sleep(ctx.machine.poll_interval)


def _installed(facts: dict[str, str], fallback: bool, notes: list[str]) -> Outcome:
    message = (f"installed: {facts.get('node_name')} ({facts.get('os')}, kernel "
               f"{facts.get('kernel')}, {facts.get('k3s_version')})")
    if notes:
        message += "; " + "; ".join(notes)
    return Outcome(changed=fallback, message=message, data=dict(facts))


def _installer(ctx: TaskContext, cache: SiteCache) -> tuple[str, str] | None:
    """(sha256, name) of the installer from this cache in the machine's CD slot."""
    media = interface(ctx.driver, Capability.MEDIA) if Capability.MEDIA in \
        ctx.driver.capabilities else None
    if media is None:
        return None
    base = urlsplit(cache.base_url)
    for slot in media.get_virtual_media():
        if not (slot.inserted and slot.image and CD_TYPES & set(slot.media_types)):
            continue
        url = urlsplit(slot.image)
        match = _INSTALLER_PATH.fullmatch(url.path)
        if match and url.netloc == base.netloc:
            return match["sha256"], match["name"]
    return None


def _reset_at(ctx: TaskContext) -> float:
    """When the machine was last reset in this plan (the last power.cycle step's start),
    else now."""
    for result in reversed(ctx.earlier):
        if (result.task == "power.cycle" and result.state == StepState.SUCCEEDED
                and result.started_at is not None):
            return result.started_at
    return wall_clock()


def _boot(ctx: TaskContext, target: BootTarget, mode: BootMode) -> None:
    boot = interface(ctx.driver, Capability.BOOT)
    boot.set_boot_override(target, mode)
    if boot.get_boot_override().target != target:
        raise ctx.fail(f"boot override {target} ({mode})", "the BMC does not read it back")


def _stuck(ctx: TaskContext, why: str) -> str:
    """``why``, with what the BMC shows: power state, boot progress, POST code."""
    try:
        shows = [f"power {interface(ctx.driver, Capability.POWER).get_power_state()}"]
        if Capability.BOOT in ctx.driver.capabilities:
            progress = interface(ctx.driver, Capability.BOOT).get_boot_progress()
            if progress:
                shows.append(progress)
    except GatewayError as exc:  # the reason stays the step's; the BMC's silence is a detail
        return f"{why}; the BMC cannot say what it shows: {exc}"
    return f"{why}; the BMC shows {', '.join(shows)}"


def recheck_wait_installed(ctx: TaskContext, params: dict[str, Any]) -> Recheck:
    """Done if the facts came in; else uncertain, with what the BMC shows (waiting again
    could reset a machine in the middle of its install)."""
    _, provisioning = _site(ctx)
    record = provisioning.tokens.latest(ctx.machine.id)
    if record is not None and record.facts is not None:
        return Recheck(done=True, readout=_installed(record.facts, False, []).message,
                       data=dict(record.facts))
    return Recheck(done=False, readout=_stuck(ctx, "no phone-home yet"))
