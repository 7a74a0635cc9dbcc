"""Path and query parameters: what each may be, one definition per name for every route.

``parse`` is strict: an id matches its pattern whole (a trailing newline is not part of a
valid id), a number is ASCII digits within its range (``'²'.isdigit()`` is true, but it is
not a revision), a flag is ``true`` or ``false``. The OpenAPI document publishes ``schema``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from chalicelib.api import examples
from chalicelib.definitions.documents import Kind
from chalicelib.errors import InvalidField
from chalicelib.schemas import REVISION
from edgeplane import protocol

_DIGITS = re.compile(r"[0-9]{1,18}")


@dataclass(frozen=True)
class Param:
    name: str
    description: str
    example: str
    pattern: re.Pattern[str] | None = None
    choices: tuple[str, ...] | None = None
    integer: tuple[int, int] | None = None  # (minimum, maximum)
    boolean: bool = False
    required: bool = False  # path parameters always are

    def parse(self, text: str) -> Any:
        """The value ``text`` stands for; InvalidField naming the parameter if none."""
        if self.pattern is not None and not self.pattern.fullmatch(text):
            raise self._invalid(f"{text!r} does not match {self.pattern.pattern}")
        if self.choices is not None and text not in self.choices:
            raise self._invalid(f"unknown {self.name} {text!r}; "
                                f"{self.name}s: {', '.join(self.choices)}")
        if self.integer is not None:
            low, high = self.integer
            if not _DIGITS.fullmatch(text) or not low <= int(text) <= high:
                raise self._invalid(f"{text!r} must be an integer from {low} to {high}")
            return int(text)
        if self.boolean:
            if text not in ("true", "false"):
                raise self._invalid(f"{text!r} must be true or false")
            return text == "true"
        return text

    def schema(self) -> dict[str, Any]:
        if self.integer is not None:
            return {"type": "integer", "minimum": self.integer[0], "maximum": self.integer[1]}
        if self.boolean:
            return {"type": "boolean"}
        if self.choices is not None:
            return {"type": "string", "enum": list(self.choices)}
        return {"type": "string", "pattern": self.pattern.pattern if self.pattern else ".*"}

    def _invalid(self, reason: str) -> InvalidField:
        return InvalidField(field=self.name, reason=reason)


ROLLOUT_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
# A definition's name; a site's is its id (which may end with '-'), so names are checked as
# the wider of the two, and an unknown one is 404.
NAME_PATTERN = protocol.SITE_ID_PATTERN

SITE_ID = Param("site_id", "the site's id", "shop-0042", pattern=protocol.SITE_ID_PATTERN)
MACHINE_ID = Param("machine_id", "the machine's id at its site", "srv-1",
                   pattern=protocol.MACHINE_ID_PATTERN)
ROLLOUT_ID = Param("rollout_id", "the rollout's id", examples.ROLLOUT_ID,
                   pattern=ROLLOUT_ID_PATTERN)
KIND = Param("kind", "the kind of document", "blueprint",
             choices=tuple(kind.value for kind in Kind))
NAME = Param("name", "the document's name", "baseline", pattern=NAME_PATTERN)

# By the name they have in route paths.
PATH = {param.name: param for param in (SITE_ID, MACHINE_ID, ROLLOUT_ID, KIND, NAME)}

REVISION_QUERY = Param("revision", "a revision of the blueprint (default: its latest)", "2",
                       integer=(1, REVISION))
EXECUTIONS = Param("executions", "false: the rollout and its waves' counters only", "false",
                   boolean=True)
MACHINES = Param("machines", "false: sites only, no machine results", "false", boolean=True)
SITE = Param("site", "a site's id", "shop-0042", pattern=protocol.SITE_ID_PATTERN)
MACHINE = Param("machine", "a machine of that site", "srv-1",
                pattern=protocol.MACHINE_ID_PATTERN)
BLUEPRINT = Param("blueprint", "a blueprint whose defaults to include", "baseline",
                  pattern=NAME_PATTERN)

PRINCIPAL_NAME = Param("name", "the principal's name", "ci-deployer",
                       pattern=re.compile(r"^[a-z][a-z0-9-]{0,62}$"))
# GET /audit's filters (chalicelib.api.audit_trail reads them again).
AUDIT_SITE = Param("site", "records about this site", "shop-0042",
                   pattern=protocol.SITE_ID_PATTERN)
AUDIT_ROLLOUT = Param("rollout", "records about this rollout", examples.ROLLOUT_ID,
                      pattern=re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"))
AUDIT_PRINCIPAL = Param("principal", "records of this principal's calls", "ci-deployer",
                        pattern=re.compile(r"^[\x21-\x7e]{1,200}$"))
SINCE = Param("since", "from this time on: epoch seconds or ISO 8601", "2025-03-01",
              pattern=re.compile(r"^[0-9][0-9T:.+Z-]{0,39}$"))
UNTIL = Param("until", "up to this time: epoch seconds or ISO 8601", "2025-03-02T00:00:00Z",
              pattern=re.compile(r"^[0-9][0-9T:.+Z-]{0,39}$"))
LIMIT = Param("limit", "records per page", "100", integer=(1, 500))
NEXT = Param("next", "the page token a previous page gave", "1740821400.123456-0123456789ab",
             pattern=re.compile(r"^\d{10}\.\d{6}-[0-9a-f]{12}$"))

# The web console's aggregates (chalicelib.api.overview).
_LABEL = re.compile(r"^[\x20-\x7e]{1,100}$")  # printable ASCII, as tags and versions are
REGION = Param("region", "sites in this region", "eu-west", pattern=_LABEL)
TAG = Param("tag", "sites with this tag", "retail", pattern=_LABEL)
VENDOR = Param("vendor", "sites with a machine of this manufacturer", "Contoso",
               pattern=_LABEL)
GATEWAY_VERSION = Param("gateway_version", "sites whose gateway runs this version", "0.1.0",
                        pattern=_LABEL)
FAILURES_ROLLOUT = Param("rollout", "this rollout only (default: the newest five)",
                         examples.ROLLOUT_ID, pattern=ROLLOUT_ID_PATTERN)
GROUPS_LIMIT = Param("limit", "groups at most, largest first", "50", integer=(1, 500))
GROUP = Param("group", "sites in this group (a group document: sites with all its tags)",
              "emea", pattern=_LABEL)
FIRMWARE = Param("firmware", "sites with a machine whose BMC runs this firmware", "1.45.455b66",
                 pattern=_LABEL)
FLEET_FILTERS = (REGION, TAG, GROUP, VENDOR, FIRMWARE, GATEWAY_VERSION)
SITES_SORT = Param("sort", "the column the sites are sorted by (ties by site id)", "last_seen",
                   choices=("site_id", "last_seen", "gateway_version", "healthy", "in_sync"))
SITES_ORDER = Param("order", "ascending or descending", "desc", choices=("asc", "desc"))
OFFSET = Param("offset", "rows to skip", "0", integer=(0, 10_000_000))
PAGE_LIMIT = Param("limit", "rows per page", "50", integer=(1, 500))
