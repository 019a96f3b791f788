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
    assert out["dtype"] == "float32" and out["device"] in ("cpu", "cuda:0")  # --device auto


def test_eval_in_bfloat16_and_on_a_device_that_is_not_there(tiny_model_dir, synth_dir, capsys):
    args = ["eval", "--model", str(tiny_model_dir), "--data", str(synth_dir), "--limit", "1", "--json"]
    assert main(args + ["--dtype", "bfloat16", "--device", "cpu"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["dtype"] == "bfloat16" and out["device"] == "cpu" and out["n"] == 8
    assert main(args + ["--device", "cuda:99"]) == 2  # no 100th GPU anywhere
    assert "cannot put the model on device 'cuda:99'" in capsys.readouterr().err


def test_bad_input_is_reported_not_raised(tmp_path, tiny_model_dir, capsys):
    assert main(["eval", "--model", str(tmp_path / "missing"), "--data", "synth8", "--limit", "1"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["eval", "--model", str(tiny_model_dir), "--data", "synth9"]) == 2
    assert "did you mean 'synth8'" in capsys.readouterr().err


def test_list_json(capsys):
    assert main(["list", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert "tiny-llava" in out["models"] and "synth8" in out["datasets"]


def test_pruned_eval_reports_flops_fraction_and_live_tokens(tiny_model_dir, synth_dir, capsys):
    args = ["eval", "--model", str(tiny_model_dir), "--data", str(synth_dir), "--limit", "1", "--json"]
    assert main(args + ["--pruner", "random", "--schedule", "1,0.25"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["tokens"]["live_visual_per_layer"] == [144, 36]
    assert out["pruner"] == {"name": "random", "version": 1, "seed": 0} and out["schedule"] == [1.0, 0.25]
    assert 0.5 < out["flops"]["fraction"] < 1.0
    assert main(args + ["--budget", "0.6"]) == 0  # fastv, one step at its default layer (1 of 2 here)
    out = json.loads(capsys.readouterr().out)
    assert out["flops"]["fraction"] <= 0.6 + 0.02 and out["pruner"]["name"] == "fastv"


def test_flops_json_needs_only_the_config(tiny_model_dir, capsys):
    assert main(["flops", "--model", str(tiny_model_dir), "--schedule", "1:0.5", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["visual_per_layer"] == [144, 72] and out["flops"] == sum(out["flops_per_layer"])
    assert 0 < out["fraction"] < 1 and out["paper_eq2"]["fraction"] < 1


def test_bad_schedules_and_budgets_are_one_line_errors(tiny_model_dir, synth_dir, capsys):
    base = ["eval", "--model", str(tiny_model_dir), "--data", str(synth_dir), "--limit", "1"]
    cases = [
        (["--schedule", "1,0.5,0.5"], "2 decoder layers"),
        (["--schedule", "1,1.5"], "outside [0, 1]"),
        (["--schedule", "0.5,1"], "never increases"),
        (["--schedule", "1,nan"], "finite"),
        (["--budget", "0.01"], "text-only floor"),
        (["--pruner", "fastvv", "--schedule", "1,0.5"], "did you mean 'fastv'"),
    ]
    for extra, message in cases:
        assert main(base + extra) == 2, extra
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1 and "Traceback" not in err, err


def test_an_architecture_without_an_adapter_is_a_one_line_error(tmp_path, synth_dir, capsys):
    """LLaVA with a Qwen2 decoder is a real transformers model, but no pruning adapter covers it."""
    from paretobench.models.tiny_llava import build_model, build_processor

    processor = build_processor()
    model = build_model(processor, seed=1, text_layers=2, text_hidden=32, vision_layers=1)
    config = model.config.to_dict()
    config["text_config"]["model_type"] = "qwen2"
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    LlavaForConditionalGeneration(LlavaConfig.from_dict(config)).save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    capsys.readouterr()  # saving prints its own progress
    args = ["eval", "--model", str(tmp_path), "--data", str(synth_dir), "--limit", "1", "--pruner", "fastv",
            "--schedule", "1,0.5"]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "no pruning adapter" in err and "'qwen2' decoder" in err and err.count("\n") == 1, err
