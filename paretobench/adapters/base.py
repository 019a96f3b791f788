"""What every model adapter shares: calling a VLM's decoder layers one by one with rotary tables
for (gapped) original positions, masks for a left-padded batch, and the q/k a pruner's score rows
are recomputed from; the inputs' shapes (``Encoded``, ``token_counts``); and the registry of
architectures that ``adapter_for`` picks from (``architecture``).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Callable

import torch

from paretobench.data.tsv import Sample
from paretobench.sequence import SeqState

# (sample, image features (Nv, D)) -> (features to feed (k, D), the visual-token slots they fill (k,))
VisualSelect = Callable[[Sample, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]

# the adapter classes, each registered where it is defined (``architecture``), in that order
ARCHITECTURES: list[type] = []


def architecture(cls):
    """Register an adapter class; ``cls.supports(config)`` says which models it takes."""
    if not (isinstance(cls, type) and issubclass(cls, DecoderAdapter)):
        raise TypeError(f"{cls!r} is not a DecoderAdapter")
    ARCHITECTURES.append(cls)
    return cls


class UnsupportedModel(ValueError):
    pass


@dataclass
class Encoded:
    """A batch's processor inputs and its images encoded once (reusable for any schedule)."""

    inputs: dict
    feats: list[torch.Tensor]  # per image, (Nv, D) features in the language model's space
    # per visual token extras for vision-stage pruners, (B, max Nv, ...) indexed by slot (zero past a row's Nv)
    by_slot: dict = field(default_factory=dict)
    positions: torch.Tensor | None = None  # (..., B, L) original position ids of the padded inputs


def chat_prompts(processor, samples: list[Sample]) -> list[str]:
    return [
        processor.apply_chat_template(
            [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": s.prompt()}]}],
            add_generation_prompt=True,
        )
        for s in samples
    ]


def left_pad(rows: list[torch.Tensor], value) -> torch.Tensor:
    """(B, n, ...) the rows (n_b, ...) padded on the left to the longest with ``value``."""
    return torch.nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=value, padding_side="left")


def _pad_positions(rows: list[torch.Tensor]) -> torch.Tensor:
    """Left-pad per-row position ids (..., n_b) into (..., B, n)."""
    return left_pad([r.movedim(-1, 0) for r in rows], 1).movedim((0, 1), (-2, -1))


def _mask_positions(mask: torch.Tensor) -> torch.Tensor:
    """1-D position ids of a left-padded batch: each row counts from 0 at its first real token."""
    return (mask.cumsum(1) - 1).clamp(min=0)


def _received_attention(q: torch.Tensor, k: torch.Tensor, scale: float, chunk: int = 1 << 24) -> torch.Tensor:
    """(n,) the head-mean attention each of n tokens receives, averaged over the n queries, of
    full (unmasked) attention with queries ``q`` and keys ``k`` (H, n, e); fp32 softmax. Rows are
    taken a few at a time, so no more than about ``chunk`` probabilities are held at once."""
    heads, n, _ = q.shape
    total = torch.zeros(n, dtype=torch.float32, device=q.device)
    step = max(1, chunk // (heads * n))
    for s in range(0, n, step):
        total += (q[:, s : s + step].float() @ k.float().transpose(-1, -2) * scale).softmax(-1).sum((0, 1))
    return total / (heads * n)


class DecoderAdapter:
    """What every adapter shares: the decoder's layers called one by one with rotary tables for
    (gapped) original positions, masks for a left-padded batch, and the score rows' q/k.
    Subclasses build the inputs (``encode``), may say what a layer's ``position_ids`` are, and
    say which models they take (``supports``; ``describes``: that, for an error message)."""

    describes = ""

    @classmethod
    def supports(cls, config) -> bool:
        raise NotImplementedError

    def __init__(self, model, processor):
        self.model, self.processor = model, processor
        self.lm = model.model.language_model
        self.layers = self.lm.layers
        self.num_layers = len(self.layers)
        self.image_token_id = model.config.image_token_id
        self._rope_pos, self._rope = None, None
        self._masks_of, self._masks = None, {}

    # ------------------------------------------------------------------ inputs

    def _processor_inputs(self, samples: list[Sample], image_fn=None):
        """The processor's left-padded batch, one image per sample."""
        tok = self.processor.tokenizer
        tok.padding_side = "left"
        images = self._batch_images([image_fn(s) if image_fn else s.image() for s in samples])
        return self.processor(images=images, text=chat_prompts(self.processor, samples), return_tensors="pt",
                              padding=True).to(self.model.device)  # fmt: skip

    def _batch_images(self, images: list) -> list:
        """The samples' images as the processor takes them (one per sample)."""
        return images

    @torch.no_grad()
    def prepare(self, encoded: Encoded, *, samples=None, select: VisualSelect | None = None, keys=None) -> SeqState:
        """The sequence entering layer 0. ``select`` may replace or drop visual tokens per sample
        before the LLM (dropped ones leave gaps in the positions, as pruning does)."""
        inputs, feats = encoded.inputs, encoded.feats
        embeds = self.model.get_input_embeddings()(inputs["input_ids"])
        mask = inputs["attention_mask"]
        rows_h, rows_p, rows_s, n_visual = [], [], [], []
        for b in range(embeds.shape[0]):
            valid = mask[b].bool()
            e, ids, pos = embeds[b][valid], inputs["input_ids"][b][valid], encoded.positions[..., b, :][..., valid]
            slots = torch.nonzero(ids == self.image_token_id).squeeze(1)
            f, keep = select(samples[b], feats[b]) if select else (feats[b], torch.arange(len(slots)))
            e = e.clone()
            e[slots[keep]] = f.to(e.dtype)
            slot = torch.full_like(ids, -1)
            slot[slots[keep]] = torch.as_tensor(keep, device=ids.device)
            alive = slot >= 0
            alive[ids != self.image_token_id] = True
            rows_h.append(e[alive]), rows_p.append(pos[..., alive]), rows_s.append(slot[alive])
            n_visual.append(len(slots))
        valid = left_pad([torch.ones(p.shape[-1], dtype=torch.bool) for p in rows_p], False)
        keys = list(keys) if keys is not None else list(range(len(rows_h)))
        h = left_pad(rows_h, 0.0)
        by_slot = dict(encoded.by_slot)
        return SeqState(h, _pad_positions(rows_p), valid.to(embeds.device), left_pad(rows_s, -1), keys, n_visual,
                        h0=h, by_slot=by_slot)  # fmt: skip

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model.get_input_embeddings()(ids)

    # ------------------------------------------------------------------ layers

    def layer_positions(self, pos: torch.Tensor) -> torch.Tensor | None:
        """The ``position_ids`` a decoder layer is given (attention kernels may read them)."""
        return pos

    def rope(self, h: torch.Tensor, pos: torch.Tensor, layer: int):
        """Layer ``layer``'s rotary tables (cos, sin) for ``pos``, computed once per position tensor and kind."""
        if self._rope_pos is not pos:  # held, so never a stale match
            self._rope_pos, self._rope = pos, {}
        kind = self.rope_kind(layer)
        if kind not in self._rope:
            self._rope[kind] = self.rotary_tables(h, pos, kind)
        return self._rope[kind]

    def rope_kind(self, layer: int):
        """Which of the decoder's rotary tables layer ``layer`` uses (one for all layers here)."""
        return None

    def rotary_tables(self, h: torch.Tensor, pos: torch.Tensor, kind) -> tuple[torch.Tensor, torch.Tensor]:
        return self.lm.rotary_emb(h, pos)

    def _as_mask(self, allowed: torch.Tensor) -> torch.Tensor:
        """Boolean for SDPA and the like; additive (0 / most negative) for eager attention."""
        if self.model.config._attn_implementation != "eager":
            return allowed
        return torch.zeros(allowed.shape, dtype=self.model.dtype, device=allowed.device).masked_fill(
            ~allowed, torch.finfo(self.model.dtype).min
        )

    def allowed(self, layer: int, state: SeqState, query: torch.Tensor) -> torch.Tensor:
        """(B, nq, n): which of ``state``'s positions the query positions ``query`` (B, nq) attend to
        in layer ``layer``: causal, no padding; a padding query sees itself so no row is empty."""
        keys = torch.arange(state.valid.shape[1], device=query.device)[None, None, :]
        allowed = (keys <= query[:, :, None]) & state.valid[:, None, :]
        return allowed | (keys == query[:, :, None])

    def layer_mask(self, layer: int, state: SeqState) -> torch.Tensor:
        """(B, 1, n, n): the mask of every position of ``state`` in layer ``layer``."""
        b, n = state.valid.shape
        query = torch.arange(n, device=state.valid.device).expand(b, n)
        return self._as_mask(self.allowed(layer, state, query)[:, None])

    def mask_kind(self, layer: int):
        """Layers of one kind share a prefill mask (one kind here; Gemma 3: sliding or full)."""
        return self.rope_kind(layer)

    def prefill_mask(self, layer: int, state: SeqState):
        """``_prefill_mask``, built once per sequence state and mask kind: reading the padding off
        the device at every layer would stall an accelerator's queue once per layer."""
        if self._masks_of is not state.valid:  # held, so never a stale match; every drop makes a new one
            self._masks_of, self._masks = state.valid, {}
        kind = self.mask_kind(layer)
        if kind not in self._masks:
            self._masks[kind] = self._prefill_mask(layer, state)
        return self._masks[kind]

    def _prefill_mask(self, layer: int, state: SeqState):
        """None (the kernel's own causal path) without padding, else ``layer_mask``."""
        return None if bool(state.valid.all()) else self.layer_mask(layer, state)

    def decode_mask(self, layer: int, pos: torch.Tensor, valid: torch.Tensor, key_pos: torch.Tensor):
        """A generated token's mask over layer ``layer``'s cache (``valid`` and ``key_pos``: its
        entries' validity (B, n) and original positions (..., B, n), the new token last)."""
        return None if bool(valid.all()) else self._as_mask(valid[:, None, None, :])

    def run_layer(self, i: int, state: SeqState, cache) -> torch.Tensor:
        return self.layers[i](
            state.h,
            attention_mask=self.prefill_mask(i, state),
            position_ids=self.layer_positions(state.pos),
            cache=cache,
            use_cache=cache is not None,
            position_embeddings=self.rope(state.h, state.pos, i),
        )

    def run_decode_layer(
        self, i: int, h: torch.Tensor, pos: torch.Tensor, valid: torch.Tensor, key_pos: torch.Tensor, cache
    ) -> torch.Tensor:
        return self.layers[i](h, attention_mask=self.decode_mask(i, pos, valid, key_pos),
                              position_ids=self.layer_positions(pos), cache=cache, use_cache=True,
                              position_embeddings=self.rope(h, pos, i))  # fmt: skip

    def logits(self, h_last: torch.Tensor) -> torch.Tensor:
        return self.model.lm_head(self.lm.norm(h_last))

    def new_cache(self):
        from transformers import DynamicCache

        return DynamicCache()

    def last_position(self, pos: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """(..., B): each row's last position among ``pos`` (..., B, n) where ``valid`` (B, n), per
        axis for M-RoPE."""
        return pos.masked_fill(~valid, -1).max(dim=-1).values

    def decode_positions(self, last: torch.Tensor, step: int) -> torch.Tensor:
        """Generated tokens continue from the last position, on every axis alike (as ``generate`` does)."""
        return (last + step)[..., None]

    # ------------------------------------------------------------------ score rows

    def scaling(self, layer: int) -> float:
        return self.layers[layer].self_attn.scaling

    def _split_heads(self, layer: int, q: torch.Tensor, k: torch.Tensor):
        attn = self.layers[layer].self_attn
        b, n = q.shape[:2]
        q = q.view(b, n, -1, attn.head_dim)
        k = k.view(b, n, -1, attn.head_dim)
        if hasattr(attn, "q_norm"):  # decoders with per-head q/k norms apply them before RoPE
            q, k = attn.q_norm(q), attn.k_norm(k)
        return q.transpose(1, 2), k.transpose(1, 2)

    def rope_qk(self, layer: int, state: SeqState, q: torch.Tensor, k: torch.Tensor):
        # the attention module's own helper: M-RoPE's sections are already laid out in the tables
        attn = self.layers[layer].self_attn
        apply_rotary_pos_emb = sys.modules[type(attn).__module__].apply_rotary_pos_emb
        q, k = self._split_heads(layer, q, k)
        cos, sin = self.rope(state.h, state.pos, layer)
        return apply_rotary_pos_emb(q, k, cos, sin)

    def project_qk(self, layer: int, state: SeqState):
        attn = self.layers[layer].self_attn
        x = self.layers[layer].input_layernorm(state.h)
        return self.rope_qk(layer, state, attn.q_proj(x), attn.k_proj(x))

    def qk_flops(self, n: int) -> int:
        attn = self.layers[0].self_attn
        d = attn.q_proj.in_features
        return 2 * n * d * (attn.q_proj.out_features + attn.k_proj.out_features)

    def capture_qk(self, layer: int, store: dict) -> list:
        attn = self.layers[layer].self_attn
        return [
            attn.q_proj.register_forward_hook(lambda m, i, o: store.__setitem__("q", o)),
            attn.k_proj.register_forward_hook(lambda m, i, o: store.__setitem__("k", o)),
        ]


def token_counts(adapter, samples: list[Sample], *, chunk: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """(N,) text and (N,) visual tokens of each sample, as the processor lays them out (no image
    encoded; ``chunk`` samples at a time). At native resolution (Qwen) the visual count follows
    each image's size."""
    n_text, n_visual = [], []
    for i in range(0, len(samples), chunk):
        inputs = adapter._processor_inputs(samples[i : i + chunk])
        visual = (inputs["input_ids"] == adapter.image_token_id).sum(1).cpu()  # counts live on the host
        n_visual.append(visual)
        n_text.append(inputs["attention_mask"].sum(1).cpu() - visual)
    return torch.cat(n_text), torch.cat(n_visual)


def text_token_counts(adapter, samples: list[Sample]) -> tuple[float, int]:
    """Mean text tokens of the samples' prompts, and their mean visual tokens (rounded). A search
    space built on the mean reads a schedule's FLOPs fraction at a typical input; the evaluator
    still measures every input's own."""
    n_text, n_visual = token_counts(adapter, samples)
    return float(n_text.double().mean()), round(float(n_visual.double().mean()))
