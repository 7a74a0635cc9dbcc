"""Reading definition documents from YAML/JSON files and folders, keeping where each came from.

A file may hold several YAML documents (``---``); a folder is read recursively, in name
order, for ``*.yaml``, ``*.yml`` and ``*.json``. Errors name the file (and line, for YAML).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

SUFFIXES = (".yaml", ".yml", ".json")


class DocumentError(ValueError):
    """A file that cannot be read as definition documents."""


@dataclass(frozen=True)
class Loaded:
    document: dict[str, Any]
    origin: str  # "examples/fleet/profiles.yaml#2"


def load(paths: list[Path]) -> list[Loaded]:
    loaded: list[Loaded] = []
    for path in paths:
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.suffix in SUFFIXES and p.is_file())
            if not files:
                raise DocumentError(f"{path}: no .yaml, .yml or .json files in it")
        elif path.is_file():
            files = [path]
        else:
            raise DocumentError(f"{path}: no such file or folder")
        for file in files:
            loaded += _load_file(file)
    if not loaded:
        raise DocumentError("no documents found")
    return loaded


def _load_file(file: Path) -> list[Loaded]:
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DocumentError(f"{file}: cannot be read: {exc}") from None
    try:
        documents = [json.loads(text)] if file.suffix == ".json" else \
            [d for d in yaml.safe_load_all(text) if d is not None]
    except json.JSONDecodeError as exc:
        raise DocumentError(f"{file}: line {exc.lineno}: not valid JSON: {exc.msg}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise DocumentError(f"{file}: {where}not valid YAML: {problem}") from None
    found = []
    for index, document in enumerate(documents, start=1):
        if isinstance(document, list):  # a JSON file may hold a list of documents
            found += [Loaded(d, f"{file}#{index}.{i}") for i, d in enumerate(document, 1)]
        else:
            found.append(Loaded(document, f"{file}#{index}" if len(documents) > 1
                                else str(file)))
    return found


_DOCUMENT_INDEX = re.compile(r"\bdocument (\d+)\b")


def name_origins(message: str, loaded: list[Loaded]) -> str:
    """The API names documents by position ("document 3"): say which file they came from."""
    def origin(match: re.Match[str]) -> str:
        index = int(match[1]) - 1
        return loaded[index].origin if 0 <= index < len(loaded) else match[0]

    return _DOCUMENT_INDEX.sub(origin, message)
