"""Qwen2-VL and Qwen2.5-VL: native-resolution images (a different number of visual tokens per
image), 3-D M-RoPE positions, and a CLS-free vision-stage saliency."""

from __future__ import annotations

import sys

import torch

from paretobench.adapters.base import DecoderAdapter, Encoded, UnsupportedModel, _received_attention, architecture
from paretobench.data.tsv import Sample

QWEN_VL = {"qwen2_vl", "qwen2_5_vl"}


@architecture
class QwenVLAdapter(DecoderAdapter):
    """Qwen2-VL / Qwen2.5-VL: native-resolution images (visual tokens per image vary), 3-D M-RoPE
    positions (3, B, n) (temporal, height, width) computed once on the full sequence, so dropped
    tokens leave gaps and kept ones keep their place in the image grid.

    Vision-stage pruners (ViTCoP) get a CLS-free stand-in for LLaVA's CLS attention: the
    attention each merged token's patches receive in the vision tower's last block (see
    ``_vision_extras``)."""

    describes = "qwen2_vl, qwen2_5_vl"

    @classmethod
    def supports(cls, config) -> bool:
        return config.model_type in QWEN_VL

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
