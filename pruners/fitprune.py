"""FitPrune (ywh187/FitPrune, LLaVA-1.5): rank visual tokens by the attention they receive from
the text AND from the other visual tokens; a per-layer removal recipe is fitted to a FLOPs
budget on calibration inputs.

Scores, at a step before layer i, from layer i-1's attention: the max over heads of every
attention probability, then per visual key ``cross`` = its mean over the text rows after the
image and ``self`` = its mean over the visual rows. A step keeps the highest ``cross * self``.

Recipe (the official fit): each calibration input's unpruned forward gives, per layer, the totals
``W_cross`` and ``W_self`` (sums over the visual tokens). For a tolerance ``alpha`` the inputs
then run layer by layer on their own pruned sequences. Before layer i, a FLOPs forecast (the cost
if no more tokens were dropped), averaged over the inputs, is checked: the first layer where it
meets the budget ends the recipe ("met"). Otherwise each input drops, after layer i, the tokens
that are among its lowest on both scores: on each score, as many of its lowest tokens as can go
while the rest still sum to at least ``(1 - alpha) * W`` (all but one if that holds for every
count). The recipe drops after layer i the inputs' mean count, rounded down. ``alpha`` is
bisected on [0, 1] (met: lower, else higher) until the interval is 0.01 wide; the recipe is the
one fitted last. Positions stay the original (gapped) ones.

Where ours differs, and why:
- Budget. The official forecast counts visual tokens only (multiply-adds, one key/value head per
  query head, the pruning layer's o_proj and MLP at the reduced count): ``fit(forecast="official")``
  uses it, with ``budget`` = 1 - the official reduction ratio. By default the budget is ours, a
  fraction of the unpruned prefill FLOPs with text and scoring included (``flops_fraction``, summed
  over the evaluated inputs as an evaluation reports it), and the forecast is that cost. The
  official rule alone can miss it: the forecast averages the inputs' own removals while the recipe
  is their mean rounded down (it costs more), and the last recipe fitted is kept, met or not. So
  when the recipe's cost is not within ``window`` below the budget, the bisection of ``alpha`` goes
  on with that cost as its test, keeping the least pruning recipe that costs at most the budget,
  until one lands in the window or alpha's interval is ``FINE_GAP`` wide.
- Where the step sits. The official code drops tokens inside layer i-1, after attention, and skips
  o_proj and the MLP for them; both act per token, so our step before layer i keeps the same tokens
  with the same hidden states. The difference is only in counted FLOPs: ours pays layer i-1 in full.
  Official drops inside the last layer change nothing that is read, so the recipe has no step there.
- Edge case. When even all but one token leave enough of a score, the official loop falls through
  and reuses a stale count; we drop all but one.
- Ties rank to the earlier token (official: unstable sort order).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from paretobench.registry import PRUNERS
from pruners.base import Pruner

if TYPE_CHECKING:
    from collections.abc import Sequence

    import torch

    from paretobench.engine import Engine
    from paretobench.flops import DecoderShape
    from paretobench.schedule import PruningSchedule
    from paretobench.sequence import SeqState
    from pruners.base import ScoreContext

DEFAULT_BUDGET = 0.5
TOLERANCE_GAP = 0.01  # the official bisection stops once alpha's interval is this wide
WINDOW = 0.02  # the fitted recipe's cost should land this close below the budget
FINE_GAP = 1e-4  # the narrowest interval of alpha the budget's bisection goes down to


def received(ctx: ScoreContext) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, n) each: per key, the head-max attention probability averaged over the text rows after
    the image (cross) and over the visual rows (self)."""
    import torch

    st = ctx.state
    b_, n = st.valid.shape
    idx = torch.arange(n, device=st.h.device)
    top = ctx.attention(idx.expand(b_, n), n_real=st.valid.sum(1).tolist()).amax(1)  # heads first
    visual = ctx.live_visual()  # masked tokens of a relaxed forward are no rows either
    first = torch.where(visual, idx, n).min(1).values
    text = st.valid & ~visual & (idx[None] > first[:, None])

    def mean_over(rows: torch.Tensor) -> torch.Tensor:
        total = torch.where(rows[..., None], top, 0.0).sum(1)
        return total / rows.sum(1, keepdim=True).clamp_min(1)

    return mean_over(text), mean_over(visual)


def removable(score: torch.Tensor, total: float, alpha: float) -> torch.Tensor:
    """Positions (into ``score``) of as many of the lowest scores as can go while the rest still
    sum to at least ``(1 - alpha) * total``; all but one if that holds for every count."""
    import torch

    order = torch.sort(score, stable=True).indices
    below = score.sum() - torch.cat([score.new_zeros(1), score[order].cumsum(0)[:-1]]) < total - total * alpha
    first = int(torch.nonzero(below)[0]) if bool(below.any()) else len(score)
    return order[: max(first - 1, 0)]


def official_cost(shape: DecoderShape, counts: list[int]) -> int:
    """The official forecast of one input: ``counts[j]`` visual tokens in layer j's attention,
    ``counts[j + 1]`` in its o_proj and MLP (the last count for the layers after)."""
    d, f = shape.hidden, shape.intermediate
    counts = counts + [counts[-1]] * (shape.layers + 1 - len(counts))
    return sum(3 * v * d * d + 2 * v * v * d + w * d * d + 3 * w * d * f for v, w in zip(counts, counts[1:]))


@PRUNERS.register("fitprune", doc="text x visual attention received; recipe fitted to a budget")
class FitPrune(Pruner):
    name = "fitprune"
    version = 2
    score_rows = "all"  # cross (text -> visual) and self (visual -> visual) attention
    DEFAULT_BUDGET = DEFAULT_BUDGET

    def scores(self, ctx):
        cross, self_ = received(ctx)
        return cross * self_

    def preset(self, layers):
        from paretobench.schedule import ScheduleError

        raise ScheduleError(f"fitprune's schedule is fitted on data: use --budget (its default is {DEFAULT_BUDGET})")

    # ------------------------------------------------------------------ the recipe

    def totals(self, engine: Engine, states: list[SeqState]) -> list[list[tuple[float, float]]]:
        """Per calibration row, per layer: ``(W_cross, W_self)`` of the unpruned forward."""
        out = []
        for state in states:
            rows: list[list[tuple[float, float]]] = [[] for _ in state.keys]

            def record(ctx, rows=rows):
                if ctx.layer == engine.adapter.num_layers:  # no drops inside the last layer: no totals needed
                    return
                cross, self_ = received(ctx)
                visual = ctx.state.visual
                sums = zip(cross.masked_fill(~visual, 0).sum(1).tolist(), self_.masked_fill(~visual, 0).sum(1).tolist())
                for r, pair in zip(rows, sums):
                    r.append(pair)

            engine.observe(state, record)
            out += rows
        return out

    def fit_pass(self, engine: Engine, states: list[SeqState], alpha: float, totals, meets) -> tuple[bool, list]:
        """One run of the official fit at tolerance ``alpha``: whether ``meets(live)`` held before
        some layer i (``live``: per row, its live visual counts at layers 0..i), and per row the
        tokens it dropped after each layer."""
        import torch

        a = engine.adapter
        live = [[n] for st in states for n in st.visual_counts()]
        dropped = [[0] * a.num_layers for _ in live]
        for i in range(a.num_layers):
            if meets(live):
                return True, dropped
            if i == a.num_layers - 1:  # drops inside the last layer change nothing that is read
                break
            row = 0
            for s, st in enumerate(states):
                h, ctx = engine.observed_layer(i, st)
                cross, self_ = received(ctx)
                keep = st.valid.clone()
                for b in range(st.valid.shape[0]):
                    at = torch.nonzero(st.visual[b]).squeeze(1)
                    w_cross, w_self = totals[row + b][i]
                    low = torch.cat([removable(cross[b, at].float(), w_cross, alpha),
                                     removable(self_[b, at].float(), w_self, alpha)])  # fmt: skip
                    values, hits = low.unique(return_counts=True)
                    both = at[values[hits > 1]]
                    keep[b, both] = False
                    dropped[row + b][i] = len(both)
                    live[row + b].append(live[row + b][-1] - len(both))
                states[s] = replace(st, h=h).compact(keep, keep.sum(1).tolist())
                row += st.valid.shape[0]
        return False, dropped

    @staticmethod
    def recipe(dropped: list[list[int]], n_visual_rows: list[int], n_visual: int) -> PruningSchedule:
        """The schedule that drops, after each layer, the rows' mean drop (in ``n_visual`` tokens)
        rounded down."""
        from paretobench.schedule import PruningSchedule

        layers = len(dropped[0])
        live, keep = n_visual, [1.0]
        for i in range(layers - 1):
            mean = sum(d[i] * (n_visual / nv) for d, nv in zip(dropped, n_visual_rows)) / len(dropped)
            live = max(live - int(mean), 0)
            keep.append(live / n_visual)
        return PruningSchedule(tuple(keep))

    def fit(self, engine: Engine, states: list[SeqState], budget: float, n_text: int | Sequence[int],
            n_visual: int | Sequence[int], *, forecast: str = "total", window: float = WINDOW,
            ) -> PruningSchedule:  # fmt: skip
        """The recipe for ``budget`` fitted on the calibration ``states`` (apart from the evaluated
        inputs). ``n_text``, ``n_visual``: the token counts of the evaluated input, or of each one.
        ``forecast="total"``: ``budget`` is a fraction of those inputs' unpruned prefill FLOPs (summed,
        as an evaluation reports them), scoring included; the recipe costs at most that, within
        ``window`` below it where the tolerance allows. ``forecast="official"``: the official fit,
        ``budget`` = 1 - its reduction ratio."""
        from collections import Counter

        from paretobench.flops import DecoderShape, prefill_flops
        from paretobench.schedule import PruningSchedule, ScheduleError, check_budget, schedule_flops

        a = engine.adapter
        shape = DecoderShape.from_config(a.model.config.text_config)
        texts = [n_text] if isinstance(n_text, int) else list(n_text)
        visuals = [n_visual] * len(texts) if isinstance(n_visual, int) else list(n_visual)
        inputs = Counter(zip(texts, visuals))
        unit = round(sum(visuals) / len(visuals))  # the recipe's counts are in tokens of a typical input
        full = sum(m * prefill_flops(shape, [t + v] * shape.layers) for (t, v), m in inputs.items())
        rows = [n for st in states for n in st.visual_counts()]
        totals = self.totals(engine, states)
        score = self.score_cost()

        def cost(schedule: PruningSchedule) -> float:  # for one input, flops_fraction(..., "total", score)
            return sum(m * schedule_flops(shape, schedule, t, v, score) for (t, v), m in inputs.items()) / full

        if forecast == "official":
            origin = sum(official_cost(shape, [n]) for n in rows)

            def meets(live):
                return sum(official_cost(shape, c) for c in live) <= origin * budget

        elif forecast == "total":
            check_budget(budget, shape, round(sum(texts) / len(texts)), unit)

            def meets(live):
                fractions = [cost(PruningSchedule(tuple(k / c[0] for k in c + [c[-1]] * (a.num_layers - len(c)))))
                             for c in live]  # fmt: skip
                return sum(fractions) / len(fractions) <= budget

        else:
            raise ValueError(f"unknown forecast {forecast!r}; valid: total, official")

        fitted: dict[float, PruningSchedule] = {}

        def run(alpha: float) -> tuple[bool, PruningSchedule]:
            met, dropped = self.fit_pass(engine, list(states), alpha, totals, meets)
            fitted[alpha] = self.recipe(dropped, rows, unit)
            return met, fitted[alpha]

        lo, hi = 0.0, 1.0
        while hi - lo > TOLERANCE_GAP + 1e-6:
            mid = (lo + hi) / 2
            met, schedule = run(mid)
            lo, hi = (lo, mid) if met else (mid, hi)
        if forecast == "official" or budget - window <= cost(schedule) <= budget:
            return schedule
        # the budget's own test from here on: the least pruning that costs at most the budget
        if not any(cost(s) <= budget for s in fitted.values()) and cost(run(1.0)[1]) > budget:
            raise ScheduleError(f"fitprune cannot reach budget {budget:g}: its most pruning recipe costs "
                                f"{cost(fitted[1.0]):.3f}")  # fmt: skip
        hi = min(x for x, s in fitted.items() if cost(s) <= budget)
        lo = max([x for x, s in fitted.items() if x < hi and cost(s) > budget], default=0.0)
        while cost(fitted[hi]) < budget - window and hi - lo > FINE_GAP:
            mid = (lo + hi) / 2
            lo, hi = (lo, mid) if cost(run(mid)[1]) <= budget else (mid, hi)
        return fitted[hi]
