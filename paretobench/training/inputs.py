"""How each architecture's images, prompts and labels reach the model in training (``ImageData``),
and the tokenised, padded batches of prompt + answer."""

from __future__ import annotations

import json

import numpy as np
import torch

from paretobench.adapters import chat_prompts
from paretobench.data import synth
from paretobench.data.tsv import Sample
from paretobench.training.labels import HEAD_SIZES, item_positions, patch_labels, scene_labels


def pixels(samples: list[Sample]) -> torch.Tensor:
    """(N, 3, 96, 96) float images normalised as the processor does ((x/255 - 0.5) / 0.5)."""
    arr = np.stack([np.asarray(s.image(), dtype=np.uint8) for s in samples])
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()  # uint8; normalised per batch


def normalise(u8: torch.Tensor) -> torch.Tensor:
    return (u8.float() / 255.0 - 0.5) / 0.5


class ImageData:
    """How one architecture's images, and the labels of what each visual token shows, reach the
    model in both stages. ``rows`` index the training samples."""

    grid: int  # the largest patch grid side (row and column label classes)
    positions: torch.Tensor  # (samples, 4): the question's items' rows and columns (see item_positions)
    vision_prefix: str  # the names of the weights stage 1 trains
    device = torch.device("cpu")  # where ``vision_inputs`` and ``targets`` put a batch (the model's)
    redraw_size: int | None = None  # set: the batch's scenes are redrawn at this many pixels a side

    def check_redraw(self, size: int) -> None:
        """Refuse a ``redraw_size`` this architecture cannot take."""
        raise ValueError("this architecture's images have one size already; redrawing them is for "
                         "native-resolution models (--arch qwen2.5-vl)")

    def n_tokens(self, row: int) -> int:
        raise NotImplementedError

    def vision_inputs(self, rows) -> dict:
        """The model's image keyword arguments for ``rows``."""
        raise NotImplementedError

    def model_inputs(self, model, input_ids, mask, rows) -> dict:
        """Every keyword argument of the model's forward but the labels."""
        return {"input_ids": input_ids, "attention_mask": mask, **self.vision_inputs(rows)}

    def stage1_features(self, model, inputs: dict) -> torch.Tensor:
        """(tokens of all rows, D): the features stage 1's heads read, in ``targets`` order."""
        raise NotImplementedError

    def targets(self, rows) -> dict[str, torch.Tensor]:
        """Per label, (tokens of all rows,) long targets."""
        raise NotImplementedError

    def stage1_modules(self, model) -> list[torch.nn.Module]:
        raise NotImplementedError

    def frozen_in_stage2(self, model) -> list[torch.nn.Module]:
        raise NotImplementedError

    def image_states_module(self, model) -> torch.nn.Module:
        """The module whose output holds the image tokens in the decoder's space."""
        raise NotImplementedError

    def image_states(self, output) -> torch.Tensor:
        """(tokens of all rows, D) from that module's output."""
        return output

    def feature_dim(self, model) -> int:
        raise NotImplementedError

    def head_sizes(self) -> dict[str, int]:
        return {**HEAD_SIZES, "row": self.grid, "col": self.grid}


class LlavaImages(ImageData):
    """Fixed 96x96 images, decoded once into one uint8 tensor; 144 patches, labelled per 8x8."""

    grid = synth.GRID
    vision_prefix = "model.vision_tower."

    def __init__(self, samples: list[Sample], processor=None):
        self.images = pixels(samples)
        self.labels = patch_labels(samples)
        self.positions = torch.tensor([item_positions(json.loads(s.extra["scene"])) for s in samples])

    def n_tokens(self, row):
        return synth.GRID * synth.GRID

    def vision_inputs(self, rows):
        return {"pixel_values": normalise(self.images[rows]).to(self.device)}

    def stage1_features(self, model, inputs):
        return vision_features(model, inputs["pixel_values"]).flatten(0, 1)

    def feature_dim(self, model):
        return model.config.vision_config.hidden_size

    def targets(self, rows):
        return {k: v[rows].flatten().to(self.device) for k, v in self.labels.items()}

    def stage1_modules(self, model):
        return [model.model.vision_tower]

    def frozen_in_stage2(self, model):
        return [model.model.vision_tower]

    def image_states_module(self, model):
        return model.model.multi_modal_projector

    def image_states(self, output):
        return output.flatten(0, -2)


class GemmaImages(LlavaImages):
    """Gemma 3: fixed 96x96 images like LLaVA's, one visual token per 8x8 patch (the projector's
    pooling kernel is 1), a SigLIP tower with no class token; the image tokens attend to each other
    both ways, which the model builds from ``token_type_ids``."""

    def stage1_features(self, model, inputs):
        return model.model.vision_tower(pixel_values=inputs["pixel_values"]).last_hidden_state.flatten(0, 1)

    def model_inputs(self, model, input_ids, mask, rows):
        types = (input_ids == model.config.image_token_id).long()
        return {**super().model_inputs(model, input_ids, mask, rows), "token_type_ids": types}


class QwenImages(ImageData):
    """Native-resolution images (``synth8-native``): each through the image processor per batch;
    labels per merged token (one per ``scene["cell"]`` pixels), row-major as the decoder sees them."""

    vision_prefix = "model.visual."

    def __init__(self, samples: list[Sample], processor):
        self.samples, self.image_processor = samples, processor.image_processor
        # one merged token per ``cell`` x ``cell`` pixels
        self.cell = self.image_processor.patch_size * self.image_processor.merge_size
        self.labels, self.counts, self.positions = [], [], []
        for s in samples:
            scene = json.loads(s.extra["scene"])
            if scene.get("cell") != self.cell:
                raise ValueError(f"sample {s.index}: patch labels per {scene.get('cell')} pixels; this model merges "
                                 f"{self.cell}-pixel tokens (use synth8-native data)")  # fmt: skip
            self.labels.append(scene_labels(scene))
            self.positions.append(item_positions(scene))
            self.counts.append(len(scene["patches"]))
        self.grid = max(max(int(lab["row"].max()), int(lab["col"].max())) for lab in self.labels) + 1
        self.positions = torch.tensor(self.positions)
        self._redrawn = (None, None)  # the last redrawn batch: (size, rows), (images, labels)

    def check_redraw(self, size):
        ip, cell = self.image_processor, self.cell
        lo, hi = ip.size.shortest_edge, ip.size.longest_edge  # the processor's pixel bounds (min/max_pixels)
        if size % cell or not lo <= size * size <= hi or size > self.grid * cell:
            raise ValueError(f"cannot redraw the scenes at {size}x{size} pixels: the size must be a multiple of "
                             f"{cell} with {lo} to {hi} pixels in all, at most "
                             f"{self.grid * cell} a side (the largest training image's grid)")  # fmt: skip

    def n_tokens(self, row):
        return self.counts[row]

    def _batch(self, rows) -> tuple[list, list[dict[str, torch.Tensor]]]:
        """The rows' images and per-token labels: as stored, or each scene redrawn at ``redraw_size``."""
        if self.redraw_size is None:
            return [self.samples[r].image() for r in rows], [self.labels[r] for r in rows]
        key = (self.redraw_size, tuple(int(r) for r in rows))
        if self._redrawn[0] != key:
            images, labels = [], []
            for r in rows:
                scene = json.loads(self.samples[r].extra["scene"])
                image, owners = synth.redraw(scene, (self.redraw_size, self.redraw_size), self.cell)
                images.append(image)
                labels.append(scene_labels({**scene, "patches": owners.reshape(-1).tolist(), "grid": owners.shape}))
            self._redrawn = (key, (images, labels))
        return self._redrawn[1]

    def vision_inputs(self, rows):
        out = self.image_processor(images=self._batch(rows)[0], return_tensors="pt")
        return {k: out[k].to(self.device) for k in ("pixel_values", "image_grid_thw")}

    def model_inputs(self, model, input_ids, mask, rows):
        # without the token types Qwen's get_rope_index would give the image 1-D positions
        types = (input_ids == model.config.image_token_id).int()
        return {**super().model_inputs(model, input_ids, mask, rows), "mm_token_type_ids": types}

    def stage1_features(self, model, inputs):
        return model.model.visual(inputs["pixel_values"], grid_thw=inputs["image_grid_thw"]).pooler_output

    def feature_dim(self, model):
        return model.config.vision_config.out_hidden_size

    def targets(self, rows):
        labels = self._batch(rows)[1]
        return {k: torch.cat([lab[k] for lab in labels]).to(self.device) for k in labels[0]}

    def stage1_modules(self, model):
        return [model.model.visual]

    def frozen_in_stage2(self, model):
        visual = model.model.visual
        return [visual.patch_embed, visual.blocks]

    def image_states_module(self, model):
        return model.model.visual

    def image_states(self, output):
        return output.pooler_output


def answer_text(s: Sample) -> str:
    return s.options[s.answer] if s.is_mcq else s.references[0]


def tokenize(processor, samples: list[Sample], n_tokens=None) -> tuple[list[list[int]], list[int]]:
    """Token ids of prompt + answer + EOS per sample, and where the answer starts.
    ``n_tokens(i)``: sample i's visual token count (default: 144, one per 8x8 patch of 96x96)."""
    tok = processor.tokenizer
    ids, starts = [], []
    for i, (s, text) in enumerate(zip(samples, chat_prompts(processor, samples))):
        n_img = n_tokens(i) if n_tokens else synth.GRID * synth.GRID
        if hasattr(processor, "full_image_sequence"):  # Gemma 3: the image's start token opens a fixed block
            text = text.replace(processor.boi_token, processor.full_image_sequence)
        else:
            text = text.replace(processor.image_token, processor.image_token * n_img)
        prompt = tok(text).input_ids
        answer = tok(answer_text(s), add_special_tokens=False).input_ids + [tok.eos_token_id]
        ids.append(prompt + answer)
        starts.append(len(prompt))
    return ids, starts


def collate(ids, starts, rows, pad_id, device=None):
    """Right-padded batch with labels only on the answer tokens (on ``device``, default the CPU)."""
    length = max(len(ids[r]) for r in rows)
    input_ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), length), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for b, r in enumerate(rows):
        seq = torch.tensor(ids[r])
        input_ids[b, : len(seq)] = seq
        mask[b, : len(seq)] = 1
        labels[b, starts[r] : len(seq)] = seq[starts[r] :]
    return input_ids.to(device), mask.to(device), labels.to(device)


def vision_features(model, pix: torch.Tensor) -> torch.Tensor:
    """The per-patch features LLaVA hands to its projector, (B, 144, D)."""
    cfg = model.config
    out = model.model.vision_tower(pix, output_hidden_states=True)
    feats = out.hidden_states[cfg.vision_feature_layer]
    return feats[:, 1:] if cfg.vision_feature_select_strategy == "default" else feats
