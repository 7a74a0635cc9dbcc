"""The operator's side of the fleet registry: declare and read sites and their machines.

Writes are single UpdateItems that touch only the fields the operator owns, so they never
race with what gateways report (presence, inventory) into the same records. A machine is
two items: its site's list of machine ids (what rendering reads machines by) and its own.
The list is written first when a machine is declared, and last when one is removed, so a
failure between the two leaves at most an id that names no machine (which rendering skips,
and a retry completes), never a machine its site does not list. Nothing a request writes
can be refused for its size: the request's bounds (``chalicelib.schemas``) keep it small.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from pynamodb.exceptions import PynamoDBException
from pynamodb.expressions.update import Action

from chalicelib.errors import Conflict, NotFound
from chalicelib.models import Machine, Site, conditional_failed, conditional_write
from chalicelib.schemas import MachineIn, SiteIn

DEFAULT_TIMEZONE = "UTC"


def put_site(site_id: str, body: SiteIn, clock: Callable[[], float] = time.time) -> Site:
    """Create the site, or change the operator-owned fields the body names.

    Fields left out keep their value (a new site gets the defaults: its id as name, no
    tags, UTC); ``null`` resets one. Presence and gateway facts are never touched.
    """
    now = clock()
    defaults: dict[str, object] = {"name": site_id, "tags": [], "timezone": DEFAULT_TIMEZONE}
    actions: list[Action] = [Site.created_at.set(Site.created_at | now),
                             Site.updated_at.set(now)]
    for field in ("name", "region", "tags", "timezone", "facts", "maintenance_window"):
        attribute, value = getattr(Site, field), getattr(body, field)
        if hasattr(value, "model_dump"):
            value = value.model_dump()
        default = defaults.get(field)
        if field not in body.model_fields_set:  # left out: keep, or default if new
            if default is not None:
                actions.append(attribute.set(attribute | default))
        elif value is not None:
            actions.append(attribute.set(value))
        else:  # null: back to the default
            actions.append(attribute.set(default) if default is not None
                           else attribute.remove())
    site = Site(site_id)
    site.update(actions=actions)
    return site


def get_site(site_id: str) -> Site:
    try:
        return Site.get(site_id, consistent_read=True)
    except Site.DoesNotExist:
        raise NotFound(kind="site", id=site_id) from None


def list_sites() -> list[Site]:
    return sorted(Site.scan(), key=lambda s: s.site_id)


def machines_of(site_id: str) -> list[Machine]:
    return list(Machine.query(site_id, consistent_read=True))


def put_machine(site_id: str, machine_id: str, body: MachineIn,
                clock: Callable[[], float] = time.time) -> Machine:
    """Declare a machine (404 if the site is unknown); inventory facts are kept."""
    # The next inventory is applied in full, whatever its digest says (ingest.on_inventory).
    # Conditional: a site deleted meanwhile is not brought back as a bare item.
    if not conditional_write(Site(site_id), [Site.inventory_digest.remove(),
                                             Site.machine_digests.remove(),
                                             Site.machine_ids.add({machine_id})],
                             Site.site_id.exists()):
        raise NotFound(kind="site", id=site_id)
    machine = Machine(site_id, machine_id)
    machine.update(actions=[
        Machine.protocol.set(str(body.protocol)),
        Machine.address.set(body.address),
        (Machine.machine_class.set(body.machine_class) if body.machine_class
         else Machine.machine_class.remove()),
        Machine.labels.set(body.labels),
        Machine.source.set("api"),
        Machine.updated_at.set(clock()),
    ])
    return machine


def delete_machine(site_id: str, machine_id: str,
                   needed_by: Callable[[str, str], list[str]]) -> None:
    """Remove a machine: 404 if the site or the machine is unknown, 409 naming the rollouts
    that ``needed_by`` says still need it. Its gateway, if it still reports it, brings it
    back with its next inventory (which is applied in full)."""
    get_site(site_id)
    rollouts = needed_by(site_id, machine_id)
    if rollouts:
        raise Conflict(f"machine {machine_id!r} of site {site_id!r} is in the plan of "
                       f"unfinished rollout(s) {', '.join(rollouts)}: wait for them to finish, "
                       "or cancel them")
    try:
        Machine(site_id, machine_id).delete(condition=Machine.machine_id.exists())
    except PynamoDBException as exc:
        if conditional_failed(exc):
            raise NotFound(f"site {site_id!r} has no machine {machine_id!r}") from None
        raise
    conditional_write(Site(site_id), [Site.inventory_digest.remove(),
                                      Site.machine_digests.remove(),
                                      Site.machine_ids.delete({machine_id})],
                      Site.site_id.exists())
