"""The OpenAPI 3.1 document of the HTTPS API, generated from the route table
(``chalicelib.api.contract``) and the pydantic models of requests and answers, served at
``GET /openapi.json`` (``chalicelib.api.document``) and checked in as ``docs/openapi.json``.

``python -m chalicelib.api.openapi docs/openapi.json`` writes it again (``--check``: exit 1
if the file differs); ``tests/test_openapi.py`` fails while the checked-in one is stale.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from chalicelib import __version__, limits
from chalicelib.access import rules
from chalicelib.api import contract, examples, response_examples, responses
from chalicelib.api.contract import COMMON_ERRORS, Operation
from chalicelib.api.params import Param
from chalicelib.api.responses import Error
from edgeplane.protocol import PROTOCOL_VERSION

REF = "#/components/schemas/{model}"
SECURITY_SCHEME = "bearer"

ERROR_TEXT = {
    400: "A parameter or the body is invalid; the message names it",
    401: "No token, or not a valid one",
    403: "The caller's role is below what the route needs",
    404: "What the path (or a parameter) names does not exist",
    409: "The request conflicts with the state of what it names",
    413: "The body is larger than the route takes",
    415: "The body is not application/json",
    503: "The API is not configured for this (a missing setting is named)",
}
STATUS_TEXT = {200: "OK", 201: "Created"}


def route_role(method: str, path: str) -> tuple[str, bool] | None:
    """(the role a route needs, whether some requests need a higher one), from the access
    rules (``chalicelib.access.rules``); None for a route without a rule."""
    rule = rules.ROUTES.get((method, path))
    if rule is None:
        return None
    return str(rule.role), rule.refine is not None


def build(operations: Sequence[Operation] = contract.OPERATIONS,
          role_of: Callable[[str, str], tuple[str, bool] | None] = route_role
          ) -> dict[str, Any]:
    """The document, as plain JSON."""
    models = _models(operations)
    refs, definitions = models_json_schema([(model, "validation") for model in models],
                                           ref_template=REF)
    ref = {model: refs[(model, "validation")] for model in models}
    paths: dict[str, dict[str, Any]] = {}
    for operation in operations:
        paths.setdefault(operation.path, {})[operation.method.lower()] = _operation(
            operation, ref, role_of(operation.method, operation.path))
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Edgeplane API",
            "version": __version__,
            "description": (
                "The control plane of Edgeplane: sites and machines, definitions, rollouts. "
                f"Wire protocol version {PROTOCOL_VERSION}. Every route needs a bearer "
                "token; its role (viewer < operator < admin) is in x-edgeplane-role. "
                f"Bodies are JSON, at most {limits.MAX_BODY} bytes unless a route says "
                f"more, nested at most {limits.MAX_DEPTH} levels; free-form objects "
                "(facts, task parameters, a document's spec) are bounded as their "
                "x-bounds say. Errors are {\"error\": {\"code\", \"message\"}}."),
        },
        "servers": [{"url": "/"}],
        "security": [{SECURITY_SCHEME: []}],
        "tags": [{"name": name} for name in dict.fromkeys(o.tag for o in operations)],
        "paths": paths,
        "components": {
            "schemas": definitions.get("$defs", {}),
            "responses": _errors(ref[Error]),
            "securitySchemes": {SECURITY_SCHEME: {
                "type": "http", "scheme": "bearer",
                "description": "a principal's token (ep1.<name>.<secret>)"}},
        },
    }


@functools.cache
def document() -> dict[str, Any]:
    """The document of this app (built once per process)."""
    return build()


def answer_model(operation: Operation) -> type[BaseModel]:
    """The model of what ``operation`` answers; AttributeError if its row names none."""
    model: type[BaseModel] = getattr(responses, operation.answer)
    return model


def _models(operations: Sequence[Operation]) -> list[type[BaseModel]]:
    found: list[type[BaseModel]] = [Error]
    for operation in operations:
        found += [answer_model(operation)] + ([operation.body] if operation.body else [])
    return list(dict.fromkeys(found))


def _operation(operation: Operation, ref: dict[type[BaseModel], dict[str, Any]],
               role: tuple[str, bool] | None) -> dict[str, Any]:
    description = operation.description
    body: dict[str, Any] = {
        "operationId": _operation_id(operation),
        "summary": operation.summary,
        "tags": [operation.tag],
    }
    if role is not None:
        name, refined = role
        body["x-edgeplane-role"] = name
        description += f"\n\nRole: {name}" + (
            " (some requests need a higher one: docs/security.md)." if refined else ".")
    if description.strip():
        body["description"] = description.strip()
    parameters = [_parameter(param, "path") for param in operation.path_params]
    parameters += [_parameter(param, "query") for param in operation.query]
    if parameters:
        body["parameters"] = parameters
    if operation.body is not None:
        media: dict[str, Any] = {"schema": ref[operation.body]}
        if operation.body_example is not None:
            media["example"] = operation.body_example
        body["requestBody"] = {"required": True, "content": {"application/json": media}}
    answers: dict[str, Any] = {}
    model = answer_model(operation)
    example = response_examples.by_model().get(model)
    for status in operation.status:
        media = {"schema": ref[model]}
        if example is not None:
            media["example"] = example.model_dump(mode="json", exclude_none=False)
        answers[str(status)] = {"description": STATUS_TEXT.get(status, "OK"),
                                "content": {"application/json": media}}
    for status in sorted(set(COMMON_ERRORS) | set(operation.errors)):
        answers[str(status)] = {"$ref": f"#/components/responses/{_error_name(status)}"}
    body["responses"] = answers
    if operation.max_body != limits.MAX_BODY:
        body["x-max-body-bytes"] = operation.max_body
    return body


def _error_name(status: int) -> str:
    return f"Error{status}"


def _errors(error_ref: dict[str, Any]) -> dict[str, Any]:
    """Each error status once, in components.responses."""
    found = {}
    for status, (code, message) in sorted(examples.ERRORS.items()):
        answer: dict[str, Any] = {
            "description": ERROR_TEXT[status],
            "content": {"application/json": {
                "schema": error_ref, "example": {"error": {"code": code, "message": message}}}},
        }
        if status == 401:
            answer["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"},
                                                      "description": "Bearer realm=..."}}
        found[_error_name(status)] = answer
    return found


def _operation_id(operation: Operation) -> str:
    words = [part.strip("{}").replace("-", "_").replace(".", "_")
             for part in operation.path.split("/") if part]
    return "_".join([operation.method.lower(), *words])


def _parameter(param: Param, where: str) -> dict[str, Any]:
    return {"name": param.name, "in": where, "required": where == "path" or param.required,
            "description": param.description, "schema": param.schema(),
            "example": param.parse(param.example)}


def text() -> str:
    """The document as it is checked in."""
    return json.dumps(document(), indent=2, ensure_ascii=False) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    import argparse  # the command line only: not on the Lambda's import path

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path", type=Path, help="where the document goes (docs/openapi.json)")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if the file is not the document")
    args = parser.parse_args(argv)
    wanted = text()
    if args.check:
        current = args.path.read_text() if args.path.exists() else ""
        if current != wanted:
            print(f"{args.path} is stale: run python -m chalicelib.api.openapi {args.path}",
                  file=sys.stderr)
            return 1
        return 0
    args.path.write_text(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main())
