"""Training checkpoints: the whole state in one folder, so an interrupted run resumes exactly."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch

from paretobench.training.config import TrainingConfig


class Checkpoint:
    """The whole training state in one folder (``state.pt`` and the run's ``config.json``),
    written every ``every`` steps of either stage, so that an interrupted run resumes exactly
    where it stopped: weights, the stage's heads and probes, the optimiser, both random
    generators, the history and the time spent so far. Written to a temporary file first, then
    renamed, so a kill while saving leaves the previous checkpoint whole."""

    NAME = "state.pt"

    def __init__(self, folder: str, every: int):
        self.folder = Path(folder) if folder else None
        self.every = every
        if self.folder is not None and every < 1:
            raise ValueError(f"checkpoint_every {every} must be at least 1")

    def due(self, step: int) -> bool:
        return self.folder is not None and step % self.every == 0

    def load(self) -> dict | None:
        if self.folder is None or not (self.folder / self.NAME).is_file():
            return None
        return torch.load(self.folder / self.NAME, map_location="cpu", weights_only=False)

    def save(self, cfg: TrainingConfig, state: dict) -> None:
        if self.folder is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")
        tmp = self.folder / (self.NAME + ".tmp")
        torch.save(state, tmp)
        tmp.replace(self.folder / self.NAME)


def _cpu(state_dict: dict) -> dict:
    return {k: v.detach().cpu().clone() if isinstance(v, torch.Tensor) else v for k, v in state_dict.items()}


def _optimiser_state(opt) -> dict:
    sd = opt.state_dict()
    return {"state": {k: _cpu(v) for k, v in sd["state"].items()}, "param_groups": sd["param_groups"]}


def _snapshot(stage: int, step: int, model, modules: dict, opt, rng, extra: dict) -> dict:
    """What ``Checkpoint.save`` keeps at ``step`` of ``stage`` (1 or 2)."""
    return {"stage": stage, "step": step, "model": _cpu(model.state_dict()),
            "modules": {k: _cpu(m.state_dict()) for k, m in modules.items()},
            "optimiser": None if opt is None else _optimiser_state(opt),
            "rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(), **extra}  # fmt: skip


def _restore(saved: dict, model, modules: dict, opt, rng) -> None:
    model.load_state_dict(saved["model"])
    for k, m in modules.items():
        m.load_state_dict(saved["modules"][k])
    if opt is not None:
        opt.load_state_dict(saved["optimiser"])
    rng.bit_generator.state = saved["rng"]
    torch.set_rng_state(saved["torch_rng"])
