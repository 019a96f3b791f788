"""Measure a trained embedded model and write its model card next to the weights.

Probes on synth8's test split (``n`` per family, seed 0) and on a second generator seed:

- ``full``: every visual token (the model's own forward).
- ``grey_image``: the image replaced by a uniform grey one.
- ``mean_token``: the visual tokens replaced by ONE token, their mean.
- ``random_25``: a random 25% of the visual tokens kept from layer 0 on (original positions).
- ``focus_25``: 25% kept, chosen first among the patches that show the items the question is
  about (ground truth from the generator's scene), the rest at random.
- ``second_seed``: ``full`` on a test set drawn with another generator seed.

And what the decoder can read: a linear probe per patch label (colour, shape, row, column) fitted
on half of the object patches and scored on the other half, on the vision tower's output and
on the projector's output (the decoder's image tokens).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from paretobench.registry import DEFAULT_MODEL

KEEP_FRACTION = 0.25
FIXED_SIZE = ("llava", "gemma3")  # model types that see synth8's 96x96 images (the others, native sizes)


def _rng(sample, salt: str) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(int(hashlib.sha256(f"{salt}:{sample.index}".encode()).hexdigest()[:12], 16))
    return g


def select_random(fraction: float):
    def select(sample, feats):
        k = round(fraction * len(feats))
        keep = torch.randperm(len(feats), generator=_rng(sample, "random"))[:k].sort().values
        return feats[keep], keep

    return select


def select_focus(fraction: float):
    """Patches showing the question's items first (random order among them), then random ones."""

    def select(sample, feats):
        scene = json.loads(sample.extra["scene"])
        focus = set(scene["focus"])
        order = torch.randperm(len(feats), generator=_rng(sample, "focus"))
        on = torch.tensor([scene["patches"][i] in focus for i in order.tolist()])
        ranked = torch.cat([order[on], order[~on]])
        keep = ranked[: round(fraction * len(feats))].sort().values
        return feats[keep], keep

    return select


def select_mean(sample, feats):
    return feats.mean(0, keepdim=True), torch.tensor([0])


def grey_image(sample):
    from PIL import Image

    return Image.new("RGB", sample.image().size, (128, 128, 128))


PROBES = {
    "full": {},
    "grey_image": {"image_fn": grey_image},
    "mean_token": {"select": select_mean},
    "random_25": {"select": select_random(KEEP_FRACTION)},
    "focus_25": {"select": select_focus(KEEP_FRACTION)},
}


READABLE = ("colour", "shape", "char", "row", "col")


def _on(model, inputs: dict) -> dict:
    """Image inputs on the model's device, pixels in its dtype."""
    return {k: v.to(model.device, model.dtype if v.is_floating_point() else v.dtype) for k, v in inputs.items()}


def patch_readability(model, samples, *, steps: int = 300, processor=None) -> dict:
    """Held-out accuracy of a linear probe per label, on the patches that show it (those of an
    item with that attribute; every object patch for row and column), at each stage the image
    passes on its way to the decoder: {stage: {label: acc}}. LLaVA: its tower's output and its
    projector's; Qwen2.5-VL: the merged tokens (the vision model's output is the decoder's input)."""
    from paretobench.training.inputs import GemmaImages, LlavaImages, QwenImages
    from paretobench.training.labels import shown

    fixed = model.config.model_type in FIXED_SIZE
    data = {"llava": LlavaImages, "gemma3": GemmaImages}.get(model.config.model_type, QwenImages)(samples, processor)
    rows = list(range(len(samples)))
    with torch.no_grad():
        feats = torch.cat([data.stage1_features(model, _on(model, data.vision_inputs(rows[i : i + 64]))).float().cpu()
                           for i in range(0, len(rows), 64)])  # fmt: skip
        if fixed:
            proj = model.model.multi_modal_projector
            per_image = feats.view(len(rows), -1, feats.shape[-1])  # Gemma 3's projector pools each image's grid
            projected = proj(per_image.to(model.device, model.dtype)).flatten(0, 1).float().cpu()
            stages = {"tower": feats, "projector": projected}
        else:
            stages = {"merger": feats}
    labels = data.targets(rows)
    out = {}
    for where, feats in stages.items():
        out[where] = {}
        for name in READABLE:
            on = shown(labels, name)
            x, y = feats[on], labels[name][on]
            x = (x - x.mean(0)) / (x.std(0) + 1e-6)
            half = len(x) // 2
            g = torch.Generator().manual_seed(0)
            probe = torch.nn.Linear(x.shape[1], int(y.max()) + 1)
            with torch.no_grad():
                probe.weight.copy_(0.01 * torch.randn(probe.weight.shape, generator=g)), probe.bias.zero_()
            opt = torch.optim.Adam(probe.parameters(), lr=0.01)
            for _ in range(steps):
                loss = torch.nn.functional.cross_entropy(probe(x[:half]), y[:half])
                opt.zero_grad()
                loss.backward()
                opt.step()
            with torch.no_grad():
                out[where][name] = float((probe(x[half:]).argmax(-1) == y[half:]).float().mean())
    return out


def run_probes(model_dir: str | Path, *, n: int = 250, seeds=(0, 1), progress: bool = False) -> dict:
    from paretobench.data.datasets import load_dataset, synth8, synth8_native
    from paretobench.measure import evaluate
    from paretobench.models.loading import load_model

    loaded = load_model(str(model_dir))
    synth8 = synth8 if loaded.model.config.model_type in FIXED_SIZE else synth8_native  # native resolution
    out = {}
    data = load_dataset(str(synth8(seed=seeds[0], n=n)))
    for name, kw in PROBES.items():
        r = evaluate(loaded.model, loaded.processor, data.samples, progress=progress, **kw)
        out[name] = {**r.scores, "kept_visual_tokens": r.kept_visual_tokens, "llm_prefill_flops": r.llm_prefill_flops,
                     "text_tokens": r.text_tokens, "visual_tokens": r.visual_tokens, "seconds": r.seconds}  # fmt: skip
    out["patch_readability"] = patch_readability(loaded.model, data.samples, processor=loaded.processor)
    for seed in seeds[1:]:
        data = load_dataset(str(synth8(seed=seed, n=n)))
        r = evaluate(loaded.model, loaded.processor, data.samples, progress=progress)
        out[f"seed_{seed}"] = {**r.scores, "seconds": r.seconds}
    return out


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def _chain(training: dict) -> list[dict]:
    """The run that produced the model and the earlier runs it continued, oldest first."""
    chain = [training]
    while chain[-1].get("continued_from"):
        chain.append(chain[-1]["continued_from"])
    return chain[::-1]


def _schedule_text(c: dict) -> str:
    shares = f"relative shares {c['emphasis']} (others 1)" if c.get("emphasis") else "equal shares"
    if c.get("introduce"):
        return (f"families entering one at a time every {c['introduce']} steps (the newest half of each batch, "
                f"the earlier ones sharing the other half), then {shares}")
    if "curriculum" in c:  # the recipe before families entered one at a time
        return f"easy families x4 for the first {int(100 * c['curriculum'])}% of steps, x0.5 after"
    return f"all families in {shares}"


def _stage2_text(r: dict) -> str:
    c = r["config"]
    feeder = "merger" if c.get("arch", "llava") == "qwen2.5-vl" else "projector"  # what feeds the decoder
    done = r["history"][-1]["step"] if r["history"] else 0
    steps = f"{done} steps" + (f" (of a planned {c['steps']}, cut there)" if done < c["steps"] else "")
    extras = []
    if c.get("shared_penalty"):
        extras.append(f"a penalty (weight {c['shared_penalty']}) on the share of the image tokens' energy in their mean")
    if c.get("grounding"):
        extras.append(f"a grounding loss (weight {c['grounding']}): a linear probe on the image tokens' hidden states "
                      f"after decoder layer {c['grounding_layer']} predicts which patches show the asked-about items")
    if c.get("pointing"):
        extras.append(f"a pointing loss (weight {c['pointing']}): a linear probe on the answer position's hidden "
                      f"state after {c['pointing_layer']} decoder layers reads the row and column of the question's items")
    if c.get("roles"):
        extras.append(f"a roles loss (weight {c['roles']}): on relation questions, a linear probe on the image tokens' "
                      f"hidden states after {c['roles_layer']} decoder layers reads whether each shows the first "
                      "named item, the second or neither")
    if c.get("patch_labels"):
        extras.append(f"a patch-label loss (weight {c['patch_labels']}): linear heads on the {feeder}'s output read "
                      "each patch's stage-1 labels (what is drawn, its row and column"
                      + ("; the attributes only where shown)" if c.get("shown_only") else ")"))
    return (f"{steps}, batch {c['batch']}, AdamW lr {c['lr']} (betas 0.9/0.98, {c['warmup']} warm-up steps, cosine), "
            f"gradient clipping at 1, {'bf16 autocast, ' if r.get('bf16', c.get('bf16')) else ''}{_schedule_text(c)}"
            + "".join(f"; {e}" for e in extras)
            + f"; {r['minutes']['language']} min")  # fmt: skip


def _training_section(training: dict, cats: list[str]) -> list[str]:
    chain = _chain(training)
    first, c1 = chain[0], chain[0]["config"]
    # a run started with --vision-from took only the earlier run's tower: that run's stage 2 is not
    # part of this model, nor is its time beyond stage 1
    fresh = max((i for i, r in enumerate(chain) if r["config"].get("vision_from")), default=-1)
    segments = [r for i, r in enumerate(chain) if r["history"] and i >= fresh]
    where_shown = "; colour, shape, character and bar value learnt only where shown" if c1.get("shown_only") else ""
    if c1.get("vision_fixed_steps"):
        size = c1["vision_fixed_size"]
        where_shown += f"; the first {c1['vision_fixed_steps']} steps on every scene redrawn at {size}x{size} pixels"
    lines = [
        f"Data: `synth8_train.tsv` (generator seed {training['config']['seed']}), {training['train_rows']} rows "
        f"trained on, {training['held_out_rows']} held out for validation.",
        "",
        f"1. Vision tower alone, dense per-patch supervision (kind, colour, shape, character, bar value, row and "
        f"column of what is drawn in each patch{where_shown}) plus a loss keeping each patch feature zero-mean and "
        f"unit-variance: {c1['vision_steps']} steps, batch {c1['vision_batch']}, AdamW lr {c1['vision_lr']}, "
        f"cosine, {first['minutes']['vision']} min. Held-out per-patch accuracy on object patches: "
        + ", ".join(f"{k} {_pct(a)}%" for k, a in first["vision_patch_accuracy"].items()) + "."
        + ("" if not first.get("vision_label_accuracy") else " On the patches that show each label: "
           + ", ".join(f"{k} {_pct(a)}%" for k, a in first["vision_label_accuracy"].items()) + "."),
        ("2. ViT blocks frozen; merger" if c1.get("arch", "llava") == "qwen2.5-vl" else "2. Tower frozen; projector")
        + " + decoder on the MCQ prompt, loss on the answer word and end of sequence"
        + (":" if len(segments) == 1 else f", in {len(segments)} runs, each continuing the last:"),
    ]
    lines += [f"   - {_stage2_text(r)}." for r in segments]
    for r in chain:
        d = r.get("decoder_from")
        if d:  # started from another model's trained language model (its time is not counted here)
            last = d["history"][-1] if d["history"] else {}
            lines += ["", f"Stage 2 started from the language model of `{Path(r['config']['decoder_from']).name}` "
                          f"({d['config']['arch']}, {last.get('step', 0)} stage-2 steps, held-out mean "
                          f"{_pct(last.get('mean', 0))}% on its own images): every decoder weight, and the "
                          f"embeddings of the {d['tokens_shared']} of {d['tokens']} tokens it shares with this "
                          f"vocabulary."]  # fmt: skip
    # a resumed run records no data time (None: its reading of the training file is not the first run's)
    total = sum(r["minutes"]["vision"] + (r["minutes"]["data"] or 0)
                + (r["minutes"]["language"] if r in segments else 0) for r in chain)  # fmt: skip
    lines += ["", f"Wall time: {total:.1f} min on {training['threads']} CPU threads, over {len(chain)} run(s)."]
    shas = {r.get("train_data_sha256") for r in chain}
    if len(shas) > 1:
        lines += ["", "The runs did not all read the same training file (see `training.json`)."]
    for note in training.get("notes", []):
        lines += ["", note]
    lines += [
        "",
        "Held-out answer accuracy during stage 2 (first answer token, teacher-forced; steps counted across runs):",
        "",
        "| step | " + " | ".join(cats) + " | mean |",
        "|---" * (len(cats) + 2) + "|",
    ]
    offset = 0
    for r in segments:
        for h in r["history"]:
            lines.append(f"| {offset + h['step']} | " + " | ".join(_pct(h.get(k, 0)) for k in cats)
                         + f" | {_pct(h['mean'])} |")  # fmt: skip
        offset += r["history"][-1]["step"]
    return lines


def _architecture(cfg: dict, full: dict) -> list[str]:
    t = cfg["text_config"]
    decoder = (f"{t['num_hidden_layers']} layers, hidden {t['hidden_size']}, {t['num_attention_heads']} query / "
               f"{t['num_key_value_heads']} key-value heads, SwiGLU width {t['intermediate_size']}, word-level "
               f"vocabulary of {t['vocab_size']}")  # fmt: skip
    v = cfg["vision_config"]
    if cfg["model_type"] == "llava":
        return [
            f"- vision tower: CLIP, {v['num_hidden_layers']} layers, hidden {v['hidden_size']}, "
            f"{v['image_size']}x{v['image_size']} images in {v['patch_size']}x{v['patch_size']} patches "
            f"-> {full['visual_tokens']:.0f} visual tokens (class token dropped)",
            "- projector: Linear-GELU-Linear to the decoder width",
            f"- language model: Llama, {decoder}",
            "- prompt: VLMEvalKit's MCQ prompt in a `USER: <question and options><image>\\nASSISTANT:` template "
            f"(the image after the question), {full['text_tokens']:.1f} text tokens on average; answers are the "
            "option's text",
        ]
    if cfg["model_type"] == "gemma3":
        kinds = t["layer_types"]
        return [
            f"- vision tower: SigLIP, {v['num_hidden_layers']} layers, hidden {v['hidden_size']}, "
            f"{v['image_size']}x{v['image_size']} images in {v['patch_size']}x{v['patch_size']} patches, no class "
            f"token; the projector average-pools them to {cfg['mm_tokens_per_image']} visual tokens, RMS-normalises "
            "and projects them",
            f"- language model: Gemma 3, {decoder.replace('SwiGLU', 'GeGLU')}; per-head q/k norms, "
            f"{kinds.count('sliding_attention')} sliding-window layers (window {t['sliding_window']} positions) and "
            f"{kinds.count('full_attention')} global ones, each kind with its rotary table; the image's tokens "
            "attend to each other both ways",
            "- prompt: VLMEvalKit's MCQ prompt in Gemma's turn markup, the image after the question, "
            f"{full['text_tokens']:.1f} text tokens on average; answers are the option's text",
        ]
    cell = v["patch_size"] * v["spatial_merge_size"]
    return [
        f"- vision model: Qwen2.5-VL's windowed ViT, {v['depth']} layers, hidden {v['hidden_size']}, "
        f"{v['patch_size']}x{v['patch_size']} patches merged 2x2 into one visual token per {cell}x{cell} pixels "
        f"at the image's own size: {full['visual_tokens']:.1f} visual tokens on average on synth8-native "
        "(16 to 256)",
        f"- language model: Qwen2.5-VL's decoder with 3-D M-RoPE (sections {t['rope_parameters']['mrope_section']}), "
        + decoder,
        "- prompt: VLMEvalKit's MCQ prompt in Qwen's chat markup, the image after the question, "
        f"{full['text_tokens']:.1f} text tokens on average; answers are the option's text",
    ]


def render_card(model_dir: Path, probes: dict, training: dict | None) -> str:
    full = probes["full"]
    cats = list(full["per_category"])
    rows = [k for k in probes if k != "full" and "per_category" in probes[k]]
    cfg = json.loads((model_dir / "config.json").read_text())
    kind = {"llava": "LlavaForConditionalGeneration", "gemma3": "Gemma3ForConditionalGeneration"}.get(
        cfg["model_type"], "Qwen2_5_VLForConditionalGeneration")  # fmt: skip
    data = "synth8" if cfg["model_type"] in FIXED_SIZE else "synth8-native"
    borrowed = next((Path(r["config"]["decoder_from"]).name for r in _chain(training or {}) if r.get("decoder_from")),
                    None)  # fmt: skip
    origin = ("from random initialisation" if not borrowed else
              f"from random initialisation, except its decoder, which started from the trained one of `{borrowed}`,")
    lines = [
        f"# {model_dir.name} — paretobench's embedded {'default ' if model_dir.name == DEFAULT_MODEL else ''}model",
        "",
        f"A `{kind}` trained {origin} on the synthetic `{data}`",
        "benchmark by `paretobench train-embedded`. It exists so that pruning and search run, offline on",
        "a CPU, on a real VLM whose accuracy depends on which visual tokens survive.",
        "",
        "## Architecture",
        "",
    ]
    params = training["parameters"] if training else None
    lines += _architecture(cfg, full)
    lines.append(f"- LLM prefill: {full['llm_prefill_flops'] / 1e6:.1f} MFLOPs per question (decoder layers)")
    if params:
        lines.append(f"- parameters: {params / 1e6:.2f} M")
    if training:
        lines += ["", "## Training", ""] + _training_section(training, cats)
    lines += [
        "",
        "## Accuracy and ablations",
        "",
        f"{data} test split, {full['n']} questions ({full['n'] // max(1, len(cats))} per family), greedy "
        "answers scored by VLMEvalKit's exact matching. Percent.",
        "",
        "| probe | kept visual tokens | " + " | ".join(cats) + " | mean |",
        "|---" * (len(cats) + 3) + "|",
    ]
    for name in ["full", *rows]:
        p = probes[name]
        kept = f"{p['kept_visual_tokens']:.0f}" if "kept_visual_tokens" in p else f"{full['visual_tokens']:.0f}"
        lines.append(f"| {name} | {kept} | " + " | ".join(_pct(p["per_category"][c]) for c in cats)
                     + f" | {_pct(p['accuracy'])} |")  # fmt: skip
    drop = lambda k: 100 * (full["accuracy"] - probes[k]["accuracy"])  # noqa: E731
    seed_keys = [k for k in probes if k.startswith("seed_")]
    lines += [
        "",
        f"- The image matters: a grey image costs {drop('grey_image'):.1f} points, one mean visual token "
        f"{drop('mean_token'):.1f}.",
        f"- Which tokens survive matters: a random 25% of visual tokens from layer 0 on costs "
        f"{drop('random_25'):.1f} points; the 25% that show the asked-about items cost {drop('focus_25'):.1f}.",
    ]
    for k in seed_keys:
        verdict = "within 5 points: it did not memorise its images" if abs(drop(k)) <= 5 else "more than 5 points"
        lines.append(f"- Another generator seed ({k.split('_')[1]}): {_pct(probes[k]['accuracy'])}% "
                     f"({-drop(k):+.1f} points), {verdict}.")  # fmt: skip
    if "patch_readability" in probes:
        read = probes["patch_readability"]
        lines += [
            "",
            "What the decoder can read: a linear probe per label on the patches that show it (an item's colour, "
            "shape or character; row and column on every object patch), fitted on half of them and scored on the "
            "other half, at each stage the image passes on its way to the decoder:",
            "",
            "| features | " + " | ".join(READABLE) + " |",
            "|---" * (len(READABLE) + 1) + "|",
        ]
        lines += [f"| {where} | " + " | ".join(_pct(read[where][k]) for k in READABLE) + " |" for where in read]
    lines += ["", f"Regenerate: `paretobench model-card --model {model_dir.name}` (writes this file and `card.json`).", ""]
    return "\n".join(lines)


def write_card(model_dir: str | Path, *, n: int = 250, progress: bool = False) -> dict:
    model_dir = Path(model_dir)
    probes = run_probes(model_dir, n=n, progress=progress)
    training_file = model_dir / "training.json"
    training = json.loads(training_file.read_text()) if training_file.is_file() else None
    (model_dir / "card.json").write_text(json.dumps(probes, indent=2) + "\n")
    (model_dir / "README.md").write_text(render_card(model_dir, probes, training))
    return probes
