"""What a field upgrade of one site's gateway costs: time, disk, memory.

One site's gateway runs as on a site box (``edge-gateway supervise``, this tree's install
adopted as the first version) against a TLS broker with a certificate per client; a wheel
built from this tree at another version is served over HTTP on loopback; a signed plan asks
for ``gateway.upgrade``, ``--rounds`` times back and forth between two built versions. It
prints, per round: plan sent to result received, the hand-over to healthy part (as the
result says), the new version's folder on disk; then the supervisor's and the gateway's RSS.

    python benchmarks/upgrade.py --rounds 3
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import http.server
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from chalicelib.signing import PlanSigner
from edge_gateway.upgrade.layout import Layout
from edgeplane import protocol
from edgeplane.protocol import Plan, PlanStep, Presence, Result
from edgeplane_dev.mosquitto import Mosquitto
from edgeplane_dev.pki import LocalCa, cloud_identity
from edgeplane_dev.ports import LOOPBACK
from edgeplane_dev.processes import spawn, stop
from edgeplane_dev.recorder import Recorder
from edgeplane_dev.stack import gateway_config

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SITE = "bench-upgrade"
SIGNER = PlanSigner(Ed25519PrivateKey.generate())  # the cloud's key, for one run


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def build(version: str, dist: Path) -> tuple[Path, float]:
    started = time.monotonic()
    subprocess.run([sys.executable, str(ROOT / "scripts" / "build_dists.py"), "--only",
                    "gateway", "--dist", str(dist), "--version", version],
                   check=True, capture_output=True)
    (wheel,) = dist.glob(f"edge_gateway-{version}-*.whl")
    return wheel, time.monotonic() - started


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def run(rounds: int, directory: Path) -> None:
    ca = LocalCa(directory / "pki").ensure()
    dist = directory / "dist"
    versions = ["0.0.1+bench.a", "0.0.1+bench.b"]
    wheels = {}
    for version in versions:
        (dist / version).mkdir(parents=True)
        wheels[version], took = build(version, dist / version)
        print(f"built {wheels[version].name} ({wheels[version].stat().st_size / 1024:.0f} "
              f"KiB) in {took:.1f} s")
    handler = functools.partial(_Quiet, directory=str(dist))
    server = http.server.ThreadingHTTPServer((LOOPBACK, 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    served = {v: (f"http://{LOOPBACK}:{port}/{v}/{w.name}",
                  hashlib.sha256(w.read_bytes()).hexdigest()) for v, w in wheels.items()}
    layout = Layout(directory / "gateway")
    with Mosquitto(directory / "mosquitto", persistence=False, tls=ca.broker()) as broker:
        config = directory / "gateway.toml"
        config.write_text(gateway_config(SITE, broker.port, [], ca.identity(SITE),
                                         [SIGNER.public_key_b64]))
        config.chmod(0o600)
        subprocess.run([str(BIN / "edge-gateway"), "versions", "--root", str(layout.root),
                        "adopt"], check=True, capture_output=True)
        recorder = Recorder(broker.port, identity=ca.identity(cloud_identity("operator")))
        supervisor = spawn([str(BIN / "edge-gateway"), "supervise", "--root",
                            str(layout.root), "--config", str(config)],
                           directory / "supervisor.log")
        try:
            recorder.wait_for(lambda found: any(p.online for p in found), Presence, 30)
            for number in range(rounds * 2):
                version = versions[number % 2]
                url, sha256 = served[version]
                execution_id = f"r-bench{number}.{SITE}"
                plan = Plan(site=SITE, execution_id=execution_id, rollout_id=f"r-bench{number}",
                            steps=[PlanStep("gateway.upgrade", {"version": version, "url": url,
                                                                "sha256": sha256}, [])])
                sent = time.monotonic()
                recorder.publish(protocol.plan_topic(SITE),
                                 SIGNER.sign(plan, time.time() + 3600))
                (result,) = {r.id: r for r in recorder.wait_for(
                    lambda found, e=execution_id: any(r.execution_id == e for r in found),
                    Result, 120) if r.execution_id == execution_id}.values()
                took = time.monotonic() - sent
                healthy = re.search(r"healthy after ([0-9.]+) s", result.message)
                size = sum(f.stat().st_size for f in layout.version_dir(version).rglob("*")
                           if f.is_file())
                print(f"round {number + 1}: to {version}: {result.state} in {took:.2f} s "
                      f"(hand-over to healthy {healthy.group(1) if healthy else '?'} s); "
                      f"its folder {size / 1024 / 1024:.1f} MiB")
            gateway = children(supervisor.pid)
            print(f"RSS: supervisor {rss_mib(supervisor.pid):.1f} MiB, gateway "
                  f"{sum(rss_mib(p) for p in gateway):.1f} MiB")
        finally:
            stop(supervisor, grace=30)
            recorder.close()
            server.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2,
                        help="upgrades there and back (two each)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="edgeplane-upgrade-") as directory:
        run(args.rounds, Path(directory))


if __name__ == "__main__":
    main()
