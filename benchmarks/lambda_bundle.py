"""The Lambda bundle as `make infra` builds it: its size, and how long ``import app`` takes in
a fresh process (what every cold start of every function pays before its first event).

The bundle is the asset the synthesized stack deploys (infra/cdk.out/, Edgeplane-dev). It is
unpacked into a temporary folder and imported from there as Lambda does: ``python -S`` (no
site-packages), the bundle first on the path, then only what the Lambda runtime provides
(boto3, botocore and their dependencies, linked from this interpreter's), no environment
variables, no bytecode written. Each run is a new process; the minimum and the median of
the runs are reported (the minimum is the least disturbed by other load on the machine),
with the CPU time the import took in that process and its peak RSS, and the load average
the machine had. ``--write`` replaces the results block in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNTIME_PACKAGES = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "urllib3",
                    "six.py")
PROBE = ("import resource, time; start = time.perf_counter(); cpu = time.process_time(); "
         "import app; print((time.perf_counter() - start) * 1000, "
         "(time.process_time() - cpu) * 1000, "
         "resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")
BEGIN = "<!-- benchmarks/lambda_bundle.py results: begin -->"
END = "<!-- benchmarks/lambda_bundle.py results: end -->"


def bundle_of(assembly: Path, stack: str = "Edgeplane-dev") -> Path:
    template = json.loads((assembly / f"{stack}.template.json").read_text())
    keys = {resource["Properties"]["CodeUri"]["Key"]
            for resource in template["Resources"].values()
            if resource["Type"] == "AWS::Serverless::Function"}
    (key,) = keys
    return assembly / f"asset.{key}"


def runtime_folder(into: Path) -> Path:
    """boto3, botocore and what they need, linked from this interpreter's site-packages."""
    import botocore

    site = Path(botocore.__file__).resolve().parent.parent
    folder = into / "runtime"
    folder.mkdir()
    for name in RUNTIME_PACKAGES:
        if (site / name).exists():
            (folder / name).symlink_to(site / name)
    return folder


def import_ms(task: Path, runtime: Path, extra: list[str] | None = None
              ) -> tuple[tuple[float, ...], str]:
    """(wall ms, CPU ms, peak RSS MiB) of ``import app`` in a fresh process, and its stderr."""
    answer = subprocess.run(
        [sys.executable, "-S", *(extra or []), "-c", PROBE], cwd=task, capture_output=True,
        text=True, check=True,
        env={"PATH": os.environ["PATH"], "PYTHONDONTWRITEBYTECODE": "1",
             "PYTHONPATH": f"{task}{os.pathsep}{runtime}"})
    return tuple(float(value) for value in answer.stdout.split()), answer.stderr


def importtime_app_us(stderr: str) -> int:
    """The cumulative microseconds of ``app`` in ``-X importtime``'s report."""
    for line in stderr.splitlines():
        parts = [part.strip() for part in line.split("|")]
        if len(parts) == 3 and parts[2] == "app":
            return int(parts[1])
    raise ValueError("no 'app' line in -X importtime's report")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--assembly", type=Path, default=ROOT / "infra" / "cdk.out")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--write", action="store_true", help="update BENCHMARKS.md")
    args = parser.parse_args()

    bundle = bundle_of(args.assembly)
    size = bundle.stat().st_size
    with zipfile.ZipFile(bundle) as archive:
        files = len(archive.namelist())
        unpacked = sum(info.file_size for info in archive.infolist())
    with tempfile.TemporaryDirectory(prefix="lambda-task-") as folder:
        task = Path(folder) / "task"
        zipfile.ZipFile(bundle).extractall(task)
        runtime = runtime_folder(Path(folder))
        import_ms(task, runtime)  # the page cache warm, as for every later run
        load = os.getloadavg()[0]
        measured = [import_ms(task, runtime)[0] for _ in range(args.runs)]
        runs = [wall for wall, _, _ in measured]
        importtime = [importtime_app_us(import_ms(task, runtime, ["-X", "importtime"])[1])
                      for _ in range(5)]
    result = {
        "bundle_bytes": size, "bundle_mib": round(size / 2**20, 2), "files": files,
        "unpacked_mib": round(unpacked / 2**20, 1),
        "import_ms_min": round(min(runs), 1), "import_ms_median": round(statistics.median(runs), 1),
        "importtime_app_ms_min": round(min(importtime) / 1000, 1), "runs": args.runs,
        "import_cpu_ms_min": round(min(cpu for _, cpu, _ in measured), 1),
        "rss_mib_max": round(max(rss for _, _, rss in measured), 1),
        "load_average": round(load, 1),
    }
    print(f"bundle {result['bundle_mib']} MiB ({size:,} bytes, {files} files, "
          f"{result['unpacked_mib']} MiB unpacked)")
    print(f"import app: min {result['import_ms_min']} ms, median "
          f"{result['import_ms_median']} ms over {args.runs} fresh processes (CPU min "
          f"{result['import_cpu_ms_min']} ms, RSS {result['rss_mib_max']} MiB, load average "
          f"{result['load_average']}); -X importtime 'app' cumulative min "
          f"{result['importtime_app_ms_min']} ms")
    print(json.dumps(result))
    if args.write:
        write(result)


def write(result: dict[str, object]) -> None:
    path = ROOT / "BENCHMARKS.md"
    text = path.read_text()
    block = "\n".join([
        BEGIN,
        f"Command: `make infra && python benchmarks/lambda_bundle.py --runs {result['runs']} "
        "--write`",
        f"Machine: {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}",
        f"Run at: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average "
        f"{result['load_average']} (1 min) as the runs began",
        "",
        "| metric | value | target |",
        "|---|---|---|",
        f"| bundle (deployment zip) | {result['bundle_mib']} MiB ({result['bundle_bytes']:,} "
        f"bytes, {result['files']} files, {result['unpacked_mib']} MiB unpacked) | <= 5 MiB |",
        f"| `import app`, fresh process, min of {result['runs']} | "
        f"{result['import_ms_min']} ms | <= 200 ms |",
        f"| `import app`, median of {result['runs']} | {result['import_ms_median']} ms | |",
        f"| CPU time of the import, min of {result['runs']} | "
        f"{result['import_cpu_ms_min']} ms | |",
        f"| peak RSS after `import app` | {result['rss_mib_max']} MiB | |",
        f"| `-X importtime`, `app` cumulative, min of 5 | "
        f"{result['importtime_app_ms_min']} ms | |",
        END,
    ])
    if BEGIN in text:
        head, rest = text.split(BEGIN, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)


if __name__ == "__main__":
    main()
