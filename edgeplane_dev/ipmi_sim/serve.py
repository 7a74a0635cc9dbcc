"""Serving simulated BMCs: in this process (``serve``), or in a child process for tests."""

from __future__ import annotations

import argparse
import logging
import selectors
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Collection, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from pyghmi.ipmi.private import session as ipmisession

from edgeplane_dev.ipmi_sim.bmc import DEFAULT_PASSWORD, DEFAULT_USERNAME, FAULTS, SimulatedBmc
from edgeplane_dev.ports import LOOPBACK, free_port
from edgeplane_dev.processes import stop

LOG = logging.getLogger(__name__)


def serve(port: int, username: str = DEFAULT_USERNAME, password: str = DEFAULT_PASSWORD,
          address: str = LOOPBACK, power_delay: float = 0.0,
          faults: Collection[str] = ()) -> None:
    """Simulate one BMC on ``address``:``port`` (UDP) until SIGTERM or Ctrl-C.

    Blocks; call it from the main thread of a process of its own (the operator command
    ``edgeplane dev bmc ipmi --port P`` does), since pyghmi's sockets and event loop live as
    long as the process. ``power_delay``: seconds before a power change reads back;
    ``faults``: names from ``FAULTS``. Prints ``ready <port>`` on stdout once bound; raises
    OSError if the port is taken and ValueError for an address that is not a loopback
    address or an unknown fault.
    """
    serve_many([port], username=username, password=password, address=address,
               power_delay=power_delay, faults=faults)


def serve_many(ports: Sequence[int], username: str = DEFAULT_USERNAME,
               password: str = DEFAULT_PASSWORD, address: str = LOOPBACK,
               power_delay: float = 0.0, faults: Collection[str] = ()) -> None:
    """Simulate one BMC per port, all served by this thread, until SIGTERM or SIGINT.

    Prints ``ready <port> ...`` on stdout once every socket is bound. Raises OSError if a
    port is taken and ValueError for an address that is not a loopback address.
    """
    bmcs = [SimulatedBmc(port, username, password, address, power_delay=power_delay,
                         faults=faults) for port in ports]
    stop_event = threading.Event()
    restore: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            restore[signum] = signal.signal(signum, lambda *_: stop_event.set())
    LOG.info("IPMI simulator on %s, UDP port(s) %s, user %s%s", address,
             ", ".join(map(str, ports)), username,
             f", faults {', '.join(sorted(faults))}" if faults else "")
    print("ready", *(b.port for b in bmcs), flush=True)
    try:
        while not stop_event.is_set():
            try:  # serves every session of the process; returns at least every 0.05 s
                ipmisession.Session.wait_for_rsp(timeout=0.05)
            except Exception:  # one bad packet must not take every simulated BMC down
                LOG.exception("IPMI simulator: a request failed")
    finally:
        for signum, handler in restore.items():
            signal.signal(signum, handler)
        LOG.info("IPMI simulator on port(s) %s stopped", ", ".join(map(str, ports)))


class SimulatorProcess:
    """An IPMI simulator in a child process, serving one BMC per port; a context manager.

    ``SimulatorProcess(count=5)`` picks free UDP ports; ``ports`` lists them once started.
    """

    def __init__(self, ports: Sequence[int] | None = None, count: int = 1,
                 username: str = DEFAULT_USERNAME, password: str = DEFAULT_PASSWORD,
                 power_delay: float = 0.0, log_path: Path | None = None,
                 faults: Collection[str] = ()) -> None:
        self.ports = list(ports) if ports else [free_port(socket.SOCK_DGRAM)
                                                for _ in range(count)]
        self.username = username
        self.password = password
        self.power_delay = power_delay
        self.log_path = log_path
        self.faults = tuple(faults)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def port(self) -> int:
        return self.ports[0]

    @property
    def addresses(self) -> list[str]:
        """What a driver's credentials name: "127.0.0.1:<port>" for each BMC."""
        return [f"{LOOPBACK}:{port}" for port in self.ports]

    def start(self, timeout: float = 10.0) -> SimulatorProcess:
        args = [sys.executable, "-m", "edgeplane_dev.ipmi_sim", "--username", self.username,
                "--password", self.password, "--power-delay", str(self.power_delay)]
        for port in self.ports:
            args += ["--port", str(port)]
        for fault in self.faults:
            args += ["--fault", fault]
        log = open(self.log_path, "ab") if self.log_path else None
        try:
            self.process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=log,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
        finally:
            if log is not None:
                log.close()
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        assert self.process is not None and self.process.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            if not selector.select(timeout):
                raise TimeoutError(f"IPMI simulator not ready after {timeout:.0f} s")
        line = self.process.stdout.readline().decode(errors="replace").strip()
        if not line.startswith("ready"):
            code = self.process.wait(timeout=5)
            raise RuntimeError(f"IPMI simulator on port(s) {self.ports} exited with {code}: "
                               f"{line or 'no output'}")

    def stop(self) -> None:
        if self.process is None:
            return
        stop(self.process)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self.process = None

    def __enter__(self) -> SimulatorProcess:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgeplane_dev.ipmi_sim",
                                     description="Simulate IPMI BMCs on loopback UDP ports.")
    parser.add_argument("--port", type=int, action="append", required=True,
                        help="UDP port of one simulated BMC (repeat for more)")
    parser.add_argument("--username", default=DEFAULT_USERNAME)
    parser.add_argument("--password", default=DEFAULT_PASSWORD)
    parser.add_argument("--address", default=LOOPBACK, help="loopback address to bind")
    parser.add_argument("--power-delay", type=float, default=0.0,
                        help="seconds before a power change reads back")
    parser.add_argument("--fault", action="append", default=[], choices=sorted(FAULTS),
                        help="simulate a fault or limitation on every BMC (repeatable): "
                        + "; ".join(f"{name}: {text}" for name, text in FAULTS.items()))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        serve_many(args.port, args.username, args.password, args.address, args.power_delay,
                   args.fault)
    except (OSError, ValueError) as exc:
        print(f"ipmi_sim: {exc}", file=sys.stderr)
        return 1
    return 0
