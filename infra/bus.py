"""Edgeplane's EventBridge bus: the state changes the cloud announces (docs/events.md), kept
in an archive so that a subscriber added later, or one that lost events, can replay them.

Events coming in (handlers in app.py declared with ``@app.on_cw_event``) subscribe with
``route_handlers``: their rules are moved onto this bus instead of the account's default
one.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_events as events
from constructs import Construct

from chalicelib.events import SOURCE
from infra.stages import Stage


class EventBus(Construct):
    def __init__(self, scope: Construct, construct_id: str, stage: Stage) -> None:
        super().__init__(scope, construct_id)
        self.bus = events.EventBus(self, "Bus", event_bus_name=f"edgeplane-{stage.name}")
        self.archive = self.bus.archive(
            "Archive", description="Everything Edgeplane announced, for replays",
            event_pattern=events.EventPattern(source=[SOURCE]),
            retention=cdk.Duration.days(stage.archive_days))

    def route_handlers(self, functions: Iterable[tuple[Any, dict[str, Any]]]) -> list[str]:
        """Put the EventBridge rules of app.py's event handlers on this bus.

        ``functions``: (the SAM function resource, its properties as ``chalice package``
        wrote them). Returns the events moved, as ``Function.Event``.
        """
        moved = []
        for resource, properties in functions:
            for name, source in (properties.get("Events") or {}).items():
                if source.get("Type") in ("CloudWatchEvent", "EventBridgeRule"):
                    resource.add_property_override(f"Events.{name}.Properties.EventBusName",
                                                   self.bus.event_bus_name)
                    moved.append(f"{resource.node.id}.{name}")
        return moved
