"""``paretobench`` command line. One module per sub-command, each with ``add_parser`` and ``run``."""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = {
    "data": "paretobench.cli.data",
    "train-embedded": "paretobench.cli.train",
    "eval": "paretobench.cli.eval",
    "flops": "paretobench.cli.flops",
    "model-card": "paretobench.cli.card",
    "run": "paretobench.cli.run",
    "frontier": "paretobench.cli.frontier",
    "runs": "paretobench.cli.runs",
    "report": "paretobench.cli.report",
    "list": "paretobench.cli.ls",
    "export-vlmeval": "paretobench.cli.export",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="paretobench",
        description="Find and benchmark Pareto-optimal visual-token pruning configurations for VLMs.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module in COMMANDS.items():
        importlib.import_module(module).add_parser(sub, name)
    return parser


def main(argv: list[str] | None = None) -> int:
    from paretobench.data.tsv import DatasetError
    from paretobench.models.loading import ModelError
    from paretobench.registry import RegistryError
    from paretobench.store import StoreError

    args = build_parser().parse_args(argv)
    try:
        return args.run(args) or 0
    except (DatasetError, ModelError, RegistryError, StoreError, ValueError, OSError) as e:
        print(f"paretobench {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"paretobench {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
