"""The OpenAPI document: generated from the route table and the models, served at
``GET /openapi.json``, checked in as ``docs/openapi.json``; every route of the app in it,
with its role, its errors and examples that fit their own schemas."""

from __future__ import annotations

import json

import pytest

from tests.support import ROOT, call

CHECKED_IN = ROOT / "docs" / "openapi.json"
METHODS = ("get", "put", "post", "delete", "patch")


@pytest.fixture(scope="module")
def document() -> dict:
    from chalicelib.api import openapi

    return openapi.build()


def operations(document: dict) -> dict[tuple[str, str], dict]:
    return {(method.upper(), path): operation
            for path, item in document["paths"].items()
            for method, operation in item.items() if method in METHODS}


def test_the_checked_in_document_is_the_generated_one(document):
    assert json.loads(CHECKED_IN.read_text()) == document, (
        "docs/openapi.json is stale: run .venv/bin/python -m chalicelib.api.openapi "
        "docs/openapi.json")


def test_the_regenerating_command_tells_a_stale_file(tmp_path):
    from chalicelib.api import openapi

    stale = tmp_path / "openapi.json"
    stale.write_text("{}\n")
    assert openapi.main([str(stale), "--check"]) == 1
    assert openapi.main([str(stale)]) == 0
    assert openapi.main([str(stale), "--check"]) == 0
    assert stale.read_text() == CHECKED_IN.read_text()


def test_the_app_serves_the_document(api, document):
    status, body = call(api, "GET", "/openapi.json")
    assert status == 200
    assert body == document


def test_every_route_of_the_app_is_in_the_document_and_nothing_else(document):
    from app import app
    from chalicelib.access.rules import PUBLIC  # the console's files: not the API

    routes = {(method, path) for path, methods in app.routes.items() for method in methods}
    routes -= PUBLIC
    assert set(operations(document)) == routes


def test_every_route_has_the_role_of_the_access_rules(document):
    from chalicelib.access import rules

    for key, operation in operations(document).items():
        assert operation["x-edgeplane-role"] == str(rules.ROUTES[key].role), key
        assert f"Role: {rules.ROUTES[key].role}" in operation["description"], key


def test_the_generator_takes_the_role_from_the_function_it_is_given():
    from chalicelib.api import contract, openapi

    built = openapi.build(contract.OPERATIONS[:1], role_of=lambda method, path: ("auditor",
                                                                                 False))
    assert built["paths"]["/health"]["get"]["x-edgeplane-role"] == "auditor"


def test_every_route_documents_its_errors_and_an_example(document):
    for (method, path), operation in operations(document).items():
        statuses = set(operation["responses"])
        assert {"400", "401", "403", "413", "415", "503"} <= statuses, (method, path)
        if "{" in path and method in ("GET", "DELETE") and path != "/definitions/{kind}":
            assert "404" in statuses, (method, path)
        ok = [s for s in statuses if s.startswith("2")]
        assert ok and all("example" in operation["responses"][s]["content"][
            "application/json"] for s in ok), (method, path)
        if "requestBody" in operation:
            assert "example" in operation["requestBody"]["content"]["application/json"]


def test_every_example_fits_its_schema(document):
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    registry = Registry().with_resource("urn:doc", Resource(document, DRAFT202012))

    def check(schema: dict, example: object, where: str) -> None:
        validator = Draft202012Validator({"$ref": "urn:doc" + schema["$ref"]},
                                         registry=registry)
        errors = [error.message for error in validator.iter_errors(example)]
        assert not errors, (where, errors)

    def media(entry: dict) -> dict:
        if "$ref" in entry:
            entry = document["components"]["responses"][entry["$ref"].rsplit("/", 1)[1]]
        return entry["content"]["application/json"]

    checked = 0
    for key, operation in operations(document).items():
        for status, answer in operation["responses"].items():
            found = media(answer)
            check(found["schema"], found["example"], f"{key} {status}")
            checked += 1
        if "requestBody" in operation:
            found = operation["requestBody"]["content"]["application/json"]
            check(found["schema"], found["example"], f"{key} body")
            checked += 1
        for parameter in operation.get("parameters", []):
            assert Draft202012Validator(parameter["schema"]).is_valid(parameter["example"])
    assert checked > 100


def test_what_the_document_says_of_parameters_is_what_the_app_checks(api, document):
    """A value the document's pattern refuses is refused, naming the parameter."""
    site_id = document["paths"]["/sites/{site_id}"]["get"]["parameters"][0]
    assert site_id["schema"]["pattern"] == "^[a-z0-9][a-z0-9-]{0,62}$"
    for value in ("Shop", "-x", "a" * 64):
        status, body = call(api, "GET", f"/sites/{value}")
        assert status == 400 and body["error"]["message"].startswith(
            "field 'site_id' is invalid"), value
