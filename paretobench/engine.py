"""The pruned-inference engine: run a VLM's decoder layers one by one and drop visual tokens
between them as a schedule says, then decode greedily with a KV cache.

Dropped tokens leave gaps: every token keeps its ORIGINAL position id. A batch is left-padded;
each row keeps its own tokens. Attention stays the model's own (SDPA by default) in every layer:
a pruner that needs attention scores gets rows recomputed from the q/k projections that the
layer before the pruning step produced anyway (captured by forward hooks, RoPE applied here),
so no layer is switched to eager attention and only the score rows themselves cost extra.
Before layer 0 there is no such layer; there the rows come from layer 0's own q/k projections
of the embeddings (extra projections, counted in the FLOPs).

Architecture specifics (how the sequence is built, positions, masks, calling a layer) live in
``paretobench.adapters``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from paretobench.schedule import PruningSchedule, keep_count
from paretobench.sequence import SeqState
from pruners.base import ScoreContext, Selection


@dataclass
class PrefillResult:
    logits: torch.Tensor  # (B, V) next-token logits at the last position
    state: SeqState  # the sequence entering the last layer
    layer_valid: list[torch.Tensor]  # per layer, the (B, n_i) validity of its KV cache entries
    layer_pos: list[torch.Tensor]  # per layer, the (..., B, n_i) original positions of its KV cache entries
    live_visual: list[list[int]]  # per layer, per row: visual tokens alive at the layer's input
    tokens: list[list[int]]  # per layer, per row: all live tokens at the layer's input
    score_flops: list[int]  # per row: FLOPs spent on pruners' score rows and their projections
    cache: object = None
    # with ``prefill(trace=True)``: the state entering each layer, after that layer's pruning step
    # (its ``slot`` says which visual tokens are alive, its ``h`` what they hold); parity tests read it
    trace: list[SeqState] | None = None


class Engine:
    def __init__(self, adapter):
        self.adapter = adapter

    def _steps(self, schedule: PruningSchedule, n_visual: list[int]) -> list[list[int]]:
        """Per layer, per row: the visual tokens that layer may see."""
        return [[keep_count(k, nv) for nv in n_visual] for k in schedule.keep]

    @torch.no_grad()
    def prefill(self, state: SeqState, schedule: PruningSchedule | None = None, pruner=None, *,
                use_cache: bool = False, trace: bool = False) -> PrefillResult:  # fmt: skip
        a = self.adapter
        schedule = (schedule or PruningSchedule.full(a.num_layers)).check_layers(a.num_layers)
        state = replace(state, by_slot=dict(state.by_slot))  # pruners may add to it; this run only
        initial = state
        # how positions change at a step (see ``Pruner.positions``); renumbering needs 1-D RoPE
        positions = getattr(pruner, "positions", "keep") if state.pos.dim() == 2 else "keep"
        targets = self._steps(schedule, state.n_visual)
        # live counts are tracked here, on the host: reading them off the device at every layer
        # would stall an accelerator's queue once per layer
        counts = state.visual_counts()
        text = [t - c for t, c in zip(state.valid.sum(1).tolist(), counts)]
        prunes = [any(t < c for t, c in zip(targets[i], targets[i - 1] if i else counts))
                  for i in range(a.num_layers)]  # fmt: skip
        if any(prunes) and pruner is None:
            raise ValueError("this schedule drops visual tokens: give a pruner to choose which")
        cache = a.new_cache() if use_cache else None
        captured: dict = {}
        layer_valid, layer_pos, live, tokens = [], [], [], []
        states = [] if trace else None
        score_flops = [0] * state.h.shape[0]
        for i in range(a.num_layers):
            if prunes[i]:
                if i == 0 or getattr(pruner, "score_layer", "previous") == "current":
                    # this layer's own projections of its input (before layer 0 there is no earlier
                    # layer to capture them from), computed if the pruner asks, paid extra
                    qk, source, projects = (lambda st=state, layer=i: a.project_qk(layer, st)), i, True
                else:
                    q, k = captured.pop("q"), captured.pop("k")
                    qk, source, projects = (lambda st=state, layer=i - 1: a.rope_qk(layer, st, q, k)), i - 1, False
                ctx = ScoreContext(self, state, i, qk, source, projects=projects, initial=initial)
                # a row steps where its own count falls (then it keeps that many ranked tokens, plus
                # what the pruner adds back); the others keep what they hold
                want = [t if t < p else c for t, p, c in zip(targets[i], targets[i - 1] if i else state.n_visual, counts)]
                before = counts
                state, counts = self._drop(ctx, pruner, want, text, positions)
                # a row pays for scoring only where it ranks tokens, as it would alone: not where
                # its own count does not fall, nor where every token goes (the batch scores them all)
                score_flops = [s + (c if 0 < w < n else 0) for s, c, w, n in zip(score_flops, ctx.score_flops, want, before)]
            live.append(list(counts))
            tokens.append([t + c for t, c in zip(text, counts)])
            layer_valid.append(state.valid)
            layer_pos.append(state.pos)
            if trace:
                states.append(state)
            capture = i + 1 < a.num_layers and prunes[i + 1] and getattr(pruner, "score_layer", "previous") == "previous"
            hooks = a.capture_qk(i, captured) if capture else []
            try:
                state = replace(state, h=a.run_layer(i, state, cache))
            finally:
                for hk in hooks:
                    hk.remove()
        logits = a.logits(state.h[:, -1])
        return PrefillResult(logits, state, layer_valid, layer_pos, live, tokens, score_flops, cache, states)

    @torch.no_grad()
    def observed_layer(self, i: int, state: SeqState) -> tuple[torch.Tensor, ScoreContext]:
        """Layer ``i`` on ``state``, unpruned: its output hidden states, and a ``ScoreContext``
        over its own q/k for a step before layer ``i + 1`` (a calibration pass reads it)."""
        a = self.adapter
        captured: dict = {}
        hooks = a.capture_qk(i, captured)
        try:
            h = a.run_layer(i, state, None)
        finally:
            for hk in hooks:
                hk.remove()
        qk = lambda: a.rope_qk(i, state, captured["q"], captured["k"])  # noqa: E731
        return h, ScoreContext(self, state, i + 1, qk, i)

    @torch.no_grad()
    def observe(self, state: SeqState, fn) -> None:
        """Run the unpruned prefill and call ``fn(ctx)`` after every layer, with a
        ``ScoreContext`` over that layer's q/k (calibration statistics, e.g. FitPrune's)."""
        for i in range(self.adapter.num_layers):
            h, ctx = self.observed_layer(i, state)
            fn(ctx)
            state = replace(state, h=h)

    def _drop(self, ctx: ScoreContext, pruner, want: list[int], text: list[int],
              positions: str = "keep") -> tuple[SeqState, list[int]]:  # fmt: skip
        """Keep ``want[b]`` visual tokens of row b, those the pruner selects, with the hidden states
        it gives them, plus any tokens it adds (``Selection.added``); text tokens (``text[b]`` of
        them) always stay. ``positions``: "keep" the ids, "repack" them to 0..n-1 afterwards, or
        "step" (each kept token gets its index in the sequence before the step; before layer 0,
        as "repack"). Returns the new
        state and each row's live visual count. The whole batch at once: one device sync, for the check."""
        state = ctx.state
        if not any(want):  # every visual token goes: nothing to rank, nothing to pay for scoring
            sel = Selection(torch.zeros_like(state.valid))
        else:
            sel = Selection.of(pruner.select(ctx, want))
        keep = _as_keep_mask(sel.keep, state.valid.shape)
        got, stray, live = torch.stack([keep.sum(1), (keep & ~state.visual).sum(1), state.visual.sum(1)]).tolist()
        # a pruner that chooses its own counts (SparseVLM's rank-based mode) keeps any number of the
        # live tokens where the schedule steps; every other keeps exactly what the schedule says
        free = getattr(pruner, "chooses_counts", False)
        for b in range(len(want)):
            if (got[b] > live[b] if free else got[b] != want[b]) or stray[b]:
                raise RuntimeError(f"{pruner.name} chose {got[b]} visual positions for row {b} ({stray[b]} not "
                                   f"live visual tokens); the schedule asks for {want[b]}")  # fmt: skip
        want = got if free else want
        if positions == "step" and ctx.layer > 0:  # the index each token has in the sequence the step saw
            state = replace(state, pos=(state.valid.long().cumsum(1) - 1).masked_fill(~state.valid, 1))
        h = state.h
        if sel.hidden is not None and any(m is not None for m in sel.hidden):
            rows = [b for b, m in enumerate(sel.hidden) if m is not None]
            chosen = [torch.nonzero(keep[b]).squeeze(1) for b in rows]
            h = h.clone()
            h[torch.cat([torch.full_like(c, b) for b, c in zip(rows, chosen)]), torch.cat(chosen)] = torch.cat(
                [sel.hidden[b] for b in rows]).to(h.dtype)  # fmt: skip
        by_slot = {**state.by_slot, **(sel.by_slot or {})}
        keep = keep | (state.valid & ~state.visual)
        added = [0 if a is None else len(a[0]) for a in (sel.added or [None] * len(want))]
        out = replace(state, h=h, by_slot=by_slot).compact(keep, [t + w for t, w in zip(text, want)])
        if any(added):
            out = _insert(state, out, sel.added)
        if positions == "repack" or positions == "step" and ctx.layer == 0:
            out = replace(out, pos=(out.valid.long().cumsum(1) - 1).masked_fill(~out.valid, 1))
        return out, [w + a for w, a in zip(want, added)]

    @torch.no_grad()
    def generate(self, state: SeqState, schedule: PruningSchedule | None = None, pruner=None, *,
                 max_new_tokens: int, eos_id: int, pad_id: int) -> tuple[torch.Tensor, PrefillResult]:  # fmt: skip
        """Greedy tokens (B, T) after a pruned prefill; decoding continues from each row's last
        original position, every layer attending to what its cache holds."""
        a = self.adapter
        pre = self.prefill(state, schedule, pruner, use_cache=True)
        token = pre.logits.argmax(-1)
        done = token == eos_id
        tokens = [token]
        # each layer's generated tokens continue from the last position its cache holds: the
        # original last position, or, where a pruner repacks positions, that layer's own count
        last_of: dict = {}  # layers between two steps hold one position tensor: one last position for them
        lasts = [last_of.setdefault(id(p), a.last_position(p, v)) for p, v in zip(pre.layer_pos, pre.layer_valid)]
        if getattr(pruner, "positions", "keep") == "step":  # ViTCoP: every layer from the first layer's count
            lasts = [lasts[0]] * len(lasts)
        masks, key_pos = list(pre.layer_valid), list(pre.layer_pos)
        for step in range(1, max_new_tokens):
            if bool(done.all()):
                break
            masks = [torch.cat([m, m.new_ones(m.shape[0], 1)], 1) for m in masks]
            h = a.embed(token[:, None])
            shared: dict = {}  # layers whose last position is the same tensor share one position tensor (and rotary table)
            pos = [shared.setdefault(id(last), a.decode_positions(last, step)) for last in lasts]
            key_pos = [torch.cat([p, q], -1) for p, q in zip(key_pos, pos)]
            for i in range(a.num_layers):
                h = a.run_decode_layer(i, h, pos[i], masks[i], key_pos[i], pre.cache)
            nxt = a.logits(h[:, -1]).argmax(-1)
            token = torch.where(done, torch.full_like(nxt, pad_id), nxt)
            tokens.append(token)
            done |= token == eos_id
        return torch.stack(tokens, 1), pre


def _as_keep_mask(chosen, shape) -> torch.Tensor:
    """A pruner's choice as a (B, n) bool mask: it gives one, or per row the positions to keep."""
    if isinstance(chosen, torch.Tensor):
        if chosen.dtype != torch.bool or tuple(chosen.shape) != tuple(shape):
            raise TypeError(f"a pruner's select gave a {chosen.dtype} tensor of shape {tuple(chosen.shape)}; "
                            f"expected a bool mask of shape {tuple(shape)} or per-row positions")  # fmt: skip
        return chosen
    device = chosen[0].device
    keep = torch.zeros(shape, dtype=torch.bool, device=device)
    row = torch.cat([torch.full((len(c),), b, dtype=torch.long, device=device) for b, c in enumerate(chosen)])
    keep[row, torch.cat(list(chosen)).long()] = True
    return keep


def _insert(before: SeqState, after: SeqState, added) -> SeqState:
    """``after`` with each row's added tokens placed right after its last visual token: row b's
    ``added[b] = (sources, hidden)`` are new tokens with the hidden states ``hidden`` (m, D), each
    taking the slot, position and embedding of the position ``sources`` in ``before`` (the state
    the pruner saw)."""
    rows = after.rows()
    for b, a in enumerate(added):
        if a is None or not len(a[0]):
            continue
        src, hidden = a
        r = rows[b]
        vis = torch.nonzero(r.slot[0] >= 0).squeeze(1)
        if not len(vis):
            raise RuntimeError(f"row {b}: tokens added where no visual token is kept")
        at, m = int(vis[-1]) + 1, len(src)

        def put(x, new, dim=1):
            return torch.cat([x.narrow(dim, 0, at), new, x.narrow(dim, at, x.shape[dim] - at)], dim)

        h0 = None if r.h0 is None else put(r.h0, before.h0[b : b + 1, src])
        rows[b] = SeqState(put(r.h, hidden[None].to(r.h.dtype)), put(r.pos, before.pos[..., b : b + 1, src], dim=-1),
                           put(r.valid, torch.ones_like(r.valid[:, :m])), put(r.slot, before.slot[b : b + 1, src]),
                           r.keys, r.n_visual, h0, r.by_slot)  # fmt: skip
    return SeqState.stack(rows)
