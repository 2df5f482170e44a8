"""`climit report --compare`: the table, plot and JSON across runs, without JAX, and its errors."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml

from climit import cli, compare
from climit.errors import ArtifactError


def _test(auc, auc_ci, final, final_ci, verdict="inconclusive"):
    return {"ran": True, "verdict": verdict, "imitator_dqn_auc_ratio": auc,
            "imitator_dqn_auc_ratio_ci": auc_ci, "imitator_dqn_final_ratio": final,
            "imitator_dqn_final_ratio_ci": final_ci}


NOT_RUN = {"ran": False, "verdict": None, "imitator_dqn_auc_ratio": None,
           "imitator_dqn_auc_ratio_ci": [None, None], "imitator_dqn_final_ratio": None,
           "imitator_dqn_final_ratio_ci": [None, None]}


def fake_run(root, name, config, tests, *, config_yaml=True, results_config=None):
    """A run directory with config.yaml (or only eval/results.json's config) and a report summary;
    ``results_config`` (when given) is stored in eval/results.json beside config.yaml."""
    rd = root / name
    (rd / "report").mkdir(parents=True)
    cfg = {"run": {"name": name, "runs_dir": str(root), "seed": 0}, **config}
    if config_yaml:
        (rd / "config.yaml").write_text(yaml.safe_dump(cfg))
    stored = results_config if config_yaml else cfg
    if stored is not None:
        (rd / "eval").mkdir()
        (rd / "eval" / "results.json").write_text(json.dumps({"format": 1, "config": stored}))
    summary = {"format": 1, "confidence": 0.95, "tests": {"c": NOT_RUN, **tests}}
    (rd / "report" / "summary.json").write_text(json.dumps(summary))
    return rd


@pytest.fixture
def runs(tmp_path):
    a = fake_run(tmp_path, "ctx20", {"imitator": {"context_len": 20, "d_model": 64}},
                 {"a": _test(0.5, [0.25, 0.75], 0.9, [0.5, "inf"], "not supported"),
                  "b": _test(1.0, [0.8, 1.2], 1.1, [0.9, 1.3])})
    b = fake_run(tmp_path, "ctx40", {"imitator": {"context_len": 40, "d_model": 64}},
                 {"a": _test(0.85, [0.81, 0.9], "inf", [2.0, "inf"], "supported"), "b": NOT_RUN},
                 config_yaml=False)
    return a, b


def test_table_plot_and_json_have_the_known_numbers(runs, tmp_path):
    a, b = runs
    loaded = compare.load_runs([a, b])
    assert compare.differing_keys(loaded) == ["imitator.context_len"]
    assert compare.tests_run(loaded) == ["a", "b"]
    out = compare.build([a, b], tmp_path / "cmp")
    md = (out / "compare.md").read_text().splitlines()
    assert md[4] == ("| run | imitator.context_len | (a) verdict | (a) AUC / DQN | (a) final / DQN "
                     "| (b) verdict | (b) AUC / DQN | (b) final / DQN |")
    assert md[6] == ("| ctx20 | 20 | not supported | 0.5 [0.25, 0.75] | 0.9 [0.5, inf] "
                     "| inconclusive | 1 [0.8, 1.2] | 1.1 [0.9, 1.3] |")
    assert md[7] == ("| ctx40 | 40 | supported | 0.85 [0.81, 0.9] | inf [2, inf] "
                     "| not run | n/a | n/a |")
    assert "Config keys that differ: imitator.context_len." in md[2]
    data = json.loads((out / "compare.json").read_text())
    assert data["keys"] == ["imitator.context_len"]
    assert data["runs"][1]["config"] == {"imitator.context_len": 40}
    assert [r["path"] for r in data["runs"]] == [str(a), str(b)]
    assert data["runs"][1]["tests"]["a"]["final_ratio"] == ["inf", 2.0, "inf"]
    assert data["runs"][1]["tests"]["b"] == {"ran": False, "verdict": None,
                                             "provisional": None, "imitator_seeds": None,
                                             "dqn_seeds": None, "tasks": None,
                                             "auc_ratio": [None, None, None],
                                             "final_ratio": [None, None, None]}
    assert (out / "compare.png").read_bytes()[:4] == b"\x89PNG"
    # The numeric swept key is the x axis; two keys (or a non-numeric one) fall back to runs.
    assert compare._x_axis(loaded, ["imitator.context_len"]) == ([20.0, 40.0], ["20", "40"],
                                                                 "imitator.context_len")
    assert compare._x_axis(loaded, [])[2] == "run"


def test_compare_cli_runs_without_jax(runs, tmp_path):
    a, b = runs
    out = tmp_path / "nojax"
    code = textwrap.dedent(f"""
        import sys
        sys.modules["jax"] = None  # any `import jax` now raises ImportError
        sys.modules["jaxlib"] = None
        from climit import cli
        assert cli.main(["report", "--compare", {str(a)!r}, {str(b)!r}, "--out", {str(out)!r}]) == 0
        assert "jax" not in [m for m in sys.modules if sys.modules[m] is not None]
    """)
    res = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert "| ctx40 | 40 |" in res.stdout and f"comparison -> {out / 'compare.md'}" in res.stdout
    assert (out / "compare.png").is_file()


def _error(capsys, *argv):
    rc = cli.main(["report", *map(str, argv)])
    out, err = capsys.readouterr()
    assert rc == 1 and out == "" and len(err.strip().splitlines()) == 1, err
    return err


def test_clear_errors(runs, tmp_path, capsys):
    a, b = runs
    bare = tmp_path / "bare"
    (bare / "eval").mkdir(parents=True)
    err = _error(capsys, "--compare", a, bare, "--out", tmp_path / "x")
    assert f"{bare} has no report" in err and f"climit report {bare}" in err
    assert "no such run directory" in _error(capsys, "--compare", a, tmp_path / "nope")
    assert "two or more" in _error(capsys, "--compare", a)
    assert "not both" in _error(capsys, a, "--compare", a, b)
    assert "more than once" in _error(capsys, "--compare", a,
                                      tmp_path / ".." / tmp_path.name / "ctx20")
    assert "not with --compare" in _error(capsys, "--compare", a, b, "--window", "0:10")
    (tmp_path / "afile").write_text("")
    assert f"--out {tmp_path / 'afile'} is a file" in _error(capsys, "--compare", a, b, "--out",
                                                             tmp_path / "afile")
    summary = json.loads((b / "report" / "summary.json").read_text())
    for damaged in ({"a": "x"}, {"a": {**summary["tests"]["a"], "imitator_dqn_auc_ratio": "big"}},
                    {"a": {**summary["tests"]["a"], "imitator_dqn_final_ratio_ci": [1.0]}}):
        (b / "report" / "summary.json").write_text(json.dumps({**summary, "tests": damaged}))
        assert "summary.json is damaged: its tests hold 'a'" in _error(capsys, "--compare", a, b)
    (b / "report" / "summary.json").write_text("[1, 2]")
    assert "holds a JSON list, not an object" in _error(capsys, "--compare", a, b)
    (b / "report" / "summary.json").write_text("{oops")
    assert "is not valid JSON" in _error(capsys, "--compare", a, b)
    assert not (tmp_path / "x").exists()


def test_a_report_older_than_its_evaluation_is_refused(tmp_path):
    """Re-evaluated without a new report: the config would come from the new evaluation and
    the numbers from the old report."""
    rd = fake_run(tmp_path, "r", {"imitator": {"context_len": 64}}, {"a": NOT_RUN},
                  results_config={"imitator": {"context_len": 64}})
    for name, fp in (("results.json", "new"), ("summary.json", "old")):
        path = rd / ("eval" if name == "results.json" else "report") / name
        path.write_text(json.dumps({**json.loads(path.read_text()), "fingerprint": fp}))
    with pytest.raises(ArtifactError, match=f"older than its evaluation.*climit report {rd}"):
        compare.load_run(rd)
    summary = rd / "report" / "summary.json"
    summary.write_text(json.dumps({**json.loads(summary.read_text()), "fingerprint": "new"}))
    assert compare.load_run(rd).label == "r"


def test_config_of_the_evaluation_wins_over_a_newer_config_yaml(tmp_path):
    # config.yaml says context 64 (rewritten after the evaluation); the numbers came from 32.
    rd = fake_run(tmp_path, "r", {"imitator": {"context_len": 64}}, {"a": NOT_RUN},
                  results_config={"imitator": {"context_len": 32}})
    assert compare.load_run(rd).config["imitator.context_len"] == 32
    # Results without a stored config: config.yaml it is.
    rd = fake_run(tmp_path, "s", {"imitator": {"context_len": 64}}, {"a": NOT_RUN},
                  results_config={})
    assert compare.load_run(rd).config["imitator.context_len"] == 64
    # Neither: a clear error.
    bare = tmp_path / "t"
    (bare / "report").mkdir(parents=True)
    (bare / "report" / "summary.json").write_text(json.dumps({"tests": {}}))
    with pytest.raises(ArtifactError, match="nor a config.yaml"):
        compare.load_run(bare)


def test_derived_settings_compare_by_the_values_the_evaluation_used(tmp_path):
    # eval.env_steps / horizon 0 mean "derived"; results.json has what was used.
    rd = fake_run(tmp_path, "d", {}, {"a": NOT_RUN}, config_yaml=False)
    results = json.loads((rd / "eval" / "results.json").read_text())
    results["config"]["eval"] = {"env_steps": 0, "horizon": 0, "transfer_env_steps": 5000}
    results.update(env_steps=20000, horizon=2000, transfer_steps=5000)
    (rd / "eval" / "results.json").write_text(json.dumps(results))
    config = compare.load_run(rd).config
    assert (config["eval.env_steps"], config["eval.horizon"], config["eval.transfer_env_steps"]) \
        == (20000, 2000, 5000)


def test_provisional_verdicts_show_their_scale(tmp_path):
    scale = {"provisional": True, "imitator_seeds": 1, "dqn_seeds": 2, "tasks": 17}
    full = {"provisional": False, "imitator_seeds": 5, "dqn_seeds": 2, "tasks": 17}
    a = fake_run(tmp_path, "small", {"imitator": {"d_model": 32}},
                 {"a": {**_test(0.9, [0.85, 0.95], 0.9, [0.85, 0.95], "supported"), **scale}})
    b = fake_run(tmp_path, "full", {"imitator": {"d_model": 64}},
                 {"a": {**_test(0.9, [0.85, 0.95], 0.9, [0.85, 0.95], "supported"), **full}})
    out = compare.build([a, b], tmp_path / "cmp")
    md = (out / "compare.md").read_text().splitlines()
    assert md[6].startswith("| small | 32 | supported (provisional: 1 seed x 17 tasks) | 0.9 ")
    assert md[7].startswith("| full | 64 | supported | 0.9 ")
    runs = json.loads((out / "compare.json").read_text())["runs"]
    assert {k: runs[0]["tests"]["a"][k] for k in ("verdict", *scale)} == {"verdict": "supported",
                                                                         **scale}
    assert runs[1]["tests"]["a"]["provisional"] is False


def test_runs_of_the_same_name_are_labelled_by_their_paths(tmp_path):
    # Two sweeps' runs both named "darkroom": told apart by their directories.
    a = fake_run(tmp_path / "sweep1", "darkroom", {"imitator": {"context_len": 20}},
                 {"a": _test(1.0, [0.9, 1.1], 1.0, [0.9, 1.1], "supported")}, config_yaml=False)
    b = fake_run(tmp_path / "sweep2", "darkroom", {"imitator": {"context_len": 40}},
                 {"a": _test(1.0, [0.9, 1.1], 1.0, [0.9, 1.1], "supported")}, config_yaml=False)
    runs = compare.load_runs([a, b])
    assert [r.label for r in runs] == [str(a), str(b)]
    md = compare.markdown(runs)
    assert f"| {a} | 20 |" in md and f"| {b} | 40 |" in md


# Known answers for mutants that survived the suite: each assertion pins one rule of the table.

def test_config_values_absent_null_empty_or_holding_a_pipe_show_as_themselves():
    assert compare.flatten({"teacher": {"sweep": {}, "lr": 1}}) == {"teacher.sweep": {},
                                                                    "teacher.lr": 1}
    runs = [compare.Run("r1", Path("r1"), {"x": None, "note": "a|b"}, {"tests": {}}),
            compare.Run("r2", Path("r2"), {"note": "c", "y": 1}, {"tests": {}})]
    # A key one run lacks differs from null, whichever run has it.
    assert compare.differing_keys(runs) == ["x", "note", "y"]
    md = compare.markdown(runs).splitlines()
    assert md[6:8] == ["| r1 | unset | a\\|b | unset |", "| r2 | unset | c | 1 |"]
    assert "compare.png" not in "".join(md)  # no test ran: no plot is written to link


def test_runs_at_several_confidence_levels_say_each():
    runs = [compare.Run(n, Path(n), {}, {"confidence": c, "tests": {}})
            for n, c in (("r1", 0.95), ("r2", 0.9))]
    assert "(point and 90%/95% bootstrap interval;" in compare.markdown(runs)


def test_a_swept_boolean_is_no_numeric_axis_and_labels_use_the_last_key_part():
    runs = [compare.Run(n, Path(n), {"imitator.use_reward": v}, {"tests": {}})
            for n, v in (("r1", True), ("r2", False))]
    assert compare._x_axis(runs, ["imitator.use_reward"]) == (
        [0.0, 1.0], ["use_reward=True", "use_reward=False"], "run")
    # Two numeric keys swept together: no single key is the axis.
    runs = [compare.Run(n, Path(n), {"a.x": v, "a.y": 2 * v}, {"tests": {}})
            for n, v in (("r1", 1), ("r2", 2))]
    assert compare._x_axis(runs, ["a.x", "a.y"]) == ([0.0, 1.0], ["x=1\ny=2", "x=2\ny=4"], "run")


def test_plot_sorts_the_swept_values_caps_bars_and_marks_infinite_ends(runs, tmp_path,
                                                                       monkeypatch):
    import matplotlib.axes

    calls = {"plot": [], "errorbar": []}
    plot, errorbar = matplotlib.axes.Axes.plot, matplotlib.axes.Axes.errorbar

    def record_plot(ax, x, y, fmt, **kw):
        calls["plot"].append((fmt, np.asarray(x)))
        return plot(ax, x, y, fmt, **kw)

    def record_errorbar(ax, x, y, **kw):
        calls["errorbar"].append(np.asarray(kw["yerr"]))
        return errorbar(ax, x, y, **kw)

    monkeypatch.setattr(matplotlib.axes.Axes, "plot", record_plot)
    monkeypatch.setattr(matplotlib.axes.Axes, "errorbar", record_errorbar)
    a, b = runs
    compare.plot(compare.load_runs([b, a]), tmp_path / "c.png")  # context 40 given first
    lines = [x for fmt, x in calls["plot"] if fmt == "-"]
    assert len(lines) == 4 and all((np.diff(x) > 0).all() for x in lines)
    # Test (a)'s final ratio: ctx20's interval ends at inf, ctx40's value is inf: two arrows.
    assert sum(len(x) for fmt, x in calls["plot"] if fmt == "^") == 2
    assert all(np.isfinite(yerr).all() for yerr in calls["errorbar"])
