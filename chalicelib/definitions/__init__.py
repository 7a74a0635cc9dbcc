"""Composable automation: the documents operators write (blueprints, profiles, sites, groups,
machine classes), how parameters resolve across the fleet's levels, templated steps, and the
variation report.

- ``documents``: the document shapes and their validation;
- ``templates``: Jinja2's sandbox with StrictUndefined;
- ``resolve``: fleet -> group -> site -> machine class -> machine, with provenance;
- ``variation``: the fleet-wide report of what varies and which overrides are redundant;
- ``catalog``: apply / get / delete on DynamoDB, with the checks across documents;
- ``params``: explain and variation on the stored definitions;
- ``render``: a blueprint revision rendered into one site's plan.
"""
