"""``paretobench model-card``: measure a trained embedded model and write its card."""

from __future__ import annotations

from paretobench.cli._output import add_json, emit
from paretobench.registry import DEFAULT_MODEL


def add_parser(sub, name):
    p = sub.add_parser(name, help="run the ablations on a trained model and write its model card (README.md)")
    p.add_argument("--model", default=DEFAULT_MODEL, help="registered model name or local model folder")
    p.add_argument("--n", type=int, default=250, help="test questions per family")
    add_json(p)
    p.set_defaults(run=run)


def run(args) -> int:
    from paretobench.models.loading import resolve_model_dir
    from paretobench.training.card import write_card

    _, path = resolve_model_dir(args.model)
    card = write_card(path, n=args.n, progress=not args.json)
    emit(card, args.json, (path / "README.md").read_text())
    return 0
