"""The ``Pruner`` interface: how visual tokens are ranked (and optionally merged) when a
schedule drops some of them before a decoder layer.

The engine (``paretobench.engine``) decides WHEN and HOW MANY tokens go (the schedule); a
pruner decides WHICH. At a pruning step the engine hands the pruner a ``ScoreContext``: the
sequence as it stands (hidden states, original positions, which tokens are visual and which
image patch each one came from) and, lazily, attention rows recomputed from a decoder layer's
own q/k projections and RoPE (attention itself stays SDPA/FlashAttention in every layer).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch-free at import, like the rest of the registry targets' modules
    import torch

    from paretobench.schedule import PruningSchedule
    from paretobench.sequence import SeqState


class ScoreContext:
    """What a pruner sees at a pruning step before decoder layer ``layer``."""

    def __init__(self, engine, state: SeqState, layer: int, qk, source: int, *, projects: bool = False,
                 live: torch.Tensor | None = None, initial: SeqState | None = None):  # fmt: skip
        self.engine, self.state, self.layer, self.source = engine, state, layer, source
        # the sequence as it entered layer 0, before any step of this forward (SparseVLM chooses
        # its raters once, from every visual token's embedding)
        self.initial = initial if initial is not None else state
        # (B, n) which positions are still in the sequence; None = all. The relaxed (masked, not
        # dropped) forward of VisPCO keeps masked tokens in place: they are neither ranked nor attended.
        self.live = live
        self._qk_source = qk  # a function giving (q, k), run only if a pruner asks for them
        self._projects = projects  # whether that runs the q/k projections (extra FLOPs)
        self._qk = None
        self.score_flops = [0] * state.h.shape[0]  # per row, what the score rows cost

    def _projections(self):
        """(B, H, n, e) queries and (B, G, n, e) keys of layer ``source``, RoPE applied."""
        if self._qk is None:
            self._qk = self._qk_source()
            if self._projects:
                for b, n in enumerate(self.state.valid.sum(1).tolist()):
                    self.score_flops[b] += self.engine.adapter.qk_flops(n)
        return self._qk

    @property
    def keys(self) -> torch.Tensor:
        """(B, G, n, e) post-RoPE keys of layer ``source`` (ViTCoP's K-norm reads these)."""
        return self._projections()[1]

    def live_visual(self) -> torch.Tensor:
        """(B, n): the visual tokens still in play."""
        return self.state.visual if self.live is None else self.state.visual & self.live

    def visual_positions(self, b: int) -> torch.Tensor:
        import torch

        return torch.nonzero(self.live_visual()[b]).squeeze(1)

    def last_positions(self) -> torch.Tensor:
        """(B, 1): the last position of every row (the token that predicts the answer)."""
        import torch

        n = self.state.h.shape[1]
        return torch.full((self.state.h.shape[0], 1), n - 1, dtype=torch.long, device=self.state.h.device)

    def attention(self, query: torch.Tensor, n_real: list[int] | None = None) -> torch.Tensor:
        """(B, H, nq, n) attention probabilities of the query positions ``query`` (B, nq) over
        all keys, as layer ``source`` computes them (its mask, padding masked, fp32 softmax).
        ``n_real``: per row, how many of the queries are real (the rest pad the batch), for the
        FLOPs count."""
        import torch

        q, k = self._projections()
        b_, heads, _, e = q.shape
        qs = torch.gather(q, 2, query[:, None, :, None].expand(b_, heads, query.shape[1], e))
        k = k.repeat_interleave(heads // k.shape[1], dim=1)
        logits = torch.matmul(qs, k.transpose(-1, -2)).float() * self.engine.adapter.scaling(self.source)
        allowed = self.engine.adapter.allowed(self.source, self.state, query)
        if self.live is not None:
            allowed = allowed & self.live[:, None, :]
        logits = logits.masked_fill(~allowed[:, None], float("-inf"))
        lengths = self.state.valid.sum(1).tolist()
        for b in range(b_):  # what the rows cost for this sample alone (its unpadded length)
            nq = n_real[b] if n_real is not None else query.shape[1]
            self.score_flops[b] += 2 * heads * nq * lengths[b] * e
        return logits.softmax(-1)


@dataclass
class Selection:
    """What a pruner decides at one pruning step; the engine applies it.

    ``keep``: the visual tokens that stay, a (B, n) bool mask or per row their sequence
    positions. ``hidden``: per row, new hidden states (kept, D) for the kept tokens in sequence
    order (merging pruners), or None to leave them. ``added``: per row, tokens the pruner adds
    after the row's last kept visual token, as ``(sources, hidden)``: each new token takes the
    slot, position and embedding of a position ``sources`` of the current sequence and holds
    ``hidden`` (SparseVLM's recycled clusters). ``by_slot``: per-slot data, (B, max Nv, ...),
    that later steps of the same forward read from ``ctx.state.by_slot`` (ViTCoP's clusters)."""

    keep: object
    hidden: list | None = None
    added: list | None = None
    by_slot: dict | None = None

    @classmethod
    def of(cls, chosen) -> Selection:
        return chosen if isinstance(chosen, Selection) else cls(chosen)


class Pruner:
    """Base class. Subclasses set ``name`` and implement ``scores`` (higher = keep), or
    override ``select`` when the choice is not a ranking (e.g. evenly spaced tokens)."""

    name: str = ""
    # bumped whenever what this pruner keeps, merges or costs changes: part of every evaluation's
    # key, so results of an older algorithm are never served for the current one
    version: int = 1
    # where attention rows come from at a step before layer i: "previous" = the q/k layer i-1
    # computed anyway (free), "current" = layer i's projections of its input (extra FLOPs)
    score_layer: str = "previous"
    # which query rows a scoring step reads (the FLOPs it costs): none, last, text or all
    score_rows: str = "all"
    reads_keys: bool = False  # reads keys without attention rows (then pays for them only before layer 0)
    # positions after a step (1-D RoPE; M-RoPE positions are always kept): "keep" the original
    # (gapped) ids; "repack" them to 0..n-1, as the official PyramidDrop and SparseVLM code does;
    # "step", as ViTCoP's: each kept token takes its index in the sequence the step saw (a step
    # before layer 0 repacks), and decoding continues from layer 0's count on every layer
    positions: str = "keep"
    # whether a ``select`` of the subclass's own keeps what ranking ``scores`` keeps (adding, at
    # most, what ``score_cost().recycle`` says): VisPCO's relaxed forward can then stand for it
    relaxes_as_ranking: bool = False

    def scores(self, ctx: ScoreContext) -> torch.Tensor:
        """(B, n) importance of every position of the current sequence; only the entries of
        live visual tokens are read."""
        raise NotImplementedError

    def select(self, ctx: ScoreContext, k: list[int]) -> torch.Tensor | list[torch.Tensor] | Selection:
        """Which visual tokens to keep, ``k[b]`` of row b's live ones: a (B, n) bool mask, per row
        their sequence positions, or a ``Selection`` (which can also merge and add tokens). By
        default the ``k[b]`` highest scores, ties going to the earlier token; the whole batch at once."""
        import torch

        scores = self.scores(ctx).float()
        alive = ctx.live_visual()
        lowest = torch.finfo(scores.dtype).min  # live tokens rank above every other position
        ranked = torch.where(alive, scores.nan_to_num(nan=lowest, neginf=lowest), float("-inf"))
        order = torch.sort(ranked, dim=1, descending=True, stable=True).indices
        places = torch.arange(order.shape[1], device=order.device).expand_as(order)
        rank = torch.empty_like(order).scatter_(1, order, places)
        return alive & (rank < torch.tensor(k, device=rank.device)[:, None])

    def preset(self, layers: int) -> PruningSchedule:
        """The method's published default schedule, for a decoder with ``layers`` layers."""
        from paretobench.schedule import ScheduleError

        raise ScheduleError(f"{self.name} has no published schedule; give --schedule or --budget")

    def score_cost(self):
        """What each pruning step's scoring costs, for costing schedules before running them."""
        from paretobench.schedule import ScoreCost

        return ScoreCost(rows=self.score_rows, projects=self.score_layer == "current", reads_qk=self.reads_keys)

    def params(self) -> dict:
        """The constructor's arguments as this instance holds them (``type(self)(**params())``
        rebuilds it)."""
        return {}

    def config(self) -> dict:
        """Everything that changes which tokens this pruner keeps (part of an evaluation's key):
        its name, its algorithm's version and its parameters."""
        return {"name": self.name, "version": self.version, **self.params()}
