"""Build what gets shipped into dist/: the site gateway's wheel and the workspace's wheel.

The gateway's wheel is built from a staging folder holding only the Python files of
edge_gateway/ and the wire contract (edgeplane/__init__.py, protocol.py and windows.py), with
packaging/edge-gateway/'s pyproject.toml and README: a site installs the gateway, never the
cloud, the CLI or the simulators. The workspace's wheel (the repository's pyproject.toml) is
the operator's and developer's install of everything.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GATEWAY_FILES = ["edge_gateway/", "edgeplane/__init__.py", "edgeplane/protocol.py",
                 "edgeplane/windows.py"]


def sources(patterns: list[str]) -> list[str]:
    """The Python files under each folder (or the file itself), caches left out."""
    found: list[str] = []
    for pattern in patterns:
        path = ROOT / pattern
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        found += [str(f.relative_to(ROOT)) for f in files if "__pycache__" not in f.parts]
    return found


def build_wheel(source: Path, dist: Path) -> Path:
    before = set(dist.glob("*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--wheel-dir", str(dist), str(source)], check=True)
    made = sorted(set(dist.glob("*.whl")) - before) or sorted(
        dist.glob("*.whl"), key=lambda path: path.stat().st_mtime)[-1:]
    return made[-1]


def build_gateway(dist: Path, version: str | None = None) -> Path:
    """The gateway's wheel; ``version``: stamped on the staged copy instead of the tree's
    (a build to try a field upgrade with, as ``make demo`` does)."""
    with tempfile.TemporaryDirectory(prefix="edge-gateway-") as stage_dir:
        stage = Path(stage_dir)
        for name in ("pyproject.toml", "README.md"):
            shutil.copy(ROOT / "packaging" / "edge-gateway" / name, stage / name)
        for relative in sources(GATEWAY_FILES):
            target = stage / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(ROOT / relative, target)
        if version is not None:
            if not re.fullmatch(r"[0-9][0-9A-Za-z.+!_-]{0,63}", version):
                raise SystemExit(f"{version!r} is not a version a site can install")
            init = stage / "edge_gateway" / "__init__.py"
            text, stamped = re.subn(r'(?m)^__version__ = ".*"$', f'__version__ = "{version}"',
                                    init.read_text())
            if stamped != 1:
                raise SystemExit(f"no __version__ line in {init} to stamp")
            init.write_text(text)
        return build_wheel(stage, dist)


def describe(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        requires = [line.split(":", 1)[1].strip()
                    for line in archive.read(next(n for n in names if n.endswith("METADATA")))
                    .decode().splitlines() if line.startswith("Requires-Dist:")]
    packages = sorted({name.split("/")[0] for name in names if not name.endswith(".dist-info/")
                       and ".dist-info/" not in name})
    print(f"{wheel.name}: {wheel.stat().st_size / 1024:.1f} KiB, {len(names)} files, "
          f"packages {', '.join(packages)}; requires {', '.join(requires) or 'nothing'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dist", type=Path, default=ROOT / "dist", help="where the wheels go")
    parser.add_argument("--only", choices=["gateway", "workspace"], help="build one of them")
    parser.add_argument("--version", help="the gateway's version to stamp on its wheel "
                        "(default: the tree's)")
    args = parser.parse_args()
    args.dist.mkdir(parents=True, exist_ok=True)
    for old in args.dist.glob("*.whl"):
        old.unlink()
    if args.only in (None, "gateway"):
        describe(build_gateway(args.dist, args.version))
    if args.only in (None, "workspace"):
        describe(build_wheel(ROOT, args.dist))


if __name__ == "__main__":
    main()
