import json

from paretobench.cli import main


def test_data_synth_json(tmp_path, capsys):
    assert main(["data", "synth", "--out", str(tmp_path), "--n", "2", "--seed", "4", "--json"]) == 0
    manifest = json.loads(capsys.readouterr().out)
    assert manifest["files"]["synth8_word.tsv"] == 2 and manifest["seed"] == 4
    assert (tmp_path / "synth8_word.tsv").is_file()


def test_eval_json_on_a_model_folder(tiny_model_dir, synth_dir, capsys):
    assert main(["eval", "--model", str(tiny_model_dir), "--data", str(synth_dir), "--limit", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n"] == 16 and set(out["per_category"]) == {
        "colour", "shape", "count", "relation", "exist", "chart", "char", "word"
    }  # fmt: skip
    assert 0.0 <= out["accuracy"] <= 1.0
    assert out["tokens"]["visual"] == 144 and out["flops"]["llm_prefill"] > 0


def test_bad_input_is_reported_not_raised(tmp_path, tiny_model_dir, capsys):
    assert main(["eval", "--model", str(tmp_path / "missing"), "--data", "synth8", "--limit", "1"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["eval", "--model", str(tiny_model_dir), "--data", "synth9"]) == 2
    assert "did you mean 'synth8'" in capsys.readouterr().err


def test_list_json(capsys):
    assert main(["list", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert "tiny-llava" in out["models"] and "synth8" in out["datasets"]
