"""VisPCO: kernels, relaxed FLOPs against the analytic count, the augmented Lagrangian worked by
hand, resampling, and the searcher end to end on a tiny random model through the run loop."""

import json
import math

import pytest
import torch

from paretobench.flops import DecoderShape
from paretobench.schedule import PruningSchedule, ScoreCost, flops_fraction, schedule_flops
from searchers.vispco.kernels import KERNELS, kernel
from searchers.vispco.objective import AugmentedLagrangian, relaxed_fraction
from searchers.vispco.predictor import RatioPredictor
from searchers.vispco.session import equalised_weights, kl_to_teacher

SHAPE = DecoderShape(layers=8, hidden=64, heads=4, kv_heads=2, head_dim=16, intermediate=172, vocab=100)


# ----------------------------------------------------------------------------- kernels
@pytest.mark.parametrize("name", sorted(KERNELS))
def test_every_kernel_gives_non_increasing_keeps_in_range_with_gradients(name):
    k = kernel(name)
    u = torch.randn(5, k.n_params(8), generator=torch.Generator().manual_seed(0), requires_grad=True)
    keep = k(u, 8)
    assert keep.shape == (5, 8)
    assert (keep >= 0).all() and (keep <= 1).all()
    assert (keep[:, 1:] <= keep[:, :-1] + 1e-6).all()
    keep.sum().backward()
    assert torch.isfinite(u.grad).all() and u.grad.abs().sum() > 0


def test_kernels_follow_the_papers_formulas():
    i = torch.arange(8.0)
    p = {"k": torch.tensor([2.5]), "r": torch.tensor([0.3])}
    steep = KERNELS["psigmoid"].curve(p, 8)[0]
    assert torch.allclose(steep, 1 + (0.3 - 1) / (1 + torch.exp(-10 * (i - 2.5))))
    assert steep[:2].min() > 0.99 and steep[4:].max() < 0.31  # a step at layer 3: single-layer pruning
    gentle = KERNELS["gentle"].curve(p, 8)[0]
    assert torch.allclose(gentle, 1 + (0.3 - 1) / (1 + torch.exp(-(i - 2.5))))
    assert torch.allclose(KERNELS["exponential"].curve(p, 8)[0], 0.3 * torch.exp(-2.5 * i))
    assert torch.allclose(KERNELS["linear"].curve(p, 8)[0], 0.3 - 2.5 * i)
    ms = kernel("multistep", steps=2).curve(p, 8)[0]
    layer = i + 1  # Eq. 17 counts layers from 1: its steps sit at layers 2 and 6 of 1..8
    want = 1 - sum((1 - 0.3) / 2 / (1 + torch.exp(-2.5 * (layer - (2 * j - 1) * 8 / 4))) for j in (1, 2))
    assert torch.allclose(ms, want)
    assert ms[1] == pytest.approx(1 - 0.7 / 4, abs=0.01)  # half of the first step at the paper's layer 2
    s = {f"s{j}": torch.tensor([0.9]) for j in range(8)}
    assert torch.allclose(KERNELS["free"].curve(s, 8)[0], 0.9 ** (i + 1))
    ledge = KERNELS["ledge"].curve({"k": torch.tensor([3.5]), "s": torch.tensor([0.75]), "f": torch.tensor([0.1])}, 8)[0]
    assert torch.allclose(ledge, 0.75 * (1 + (0.1 - 1) / (1 + torch.exp(-10 * (i - 3.5)))))
    assert ledge[:3].min() > 0.74 and ledge[5:].max() < 0.08  # 75% through layer 3, then 7.5%
    with pytest.raises(ValueError, match="did you mean 'linear'"):
        kernel("linaer")


def test_the_predictor_depends_on_the_budget_once_trained_a_step():
    pred = RatioPredictor(16, 8, kernel("psigmoid"))
    pooled = torch.randn(4, 32)
    budgets = torch.tensor([0.2, 0.4, 0.6, 0.8])
    before = pred(pooled, budgets)
    assert torch.allclose(before, before[:1].expand(4, 8))  # zero-initialised head: one curve for all
    opt = torch.optim.SGD(pred.parameters(), lr=0.5)
    for _ in range(20):  # pull the mean keep towards the budget
        loss = ((pred(pooled, budgets).mean(1) - budgets) ** 2).sum()
        opt.zero_grad(), loss.backward(), opt.step()
    after = pred(pooled, budgets).mean(1)
    assert (after[1:] > after[:-1]).all()  # more budget, more tokens


# ----------------------------------------------------------------------------- objective
@pytest.mark.parametrize("mode", ["total", "prunable"])
def test_relaxed_flops_equal_the_analytic_count_at_whole_tokens(mode):
    score = ScoreCost(rows="last")
    schedules = [PruningSchedule((1.0, 1.0, 0.5, 0.5, 0.25, 0.25, 0.125, 0.125)),
                 PruningSchedule((1.0,) * 8), PruningSchedule((0.75,) + (0.5,) * 7)]  # fmt: skip
    keep = torch.tensor([s.keep for s in schedules], dtype=torch.float64, requires_grad=True)
    got = relaxed_fraction(SHAPE, keep, torch.tensor([40, 40, 40]), torch.tensor([144, 144, 144]), mode=mode,
                           score=score)  # fmt: skip
    for g, s in zip(got.tolist(), schedules):
        assert g == pytest.approx(flops_fraction(SHAPE, s, 40, 144, mode, score), rel=1e-9)
    got.sum().backward()
    assert (keep.grad > 0).all()  # every kept token costs
    # a point between whole counts lies between their costs
    mid = relaxed_fraction(SHAPE, torch.full((1, 8), 0.5 + 0.5 / 144), torch.tensor([40]), torch.tensor([144]))
    lo = schedule_flops(SHAPE, PruningSchedule((72 / 144,) * 8), 40, 144)
    hi = schedule_flops(SHAPE, PruningSchedule((73 / 144,) * 8), 40, 144)
    full = schedule_flops(SHAPE, PruningSchedule((1.0,) * 8), 40, 144)
    assert lo / full < float(mid) < hi / full


def test_augmented_lagrangian_worked_by_hand():
    al = AugmentedLagrangian(lam=10.0, alpha=2.0, beta=0.5, eps=0.01, bins=1)
    b, f = torch.tensor([0.5, 0.5]), torch.tensor([0.6, 0.4])
    # w = 0: z = max(0, -10 (0.5 - F)) = [1, 0]; term = (z^2 - 0) / 20 = [0.05, 0]
    assert al.penalty(b, f).tolist() == pytest.approx([0.05, 0.0])
    assert al.violation(b, f) == pytest.approx(0.0, abs=1e-7)  # one bin, mean excess 0: met on average
    f = torch.tensor([0.6, 0.45])
    # w = 0: z = max(0, -10 (0.5 - F)) = [1, 0]; term = (z^2 - 0) / 20 = [0.05, 0]
    assert al.penalty(b, f).tolist() == pytest.approx([0.05, 0.0])
    e = al.update(b, f)  # violation = max(0, mean(F - B)) = 0.025; first iteration: lambda stays
    assert e["violation"] == pytest.approx(0.025) and al.lam == 10.0
    assert al.w == pytest.approx([0.5])  # w <- mean(z) = mean([1, 0])
    # w = 0.5: z = max(0, 0.5 - 10 (0.5 - F)) = [1.5, 0]; term = (z^2 - w^2) / 20
    assert al.penalty(b, f).tolist() == pytest.approx([(1.5**2 - 0.25) / 20, -0.25 / 20])
    al.update(b, torch.tensor([0.58, 0.46]))  # violation 0.02 >= 0.5 * 0.025: lambda doubles, then w moves
    assert al.lam == 20.0
    assert al.w == pytest.approx([(0.5 + 20 * 0.08 + 0) / 2])
    al.update(b, torch.tensor([0.5, 0.5]))  # satisfied: lambda stays
    assert al.lam == 20.0
    # the gradient of the constraint term is the multiplier z
    f = torch.tensor([0.6], requires_grad=True)
    al2 = AugmentedLagrangian(lam=10.0, bins=1, w=[0.3])
    al2.penalty(torch.tensor([0.5]), f).sum().backward()
    assert f.grad.item() == pytest.approx(0.3 + 10 * 0.1)


def test_augmented_lagrangian_equality_form_worked_by_hand():
    al = AugmentedLagrangian(lam=10.0, bins=1, constraint="equality")
    b = torch.tensor([0.5, 0.5])
    # w = 0: term = -w h + lam/2 h^2 with h = B - F = [-0.1, 0.1]: [0.05, 0.05]; unused budget costs too
    assert al.penalty(b, torch.tensor([0.6, 0.4])).tolist() == pytest.approx([0.05, 0.05])
    assert al.violation(b, torch.tensor([0.45, 0.45])) == pytest.approx(0.05)  # |mean(F - B)|
    al.update(b, torch.tensor([0.45, 0.45]))  # w <- w - lam (B - F) = -0.5 (may be negative)
    assert al.w == pytest.approx([-0.5])
    f = torch.tensor([0.45], requires_grad=True)
    al.penalty(torch.tensor([0.5]), f).sum().backward()  # d/dF = w - lam h = -0.5 - 0.5
    assert f.grad.item() == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="constraint"):
        AugmentedLagrangian(constraint="both")


def test_one_multiplier_per_budget_bin():
    al = AugmentedLagrangian(lam=10.0, bins=2, lo=0.2, hi=0.8)
    al.update(torch.tensor([0.3, 0.7]), torch.tensor([0.4, 0.7]))  # only the low bin is over budget
    assert al.w == pytest.approx([1.0, 0.0])


def test_kl_is_the_papers_direction_by_default_and_the_other_by_name():
    t = torch.randn(3, 11)
    assert kl_to_teacher(t, t).abs().max() < 1e-6
    s = t + torch.randn(3, 11)
    p, q = t.softmax(-1), s.softmax(-1)  # original (teacher), pruned (student)
    # Eq. 1: D_KL(softmax(pruned) || softmax(original)), worked by hand
    assert kl_to_teacher(s, t).tolist() == pytest.approx((q * (q / p).log()).sum(-1).tolist(), rel=1e-5)
    assert kl_to_teacher(s, t, "original-pruned").tolist() == pytest.approx((p * (p / q).log()).sum(-1).tolist(),
                                                                              rel=1e-5)  # fmt: skip
    assert kl_to_teacher(s, t).tolist() != pytest.approx(kl_to_teacher(s, t, "original-pruned").tolist(), rel=1e-3)


def test_equalised_weights_make_token_counts_uniform():
    counts = [16] * 80 + [136] * 15 + [256] * 5  # one size per third of the range
    w = equalised_weights(counts, bins=3)
    mass = {c: float(sum(wi for wi, ci in zip(w, counts) if ci == c)) for c in (16, 136, 256)}
    assert mass == pytest.approx({16: 1 / 3, 136: 1 / 3, 256: 1 / 3})
    # sizes that share a bin share its mass in proportion to their numbers
    w = equalised_weights([16] * 30 + [64] * 10 + [256] * 5, bins=3)
    assert [float(w[0] * 30), float(w[30] * 10), float(w[40] * 5)] == pytest.approx([0.375, 0.125, 0.5])
    assert equalised_weights([144] * 7).tolist() == pytest.approx([1 / 7] * 7)  # one size: uniform


# ----------------------------------------------------------------------------- the searcher
def test_vispco_without_a_model_says_what_it_needs():
    from searchers.base import SearchSpace
    from searchers.vispco import VisPCO

    s = VisPCO(SearchSpace(SHAPE, 40, 144, pruner="fastv"), n=8)
    with pytest.raises(RuntimeError, match="prepare"):
        s.ask()
    with pytest.raises(ValueError, match="unknown kernel"):
        VisPCO(SearchSpace(SHAPE, 40, 144), kernel="cubic")


def test_the_papers_configuration_is_one_setting_and_explicit_settings_still_win():
    from searchers.base import SearchSpace
    from searchers.vispco import VisPCO

    searcher = VisPCO(SearchSpace(SHAPE, 40, 144, pruner="fastv"), preset="paper")
    paper = searcher.config
    assert (paper.kernel, paper.lam, paper.alpha, paper.beta, paper.eps, paper.lr, paper.batch_size) == (
        "psigmoid", 100.0, 2.0, 0.5, 0.01, 4e-4, 16)
    assert (paper.temperature, paper.kl, paper.select) == (0.1, "pruned-original", "last")
    assert searcher.fill is False  # the predictor's own curve is the pick, as the official code prunes
    ours = VisPCO(SearchSpace(SHAPE, 40, 144, pruner="fastv"))
    assert ours.config.kernel != paper.kernel and ours.config.lr != paper.lr and ours.fill is True
    assert ours.identity() != VisPCO(SearchSpace(SHAPE, 40, 144, pruner="fastv"), fill=False).identity()
    mixed = VisPCO(SearchSpace(SHAPE, 40, 144, pruner="fastv"), preset="paper", kernel="multistep", lam=5.0, fill=True)
    assert (mixed.config.kernel, mixed.config.lam, mixed.config.lr, mixed.fill) == ("multistep", 5.0, 4e-4, True)
    with pytest.raises(ValueError, match="unknown preset 'papr'"):
        VisPCO(SearchSpace(SHAPE, 40, 144), preset="papr")


@pytest.fixture(scope="module")
def vispco_run(tmp_path_factory, tiny_model_dir, synth_dir):
    from paretobench.run_loop import RunConfig, run

    out = tmp_path_factory.mktemp("vispco")
    cfg = RunConfig(searcher="vispco", pruner="fastv", model=str(tiny_model_dir), data=(str(synth_dir),), limit=2,
                    budgets=(0.5,), n=20, out=str(out), batch_size=8,
                    params={"train": str(synth_dir / "synth8_train.tsv"), "steps": 6, "inner": 2, "probe": 8,
                            "batch_size": 4})  # fmt: skip
    return cfg, run(cfg, progress=False)


def test_vispco_run_trains_proposes_a_sweep_and_reports_the_gap(vispco_run):
    cfg, outcome = vispco_run
    summary = json.loads((outcome.folder / "summary.json").read_text())
    report = summary["searcher_report"]
    assert report["training"]["steps"] == 6
    # checkpoints scored before the first step and after the last; the kept one has the lowest
    # held-out KL of them
    checkpoints = report["training"]["checkpoints"]
    assert [c["step"] for c in checkpoints] == [0, 6]
    assert report["training"]["kept_step"] == min(checkpoints, key=lambda c: c["val_kl"])["step"]
    assert (outcome.folder / "vispco-predictor.pt").is_file()
    budgets = [p["budget"] for p in report["proposals"]]
    assert 0.5 in budgets and budgets == sorted(budgets)
    for p in report["proposals"]:
        assert p["realised_flops"] is not None  # every proposal was evaluated
        assert p["realised_flops"] <= p["budget"] + 0.01  # the proposed schedule fits its budget
        assert math.isfinite(p["relaxed_flops"]) and math.isfinite(p["relaxed_kl"]) and p["realised_kl"] >= -1e-6
        s = PruningSchedule(tuple(p["schedule"]))  # a valid schedule in whole tokens
        assert all(abs(k * 144 - round(k * 144)) < 1e-6 for k in s.keep)
    pick = summary["picks"]["0.5"]
    assert pick is not None and pick["flops_fraction"] <= 0.51
    assert outcome.computed == summary["evaluations"]


def test_vispco_rerun_loads_its_predictor_and_recomputes_nothing(vispco_run):
    from paretobench.run_loop import run

    cfg, first = vispco_run
    from paretobench.results import wall_time

    before = json.loads((first.folder / "summary.json").read_text())
    saved = (first.folder / "vispco-predictor.pt").stat().st_mtime_ns
    again = run(cfg, progress=False)
    assert (again.folder / "vispco-predictor.pt").stat().st_mtime_ns == saved  # loaded, not trained again
    assert again.computed == 0 and again.reused == len(first.evaluations)
    # a rerun that computed nothing keeps the first run's account: its seconds (training
    # included) and that it trained, so Table 2's wall time counts the training once
    after = json.loads((again.folder / "summary.json").read_text())
    assert after == before and not after["searcher_report"]["predictor_loaded"]
    assert wall_time(after) == wall_time(before) == before["seconds"]
    assert [e.key for e in again.evaluations] == [e.key for e in first.evaluations]


def test_a_rerun_asks_for_the_schedules_read_off_its_predictor_when_it_was_saved(vispco_run, tmp_path):
    """Another machine's float noise can move a mean curve across a whole-token boundary; a
    rerun must still ask for what the first run asked. Here the saved predictor's weights are
    changed far beyond any noise, yet the rerun replays the schedules recorded when it was
    saved: from vispco-proposals.json, or for runs saved before that file, from summary.json.
    With neither, they are read off the changed predictor, and the store refuses the rerun."""
    import dataclasses
    import shutil

    from paretobench.run_loop import run
    from paretobench.store import StoreError
    from searchers.vispco import PREDICTOR_FILE, PROPOSALS_FILE

    cfg, first = vispco_run
    recorded = json.loads((first.folder / PROPOSALS_FILE).read_text())
    reported = json.loads((first.folder / "summary.json").read_text())["searcher_report"]["proposals"]
    assert [(p["schedule"], p["filled"]) for p in recorded] == [(p["schedule"], p["filled"]) for p in reported]
    for removed in ((), (PROPOSALS_FILE,), (PROPOSALS_FILE, "summary.json")):
        out = tmp_path / f"copy-{len(removed)}"
        shutil.copytree(cfg.out, out)
        folder = out / first.folder.name
        saved = torch.load(folder / PREDICTOR_FILE, weights_only=True)
        torch.manual_seed(1)
        saved["state_dict"] = {k: v + torch.randn_like(v) if v.is_floating_point() else v
                               for k, v in saved["state_dict"].items()}  # fmt: skip
        torch.save(saved, folder / PREDICTOR_FILE)
        for name in removed:
            (folder / name).unlink()
        if len(removed) == 2:
            with pytest.raises(StoreError, match="different schedule"):
                run(dataclasses.replace(cfg, out=str(out)), progress=False)
            continue
        again = run(dataclasses.replace(cfg, out=str(out)), progress=False)
        assert again.computed == 0 and [e.key for e in again.evaluations] == [e.key for e in first.evaluations]
        replayed = json.loads((folder / "summary.json").read_text())["searcher_report"]
        assert [(p["schedule"], p["filled"]) for p in replayed["proposals"]] == [
            (p["schedule"], p["filled"]) for p in recorded]
        assert json.loads((folder / PROPOSALS_FILE).read_text()) == recorded


def test_wall_time_adds_the_training_a_resumed_run_loaded():
    """A command that loaded the predictor an interrupted one trained, and then computed the
    rest, timed only its own part: the training is added back."""
    from paretobench.results import wall_time

    report = {"training": {"seconds": 30.0}}
    assert wall_time({"seconds": 5.0, "searcher_report": {**report, "predictor_loaded": True}}) == 35.0
    assert wall_time({"seconds": 5.0, "searcher_report": {**report, "predictor_loaded": False}}) == 5.0
    assert wall_time({"seconds": 5.0}) == 5.0


def test_training_split_must_match_the_evaluated_data():
    from searchers.vispco import _check_train_split

    _check_train_split("synth8-train", ["synth8"])
    _check_train_split("synth8-native-train", ["synth8-native"])
    _check_train_split("synth8-train", ["my-benchmark"])  # no train split of its own: the user's choice
    with pytest.raises(ValueError, match="give --param train=synth8-native-train"):
        _check_train_split("synth8-train", ["synth8-native"])


# ----------------------------------------------------------------------------- budgets and checkpoints
def test_budgets_are_drawn_over_each_questions_own_range():
    from searchers.vispco.config import TrainConfig
    from searchers.vispco.train import budget_floors

    floors = torch.tensor([0.10, 0.50, 0.97])  # a large image, a small one, one that cannot prune under 0.95
    assert budget_floors(floors, TrainConfig()).tolist() == pytest.approx([0.12, 0.52, 0.95])
    assert budget_floors(floors, TrainConfig(budget_lo=0.3)).tolist() == pytest.approx([0.30, 0.52, 0.95])
    with pytest.raises(ValueError, match="no training question can be pruned under budget_hi 0.9"):
        budget_floors(torch.tensor([0.89, 0.95]), TrainConfig(budget_hi=0.9))
    with pytest.raises(ValueError, match="select must be"):
        TrainConfig(select="first")


@pytest.fixture(scope="module")
def session(tiny_model_dir):
    from paretobench.models.loading import load_model
    from pruners.fastv import FastV
    from searchers.vispco.session import Session

    m = load_model(str(tiny_model_dir))
    return Session(m.model, m.processor, FastV())


@pytest.fixture(scope="module")
def train_samples(synth_dir):
    from paretobench.data.tsv import read_tsv

    return read_tsv(synth_dir / "synth8_train.tsv")


def _space(session, samples):
    from searchers.base import SearchSpace

    n_text, n_visual = session.token_counts(samples)
    return SearchSpace(session.shape, int(n_text.float().mean()), int(n_visual[0]), score=session.score)


def test_training_keeps_the_checkpoint_whose_validation_score_is_lowest(session, train_samples):
    from searchers.vispco.config import TrainConfig
    from searchers.vispco.train import train

    seen, scores = [], iter([0.5, 0.2, 0.9, 0.4, 0.3])

    def validate(predictor):
        seen.append({k: v.clone() for k, v in predictor.state_dict().items()})
        return next(scores)

    cfg = TrainConfig(kernel="ledge", steps=4, batch_size=4, inner=2, val_every=1)
    trained = train(session, train_samples, cfg, progress=False, validate=validate)
    assert [c["step"] for c in trained.checkpoints] == [0, 1, 2, 3, 4]
    assert trained.kept_step == 1 and trained.summary()["kept_step"] == 1
    kept = trained.predictor.state_dict()
    assert all(torch.equal(kept[k], seen[1][k]) for k in kept)
    assert not all(torch.equal(seen[1][k], seen[4][k]) for k in kept)  # training did move it after step 1
    last = train(session, train_samples, TrainConfig(kernel="ledge", steps=4, batch_size=4, inner=2, select="last"),
                 progress=False, validate=validate)  # fmt: skip
    assert last.checkpoints == [] and last.kept_step is None
    assert all(torch.equal(last.predictor.state_dict()[k], seen[4][k]) for k in kept)  # same seed: same last step


def test_the_starting_multiplier_is_a_setting_and_only_it_differs(session, train_samples):
    """``w_init`` sets w(1) in every bin; "kkt" computes it from one batch's gradients. Both draw
    the same batches, so a number equal to what "kkt" computed trains the same predictor."""
    from searchers.vispco.config import TrainConfig
    from searchers.vispco.train import train

    base = dict(kernel="ledge", steps=3, batch_size=4, inner=2, select="last")
    assert TrainConfig().w_init == 0.0
    kkt = train(session, train_samples, TrainConfig(**base, w_init="kkt"), progress=False)
    w1 = kkt.log[0]["w"]  # before the first outer update (inner = 2)
    same = train(session, train_samples, TrainConfig(**base, w_init=w1), progress=False)
    assert same.log[0]["w"] == w1
    assert all(torch.equal(v, same.predictor.state_dict()[k]) for k, v in kkt.predictor.state_dict().items())
    high = train(session, train_samples, TrainConfig(**base, w_init=w1 + 1000.0), progress=False)
    assert high.log[0]["w"] == w1 + 1000.0
    assert not all(torch.equal(v, high.predictor.state_dict()[k]) for k, v in kkt.predictor.state_dict().items())
    for bad in ("paper", -1.0, True):
        with pytest.raises(ValueError, match="w_init must be 'kkt' or a number >= 0"):
            TrainConfig(w_init=bad)


def test_validation_scores_the_filled_picks_against_the_unpruned_model(session, train_samples):
    from searchers.vispco.kernels import kernel
    from searchers.vispco.predictor import RatioPredictor
    from searchers.vispco.propose import Validation

    probe = train_samples[:6]
    space = _space(session, probe)
    predictor = RatioPredictor(session.shape.hidden, session.shape.layers, kernel("ledge")).eval()
    with torch.no_grad():  # a flat curve (the ledge's final share f = 1): its shape is keep-all
        predictor.head.bias[2] = 30.0
    # at a budget of 1 the filled pick keeps every token: the unpruned forward itself, KL 0
    assert Validation(session, probe, (1.0,), space)(predictor) == pytest.approx(0.0, abs=1e-6)
    low = Validation(session, probe, (0.3, 0.5), space)
    assert low.budgets == [0.3, 0.5] and low(predictor) > 1e-4
    assert Validation(session, probe, (0.01, 0.5), space).budgets == [0.5]  # under the floor: left out
    with pytest.raises(ValueError, match="no validation budget"):
        Validation(session, probe, (0.01,), space)


def test_validation_without_fill_scores_the_predictors_own_curve(session, train_samples):
    """With ``fill=False`` (the paper's preset) checkpoints are scored by the schedule the
    searcher then picks: the mean curve in whole tokens, not its shape scaled to the budget."""
    from searchers.vispco.kernels import kernel
    from searchers.vispco.predictor import RatioPredictor
    from searchers.vispco.propose import Validation, filled_schedule, whole_schedule
    from searchers.vispco.session import kl_to_teacher

    probe = train_samples[:6]
    space = _space(session, probe)
    torch.manual_seed(0)
    predictor = RatioPredictor(session.shape.hidden, session.shape.layers, kernel("ledge")).eval()
    own = Validation(session, probe, (0.5,), space, fill=False)
    with torch.no_grad():
        curve = predictor(own.pooled, torch.full((len(probe),), 0.5)).mean(0).tolist()
        raw, filled = whole_schedule(space, curve, 0.5), filled_schedule(space, curve, 0.5)
        assert raw.keep != filled.keep and space.fraction(raw) <= 0.5 + 1e-9
        by_hand = float(kl_to_teacher(session.engine.prefill(own.state, raw, session.pruner).logits, own.teacher,
                                      session.kl).mean())  # fmt: skip
    assert own(predictor) == pytest.approx(by_hand, rel=1e-6)
    assert Validation(session, probe, (0.5,), space)(predictor) != pytest.approx(by_hand, rel=1e-3)


def test_cached_batches_equal_fresh_ones(session, train_samples):
    """Training encodes each question and runs the teacher once; a batch built from the cache,
    in any composition, equals one encoded afresh."""
    first, second = train_samples[:5], [train_samples[i] for i in (4, 7, 0, 9)]
    session.batch(first, cache=True)
    for batch in (second, first):
        state, teacher, n_text, n_visual = session.batch(batch, cache=True)
        want = session.batch(batch)
        assert torch.equal(state.valid, want[0].valid) and torch.equal(state.slot, want[0].slot)
        assert torch.allclose(state.h, want[0].h, atol=1e-6)
        assert torch.allclose(teacher, want[1], atol=1e-5)
        assert torch.equal(n_text, want[2]) and torch.equal(n_visual, want[3])


@pytest.mark.parametrize("pruner, params, message", [
    ("vitcop", {}, "vitcop chooses its tokens otherwise"), ("spatial", {}, "spatial chooses its tokens otherwise"),
    ("sparsevlm", {}, "recycle=0")])  # fmt: skip
def test_vispco_refuses_a_pruner_it_cannot_relax_before_anything_loads(pruner, params, message, monkeypatch):
    from paretobench import run_loop

    def no_loading(*a, **k):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr("paretobench.models.loading.load_model", no_loading)
    cfg = run_loop.RunConfig(searcher="vispco", pruner=pruner, pruner_params=params, model="/nonexistent")
    with pytest.raises(ValueError, match=message):
        run_loop.check(cfg)
    run_loop.check(run_loop.RunConfig(searcher="vispco", pruner="sparsevlm", pruner_params={"recycle": 0}))
