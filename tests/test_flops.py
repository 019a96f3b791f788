import pytest
import torch
from transformers import LlamaConfig, LlamaModel

from paretobench.flops import DecoderShape, counting_mode, layer_flops, lm_head_flops, prefill_flops


@pytest.mark.parametrize("n, kv_heads, padded", [(17, 2, False), (40, 4, False), (1, 1, False), (23, 2, True)])
def test_analytic_flops_equal_the_counted_forward(n, kv_heads, padded):
    """Unpadded input runs SDPA's CPU flash kernel, padded input the masked math path."""
    cfg = LlamaConfig(hidden_size=64, intermediate_size=160, num_hidden_layers=3, num_attention_heads=4,
                      num_key_value_heads=kv_heads, vocab_size=50)  # fmt: skip
    model = LlamaModel(cfg).eval()
    mask = torch.ones(1, n, dtype=torch.long)
    mask[0, :3] = 0 if padded else 1
    counter = counting_mode()
    with torch.no_grad(), counter:
        model(inputs_embeds=torch.randn(1, n, 64), attention_mask=mask)
    assert prefill_flops(DecoderShape.from_config(cfg), [n] * 3) == counter.get_total_flops()


def test_worked_example():
    # d=4, 2 heads of 2, 1 kv head, f=8, n=3:
    # q,o 2*3*4*4 each = 192; k,v 2*3*4*2 each = 96; attention 2*2*9*2*2 = 144; mlp 3*2*3*4*8 = 576
    s = DecoderShape(layers=2, hidden=4, heads=2, kv_heads=1, head_dim=2, intermediate=8, vocab=10)
    assert layer_flops(s, 3) == 192 + 96 + 144 + 576
    assert prefill_flops(s, [3, 0]) == layer_flops(s, 3)
    assert lm_head_flops(s) == 80
    with pytest.raises(ValueError, match="need 2 per-layer token counts"):
        prefill_flops(s, [3])
