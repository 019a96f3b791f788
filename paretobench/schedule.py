"""Pruning schedules and FLOPs budgets.

A schedule is ``keep[0..L-1]``: the fraction of the ORIGINAL visual tokens alive at the input
of decoder layer ``i``. It never increases (a dropped token does not come back). The number of
live visual tokens at layer ``i`` is ``round_half_up(keep[i] * Nv)`` everywhere in paretobench.

A budget is a fraction of the unpruned decoder prefill FLOPs of the same input (the paper's
Table 1 convention, ``mode="total"``), or, as the official VisPCO code defines it, a fraction
of the prunable range between the text-only floor and the unpruned cost (``mode="prunable"``).
A schedule's cost can include what its pruner spends scoring tokens (``ScoreCost``): at every
pruning step, the attention rows the pruner reads and, when it scores with the pruned layer's
own projections (or prunes before layer 0), those q/k projections. That is what the engine
executes and counts, so a budget met by this estimate is met by the realised FLOPs.
This module is free of torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from paretobench.flops import DecoderShape, prefill_flops, qk_projection_flops, score_rows_flops


class ScheduleError(ValueError):
    """A schedule or budget that cannot be run; the message says why in one line."""


def keep_count(keep: float, n_visual: int) -> int:
    """Live visual tokens for a keep fraction (round half up, the one rounding used everywhere)."""
    return int(math.floor(keep * n_visual + 0.5))


@dataclass(frozen=True)
class PruningSchedule:
    keep: tuple[float, ...]

    def __post_init__(self):
        keep = tuple(float(k) for k in self.keep)
        object.__setattr__(self, "keep", keep)
        if not keep:
            raise ScheduleError("a schedule needs one keep fraction per decoder layer, got none")
        for i, k in enumerate(keep):
            if not math.isfinite(k):
                raise ScheduleError(f"keep[{i}] is {k}; keep fractions must be finite numbers")
            if not 0.0 <= k <= 1.0:
                raise ScheduleError(f"keep[{i}] = {k:g} is outside [0, 1]")
        for i in range(1, len(keep)):
            if keep[i] > keep[i - 1]:
                raise ScheduleError(
                    f"keep[{i}] = {keep[i]:g} > keep[{i - 1}] = {keep[i - 1]:g}: a schedule never increases "
                    "(a dropped token does not come back)"
                )

    @property
    def layers(self) -> int:
        return len(self.keep)

    def counts(self, n_visual: int) -> list[int]:
        return [keep_count(k, n_visual) for k in self.keep]

    def check_layers(self, layers: int) -> PruningSchedule:
        if self.layers != layers:
            raise ScheduleError(f"the schedule has {self.layers} keep fractions; the model has {layers} decoder layers")
        return self

    @classmethod
    def full(cls, layers: int) -> PruningSchedule:
        return cls((1.0,) * layers)

    @classmethod
    def steps(cls, layers: int, drops: dict[int, float]) -> PruningSchedule:
        """Keep 1.0 until each given layer, then the given fraction: ``{2: 0.5}`` is FastV's
        K=2, 50%. Layers must be in range; fractions must not increase."""
        keep, current = [], 1.0
        for layer in drops:
            if not 0 <= layer < layers:
                raise ScheduleError(f"layer {layer} is out of range for a {layers}-layer decoder")
        for i in range(layers):
            current = drops.get(i, current)
            keep.append(current)
        return cls(tuple(keep))

    @classmethod
    def parse(cls, text: str, layers: int) -> PruningSchedule:
        """``"1,1,0.5,0.5,0.5,0.5,0.5,0.5"`` (one value per layer) or ``"2:0.5,6:0.25"``
        (layer:keep steps, keep 1.0 before the first)."""
        parts = [p.strip() for p in text.split(",") if p.strip()]
        if not parts:
            raise ScheduleError("empty schedule")
        try:
            if all(":" in p for p in parts):
                drops = {}
                for p in parts:
                    layer, keep = p.split(":")
                    drops[int(layer)] = float(keep)
                return cls.steps(layers, dict(sorted(drops.items())))
            if any(":" in p for p in parts):
                raise ScheduleError(f"mixed forms in {text!r}: give one value per layer or layer:keep steps")
            values = [float(p) for p in parts]
        except ValueError as e:
            if isinstance(e, ScheduleError):
                raise
            raise ScheduleError(f"cannot read schedule {text!r}: {e}") from None
        return cls(tuple(values)).check_layers(layers)

    def __str__(self) -> str:
        return ",".join(f"{k:g}" for k in self.keep)


# ----------------------------------------------------------------------------- budgets

BUDGET_MODES = ("total", "prunable")


SCORE_ROWS = ("none", "last", "text", "all")


@dataclass(frozen=True)
class ScoreCost:
    """What a pruner's scoring costs at each pruning step. ``rows``: the query rows it reads —
    ``none`` (no attention: random, spatial), ``last`` (the last position: FastV, PyramidDrop),
    ``text`` (at most every text token: SparseVLM's raters), ``all`` (every live token:
    FitPrune). ``projects``: it scores with the pruned layer's own q/k (PyramidDrop) rather than
    the previous layer's; before layer 0 every pruner that reads q/k projects them."""

    rows: str = "none"
    projects: bool = False
    reads_qk: bool = False  # reads keys without attention rows (ViTCoP's K-norm)
    recycle: float = 0.0  # SparseVLM: the share of dropped tokens clustered back into added tokens

    def __post_init__(self):
        if self.rows not in SCORE_ROWS:
            raise ValueError(f"unknown score rows {self.rows!r}; valid: {', '.join(SCORE_ROWS)}")

    def step(self, shape: DecoderShape, layer: int, n_text: int, n_live_visual: int) -> int:
        """FLOPs of one pruning step before ``layer`` with that many live tokens."""
        n = n_text + n_live_visual
        rows = {"none": 0, "last": 1, "text": n_text, "all": n}[self.rows]
        cost = score_rows_flops(shape, rows, n)
        if (rows or self.reads_qk) and (layer == 0 or self.projects):
            cost += qk_projection_flops(shape, n)
        return cost


    def added(self, live: int, kept: int) -> int:
        """Tokens a step adds on top of the ``kept`` ranked ones of ``live`` (SparseVLM's recycled
        clusters: ``int(0.3 * dropped) + 1`` candidates, a tenth of them plus one as clusters)."""
        dropped = live - kept
        return int((int(dropped * self.recycle) + 1) / 10) + 1 if kept and dropped > 0 and self.recycle > 0 else 0


FREE = ScoreCost()


def live_counts(schedule: PruningSchedule, n_visual: int, score: ScoreCost = FREE) -> list[tuple[int, int | None]]:
    """Per layer: the visual tokens alive at its input and, where a step happens before it, how
    many were alive before that step (else None). A step happens where the schedule's count
    falls; it keeps that many ranked tokens, plus what the pruner adds back (``score.added``)."""
    out, live, target = [], n_visual, n_visual
    for c in schedule.counts(n_visual):
        if c < target:
            before, live = live, c + score.added(live, c)
            out.append((live, before))
        else:
            out.append((live, None))
        target = c
    return out


def schedule_flops(shape: DecoderShape, schedule: PruningSchedule, n_text: int, n_visual: int,
                   score: ScoreCost = FREE) -> int:  # fmt: skip
    """Decoder prefill FLOPs with the live token count at each layer (``live_counts``), plus
    what the pruner's scoring costs at each step (``score``; default: nothing)."""
    schedule.check_layers(shape.layers)
    counts = live_counts(schedule, n_visual, score)
    cost = prefill_flops(shape, [n_text + live for live, _ in counts])
    for layer, (live, before) in enumerate(counts):
        if before is not None and live > 0:  # dropping every token needs no ranking
            cost += score.step(shape, layer, n_text, before)
    return cost


def flops_fraction(shape: DecoderShape, schedule: PruningSchedule, n_text: int, n_visual: int,
                   mode: str = "total", score: ScoreCost = FREE) -> float:  # fmt: skip
    """The schedule's cost as a budget fraction (see the module docstring for the two modes)."""
    full = prefill_flops(shape, [n_text + n_visual] * shape.layers)
    cost = schedule_flops(shape, schedule, n_text, n_visual, score)
    if mode == "total":
        return cost / full
    if mode == "prunable":
        floor = prefill_flops(shape, [n_text] * shape.layers)
        return (cost - floor) / (full - floor)
    raise ScheduleError(f"unknown budget mode {mode!r}; valid: {', '.join(BUDGET_MODES)}")


def dataset_fraction(shape: DecoderShape, schedule: PruningSchedule, n_text, n_visual,
                     score: ScoreCost = FREE) -> float:  # fmt: skip
    """The schedule's cost over several inputs, each with its own token counts (sequences
    ``n_text``, ``n_visual``), as a fraction of their unpruned cost: what an evaluation over them
    realises (its mean FLOPs over its mean unpruned FLOPs)."""
    cost = sum(schedule_flops(shape, schedule, t, v, score) for t, v in zip(n_text, n_visual))
    full = sum(prefill_flops(shape, [t + v] * shape.layers) for t, v in zip(n_text, n_visual))
    return cost / full


def text_only_fraction(shape: DecoderShape, n_text: int, n_visual: int) -> float:
    """The lowest reachable total-mode budget: every visual token dropped before layer 0."""
    return prefill_flops(shape, [n_text] * shape.layers) / prefill_flops(shape, [n_text + n_visual] * shape.layers)


def check_budget(budget: float, shape: DecoderShape, n_text: int, n_visual: int, mode: str = "total") -> float:
    if not math.isfinite(budget) or not 0.0 < budget <= 1.0:
        raise ScheduleError(f"budget {budget} must be in (0, 1]")
    if mode == "total":
        floor = text_only_fraction(shape, n_text, n_visual)
        if budget < floor:
            raise ScheduleError(
                f"budget {budget:g} is below the text-only floor {floor:.3f} of this input "
                f"({n_text} text + {n_visual} visual tokens): even dropping every visual token costs more"
            )
    elif mode not in BUDGET_MODES:
        raise ScheduleError(f"unknown budget mode {mode!r}; valid: {', '.join(BUDGET_MODES)}")
    return budget


def single_step_for_budget(shape: DecoderShape, layer: int, budget: float, n_text: int, n_visual: int,
                           mode: str = "total", score: ScoreCost = FREE) -> PruningSchedule:  # fmt: skip
    """The schedule that keeps everything before ``layer`` and, from ``layer`` on, the largest
    token count whose cost stays within ``budget`` (FastV-style, one step). Raises if even
    dropping every visual token at ``layer`` costs more."""
    check_budget(budget, shape, n_text, n_visual, mode)
    best = None
    for count in range(n_visual, -1, -1):
        s = PruningSchedule.steps(shape.layers, {layer: count / n_visual})
        if flops_fraction(shape, s, n_text, n_visual, mode, score) <= budget + 1e-12:
            best = s
            break
    if best is None:
        raise ScheduleError(f"budget {budget:g} is out of reach when pruning starts at layer {layer}; "
                            "start earlier or raise the budget")  # fmt: skip
    return best

