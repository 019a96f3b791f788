"""Where an embedded model loses the asked-about object (docs/notes/embedded-model-training.md,
"tiny-gemma3: the first run"): linear probes for the object's shape or colour on its own image
tokens and at the answer position, after each decoder layer (fit on 1,200 train-split questions
of a family, scored on its test split), and the attention mass each layer's heads put, from the
answer position, on the object's tokens (eager attention, 96 test questions).

    python scripts/answer_probes.py gemma3 data/tiny-gemma3
    python scripts/answer_probes.py llava tiny-llava
"""

import json
import sys

import numpy as np
import torch

from paretobench.data import synth
from paretobench.data.tsv import read_tsv
from paretobench.models.loading import load_model
from paretobench.training.inputs import GemmaImages, LlavaImages, collate, tokenize

torch.set_num_threads(1)
arch, model_dir = sys.argv[1], sys.argv[2]
lm = load_model(model_dir)
model, processor = lm.model, lm.processor
model.eval()
Data = GemmaImages if arch == "gemma3" else LlavaImages


def collect(samples, fam_attr):
    data = Data(samples, processor); data.device = torch.device("cpu")
    ids, starts = tokenize(processor, samples)
    pad = processor.tokenizer.pad_token_id
    img_id = model.config.image_token_id
    obj, ans, y = [], [], []
    for b in range(0, len(samples), 32):
        rows = np.arange(b, min(b + 32, len(samples)))
        input_ids, mask, _ = collate(ids, starts, rows, pad)
        with torch.no_grad():
            out = model(**data.model_inputs(model, input_ids, mask, rows), output_hidden_states=True)
        hs = torch.stack(out.hidden_states, 1)  # (B, L+1, T, D)
        for j, r in enumerate(rows):
            sc = json.loads(samples[r].extra["scene"]); t = sc["focus"][0]
            item = sc["items"][t]
            y.append(synth.SHAPES.index(item["shape"]) if fam_attr == "shape" else list(synth.COLOURS).index(item["colour"]))
            patches = np.array(sc["patches"])
            pos = (input_ids[j] == img_id).nonzero().squeeze(1)
            sel = pos[torch.from_numpy(patches == t)]
            obj.append(hs[j, :, sel].mean(1).numpy())
            ans.append(hs[j, :, starts[r] - 1].numpy())
    return np.stack(obj), np.stack(ans), np.array(y)

def probe(Xtr, ytr, Xte, yte, k):
    Xtr, Xte = torch.tensor(Xtr, dtype=torch.float32), torch.tensor(Xte, dtype=torch.float32)
    mu, sd = Xtr.mean(0), Xtr.std(0) + 1e-5
    Xtr, Xte = (Xtr - mu) / sd, (Xte - mu) / sd
    W = torch.zeros(Xtr.shape[1], k, requires_grad=True); bb = torch.zeros(k, requires_grad=True)
    opt = torch.optim.LBFGS([W, bb], max_iter=200)
    yt = torch.tensor(ytr)
    def closure():
        opt.zero_grad(); l = torch.nn.functional.cross_entropy(Xtr @ W + bb, yt) + 1e-3 * W.pow(2).sum(); l.backward(); return l
    opt.step(closure)
    return float(((Xte @ W + bb).argmax(1).numpy() == yte).mean())

train = read_tsv("data/synth8/synth8_train.tsv")
for fam in ("shape", "colour"):
    tr = [s for s in train if s.category == fam][:1200]
    te = read_tsv(f"data/synth8/synth8_{fam}.tsv")
    attr = fam
    o1, a1, y1 = collect(tr, attr); o2, a2, y2 = collect(te, attr)
    k = len(synth.SHAPES) if attr == "shape" else len(synth.COLOURS)
    # what the question asks for, read off (a) the asked object's tokens, (b) the answer position
    print(f"{arch} {fam} questions, the asked object's {attr} (chance {1/k:.2f}); per layer 0..{o1.shape[1]-1}")
    print("  on object tokens: " + " ".join(f"{probe(o1[:, l], y1, o2[:, l], y2, k):.2f}" for l in range(o1.shape[1])))
    print("  at answer pos:    " + " ".join(f"{probe(a1[:, l], y1, a2[:, l], y2, k):.2f}" for l in range(a1.shape[1])), flush=True)

model.set_attn_implementation("eager")
for fam in ("shape", "colour"):
    samples = read_tsv(f"data/synth8/synth8_{fam}.tsv", limit=96)
    data = Data(samples, processor); data.device = torch.device("cpu")
    ids, starts = tokenize(processor, samples)
    pad = processor.tokenizer.pad_token_id
    img_id = model.config.image_token_id
    mass = []  # (questions, layers, heads): attention mass of the answer position on the asked object's tokens
    share = []  # object's share of the image tokens
    for b in range(0, len(samples), 32):
        rows = np.arange(b, min(b + 32, len(samples)))
        input_ids, mask, _ = collate(ids, starts, rows, pad)
        with torch.no_grad():
            out = model(**data.model_inputs(model, input_ids, mask, rows), output_attentions=True)
        att = torch.stack(out.attentions, 1)  # (B, L, H, T, T)
        for j, r in enumerate(rows):
            sc = json.loads(samples[r].extra["scene"]); t = sc["focus"][0]
            pos = (input_ids[j] == img_id).nonzero().squeeze(1)
            sel = pos[torch.from_numpy(np.array(sc["patches"]) == t)]
            a = att[j, :, :, starts[r] - 1]  # (L, H, T)
            mass.append(a[:, :, sel].sum(-1).numpy())
            share.append(len(sel) / len(pos))
    m = np.stack(mass)
    print(f"{arch} {fam}: object = {100*np.mean(share):.1f}% of image tokens; answer position's attention mass on it, max over heads per layer:",
          " ".join(f"{x:.2f}" for x in m.mean(0).max(1)), flush=True)
if arch == "gemma3":
    for i, layer in enumerate(model.model.language_model.layers):
        q, k = layer.self_attn.q_norm.weight.detach(), layer.self_attn.k_norm.weight.detach()
        print(f"layer {i}: q_norm scale (1+w) mean {float((1+q).abs().mean()):.2f} max {float((1+q).abs().max()):.2f}; k_norm mean {float((1+k).abs().mean()):.2f} max {float((1+k).abs().max()):.2f}")
