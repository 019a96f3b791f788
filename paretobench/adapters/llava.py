"""LLaVA (``LlavaForConditionalGeneration``) with a Llama-family decoder (Llama, Mistral, Vicuna;
the embedded ``tiny-llava``): 1-D RoPE, one causal mask for every layer."""

from __future__ import annotations

import torch

from paretobench.adapters.base import DecoderAdapter, Encoded, UnsupportedModel, _mask_positions, architecture
from paretobench.data.tsv import Sample

LLAMA_FAMILY = {"llama", "mistral"}


@architecture
class LlavaAdapter(DecoderAdapter):
    """LLaVA with a Llama-family decoder: 1-D RoPE, one causal mask for every layer."""

    describes = "llava (llama, mistral decoders)"

    @classmethod
    def supports(cls, config) -> bool:
        return config.model_type == "llava" and config.text_config.model_type in LLAMA_FAMILY

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
