"""Curve statistics on synthetic curves with known answers."""

import json
import math

import numpy as np
import pytest

from climit import stats


def learning_curves(s, k, p, scale=1.0, noise=0.0, seed=0):
    """Saturating curves [S, K, P] with per-task levels and optional per-seed noise."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, p)
    level_K = 10 + np.arange(k)  # tasks differ
    seed_S = 1 + noise * rng.standard_normal(s)
    return scale * seed_S[:, None, None] * level_K[None, :, None] * (1 - np.exp(-5 * t))[None, None]


def test_metrics_known_answers():
    curve = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0])
    grid = np.arange(1, 11) * 20
    assert stats.auc(curve) == 4.5
    assert stats.final(curve, 0.1) == 9.0
    assert stats.final(curve, 0.3) == 8.0
    assert stats.steps_to(curve, grid, np.float64(4.0)) == 100.0
    assert stats.steps_to(curve, grid, np.float64(99.0)) == np.inf
    # the mean of the points, not a trapezoid
    assert stats.auc(np.array([0.0, 0.0, 0.0, 12.0])) == 3.0


def test_the_80_percent_level_is_measured_from_the_floor():
    # A DQN rising 5, 6, ..., 15 with floor 5: its level is 5 + 0.8 * 10 = 13, reached at env
    # step 90 (0.8 * 15 = 12 would be reached at 80).
    grid = np.arange(1, 12) * 10
    dqn = np.tile(np.arange(5.0, 16.0), (2, 5, 1))
    out = stats.compare(dqn.copy(), dqn, grid, n_boot=50, floor=5.0)
    assert out["dqn_steps_to_80"].value == 90.0
    assert stats.compare(dqn.copy(), dqn, grid, n_boot=50)["dqn_steps_to_80"].value == 80.0


def test_identical_curves_give_ratio_one():
    dqn = learning_curves(4, 6, 50, noise=0.0)
    out = stats.compare(dqn.copy(), dqn, np.arange(1, 51) * 20, n_boot=300)
    for name in ("auc_ratio", "final_ratio", "steps_to_80_ratio"):
        assert out[name].value == pytest.approx(1.0, abs=1e-12), name
        assert (out[name].lo == pytest.approx(1.0, abs=1e-12)
                and out[name].hi == pytest.approx(1.0, abs=1e-12))
    # with seed-to-seed noise the point is still exactly 1 and the interval contains it, tightly
    noisy = learning_curves(5, 6, 50, noise=0.02, seed=1)
    out = stats.compare(noisy.copy(), noisy, np.arange(1, 51) * 20, n_boot=300)
    assert out["auc_ratio"].value == pytest.approx(1.0)
    assert out["auc_ratio"].lo < 1.0 < out["auc_ratio"].hi
    assert out["auc_ratio"].hi - out["auc_ratio"].lo < 0.1


def test_scaled_curve_gives_ratio_half():
    dqn = learning_curves(3, 8, 40)
    out = stats.compare(0.5 * dqn, dqn, np.arange(1, 41) * 20, n_boot=200)
    for name in ("auc_ratio", "final_ratio"):
        e = out[name]
        assert (e.value, e.lo, e.hi) == pytest.approx((0.5, 0.5, 0.5)), name
    assert out["agent_steps_to_80"].value == np.inf  # half never reaches 80 % of the DQN
    assert out["steps_to_80_ratio"].value == np.inf


def test_ratios_are_undefined_when_the_dqn_return_is_negative():
    # Acrobot-like: the DQN climbs from -500 to -100, the agent stays at -500. A plain ratio
    # would read 5.0 ("five times the DQN"); it must be undefined instead.
    grid = np.arange(1, 51) * 20
    dqn = np.linspace(-500, -100, 50)[None, None].repeat(3, 0).repeat(4, 1)
    flat = np.full_like(dqn, -500.0)
    out = stats.compare(flat, dqn, grid, n_boot=100)
    for name in ("auc_ratio", "final_ratio"):
        assert math.isnan(out[name].value) and math.isnan(out[name].lo), name


def test_slower_curve_takes_longer_to_reach_80_percent():
    grid = np.arange(1, 101) * 10
    t = np.arange(1, 101)
    dqn = np.minimum(t / 19, 1.0)[None, None].repeat(2, 0).repeat(5, 1)  # 0.8 at t = 15.2
    slow = np.minimum(t / 38, 1.0)[None, None].repeat(2, 0).repeat(5, 1)  # 0.8 at t = 30.4
    out = stats.compare(slow, dqn, grid, n_boot=100)
    assert out["dqn_steps_to_80"].value == 160.0
    assert out["agent_steps_to_80"].value == 310.0
    assert out["steps_to_80_ratio"].value == 310.0 / 160.0
    assert out["steps_to_80_ratio"].lo == out["steps_to_80_ratio"].hi == 310.0 / 160.0
    assert out["final_ratio"].value == 1.0


def test_bootstrap_is_deterministic_and_seed_dependent():
    c = learning_curves(4, 5, 20, noise=0.1, seed=3)
    d = learning_curves(4, 5, 20, noise=0.1, seed=4)
    a = stats.compare(c, d, np.arange(20) + 1, n_boot=200, seed=0)
    b = stats.compare(c, d, np.arange(20) + 1, n_boot=200, seed=0)
    e = stats.compare(c, d, np.arange(20) + 1, n_boot=200, seed=1)
    assert a == b
    assert a["auc_ratio"].value == e["auc_ratio"].value and a["auc_ratio"].lo != e["auc_ratio"].lo


def test_coverage_of_a_normal_mean():
    """The 95 % interval of a mean (1 seed x n tasks = ordinary bootstrap) covers ~95 %."""
    rng = np.random.default_rng(0)
    hits, trials = 0, 300
    for i in range(trials):
        x = rng.normal(3.0, 1.0, size=(1, 40, 1))
        e = stats.describe(x, n_boot=400, seed=i)["auc"]
        hits += e.lo <= 3.0 <= e.hi
    assert 0.88 <= hits / trials <= 0.99


def test_crossed_bootstrap_widens_with_seed_variance():
    """Seed-level noise must widen the interval (a flat bootstrap over cells would miss it)."""
    quiet = learning_curves(5, 10, 10, noise=0.0)
    loud = learning_curves(5, 10, 10, noise=0.3, seed=2)
    w = lambda c: (lambda e: e.hi - e.lo)(stats.describe(c, n_boot=500)["auc"])
    assert w(loud) > 2 * w(quiet)


def test_curve_band_contains_mean_and_json_roundtrip():
    c = learning_curves(3, 4, 15, noise=0.1)
    mean, lo, hi = stats.curve_band(c, n_boot=200)
    np.testing.assert_allclose(mean, c.mean((0, 1)))
    assert (lo <= mean + 1e-12).all() and (mean <= hi + 1e-12).all()
    e = stats.Estimate(1.5, 0.5, math.inf)
    text = json.dumps(e.to_dict(), allow_nan=False)
    assert stats.estimate_from_dict(json.loads(text)) == e
    undefined = stats.estimate_from_dict({"value": None, "lo": None, "hi": None})
    assert all(math.isnan(x) for x in (undefined.value, undefined.lo, undefined.hi))
    e = stats.Estimate(-2.0, -math.inf, 3.0)  # "-inf" reads back as -inf
    assert stats.estimate_from_dict(json.loads(json.dumps(e.to_dict(), allow_nan=False))) == e
    assert stats.fmt(math.inf) == "inf" and stats.fmt(math.inf, inf="never") == "never"
    assert stats.fmt(None) == "n/a" and stats.fmt(float("nan")) == "n/a"


def test_rejects_bad_shapes_and_nan():
    with pytest.raises(ValueError):
        stats.describe(np.zeros((3, 4)))
    with pytest.raises(ValueError):
        stats.describe(np.full((1, 2, 3), np.nan))
    with pytest.raises(ValueError):
        stats.compare(np.zeros((1, 2, 3)), np.zeros((1, 3, 3)), np.arange(3))


def test_interval_is_undefined_when_more_than_5_percent_of_replicates_are_nan():
    reps = np.arange(100, dtype=np.float64)
    e = stats.interval(50.0, reps, 0.9)  # 5th and 95th percentiles, no interpolation
    assert (e.value, e.lo, e.hi) == (50.0, 4.0, 94.0)
    five = reps.copy()
    five[:5] = np.nan  # 5 %: dropped, the interval is over the 95 left
    e = stats.interval(50.0, five, 0.9)
    assert (e.lo, e.hi) == (9.0, 95.0)  # the 5th and 91st of 5..99
    six = reps.copy()
    six[:6] = np.nan  # 6 %: no longer a 90 % interval of anything
    e = stats.interval(50.0, six, 0.9)
    assert e.value == 50.0 and math.isnan(e.lo) and math.isnan(e.hi)
    assert stats.MAX_UNDEFINED_FRAC == 0.05


def test_random_policy_against_a_dqn_that_never_learns_is_undefined_not_one():
    grid = np.arange(1, 21) * 20
    flat_dqn = np.zeros((3, 5, 20))
    random_policy = np.zeros((2, 5, 20))
    out = stats.compare(random_policy, flat_dqn, grid, n_boot=100)
    # 0/0 used to be 1, and the 80 % level of a flat DQN (0) was "reached" by everyone at the
    # first grid point: ratio 1 [1, 1], a match for a policy that learned nothing.
    for name in ("auc_ratio", "final_ratio", "steps_to_80_ratio", "agent_steps_to_80",
                 "dqn_steps_to_80"):
        e = out[name]
        assert math.isnan(e.value) and math.isnan(e.lo) and math.isnan(e.hi), name
    assert (out["dqn_final"].value, out["agent_auc"].value) == (0.0, 0.0)
    # A DQN flat at the floor (here 5, not 0) did not learn either: its returns are positive,
    # so the AUC ratio is defined (1), but there is no 80 % level to reach.
    out = stats.compare(np.full((2, 5, 20), 5.0), np.full((3, 5, 20), 5.0), grid, n_boot=100,
                        floor=5.0)
    e = out["auc_ratio"]
    assert (e.value, e.lo, e.hi) == pytest.approx((1.0, 1.0, 1.0))
    for name in ("steps_to_80_ratio", "agent_steps_to_80", "dqn_steps_to_80"):
        assert math.isnan(out[name].value) and math.isnan(out[name].lo), name


def test_ratio_intervals_are_undefined_when_many_replicates_lose_the_dqn():
    # The DQN learns on one task of four, stays at zero on the others, and so does the agent:
    # the mean DQN learned (the points are defined), but (3/4)^4 = 32 % of the replicates
    # resample only the flat tasks, where every ratio is 0/0, so no interval is given.
    grid = np.arange(1, 21) * 20
    dqn = np.zeros((3, 4, 20))
    dqn[:, 0] = np.linspace(0.0, 10.0, 20)
    agent = dqn[:2].copy()
    out = stats.compare(agent, dqn, grid, n_boot=400)
    for name in ("auc_ratio", "final_ratio", "steps_to_80_ratio"):
        e = out[name]
        assert e.value == pytest.approx(1.0) and math.isnan(e.lo) and math.isnan(e.hi), name


def test_a_positive_return_against_a_dqn_at_zero_is_infinitely_ahead_not_undefined():
    assert stats._ratio(np.array([1.0, 0.0, -1.0, 2.0]), np.array([0.0, 0.0, 0.0, 4.0])) \
        .tolist()[0] == math.inf
    r = stats._ratio(np.array([1.0, 0.0, -1.0, 2.0]), np.array([0.0, 0.0, 0.0, 4.0]))
    assert math.isnan(r[1]) and math.isnan(r[2]) and r[3] == 0.5
    # The DQN learns on 3 tasks of 17, the agent earns 1 everywhere: the replicates that
    # resample none of the 3 count as "ahead" (inf) instead of being dropped, so the upper end
    # of the final ratio's interval is inf.
    grid = np.arange(1, 21) * 20
    dqn = np.zeros((2, 17, 20))
    dqn[:, :3] = 5.0
    agent = np.ones((1, 17, 20))
    e = stats.compare(agent, dqn, grid, n_boot=1000)["final_ratio"]
    assert e.value == pytest.approx(17 / 15) and e.hi == math.inf


def test_dqn_rows_are_per_cell_learners_resampled_by_task_only():
    # Row r of the DQN on task k shares nothing with row r on task k' (each learner has its own
    # key): relabelling the rows within each task changes no statistic. A crossed bootstrap of
    # rows would treat row r as one "seed" across tasks and give other (wider) intervals.
    rng = np.random.default_rng(1)
    grid = np.arange(1, 11)
    dqn = 10 + rng.normal(0, 2.0, (5, 17, 1)) + np.zeros((1, 1, 10))
    shuffled = np.stack([dqn[rng.permutation(5), k] for k in range(17)], axis=1)
    agent = 10 + rng.normal(0, 1.0, (3, 17, 10))
    one, two = (stats.compare(agent, d, grid, n_boot=300) for d in (dqn, shuffled))
    for name in one:  # equal but for the order of a sum
        assert (two[name].value, two[name].lo, two[name].hi) == pytest.approx(
            (one[name].value, one[name].lo, one[name].hi), rel=1e-12), name
    per_cell = stats.describe(dqn, n_boot=300, crossed=False)["auc"]
    crossed = stats.describe(dqn, n_boot=300)["auc"]
    assert per_cell.hi - per_cell.lo < crossed.hi - crossed.lo
    # With one row the two readings agree.
    assert stats.describe(dqn[:1], n_boot=300, crossed=False) == stats.describe(dqn[:1], n_boot=300)


def test_paired_difference_sees_a_lead_that_overlapping_intervals_hide():
    # The imitator is 0.4 ahead of a control on every task, both with a large task-to-task
    # spread (s.d. 2) that pairing by task cancels: the two AUC intervals overlap, the interval
    # of the paired difference lies above 0.
    rng = np.random.default_rng(0)
    task_K = rng.normal(0, 2.0, 17)[None, :, None]
    control = 6 + task_K + rng.normal(0, 0.3, (5, 17, 20))
    imitator = 6.4 + task_K + rng.normal(0, 0.3, (5, 17, 20))
    a, c = stats.describe(imitator, n_boot=500)["auc"], stats.describe(control, n_boot=500)["auc"]
    assert a.lo < c.hi  # separate intervals: not apart
    d = stats.difference(imitator, control, n_boot=500)
    assert d.value == pytest.approx(a.value - c.value) and 0.2 < d.lo and d.hi < 0.6
    # Equal agents: the difference interval holds 0.
    d = stats.difference(control, control[::-1].copy(), n_boot=500)
    assert d.lo < 0 < d.hi


def test_gain_is_final_minus_the_first_point_from_the_same_replicates():
    # An agent that learns within the first tenth of the window (1 -> 10 by its 10th point of
    # 100): its initial return is the first point (1), not the mean of the first tenth (~5.5),
    # and its gain interval lies above 0.
    ramp_P = np.minimum(1.0 + np.arange(100), 10.0)
    rng = np.random.default_rng(0)
    curves = ramp_P + rng.normal(0, 0.5, (3, 17, 100))
    out = stats.describe(curves, n_boot=300)
    assert out["initial"].value == pytest.approx(curves[..., 0].mean())
    assert out["gain"].value == pytest.approx(out["final"].value - out["initial"].value)
    assert 8 < out["gain"].lo
    flat = stats.describe(np.full((2, 5, 100), 4.0), n_boot=100)["gain"]
    assert (flat.value, flat.lo, flat.hi) == pytest.approx((0.0, 0.0, 0.0), abs=1e-12)


def test_fewer_than_min_tasks_give_no_interval():
    # One seed on one task used to give a zero-width interval ([0.752, 0.752]) and a clear
    # verdict; a bootstrap over fewer than MIN_TASKS tasks gives none (the point remains), from
    # every statistic a verdict reads. At MIN_TASKS the same curves get intervals again.
    assert stats.MIN_TASKS == 5
    grid = np.arange(1, 11)
    rng = np.random.default_rng(0)
    for k, defined in ((1, False), (2, False), (4, False), (5, True)):
        agent, dqn = 3 + rng.normal(0, 1, (1, k, 10)), 4 + rng.normal(0, 1, (3, k, 10))
        ests = [*stats.describe(agent, n_boot=100).values(),
                *stats.compare(agent, dqn, grid, n_boot=100).values(),
                stats.difference(agent, dqn, crossed_b=False, n_boot=100)]
        for e in ests:
            assert not math.isnan(e.value)
            assert (not math.isnan(e.lo)) is defined and (not math.isnan(e.hi)) is defined, (k, e)
    test = stats.summarize_test({"imitator": agent[:, :4], "dqn": dqn[:, :4]}, grid, n_boot=50)
    assert test["vs_dqn"]["imitator"]["auc_ratio"]["lo"] is None  # JSON: undefined
    from climit import report

    test = {**test, "env": "darkroom", "task_dim": 2}
    assert report.criteria("a", test)[0][1] is None  # "unclear"
    assert "With fewer than 5 held-out tasks no interval is given" in "\n".join(
        report.reading("a", test, {}))


def test_steps_to_80_inside_a_window_count_from_its_start():
    # Test (b)'s window starts at H = 8000: the DQN reaches 80 % of its final return 400 steps
    # after H, the agent 16000 steps after H. The ratio is 40, not (H + 16000) / (H + 400).
    grid = 400 * np.arange(1, 201)  # 400 .. 80000
    h = 8000
    dqn_P = np.where(grid >= h + 400, 10.0, 1.0)
    agent_P = np.where(grid >= h + 16000, 10.0, 1.0)
    curves = {"imitator": np.broadcast_to(agent_P, (2, 3, 200)),
              "dqn": np.broadcast_to(dqn_P, (2, 3, 200))}
    after = stats.summarize_test(curves, grid, window=(h, np.inf), n_boot=50)["vs_dqn"]["imitator"]
    assert after["dqn_steps_to_80"]["value"] == 400.0
    assert after["agent_steps_to_80"]["value"] == 16000.0
    assert after["steps_to_80_ratio"]["value"] == 40.0
    # With no window start (test a) steps count from 0.
    whole = stats.summarize_test(curves, grid, n_boot=50)["vs_dqn"]["imitator"]
    assert whole["steps_to_80_ratio"]["value"] == (h + 16000) / (h + 400)


def _crossed_runs(n_runs, seeds, seed_sd, rng):
    """Curves of a crossed random-effects model with true AUC ratio 1: per run (agent, dqn)."""
    for _ in range(n_runs):
        task_K = rng.normal(0, 1.0, 17)
        agent = (10 + rng.normal(0, seed_sd, (seeds, 1, 1)) + task_K[None, :, None]
                 + rng.normal(0, 1.0, (seeds, 17, 1)) + np.zeros((1, 1, 10)))
        dqn = 10 + task_K[None, :, None] + rng.normal(0, 1.0, (5, 17, 1)) + np.zeros((1, 1, 10))
        yield agent, dqn


def test_ratio_interval_covers_the_truth_about_as_often_as_it_says():
    # 5 imitator seeds x 17 tasks x 5 DQN seeds, seeds differing little: the 95 % interval of
    # the AUC ratio holds the true ratio 1 in about 95 % of simulated experiments (the module
    # docstring gives the regime where it does not: few seeds that differ much).
    rng, grid = np.random.default_rng(0), np.arange(1, 11)
    held = [stats.compare(a, d, grid, n_boot=400, seed=i)["auc_ratio"]
            for i, (a, d) in enumerate(_crossed_runs(200, 5, 0.5, rng))]
    coverage = np.mean([e.lo <= 1.0 <= e.hi for e in held])
    assert 0.9 <= coverage <= 0.99, coverage


def test_paired_difference_interval_covers_the_truth_about_as_often_as_it_says():
    # 5 imitator seeds and 3 control seeds (separately trained: each with its own seed effect,
    # s.d. 0.2 against a cell s.d. of 1) on 17 tasks whose effect both share (s.d. 2, which
    # pairing cancels); true AUC difference 0.5. The 95 % interval of the paired difference
    # holds 0.5 in 97 % of 200 simulated experiments. (Where the seed effects dominate, s.d.
    # 0.5 against cells of 0.5, it held it 86 % of the time: the few-seeds limit of the module
    # docstring, which pairing does not lift.)
    rng = np.random.default_rng(3)
    held = []
    for i in range(200):
        task_K = rng.normal(0, 2.0, 17)[None, :, None]
        imitator = (10.5 + rng.normal(0, 0.2, (5, 1, 1)) + task_K
                    + rng.normal(0, 1.0, (5, 17, 1)) + np.zeros((1, 1, 10)))
        control = (10.0 + rng.normal(0, 0.2, (3, 1, 1)) + task_K
                   + rng.normal(0, 1.0, (3, 17, 1)) + np.zeros((1, 1, 10)))
        e = stats.difference(imitator, control, n_boot=400, seed=i)
        held.append(e.lo <= 0.5 <= e.hi)
    assert 0.9 <= np.mean(held) <= 0.99, np.mean(held)


@pytest.mark.parametrize("shared, seed_sd", [(True, 2.0), (False, 0.5)])
def test_seed_paired_difference_covers_the_truth_and_cancels_shared_seed_effects(shared,
                                                                                 seed_sd):
    # An imitator and a control, 5 seeds each, on 17 tasks (task effects s.d. 2, cells s.d. 1,
    # true difference 0.5), 200 simulated experiments.
    # Shared: seed s has the same effect (s.d. 2, dominating) on both sides, as when seed s of
    # each starts from the same weights and acts with the same keys. Pairing by seed cancels
    # it: the interval is about a fifth as wide as for the same curves with the control's seeds
    # in another order (which breaks the pairs, as drawing each side's seeds apart did), and it
    # still holds 0.5 (every time here: the crossed bootstrap counts the cells' spread twice).
    # Not shared: the pairs are still independent of each other, so pairing by index stays
    # valid: as wide as the broken pairs, holding 0.5 about as often as it says.
    rng = np.random.default_rng(4)
    held, width, broken_width = [], [], []
    for i in range(200):
        task_K = rng.normal(0, 2.0, 17)[None, :, None]
        seed_S = rng.normal(0, seed_sd, (5, 1, 1))
        other_S = seed_S if shared else rng.normal(0, seed_sd, (5, 1, 1))
        flat = np.zeros((1, 1, 10))
        imitator = 10.5 + seed_S + task_K + rng.normal(0, 1.0, (5, 17, 1)) + flat
        control = 10.0 + other_S + task_K + rng.normal(0, 1.0, (5, 17, 1)) + flat
        e = stats.difference(imitator, control, n_boot=400, seed=i)
        broken = stats.difference(imitator, control[[1, 2, 3, 4, 0]], n_boot=400, seed=i)
        held.append(e.lo <= 0.5 <= e.hi)
        width.append(e.hi - e.lo)
        broken_width.append(broken.hi - broken.lo)
    ratio = np.median(width) / np.median(broken_width)
    if shared:
        assert np.mean(held) >= 0.95 and ratio < 0.3, (np.mean(held), ratio)
    else:
        assert 0.9 <= np.mean(held) <= 0.99 and 0.7 < ratio < 1.4, (np.mean(held), ratio)


def test_gain_pairs_initial_and_final_within_each_replicate():
    # Every task rises by exactly 3 from its own level (task levels 0..4): the mean curve of any
    # resample of the tasks rises by 3 too, so each replicate's gain is 3 although its final
    # return varies with the tasks drawn. Subtracting the point's initial return from each
    # replicate's final return would give the final return's spread instead.
    curves = (np.arange(5.0)[None, :, None] + np.linspace(0.0, 3.0, 10)[None, None]
              + np.zeros((2, 1, 1)))
    out = stats.describe(curves, n_boot=200)
    assert out["final"].hi - out["final"].lo > 1.0
    e = out["gain"]
    assert (e.value, e.lo, e.hi) == pytest.approx((3.0, 3.0, 3.0), abs=1e-12)


def test_curve_band_at_a_point_is_the_interval_of_that_point():
    # The band at the first grid point is the interval of the initial return, and at the last
    # point that of the final return (the last tenth of 10 points): same seed, same replicates,
    # same percentiles (2.5 and 97.5 at 95 %, no interpolation), for crossed and per-cell rows.
    c = (learning_curves(4, 6, 10, noise=0.3, seed=5)
         + np.random.default_rng(0).normal(0, 1, (4, 6, 10)))
    for crossed in (True, False):
        _, lo, hi = stats.curve_band(c, n_boot=101, seed=2, crossed=crossed)
        out = stats.describe(c, n_boot=101, seed=2, crossed=crossed)
        assert (lo[0], hi[0]) == (out["initial"].lo, out["initial"].hi), crossed
        assert (lo[-1], hi[-1]) == pytest.approx((out["final"].lo, out["final"].hi), rel=1e-12)
    # Per-cell rows are the per-task means: their band is the band of one row of those means.
    one = stats.curve_band(c.mean(0, keepdims=True), n_boot=101, seed=2)
    np.testing.assert_allclose(stats.curve_band(c, n_boot=101, seed=2, crossed=False), one,
                               rtol=1e-12)


def test_difference_resamples_a_per_cell_control_by_task_only():
    # A per-cell control (the DQN, the random policy) has no seed shared across tasks:
    # relabelling its rows within each task changes no statistic of the difference.
    rng = np.random.default_rng(2)
    imitator = 10 + rng.normal(0, 1.0, (3, 6, 10))
    control = 9 + rng.normal(0, 2.0, (5, 6, 1)) + np.zeros((1, 1, 10))
    shuffled = np.stack([control[rng.permutation(5), k] for k in range(6)], axis=1)
    one, two = (stats.difference(imitator, c, crossed_b=False, n_boot=300)
                for c in (control, shuffled))
    assert (two.value, two.lo, two.hi) == pytest.approx((one.value, one.lo, one.hi), rel=1e-12)
    crossed = stats.difference(imitator, control, n_boot=300)
    assert one.hi - one.lo < crossed.hi - crossed.lo


def test_per_seed_auc_ratio_uses_the_window_of_the_dqn_too():
    # Inside test (b)'s window (after H = 50) the DQN earns 10 and the two imitator seeds 10 and
    # 5: their own ratios are 1 and 0.5. Before H the DQN earns 1, which must not count.
    grid = 10 * np.arange(1, 11)
    dqn_P = np.where(grid > 50, 10.0, 1.0)
    curves = {"imitator": np.array([1.0, 0.5])[:, None, None] * dqn_P + np.zeros((1, 5, 1)),
              "ed": np.array([0.5, 1.0])[:, None, None] * dqn_P + np.zeros((1, 5, 1)),
              "dqn": np.broadcast_to(dqn_P, (3, 5, 10)),
              "random": np.zeros((2, 5, 10))}
    out = stats.summarize_test(curves, grid, window=(50, np.inf), n_boot=50)
    assert out["auc_ratio_per_seed"]["imitator"] == [1.0, 0.5]
    # Seeds of the crossed agents only: the random policy's rows are per-cell, not seeds.
    assert out["auc_ratio_per_seed"] == {"imitator": [1.0, 0.5], "ed": [0.5, 1.0]}


def test_summarize_test_compares_the_imitator_with_the_random_policy_by_task_only():
    # The random policy's rows are per-cell learners: relabelling them within each task leaves
    # the imitator-minus-random interval as it is.
    rng, grid = np.random.default_rng(4), np.arange(1, 11)
    random_policy = rng.normal(0, 2.0, (4, 6, 1)) + np.zeros((1, 1, 10))
    shuffled = np.stack([random_policy[rng.permutation(4), k] for k in range(6)], axis=1)
    base = {"imitator": 5 + rng.normal(0, 1.0, (3, 6, 10)),
            "dqn": 6 + rng.normal(0, 1.0, (2, 6, 10))}
    one, two = (stats.summarize_test({**base, "random": r}, grid, n_boot=200)
                ["imitator_vs"]["random"]
                for r in (random_policy, shuffled))
    assert two["auc_diff"] == pytest.approx(one["auc_diff"], rel=1e-12)


def test_summarize_test_describes_the_per_cell_agents_by_task_only():
    # Each agent's own intervals (AUC, initial, final, and the gain that "the DQN improves"
    # reads) resample the DQN's and the random policy's rows as per-cell learners: they are
    # describe(crossed=False)'s, and relabelling those rows within each task changes none of
    # them. The imitator's rows are seeds: describe(crossed=True). (Describing every agent as
    # crossed passed this file and test_report.py.)
    rng, grid = np.random.default_rng(5), np.arange(1, 11)
    curves = {"imitator": 5 + rng.normal(0, 1.0, (3, 6, 10)),
              "dqn": 6 + rng.normal(0, 2.0, (4, 6, 1)) + np.linspace(0, 3, 10),
              "random": rng.normal(0, 2.0, (3, 6, 1)) + np.zeros((1, 1, 10))}
    relabel = lambda c: np.stack([c[rng.permutation(len(c)), k]  # noqa: E731
                                  for k in range(c.shape[1])], axis=1)
    one = stats.summarize_test(curves, grid, n_boot=200)["agents"]
    two = stats.summarize_test({**curves, "dqn": relabel(curves["dqn"]),
                                "random": relabel(curves["random"])}, grid, n_boot=200)["agents"]
    for name in curves:
        crossed = name == "imitator"
        want = stats.describe(curves[name], n_boot=200, crossed=crossed)
        other = stats.describe(curves[name], n_boot=200, crossed=not crossed)
        assert want != other, name  # the two readings differ, so the test can fail
        for m, e in want.items():
            for got in (one[name][m], two[name][m]):  # equal but for the order of a sum
                assert (got["value"], got["lo"], got["hi"]) == pytest.approx(
                    (e.value, e.lo, e.hi), rel=1e-12), (name, m)


def test_final_rounds_its_window_to_the_nearest_point_count_and_keeps_at_least_one():
    # final_frac 0.1 of 15 points is 1.5 -> the last 2 (not 1 by truncation); of 14 points 1.4 ->
    # the last 1 (not 2 by rounding up); of 3 points 0.3 -> none, so the last one.
    assert stats.final(np.arange(15.0), 0.1) == 13.5
    assert stats.final(np.arange(14.0), 0.1) == 13.0
    assert stats.final(np.arange(3.0), 0.1) == 2.0
    assert stats.final(np.arange(3.0), 0.0) == 2.0


def test_a_ratio_to_an_undefined_reference_is_undefined_even_for_a_positive_agent():
    # A NaN reference (the steps to 80 % of a DQN that did not learn) is NaN, not "ahead" (inf).
    r = stats._ratio(np.array([1.0, math.inf, math.nan]), np.array([math.nan, math.nan, 2.0]))
    assert all(math.isnan(x) for x in r)


def test_final_frac_reaches_every_final_return_and_the_80_percent_level():
    # Curves 0, 1, ..., 9 on every seed and task (the DQN's twice that): every replicate is the
    # point, so each interval is exact. final_frac 0.5 averages the last 5 points: agent 7, DQN
    # 14 (the default 0.1 would read 9 and 18); the DQN's 80 % level 11.2 is first reached at
    # its 7th point (12 at env step 70; 14.4, from a final of 18, at step 90).
    grid = 10 * np.arange(1, 11)
    agent = np.tile(np.arange(10.0), (2, 5, 1))
    dqn = 2 * np.tile(np.arange(10.0), (3, 5, 1))
    d = stats.describe(agent, n_boot=50, final_frac=0.5)
    for name, want in (("final", 7.0), ("gain", 7.0)):
        assert (d[name].value, d[name].lo, d[name].hi) == pytest.approx((want,) * 3), name
    out = stats.compare(agent, dqn, grid, n_boot=50, final_frac=0.5)
    for name, want in (("agent_final", 7.0), ("dqn_final", 14.0), ("final_ratio", 0.5),
                       ("dqn_steps_to_80", 70.0), ("agent_steps_to_80", math.inf)):
        e = out[name]
        assert (e.value, e.lo, e.hi) == pytest.approx((want,) * 3), name


def test_summarize_test_passes_floor_confidence_and_bootstrap_size_to_every_statistic():
    # floor reaches compare(): the DQN rising 5, 6, ..., 15 with floor 5 reaches its 80 % level
    # 13 at env step 90 (80 with floor 0). confidence and n_boot reach difference(): its dict is
    # difference()'s with the same settings, and a 50 % interval is narrower than the 95 % one.
    grid = np.arange(1, 12) * 10
    dqn = np.tile(np.arange(5.0, 16.0), (2, 5, 1))
    out = stats.summarize_test({"imitator": dqn.copy(), "dqn": dqn}, grid, n_boot=50, floor=5.0)
    assert out["vs_dqn"]["imitator"]["dqn_steps_to_80"]["value"] == 90.0
    rng, grid = np.random.default_rng(6), np.arange(1, 11)
    imitator, ed = 5 + rng.normal(0, 1.0, (3, 6, 10)), 4 + rng.normal(0, 1.0, (3, 6, 10))
    curves = {"imitator": imitator, "ed": ed, "dqn": 6 + rng.normal(0, 1.0, (2, 6, 10))}
    got = stats.summarize_test(curves, grid, n_boot=200, confidence=0.5, seed=3)
    want = stats.difference(imitator, ed, n_boot=200, confidence=0.5, seed=3)
    # equal but for the order of a sum
    assert got["imitator_vs"]["ed"]["auc_diff"] == pytest.approx(want.to_dict(), rel=1e-12)
    wide = stats.difference(imitator, ed, n_boot=200, seed=3)
    assert wide.lo < want.lo and want.hi < wide.hi


def test_mismatched_grids_and_empty_windows_are_errors_not_silent_numbers():
    # A grid one point longer than the curves would give steps to 80 % on the wrong env steps,
    # curves of unequal length a difference of AUCs over different spans, and an empty window
    # no statistic at all: each is a ValueError that says so.
    c = np.tile(np.arange(10.0), (2, 5, 1))
    with pytest.raises(ValueError, match="11 points"):
        stats.compare(c, c, np.arange(1, 12))
    with pytest.raises(ValueError, match="same tasks and grid"):
        stats.difference(c, c[..., :9])
    with pytest.raises(ValueError, match="no grid point in window"):
        stats.summarize_test({"dqn": c}, np.arange(1, 11), window=(10, 20))


def test_imitator_vs_holds_the_controls_only():
    # The imitator's AUC minus each control's: the DQN is a reference (vs_dqn), not a control.
    rng, grid = np.random.default_rng(7), np.arange(1, 11)
    curves = {name: 5 + rng.normal(0, 1.0, (2, 5, 10)) for name in ("imitator", "ed", "dqn")}
    out = stats.summarize_test(curves, grid, n_boot=20)
    assert list(out["imitator_vs"]) == ["ed"]
    assert list(out["vs_dqn"]) == ["imitator", "ed"]
