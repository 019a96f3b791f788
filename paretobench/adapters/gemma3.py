"""Gemma 3: a SigLIP tower pooled to a fixed count of visual tokens, bidirectional image blocks,
sliding-window layers with their own rotary table."""

from __future__ import annotations

import torch

from paretobench.adapters.base import (
    DecoderAdapter,
    Encoded,
    UnsupportedModel,
    _mask_positions,
    _received_attention,
    architecture,
)
from paretobench.data.tsv import Sample
from paretobench.sequence import SeqState


@architecture
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

    describes = "gemma3"

    @classmethod
    def supports(cls, config) -> bool:
        return config.model_type == "gemma3"

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
        hooks = []
        if vision_extras:
            hooks = [attn.q_proj.register_forward_hook(lambda m, i, o: captured.__setitem__("q", o)),
                     attn.k_proj.register_forward_hook(lambda m, i, o: captured.__setitem__("k", o))]
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
