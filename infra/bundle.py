"""The Lambda bundle: the Chalice project as ``chalice package`` should see it, built from a
clean checkout with no step by hand.

``stage_project`` lays out a project folder under ``infra/build/``: ``app.py``,
``chalicelib/``, ``.chalice/config.json``, and a ``vendor/`` (which Chalice ships as it is)
holding the wire contract (``edgeplane/``) and the third-party packages of
``requirements.txt`` as wheels for Lambda's platform. Its ``requirements.txt`` is left out, so
Chalice downloads nothing itself.

Left out of ``vendor/``: what the Lambda Python runtime already has (boto3, botocore, and
what only they need: pynamodb's botocore alone is three times the rest of the bundle).
Debug sections are stripped from native extensions, and the modules ``import app`` loads
are shipped compiled (``compile_imported``): Lambda's ``/var/task`` is read-only, so
without them every cold start compiles them again.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import py_compile
import shutil
import subprocess
import sys
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "infra" / "build"
REQUIREMENTS = ROOT / "requirements.txt"
# The wire contract and the cloud's code, as the repository has them.
WIRE_CONTRACT = ROOT / "edgeplane"
APP_FILES = ("app.py",)
APP_PACKAGES = ("chalicelib",)
CONSOLE_ASSETS = Path("chalicelib", "console", "assets")
CHALICE_CONFIG = ROOT / ".chalice" / "config.json"

# In the Lambda Python runtime already (and kept up to date there): not shipped, and neither
# is what only they depend on.
RUNTIME_PROVIDED = frozenset({"boto3", "botocore"})
# Lambda's x86_64 Python runtimes; manylinux2014 (glibc 2.17) runs on both Amazon Linux
# images the runtimes use.
PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_17_x86_64")
MAX_BUNDLE_BYTES = 5 * 1024 * 1024
# What the app imports when first needed rather than at ``import app`` (the signing
# library: by the first plan signed), shipped compiled as well.
IMPORTED_LATER = ("nacl.signing",)


def python_version() -> str:
    """The runtime Chalice deploys with is the synthesizing interpreter's (python3.X): the
    wheels and the compiled modules are made for it."""
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def stage_project(project: Path | None = None) -> Path:
    """A fresh Chalice project folder ready for ``chalice package``; returns its path."""
    project = project or BUILD / "app"
    if project.exists():
        shutil.rmtree(project)
    (project / ".chalice").mkdir(parents=True)
    shutil.copy2(CHALICE_CONFIG, project / ".chalice" / "config.json")
    for name in APP_FILES:
        shutil.copy2(ROOT / name, project / name)
    for package in APP_PACKAGES:
        _copy_sources(ROOT / package, project / package)
    # The web console's page, styles and scripts, served by the app (chalicelib/console).
    shutil.copytree(ROOT / CONSOLE_ASSETS, project / CONSOLE_ASSETS)
    vendor = project / "vendor"
    shutil.copytree(dependencies(), vendor, copy_function=_link_or_copy,
                    ignore=shutil.ignore_patterns(".complete"))
    _copy_sources(WIRE_CONTRACT, vendor / WIRE_CONTRACT.name)
    compile_imported(project)
    return project


def _copy_sources(source: Path, target: Path) -> None:
    """The Python files of a package (no caches, no local leftovers)."""
    for path in sorted(source.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        destination = target / path.relative_to(source)
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, destination)


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


# --- third-party packages ------------------------------------------------------------


def dependencies() -> Path:
    """The installed wheels of ``requirements.txt`` for Lambda, less what the runtime
    provides; built once per set of requirements and Python version, then reused."""
    text = REQUIREMENTS.read_text()
    key = hashlib.sha256(json.dumps([text, python_version(), PLATFORMS,
                                     sorted(RUNTIME_PROVIDED)]).encode()).hexdigest()[:16]
    target = BUILD / f"deps-{python_version()}-{key}"
    if (target / ".complete").exists():
        return target
    staging = target.with_name(f"{target.name}.tmp{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    platforms = [arg for platform in PLATFORMS for arg in ("--platform", platform)]
    _run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
          "--no-compile", "--target", str(staging), "--implementation", "cp",
          "--python-version", python_version(), "--only-binary=:all:", *platforms,
          "--requirement", str(REQUIREMENTS)])
    remove_runtime_provided(staging, top_level(text))
    shutil.rmtree(staging / "bin", ignore_errors=True)  # console scripts: of no use there
    strip_debug_info(staging)
    (staging / ".complete").touch()
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


def top_level(requirements: str) -> set[str]:
    """The distributions ``requirements.txt`` names."""
    names: set[str] = set()
    for line in requirements.splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            names.add(_name(Requirement(line).name))
    return names


def _name(name: str) -> str:
    return str(canonicalize_name(name))


def _lambda_environment() -> dict[str, str]:
    environment = {key: str(value) for key, value in default_environment().items()}
    environment.update(python_version=python_version(),
                       python_full_version=f"{python_version()}.0",
                       sys_platform="linux", platform_system="Linux",
                       platform_machine="x86_64", os_name="posix",
                       implementation_name="cpython",
                       platform_python_implementation="CPython")
    return environment


def remove_runtime_provided(site: Path, wanted: Iterable[str]) -> list[str]:
    """Remove from ``site`` every distribution that ``wanted`` needs only through
    RUNTIME_PROVIDED (and those themselves); returns the names removed."""
    environment = _lambda_environment()
    installed = {_name(dist.metadata["Name"]): dist
                 for dist in metadata.distributions(path=[str(site)])}
    needs: dict[str, set[str]] = {}
    for name, dist in installed.items():
        needs[name] = set()
        for line in dist.requires or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate(
                    {**environment, "extra": ""}):
                needs[name].add(_name(requirement.name))
    provided = {_name(name) for name in RUNTIME_PROVIDED}
    kept: set[str] = set()
    pending = [_name(name) for name in wanted]
    while pending:
        name = pending.pop()
        if name in kept or name in provided or name not in installed:
            continue
        kept.add(name)
        pending.extend(needs[name])
    removed = sorted(set(installed) - kept)
    for name in removed:
        _uninstall(site, installed[name])
    return removed


def _uninstall(site: Path, dist: metadata.Distribution) -> None:
    for file in dist.files or []:
        path = (site / file).resolve()
        if path.is_relative_to(site.resolve()) and path.is_file():
            path.unlink()
    for folder in sorted((p for p in site.rglob("*") if p.is_dir()), reverse=True):
        if not any(folder.iterdir()):
            folder.rmdir()


def strip_debug_info(site: Path) -> None:
    """Drop the debug sections of native extensions (a wheel may ship them: several MB that
    only a debugger reads); symbols stay. Skipped where binutils' strip is missing."""
    strip = shutil.which("strip")
    if strip is None:
        return
    for library in sorted(site.rglob("*.so")):
        _run([strip, "--strip-debug", str(library)])


# --- compiled modules ---------------------------------------------------------------


def compile_imported(project: Path) -> list[Path]:
    """Compile the modules of the project that ``import app`` (and IMPORTED_LATER) loads,
    as Lambda will run it (the project, its vendor folder, then the runtime's boto3 and
    botocore); returns them.

    The project's own code (app.py, chalicelib, the wire contract) keeps its source beside
    an unchecked-hash ``.pyc``, valid whatever timestamps the zip and Lambda give the files.
    Third-party modules are shipped compiled only (a sourceless ``.pyc`` in place of the
    ``.py``): their source is never read at run time, and a traceback through them still
    names the file and line. What a cold start does not load stays source only. Both keep
    the bundle under MAX_BUNDLE_BYTES.
    """
    import botocore  # where this interpreter has the runtime's packages

    runtime = Path(botocore.__file__).resolve().parent.parent
    probe = (f"import json, sys; import app; import {', '.join(IMPORTED_LATER)}; "
             "print(json.dumps(sorted({m.__file__ for m in list(sys.modules.values()) "
             "if getattr(m, '__file__', None)})))")
    loaded = _run([sys.executable, "-S", "-c", probe], cwd=project, env={
        "PATH": os.environ.get("PATH", ""), "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONPATH": os.pathsep.join([str(project), str(project / "vendor"), str(runtime)])})
    root = project.resolve()
    ours = [root / name for name in APP_FILES + APP_PACKAGES] + [
        root / "vendor" / WIRE_CONTRACT.name]
    compiled = []
    for name in json.loads(loaded):
        path = Path(name).resolve()
        if path.suffix != ".py" or not path.is_relative_to(root):
            continue
        if any(path == own or path.is_relative_to(own) for own in ours):
            py_compile.compile(str(path), cfile=str(_pyc_path(project, path)), doraise=True,
                               invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
        else:
            py_compile.compile(str(path), cfile=str(path.with_suffix(".pyc")), doraise=True)
            path.unlink()  # a link into the dependencies' cache: the cache keeps its copy
        compiled.append(path)
    return compiled


def _run(args: list[str], **kwargs: Any) -> str:
    """Run a build step; its output, or an error that carries what it printed."""
    answer = subprocess.run(args, capture_output=True, text=True, check=False, **kwargs)
    if answer.returncode != 0:
        raise RuntimeError(f"{Path(args[0]).name} {' '.join(args[1:3])} ... failed "
                           f"({answer.returncode}):\n{answer.stderr[-4000:]}")
    return answer.stdout


def _pyc_path(project: Path, source: Path) -> Path:
    """Where Python looks for the compiled module. ``app.py`` sits at the zip's root, but
    Chalice ships only the source of it: its cache goes in through ``vendor/``."""
    cache = Path(importlib.util.cache_from_source(str(source)))
    if source.parent == project.resolve():
        return project / "vendor" / "__pycache__" / cache.name
    return cache
