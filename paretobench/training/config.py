"""``train-embedded``'s settings, one field per flag (free of torch, so the CLI reads them cheaply)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TrainingConfig:
    data: str  # folder with synth8_train.tsv
    out: str  # where the trained model (and its card) is saved
    arch: str = "llava"  # llava (tiny-llava, synth8), qwen2.5-vl (tiny-qwen2.5-vl, synth8-native), gemma3 (synth8)
    seed: int = 0
    vision_steps: int = 2000  # stage 1 steps (batch ``vision_batch``)
    vision_batch: int = 64
    vision_lr: float = 1e-3
    vision_norm: float = 1.0  # weight of the loss that keeps each patch feature zero-mean, unit-variance
    # the attribute heads (colour, shape, char, value) learn only from the tokens that show an item
    # with that attribute; otherwise from every token, background (class 0) included, where a rare
    # attribute (a character covers a few tokens of one image in eight) is drowned by the others
    shown_only: bool = False
    # native-resolution towers (qwen2.5-vl) only: the first ``vision_fixed_steps`` stage-1 steps see
    # every training scene redrawn at ``vision_fixed_size`` pixels a side, one scale, before the
    # images' own sizes; measured on tiny-qwen2.5-vl's ViT, characters are learnt far sooner at one
    # scale, and what is learnt there carries over to native sizes (docs/notes)
    vision_fixed_steps: int = 0
    vision_fixed_size: int = 96
    vision_from: str = ""  # a model folder whose (stage-1) vision tower is reused; skips stage 1
    init_from: str = ""  # a trained model folder to continue stage 2 from (all weights); skips stage 1
    decoder_from: str = ""  # a trained model folder (either architecture) whose language model starts stage 2
    steps: int = 6000  # stage 2 steps (batch ``batch``)
    batch: int = 32
    lr: float = 1e-3
    warmup: int = 150
    introduce: int = 300  # stage-2 steps between families entering training (0: all from the start)
    emphasis: str = ""  # once all families train together, their relative shares, e.g. "relation=3,shape=2"
    shared_penalty: float = 1.0  # weight of the penalty on the image tokens' shared (mean) component
    grounding: float = 0.0  # weight of the loss teaching image tokens whether they show what is asked
    grounding_layer: int = 4  # the decoder layer whose output the grounding probe reads
    roles: float = 0.0  # weight of the loss teaching a relation's object tokens which named item they show
    roles_layer: int = 3  # the decoder layer whose output the roles probe reads
    pointing: float = 0.0  # weight of the loss reading the question's items' places at the answer position
    pointing_layer: int = 6  # the decoder layer whose output the pointing probe reads
    patch_labels: float = 0.0  # weight of the loss reading each patch's stage-1 labels from the projector's output
    # bf16 autocast for stage 2 (weights stay fp32); None: only where the hardware computes bf16 itself
    # (``native_bf16``): on an AVX2-only CPU autocast emulates it, about 10x slower a step (docs/notes)
    bf16: bool | None = None
    device: str = "auto"  # where training runs: auto (a CUDA GPU if torch sees one), cpu, cuda, ...
    val_every: int = 500
    val_size: int = 800  # held out from the train file, not trained on
    threads: int = 0  # 0 = torch's default
    # a folder (tracked in git, say) where the whole training state is written every
    # ``checkpoint_every`` steps of either stage; ``train-embedded --resume DIR`` continues from it
    # exactly where it stopped, on this or another machine
    checkpoint: str = ""
    checkpoint_every: int = 250


def native_bf16(device) -> bool:
    """Whether ``device`` computes bf16 natively: a CUDA GPU that supports it, or a CPU with AMX or
    AVX512-BF16 (an AVX2 CPU only emulates it)."""
    import torch

    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported()
    return False


def uses_bf16(cfg: TrainingConfig, device) -> bool:
    """``cfg.bf16``, where it is None what the device computes natively."""
    return native_bf16(device) if cfg.bf16 is None else bool(cfg.bf16)
