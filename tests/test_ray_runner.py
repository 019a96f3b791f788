"""The Ray runner on a real local Ray cluster: a killed actor, a cluster too small for --workers,
and VisPCO training on an actor."""

import os
import signal

import pytest
import torch

from paretobench.cli import main
from paretobench.evaluator import Evaluator, Workload
from paretobench.runners import LocalRunner, RayRunner
from paretobench.schedule import PruningSchedule

# what an evaluation's result is (its timings aside)
RESULT = ("key", "flops", "flops_fraction", "accuracy", "overall", "per_category", "correct", "live_visual")


def _results(evaluations):
    return {e.key: tuple(getattr(e, f) for f in RESULT) for e in evaluations}


@pytest.fixture(scope="module")
def workload(tiny_model_dir, synth_dir):
    return Workload(model=str(tiny_model_dir), data=(str(synth_dir),), limit=1, batch_size=8, threads=1)


def test_a_chunk_whose_actor_is_killed_mid_run_is_rerun_on_another_actor(workload):
    evaluator = Evaluator(workload)
    layers = evaluator.space.layers
    schedules = [PruningSchedule.steps(layers, {1: k}) for k in (0.9, 0.7, 0.5, 0.3, 0.2, 0.1)]
    want = _results(LocalRunner(evaluator).call(lambda ev: ev.evaluate(schedules)))
    runner = RayRunner(workload, workers=2)
    try:
        pids = runner.pids()
        got, returned = {}, []
        for cid, evaluations in runner.run([(i, [s]) for i, s in enumerate(schedules)]):
            if not returned:  # both actors are busy now, with 4 chunks still to hand out
                os.kill(pids[0], signal.SIGKILL)
            returned.append(cid)
            got.update(_results(evaluations))
        assert runner.lost == 1  # the killed actor's chunk, run again
        after = runner.pids()
        assert len(after) == 2 and pids[0] not in after and pids[1] in after  # a new actor took its place
    finally:
        runner.close()
    assert sorted(returned) == list(range(6))  # every chunk came back once
    assert got == want


@pytest.fixture
def gpu_cluster():
    """A local Ray cluster declaring one GPU, as a one-GPU machine's does."""
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1",
             _temp_dir=f"/tmp/ray-{os.getuid()}", configure_logging=False)  # fmt: skip
    yield
    ray.shutdown()


def test_more_workers_than_the_cluster_places_is_a_one_line_error(gpu_cluster, tiny_model_dir, synth_dir, tmp_path,
                                                                   capsys):  # fmt: skip
    args = ["run", "--searcher", "random", "--model", str(tiny_model_dir), "--data", str(synth_dir), "--limit", "1",
            "--n", "2", "--runner", "ray", "--json"]  # fmt: skip
    assert main([*args, "--workers", "2", "--out", str(tmp_path / "gpu")]) == 2
    err = capsys.readouterr().err
    assert "each Ray worker holds a GPU and the cluster has 1; give --workers 1 or fewer" in err
    assert err.count("\n") == 1
    assert main([*args, "--workers", "3", "--device", "cpu", "--out", str(tmp_path / "cpu")]) == 2
    err = capsys.readouterr().err
    assert "each Ray worker takes a CPU and the cluster has 2; give --workers 2 or fewer" in err
    assert err.count("\n") == 1
    assert not (tmp_path / "gpu").exists() and not (tmp_path / "cpu").exists()  # refused before the store
    import ray

    assert ray.available_resources().get("GPU") == 1  # no actor was started


def test_vispco_trains_on_a_ray_actor_as_it_does_in_this_process(workload, synth_dir, tmp_path):
    from searchers.vispco import PREDICTOR_FILE, VisPCO

    def prepared(runner_of, folder):
        evaluator = Evaluator(workload)
        searcher = VisPCO(evaluator.space, n=20, budgets=(0.5,), train=str(synth_dir / "synth8_train.tsv"),
                          steps=6, inner=2, probe=8, batch_size=4)  # fmt: skip
        runner = runner_of(evaluator)
        try:
            searcher.prepare(evaluator, folder, progress=False, runner=runner)
        finally:
            runner.close()
        return evaluator, searcher

    threads = torch.get_num_threads()
    try:
        _, local = prepared(LocalRunner, tmp_path / "local")
    finally:
        torch.set_num_threads(threads)  # the local evaluator set its workload's 1
    evaluator, remote = prepared(lambda ev: RayRunner(ev.workload, workers=1), tmp_path / "ray")
    assert "model" not in evaluator._loaded  # trained on the actor: this process never loaded the model
    assert not remote.loaded and (tmp_path / "ray" / PREDICTOR_FILE).is_file()  # saved here
    saved = [torch.load(tmp_path / f / PREDICTOR_FILE, weights_only=True)["state_dict"] for f in ("local", "ray")]
    assert saved[0].keys() == saved[1].keys() and all(torch.equal(saved[0][k], saved[1][k]) for k in saved[0])
    assert remote.proposals == local.proposals
    assert remote.trained.log == local.trained.log
