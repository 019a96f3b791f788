"""The search space is built from the model's processor and config alone: no weights are read."""

import base64
import csv
import io

import pytest

from paretobench.adapters import adapter_for, text_token_counts
from paretobench.data.tsv import read_tsv
from paretobench.evaluator import Evaluator, Workload
from paretobench.flops import DecoderShape
from paretobench.models.loading import load_model


def test_the_space_is_built_without_loading_the_model(tiny_model_dir, synth_dir, tmp_path):
    evaluator = Evaluator(Workload(model=str(tiny_model_dir), data=(str(synth_dir),), limit=2))
    space = evaluator.space
    assert "model" not in evaluator._loaded
    m = load_model(str(tiny_model_dir))
    n_text, n_visual = text_token_counts(adapter_for(m.model, m.processor), evaluator.samples)
    assert (space.n_text, space.n_visual) == (round(n_text), n_visual) == (space.n_text, 144)
    assert space.shape == DecoderShape.from_config(m.model.config.text_config)
    # a folder whose weights cannot be read still gives its space: they are not read for it
    broken = tmp_path / "model"
    broken.mkdir()
    for f in tiny_model_dir.iterdir():
        (broken / f.name).write_bytes(b"not weights" if f.suffix == ".safetensors" else f.read_bytes())
    assert Evaluator(Workload(model=str(broken), data=(str(synth_dir),), limit=2)).space == space


def _sized_tsv(synth_dir, path, sizes):
    """synth8 questions with their images redrawn at ``sizes`` (native-resolution models give
    each its own number of visual tokens)."""
    rows = read_tsv(synth_dir / "synth8_colour.tsv")[: len(sizes)]
    with open(path, "w", newline="") as f:
        w = csv.writer(f, delimiter="\t")
        w.writerow(["index", "image", "question", "A", "B", "C", "D", "answer", "category"])
        for s, size in zip(rows, sizes):
            buf = io.BytesIO()
            s.image().resize(size).save(buf, format="PNG")
            options = [s.options.get(c, "") for c in "ABCD"]
            w.writerow([s.index, base64.b64encode(buf.getvalue()).decode(), s.question, *options, s.answer, s.category])
    return path


@pytest.mark.parametrize("arch", ["qwen2.5-vl", "gemma3"])
def test_the_space_counts_tokens_as_the_adapter_does(arch, synth_dir, tmp_path):
    if arch == "qwen2.5-vl":
        from paretobench.models import tiny_qwen

        processor = tiny_qwen.build_processor()
        model = tiny_qwen.build_model(processor, seed=3, text_layers=2, vision_layers=1)
        tiny_qwen.save(model, processor, tmp_path / "model")
    else:
        from test_gemma3_adapter import build_model, build_processor

        processor = build_processor()
        model = build_model(processor).cpu()
        model.save_pretrained(tmp_path / "model")
        processor.save_pretrained(tmp_path / "model")
    data = _sized_tsv(synth_dir, tmp_path / "sized.tsv", [(64, 64), (128, 96), (256, 256)])
    evaluator = Evaluator(Workload(model=str(tmp_path / "model"), data=(str(data),)))
    space = evaluator.space
    assert "model" not in evaluator._loaded
    n_text, n_visual = text_token_counts(adapter_for(model, load_model(str(tmp_path / "model")).processor),
                                         evaluator.samples)  # fmt: skip
    assert (space.n_text, space.n_visual) == (round(n_text), n_visual)
    if arch == "qwen2.5-vl":
        assert n_visual == round((16 + 48 + 256) / 3)  # each image its own count
    assert space.shape == DecoderShape.from_config(model.config.get_text_config())
