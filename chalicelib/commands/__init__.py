"""Commands that come in as EventBridge events: start a rollout, pause, resume or cancel one.

``contract`` names what is taken (``SOURCE``, ``DETAIL_TYPES``, ``event_pattern()``: the rule
of ``app.py``'s handler) and what is answered; ``claims`` makes each event act once;
``handler`` acts as the API does and answers. ``docs/events.md`` documents the schemas.
"""

from chalicelib.commands.contract import DETAIL_TYPES, SOURCE, event_pattern
from chalicelib.commands.handler import handle

__all__ = ["DETAIL_TYPES", "SOURCE", "event_pattern", "handle"]
