"""The batch a decoder layer sees (``SeqState``): a left-padded batch of hidden states with each
token's original position, whether it is padding, and which visual token (slot) it holds; what
the engine prunes and the adapters build. ``rows`` and ``stack`` take a batch apart into its
samples and back, ``compact`` keeps some of its positions."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class SeqState:
    """A left-padded batch as it enters a decoder layer."""

    h: torch.Tensor  # (B, n, D) hidden states
    pos: torch.Tensor  # (..., B, n) original position ids (a leading axis for M-RoPE)
    valid: torch.Tensor  # (B, n) False on left padding
    slot: torch.Tensor  # (B, n) which visual token (0..Nv-1) a position holds; -1 for text and padding
    keys: list  # one identity per row (seeds per-sample randomness)
    n_visual: list[int]  # per row: the visual tokens the image gave, before any pruning
    h0: torch.Tensor | None = None  # (B, n, D) the same tokens' layer-0 inputs (their embeddings)
    # per-row, per-visual-token (slot) data that survives pruning unchanged, e.g. the vision
    # tower's CLS attention ("vision_cls_attention", (B, Nv)) and keys ("vision_keys", (B, Nv, Dv))
    by_slot: dict = field(default_factory=dict)

    @property
    def visual(self) -> torch.Tensor:
        return self.slot >= 0

    def visual_counts(self) -> list[int]:
        return self.visual.sum(1).tolist()

    def rows(self) -> list[SeqState]:
        """One state per row, its padding removed (``stack`` puts them back together)."""
        out = []
        for b in range(self.valid.shape[0]):
            v = self.valid[b]
            nv = self.n_visual[b]
            by_slot = {k: t[b : b + 1, :nv] for k, t in self.by_slot.items()}
            h0 = None if self.h0 is None else self.h0[b : b + 1, v]
            out.append(SeqState(self.h[b : b + 1, v], self.pos[..., b : b + 1, :][..., v], self.valid[b : b + 1, v],
                                self.slot[b : b + 1, v], [self.keys[b]], [nv], h0, by_slot))  # fmt: skip
        return out

    @staticmethod
    def stack(rows: list[SeqState]) -> SeqState:
        """Single-row states (``rows``) as one left-padded batch, as ``prepare`` builds it."""

        def pad(xs, value, dim=1):  # left-pad along ``dim`` to the longest, then concatenate rows
            n = max(x.shape[dim] for x in xs)
            return torch.cat([torch.nn.functional.pad(x, _left(x, dim, n - x.shape[dim]), value=value) for x in xs],
                             dim=-2 if dim == -1 else 0)  # fmt: skip

        def pad_right(xs):  # per-slot data: zero past a row's visual tokens
            n = max(x.shape[1] for x in xs)
            return torch.cat([torch.nn.functional.pad(x, _right(x, 1, n - x.shape[1])) for x in xs], 0)

        h0 = None if rows[0].h0 is None else pad([r.h0 for r in rows], 0.0)
        by_slot = {k: pad_right([r.by_slot[k] for r in rows]) for k in rows[0].by_slot}
        return SeqState(pad([r.h for r in rows], 0.0), pad([r.pos for r in rows], 1, dim=-1),
                        pad([r.valid for r in rows], False), pad([r.slot for r in rows], -1),
                        [k for r in rows for k in r.keys], [n for r in rows for n in r.n_visual], h0, by_slot)  # fmt: skip

    def compact(self, keep: torch.Tensor, lengths: list[int]) -> SeqState:
        """Keep the positions where ``keep`` (B, n) is True, in order, left-padded again;
        ``lengths`` are the rows' kept counts (the caller knows them: no device sync here)."""
        b_, n = keep.shape
        m = max(lengths)
        # kept positions sort after dropped ones, each group in order: the last m columns hold
        # every row's kept positions, after (at most m - lengths[b]) dropped ones that become padding
        at = torch.arange(n, device=keep.device).expand(b_, n)
        order = torch.sort(at + n * keep.long(), dim=1).indices[:, n - m :]
        valid = torch.gather(keep, 1, order)
        pad = ~valid

        def take(x):  # (B, n, D) -> (B, m, D), zero on padding
            return torch.gather(x, 1, order[..., None].expand(b_, m, x.shape[-1])).masked_fill(pad[..., None], 0)

        pos = torch.gather(self.pos, -1, order.expand(*self.pos.shape[:-2], b_, m)).masked_fill(pad, 1)
        slot = torch.gather(self.slot, 1, order).masked_fill(pad, -1)
        h0 = None if self.h0 is None else take(self.h0)
        return SeqState(take(self.h), pos, valid, slot, self.keys, self.n_visual, h0, self.by_slot)


def _left(x: torch.Tensor, dim: int, n: int) -> tuple[int, ...]:
    """``F.pad``'s argument that adds ``n`` entries before ``x``'s dimension ``dim``."""
    dim = dim % x.dim()
    return (0, 0) * (x.dim() - 1 - dim) + (n, 0)


def _right(x: torch.Tensor, dim: int, n: int) -> tuple[int, ...]:
    dim = dim % x.dim()
    return (0, 0) * (x.dim() - 1 - dim) + (0, n)
