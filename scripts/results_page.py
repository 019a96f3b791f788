"""Write docs/results.md from the committed files in results/, so the page cannot drift from them.

    python scripts/results_page.py [--results results] [--out docs/results.md]

Every number on the page is read from a file under results/ (each section names it, and
results/README.md names the command that writes each file); nothing here is measured.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

# per embedded model: its results folder and the data it was measured on
MODELS = {"tiny-llava": ("", "synth8"), "tiny-qwen2.5-vl": ("tiny-qwen2.5-vl", "synth8-native"),
          "tiny-gemma3": ("tiny-gemma3", "synth8")}  # fmt: skip
TABLES = [("table1", "Table 1: sampled schedules against VisPCO, per pruner and budget"),
          ("table2", "Table 2: searchers against the grid frontier"),
          ("table5", "Table 5: VisPCO kernels and configurations at 50%"),
          ("gap", "VisPCO's relaxed against realised FLOPs and KL"),
          ("table4", "Table 4: time to first token, throughput and accuracy at batch 1")]  # fmt: skip


def _json(path: Path):
    return json.loads(path.read_text()) if path.is_file() else None


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}"


def _table_body(md: Path) -> list[str]:
    """A report's Markdown without its title line (the page gives its own headings)."""
    lines = md.read_text().splitlines()
    return [line for line in lines if not line.startswith("# ")]


def card_section(card: dict, name: str, source: str) -> list[str]:
    full = card["full"]
    cats = list(full["per_category"])
    out = [f"Model card probes (`{source}`), percent:", "",
           "| probe | kept visual tokens | " + " | ".join(cats) + " | mean |", "|---" * (len(cats) + 3) + "|"]  # fmt: skip
    for probe, r in card.items():
        if isinstance(r, dict) and "per_category" in r:
            out.append(f"| {probe} | {r.get('kept_visual_tokens', full['visual_tokens']):.0f} | "
                       + " | ".join(_pct(r["per_category"][c]) for c in cats) + f" | {_pct(r['accuracy'])} |")  # fmt: skip
    return out + [""]


def landscape_section(land: dict, source: str) -> list[str]:
    f = land["fastv_landscape"]
    out = [f"The pruning landscape at {land['budget']:.0%} (`{source}`, {land['n']} questions, unpruned "
           f"{_pct(land['unpruned']['accuracy'])}%): {len(f['schedules'])} FastV schedules that meet the budget span "
           f"{f['spread_points']:.1f} points ({_pct(f['worst']['accuracy'])}% to {_pct(f['best']['accuracy'])}%).", ""]  # fmt: skip
    shared = land.get("shared_schedule")
    if shared:
        out += [f"Under one shared schedule (`{shared['schedule']}`), each pruner's accuracy and margins, in points:", "",
                "| pruner | accuracy | vs random | vs spatial |", "|---|---|---|---|"]  # fmt: skip
        margins = shared.get("margins_points", {})
        for r in shared["rows"]:
            m = margins.get(r["pruner"], {})
            out.append(f"| {r['pruner']} | {_pct(r['accuracy'])} | {m.get('vs_random', float('nan')):+.1f} | "
                       f"{m.get('vs_spatial', float('nan')):+.1f} |")  # fmt: skip
        out.append("")
    presets = land.get("presets") or []
    if presets:
        out += ["Each pruner's preset: " + "; ".join(
            f"{p['pruner']} {_pct(p['accuracy'])}% at {p['flops_fraction']:.2f} of the FLOPs" for p in presets) + ".", ""]
    return out


def holdout_section(hold: dict, source: str) -> list[str]:
    return [f"Held out (`{source}`): of {hold['stored_schedules']} stored FastV schedules that meet "
            f"{hold['budget']:.0%}, the best and worst picked on the {hold['selection_questions']} search questions differ "
            f"by {hold['spread_selection_points']:.1f} points there and by {hold['spread_heldout_points']:.1f} points on "
            f"the {hold['heldout_questions']} questions no search has seen.", ""]  # fmt: skip


def defaults_section(d: dict, source: str) -> list[str]:
    out = [f"VisPCO's configurations on held-out training questions (`{source}`; trained on the first "
           f"{d['trained_on']} questions of `{d['train_split']}`, scored on {d['scored_on']}): the default is "
           "chosen here, never on the test split.", "",
           "| configuration | " + " | ".join(f"{float(b):.0%}" for b in d["budgets"]) + " | mean | training (s) | kept step |",
           "|---" * (len(d["budgets"]) + 4) + "|"]  # fmt: skip
    for r in d["rows"]:
        cells = ["-" if r["picks"].get(f"{float(b):g}") is None else _pct(r["picks"][f"{float(b):g}"]["accuracy"])
                 for b in d["budgets"]]  # fmt: skip
        out.append(f"| {r['config']} | " + " | ".join(cells) + f" | {_pct(r['mean_accuracy'])} | "
                   f"{r['training_seconds'] or 0:.0f} | {'last' if r.get('kept_step') is None else r['kept_step']} |")  # fmt: skip
    return out + [""]


def harness_section(results: Path) -> list[str]:
    out = []
    ev, ray, kill = (_json(results / f) for f in ("eval-throughput.json", "ray-throughput.json", "kill-resume.json"))
    if ev:
        out.append(f"- The evaluator runs {ev['speedup']:.1f}x the naive loop ({ev['schedules']} schedules, "
                   f"{ev['questions']} questions, answers agreeing {ev['answers_agree']:.0%}; `results/eval-throughput.json`).")  # fmt: skip
    if ray:
        out.append(f"- Ray with {ray['workers']} actors: {ray['ray_over_local_throughput']:.2f}x the local runner's "
                   f"throughput, same results: {ray['results_agree']} (`results/ray-throughput.json`).")  # fmt: skip
    if kill:
        out.append(f"- Kill and resume: {kill['killed']} kills, {kill['lost']} lost, {kill['duplicated']} duplicated, "
                   f"tables identical to an uninterrupted run's: {kill['identical']} (`results/kill-resume.json`).")  # fmt: skip
    return out + [""] if out else []


def page(results: Path) -> str:
    lines = ["# Results", "",
             "Generated by `python scripts/results_page.py` from the files in `results/` (do not edit: rerun it).",
             "`results/README.md` names the command that writes each file; `bash scripts/reproduce-results.sh` runs",
             "them all. Accuracy is the mean over synth8's eight families, in percent; FLOPs are the decoder's",
             "prefill FLOPs, scoring included, as a fraction of the unpruned model's on the same inputs.", ""]  # fmt: skip
    for model, (sub, data) in MODELS.items():
        folder = results / sub if sub else results
        card = _json(folder / f"{model}-card.json")
        if card is None:
            continue
        lines += [f"## {model} on {data}", ""]
        lines += card_section(card, model, str(folder / f"{model}-card.json"))
        land = _json(folder / f"landscape-{data}.json")
        if land:
            lines += landscape_section(land, str(folder / f"landscape-{data}.json"))
        hold = _json(folder / f"landscape-holdout-{data}.json")
        if hold:
            lines += holdout_section(hold, str(folder / f"landscape-holdout-{data}.json"))
        for name, title in TABLES:
            md = folder / f"{name}.md"
            if md.is_file():
                lines += [f"### {title}", "", f"`{md}`", "", *_table_body(md), ""]
        for fig, what in (("fig3-fastv.png", "the grid's empirical frontier against VisPCO's predicted one"),
                          ("fig2-fastv.png", "every searcher's frontier over the grid's"),
                          ("fig6.png", "keep curves per kernel at 50%"), ("fig7.png", "keep curves per budget")):  # fmt: skip
            if (folder / fig).is_file():
                lines.append(f"- `{folder / fig}`: {what}")
        lines.append("")
        defaults = _json(folder / "vispco-defaults.json")
        if defaults:
            lines += defaults_section(defaults, str(folder / "vispco-defaults.json"))
    md = results / "table3.md"
    if md.is_file():
        lines += ["## Across architectures", "", f"`{md}`", "", *_table_body(md), ""]
        if (results / "fig3-models.png").is_file():
            lines += [f"- `{results / 'fig3-models.png'}`: every model's empirical frontier against VisPCO's predicted one", ""]
    harness = harness_section(results)
    if harness:
        lines += ["## The search harness", "", *harness]
    return "\n".join(lines).rstrip() + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--results", default="results")
    p.add_argument("--out", default="docs/results.md")
    args = p.parse_args(argv)
    Path(args.out).write_text(page(Path(args.results)))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
