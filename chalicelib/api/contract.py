"""Every route of the HTTPS API in one table: its parameters, body, answer and errors.

Two readers: ``chalicelib.api.inputs`` checks each request's size, path and query against
its row before the route runs, and ``chalicelib.api.openapi`` publishes the table as the
OpenAPI document; a body's model is the one its route parses it with (``DefinitionsIn``
describes what ``catalog.apply`` checks). So the parameters a route accepts and those the
document names cannot differ; ``tests/test_openapi.py`` checks that every route of the app
has its row, and ``tests/test_api_fuzz.py`` that the app answers as the document says.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from chalicelib import limits
from chalicelib.api import examples
from chalicelib.api import params as p
from chalicelib.api.params import Param
from chalicelib.api.principals import PrincipalIn
from chalicelib.definitions import catalog
from chalicelib.definitions.documents import Kind
from chalicelib.limits import DocumentSpec
from chalicelib.schemas import MachineIn, RolloutIn, SiteIn

# Every route can answer these: a parameter or body refused, no or a wrong token, a role
# too low, a body too large or not JSON, the API not configured.
COMMON_ERRORS = (400, 401, 403, 413, 415, 503)


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    summary: str
    answer: str  # its model's name in chalicelib.api.responses (loaded with the document)
    tag: str
    description: str = ""
    status: tuple[int, ...] = (200,)
    body: type[BaseModel] | None = None
    body_example: dict[str, Any] | None = None
    query: tuple[Param, ...] = ()
    errors: tuple[int, ...] = ()  # besides COMMON_ERRORS
    max_body: int = limits.MAX_BODY
    own_path_params: tuple[Param, ...] = ()  # where a name means another thing than in PATH
    path_params: tuple[Param, ...] = field(init=False)

    def __post_init__(self) -> None:
        names = re.findall(r"{(\w+)}", self.path)
        own = {param.name: param for param in self.own_path_params}
        object.__setattr__(self, "path_params", tuple(own.get(name) or p.PATH[name]
                                                      for name in names))

    @property
    def key(self) -> tuple[str, str]:
        return self.method, self.path


def _required(param: Param) -> Param:
    return dataclasses.replace(param, required=True)


class DocumentIn(BaseModel):
    """``{kind, name, spec}``; each kind's spec is in ``docs/definitions.md``."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    kind: Kind
    name: str = Field(pattern=p.NAME_PATTERN.pattern)
    spec: DocumentSpec = Field(default_factory=dict)


class DefinitionsIn(BaseModel):
    """A batch of documents, each checked, with the rest of the batch, before anything is
    written (the route reads it as ``chalicelib.definitions.catalog.apply`` does)."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    documents: list[DocumentIn] = Field(min_length=1, max_length=catalog.MAX_BATCH)
    dry_run: bool = False


OPERATIONS: tuple[Operation, ...] = (
    Operation("GET", "/health", "The API is up; the versions it speaks", "Health", "health"),
    Operation("GET", "/openapi.json", "This document", "Document", "health"),
    # sites and machines
    Operation("GET", "/sites", "Every site, by id", "SiteList", "sites"),
    Operation("PUT", "/sites/{site_id}", "Create a site, or change the fields given",
              "SiteOne", "sites", body=SiteIn, body_example=examples.SITE_IN,
              description="Fields left out keep their value (a new site gets its id as name, "
                          "no tags, UTC); null puts one back to its default. What the gateway "
                          "reports (presence, version) is never changed here."),
    Operation("GET", "/sites/{site_id}", "A site and its machines", "SiteWithMachines",
              "sites", errors=(404,)),
    Operation("GET", "/sites/{site_id}/machines", "A site's machines", "MachineList", "sites",
              errors=(404,)),
    Operation("PUT", "/sites/{site_id}/machines/{machine_id}", "Declare a machine",
              "MachineOne", "sites", body=MachineIn, body_example=examples.MACHINE_IN,
              errors=(404,),
              description="What the gateway's inventory found (capabilities, manufacturer, "
                          "power...) is kept. The address never carries credentials."),
    Operation("DELETE", "/sites/{site_id}/machines/{machine_id}", "Remove a machine",
              "MachineDeleted", "sites", errors=(404, 409),
              description="Refused (409, naming the rollouts) while a rollout that has not "
                          "finished has a plan for it at its site. A machine its gateway "
                          "still reports comes back with the next inventory: remove it from "
                          "the gateway's configuration first."),
    # rollouts
    Operation("POST", "/rollouts", "Start a rollout", "RolloutCreated", "rollouts",
              status=(201, 200), body=RolloutIn, body_example=examples.ROLLOUT_IN,
              errors=(404, 409), max_body=limits.MAX_LARGE_BODY,
              description="201 with the new rollout; 200 with the existing one when the same "
                          "client_token comes again with the same request (409 with another "
                          "request). Nothing is written unless every site can run it."),
    Operation("GET", "/rollouts", "Every rollout, newest first", "RolloutList", "rollouts"),
    Operation("GET", "/rollouts/{rollout_id}", "A rollout, site by site", "RolloutDetail",
              "rollouts", query=(p.EXECUTIONS, p.MACHINES), errors=(404,)),
    Operation("POST", "/rollouts/{rollout_id}/pause", "Pause a running rollout",
              "RolloutOne", "rollouts", errors=(404, 409)),
    Operation("POST", "/rollouts/{rollout_id}/resume", "Resume a paused rollout",
              "RolloutOne", "rollouts", errors=(404, 409)),
    Operation("POST", "/rollouts/{rollout_id}/cancel", "Cancel a rollout", "RolloutOne",
              "rollouts", errors=(404, 409),
              description="Queued sites are canceled at once; sites that have the plan are "
                          "told to drop it or stop after the current step."),
    Operation("GET", "/rollouts/{rollout_id}/events", "A rollout's event log", "EventList",
              "rollouts", errors=(404,)),
    # definitions and parameters
    Operation("POST", "/definitions", "Apply documents (or check them: dry_run)",
              "AppliedList", "definitions", body=DefinitionsIn,
              body_example=examples.DEFINITIONS_IN, errors=(409,),
              max_body=limits.MAX_LARGE_BODY),
    Operation("GET", "/definitions/{kind}", "Every document of a kind", "DefinitionList",
              "definitions"),
    Operation("GET", "/definitions/{kind}/{name}", "One document (a blueprint's revision)",
              "DefinitionOne", "definitions", query=(p.REVISION_QUERY,), errors=(404,)),
    Operation("DELETE", "/definitions/{kind}/{name}", "Delete a document",
              "DefinitionDeleted", "definitions", errors=(404, 409)),
    Operation("GET", "/params/explain", "Every value a site or machine resolves, and why",
              "Explanation", "definitions",
              query=(_required(p.SITE), p.MACHINE, p.BLUEPRINT), errors=(404, 409)),
    Operation("GET", "/params/variation", "How much the fleet's sites differ", "Variation",
              "definitions"),
    Operation("GET", "/drift", "Machines whose observed state differs from the desired",
              "DriftList", "drift", query=(p.SITE,), errors=(404,)),
    # who may call, and what they did (chalicelib.access)
    Operation("POST", "/principals", "Create a principal; its token is in this answer only",
              "PrincipalCreated", "access", status=(201,), body=PrincipalIn,
              body_example={"name": "ci-deployer", "role": "operator"}, errors=(409,)),
    Operation("GET", "/principals", "Every principal, revoked ones too", "PrincipalList",
              "access"),
    Operation("DELETE", "/principals/{name}", "Revoke a principal", "PrincipalOne", "access",
              errors=(404, 409), own_path_params=(p.PRINCIPAL_NAME,)),
    Operation("GET", "/audit", "Who changed what, newest first", "AuditPage", "access",
              query=(p.AUDIT_SITE, p.AUDIT_ROLLOUT, p.AUDIT_PRINCIPAL, p.SINCE, p.UNTIL,
                     p.LIMIT, p.NEXT)),
    # what the web console reads (chalicelib.api.console, chalicelib.api.overview)
    Operation("GET", "/whoami", "The caller: its principal and role", "WhoAmI", "console"),
    Operation("GET", "/fleet/summary", "Sites online, offline, stale, drifted, failing",
              "FleetSummary", "console",
              query=p.FLEET_FILTERS,
              description="Counted on the server over the sites that pass every filter "
                          "given; facets give each filter's values over the whole fleet."),
    Operation("GET", "/failures", "Failed steps grouped by task and message",
              "FailureGroups", "console", query=(p.FAILURES_ROLLOUT, p.GROUPS_LIMIT),
              errors=(404,),
              description="Over the newest five rollouts (or one): numbers, addresses, URLs "
                          "and quoted names in the messages are blanked out, so that "
                          "machines failing the same way make one group; each group names "
                          "where it happened (up to 20 samples)."),
    Operation("GET", "/rollouts/{rollout_id}/sites/{site_id}",
              "One site's share of a rollout, machine by machine and step by step",
              "ExecutionOne", "rollouts", errors=(404,)),
    Operation("GET", "/fleet/sites", "Sites, a page at a time, sorted and filtered",
              "SitesPage", "console",
              query=(*p.FLEET_FILTERS, p.SITES_SORT, p.SITES_ORDER, p.OFFSET, p.PAGE_LIMIT),
              description="Sorted on the server by last seen, gateway version, healthy "
                          "machines or machines in sync with their desired state."),
    Operation("GET", "/sites/{site_id}/executions",
              "The site's share of each of the newest rollouts it was part of",
              "SiteRuns", "sites", errors=(404,)),
    Operation("GET", "/failures/matrix", "Failure rate by vendor and BMC firmware",
              "FailureMatrix", "console", query=(p.FAILURES_ROLLOUT,), errors=(404,),
              description="Machines of the newest five rollouts (or one) that ran to the end, "
                          "by their vendor and their BMC's firmware, with how many failed."),
)

_BY_KEY = {operation.key: operation for operation in OPERATIONS}


def find(method: str, path: str) -> Operation | None:
    """The row of a route (``path`` as the app declares it: ``/sites/{site_id}``)."""
    return _BY_KEY.get((method, path))
