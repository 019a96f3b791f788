"""``paretobench list``: what the registries hold."""

from __future__ import annotations

from paretobench.cli._output import add_json, emit


def add_parser(sub, name):
    p = sub.add_parser(name, help="list registered models, datasets, pruners and searchers")
    add_json(p)
    p.set_defaults(run=run)


def run(args) -> int:
    from paretobench.registry import DATASETS, MODELS, PRUNERS, SEARCHERS

    result = {r.kind + "s": {n: r.doc(n) for n in r.names()} for r in (MODELS, DATASETS, PRUNERS, SEARCHERS)}
    lines = []
    for kind, entries in result.items():
        lines.append(f"{kind}:" + ("" if entries else " (none yet)"))
        lines += [f"  {n:<12} {d}" for n, d in entries.items()]
    emit(result, args.json, "\n".join(lines))
    return 0
