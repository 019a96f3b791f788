import subprocess
import sys

import pytest

from paretobench.registry import DATASETS, MODELS, Registry, RegistryError


def test_unknown_name_suggests_the_closest():
    with pytest.raises(RegistryError, match="unknown model 'tiny-lava'; did you mean 'tiny-llava'?"):
        MODELS.get("tiny-lava")
    known = "synth8, synth8-native, synth8-native-train, synth8-train"
    with pytest.raises(RegistryError, match=rf"unknown dataset 'mmbench' \(known: {known}\)"):
        DATASETS.get("mmbench")


def test_lazy_entries_import_on_use():
    r = Registry("thing")
    r.register("dumps", "json:dumps")
    r.register("path", "os.path:join")

    @r.register("local")
    def local():
        return 1

    import json
    import os

    assert r.get("dumps") is json.dumps and r.get("path") is os.path.join and r.get("local") is local
    with pytest.raises(RegistryError, match="already registered"):
        r.register("dumps", "json:loads")


def test_import_is_light():
    code = "import sys, paretobench, paretobench.registry, paretobench.cli; paretobench.cli.build_parser(); "
    code += "print(sorted(m for m in ('torch', 'transformers', 'PIL', 'numpy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_help_lists_the_commands():
    out = subprocess.run([sys.executable, "-m", "paretobench.cli", "--help"], capture_output=True, text=True).stdout
    for cmd in ("data", "train-embedded", "eval", "model-card", "list"):
        assert cmd in out


def test_pruner_parameters_reach_the_constructor_with_their_types_and_clear_errors():
    from paretobench.registry import RegistryError, build_pruner, parse_params

    p = build_pruner("sparsevlm", parse_params(["recycle=0", "positions=keep"]))
    assert (p.recycle, p.positions) == (0.0, "keep")
    assert p.config() == {"name": "sparsevlm", "version": p.version, "recycle": 0.0, "positions": "keep"}
    assert build_pruner("random", {"seed": "7"}).seed == 7
    with pytest.raises(RegistryError, match="no parameter 'recylce'; did you mean 'recycle'"):
        build_pruner("sparsevlm", {"recylce": "0"})
    with pytest.raises(RegistryError, match="valid: none"):
        build_pruner("fastv", {"k": "2"})
    with pytest.raises(RegistryError, match="not a valid int"):
        build_pruner("random", {"seed": "x"})
    with pytest.raises(RegistryError, match="KEY=VALUE"):
        parse_params(["recycle"])
    with pytest.raises(ValueError, match="positions"):  # the pruner's own check of the value
        build_pruner("pyramiddrop", {"positions": "gapped"})


def test_another_package_registers_a_pruner_through_an_entry_point(tmp_path):
    """An installed package that names a module under ``paretobench.pruners`` adds its pruner
    without editing paretobench (a real distribution on the path, found by importlib.metadata)."""
    (tmp_path / "myprune.py").write_text(
        "from paretobench.registry import PRUNERS\nfrom pruners.base import Pruner\n\n"
        "@PRUNERS.register('mine', doc='the first visual tokens')\nclass Mine(Pruner):\n    name = 'mine'\n\n"
        "PRUNERS.register('notapruner', 'json:JSONDecoder')\n"
    )
    info = tmp_path / "myprune-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: myprune\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[paretobench.pruners]\nmine = myprune\n")
    code = ("from paretobench.registry import PRUNERS, RegistryError, build_pruner\n"
            "print(PRUNERS.doc('mine'), build_pruner('mine').config())\n"
            "try:\n    PRUNERS.get('notapruner')\nexcept RegistryError as e:\n    print(e)\n")  # fmt: skip
    env = {**__import__("os").environ, "PYTHONPATH": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert "the first visual tokens {'name': 'mine', 'version': 1}" in out
    assert "pruner 'notapruner' is registered as JSONDecoder, which is not a Pruner" in out
