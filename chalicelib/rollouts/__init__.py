"""Rollouts: a blueprint revision or a list of steps, applied to a fleet's sites in waves.

One module per decision:

- ``create``: resolving the target and creating a rollout, idempotently;
- ``rendering``: each site's plan (and its machines' desired state), for create and dispatch;
- ``targets``: the target's site ids, stored beside the rollout;
- ``policy``: the pure rules (wave sizes, windows, the abort threshold, limits, backoff);
- ``states``: which state may follow which, for executions and rollouts;
- ``moves``: one conditional move of an execution or a rollout along those tables;
- ``bookkeeping``: the counters and events of a batch of moves, written once per batch;
- ``dispatch``: claiming queued sites and publishing their plans;
- ``advance``: moving a rollout on (abort, next wave, dispatch, finish) under its lease;
- ``reports``: progress and results from sites, applied a batch at a time;
- ``control``: pause, resume and cancel;
- ``tick``: timeouts, expiry, opened windows and recounts, every minute;
- ``read``: rollouts and executions as the API shows them.
"""
