"""Reading many items for an aggregate: the few attributes it needs, as plain values.

pynamodb builds a model instance per item and decodes every attribute it holds; for the
console's aggregates over a whole fleet (tens of thousands of items) that costs more than
the store's own answer. These read the store's pages through the model's connection (its
table, endpoint and credentials), with a projection, and decode only DynamoDB's types.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

from pynamodb.models import Model


def scan(model: type[Model], fields: list[str]) -> Iterator[dict[str, Any]]:
    """Every item of ``model``'s table, with ``fields`` only."""
    connection = model._get_connection()
    start = None
    while True:
        page = connection.scan(attributes_to_get=fields, exclusive_start_key=start)
        yield from (decode(item) for item in page.get("Items", []))
        start = page.get("LastEvaluatedKey")
        if not start:
            return


def query(model: type[Model], hash_key: str, fields: list[str],
          filter_condition: Any = None) -> Iterator[dict[str, Any]]:
    """The items under ``hash_key`` (that pass ``filter_condition``), with ``fields`` only."""
    connection = model._get_connection()
    start = None
    while True:
        page = connection.query(hash_key, attributes_to_get=fields, exclusive_start_key=start,
                                filter_condition=filter_condition)
        yield from (decode(item) for item in page.get("Items", []))
        start = page.get("LastEvaluatedKey")
        if not start:
            return


def decode(item: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {name: _value(typed) for name, typed in item.items()}


def _value(typed: dict[str, Any]) -> Any:
    (kind, raw), = typed.items()
    if kind == "S":
        return raw
    if kind == "N":
        number = Decimal(raw)
        return int(number) if number == number.to_integral_value() else float(number)
    if kind == "BOOL":
        return bool(raw)
    if kind == "NULL":
        return None
    if kind in ("SS", "NS"):
        return {_value({kind[0]: v}) for v in raw}
    if kind == "L":
        return [_value(v) for v in raw]
    if kind == "M":
        return {k: _value(v) for k, v in raw.items()}
    return raw  # B, BS: bytes as they came


def json_field(item: dict[str, Any], name: str) -> Any:
    """A JSONAttribute's value (stored as a string); None if absent or not JSON."""
    return parse_json(item.get(name))


def parse_json(raw: Any) -> Any:
    if not isinstance(raw, str):
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None
