"""The public API alone, as a user's script would call it: load, evaluate, run, frontier, report."""

import paretobench as pb


def test_the_public_api_runs_a_search_and_reports_it(tiny_model_dir, synth_dir, tmp_path):
    assert set(pb.__all__) == {"load", "evaluate", "run", "frontier", "report"}
    model = pb.load(str(tiny_model_dir), device="cpu")
    unpruned = pb.evaluate(model, str(synth_dir), limit=2)
    pruned = pb.evaluate(model, str(synth_dir), pruner="fastv", budget=0.6, limit=2)
    assert unpruned["flops"]["fraction"] == 1.0 and 0.55 <= pruned["flops"]["fraction"] <= 0.6
    assert pruned["pruner"]["name"] == "fastv" and len(pruned["tokens"]["live_visual_per_layer"]) == 2
    out = tmp_path / "runs"
    common = dict(model=str(tiny_model_dir), data=str(synth_dir), limit=2, budgets=(0.5,), out=out,
                  progress=False, batch_size=8)  # fmt: skip
    grid = pb.run("grid", n=6, **common)
    rand = pb.run("random", n=4, **common)
    again = pb.run("random", n=4, **common)
    assert again.computed == 0 and again.name == rand.name  # the store answers a repeated search
    distance = pb.frontier(rand.folder, vs=grid.folder, bootstrap=0)
    assert distance["igd_plus"] >= 0 and "hv_ratio" in distance
    assert pb.frontier(grid.folder)["evaluations"] == len(grid.evaluations)
    made = pb.report("table2", out, out=tmp_path / "tables")
    assert (tmp_path / "tables" / "table2.md").is_file() and made["report"] == "table2"
