"""A simulated OS install: what a host booted from an installer ISO does, seen from its BMC.

At a boot from the CD (``System.on_boot`` with source ``Cd``) with an image in a CD slot,
the installer runs in a thread of its own: it reads the image from its URL as a BMC's
virtual media does (HTTP Range requests of 1 MiB over one keep-alive connection, at most
``install_read_bytes``, paced to ``media_read_bps``), reads the NoCloud seed from the slot
that holds it (a removable slot, else a second CD; ``edge_gateway.provision.seed``), works
for ``install_seconds``, then restarts the host. If that boot is the disk, the installed
system comes up and, as cloud-init's ``runcmd`` would, POSTs its facts to the seed's
phone-home URL (retrying a while); from then on the system reports the installed OS
(``Oem.Edgeplane``, ``BootProgress.LastState`` ``OSRunning``). If it is the CD again, the
installer runs again, as on real hardware.

No seed, a seed that is not one, an image that cannot be read, or ``install_hangs``: the
install stops where it is and ``BootProgress`` stays ``OSBootStarted`` (with what went
wrong in ``OemLastState``), as a real one hangs at a prompt; only a timeout on the other
side shows it. A reset, a power-off or a new boot ends a running install.
"""

from __future__ import annotations

import http.client
import json
import logging
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from edge_gateway.provision.seed import phone_home_url, read_seed
from edgeplane_dev.redfish_sim.resources import Resources
from edgeplane_dev.redfish_sim.system import System, now
from edgeplane_dev.redfish_sim.vendors import slots

if TYPE_CHECKING:
    from edgeplane_dev.redfish_sim.bmc import BmcOptions

LOG = logging.getLogger(__name__)

READ_BYTES = 1024 * 1024  # one Range request, as BMCs read virtual media
CHUNK = 64 * 1024
MAX_SEED_BYTES = 4 * 1024 * 1024
HTTP_TIMEOUT = 30.0
RETRY_STATUSES = frozenset({429, 503})  # the server is busy: ask again
READ_RETRIES = 300  # reads retried in a row before the install gives up (hangs)
RETRY_DELAY = 1.0
PHONE_HOME_TRIES = 30
PHONE_HOME_DELAY = 2.0  # seconds between tries (the seed's script: curl --retry)
CD_TYPES = frozenset({"CD", "DVD"})
SEED_TYPES = ("USBStick", "Floppy", "RemovableDisk")


@dataclass(frozen=True)
class InstalledOs:
    """What the installed system reports of itself (the phone-home facts)."""

    os: str = "Ubuntu 24.04.1 LTS"
    kernel: str = "6.8.0-51-generic"
    k3s_version: str = "v1.31.4+k3s1"


INSTALLED = InstalledOs()


class InstallStopped(Exception):
    """The install ended from outside: a reset, a power-off, the simulator stopping."""


class _Busy(Exception):
    """The image server asked to come back later."""


class InstallHung(Exception):
    """The install cannot go on (its message says why); it waits forever, as a real one."""


class Installer:
    """The installs of one ComputerSystem. ``on_boot`` is the system's boot hook; it runs
    under the BMC's lock, as does everything here that touches the system's documents."""

    def __init__(self, system: System, resources: Resources, lock: threading.RLock,
                 options: BmcOptions, settle: Callable[[], None]) -> None:
        self.system = system
        self.resources = resources
        self.lock = lock
        self.options = options
        self.settle = settle  # completes power changes whose time has come
        self._stopping = threading.Event()
        self._generation = 0  # one more at each boot: a running install checks it
        self._thread: threading.Thread | None = None
        self.installed_from: str | None = None  # the seed's instance id, once installed
        self.image_bytes = 0  # installer bytes read, all installs (tests read them)
        self.installs = 0  # installs started
        self.phoned_home: list[int] = []  # the status of each phone-home answer

    # --- the boot hook -------------------------------------------------------------------

    def on_boot(self, source: str) -> None:
        self._generation += 1
        image = self._cd_image()
        if source == "Cd" and image:
            self._progress("OSBootStarted", "installer starting")
            self._start(self._install, image)
        elif self.installed_from is not None:
            self._progress("OSRunning", None)

    def close(self) -> None:
        self._stopping.set()
        self._generation += 1
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    # --- the install ---------------------------------------------------------------------

    def _start(self, target: Callable[..., None], *args: Any) -> None:
        self._thread = threading.Thread(target=target, args=(self._generation, *args),
                                        daemon=True,
                                        name=f"install-{self.system.path.rsplit('/', 1)[-1]}")
        self._thread.start()

    def _install(self, generation: int, image: str) -> None:
        self.installs += 1
        try:
            self._read_image(generation, image)
            self._progress("OSBootStarted", "installer reading its seed", generation)
            files = self._read_seed()
            url = phone_home_url(files)
            hostname = _hostname(files)
            instance_id = _meta(files, "instance-id") or hostname
            self._progress("OSBootStarted", "installing", generation)
            if self.options.install_hangs:
                raise InstallHung("installer waiting at a prompt")
            self._wait(generation, self.options.install_seconds)
        except InstallStopped:
            return
        except InstallHung as exc:
            LOG.info("%s: install hangs: %s", self.system.path, exc)
            self._progress("OSBootStarted", f"install hangs: {exc}"[:120], generation)
            return
        with self.lock:
            if generation != self._generation or not self.system.powered:
                return
            self.installed_from = instance_id
            LOG.info("%s: installed %s; the installer restarts the host", self.system.path,
                     hostname)
            source = self.system.host_reboot()  # calls on_boot: the CD again, or the disk
            if source != "Cd":
                self._installed_document(hostname)
                self._start(self._phone_home, url, hostname)

    def _read_image(self, generation: int, image: str) -> None:
        """Read the image in 1 MiB ranges over one connection, paced, as a BMC does; a busy
        answer (503, 429) or a dropped connection is retried from where it stopped, a while."""
        url = urlsplit(image)
        limit = self.options.install_read_bytes
        rate = self.options.media_read_bps or None
        connection = _connection(image)
        started, done, size, failures = time.monotonic(), 0, None, 0
        try:
            while size is None or done < size:
                last = done + READ_BYTES - 1
                if limit is not None:
                    last = min(last, limit - 1)
                try:
                    connection.request("GET", url.path,
                                       headers={"Range": f"bytes={done}-{last}"})
                    answer = connection.getresponse()
                    if answer.status in RETRY_STATUSES:
                        answer.read(CHUNK)
                        raise _Busy(f"HTTP {answer.status}")
                    if answer.status not in (200, 206):
                        raise InstallHung(f"the installer cannot be read from {url.netloc}: "
                                          f"HTTP {answer.status}")
                    if size is None:
                        size = _total(answer)
                        size = size if limit is None else min(size, limit)
                    while chunk := answer.read(CHUNK):
                        done += len(chunk)
                        self.image_bytes += len(chunk)
                        self._check(generation)
                        if rate:
                            ahead = done / rate - (time.monotonic() - started)
                            if ahead > 0 and self._stopping.wait(ahead):
                                raise InstallStopped
                    failures = 0
                    if answer.status == 200:  # no ranges: that was all of it
                        break
                except (_Busy, OSError, http.client.HTTPException) as exc:
                    failures += 1
                    if failures > READ_RETRIES:
                        raise InstallHung(f"the installer cannot be read from {url.netloc}: "
                                          f"{exc}") from None
                    if failures == 1:
                        self._progress("OSBootStarted", f"installer cannot read its image from "
                                       f"{url.netloc} ({exc}); retrying"[:120], generation)
                    connection.close()
                    connection = _connection(image)
                    if self._stopping.wait(RETRY_DELAY):
                        raise InstallStopped from None
                    self._check(generation)
        finally:
            connection.close()

    def _read_seed(self) -> dict[str, bytes]:
        seed = self._seed_image()
        if seed is None:
            raise InstallHung("no seed: no NoCloud datasource found")
        url = urlsplit(seed)
        for attempt in range(READ_RETRIES + 1):
            connection = _connection(seed)
            try:
                connection.request("GET", url.path)
                answer = connection.getresponse()
                data = answer.read(MAX_SEED_BYTES + 1)
                status = answer.status
            except (OSError, http.client.HTTPException) as exc:
                status, data = 0, str(exc).encode()
            finally:
                connection.close()
            if status not in RETRY_STATUSES and status != 0:
                break
            if self._stopping.is_set():
                raise InstallStopped
            if attempt == READ_RETRIES or self._stopping.wait(RETRY_DELAY):
                raise InstallHung(f"the seed cannot be read from {url.netloc}: "
                                  f"{data[:80].decode('utf-8', 'replace') or status}")
        if status != 200 or len(data) > MAX_SEED_BYTES:
            raise InstallHung(f"the seed cannot be read from {url.netloc}: HTTP {status}, "
                              f"{len(data)} bytes")
        try:
            files = read_seed(data)
            if urlsplit(phone_home_url(files)).scheme not in ("http", "https"):
                raise ValueError("the phone-home URL is not http(s)")
            _hostname(files)
        except ValueError as exc:
            raise InstallHung(f"bad seed: {exc}") from None
        return files

    def _wait(self, generation: int, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while True:
            self._check(generation)
            left = deadline - time.monotonic()
            if left <= 0:
                return
            if self._stopping.wait(min(left, 0.5)):
                raise InstallStopped

    def _check(self, generation: int) -> None:
        """InstallStopped if the host was reset, powered off or the simulator stops."""
        if self._stopping.is_set():
            raise InstallStopped
        with self.lock:
            self.settle()
            if generation != self._generation or not self.system.powered:
                raise InstallStopped

    # --- the installed system ------------------------------------------------------------

    def _phone_home(self, generation: int, url: str, hostname: str) -> None:
        """What the seed's runcmd does once k3s is up: POST the facts, with retries."""
        body = json.dumps({"os": INSTALLED.os, "kernel": INSTALLED.kernel,
                           "k3s_version": INSTALLED.k3s_version,
                           "node_name": hostname}).encode()
        parts = urlsplit(url)
        for _ in range(PHONE_HOME_TRIES):
            if self._stopping.is_set() or generation != self._generation:
                return
            connection = _connection(url)
            try:
                connection.request("POST", parts.path, body=body,
                                   headers={"Content-Type": "application/json"})
                status = connection.getresponse().status
                self.phoned_home.append(status)
                LOG.info("%s: phoned home to %s: %s", self.system.path, parts.netloc, status)
                if status < 500:
                    return  # 204, or a refusal that retrying will not change
            except (OSError, http.client.HTTPException) as exc:
                LOG.info("%s: phone home failed: %s", self.system.path, exc)
            finally:
                connection.close()
            if self._stopping.wait(PHONE_HOME_DELAY):
                return

    def _installed_document(self, hostname: str) -> None:
        document = self.resources.edit(self.system.path)
        oem = document.setdefault("Oem", {})
        oem["Edgeplane"] = {"InstalledOS": INSTALLED.os, "Kernel": INSTALLED.kernel,
                            "K3sVersion": INSTALLED.k3s_version, "HostName": hostname,
                            "InstanceId": self.installed_from, "InstalledAt": now()}
        document["HostName"] = hostname
        self._write_progress(document, "OSRunning", None)

    # --- documents -----------------------------------------------------------------------

    def _progress(self, state: str, detail: str | None, generation: int | None = None) -> None:
        with self.lock:
            if generation is not None and generation != self._generation:
                return
            self._write_progress(self.resources.edit(self.system.path), state, detail)

    @staticmethod
    def _write_progress(document: dict[str, Any], state: str, detail: str | None) -> None:
        progress = document.setdefault("BootProgress", {})
        progress["LastState"] = state
        progress["LastStateTime"] = now()
        progress.pop("LastBootTimeSeconds", None)  # the mockup's, of another boot
        if detail is None:
            progress.pop("OemLastState", None)
        else:
            progress["OemLastState"] = detail

    def _media(self) -> list[dict[str, Any]]:
        return [self.resources.get_raw(path) or {}
                for path in slots(self.resources, [self.system.path])]

    def _cd_image(self) -> str | None:
        for slot in self._media():
            if CD_TYPES & set(slot.get("MediaTypes") or []) and slot.get("Inserted") \
                    and slot.get("Image"):
                return str(slot["Image"])
        return None

    def _seed_image(self) -> str | None:
        """The image in a removable slot, else in a CD slot after the installer's."""
        inserted = [slot for slot in self._media() if slot.get("Inserted") and slot.get("Image")]
        for kind in SEED_TYPES:
            for slot in inserted:
                if kind in (slot.get("MediaTypes") or []):
                    return str(slot["Image"])
        cds = [slot for slot in inserted if CD_TYPES & set(slot.get("MediaTypes") or [])]
        return str(cds[1]["Image"]) if len(cds) > 1 else None


def _connection(url: str) -> http.client.HTTPConnection:
    parts = urlsplit(url)
    if parts.scheme == "https":
        # Like most BMCs: TLS without checking the server's certificate.
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return http.client.HTTPSConnection(parts.hostname or "", parts.port,
                                           timeout=HTTP_TIMEOUT, context=context)
    if parts.scheme != "http":
        raise InstallHung(f"{url!r} is not an http(s) URL")
    return http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=HTTP_TIMEOUT)


def _total(answer: http.client.HTTPResponse) -> int:
    """The image's whole size, from Content-Range (206) or Content-Length (200)."""
    content_range = answer.getheader("Content-Range") or ""
    total = content_range.rpartition("/")[2]
    if answer.status == 206 and total.isdigit():
        return int(total)
    length = answer.getheader("Content-Length") or ""
    if length.isdigit():
        return int(length)
    raise InstallHung("the image server gives no size")


def _meta(files: dict[str, bytes], key: str) -> str | None:
    """A value of meta-data (``key: value``, the value plain or JSON-quoted)."""
    for line in files.get("meta-data", b"").decode("utf-8", "replace").splitlines():
        name, colon, value = line.partition(":")
        if colon and name.strip() == key:
            value = value.strip()
            try:
                parsed = json.loads(value) if value.startswith('"') else value
            except ValueError:
                return None
            return parsed if isinstance(parsed, str) else None
    return None


def _hostname(files: dict[str, bytes]) -> str:
    """The host name user-data sets (else meta-data's ``local-hostname``)."""
    text = files["user-data"].decode("utf-8", "replace")
    try:
        name = json.loads(text.split("\n", 1)[1]).get("hostname")
    except (ValueError, IndexError, AttributeError):
        name = None
    name = name if isinstance(name, str) else _meta(files, "local-hostname")
    if not name or len(name) > 128:
        raise ValueError("the seed names no host name")
    return name
