"""A LLaVA language model run layer by layer at batch 1, the way the official pruning
repositories run it: eager attention (each layer's attention map is read off the layer itself),
explicit position ids, the sequence cut down with plain indexing between layers.

Nothing here comes from paretobench's engine or pruners: the parity tests compare those with
references built on this loop.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Sequence:
    """The sequence entering a layer: hidden states (1, n, D), position ids (1, n), and for
    every token the original visual index it holds (-1 for text)."""

    h: torch.Tensor
    pos: torch.Tensor
    visual: torch.Tensor  # (n,) original visual-token index, -1 for text

    def take(self, index: torch.Tensor) -> Sequence:
        return Sequence(self.h[:, index], self.pos[:, index], self.visual[index])

    @property
    def image_span(self) -> tuple[int, int]:
        """(first visual position, one past the last): visual tokens stay one block in LLaVA."""
        at = torch.nonzero(self.visual >= 0).squeeze(1)
        return int(at[0]), int(at[-1]) + 1


class LlavaLoop:
    """``LlavaLoop(model, inputs)``: ``model`` a ``LlavaForConditionalGeneration`` (switched to
    eager attention here), ``inputs`` its processor's batch-1 inputs (no padding)."""

    def __init__(self, model, inputs):
        model.set_attn_implementation("eager")
        self.model = model
        self.lm = model.model.language_model
        ids = inputs["input_ids"][0]
        with torch.no_grad():
            h = self.lm.embed_tokens(ids)[None].clone()
            feats = model.model.get_image_features(
                pixel_values=inputs["pixel_values"],
                vision_feature_layer=model.config.vision_feature_layer,
                vision_feature_select_strategy=model.config.vision_feature_select_strategy,
            ).pooler_output[0]
        image = torch.nonzero(ids == model.config.image_token_id).squeeze(1)
        h[0, image] = feats.to(h.dtype)
        visual = torch.full((len(ids),), -1, dtype=torch.long)
        visual[image] = torch.arange(len(image))
        self.start = Sequence(h, torch.arange(len(ids))[None], visual)
        self.n_layers = len(self.lm.layers)

    @torch.no_grad()
    def layer(self, i: int, seq: Sequence) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer ``i`` on ``seq``: its output (1, n, D) and attention map (1, H, n, n)."""
        n = seq.h.shape[1]
        mask = torch.full((n, n), torch.finfo(seq.h.dtype).min, dtype=seq.h.dtype).triu(1)[None, None]
        seen = {}
        layer = self.lm.layers[i]
        hook = layer.self_attn.register_forward_hook(lambda m, a, o: seen.__setitem__("attn", o[1]))
        try:
            out = layer(seq.h, attention_mask=mask, position_ids=seq.pos,
                        position_embeddings=self.lm.rotary_emb(seq.h, seq.pos))  # fmt: skip
        finally:
            hook.remove()
        return out, seen["attn"]

    @torch.no_grad()
    def qk(self, i: int, seq: Sequence) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer ``i``'s own queries (1, H, n, e) and keys (1, H, n, e) of ``seq`` (RoPE applied,
        keys repeated over query groups), as PyramidDrop recomputes them."""
        attn = self.lm.layers[i].self_attn
        x = self.lm.layers[i].input_layernorm(seq.h)
        n = x.shape[1]
        q = attn.q_proj(x).view(1, n, -1, attn.head_dim).transpose(1, 2)
        k = attn.k_proj(x).view(1, n, -1, attn.head_dim).transpose(1, 2)
        cos, sin = self.lm.rotary_emb(x, seq.pos)
        cos, sin = cos[:, None], sin[:, None]

        def rotate(t):
            half = t.shape[-1] // 2
            return t * cos + torch.cat([-t[..., half:], t[..., :half]], -1) * sin

        q, k = rotate(q), rotate(k)
        return q, k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)

    @torch.no_grad()
    def logits(self, h: torch.Tensor) -> torch.Tensor:
        return self.model.lm_head(self.lm.norm(h[:, -1]))
