"""The DynamoDB tables, derived from the pynamodb models: the models are the one source of
truth for names, keys, indexes and TTL, in the cloud as on the local stack.

Every concrete pynamodb model defined under ``chalicelib`` when the app is synthesized is a
table: a model added next to the others (or in a module of its own) gets its table without
touching this file. The key schema is what pynamodb itself sends in CreateTable
(``Model._get_schema()``, what ``chalicelib.models.create_tables`` creates locally).
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_dynamodb as dynamodb
from constructs import Construct
from pynamodb.attributes import TTLAttribute
from pynamodb.models import Model

from infra.stages import Stage

PACKAGE = "chalicelib"

_TYPES = {"S": dynamodb.AttributeType.STRING, "N": dynamodb.AttributeType.NUMBER,
          "B": dynamodb.AttributeType.BINARY}
_PROJECTIONS = {"ALL": dynamodb.ProjectionType.ALL,
                "KEYS_ONLY": dynamodb.ProjectionType.KEYS_ONLY,
                "INCLUDE": dynamodb.ProjectionType.INCLUDE}


@dataclass(frozen=True)
class Key:
    name: str
    type: str  # S, N or B


@dataclass(frozen=True)
class Index:
    name: str
    hash_key: Key
    range_key: Key | None
    projection: str  # ALL, KEYS_ONLY or INCLUDE
    non_key_attributes: tuple[str, ...] = ()


@dataclass(frozen=True)
class TableSpec:
    """What a model asks of its table."""

    model: str  # module.Class
    suffix: str  # the table is named <prefix><suffix>
    hash_key: Key
    range_key: Key | None
    global_indexes: tuple[Index, ...]
    local_indexes: tuple[Index, ...]
    ttl_attribute: str | None


def models(package: str = PACKAGE) -> list[type[Model]]:
    """Every concrete pynamodb model defined in ``package`` (its modules are imported)."""
    root = importlib.import_module(package)
    for info in pkgutil.walk_packages(root.__path__, f"{package}."):
        importlib.import_module(info.name)
    found: dict[str, type[Model]] = {}
    pending: list[type[Model]] = [Model]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if cls.__module__.split(".")[0] == package and _is_table(cls):
            found[f"{cls.__module__}.{cls.__qualname__}"] = cls
    return [found[name] for name in sorted(found)]


def _is_table(cls: type[Model]) -> bool:
    """A model with a key of its own (an abstract base like EdgeplaneModel has none)."""
    return getattr(cls, "_hash_keyname", None) is not None


def spec(model: type[Model]) -> TableSpec:
    schema: dict[str, Any] = dict(model._get_schema())
    types = {d["AttributeName"]: d["AttributeType"] for d in schema["attribute_definitions"]}
    for index in schema["global_secondary_indexes"] + schema["local_secondary_indexes"]:
        types.update({d["AttributeName"]: d["AttributeType"]
                      for d in index["attribute_definitions"]})

    def keys_of(key_schema: list[dict[str, str]]) -> tuple[Key, Key | None]:
        by_type = {k["KeyType"]: Key(k["AttributeName"], types[k["AttributeName"]])
                   for k in key_schema}
        return by_type["HASH"], by_type.get("RANGE")

    def index_of(raw: dict[str, Any]) -> Index:
        hash_key, range_key = keys_of(raw["key_schema"])
        projection = raw["projection"]
        return Index(raw["index_name"], hash_key, range_key, projection["ProjectionType"],
                     tuple(projection.get("NonKeyAttributes", ())))

    hash_key, range_key = keys_of(schema["key_schema"])
    ttl = [attribute.attr_name for attribute in model.get_attributes().values()
           if isinstance(attribute, TTLAttribute)]
    return TableSpec(
        model=f"{model.__module__}.{model.__qualname__}",
        suffix=_suffix(model),
        hash_key=hash_key,
        range_key=range_key,
        global_indexes=tuple(index_of(i) for i in schema["global_secondary_indexes"]),
        local_indexes=tuple(index_of(i) for i in schema["local_secondary_indexes"]),
        ttl_attribute=ttl[0] if ttl else None,
    )


def _suffix(model: type[Model]) -> str:
    """``Model.TABLE`` (what ``chalicelib.models.configure`` prefixes); a model without one
    keeps its ``Meta.table_name`` less the default prefix."""
    suffix = getattr(model, "TABLE", "") or model.Meta.table_name
    return suffix.removeprefix("edgeplane-")


def _attribute(key: Key) -> dynamodb.Attribute:
    return dynamodb.Attribute(name=key.name, type=_TYPES[key.type])


class Tables(Construct):
    """One on-demand table per model, with point-in-time recovery; in production stages
    deletion protection and a retained table when the stack goes."""

    def __init__(self, scope: Construct, construct_id: str, stage: Stage) -> None:
        super().__init__(scope, construct_id)
        self.prefix = f"edgeplane-{stage.name}-"
        self.specs = [spec(model) for model in models()]
        self.tables: dict[str, dynamodb.Table] = {}
        for table_spec in self.specs:
            self.tables[table_spec.suffix] = self._table(table_spec, stage)

    def _table(self, table: TableSpec, stage: Stage) -> dynamodb.Table:
        construct = dynamodb.Table(
            self, table.model.rsplit(".", 1)[-1],
            table_name=f"{self.prefix}{table.suffix}",
            partition_key=_attribute(table.hash_key),
            sort_key=_attribute(table.range_key) if table.range_key else None,
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True),
            deletion_protection=stage.production,
            removal_policy=(cdk.RemovalPolicy.RETAIN if stage.production
                            else cdk.RemovalPolicy.DESTROY),
            time_to_live_attribute=table.ttl_attribute,
        )
        for index in table.global_indexes:
            construct.add_global_secondary_index(
                index_name=index.name,
                partition_key=_attribute(index.hash_key),
                sort_key=_attribute(index.range_key) if index.range_key else None,
                projection_type=_PROJECTIONS[index.projection],
                non_key_attributes=list(index.non_key_attributes) or None,
            )
        for index in table.local_indexes:
            assert index.range_key is not None, "a local index always has a sort key"
            construct.add_local_secondary_index(
                index_name=index.name,
                sort_key=_attribute(index.range_key),
                projection_type=_PROJECTIONS[index.projection],
                non_key_attributes=list(index.non_key_attributes) or None,
            )
        return construct
