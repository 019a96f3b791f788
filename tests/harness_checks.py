"""What the evaluation-harness tests share. The harnesses (VLMEvalKit, lmms-eval) live in a second
environment (``make eval-env``): where one is missing its tests are skipped, except under
``PARETOBENCH_HARNESS=required`` (``make test-harness``, CI), where a missing harness fails."""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def default_vispco_run(results: Path = ROOT / "results" / "search") -> Path:
    """The committed VisPCO-FastV run the tables call VisPCO's default (``_default_kernel_run``):
    a finished run with a pick for budget 0.5, whatever name the regeneration gave it."""
    from paretobench.results import _default_kernel_run, stored_runs

    found = _default_kernel_run([r for r in stored_runs(results) if r.searcher == "vispco" and r.pruner == "fastv"])
    if found is None:
        raise FileNotFoundError(f"{results}: no VisPCO-FastV run")
    return Path(found.run.folder)


RUN = default_vispco_run()


def harness(module: str):
    """``module`` imported; skipped where it is not installed, failed where the harness is required."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # VLMEvalKit's import: no network fetch
    try:
        return importlib.import_module(module)
    except ImportError as e:
        if os.environ.get("PARETOBENCH_HARNESS") == "required":
            pytest.fail(f"{module} cannot be imported and PARETOBENCH_HARNESS=required: {e}", pytrace=False)
        pytest.skip(f"{module} is not installed (it lives in the harness environment: make eval-env)",
                    allow_module_level=True)  # fmt: skip


def offline_env(tmp_path: Path, **extra) -> dict:
    """The environment for a harness run: no hub, no network price tables, caches under ``tmp_path``."""
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_HOME=str(tmp_path / "hf"),
               LITELLM_LOCAL_MODEL_COST_MAP="True", **{k: str(v) for k, v in extra.items()})  # fmt: skip
    return env


def export(main, out: Path, *args: str) -> dict:
    """``paretobench export-vlmeval ARGS --out OUT``, the written export."""
    assert main(["export-vlmeval", *args, "--out", str(out)]) == 0
    return json.loads(out.read_text())


def eval_args(cfg: dict) -> list[str]:
    """``paretobench eval`` arguments for an export's model, pruner, schedule and answer length."""
    args = ["--model", cfg["model"], "--max-new-tokens", str(cfg["max_new_tokens"])]
    if cfg["schedule"]:
        args += ["--pruner", cfg["pruner"], "--schedule", cfg["schedule"]]
        args += [a for k, v in cfg.get("params", {}).items() for a in ("--pruner-param", f"{k}={v}")]
    return args


def paretobench_eval(main, capsys, data: Path, cfg: dict) -> dict:
    """``paretobench eval --json`` on ``data`` with the export's settings."""
    capsys.readouterr()
    assert main(["eval", "--data", str(data), *eval_args(cfg), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def reference_predictions(cfg: dict, samples) -> list[str]:
    """The answers of paretobench's batched evaluation under the export's settings."""
    from paretobench.measure import evaluate
    from paretobench.harnesses.vlmeval import PrunedModel

    pruned = PrunedModel(cfg, device="cpu")
    result = evaluate(pruned.loaded.model, pruned.loaded.processor, samples, schedule=pruned.schedule,
                      pruner=pruned.pruner, max_new_tokens=pruned.max_new_tokens, batch_size=32)  # fmt: skip
    return [p.strip() for p in result.predictions]
