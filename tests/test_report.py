"""The report builds from synthesized evaluation artifacts, without JAX, with every summary key."""

import json
import math
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import numpy as np
import pytest

from climit import report, stats
from climit.errors import ArtifactError

import procs


def synthetic_eval(run_dir, *, with_c=True, imitator_scale=0.9, controls_trained_to_h=True):
    """Eval artifacts shaped like evaluate.py's: curves of 5 agents for tests a, b (, c)."""
    rng = np.random.default_rng(0)
    grid = 20 * np.arange(1, 41)
    t = np.linspace(0, 1, 40)

    def agent(level, speed, s, noise=0.3):
        base = level * (1 - np.exp(-speed * t))
        return base[None, None] + noise * rng.standard_normal((s, 6, 40))

    curves_by_test = {
        "a": {"imitator": agent(15 * imitator_scale, 5, 3), "ed": agent(2, 1, 3),
              "ablated": agent(4, 2, 3), "random": agent(1, 0.01, 1) + 1, "dqn": agent(15, 5, 4)},
        "b": {"imitator": agent(14, 4, 3), "ed": agent(2, 1, 3), "ablated": agent(4, 2, 3),
              "random": agent(1, 0.01, 1) + 1, "dqn": agent(15, 4, 4)},
    }
    if with_c:
        curves_by_test["c"] = {"imitator": agent(1, 3, 3), "ed": agent(0.5, 1, 3),
                               "ablated": agent(0.5, 1, 3), "random": agent(0.3, 0.01, 1) + 0.3,
                               "dqn": agent(1.8, 3, 4)}
    tests, curves = {}, {}
    for key, by_agent in curves_by_test.items():
        tests[key] = {"env": "keydoor" if key == "c" else "darkroom",
                      "markers": {"context": 80, "horizon": 200 if key == "b" else None}}
        if key == "b":
            tests[key]["controls_trained_to_h"] = controls_trained_to_h
        curves[f"{key}.grid"] = grid
        curves.update({f"{key}.{a}": c for a, c in by_agent.items()})
    results = {"env": "darkroom", "transfer": "keydoor" if with_c else "", "context_steps": 80,
               "horizon": 200, "horizon_factor": 4, "mode": "sample", "confidence": 0.95,
               "bootstrap": 200, "final_frac": 0.1, "config": {}, "tests": tests,
               "tasks": {"a": [[k, 8 - k] for k in range(6)]},  # 6 Dark Room goals
               "skipped": {} if with_c else {"c": "env.transfer is empty"},
               "imitators": {"imitator": {"tag": "ad", "seeds": 3, "final_step": 500,
                                          "heldout_loss": 0.81, "heldout_action_accuracy": 0.7,
                                          "chance_accuracy": 0.2,
                                          "heldout_accuracy_by_position": [0.6, 0.7, 0.8],
                                          "position_bins": [0, 40, 80, 120]},
                             "ed": {"tag": "ed", "heldout_loss": 1.4}}}
    results = report.with_statistics(results, curves)  # as evaluate.py writes them
    report.write_eval(run_dir / "eval", results, curves)
    return results, curves


SUMMARY_KEYS = {"ran", "verdict", "provisional", "imitator_seeds", "dqn_seeds", "tasks",
                "imitator_dqn_auc_ratio", "imitator_dqn_auc_ratio_ci",
                "imitator_dqn_final_ratio", "imitator_dqn_final_ratio_ci",
                "imitator_dqn_steps_to_80_ratio", "imitator_dqn_steps_to_80_ratio_ci",
                "imitator_auc", "imitator_final", "dqn_auc", "dqn_final", "controls",
                "imitator_dqn_auc_ratio_before_h", "imitator_dqn_auc_ratio_before_h_ci",
                "imitator_dqn_auc_ratio_per_seed", "imitator_gain", "imitator_gain_ci",
                "dqn_gain", "dqn_gain_ci"}


def test_report_builds_without_jax(tmp_path):
    _, curves = synthetic_eval(tmp_path)
    code = textwrap.dedent(f"""
        import sys
        sys.modules["jax"] = None  # any `import jax` now raises ImportError
        sys.modules["jaxlib"] = None
        from climit import report
        report.build({str(tmp_path)!r})
        assert "jax" not in [m for m in sys.modules if sys.modules[m] is not None]
    """)
    subprocess.run([sys.executable, "-c", code], check=True)
    out = tmp_path / "report"
    for name in ("report.md", "summary.json", "test_a.png", "test_b.png", "test_c.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert (out / "test_a.png").read_bytes()[:4] == b"\x89PNG"
    summary = json.loads((out / "summary.json").read_text())
    for key in ("a", "b", "c"):
        entry = summary["tests"][key]
        assert SUMMARY_KEYS <= set(entry), key
        assert set(entry["controls"]) == {"ed", "ablated", "random"}
        assert isinstance(entry["imitator_dqn_auc_ratio"], float)
        lo, hi = entry["imitator_dqn_auc_ratio_ci"]
        assert lo <= entry["imitator_dqn_auc_ratio"] <= hi
    # Each imitator seed's own AUC ratio (test a: every grid point): its mean curve's mean over
    # the DQN's mean curve's mean.
    dqn_auc = curves["a.dqn"].mean()
    want = [c.mean() / dqn_auc for c in curves["a.imitator"]]
    assert summary["tests"]["a"]["imitator_dqn_auc_ratio_per_seed"] == pytest.approx(want)
    md = (out / "report.md").read_text()
    for text in ("## (a) skill match", "## (b) horizon extrapolation", "## (c) new family",
                 "Verdict:", "Preconditions:", "What the numbers show", "What they do not show",
                 "DQN from scratch",
                 "expert distillation (ED)", "context-ablated imitator", "random policy",
                 "![test a](test_a.png)", "## The imitators offline",
                 "| imitator (AD) | ad | 3 | 500 | 0.81 | 0.7 (0.2) | 0.6 (positions 0-39) → 0.8 "
                 "(80-119) |",
                 "| expert distillation (ED) | ed | ? | ? | 1.4 | n/a (n/a) | n/a |"):
        assert text in md, text


def test_summary_numbers_match_results_and_verdicts(tmp_path):
    results, _ = synthetic_eval(tmp_path)
    s = report.summary(results)
    a = results["tests"]["a"]["vs_dqn"]["imitator"]
    assert s["tests"]["a"]["imitator_dqn_auc_ratio"] == a["auc_ratio"]["value"]
    assert s["tests"]["a"]["imitator_dqn_final_ratio_ci"] == [a["final_ratio"]["lo"],
                                                              a["final_ratio"]["hi"]]
    assert s["tests"]["a"]["imitator_dqn_auc_ratio"] == pytest.approx(0.9, abs=0.05)
    # a: 0.9 of the DQN, learns, beats controls -> supported; c: ~0.55 of the DQN -> not supported
    assert s["tests"]["a"]["verdict"] == "supported"
    assert s["tests"]["c"]["verdict"] == "not supported"
    ed = s["tests"]["a"]["controls"]["ed"]
    assert ed["dqn_auc_ratio"] < 0.3 and ed["auc"] < s["tests"]["a"]["imitator_auc"]
    # "beats" and "improves" as the verdict judged them: paired differences with intervals.
    assert ed["imitator_auc_minus"] == pytest.approx(s["tests"]["a"]["imitator_auc"] - ed["auc"])
    assert ed["imitator_auc_minus_ci"][0] > 0
    assert s["tests"]["a"]["imitator_gain_ci"][0] > 0 and s["tests"]["a"]["dqn_gain_ci"][0] > 0


def test_missing_test_keeps_stable_keys(tmp_path):
    synthetic_eval(tmp_path, with_c=False)
    report.build(tmp_path)
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    c = summary["tests"]["c"]
    assert SUMMARY_KEYS <= set(c) and c["ran"] is False and c["imitator_dqn_auc_ratio"] is None
    assert "Not run: env.transfer is empty" in (tmp_path / "report" / "report.md").read_text()
    assert not (tmp_path / "report" / "test_c.png").exists()


def test_missing_or_damaged_artifacts(tmp_path):
    with pytest.raises(ArtifactError, match="results.json is missing"):
        report.build(tmp_path)
    synthetic_eval(tmp_path)
    (tmp_path / "eval" / "curves.npz").write_bytes(b"not a zip")
    with pytest.raises(ArtifactError, match="curves.npz is damaged"):
        report.build(tmp_path)
    (tmp_path / "eval" / "results.json").write_text("{")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        report.build(tmp_path)


def test_an_evaluation_killed_while_written_is_no_evaluation(tmp_path, monkeypatch):
    # Re-evaluated, killed after the new curves were written but before their results: the
    # old results.json must not stand beside the new curves (`climit report` would mix them).
    synthetic_eval(tmp_path)
    results, curves = report.load_eval(tmp_path)

    def killed(path, data):
        raise KeyboardInterrupt
    monkeypatch.setattr(report.jsonfile, "write_atomic", killed)
    with pytest.raises(KeyboardInterrupt):
        report.write_eval(tmp_path / "eval", results, {k: v + 1 for k, v in curves.items()})
    with pytest.raises(ArtifactError, match="results.json is missing"):
        report.load_eval(tmp_path)


@pytest.mark.parametrize("damage", ["nan_curve", "short_grid", "list", "no_tests"])
def test_damaged_evaluation_contents_are_clear_errors(tmp_path, damage):
    _, curves = synthetic_eval(tmp_path)
    if damage == "nan_curve":
        curves["a.ed"] = np.where(np.arange(40) == 3, np.nan, curves["a.ed"])
    if damage == "short_grid":
        curves["b.grid"] = curves["b.grid"][:-1]
    np.savez(tmp_path / "eval" / "curves.npz", **curves)
    written = json.loads((tmp_path / "eval" / "results.json").read_text())
    if damage in ("list", "no_tests"):
        (tmp_path / "eval" / "results.json").write_text(
            "[]" if damage == "list" else json.dumps({**written, "tests": {}}))
    expected = {"nan_curve": "curves of ed in test a are missing, not .* or not finite",
                "short_grid": "curves of imitator in test b", "list": "not a climit results file",
                "no_tests": "holds no test results"}[damage]
    with pytest.raises(ArtifactError, match=expected):
        report.build(tmp_path)


@pytest.mark.parametrize("edit, expected", [
    ({"bootstrap": "many"}, "its bootstrap is 'many'"),
    ({"confidence": float("nan")}, "its confidence is nan"),
    ({"config": "hello"}, "its config is 'hello'"), ({"bootstrap": 0}, "its bootstrap is 0"),
    ({"tests": {"a": [1, 2]}}, "its tests hold 'a': .1, 2."),
])
def test_results_edited_into_wrong_types_are_clear_errors(tmp_path, edit, expected):
    # A results file climit would never write (edited by hand): one line naming it, no traceback.
    synthetic_eval(tmp_path)
    path = tmp_path / "eval" / "results.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **edit}))
    with pytest.raises(ArtifactError, match=f"results.json is damaged: {expected}"):
        report.build(tmp_path)


def _horizon_test(imitator_SxKxP, dqn_SxKxP, grid_P, horizon):
    """A test (b) entry as evaluate.py builds it: metrics after H, and ``before_h`` up to H."""
    curves = {"imitator": imitator_SxKxP, "dqn": dqn_SxKxP}
    test = stats.summarize_test(curves, grid_P, window=(horizon, np.inf), n_boot=200)
    test["markers"] = {"context": 80, "horizon": horizon}
    test["before_h"] = stats.summarize_test(curves, grid_P, window=(-np.inf, horizon), n_boot=200)
    return test


def test_test_b_failure_counts_only_if_the_imitator_matched_the_dqn_before_h():
    rng = np.random.default_rng(1)
    grid = 20 * np.arange(1, 41)
    dqn_P = 15 * (1 - np.exp(-4 * np.linspace(0, 1, 40)))  # still improving after H = 200
    noise = lambda s: 0.2 * rng.standard_normal((s, 6, 40))  # noqa: E731
    dqn = dqn_P[None, None] + noise(4)
    # Matched the DQN up to H, then stopped improving: a real failure to extrapolate.
    flat = np.where(grid <= 200, dqn_P, dqn_P[grid <= 200][-1])[None, None] + noise(3)
    test = _horizon_test(flat, dqn, grid, 200)
    (learns, ok_learns, _), (matches, ok_matches, _) = report.preconditions("b", test)
    assert ok_learns is True and ok_matches is True and "before H" in learns + matches
    assert report.verdict("b", test) == "not supported"
    # A third of the DQN everywhere: it never imitated the first H steps well, so the shortfall
    # after H says nothing about extrapolation.
    weak = 0.3 * dqn_P[None, None] + noise(3)
    test = _horizon_test(weak, dqn, grid, 200)
    assert [ok for _, ok, _ in report.preconditions("b", test)] == [True, False]
    assert any(ok is False for _, ok, _ in report.criteria("b", test))
    assert report.verdict("b", test) == "inconclusive"
    ratio = report.summary({"tests": {"b": test}})["tests"]["b"]["imitator_dqn_auc_ratio_before_h"]
    assert ratio == pytest.approx(0.3, abs=0.05)
    text = "\n".join(report.reading("b", test, {"confidence": 0.95}))
    assert "fell short of the DQN" in text and "extrapolates" in text
    # Close to the DQN before H but with an interval reaching below 0.8: unclear, and an unclear
    # precondition leaves the failure after H unexplained (it may measure the imitation of the
    # first H steps): inconclusive, as the report's caveat says.
    near = np.where(grid <= 200, 0.9 * dqn_P, dqn_P[grid <= 200][-1])[None, None] + noise(3)
    near[0, :, grid <= 200] *= 0.7  # one seed well below: a wide interval around ~0.84
    test = _horizon_test(near, dqn, grid, 200)
    ratio = report.summary({"tests": {"b": test}})["tests"]["b"]
    lo, hi = ratio["imitator_dqn_auc_ratio_before_h_ci"]
    assert lo < 0.8 < hi and ratio["imitator_dqn_auc_ratio_before_h"] >= 0.8
    assert [ok for _, ok, _ in report.preconditions("b", test)] == [True, None]
    assert any(ok is False for _, ok, _ in report.criteria("b", test))
    assert report.verdict("b", test) == "inconclusive"
    # A DQN that had not learned by H (still at its starting return): the H-imitator's histories
    # held no learning, so its flat curve after H says nothing; a matching imitator included.
    late = np.where(grid <= 200, 0.0, 15 * (1 - np.exp(-4 * (np.linspace(0, 1, 40) - 0.25))))
    late_dqn = late[None, None] + noise(4)
    flat_late = np.zeros((3, 6, 40)) + noise(3)
    test_late = _horizon_test(flat_late, late_dqn, grid, 200)
    assert report.preconditions("b", test_late)[0][1] is not True
    assert report.verdict("b", test_late) == "inconclusive"
    assert "did not clearly learn before H" in "\n".join(report.reading("b", test_late,
                                                                          {"confidence": 0.95}))
    # Results written before the precondition existed: no precondition, the verdict as before.
    del test["before_h"]
    assert report.preconditions("b", test) == [] and report.verdict("b", test) == "not supported"
    assert report.summary(
        {"tests": {"b": test}})["tests"]["b"]["imitator_dqn_auc_ratio_before_h"] is None
    # Tests a and c have one: the DQN learns over the window.
    assert [ok for _, ok, _ in report.preconditions("a", _horizon_test(weak, dqn, grid, 200))] \
        == [True]


def test_matches_is_unclear_when_any_ratio_is_undefined():
    nan = math.nan
    good, bad = stats.Estimate(1.0, 0.9, 1.1), stats.Estimate(0.2, 0.1, 0.3)
    assert report._matches(good, good) is True and report._matches(bad, good) is False
    # Python's min/max with NaN depend on the order: (good, undefined) used to read True.
    for undefined in (stats.Estimate(nan, nan, nan), stats.Estimate(1.0, nan, nan),
                      stats.Estimate(1.0, 0.9, nan)):
        for other in (good, bad):
            assert report._matches(undefined, other) is None
            assert report._matches(other, undefined) is None


def _verdict_case(auc_ratio, final_ratio, imitator_auc, ablated_auc):
    """A test (a) entry; the paired difference imitator - ablated spans the two intervals'
    extremes (as wide as a difference of unpaired intervals can be)."""
    E = lambda v, lo, hi: {"value": v, "lo": lo, "hi": hi}  # noqa: E731
    (iv, il, ih), (av, al, ah) = imitator_auc, ablated_auc
    return {"window": [20, 800],
            "agents": {"imitator": {"auc": E(*imitator_auc), "initial": E(2, 1, 3),
                                    "final": E(14, 12, 16), "gain": E(12, 10, 14)},
                       "dqn": {"auc": E(10, 9, 11), "initial": E(2, 1, 3), "final": E(15, 14, 16),
                               "gain": E(13, 11, 15)},
                       "ablated": {"auc": E(*ablated_auc), "initial": E(1, 0, 2),
                                   "final": E(1, 0, 2), "gain": E(0, -1, 1)}},
            "vs_dqn": {"imitator": {"auc_ratio": E(*auc_ratio), "final_ratio": E(*final_ratio),
                                    "steps_to_80_ratio": E(1, 1, 1)}},
            "imitator_vs": {"ablated": {"auc_diff": E(iv - av, il - ah, ih - al)}},
            "seeds": {"imitator": 5, "dqn": 5}, "tasks": 17}


@pytest.mark.parametrize("auc_ratio, final_ratio, imitator_auc, ablated_auc, expected", [
    # A point below 0.8 inside an interval reaching above it is no evidence of a shortfall
    # (this read "not supported" when the AUC ratio was first, "inconclusive" when second).
    ((0.79, 0.5, 1.3), (1.0, 0.9, 1.1), (9, 8, 10), (3, 2, 4), "inconclusive"),
    ((1.0, 0.9, 1.1), (0.79, 0.5, 1.3), (9, 8, 10), (3, 2, 4), "inconclusive"),
    # Either ratio's interval wholly below 0.8: a clear shortfall, whichever it is.
    ((1.0, 0.9, 1.1), (0.5, 0.4, 0.7), (9, 8, 10), (3, 2, 4), "not supported"),
    ((0.5, 0.4, 0.7), (1.0, 0.9, 1.1), (9, 8, 10), (3, 2, 4), "not supported"),
    # Level with the ablated control, intervals overlapping: unclear, not a clear loss.
    ((1.0, 0.9, 1.1), (1.0, 0.9, 1.1), (9.0, 5, 13), (9.01, 5, 13), "inconclusive"),
    # Clearly below the control: a clear loss.
    ((1.0, 0.9, 1.1), (1.0, 0.9, 1.1), (3, 2, 4), (9, 8, 10), "not supported"),
    ((1.0, 0.9, 1.1), (1.0, 0.9, 1.1), (9, 8, 10), (3, 2, 4), "supported"),
    # At the 0.8 line: an interval from exactly 0.8 keeps up; one just under it is unclear,
    # and one wholly under it falls short.
    ((0.85, 0.80, 0.90), (1.0, 0.9, 1.1), (9, 8, 10), (3, 2, 4), "supported"),
    ((0.82, 0.79, 0.90), (1.0, 0.9, 1.1), (9, 8, 10), (3, 2, 4), "inconclusive"),
    ((0.77, 0.70, 0.79), (1.0, 0.9, 1.1), (9, 8, 10), (3, 2, 4), "not supported"),
])
def test_verdicts_follow_from_intervals_not_points(auc_ratio, final_ratio, imitator_auc,
                                                   ablated_auc, expected):
    test = _verdict_case(auc_ratio, final_ratio, imitator_auc, ablated_auc)
    assert report.verdict("a", test) == expected


def test_test_b_controls_trained_on_full_histories_are_not_comparable(tmp_path):
    name = "beats the context-ablated imitator (AUC)"
    results, _ = synthetic_eval(tmp_path, controls_trained_to_h=True)
    test = results["tests"]["b"]
    checks = {n: (ok, ev) for n, ok, ev in report.criteria("b", test)}
    assert checks[name][0] is True and report.verdict("b", test) == "supported"
    md = report.markdown(results)
    assert "| context-ablated imitator (3 seeds) |" in md and "(full histories)" not in md

    results, _ = synthetic_eval(tmp_path, controls_trained_to_h=False)
    test = results["tests"]["b"]
    checks = {n: (ok, ev) for n, ok, ev in report.criteria("b", test)}
    assert checks[name] == (None, "not comparable: the controls were trained on the full "
                                  "histories, not the first H steps; set "
                                  "eval.horizon_controls=true")
    assert checks["beats the random policy (AUC)"][0] is True  # untrained: still comparable
    assert report.verdict("b", test) == "inconclusive"  # was supported with the same numbers
    # Test (a) has no H: its controls are compared as ever.
    assert report.verdict("a", results["tests"]["a"]) == "supported"
    md = report.markdown(results)
    b_section = md[md.index("## (b)"):md.index("## (c)")]
    assert "| context-ablated imitator (full histories) (3 seeds) |" in b_section
    assert "| expert distillation (ED) (full histories) (3 seeds) |" in b_section
    assert "not comparable with the H-imitator" in b_section
    assert "evidence of learning in context" not in b_section  # no claim from unlike controls
    assert "(full histories)" not in md[:md.index("## (b)")]


def _scaled_test(seeds, tasks, env="darkroom"):
    """A test entry whose imitator equals the DQN, with ``seeds`` imitator seeds x ``tasks``."""
    grid = 20 * np.arange(1, 11)
    curve = np.linspace(0.0, 10.0, 10)[None, None]
    c = {"imitator": curve.repeat(seeds, 0).repeat(tasks, 1),
         "dqn": curve.repeat(2, 0).repeat(tasks, 1)}
    return {**stats.summarize_test(c, grid, n_boot=20), "env": env}


def test_summary_records_scale_and_provisional_against_the_tasks_the_env_has(tmp_path):
    results, _ = synthetic_eval(tmp_path)
    a = report.summary(results)["tests"]["a"]
    assert (a["imitator_seeds"], a["dqn_seeds"], a["tasks"], a["provisional"]) == (3, 4, 6, True)
    full_darkroom = {"env": "darkroom", "tests": {"a": _scaled_test(5, 17)}}
    # Without the count of held-out tasks: the planned 20, so 17 tasks fall short.
    assert report.summary(full_darkroom)["tests"]["a"]["provisional"] is True
    # Dark Room has 17 held-out goals: all of them with 5 seeds is the full scale.
    full_darkroom["heldout_tasks_available"] = 17
    s = report.summary(full_darkroom)["tests"]
    assert s["a"]["provisional"] is False and s["a"]["tasks"] == 17
    assert s["b"]["provisional"] is None and s["b"]["imitator_seeds"] is None
    assert report.planned_tasks(full_darkroom["tests"]["a"], full_darkroom) == 17
    # Fewer seeds, or a test on another env (whose count the top-level key is not), stay
    # provisional; a per-test count applies to its own test.
    assert report.summary({"env": "darkroom", "heldout_tasks_available": 17,
                           "tests": {"a": _scaled_test(4, 17)}})["tests"]["a"]["provisional"]
    c = _scaled_test(5, 17, env="keydoor")
    other = {"env": "darkroom", "heldout_tasks_available": 17, "tests": {"c": c}}
    assert report.summary(other)["tests"]["c"]["provisional"] is True
    c["heldout_tasks_available"] = 17
    assert report.summary(other)["tests"]["c"]["provisional"] is False
    assert report.summary(
        {"tests": {"a": _scaled_test(5, 20)}})["tests"]["a"]["provisional"] is False
    # The report's caveat and verdict line use the same rule.
    full_darkroom["tests"] = {"a": full_darkroom["tests"]["a"]}
    md = report.markdown(full_darkroom)
    assert "small run" not in md and "provisional" not in md
    del full_darkroom["heldout_tasks_available"]
    md = report.markdown(full_darkroom)
    assert "Verdict: supported (provisional: 5 seeds x 17 tasks)." in md
    assert "the claim calls for at least 5 x 20" in md
    # ... and so does the one-line headline `climit report` and `climit run` print.
    (line,) = report.headline(report.summary(full_darkroom))
    assert line.startswith("test (a) skill match: supported (provisional: 5 seeds x 17 tasks); ")
    full_darkroom["heldout_tasks_available"] = 17
    (line,) = report.headline(report.summary(full_darkroom))
    assert line.startswith("test (a) skill match: supported; ")


def test_reading_states_what_the_numbers_measure(tmp_path):
    results, _ = synthetic_eval(tmp_path)
    a = "\n".join(report.reading("a", results["tests"]["a"], results))
    b = "\n".join(report.reading("b", results["tests"]["b"], results))
    # initial = the window's first grid point: the episodes that ended by env step 20 in (a),
    # between 200 (H) and 220 in (b).
    assert "in the window's first bin (episodes ending by env step 20) it returned" in a
    assert ("in the window's first bin (episodes ending after env step 200 and by 220) it "
            "returned") in b
    assert "episodes that ended between env steps 0 and 800" in a
    assert "episodes that ended between env steps 200 and 800" in b
    assert ("resampling imitator seeds and tasks; the DQN's learners are averaged within each "
            "task") in a
    assert "on 6 held-out tasks of darkroom" in a
    # Beating ED shows more than replaying a final policy; the ablated control is what speaks
    # for learning in context, and only when it is clearly beaten.
    assert "more than replaying a final policy" in a and "evidence of learning in context" in a
    assert "not from replaying" not in a
    test = json.loads(json.dumps(results["tests"]["a"]))
    test["agents"]["ablated"] = test["agents"]["imitator"]
    test["imitator_vs"]["ablated"]["auc_diff"] = {"value": 0.0, "lo": -1.0, "hi": 1.0}
    text = "\n".join(report.reading("a", test, results))
    assert "more than replaying a final policy" in text and "learning in context" not in text
    # Sample mode: no greedy caveat; greedy mode: says whom it favours.
    assert "greedily" not in a
    greedy = "\n".join(report.reading("a", results["tests"]["a"], {**results, "mode": "greedy"}))
    assert "acted greedily" in greedy and "favours the imitator" in greedy
    # Single-task envs (MinAtar: [K, 0] tasks) evaluate on env seeds; unknown: both words.
    seeds = {**results, "tasks": {"a": [[] for _ in range(6)]}}
    text = "\n".join(report.reading("a", results["tests"]["a"], seeds))
    assert "on 6 evaluation seeds of darkroom" in text and "held-out task" not in text
    text = "\n".join(report.reading("c", results["tests"]["c"], results))  # keydoor: not recorded
    assert "on 6 held-out task(s) or seeds of keydoor" in text
    # One place for the settings' defaults: a file without them reads as the config's defaults.
    bare = {k: v for k, v in results.items() if k not in ("confidence", "final_frac")}
    text = "\n".join(report.reading("a", results["tests"]["a"], bare))
    assert "(95% interval" in text and "mean over its last 10%" in report.markdown(bare)
    other = {**bare, "confidence": 0.9, "final_frac": 0.2}
    text = "\n".join(report.reading("a", results["tests"]["a"], other))
    assert "(90% interval" in text and "mean over its last 20%" in report.markdown(other)
    assert report.setting({}, "bootstrap") == stats.DEFAULT_BOOTSTRAP == 1000
    assert report.setting({"bootstrap": 50}, "bootstrap") == 50


def test_reading_says_when_the_imitator_outpaces_the_dqn():
    grid = 10 * np.arange(1, 101)
    t = np.arange(1, 101)
    dqn = np.minimum(t / 46, 1.0)[None, None].repeat(2, 0).repeat(5, 1)  # 0.8 at t = 36.8
    fast = np.minimum(t / 11, 1.0)[None, None].repeat(2, 0).repeat(5, 1)  # 0.8 at t = 8.8
    test = {**stats.summarize_test({"imitator": fast, "dqn": dqn}, grid, n_boot=50),
            "env": "darkroom"}
    steps = test["vs_dqn"]["imitator"]["steps_to_80_ratio"]
    assert steps["value"] == pytest.approx(90 / 370) and steps["hi"] < 1
    assert report.criteria("a", test)[0][1] is True  # one-sided: being ahead passes
    text = "\n".join(report.reading("a", test, {}))
    assert "reached the DQN's level faster than the DQN did" in text and "outpaces it" in text
    same = {**stats.summarize_test({"imitator": dqn, "dqn": dqn}, grid, n_boot=50), "env": "x"}
    assert "outpaces" not in "\n".join(report.reading("a", same, {}))
    assert "step for step" not in report.TESTS["a"][1]


def test_subsampling_is_stated_and_ed_only_where_it_kept_every_episode():
    results = {"config": {"imitator": {"subsample": 10}},
               "imitators": {"ed": {"data": "the last 0.2 of all 30000 env steps, every episode",
                                    "subsample": 1}}}
    text = "\n".join(report._subsample_lines(results))
    assert "kept 1 episode in 10 of each DQN's (ED learns from every episode" in text
    assert "about 10 times ahead of the DQN" in text and "about H/10 of its own steps" in text
    # results of runs whose ED was subsampled too record no "data": nothing is said of ED there
    older = {"config": {"imitator": {"subsample": 10}}, "imitators": {"ed": {"tag": "ed"}}}
    text = "\n".join(report._subsample_lines(older))
    assert "1 episode in 10 of each DQN's, so" in text and "ED" not in text
    assert report._subsample_lines({"config": {"imitator": {"subsample": 1}}}) == []


def test_reading_of_a_dqn_that_never_learns():
    grid = 10 * np.arange(1, 21)
    zeros = np.zeros((2, 3, 20))
    test = {**stats.summarize_test({"imitator": zeros, "dqn": zeros}, grid, n_boot=50),
            "env": "darkroom"}
    assert report.criteria("a", test)[0][1] is None  # 0/0: undefined, not a match
    text = "\n".join(report.reading("a", test, {}))
    assert "steps-to-80% ratio is undefined" in text


def test_a_steps_ratio_from_fewer_imitator_seeds_than_dqn_learners_says_it_leans_low():
    ratio = stats.Estimate(0.9, 0.7, 1.2)
    text = " ".join(report._steps_sentences(ratio, "", {"imitator": 1, "dqn": 5}))
    assert ("averages 1 seed per task against the DQN's 5 learners" in text
            and "leans below its true value" in text)
    for seeds in ({"imitator": 5, "dqn": 5}, None):
        assert "leans below" not in " ".join(report._steps_sentences(ratio, "", seeds))
    never = stats.Estimate(math.inf, math.inf, math.inf)  # no crossing: nothing to lean
    assert "leans below" not in " ".join(report._steps_sentences(never, "",
                                                                 {"imitator": 1, "dqn": 5}))


def test_num_prints_inf_as_its_docstring_says():
    assert report._num("inf") == "inf" and report._num(None) == "n/a"
    assert report._num(0.5) == "0.5" and report._num("-inf") == "-inf"


@pytest.mark.parametrize("name", ["darkroom_cpu", "darkroom_gpu"])
def test_committed_report_is_what_the_report_code_builds_from_its_evaluation(name):
    """docs/darkroom_cpu and docs/darkroom_gpu (the README's evidence) hold an evaluation and the
    report built from it: a change to the report's wording or statistics must regenerate them.

    docs/darkroom_cpu has its curves, so its report is what `climit report docs/darkroom_cpu`
    writes (statistics recomputed from the curves, as for any run): run that, then copy
    report/report.md and report/summary.json up. The GPU run kept results.json alone, so its
    report is built from the statistics stored there (a new statistic reads n/a):
    python -c "import json; from climit import report; d = 'docs/darkroom_gpu/';
    r = json.load(open(d + 'eval/results.json')); open(d + 'report.md', 'w').write(
    report.markdown(r)); open(d + 'summary.json', 'w').write(json.dumps(report.summary(r),
    indent=1))"
    """
    docs = Path(__file__).parent.parent / "docs" / name
    if (docs / "eval" / "curves.npz").is_file():
        results, curves = report.load_eval(docs)
        results = report.with_statistics(results, curves)
    else:
        results = json.loads((docs / "eval" / "results.json").read_text())
    assert report.markdown(results) == (docs / "report.md").read_text()
    assert report.summary(results) == json.loads((docs / "summary.json").read_text())


def test_window_recomputes_each_test_over_the_given_env_steps(tmp_path):
    """The imitator equals the DQN over env steps (0, 400] and is 0 after: the window tables
    give an AUC ratio of exactly 1, then 0; the whole window reproduces results.json."""
    results, curves = synthetic_eval(tmp_path)
    grid = curves["a.grid"]
    dqn_mean_1xKxP = curves["a.dqn"].mean(axis=0, keepdims=True)
    curves["a.imitator"] = np.where(grid <= 400, np.repeat(dqn_mean_1xKxP, 3, axis=0), 0.0)
    first = report.window_stats(results, curves, (0, 400))
    assert first["a"]["window"] == [20, 400] and first["a"]["grid_points"] == 20
    assert first["a"]["vs_dqn"]["imitator"]["auc_ratio"]["value"] == pytest.approx(1.0)
    later = report.window_stats(results, curves, (400, math.inf))
    assert later["a"]["vs_dqn"]["imitator"]["auc_ratio"]["value"] == 0.0
    assert set(later) == {"a", "b", "c"}
    assert report.window_stats(results, curves, (5000, math.inf)) == {}  # no grid point there
    # Over a test's own whole window, with the evaluation's settings and seed: its numbers.
    whole = report.window_stats(results, curves, (-math.inf, math.inf))["a"]
    assert whole["vs_dqn"]["ed"] == results["tests"]["a"]["vs_dqn"]["ed"]


def test_window_over_the_whole_run_reproduces_the_committed_evaluation():
    """The real CPU run (docs/darkroom_cpu/eval): each test over its own window, bootstrapped
    with evaluate's seed for that test (run.seed + its index), gives results.json's numbers."""
    results, curves = report.load_eval(Path(__file__).parent.parent / "docs" / "darkroom_cpu")
    for key, window in (("a", (-math.inf, math.inf)), ("b", (results["horizon"], math.inf))):
        entry = report.window_stats(results, curves, window)[key]
        assert entry["vs_dqn"] == results["tests"][key]["vs_dqn"], key


def test_report_window_command_prints_tables_and_refuses_bad_windows(tmp_path):
    synthetic_eval(tmp_path)
    run = lambda *a: subprocess.run([sys.executable, "-m", "climit.cli", "report",
                                     str(tmp_path), *a],
                                    capture_output=True, text=True)
    out = run("--window", "0:400")
    assert out.returncode == 0 and "## (a) skill match: env steps (0, 400]" in out.stdout
    assert not (tmp_path / "report").exists()  # a window prints; it builds no report
    for bad in ("400", "400:0", "a:b", "-5:"):  # a negative start would shift steps to 80%
        assert run("--window", bad).returncode == 2
    out = run("--out", str(tmp_path / "elsewhere"))  # a run's report has one place
    assert out.returncode == 1 and "--out goes with --compare" in out.stderr
    out = run("--window", "9000:")
    assert out.returncode == 1 and "no test" in out.stderr


def test_score_imitator_scores_the_runs_own_imitator_as_its_report_does(tmp_path):
    """scripts/score_imitator.py: the run's imitator gets results.json's ratios and intervals
    (test (b): before_h up to H, the test's own after), and another imitator's curves (here
    ED's, crossed like the imitator's) get what the evaluation gave that agent."""
    results, curves = synthetic_eval(tmp_path)
    tool = procs.load_script("score_imitator")

    def expected(entry):
        return {m: [round(entry[f"{m}_ratio"][k], 3) for k in ("value", "lo", "hi")]
                for m in ("auc", "final")}

    def got(line_):
        return {m: [line_[f"{m}_ratio"], *line_[f"{m}_ratio_ci"]] for m in ("auc", "final")}

    a_run, a_ed = tool.score(results, curves, "a", {"run": curves["a.imitator"],
                                                   "ed": curves["a.ed"]})
    assert got(a_run) == expected(results["tests"]["a"]["vs_dqn"]["imitator"])
    assert got(a_ed) == expected(results["tests"]["a"]["vs_dqn"]["ed"])
    before, after = tool.score(results, curves, "b", {"run": curves["b.imitator"]})
    assert (before["window"], after["window"]) == ("up to H", "after H")
    assert got(before) == expected(results["tests"]["b"]["before_h"]["vs_dqn"]["imitator"])
    assert got(after) == expected(results["tests"]["b"]["vs_dqn"]["imitator"])


def test_score_imitator_prints_null_and_inf_where_the_report_prints_n_a_and_inf(tmp_path):
    """Returns at or below zero give ratios without a number: both below zero an undefined one
    (None, the report's n/a), a positive imitator against them +inf. The script's line carries
    null and "inf" as results.json does, instead of failing to round them."""
    results, curves = synthetic_eval(tmp_path)
    tool = procs.load_script("score_imitator")
    below = lambda c: -np.abs(c) - 1.0  # noqa: E731
    dqn_below = {**curves, "a.dqn": below(curves["a.dqn"])}
    (both,) = tool.score(results, dqn_below, "a", {"run": below(curves["a.imitator"])})
    (imitator_up,) = tool.score(results, dqn_below, "a", {"run": np.abs(curves["a.imitator"]) + 1})
    for m in ("auc", "final"):
        assert both[f"{m}_ratio"] is None and both[f"{m}_ratio_ci"] == [None, None]
        assert imitator_up[f"{m}_ratio"] == "inf" and imitator_up[f"{m}_ratio_ci"] == ["inf"] * 2
    assert both["dqn_auc"] == round(float(dqn_below["a.dqn"].mean()), 3) < 0
    assert json.loads(json.dumps([both, imitator_up])) == [both, imitator_up]


def _estimate(value, lo, hi):
    return {"value": value, "lo": lo, "hi": hi}


def test_improves_in_context_is_unclear_when_the_dqn_does_not_clearly_learn():
    """The DQN's gain interval holds 0: "improves in context" cannot be judged, so an imitator
    that matches the DQN and gains is still no 'supported' verdict."""
    test = {"window": [20, 800],
            "agents": {"imitator": {"auc": _estimate(9, 8, 10), "initial": _estimate(2, 1, 3),
                                    "final": _estimate(14, 12, 16), "gain": _estimate(12, 10, 14)},
                       "dqn": {"auc": _estimate(10, 9, 11), "initial": _estimate(8, 6, 10),
                               "final": _estimate(9, 7, 11), "gain": _estimate(1, -1, 3)}},
            "vs_dqn": {"imitator": {"auc_ratio": _estimate(1.0, 0.9, 1.1),
                                    "final_ratio": _estimate(1.0, 0.9, 1.1),
                                    "steps_to_80_ratio": _estimate(1, 1, 1)}},
            "imitator_vs": {}, "seeds": {"imitator": 5, "dqn": 5}, "tasks": 17}
    (_, matches, _), (_, improves, evidence) = report.criteria("a", test)
    assert matches is True
    assert improves is None and evidence.startswith("not testable here")
    assert report.verdict("a", test) == "inconclusive"


@pytest.mark.parametrize("flag, test", [([], "b"), (["--test", "a"], "a"), (["--test", "b"], "b")])
def test_score_imitator_cli_scores_the_given_imitator_in_the_chosen_test(tmp_path, monkeypatch,
                                                                         capsys, flag, test):
    """main(): the chosen test (default b), rolled out to that test's last grid step; the run's
    imitator of that test and the given one, scored as :func:`score` scores them."""
    results, curves = synthetic_eval(tmp_path)
    tool = procs.load_script("score_imitator")
    rolled = []

    def steps(loaded, env, tasks, key, num_steps, cfg, desc, progress):
        rolled.append((loaded, tasks.tolist(), key, num_steps, desc))
        return "reward", "done"

    monkeypatch.setattr(tool.ev, "heldout_family",
                        lambda cfg: ("env", np.array(results["tasks"]["a"]),
                                     types.SimpleNamespace(env="env key")))
    monkeypatch.setattr(tool.imitator_train, "load", lambda path, step: ("loaded", str(path), step))
    monkeypatch.setattr(tool.ev, "imitator_steps", steps)
    monkeypatch.setattr(tool.ev, "curves_from_steps", lambda r, d, grid_P: curves[f"{test}.ed"])
    monkeypatch.setattr(sys, "argv", ["score_imitator.py", str(tmp_path), str(tmp_path / "other"),
                                      *flag])
    tool.main()
    lines = [json.loads(s) for s in capsys.readouterr().out.splitlines()]
    assert rolled == [(("loaded", str(tmp_path / "other"), "best"), results["tasks"]["a"],
                       "env key", int(curves[f"{test}.grid"][-1]), str(tmp_path / "other"))]
    want = tool.score(results, curves, test,
                      {f"run's imitator of test ({test})": curves[f"{test}.imitator"],
                       str(tmp_path / "other"): curves[f"{test}.ed"]})
    assert lines == json.loads(json.dumps(want)) and len(lines) == (2 if test == "a" else 4)


# Known answers for mutants that survived the suite: each assertion pins one condition or field.

def test_an_unclear_dqn_gain_hints_a_smaller_h_in_test_b_and_is_a_caveat_in_tests_a_and_c():
    test = _verdict_case((1.0, 0.9, 1.1), (1.0, 0.9, 1.1), (9, 8, 10), (3, 2, 4))
    test["agents"]["dqn"]["gain"] = _estimate(1, -1, 3)  # holds 0: the DQN's learning is unclear
    for key in ("a", "b", "c"):
        (_, improves, evidence) = report.criteria(key, test)[1]
        assert improves is None and evidence.startswith("not testable here")
        assert evidence.endswith("; choose a smaller H") is (key == "b")
    # Unclear (not only clearly absent) learning is what the caveat of tests (a) and (c) names.
    (caveat,) = report._precondition_caveats("a", test)
    assert caveat.startswith("The DQN did not clearly learn over this window")


def test_summary_records_the_evaluations_confidence():
    assert report.summary({"confidence": 0.9, "tests": {}})["confidence"] == 0.9
    assert report.summary({"tests": {}})["confidence"] == stats.DEFAULT_CONFIDENCE


def _rising_curves(key, grid, seeds=2, tasks=5):
    """Curves of an imitator at half the DQN's rising return on ``grid``."""
    curve = np.linspace(0.0, 10.0, len(grid))[None, None].repeat(tasks, 1)
    return {f"{key}.grid": grid, f"{key}.imitator": 0.5 * curve.repeat(seeds, 0),
            f"{key}.dqn": curve.repeat(seeds, 0)}


def test_statistics_use_the_evaluations_final_frac():
    curves = _rising_curves("a", 20 * np.arange(1, 11))
    for frac, last in ((0.5, 5), (0.1, 1)):
        results = {"final_frac": frac, "bootstrap": 20, "tests": {"a": {}}}
        dqn = report.with_statistics(results, curves)["tests"]["a"]["agents"]["dqn"]
        assert dqn["final"]["value"] == pytest.approx(np.linspace(0, 10, 10)[-last:].mean())


def test_before_h_is_kept_when_the_first_grid_point_is_h_itself():
    """The first bin ends at H: its episodes ended by H, what the H-imitator's histories held."""
    for start, kept in ((200, True), (220, False)):
        curves = _rising_curves("b", start + 20 * np.arange(10))
        # A before_h the results already carry is recomputed, or dropped where none applies.
        results = {"horizon": 200, "bootstrap": 20, "tests": {"b": {"before_h": "stale"}}}
        entry = report.with_statistics(results, curves)["tests"]["b"]
        assert ("before_h" in entry) is kept and entry.get("before_h") != "stale"
        assert entry["steps_counted_from"] == 200


def test_window_leaves_out_a_test_whose_only_point_is_the_windows_open_start():
    curves = _rising_curves("a", 20 * np.arange(1, 11))
    results = {"bootstrap": 20, "tests": {"a": {}}}
    assert report.window_stats(results, curves, (200, 1000)) == {}
    assert list(report.window_stats(results, curves, (180, 1000))) == ["a"]


def test_caveats_at_their_edges():
    ratio = stats.Estimate(0.9, 0.7, 1.2)
    # No imitator seeds recorded: no "leans low" against the DQN's learners.
    assert "leans below" not in " ".join(report._steps_sentences(ratio, "", {"dqn": 5}))
    caveats = lambda test: " ".join(report._caveats("a", test, {}, "task"))  # noqa: E731
    assert "With one imitator seed" in caveats(_scaled_test(1, 5))
    assert "With one imitator seed" not in caveats(_scaled_test(2, 5))
    # stats.MIN_TASKS tasks get an interval; one fewer does not.
    assert "no interval is given" not in caveats(_scaled_test(5, stats.MIN_TASKS))
    assert "no interval is given" in caveats(_scaled_test(5, stats.MIN_TASKS - 1))
    # Past the teacher's histories only when the window ends after them (it ends at step 200).
    test = _scaled_test(5, 5)
    beyond = lambda steps: report._beyond_histories(  # noqa: E731
        "a", test, {"config": {"teacher": {"total_env_steps": steps}}})
    assert beyond(200) == [] and "hold 199 env steps" in beyond(199)[0]


def test_headline_prints_each_ratio_with_its_interval_in_order():
    summary = {"tests": {"a": {"ran": True, "verdict": "supported",
                               "imitator_dqn_auc_ratio": 0.9,
                               "imitator_dqn_auc_ratio_ci": [0.8, 1.0],
                               "imitator_dqn_final_ratio": "inf",
                               "imitator_dqn_final_ratio_ci": [0.5, "inf"]},
                         "b": {"ran": False}}}
    assert report.headline(summary) == [
        "test (a) skill match: supported; imitator/DQN auc ratio 0.9 [0.8, 1], "
        "final ratio inf [0.5, inf]"]


def test_plot_draws_each_agents_band_as_the_statistics_resample_it(tmp_path, monkeypatch):
    import matplotlib.axes

    results, curves = synthetic_eval(tmp_path)
    drawn = {"band": [], "span": []}
    fill, span = matplotlib.axes.Axes.fill_between, matplotlib.axes.Axes.axvspan

    def record_band(ax, x, lo, hi, **kw):
        drawn["band"].append((kw["color"], np.asarray(lo), np.asarray(hi)))
        return fill(ax, x, lo, hi, **kw)

    def record_span(ax, start, end, **kw):
        drawn["span"].append((start, end))
        return span(ax, start, end, **kw)

    monkeypatch.setattr(matplotlib.axes.Axes, "fill_between", record_band)
    monkeypatch.setattr(matplotlib.axes.Axes, "axvspan", record_span)
    test = results["tests"]["b"]
    report.plot_test("b", test, curves, tmp_path / "b.png", confidence=0.9, n_boot=50)
    # The DQN's and the random policy's rows are per-cell learners, the others crossed seeds.
    assert [color for color, _, _ in drawn["band"]] == [report.COLORS[a] for a in report.AGENTS]
    for agent, (_, lo, hi) in zip(report.AGENTS, drawn["band"]):
        _, want_lo, want_hi = stats.curve_band(curves[f"b.{agent}"], n_boot=50, confidence=0.9,
                                               crossed=agent not in stats.PER_CELL)
        np.testing.assert_allclose(lo, want_lo)
        np.testing.assert_allclose(hi, want_hi)
    # Test (b)'s metrics count from H: the shaded span starts there.
    assert drawn["span"] == [(200, test["window"][1])]


def test_only_test_b_controls_recorded_as_full_history_are_not_comparable():
    """Results older than ``controls_trained_to_h`` record nothing: comparable, as before."""
    assert report.full_history_controls("b", {"controls_trained_to_h": False}) is True
    assert report.full_history_controls("b", {}) is False
    assert report.full_history_controls("a", {"controls_trained_to_h": False}) is False


def test_the_report_says_which_ablation_the_context_ablated_control_is(tmp_path):
    # Every eval.ablation the config accepts is described; results from before the field was
    # recorded get no sentence rather than a guess.
    import typing

    from climit import config

    allowed = typing.get_args(typing.get_type_hints(config.EvalConfig)["ablation"])
    assert set(report.ABLATIONS) == set(allowed)
    results, _ = synthetic_eval(tmp_path)
    for kind in allowed:
        md = report.markdown({**results, "ablation": kind})
        assert f"The context-ablated imitator (eval.ablation: {kind}) {report.ABLATIONS[kind]}." \
            in md
    md = report.markdown({k: v for k, v in results.items() if k != "ablation"})
    assert "eval.ablation" not in md
