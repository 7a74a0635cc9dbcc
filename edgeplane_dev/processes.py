"""Child processes of the local stack: started in their own process group, always stopped."""

from __future__ import annotations

import logging
import os
import resource
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

LOG = logging.getLogger(__name__)


def spawn(args: Sequence[str], log_path: Path, env: dict[str, str] | None = None,
          cwd: Path | None = None) -> subprocess.Popen:
    """Start a process in a new session (its own process group), output to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            list(args), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})}, cwd=cwd, start_new_session=True,
        )


def stop_group(pid: int, grace: float = 5.0) -> None:
    """SIGTERM the process group led by ``pid``; SIGKILL it if it is still there after grace."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        _wait_gone(pid, grace)
    except TimeoutError:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        _wait_gone(pid, grace)


def stop(process: subprocess.Popen, grace: float = 5.0) -> None:
    if process.poll() is not None:
        return
    stop_group(process.pid, grace)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def is_running(pid: int) -> bool:
    """True while the process exists and is not a zombie (exited, not yet reaped)."""
    try:
        reaped, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:  # not our child: another process (or init) reaps it
        reaped = 0
    if reaped == pid:
        return False
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def environment_of(pid: int) -> dict[str, str]:
    """The environment process ``pid`` was started with (for a command that starts itself
    again, as ``edge-gateway run`` does: the one it runs with)."""
    pairs = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(pair.decode(errors="replace").split("=", 1) for pair in pairs if b"=" in pair)


def _wait_gone(pid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_running(pid):
            return
        time.sleep(0.05)
    raise TimeoutError(f"process {pid} did not exit within {timeout} s")


def raise_open_file_limit() -> int:
    """Raise this process's soft limit on open files to the hard limit; return it.

    Each site holds one socket. Child processes started afterwards (a broker) inherit it.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 1 << 20)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            LOG.warning("cannot raise the open-file limit above %d", soft)
    return soft
