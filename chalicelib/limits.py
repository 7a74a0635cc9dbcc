"""Bounds on what a request may carry, checked before anything is stored.

Three layers: the body's size, per route (413 before it is parsed: ``chalicelib.api.inputs``);
its JSON, decoded here (not nested deeper than ``MAX_DEPTH``, no NaN or Infinity, no lone
surrogate); and in the free-form parts (site facts, task parameters, a document's spec),
every string, list and map, with the path of the first one that is too big. Typed fields
carry their own bounds in their models (``chalicelib.schemas``).

Together they keep every item a request writes far below DynamoDB's 400 KB an item, so that
no write is refused for its size after others of the same request were made.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import AfterValidator, Field

from chalicelib.errors import BadRequest

MAX_BODY = 128 * 1024  # bytes; a site, a machine, an operator action
MAX_LARGE_BODY = 1024 * 1024  # a rollout of 10,000 listed sites, a batch of documents
MAX_DEPTH = 32  # nesting of a whole body


@dataclass(frozen=True)
class Bounds:
    """What a free-form JSON value may hold."""

    depth: int = 8  # nesting below the field itself
    string: int = 4096  # characters in a string
    items: int = 256  # entries of a list
    keys: int = 256  # keys of a map
    key: int = 128  # characters in a key
    size: int = 32 * 1024  # bytes of the whole value as compact JSON


FREE_FORM = Bounds()
# What a document's spec may hold (a blueprint's steps and their parameters, a profile's
# values): the whole document is one DynamoDB item.
DOCUMENT = Bounds(depth=12, size=64 * 1024)


def decode(raw: bytes | str | None) -> Any:
    """The JSON of a request body (none: ``{}``); BadRequest saying what is wrong with it."""
    try:
        data = json.loads(raw or b"{}", parse_constant=_no_constant)
    except RecursionError:
        raise BadRequest(f"request body is nested deeper than {MAX_DEPTH} levels") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from None
    problem = _walk(data, Bounds(depth=MAX_DEPTH, string=1 << 30, items=1 << 30,
                                 keys=1 << 30, key=1 << 30, size=1 << 30), "")
    if problem:
        raise BadRequest(f"request body: {problem}")
    return data


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def check(value: Any, bounds: Bounds = FREE_FORM) -> Any:
    """``value`` if it is within ``bounds``; ValueError naming the first part that is not
    (for pydantic validators: the error then names the field too)."""
    problem = _walk(value, bounds, "")
    if problem:
        raise ValueError(problem)
    size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
    if size > bounds.size:
        raise ValueError(f"{size} bytes as JSON; at most {bounds.size}")
    return value


def _walk(value: Any, bounds: Bounds, root: str) -> str | None:
    """The first problem in ``value``, or None. Iterative: a deep value cannot exhaust the
    interpreter's stack here."""
    stack: list[tuple[Any, int, str]] = [(value, 0, root)]
    while stack:
        item, depth, path = stack.pop()
        where = path or "(top)"
        if isinstance(item, str):
            if len(item) > bounds.string:
                return f"{where}: a string of {len(item)} characters; at most {bounds.string}"
            if not _encodable(item):
                return f"{where}: a string with a lone surrogate (not valid Unicode)"
        elif isinstance(item, dict | list):
            if depth >= bounds.depth:
                return f"{where}: nested deeper than {bounds.depth} levels"
            if isinstance(item, list):
                if len(item) > bounds.items:
                    return f"{where}: {len(item)} entries; at most {bounds.items}"
                stack.extend((entry, depth + 1, f"{path}[{index}]")
                             for index, entry in enumerate(item))
                continue
            if len(item) > bounds.keys:
                return f"{where}: {len(item)} keys; at most {bounds.keys}"
            for key, entry in item.items():
                if len(key) > bounds.key:
                    return f"{where}: a key of {len(key)} characters; at most {bounds.key}"
                if not _encodable(key):
                    return f"{where}: a key with a lone surrogate (not valid Unicode)"
                stack.append((entry, depth + 1, f"{path}.{key}" if path else key))
    return None


def _encodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _schema(bounds: Bounds) -> dict[str, Any]:
    return {"x-bounds": {"depth": bounds.depth, "string": bounds.string,
                         "items": bounds.items, "key": bounds.key, "bytes": bounds.size}}


def _free_form(value: dict[str, Any]) -> dict[str, Any]:
    return check(value, FREE_FORM)


def _document(value: dict[str, Any]) -> dict[str, Any]:
    return check(value, DOCUMENT)


# A free-form JSON object field (facts, task parameters), bounded as ``FREE_FORM`` says.
FreeForm = Annotated[dict[str, Any],
                     Field(max_length=FREE_FORM.keys, json_schema_extra=_schema(FREE_FORM)),
                     AfterValidator(_free_form)]
# A document's spec (``chalicelib.definitions.documents``), bounded as ``DOCUMENT`` says.
DocumentSpec = Annotated[dict[str, Any],
                         Field(max_length=DOCUMENT.keys, json_schema_extra=_schema(DOCUMENT)),
                         AfterValidator(_document)]
