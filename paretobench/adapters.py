"""Model adapters: what the engine needs to know about one VLM architecture.

An adapter builds the input sequence (text embeddings with the image features in the image
token slots, original position ids, left padding), computes the rotary tables for (gapped)
positions, calls a decoder layer with the right mask, and turns the last hidden state into
logits. ``adapter_for(model, processor)`` picks one by the model's config.

``LlavaAdapter`` covers ``LlavaForConditionalGeneration`` with Llama-family decoders (Llama,
Mistral, Vicuna; the embedded ``tiny-llava``). ``QwenVLAdapter`` covers Qwen2-VL and Qwen2.5-VL
(native-resolution images, so a different number of visual tokens per image, and 3-D M-RoPE
positions). ``Gemma3Adapter`` covers Gemma 3 (bidirectional image blocks, sliding-window layers
with their own rotary table). What they share (calling layers, masks, rotary tables, score-row
projections) is ``DecoderAdapter``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Callable

import torch

from paretobench.data.tsv import Sample
from paretobench.engine import SeqState

# (sample, image features (Nv, D)) -> (features to feed (k, D), the visual-token slots they fill (k,))
VisualSelect = Callable[[Sample, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


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
    length = max(r.shape[0] for r in rows)
    out = rows[0].new_full((len(rows), length, *rows[0].shape[1:]), value)
    for i, r in enumerate(rows):
        out[i, length - r.shape[0] :] = r
    return out


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
    Subclasses build the inputs (``encode``) and may say what a layer's ``position_ids`` are."""

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


class LlavaAdapter(DecoderAdapter):
    """LLaVA with a Llama-family decoder: 1-D RoPE, one causal mask for every layer."""

    @torch.no_grad()
    def encode(self, samples: list[Sample], image_fn=None, *, vision_extras: bool = False) -> Encoded:
        """Processor inputs and per-image features. With ``vision_extras``, also the feature
        layer's CLS attention to each patch (head mean) and the patches' keys there (for
        vision-stage pruners)."""
        inputs = self._processor_inputs(samples, image_fn)
        captured: dict = {}
        hooks = self._capture_vision_qk(captured) if vision_extras else []
        try:
            feats = self.model.model.get_image_features(
                pixel_values=inputs["pixel_values"].to(self.model.dtype),
                vision_feature_layer=self.model.config.vision_feature_layer,
                vision_feature_select_strategy=self.model.config.vision_feature_select_strategy,
            ).pooler_output
        finally:
            for h in hooks:
                h.remove()
        extras = self._vision_extras(captured, feats[0].shape[0]) if vision_extras else {}
        return Encoded(inputs, list(feats), extras, _mask_positions(inputs["attention_mask"]))

    def _vision_attention_layer(self):
        tower = self.model.model.vision_tower
        layers = getattr(tower, "vision_model", tower).encoder.layers
        k = self.model.config.vision_feature_layer
        if isinstance(k, (list, tuple)):
            raise UnsupportedModel("vision-stage pruning needs a single vision_feature_layer")
        return layers[k if k < 0 else k - 1]  # hidden_states[k] is the output of layer k - 1

    def _capture_vision_qk(self, store: dict) -> list:
        attn = self._vision_attention_layer().self_attn
        return [attn.q_proj.register_forward_hook(lambda m, i, o: store.__setitem__("q", o)),
                attn.k_proj.register_forward_hook(lambda m, i, o: store.__setitem__("k", o))]  # fmt: skip

    def _vision_extras(self, captured: dict, n_visual: int) -> dict:
        attn = self._vision_attention_layer().self_attn
        q, k = captured["q"], captured["k"]
        b, n, _ = q.shape
        qh = q.view(b, n, -1, attn.head_dim).transpose(1, 2)
        kh = k.view(b, n, -1, attn.head_dim).transpose(1, 2)
        cls = (qh[:, :, :1] @ kh.transpose(-1, -2) * attn.scale).float().softmax(-1).mean(1)[:, 0]  # (B, n)
        patches = slice(n - n_visual, n)  # the tokens LLaVA passes on (CLS first, if kept, is dropped)
        return {"vision_cls_attention": cls[:, patches], "vision_keys": k[:, patches]}


class QwenVLAdapter(DecoderAdapter):
    """Qwen2-VL / Qwen2.5-VL: native-resolution images (visual tokens per image vary), 3-D M-RoPE
    positions (3, B, n) (temporal, height, width) computed once on the full sequence, so dropped
    tokens leave gaps and kept ones keep their place in the image grid.

    Vision-stage pruners (ViTCoP) get a CLS-free stand-in for LLaVA's CLS attention: the
    attention each merged token's patches receive in the vision tower's last block (see
    ``_vision_extras``)."""

    def __init__(self, model, processor):
        super().__init__(model, processor)
        if "sliding_attention" in getattr(self.lm.config, "layer_types", ()):
            raise UnsupportedModel(f"{model.config.model_type} with sliding-window layers is not supported")

    @torch.no_grad()
    def encode(self, samples: list[Sample], image_fn=None, *, vision_extras: bool = False) -> Encoded:
        """Processor inputs, per-image features and the M-RoPE positions of the full sequence.
        With ``vision_extras``, also per visual token a CLS-free saliency and the vision tower's
        keys (``_vision_extras``), for vision-stage pruners."""
        inputs = self._processor_inputs(samples, image_fn)
        if "mm_token_type_ids" not in inputs:  # without it get_rope_index would give 1-D positions
            inputs["mm_token_type_ids"] = (inputs["input_ids"] == self.image_token_id).long()
        vlm, grid = self.model.model, inputs["image_grid_thw"]
        captured: dict = {}
        hooks = self._capture_vision_qk(captured) if vision_extras else []
        try:
            feats = vlm.get_image_features(inputs["pixel_values"], grid).pooler_output
        finally:
            for h in hooks:
                h.remove()
        positions, _ = vlm.get_rope_index(inputs["input_ids"], mm_token_type_ids=inputs["mm_token_type_ids"],
                                          image_grid_thw=grid, attention_mask=inputs["attention_mask"])  # fmt: skip
        extras = self._vision_extras(captured, grid) if vision_extras else {}
        return Encoded(inputs, list(feats), extras, positions)

    def _vision_block(self):
        """The vision tower's last block: the one whose attention gives the vision-stage saliency."""
        visual = self.model.model.visual
        last = len(visual.blocks) - 1
        full = getattr(visual, "fullatt_block_indexes", None)  # Qwen2.5-VL; every Qwen2-VL block sees whole images
        if full is not None and last not in full:
            raise UnsupportedModel("vision-stage pruning needs the vision tower's last block to see whole images")
        return visual.blocks[last]

    def _capture_vision_qk(self, store: dict) -> list:
        """Hooks on the last block's attention: its fused q/k/v projection, and the per-image
        segments (``cu_seqlens``) and rotary tables it is called with."""
        attn = self._vision_block().attn

        def call(module, args, kwargs):
            store["cu_seqlens"], store["rope"] = kwargs["cu_seqlens"], kwargs["position_embeddings"]

        return [attn.register_forward_pre_hook(call, with_kwargs=True),
                attn.qkv.register_forward_hook(lambda m, i, o: store.__setitem__("qkv", o))]  # fmt: skip

    def _vision_extras(self, captured: dict, grid: torch.Tensor) -> dict:
        """The vision-stage extras, per decoder visual token (right-padded to (B, max Nv, ...)).

        The Qwen ViT has no CLS token, so ``vision_cls_attention`` holds the usual CLS-free
        substitute: in the last vision block (full attention in Qwen2.5-VL), the head-mean
        attention each patch RECEIVES, averaged over the query patches of its image, summed over
        the ``spatial_merge_size**2`` patches that the merger turns into one decoder token (so an
        image's values sum to 1). ``vision_keys``: the mean of those patches' keys there, heads
        concatenated. Both are given in the decoder's order of the merged tokens: Qwen2.5-VL's
        blocks see merge units grouped by attention window and the model restores the order only
        after the merger, so the same permutation is undone here."""
        visual = self.model.model.visual
        attn = self._vision_block().attn
        qkv = captured["qkv"]
        n = qkv.shape[0]
        q, k, _ = qkv.reshape(n, 3, attn.num_heads, -1).unbind(1)  # (n, H, e) each, as the block splits them
        # POST-rotary keys: what the block's attention actually uses (the saliency needs them anyway),
        # and the same convention as the LLM stages' keys (``ScoreContext.keys``)
        cos, sin = captured["rope"]
        q, k = sys.modules[type(attn).__module__].apply_rotary_pos_emb_vision(q, k, cos, sin)
        cu = captured["cu_seqlens"].tolist()  # segments of whole images in the last block
        received = torch.cat([_received_attention(q[s:e].transpose(0, 1), k[s:e].transpose(0, 1), attn.scaling)
                              for s, e in zip(cu[:-1], cu[1:])])  # fmt: skip
        unit = visual.spatial_merge_size**2  # consecutive patches merged into one decoder token
        saliency = received.view(-1, unit).sum(1)
        keys = k.float().reshape(n // unit, unit, -1).mean(1)
        order = self._decoder_order(grid).to(saliency.device)
        sizes = (grid.prod(-1) // unit).tolist()
        pad = torch.nn.utils.rnn.pad_sequence
        return {"vision_cls_attention": pad(saliency[order].split(sizes), batch_first=True),
                "vision_keys": pad(keys[order].split(sizes), batch_first=True)}  # fmt: skip

    def _decoder_order(self, grid: torch.Tensor) -> torch.Tensor:
        """For every merged token in the decoder's order (images in turn), its merge unit's index
        in the vision blocks' order (Qwen2.5-VL: grouped by window; Qwen2-VL: the same order)."""
        visual = self.model.model.visual
        if not hasattr(visual, "window_size"):
            return torch.arange(int(grid.prod(-1).sum()) // visual.spatial_merge_size**2)
        # the model's own window grouping; it undoes it with argsort after the merger, so do we
        window_index, _ = sys.modules[type(visual).__module__].get_vision_window_index(
            grid, spatial_merge_size=visual.spatial_merge_size, window_size=visual.window_size,
            patch_size=visual.patch_size)  # fmt: skip
        return torch.argsort(window_index)

    def layer_positions(self, pos: torch.Tensor) -> None:
        # the model gives its layers no position_ids for 3-D positions (only packed FA2 inputs carry them)
        return None


class Gemma3Adapter(DecoderAdapter):
    """Gemma 3 (``Gemma3ForConditionalGeneration``): a SigLIP tower pooled to a fixed number of
    visual tokens per image, text embeddings scaled by sqrt(hidden) (the embedding layer does it;
    image features are inserted unscaled, as the model does), per-head q/k norms before RoPE, and
    two kinds of layers (``config.layer_types``), each with its own rotary table:

    - full attention: causal, and the tokens of one image attend to each other both ways;
    - sliding attention: the same, and a query at original position p sees only keys at
      positions > p - ``sliding_window``.

    After pruning, the image's remaining tokens still attend to each other both ways, and the
    window counts ORIGINAL positions: a dropped token keeps its place in the window (which then
    holds fewer live tokens), exactly as if it were masked out of the model's own attention.
    One image per sample, so a row's visual tokens are one image block. Final-logit soft-capping
    is not applied: ``Gemma3ForConditionalGeneration`` does not apply it either."""

    def __init__(self, model, processor):
        super().__init__(model, processor)
        if getattr(self.lm.config, "use_bidirectional_attention", False):
            raise UnsupportedModel("gemma3 with bidirectional text attention is not supported")

    @torch.no_grad()
    def encode(self, samples: list[Sample], image_fn=None, *, vision_extras: bool = False) -> Encoded:
        """Processor inputs (with ``token_type_ids``) and per-image features. With
        ``vision_extras``, also per visual token a CLS-free saliency and the tower's keys
        (``_vision_extras``), for vision-stage pruners."""
        inputs = self._processor_inputs(samples, image_fn)
        captured: dict = {}
        tower = self.model.model.vision_tower
        attn = getattr(tower, "vision_model", tower).encoder.layers[-1].self_attn
        hooks = [attn.q_proj.register_forward_hook(lambda m, i, o: captured.__setitem__("q", o)),
                 attn.k_proj.register_forward_hook(lambda m, i, o: captured.__setitem__("k", o))] if vision_extras else []  # fmt: skip
        try:
            feats = self.model.model.get_image_features(inputs["pixel_values"].to(self.model.dtype)).pooler_output
        finally:
            for h in hooks:
                h.remove()
        extras = self._vision_extras(captured, attn, feats.shape[1]) if vision_extras else {}
        return Encoded(inputs, list(feats), extras, _mask_positions(inputs["attention_mask"]))

    @staticmethod
    def _vision_extras(captured: dict, attn, n_tokens: int) -> dict:
        """SigLIP has no CLS token: ``vision_cls_attention`` is the CLS-free substitute, the
        head-mean attention each patch RECEIVES in the tower's last layer, averaged over the query
        patches, summed over the patches the projector pools into one visual token (an image's
        values sum to 1); ``vision_keys`` the mean of those patches' keys there."""
        q, k = captured["q"], captured["k"]
        b, n, _ = q.shape
        side, tokens = int(n**0.5), int(n_tokens**0.5)
        kernel = side // tokens  # the projector's average-pooling kernel, in patches
        qh = q.view(b, n, -1, attn.head_dim).transpose(1, 2)
        kh = k.view(b, n, -1, attn.head_dim).transpose(1, 2)
        received = torch.stack([_received_attention(qh[i], kh[i], attn.scale) for i in range(b)])  # (B, n)

        def pooled(x, reduce):  # (B, n, ...) per patch -> (B, tokens^2, ...) per visual token, row-major
            x = x.reshape(b, tokens, kernel, tokens, kernel, *x.shape[2:]).transpose(2, 3)
            return reduce(x.reshape(b, tokens * tokens, kernel * kernel, *x.shape[5:]), 2)

        return {"vision_cls_attention": pooled(received, torch.sum),
                "vision_keys": pooled(k.float(), torch.mean)}

    def _batch_images(self, images: list) -> list:
        return [[image] for image in images]  # the processor wants each sample's images in a list

    def rope_kind(self, layer: int) -> str:
        return self.lm.config.layer_types[layer]

    def rotary_tables(self, h: torch.Tensor, pos: torch.Tensor, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
        return self.lm.rotary_emb(h, pos, kind)

    def _in_window(self, layer: int, query_pos: torch.Tensor, key_pos: torch.Tensor) -> torch.Tensor | None:
        """(B, nq, n): keys inside layer ``layer``'s sliding window by original position; None for a full layer."""
        window = self.layers[layer].self_attn.sliding_window
        return None if window is None else query_pos[:, :, None] - key_pos[:, None, :] < window

    def allowed(self, layer: int, state: SeqState, query: torch.Tensor) -> torch.Tensor:
        allowed = super().allowed(layer, state, query)
        image_query = torch.gather(state.visual, 1, query)
        allowed |= image_query[:, :, None] & state.visual[:, None, :]  # padding is never visual
        window = self._in_window(layer, torch.gather(state.pos, 1, query), state.pos)
        return allowed if window is None else allowed & window

    def _prefill_mask(self, layer: int, state: SeqState) -> torch.Tensor:
        return self.layer_mask(layer, state)  # never plain causal: the image block is bidirectional

    def decode_mask(self, layer: int, pos: torch.Tensor, valid: torch.Tensor, key_pos: torch.Tensor):
        window = self._in_window(layer, pos, key_pos)
        if window is None:
            return super().decode_mask(layer, pos, valid, key_pos)
        return self._as_mask((valid[:, None, :] & window)[:, None])


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


LLAMA_FAMILY = {"llama", "mistral"}
QWEN_VL = {"qwen2_vl", "qwen2_5_vl"}


def adapter_for(model, processor):
    cfg = model.config
    kind = cfg.model_type
    if kind == "llava" and cfg.text_config.model_type in LLAMA_FAMILY:
        return LlavaAdapter(model, processor)
    if kind in QWEN_VL:
        return QwenVLAdapter(model, processor)
    if kind == "gemma3":
        return Gemma3Adapter(model, processor)
    text = getattr(getattr(cfg, "text_config", None), "model_type", None)
    raise UnsupportedModel(
        f"no pruning adapter for model_type {kind!r}" + (f" with a {text!r} decoder" if text else "")
        + "; supported: llava (llama, mistral decoders), qwen2_vl, qwen2_5_vl, gemma3"
    )
