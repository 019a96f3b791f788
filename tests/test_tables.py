"""Reports rebuilt from stored runs: a grid, a random and two VisPCO runs on a tiny random model."""

import csv
import json

import pytest

from paretobench.cli import main
from paretobench.tables import REPORTS, build
from paretobench.schedule import PruningSchedule


@pytest.fixture(scope="module")
def results(tmp_path_factory, tiny_model_dir, synth_dir):
    from paretobench.run_loop import RunConfig, run

    out = tmp_path_factory.mktemp("results")
    common = dict(pruner="fastv", model=str(tiny_model_dir), data=(str(synth_dir),), limit=2, out=str(out), batch_size=8)
    run(RunConfig(searcher="grid", n=8, budgets=(0.5, 0.7), **common), progress=False)
    run(RunConfig(searcher="random", n=8, budgets=(0.5, 0.7), **common), progress=False)
    for kernel in ("psigmoid", "ledge"):
        params = {"kernel": kernel, "train": str(synth_dir / "synth8_train.tsv"), "steps": 3, "inner": 2, "probe": 8,
                  "batch_size": 4, "sweep": [0.5, 0.7]}  # fmt: skip
        run(RunConfig(searcher="vispco", n=8, budgets=(0.5,), params=params, **common), progress=False)
    return out


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_table2_lists_every_run_against_the_grid_frontier(results, tmp_path):
    made = build("table2", results, tmp_path)
    rows = {r["searcher"]: r for r in _rows(made["csv"])}
    assert set(rows) == {"grid", "random-8", "vispco (psigmoid)", "vispco (ledge)"}  # Random-N named by its N
    assert float(rows["grid"]["igd_plus"]) == 0.0 and float(rows["grid"]["hv_ratio"]) == pytest.approx(1.0)
    for name, r in rows.items():
        assert float(r["igd_plus"]) >= 0 and float(r["seconds"]) > 0
        assert float(r["search_seconds"]) > 0
    # the search time is the stored evaluations' compute seconds (plus VisPCO's training), not the
    # wall time of whichever command last wrote the folder
    from paretobench.results import search_time, stored_runs

    grid = next(r for r in stored_runs(results) if r.searcher == "grid")
    assert float(rows["grid"]["search_seconds"]) == pytest.approx(sum(e.seconds for e in grid.run.evaluations))
    assert search_time(grid) == pytest.approx(float(rows["grid"]["search_seconds"]))
    assert "grid-fastv" in (tmp_path / "table2.md").read_text()


def test_table1_compares_sampled_schedules_with_vispco_per_budget(results, tmp_path):
    rows = _rows(build("table1", results, tmp_path)["csv"])
    sampled = [r for r in rows if r["method"] == "sampled"]
    assert sampled and all(float(r["flops"]) <= float(r["budget"]) + 0.005 for r in sampled)
    assert all(0 <= float(r["avg"]) <= 1 for r in rows)
    assert {r["method"] for r in rows} <= {"sampled", "vispco"}


def test_table3_is_table1_at_half_budget_per_model(results, tmp_path):
    t1 = [r for r in _rows(build("table1", results, tmp_path)["csv"]) if r["pruner"] == "fastv" and r["budget"] == "0.5"]
    t3 = _rows(build("table3", [results], tmp_path)["csv"])
    assert [r["method"] for r in t3] == [r["method"] for r in t1] and t3
    for a, b in zip(t1, t3):
        assert a["avg"] == b["avg"] and a["n"] == b["n"]
    assert {r["model"] for r in t3} == {json.loads((next(results.glob("grid-*")) / "config.json").read_text())["model"]}
    with pytest.raises(ValueError, match="table1 reads one results folder"):
        build("table1", [results, results], tmp_path)


def test_table3_gives_vispcos_igd_plus_to_the_models_grid_and_fig3_draws_every_model(results, tmp_path):
    from paretobench.results import _default_kernel_run, _vispco, compare, reference, stored_runs

    runs = stored_runs(results)
    ref = reference(runs, "fastv")
    vis = _default_kernel_run(_vispco(runs, "fastv", ref.config["data_key"]))
    rows = _rows(build("table3", [results], tmp_path)["csv"])
    by_method = {r["method"]: r for r in rows}
    assert by_method["sampled"]["igd_plus_to_grid"] == ""  # the grid's own schedules: no distance
    assert float(by_method["vispco"]["igd_plus_to_grid"]) == pytest.approx(compare(vis.run, ref.run, bootstrap=0)["igd_plus"])
    assert by_method["vispco"]["grid"] == ref.run.name
    made = build("fig3-models", [results, results], tmp_path)
    assert (tmp_path / "fig3-models.png").stat().st_size > 0
    assert [d["vispco"] for d in made["runs"]] == [vis.run.name] * 2
    with pytest.raises(ValueError, match="did you mean 'fig3-models'"):
        build("fig3-model", [results], tmp_path)


def test_kernel_table_gap_and_figures(results, tmp_path):
    t5 = _rows(build("table5", results, tmp_path)["csv"])
    assert sorted(r["kernel"] for r in t5) == ["ledge", "psigmoid"]
    gap = _rows(build("gap", results, tmp_path)["csv"])
    assert len(gap) == 4  # two runs x budgets 0.5, 0.7
    for r in gap:
        assert float(r["realised_flops"]) <= float(r["budget"]) + 0.01
        assert float(r["flops_gap"]) == pytest.approx(float(r["realised_flops"]) - float(r["relaxed_flops"]))
    for name in ("fig2", "fig3", "fig6", "fig7"):
        build(name, results, tmp_path)
    for png in ("fig2-fastv.png", "fig3-fastv.png", "fig6.png", "fig7.png"):
        data = (tmp_path / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    curves = _rows(tmp_path / "fig6.csv")
    assert {c["curve"] for c in curves} == {"ledge", "psigmoid"}


def test_table4_from_the_hardware_benchmark(results, tmp_path, synth_dir):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parent.parent / "benchmarks" / "hardware.py"
    spec = importlib.util.spec_from_file_location("hardware", path)
    hardware = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hardware)
    vispco = next(p for p in results.iterdir() if p.name.startswith("vispco-fastv"))
    out = tmp_path / "hardware-tiny.json"
    assert hardware.main(["--vispco", str(vispco), "--data", str(synth_dir), "--questions", "2", "--rounds", "2",
                          "--limit", "1", "--new-tokens", "3", "--out", str(out)]) == 0  # fmt: skip
    rows = _rows(build("table4", results, tmp_path)["csv"])
    assert [r["method"] for r in rows] == ["unpruned", "FastV", "FastV + VisPCO"]
    pick = json.loads((vispco / "summary.json").read_text())["picks"]["0.5"]
    assert rows[2]["schedule"] == str(PruningSchedule(tuple(pick["schedule"])))
    assert float(rows[0]["flops_fraction"]) == 1.0 and float(rows[2]["flops_fraction"]) <= 0.5 + 1e-6
    assert all(float(r["ttft_ms"]) > 0 and float(r["tokens_per_s"]) > 0 for r in rows)
    assert "CPU" in rows[0]["device"]
    assert f"| FastV + VisPCO ({vispco.name}) |" in (tmp_path / "table4.md").read_text()  # the pick's run


def test_report_command_all_and_bad_names(results, tmp_path, capsys):
    assert main(["report", "all", "--results", str(results), "--out", str(tmp_path), "--json"]) == 0
    made = json.loads(capsys.readouterr().out)["reports"]
    # table4 is built from hardware measurements, and this folder has none: skipped, said so
    assert [m["report"] for m in made] == [r for r in REPORTS if r != "table4"]
    assert main(["report", "tabel2", "--results", str(results)]) == 2
    assert "did you mean 'table2'" in capsys.readouterr().err
    assert main(["report", "table2", "--results", str(tmp_path / "nothing")]) == 2
    assert "no finished runs" in capsys.readouterr().err


def test_landscape_holdout_remeasures_the_stored_extremes_on_unseen_questions(results, tmp_path, synth_dir):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parent.parent / "benchmarks" / "landscape_holdout.py"
    spec = importlib.util.spec_from_file_location("landscape_holdout", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    stored, (data, limit, _) = mod.stored_schedules(results, "fastv", 0.5)
    assert limit == 2 and len(stored) >= 2
    assert all(0.45 < e.flops_fraction <= 0.5 for e in stored)
    assert len({tuple(e.schedule) for e in stored}) == len(stored)  # each schedule once
    out = tmp_path / "holdout.json"
    assert mod.main(["--results", str(results), "--k", "1", "--out", str(out), "--json"]) == 0
    got = json.loads(out.read_text())
    assert got["selection_questions"] == 16 and got["heldout_questions"] == 32  # 6 per family, 2 seen
    best, worst = got["rows"]
    assert best["selection_accuracy"] == max(e.accuracy for e in stored)
    assert worst["selection_accuracy"] == min(e.accuracy for e in stored)
    assert got["spread_heldout_points"] == pytest.approx(100 * (best["heldout_accuracy"] - worst["heldout_accuracy"]))
    with pytest.raises(ValueError, match="holds no run of sparsevlm"):
        mod.stored_schedules(results, "sparsevlm", 0.5)


def test_readability_benchmark_probes_the_reading_families(tiny_model_dir, synth_dir, capsys):
    import importlib.util
    from pathlib import Path

    from paretobench.data.datasets import load_dataset
    from paretobench.training.card import READABLE

    path = Path(__file__).parent.parent / "benchmarks" / "readability.py"
    spec = importlib.util.spec_from_file_location("readability", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main([str(tiny_model_dir), "--data", str(synth_dir), "--steps", "5", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    n = sum(s.category in ("char", "word") for s in load_dataset(str(synth_dir)).samples)
    assert got["samples"] == n > 0
    read = got["read"][str(tiny_model_dir)]
    assert set(read) == {"tower", "projector"} and all(set(r) == set(READABLE) for r in read.values())
    assert all(0 <= a <= 1 for r in read.values() for a in r.values())
    with pytest.raises(SystemExit):
        mod.main([str(tiny_model_dir), "--data", str(synth_dir), "--families", "nosuch"])


def test_frontier_plots_every_run_over_the_reference_in_one_figure(results, tmp_path):
    runs = sorted(p for p in results.iterdir() if (p / "config.json").is_file())
    grid = next(p for p in runs if p.name.startswith("grid-"))
    others = [str(p) for p in runs if p != grid]
    plot = tmp_path / "frontiers.png"
    assert main(["frontier", *others, "--vs", str(grid), "--plot", str(plot), "--bootstrap", "0", "--json"]) == 0
    data = plot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert main(["frontier", others[0], "--plot", str(plot)]) == 2  # a plot needs a reference
