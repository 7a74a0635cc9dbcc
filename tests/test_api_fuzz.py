"""schemathesis against the app, over every route of its OpenAPI document: requests
generated from the document (valid ones, and in a second run invalid ones), sent over HTTP to
the app served as ``chalice local`` serves it (chalice's own request handler and API Gateway
emulation, on 127.0.0.1), with moto as the store, on a fleet seeded with the document's
examples (so that generated ids sometimes exist).

Every answer must be no server error, have a documented status and content type, and match
its documented schema; in the negative run every request must be refused (4xx). Runs are
derandomized and bounded (``EXAMPLES`` per route and run): CI sees the same requests every
time. Why valid requests may still be refused (400/404/409): what JSON Schema cannot say
(exactly one of ``sites`` and ``tag``; a task's parameters; sites that must exist).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable

from tests.support import AUTH, ROOT, call

EXAMPLES = 30  # generated requests per route and run
GENERATE = (Phase.explicit, Phase.generate)  # no shrinking: a failure is reported as found


@pytest.fixture
def served(api) -> Iterator[str]:
    """The app under test (the ``api`` fixture's tables, token and publisher), served over
    HTTP on a free loopback port by chalice's local server; its base URL."""
    from chalice.cli.factory import CLIFactory
    from chalice.local import ChaliceRequestHandler, LocalDevServer

    from app import app

    class Quiet(ChaliceRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

    config = CLIFactory(project_dir=str(ROOT)).create_config_obj(chalice_stage_name="dev")
    server = LocalDevServer(app, config, "127.0.0.1", 0, handler_cls=Quiet)
    thread = threading.Thread(target=server.server.serve_forever, daemon=True)
    thread.start()
    host, port = server.server.server_address[:2]
    yield f"http://{host}:{port}"
    server.shutdown()
    server.server.server_close()
    thread.join(timeout=10)


@pytest.fixture
def fleet(api, published) -> None:
    """What the document's examples name: a site with machines, a blueprint, a rollout."""
    from chalicelib.api import examples

    assert call(api, "PUT", "/sites/shop-0042", examples.SITE_IN)[0] == 200
    for machine in ("srv-1", "srv-2"):
        assert call(api, "PUT", f"/sites/shop-0042/machines/{machine}",
                    examples.MACHINE_IN)[0] == 200
    blueprint = {"kind": "blueprint", "name": "baseline",
                 "spec": {"steps": [{"task": "power.ensure", "params": {"state": "on"}}]}}
    assert call(api, "POST", "/definitions", {"documents": [blueprint]})[0] == 200
    status, body = call(api, "POST", "/rollouts", examples.ROLLOUT_IN)
    assert status == 201, body


@pytest.fixture
def schema():
    from chalicelib.api import openapi

    return schemathesis.openapi.from_dict(openapi.document())


def checks(names: list[str]) -> list[Any]:
    from schemathesis.checks import CHECKS, load_all_checks

    load_all_checks()
    return [CHECKS.get_one(name) for name in names]


def _inputs(operation: Any) -> bool:
    """The route takes a parameter or a body (it has something to get wrong)."""
    return bool(list(operation.path_parameters) or list(operation.query) or operation.body)


ALWAYS = ["not_a_server_error", "status_code_conformance", "content_type_conformance",
          "response_schema_conformance", "response_headers_conformance"]
MODES = {"positive": ALWAYS, "negative": [*ALWAYS, "negative_data_rejection"]}


class Run:
    """One run (positive or negative) over every route; what it sent and what came back."""

    def __init__(self, base_url: str, mode: str) -> None:
        from schemathesis import GenerationMode

        self.base_url = base_url
        self.mode = mode
        self.generation = (GenerationMode.POSITIVE if mode == "positive"
                           else GenerationMode.NEGATIVE)
        self.checks = checks(MODES[mode])
        self.statuses: Counter[int] = Counter()
        self.by_route: Counter[str] = Counter()
        self.failures: list[str] = []

    def route(self, operation: Any) -> None:
        # Positive: the document's own examples too (they name the seeded fleet).
        strategy = st.one_of(
            *(operation.get_strategies_from_examples(headers=AUTH) if self.mode == "positive"
              else []),
            operation.as_strategy(generation_mode=self.generation, headers=AUTH))
        self.by_route[operation.label] += 0

        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck), phases=GENERATE)
        @given(data=st.data())
        def run(data: st.DataObject) -> None:
            self.send(operation, data.draw(strategy))

        try:
            run()
        except AssertionError:
            pass  # recorded: the other routes run all the same
        except Unsatisfiable:  # nothing of it can be invalid: no parameter, no body
            assert self.mode == "negative" and not _inputs(operation), operation.label

    def send(self, operation: Any, case: Any) -> None:
        response = case.call(base_url=self.base_url, headers=AUTH)
        self.statuses[response.status_code] += 1
        self.by_route[operation.label] += 1
        try:
            case.validate_response(response, checks=self.checks, headers=AUTH)
        except AssertionError as exc:  # schemathesis' FailureGroup
            self.failures.append(f"{operation.label}: {str(exc)[:2000]}")
            raise

    def summary(self) -> str:
        routes = sum(1 for n in self.by_route.values() if n)
        return (f"{self.mode}: {sum(self.statuses.values())} requests over {routes} of "
                f"{len(self.by_route)} routes; statuses {dict(sorted(self.statuses.items()))}")


@pytest.mark.parametrize("mode", sorted(MODES))
def test_every_route_answers_as_documented(served, fleet, schema, mode, capsys):
    run = Run(served, mode)
    operations = [result.ok() for result in schema.get_all_operations()]
    for operation in operations:
        run.route(operation)
    with capsys.disabled():
        print(f"\n{run.summary()}")
    assert not run.failures, "\n\n".join(run.failures)
    assert len(run.by_route) == len(operations), "every route ran"
    assert not [status for status in run.statuses if status >= 500]
