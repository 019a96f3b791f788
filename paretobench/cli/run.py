"""``paretobench run``: search pruning schedules, keep every evaluation, write a run folder."""

from __future__ import annotations

import argparse
import json

from paretobench.cli._output import add_device_args, add_generation_args, add_json, emit
from paretobench.registry import DEFAULT_MODEL

EXAMPLES = """examples:
  paretobench run --searcher random --pruner fastv --n 40
  paretobench run --searcher grid --pruner fastv --n 700 --budgets 0.3 0.5 0.7
  paretobench run --searcher nsga2 --pruner sparsevlm --n 96 --param population=16
  paretobench run --searcher random --pruner pyramiddrop --pruner-param positions=keep
  paretobench run --searcher random --n 40 --runner ray --workers 2
  paretobench run --searcher gsearch --data /data/LMUData/MMBench_DEV_EN.tsv --model /models/llava --out runs-llava
  paretobench run --searcher vispco --pruner fastv --limit 64 --vs results/search/grid-fastv-51315e73
Running the same command again recomputes nothing; an interrupted run resumes where it stopped.
"""


def add_parser(sub, name):
    p = sub.add_parser(name, help="search pruning schedules and write a run folder", epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--searcher", required=True, help="registered searcher (paretobench list)")
    p.add_argument("--pruner", default="fastv", help="registered pruner (default fastv)")
    p.add_argument("--model", default=DEFAULT_MODEL, help="registered model name or local model folder")
    p.add_argument("--data", nargs="+", default=["synth8"], help="datasets: names, .tsv files or folders")
    p.add_argument("--limit", type=int, default=None, help="first N questions of each file")
    p.add_argument("--budgets", nargs="+", type=float, default=[0.3, 0.5, 0.7],
                   help="FLOPs fractions the searcher targets and picks for (default 0.3 0.5 0.7)")  # fmt: skip
    p.add_argument("--n", type=int, default=40, help="evaluations the searcher may ask for (default 40)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="a searcher setting, e.g. population=16 or kind=lattice (repeatable)")  # fmt: skip
    add_generation_args(p)
    p.add_argument("--runner", choices=["local", "ray"], default="local")
    p.add_argument("--workers", type=int, default=2, help="Ray actors (with --runner ray; default 2)")
    p.add_argument("--address", default=None, help="join an existing Ray cluster at this address")
    p.add_argument("--out", default="runs", help="results folder (default runs/)")
    p.add_argument("--name", default="", help="run name (default: searcher-pruner-<config hash>)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--chunk", type=int, default=8, help="schedules evaluated and stored together (default 8)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    add_device_args(p)
    p.add_argument("--vs", default=None, metavar="REF_RUN",
                   help="a reference run folder (e.g. a large grid) to print the frontier distance to; "
                        "default: the largest grid run of the same pruner on the same questions in --out")  # fmt: skip
    add_json(p)
    p.set_defaults(run=run)


def parse_params(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--param {item!r}: expected KEY=VALUE")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value  # a bare word, e.g. kind=lattice
    return out


def run(args) -> int:
    from paretobench.registry import parse_params as parse_pruner_params
    from paretobench.run_loop import RunConfig, check
    from paretobench.run_loop import run as run_search

    if args.limit is not None and args.limit < 1:
        raise ValueError("--limit must be >= 1")
    cfg = RunConfig(searcher=args.searcher, pruner=args.pruner, model=args.model, data=tuple(args.data),
                    limit=args.limit, budgets=tuple(args.budgets), n=args.n, seed=args.seed,
                    params=parse_params(args.param), out=args.out, name=args.name, runner=args.runner,
                    workers=args.workers if args.runner == "ray" else 1, address=args.address,
                    batch_size=args.batch_size, chunk=args.chunk, threads=args.threads, device=args.device,
                    dtype=args.dtype, pruner_params=parse_pruner_params(args.pruner_param),
                    max_new_tokens=args.max_new_tokens)  # fmt: skip
    check(cfg)
    if args.vs is not None:  # before any work: a reference from other weights gives no distance
        from paretobench.models.loading import model_fingerprint
        from paretobench.results import check_same_model, load_run

        check_same_model(load_run(args.vs), model_fingerprint(args.model), f"--model {args.model}")
    outcome = run_search(cfg, progress=not args.json)
    summary = json.loads((outcome.folder / "summary.json").read_text())
    lines = [f"run {outcome.name}: {summary['evaluations']} evaluations ({outcome.computed} computed, "
             f"{outcome.reused} from the store) in {outcome.seconds:.1f} s; {summary['frontier_points']} on the frontier"]  # fmt: skip
    for b, p in summary["picks"].items():
        lines.append(f"  budget {b:>5}: " + ("no evaluation meets it" if p is None else
                     f"accuracy {p['accuracy']:.4f} at {p['flops_fraction']:.3f} FLOPs, schedule "
                     + ",".join(f"{k:g}" for k in p["schedule"])))  # fmt: skip
    proposals = (summary.get("searcher_report") or {}).get("proposals") or []
    fill = summary.get("searcher_report", {}).get("fill", True)
    if proposals:
        lines.append("  predicted frontier (budget: FLOPs, accuracy, schedule):")
        for p in proposals:
            f, a, s = ((p["filled_flops"], p["filled_accuracy"], p["filled"]) if fill
                       else (p["realised_flops"], p["accuracy"], p["schedule"]))  # fmt: skip
            lines.append(f"    {p['budget']:>4g}: {f:.3f}  {a:.4f}  " + ",".join(f"{k:.3g}" for k in s))
    distance = _distance(outcome.folder, args.vs)
    if distance:
        gaps = ", ".join(f"gap@{b} {'n/a' if g is None else f'{100 * g:+.1f} points'}" for b, g in distance["gap"].items())
        lines.append(f"  vs {distance['ref']}: IGD+ {distance['igd_plus']:.4f}, HV ratio {distance['hv_ratio']:.3f}, {gaps}")
    lines.append(f"  written to {outcome.folder}/")
    this_run = {"computed": outcome.computed, "reused": outcome.reused, "seconds": outcome.seconds}
    emit({**summary, **this_run, "folder": str(outcome.folder), "vs": distance}, args.json, "\n".join(lines))
    return 0


def _distance(folder, vs: str | None) -> dict | None:
    """The run's frontier distance to ``vs``, or to the largest grid run of the same pruner on the
    same questions in its results folder (none: None)."""
    from paretobench.results import compare, load_run, reference, stored_runs

    run = load_run(folder)
    if vs is not None:
        return compare(run, load_run(vs), bootstrap=0)
    ref = reference(stored_runs(folder.parent), run.config["pruner"], data_key=run.config["data_key"],
                    other_than=folder)  # fmt: skip
    return None if ref is None else compare(run, ref.run, bootstrap=0)
