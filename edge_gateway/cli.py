"""``edge-gateway``: the site agent's command line (stdlib argparse: the gateway stays small)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import warnings
from pathlib import Path

from edge_gateway import __version__
from edge_gateway.errors import GatewayError

LOG = logging.getLogger("edge_gateway")

# glibc's malloc gives every thread a cache of the blocks it freed (tcache) and spreads
# threads over up to 8 arenas per core. The gateway works on each machine in a thread of its
# own, so at a hundred machines at once those caches hold megabytes that nothing uses (see
# BENCHMARKS.md, "Memory"). Blocks of 16 KiB and more (TLS record and handshake buffers, a
# few per BMC connection) are mapped for themselves and given back when freed, rather than
# left as holes in the heap. glibc reads its tunables only when a process starts.
MALLOC_TUNABLES = ("glibc.malloc.tcache_count=0:glibc.malloc.arena_max=2:"
                   "glibc.malloc.mmap_threshold=16384")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="edge-gateway", description=__doc__)
    parser.add_argument("--version", action="version", version=__version__)
    parser.add_argument("--log-level", default="INFO")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run the gateway for one site")
    run.add_argument("--config", required=True, help="the site's TOML config file")

    supervise = commands.add_parser(
        "supervise", help="run the gateway of <root>/current, restart it, and try the new "
        "versions field upgrades install, keeping one only once it proves healthy")
    supervise.add_argument("--root", required=True, help="the gateway's versions folder")
    supervise.add_argument("--config", required=True, help="the site's TOML config file")

    self_test = commands.add_parser(
        "self-test", help="check this version against the site's config, offline; print "
        "what it found, as JSON")
    self_test.add_argument("--config", required=True, help="the site's TOML config file")

    versions = commands.add_parser("versions", help="the versions folder of field upgrades")
    versions.add_argument("--root", required=True, help="the gateway's versions folder")
    versions_commands = versions.add_subparsers(dest="versions_command", required=True)
    versions_commands.add_parser("show", help="print current, previous, installed, trial "
                                 "and last outcome, as JSON")
    versions_commands.add_parser("adopt", help="make this installation the current version "
                                 "(a site's first install), unless there is one")

    commands.add_parser(
        "lean-bytecode", help="write the -OO bytecode of every module the gateway loads, "
        "after an install: `run` then starts without docstrings and asserts (less memory)")

    bmc = commands.add_parser("bmc", help="talk to one BMC directly")
    bmc_commands = bmc.add_subparsers(dest="bmc_command", required=True)
    probe = bmc_commands.add_parser(
        "probe", help="print, as JSON, what a BMC is (http(s)://host for Redfish, "
        "ipmi://host[:port] for IPMI)")
    probe.add_argument("url")
    probe.add_argument("--username", "-u", required=True)
    probe.add_argument("--password", "-p", required=True)
    probe.add_argument("--timeout", type=float, default=30.0)
    trust = probe.add_mutually_exclusive_group()
    trust.add_argument("--insecure", action="store_true",
                       help="do not check an HTTPS BMC's certificate against CAs (self-signed "
                       "BMCs): print its fingerprint, to compare with the BMC's and pin")
    trust.add_argument("--tls-fingerprint", metavar="sha256:AB:CD:...",
                       help="accept only the HTTPS BMC certificate of this SHA-256 "
                       "fingerprint (try a pin before putting it in the config)")

    args = parser.parse_args(argv)
    if args.command == "run" and argv is None:  # the process's own command line
        restart_lean()
        leave_out_charset_detection()
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "run":
            return run_gateway(args.config)
        if args.command == "supervise":
            from edge_gateway.upgrade.supervisor import supervise as run_supervisor

            return run_supervisor(Path(args.root), Path(args.config))
        if args.command == "self-test":
            return run_self_test(args.config)
        if args.command == "lean-bytecode":
            return write_lean_bytecode()
        if args.command == "versions":
            from edge_gateway.upgrade.commands import versions_command

            return versions_command(args.versions_command, Path(args.root))
        return probe_bmc(args.url, args.username, args.password, args.timeout,
                         verify_tls=not args.insecure, tls_fingerprint=args.tls_fingerprint)
    except GatewayError as exc:
        print(f"edge-gateway: {exc}", file=sys.stderr)
        return 2


def restart_lean() -> None:
    """Start this process's command again (same pid), once, with what keeps a site's gateway
    small: ``MALLOC_TUNABLES`` where the C library is glibc, and Python's ``-OO`` (no
    docstrings, no ``assert``: 1.5 MiB less, see BENCHMARKS.md, "Memory") where that bytecode
    is installed (``edge_gateway.bytecode``), since Python would otherwise compile every
    module again at each start. What the operator set (``GLIBC_TUNABLES``,
    ``PYTHONOPTIMIZE``) is left as it is; Python's column tables for tracebacks
    (``PYTHONNODEBUGRANGES``) go too: a log's traceback still names each line."""
    if not sys.executable or not sys.orig_argv:
        return
    wanted: dict[str, str] = {}
    if "GLIBC_TUNABLES" not in os.environ and _glibc():
        wanted["GLIBC_TUNABLES"] = MALLOC_TUNABLES
    if ("PYTHONOPTIMIZE" not in os.environ and sys.flags.optimize < 2
            and _lean_bytecode_installed()):
        wanted.update(PYTHONOPTIMIZE="2", PYTHONNODEBUGRANGES="1")
    if not wanted:
        return
    os.environ.update(wanted)
    os.execv(sys.executable, sys.orig_argv)  # noqa: S606 - this very command, again


def _glibc() -> bool:
    try:
        libc = os.confstr("CS_GNU_LIBC_VERSION") or ""
    except (ValueError, OSError):  # not a name this system knows: not glibc
        return False
    return libc.startswith("glibc ")


def _lean_bytecode_installed() -> bool:
    from edge_gateway.bytecode import lean_bytecode_installed

    return lean_bytecode_installed()


def leave_out_charset_detection() -> None:
    """Keep requests from loading a character set detector (charset_normalizer, heavier than
    requests itself; see BENCHMARKS.md, "Memory"). requests uses one only to guess the
    encoding of a body that declares none, and without one decodes such a body as UTF-8:
    what BMCs send is JSON, UTF-8 by RFC 8259. For a process that has not loaded requests
    yet; requests' warning that it found no detector is silenced with it."""
    if "requests" in sys.modules:
        return
    for name in ("chardet", "charset_normalizer"):
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]  # None: "not installed"
    warnings.filterwarnings("ignore", message="Unable to find acceptable character detection")


def write_lean_bytecode() -> int:
    from edge_gateway.bytecode import compile_lean_bytecode, lean_bytecode_installed

    written, refused = compile_lean_bytecode()
    lean = lean_bytecode_installed()
    print(json.dumps({"written": written, "not_writable": refused, "lean": lean}))
    return 0


def run_gateway(config_path: str) -> int:
    """Run until SIGTERM or SIGINT (0), or until a field upgrade asks the supervisor to
    start the new version (``RESTART_EXIT_CODE``)."""
    from edge_gateway.agent import Gateway
    from edge_gateway.config import load_config
    from edge_gateway.transport import MqttTransport
    from edge_gateway.upgrade.layout import RESTART_EXIT_CODE
    from edge_gateway.upgrade.upgrader import Upgrades

    config = load_config(config_path)
    stopping = threading.Event()
    upgrades = Upgrades.from_environment(Path(config_path).absolute(), __version__,
                                         request_restart=stopping.set)
    gateway = Gateway(
        config,
        transport_factory=lambda gw: MqttTransport(
            config.mqtt, config.mqtt.client_id or config.site, gw.subscriptions, gw.will),
        upgrades=upgrades,
    )
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    LOG.info("site %s: gateway %s starting with %d machines", config.site, __version__,
             len(config.machines))
    gateway.start()
    stopping.wait()
    LOG.info("site %s: stopping%s", config.site,
             "; the supervisor starts the new version" if upgrades.restart_due else "")
    gateway.stop()
    return RESTART_EXIT_CODE if upgrades.restart_due else 0


def run_self_test(config_path: str) -> int:
    """What ``edge-gateway self-test`` prints: this version and what each check found."""
    from edge_gateway.config import load_config
    from edge_gateway.upgrade.health import self_test

    checks = self_test(load_config(config_path))
    print(json.dumps({"version": __version__, "checks": checks}))
    return 0


def probe_bmc(url: str, username: str, password: str, timeout: float,
              verify_tls: bool = True, tls_fingerprint: str | None = None) -> int:
    """Print what the BMC is (JSON, on stdout) and, for an HTTPS BMC whose certificate no CA
    vouches for, how to pin it (on stderr)."""
    from edge_gateway.probe import probe

    result = probe(url, username, password, timeout=timeout, verify_tls=verify_tls,
                   tls_fingerprint=tls_fingerprint)
    print(json.dumps(result, indent=2))
    tls = result.get("tls") or {}
    if tls.get("trusted_by") == "none":
        print(f"edge-gateway: the BMC presented the certificate {tls['fingerprint']}, which "
              "was not checked (--insecure).\nCompare it with the fingerprint the BMC itself "
              "shows (its local console, web interface or label); only if they match, pin it "
              "in the machine's [[machines]] table:\n\n"
              f'    tls_fingerprint = "{tls["fingerprint"]}"\n', file=sys.stderr)
    elif tls.get("trusted_by") == "pin":
        print(f"edge-gateway: the BMC's certificate matches the pin {tls['fingerprint']}",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
