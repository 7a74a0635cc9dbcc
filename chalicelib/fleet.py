"""The operator's side of the fleet registry: declare and read sites and their machines.

Writes are single UpdateItems that touch only the fields the operator owns, so they never
race with what gateways report (presence, inventory) into the same records.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from pynamodb.expressions.update import Action

from chalicelib.errors import NotFound
from chalicelib.models import Machine, Site
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
    get_site(site_id)
    # The next inventory is applied in full, whatever its digest says (ingest.on_inventory).
    Site(site_id).update(actions=[Site.inventory_digest.remove(), Site.machine_digests.remove(),
                                  Site.machine_ids.add({machine_id})])
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
