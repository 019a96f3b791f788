"""Named schedules: each pruner's published default (``<pruner>-default``) and the fixed
baselines of the paper's Table 2.

- ``vtw``: visual-token withdrawal: every visual token until layer K (default: half the
  decoder), none after. ``vtw-K`` picks K.
- ``aim``: an AIM-style layer-wise schedule: everything until a quarter of the decoder, then
  a linear decrease to none at the last layer.
"""

from __future__ import annotations

from paretobench.schedule import PruningSchedule, ScheduleError

FIXED = ("vtw", "aim")


def vtw(layers: int, k: int | None = None) -> PruningSchedule:
    k = layers // 2 if k is None else k
    if not 0 <= k <= layers:
        raise ScheduleError(f"vtw-{k}: K must be between 0 and {layers}")
    return PruningSchedule(tuple(1.0 if i < k else 0.0 for i in range(layers)))


def aim(layers: int) -> PruningSchedule:
    start = max(1, layers // 4)
    span = layers - start
    return PruningSchedule(tuple(1.0 if i < start else 1.0 - (i - start + 1) / span for i in range(layers)))


def names() -> list[str]:
    from paretobench.registry import PRUNERS

    return [f"{p}-default" for p in PRUNERS.names() if _has_preset(p)] + ["vtw", "vtw-K", "aim"]


def _has_preset(pruner: str) -> bool:
    from paretobench.registry import PRUNERS
    from pruners.base import Pruner

    return PRUNERS.get(pruner).preset is not Pruner.preset  # the class overrides it


def resolve(name: str, layers: int) -> PruningSchedule:
    """A preset's schedule for a ``layers``-layer decoder."""
    from paretobench.registry import PRUNERS

    if name == "vtw":
        return vtw(layers)
    if name.startswith("vtw-"):
        try:
            return vtw(layers, int(name[4:]))
        except ValueError as e:
            raise ScheduleError(f"preset {name!r}: {e}") from None
    if name == "aim":
        return aim(layers)
    if name.endswith("-default"):
        pruner = PRUNERS.get(name[: -len("-default")])()
        return pruner.preset(layers)
    raise ScheduleError(f"unknown preset {name!r}; valid: {', '.join(names())}")
