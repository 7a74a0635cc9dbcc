"""What the site artifact cache costs the gateway: one image fetched from the local stack's
artifact server (its own process), then served to N clients at once by the cache's LAN
server (``curl`` processes, each reading the whole image).

    python benchmarks/artifact_cache.py [--size-mib 256] [--clients 8] [--folder DIR]

Measured in this process, which holds the cache and its LAN server and nothing else of the
gateway: wall and CPU time of the download (fetch + SHA-256 + rename) and of the serving,
the bytes over the "WAN" and served, and the process's peak RSS before, after the download
and after serving (``ru_maxrss``): an image is streamed, never held in memory. The last
line printed is a JSON summary.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edge_gateway.cache.artifact import Artifact  # noqa: E402
from edge_gateway.cache.settings import CacheSettings  # noqa: E402
from edge_gateway.cache.site import SiteCache  # noqa: E402
from edgeplane_dev.ports import LOOPBACK, free_port, wait_for_tcp  # noqa: E402

MIB = 1024 * 1024


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_image(path: Path, size: int) -> str:
    """A file of ``size`` random bytes; its SHA-256, computed in chunks."""
    path.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with open(path, "wb") as out:
        for _ in range(size // MIB):
            block = os.urandom(MIB)
            digest.update(block)
            out.write(block)
    return digest.hexdigest()


def run(folder: Path, size: int, clients: int) -> dict[str, float]:
    image = folder / "origin" / "installer.iso"
    sha256 = make_image(image, size)
    port = free_port()
    origin = subprocess.Popen([sys.executable, "-m", "edgeplane_dev.artifacts", "--port",
                               str(port), "--directory", str(image.parent)], cwd=ROOT)
    try:
        wait_for_tcp(port)
        before = peak_rss_mib()
        cache = SiteCache(CacheSettings(directory=folder / "cache", max_bytes=2 * size,
                                        listen=LOOPBACK, port=0, advertise=LOOPBACK,
                                        max_clients=max(clients, 1)))
        cache.start()
        try:
            artifact = Artifact(sha256, f"http://{LOOPBACK}:{port}/{image.name}", size)
            wall, cpu = time.perf_counter(), time.process_time()
            cache.ensure(artifact)
            fetched = (time.perf_counter() - wall, time.process_time() - cpu)
            after_download = peak_rss_mib()
            url = cache.local_url(artifact)
            wall, cpu = time.perf_counter(), time.process_time()
            readers = [subprocess.Popen(["curl", "-sSf", "-o", os.devnull, url])
                       for _ in range(clients)]
            if any(reader.wait() != 0 for reader in readers):
                raise SystemExit("a client could not read the image")
            served = (time.perf_counter() - wall, time.process_time() - cpu)
            stats = cache.stats()
        finally:
            cache.stop()
    finally:
        origin.terminate()
        origin.wait()
    return {"size_mib": size / MIB, "clients": clients,
            "download_wall_s": round(fetched[0], 2), "download_cpu_s": round(fetched[1], 2),
            "wire_bytes": stats.wire_bytes, "serve_wall_s": round(served[0], 2),
            "serve_cpu_s": round(served[1], 2), "served_bytes": stats.served_bytes,
            "served_requests": stats.served_requests,
            "peak_rss_mib_before": round(before, 1),
            "peak_rss_mib_after_download": round(after_download, 1),
            "peak_rss_mib_after_serving": round(peak_rss_mib(), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--folder", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="artifact-cache-") as scratch:
        summary = run(args.folder or Path(scratch), args.size_mib * MIB, args.clients)
    for name, value in summary.items():
        print(f"{name:32} {value}")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
