"""Where a site keeps its gateway's versions, and what the supervisor and the gateway tell
each other there (docs/upgrades.md). Standard library only: the supervisor imports it.

    <root>/versions/<version>/          one virtual environment per version (or a link to
                                        the installation adopted as the first version)
    <root>/current -> versions/<v>      what the supervisor starts; switched only once a
                                        new version proved healthy
    <root>/previous -> versions/<v>     the version current was before that
    <root>/trial.json                   a version on trial: which, for which execution,
                                        since when, how many starts so far
    <root>/health.json                  what the version on trial has proved so far
    <root>/outcome.json                 how the last trial ended, until a gateway reported
                                        it to the cloud
    <root>/downloads/                   wheels while they download

Links are switched by renaming a new link over the old one, and records are written to a
temporary file renamed into place: a power cut leaves the old or the new, never half.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

ROOT_ENV = "EDGE_GATEWAY_ROOT"  # set by the supervisor for the gateway it starts
# The gateway's exit status that asks its supervisor to start it again at once (a version
# to try is waiting); EX_TEMPFAIL of sysexits.h.
RESTART_EXIT_CODE = 75
# What a new version proves before it is kept, in the order it proves them.
HEALTH_CHECKS = ("journal", "drivers", "self_test", "connected")
INSTALLED_MARK = ".installed"  # written last into a version's folder: the install is whole
MAX_RECORD_BYTES = 16 * 1024 * 1024  # a record holds the machines' results of one plan
VERSION_PATTERN = re.compile(r"^[0-9][0-9A-Za-z.+!_-]{0,63}$")  # protocol's, repeated:
# this module imports nothing of the gateway, so that the supervisor loads nothing else.


Record = TypeVar("Record", "Trial", "Outcome", "Health")


class LayoutError(ValueError):
    """A version name, a link or a record that is not what this layout writes."""


@dataclass
class Trial:
    """A version on trial for one execution: the supervisor starts it instead of current
    until it proves healthy (then it becomes current) or fails (then it never does)."""

    execution_id: str
    from_version: str
    to_version: str
    started_at: float  # seconds since the epoch: the deadline outlives a reboot
    health_timeout: float
    detail: str = "full"  # how the plan asked its result to be reported
    machines: list[dict[str, Any]] = field(default_factory=list)  # steps before the upgrade
    starts: int = 0
    max_starts: int = 3

    @property
    def deadline(self) -> float:
        return self.started_at + self.health_timeout


@dataclass
class Outcome:
    """How a trial ended, for the gateway to report as its execution's result."""

    execution_id: str
    succeeded: bool
    message: str
    from_version: str
    to_version: str
    detail: str = "full"
    machines: list[dict[str, Any]] = field(default_factory=list)
    at: float = field(default_factory=time.time)


@dataclass
class Health:
    """What a version on trial has proved: the checks passed, and why one failed."""

    version: str
    pid: int
    passed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    at: float = field(default_factory=time.time)

    @property
    def healthy(self) -> bool:
        return set(HEALTH_CHECKS) <= set(self.passed)

    def missing(self) -> str:
        """What it has not proved yet, in words."""
        parts = [f"{name}: {self.failed[name]}" if name in self.failed else f"{name}: not yet"
                 for name in HEALTH_CHECKS if name not in self.passed]
        return "; ".join(parts) or "nothing"


def check_version(version: str) -> str:
    if not isinstance(version, str) or not VERSION_PATTERN.fullmatch(version):
        raise LayoutError(f"{version!r} is not a version name (1-64 letters, digits and "
                          ". + ! _ -, from a digit)")
    return version


class Layout:
    """One site's gateway versions under ``root``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).absolute()
        self.versions = self.root / "versions"
        self.downloads = self.root / "downloads"
        self.trial_file = self.root / "trial.json"
        self.health_file = self.root / "health.json"
        self.outcome_file = self.root / "outcome.json"

    def link(self, name: str) -> Path:
        return self.root / name

    def version_dir(self, version: str) -> Path:
        return self.versions / check_version(version)

    def executable(self, version: str | None = None) -> Path:
        """The ``edge-gateway`` command of a version (default: current's, through the link,
        as the systemd unit starts it)."""
        base = self.link("current") if version is None else self.version_dir(version)
        return base / "bin" / "edge-gateway"

    # --- versions and links ----------------------------------------------------------

    def version_of(self, name: str) -> str | None:
        """The version a link (``current``, ``previous``) points at; None if there is none."""
        try:
            target = os.readlink(self.link(name))
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise LayoutError(f"{self.link(name)} is not a link: {exc}") from None
        return check_version(Path(target).name)

    def is_installed(self, version: str) -> bool:
        """A whole install: adopted (a link), or with its mark written last."""
        folder = self.version_dir(version)
        return folder.is_symlink() or (folder / INSTALLED_MARK).is_file()

    def installed_from(self, version: str) -> str | None:
        """The SHA-256 of the wheel a version was installed from (None: adopted, or not
        installed)."""
        try:
            mark = json.loads((self.version_dir(version) / INSTALLED_MARK).read_text())
        except (OSError, ValueError):
            return None
        digest = mark.get("sha256") if isinstance(mark, dict) else None
        return digest if isinstance(digest, str) else None

    def installed(self) -> list[str]:
        if not self.versions.is_dir():
            return []
        return sorted(p.name for p in self.versions.iterdir()
                      if VERSION_PATTERN.fullmatch(p.name) and self.is_installed(p.name))

    def point(self, name: str, version: str) -> None:
        """Point the link ``name`` at an installed version, atomically."""
        if not self.is_installed(version):
            raise LayoutError(f"version {version} is not installed in {self.versions}")
        temporary = self.root / f".{name}.{os.getpid()}.tmp"
        temporary.unlink(missing_ok=True)
        os.symlink(f"versions/{version}", temporary)
        os.replace(temporary, self.link(name))
        _sync_dir(self.root)

    def adopt(self, prefix: Path, version: str) -> bool:
        """Make an existing installation (``prefix``, holding ``bin/edge-gateway``) the
        current version, if there is none yet: how a site's first install joins the layout.
        False if a current version is there already (left as it is)."""
        if self.version_of("current") is not None:
            return False
        if not (prefix / "bin" / "edge-gateway").exists():
            raise LayoutError(f"{prefix} has no bin/edge-gateway: not a gateway installation")
        self.versions.mkdir(parents=True, exist_ok=True)
        folder = self.version_dir(version)
        if not folder.is_symlink() and not folder.exists():
            os.symlink(prefix.absolute(), folder)
        self.point("current", version)
        return True

    def remove(self, version: str) -> None:
        """Remove a version's folder (only the link, for an adopted installation)."""
        folder = self.version_dir(version)
        if folder.is_symlink():
            folder.unlink()
        elif folder.exists():
            shutil.rmtree(folder)

    def prune(self, keep: set[str]) -> list[str]:
        """Remove every version but ``keep`` and those the links point at; what went."""
        keep = keep | {v for v in (self.version_of("current"), self.version_of("previous"))
                       if v is not None}
        gone = []
        if self.versions.is_dir():
            for folder in self.versions.iterdir():
                if folder.name not in keep and VERSION_PATTERN.fullmatch(folder.name):
                    self.remove(folder.name)
                    gone.append(folder.name)
        return gone

    # --- records ---------------------------------------------------------------------

    def read_trial(self) -> Trial | None:
        return _read(self.trial_file, Trial)

    def write_trial(self, trial: Trial) -> None:
        _write(self.trial_file, trial)

    def read_health(self) -> Health | None:
        return _read(self.health_file, Health)

    def write_health(self, health: Health) -> None:
        _write(self.health_file, health)

    def read_outcome(self) -> Outcome | None:
        return _read(self.outcome_file, Outcome)

    def write_outcome(self, outcome: Outcome) -> None:
        _write(self.outcome_file, outcome)

    def clear(self, path: Path) -> None:
        path.unlink(missing_ok=True)
        _sync_dir(self.root)


def _read(path: Path, kind: type[Record]) -> Record | None:
    """The record, None if there is none; LayoutError if it is not one this layout wrote."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_RECORD_BYTES + 1)
    except FileNotFoundError:
        return None
    if len(data) > MAX_RECORD_BYTES:
        raise LayoutError(f"{path} is over {MAX_RECORD_BYTES} bytes")
    try:
        value = json.loads(data)
        if not isinstance(value, dict):
            raise TypeError("not an object")
        known = {f.name for f in fields(kind)}
        return _checked(kind(**{k: v for k, v in value.items() if k in known}))
    except (ValueError, TypeError) as exc:
        raise LayoutError(f"{path} is not a {kind.__name__.lower()} record: {exc}") from None


def _checked(record: Record) -> Record:
    """Each field of the type its annotation names (the records are plain JSON)."""
    for spec in fields(record):
        value = getattr(record, spec.name)
        expected = {"str": str, "float": (int, float), "int": int, "bool": bool}.get(
            str(spec.type), list if str(spec.type).startswith("list") else dict)
        if isinstance(value, bool) and expected is not bool or \
                not isinstance(value, expected):  # type: ignore[arg-type]
            raise TypeError(f"field {spec.name} is {value!r}")
    return record


def _write(path: Path, record: Trial | Outcome | Health) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(temporary, "w") as handle:
        json.dump(asdict(record), handle, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    _sync_dir(path.parent)


def _sync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (a power cut after it keeps it)."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def new_trial(execution_id: str, from_version: str, to_version: str, health_timeout: float,
              detail: str, machines: list[dict[str, Any]]) -> Trial:
    return Trial(execution_id=execution_id, from_version=check_version(from_version),
                 to_version=check_version(to_version), started_at=time.time(),
                 health_timeout=float(health_timeout), detail=detail, machines=machines)
