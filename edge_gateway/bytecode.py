"""Lean bytecode: what ``edge-gateway run`` loads, compiled as Python's ``-OO`` compiles it.

Without docstrings and ``assert`` statements a gateway holds 1.5 MiB less (BENCHMARKS.md,
"Memory"): ``edge-gateway run`` starts itself again with ``PYTHONOPTIMIZE=2`` when that
bytecode is installed, and Python would otherwise compile every module from its source at
each start (or run without it). ``edge-gateway lean-bytecode`` writes it, after an install
(``make install`` and a field upgrade's install run it); nothing of the gateway relies on
an ``assert`` or a docstring.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import py_compile
import sys
from importlib.util import cache_from_source, find_spec

# Modules whose -OO bytecode says it was written for this install: the gateway's own, the
# standard library's and the broker client's (every site loads all three).
PROBES = ("edge_gateway", "logging", "paho.mqtt")


def lean_bytecode_installed(modules: tuple[str, ...] = PROBES) -> bool:
    """Whether each of ``modules`` has its ``-OO`` bytecode beside its source."""
    for name in modules:
        try:
            spec = find_spec(name)
        except (ImportError, ValueError):
            return False
        if spec is None or not spec.has_location or not spec.origin \
                or not spec.origin.endswith(".py"):
            return False
        if not os.path.exists(cache_from_source(spec.origin, optimization=2)):
            return False
    return True


def compile_lean_bytecode() -> tuple[int, int]:
    """Import every module of the gateway (so with them what they load, drivers and
    dependencies included) and write the ``-OO`` bytecode of each loaded module's source;
    (written, not writable): a folder this user may not write (a system's standard library)
    is skipped, and then ``lean_bytecode_installed`` stays False."""
    import edge_gateway

    for found in pkgutil.walk_packages(edge_gateway.__path__, "edge_gateway."):
        importlib.import_module(found.name)
    written = refused = 0
    for module in list(sys.modules.values()):
        source = getattr(module, "__file__", None)
        if not isinstance(source, str) or not source.endswith(".py"):
            continue
        try:
            py_compile.compile(source, cfile=cache_from_source(source, optimization=2),
                               optimize=2, doraise=True)
        except (OSError, py_compile.PyCompileError):
            refused += 1
        else:
            written += 1
    return written, refused
