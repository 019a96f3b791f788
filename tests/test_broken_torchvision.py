"""A torchvision that is installed but does not import (built for another torch: what
``pip install torchvision`` gives next to a CPU torch) must not stop models from loading."""

import json
import os
import subprocess
import sys

import pytest


@pytest.fixture(scope="module")
def broken_torchvision(tmp_path_factory):
    """A site folder holding a torchvision, with its distribution metadata, whose import fails
    as a torchvision built for another torch does."""
    site = tmp_path_factory.mktemp("site")
    (site / "torchvision").mkdir()
    (site / "torchvision" / "__init__.py").write_text(
        'raise RuntimeError("operator torchvision::nms does not exist")\n')  # fmt: skip
    (site / "torchvision-0.28.0.dist-info").mkdir()
    (site / "torchvision-0.28.0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: torchvision\n"
                                                                     "Version: 0.28.0\n")  # fmt: skip
    return site


def _cli(site, *args):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}  # fmt: skip
    return subprocess.run([sys.executable, "-m", "paretobench.cli", *args], env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip


def test_the_broken_torchvision_is_what_transformers_fails_on(broken_torchvision):
    """The simulation is faithful: transformers takes it as installed and cannot import a processor."""
    code = "from transformers import AutoProcessor"
    env = {**os.environ, "PYTHONPATH": str(broken_torchvision)}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "Could not import module 'AutoProcessor'" in r.stderr


def test_models_load_and_evaluate_with_pil_processors(broken_torchvision, tiny_model_dir, synth_dir, tmp_path):
    r = _cli(broken_torchvision, "eval", "--model", str(tiny_model_dir), "--data", str(synth_dir), "--limit", "1",
             "--batch-size", "8", "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["n"] == 8
    note = [line for line in r.stderr.splitlines() if "torchvision" in line]
    assert len(note) == 1 and "operator torchvision::nms does not exist" in note[0] and "PIL" in note[0]
    r = _cli(broken_torchvision, "run", "--searcher", "random", "--model", str(tiny_model_dir), "--data",
             str(synth_dir), "--limit", "1", "--n", "2", "--budgets", "0.5", "--batch-size", "8", "--out",
             str(tmp_path), "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["evaluations"] == 2
