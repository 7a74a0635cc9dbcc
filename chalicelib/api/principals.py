"""Routes for principals: create one (its token is in this answer only), list, revoke."""

from __future__ import annotations

from typing import Any

from chalice import Blueprint, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator

from chalicelib.access import identity, principals
from chalicelib.access.roles import Role, parse_role
from chalicelib.schemas import parse

routes = Blueprint(__name__)


class PrincipalIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, defer_build=True)

    name: str = Field(min_length=1, max_length=63)
    role: Role

    @field_validator("role", mode="before")
    @classmethod
    def _role(cls, value: Any) -> Role:
        return parse_role(str(value))


@routes.route("/principals", methods=["POST"])
def create() -> Response:
    body = parse(PrincipalIn, routes.current_request.raw_body)
    created = principals.create(body.name, body.role, identity.current().name)
    return Response(status_code=201, body={
        "principal": principals.as_json(created.principal), "token": created.token,
        "note": "the token is shown once; only its hash is stored"})


@routes.route("/principals", methods=["GET"])
def list_principals() -> dict[str, Any]:
    return {"principals": [principals.as_json(p) for p in principals.list_all()]}


@routes.route("/principals/{name}", methods=["DELETE"])
def revoke(name: str) -> dict[str, Any]:
    principal, _ = principals.revoke(name, identity.current().name)
    return {"principal": principals.as_json(principal)}
