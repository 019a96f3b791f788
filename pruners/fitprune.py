"""FitPrune: rank by how much attention a visual token receives from text AND from the other
visual tokens, and fit a per-layer recipe to a FLOPs budget.

Score (per layer, from the q/k of the layer before the step) = cross x self, where cross is
the attention a visual token receives from the text tokens that can see the image and self
the attention it receives from the visual tokens, each summed over queries and maxed over
heads.

Recipe: on calibration inputs, run the unpruned model and, at every layer, sort the visual
tokens' normalised scores; for a tolerance ``alpha``, a layer keeps the fewest tokens that hold
``1 - alpha`` of the score mass (averaged over inputs, never more than the layer before). A
binary search over ``alpha`` finds the least pruning whose FLOPs meet the budget. Published
default: the recipe for a 50% budget.
"""

from __future__ import annotations

from pruners.base import Pruner

DEFAULT_BUDGET = 0.5


class FitPrune(Pruner):
    name = "fitprune"
    score_rows = "all"  # cross (text -> visual) and self (visual -> visual) attention
    DEFAULT_BUDGET = DEFAULT_BUDGET

    def scores(self, ctx):
        import torch

        st = ctx.state
        n = st.h.shape[1]
        query = torch.arange(n, device=st.h.device).expand(st.h.shape[0], n)
        probs = ctx.attention(query, n_real=st.valid.sum(1).tolist())  # (B, H, n, n)
        idx = torch.arange(n, device=st.h.device)
        first = torch.where(st.visual, idx, n).min(1).values  # each row's first visual position
        after = idx[None] > first[:, None]
        text = (st.valid & ~st.visual & after).float()  # text queries that can see the image
        visual = st.visual.float()
        cross = (probs * text[:, None, :, None]).sum(2).amax(1)
        self_ = (probs * visual[:, None, :, None]).sum(2).amax(1)
        return cross * self_

    def keep_curve(self, engine, states) -> list:
        """Per layer i: the visual tokens' normalised scores at layer i's input, sorted
        descending, per calibration row (a list over layers of lists of tensors)."""
        import torch

        curves = [[] for _ in range(engine.adapter.num_layers)]

        def record(ctx):
            if ctx.layer >= engine.adapter.num_layers:
                return
            scores = self.scores(ctx).float()
            for b in range(scores.shape[0]):
                s = scores[b, ctx.state.visual[b]]
                # statistics for a host-side binary search: kept on the CPU
                curves[ctx.layer].append(torch.sort(s / s.sum().clamp_min(1e-12), descending=True).values.cpu())

        for state in states:
            engine.observe(state, record)
        return curves

    @staticmethod
    def recipe(curves, alpha: float, layers: int):
        import torch

        from paretobench.schedule import PruningSchedule

        keep, prev = [1.0], 1.0  # layer 0 has no earlier layer to score from
        for i in range(1, layers):
            fracs = []
            for c in curves[i]:
                need = int(torch.searchsorted(c.cumsum(0), torch.tensor(1.0 - alpha)).item()) + 1
                fracs.append(min(need, len(c)) / len(c))
            prev = min(prev, sum(fracs) / len(fracs)) if alpha > 0 else prev
            keep.append(prev)
        return PruningSchedule(tuple(keep))

    def fit(self, engine, states, budget: float, n_text: int, n_visual: int, iters: int = 30):
        """The recipe for ``budget`` (a fraction of unpruned prefill FLOPs)."""
        from paretobench.flops import DecoderShape
        from paretobench.schedule import ScheduleError, check_budget, flops_fraction

        a = engine.adapter
        shape = DecoderShape.from_config(a.model.config.text_config)
        check_budget(budget, shape, n_text, n_visual)
        curves = self.keep_curve(engine, states)

        def cost(alpha):
            return flops_fraction(shape, self.recipe(curves, alpha, a.num_layers), n_text, n_visual)

        if cost(1.0) > budget:
            raise ScheduleError(f"fitprune cannot reach budget {budget:g}: dropping every visual token after "
                                f"layer 0 costs {cost(1.0):.3f}")  # fmt: skip
        lo, hi = 0.0, 1.0  # cost(hi) <= budget
        for _ in range(iters):
            mid = (lo + hi) / 2
            lo, hi = (lo, mid) if cost(mid) <= budget else (mid, hi)
        return self.recipe(curves, hi, a.num_layers)

    def preset(self, layers):
        from paretobench.schedule import ScheduleError

        raise ScheduleError(f"fitprune's schedule is fitted on data: use --budget (its default is {DEFAULT_BUDGET})")
