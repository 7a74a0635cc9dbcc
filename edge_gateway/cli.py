"""``edge-gateway``: the site agent's command line (stdlib argparse: the gateway stays small)."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading

from edge_gateway import __version__
from edge_gateway.errors import GatewayError

LOG = logging.getLogger("edge_gateway")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="edge-gateway", description=__doc__)
    parser.add_argument("--version", action="version", version=__version__)
    parser.add_argument("--log-level", default="INFO")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run the gateway for one site")
    run.add_argument("--config", required=True, help="the site's TOML config file")

    bmc = commands.add_parser("bmc", help="talk to one BMC directly")
    bmc_commands = bmc.add_subparsers(dest="bmc_command", required=True)
    probe = bmc_commands.add_parser(
        "probe", help="print, as JSON, what a BMC is (http(s)://host for Redfish, "
        "ipmi://host[:port] for IPMI)")
    probe.add_argument("url")
    probe.add_argument("--username", "-u", required=True)
    probe.add_argument("--password", "-p", required=True)
    probe.add_argument("--timeout", type=float, default=30.0)
    probe.add_argument("--insecure", action="store_true",
                       help="do not check an HTTPS BMC's certificate (self-signed BMCs)")

    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "run":
            return run_gateway(args.config)
        return probe_bmc(args.url, args.username, args.password, args.timeout,
                         verify_tls=not args.insecure)
    except GatewayError as exc:
        print(f"edge-gateway: {exc}", file=sys.stderr)
        return 2


def run_gateway(config_path: str) -> int:
    from edge_gateway.agent import Gateway
    from edge_gateway.config import load_config
    from edge_gateway.transport import MqttTransport

    config = load_config(config_path)
    gateway = Gateway(
        config,
        transport_factory=lambda gw: MqttTransport(
            config.mqtt, config.mqtt.client_id or config.site, gw.subscriptions, gw.will),
    )
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    LOG.info("site %s: gateway %s starting with %d machines", config.site, __version__,
             len(config.machines))
    gateway.start()
    stopping.wait()
    LOG.info("site %s: stopping", config.site)
    gateway.stop()
    return 0


def probe_bmc(url: str, username: str, password: str, timeout: float,
              verify_tls: bool = True) -> int:
    from edge_gateway.probe import probe

    print(json.dumps(probe(url, username, password, timeout=timeout, verify_tls=verify_tls),
                     indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
