"""Where a wave's counters live: on the rollout item, beside the rollout's own.

Each wave's finished and failed sites are kept in two maps of the rollout
(``Rollout.wave_done`` and ``Rollout.wave_failed``, by wave index), so a batch of moves is
counted in one ADD whatever the waves its sites are in, and whoever reads the rollout (the
engine's gate, the API) has its waves with it. A rollout stored before has neither map: its
counters stay in its ``Wave`` items, counted by an ADD each, as they always were.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pynamodb.expressions.update import Action

from chalicelib.models import Rollout, Wave


def zeros(sizes: list[int]) -> dict[str, int]:
    """A map of a new rollout: every wave at zero (an ADD needs its map there)."""
    return {str(index): 0 for index in range(len(sizes))}


def on_rollout(rollout: Rollout) -> bool:
    """Whether the rollout keeps its waves' counters (else its Wave items do)."""
    return rollout.wave_done is not None


def adding(done: Mapping[int, int], failed: Mapping[int, int]) -> list[Action]:
    """The ADDs that count sites finished (and failed) per wave on the rollout."""
    return [*(Rollout.wave_done[str(wave)].add(count) for wave, count in done.items()
              if count),
            *(Rollout.wave_failed[str(wave)].add(count) for wave, count in failed.items()
              if count)]


def setting(done: Mapping[int, int], failed: Mapping[int, int],
            waves: int) -> list[Action]:
    """The SETs that put recounted counters on the rollout."""
    return [Rollout.wave_done.set({str(i): int(done.get(i, 0)) for i in range(waves)}),
            Rollout.wave_failed.set({str(i): int(failed.get(i, 0)) for i in range(waves)})]


def of(rollout: Rollout, index: int) -> Wave | None:
    """Wave ``index`` with its counters (None: its item is not written yet)."""
    if on_rollout(rollout):
        return from_rollout(rollout, index)
    try:
        return Wave.get(rollout.rollout_id, index, consistent_read=True)
    except Wave.DoesNotExist:  # the create is still writing the rollout's waves
        return None


def all_of(rollout: Rollout) -> list[Wave]:
    """Every wave of the rollout with its counters."""
    if on_rollout(rollout):
        return [from_rollout(rollout, index) for index in range(len(rollout.waves or []))]
    return list(Wave.query(rollout.rollout_id, consistent_read=True))


def from_rollout(rollout: Rollout, index: int) -> Wave:
    """Wave ``index`` as the rollout's maps count it (a rollout that has them)."""
    done, failed = _as_dict(rollout.wave_done), _as_dict(rollout.wave_failed)
    return Wave(rollout.rollout_id, index, size=int((rollout.waves or [])[index]),
                done=int(done.get(str(index), 0)), failed=int(failed.get(str(index), 0)))


def _as_dict(counters: Any) -> dict[str, Any]:
    return counters.as_dict() if counters is not None else {}
