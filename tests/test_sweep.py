"""`climit sweep`: --emit launch lists, a two-point sweep end to end with `report --compare`,
finished runs skipped on a rerun (fast with recording fakes for the heavy stages; a real tiny
sweep is slow-marked)."""

import json
import os
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest

from climit import cli, config, evaluate, pipeline, report, stats, sweep
from climit.errors import ClimitError

TINY = """
env: {train_tasks: 4, transfer: ''}
teacher: {total_env_steps: 400, learning_starts: 100, buffer_size: 400, batch_size: 16,
          chunk_steps: 200, eps_decay_steps: 200, snapshot_steps: [200], eval_episodes: 1}
imitator: {train_steps: 20, warmup_steps: 5, eval_every: 10, context_len: 20, ed_fraction: 0.25,
           d_model: 16, n_layers: 1, n_heads: 2, batch_size: 8}
eval: {tasks: 2, env_steps: 400, horizon_factor: 2, dqn_seeds: 1, random_seeds: 1,
       bootstrap: 50, chunk_steps: 400, horizon_controls: false}
"""
GRID = ["--grid", "imitator.context_len=20,40"]
NAMES = ["tiny-context_len=20", "tiny-context_len=40"]


@pytest.fixture
def base(tmp_path):
    """(config path, base overrides) of a tiny sweep writing under tmp_path/runs."""
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    return path, [f"run.runs_dir={tmp_path / 'runs'}", "run.name=tiny"]


def _main(capsys, *argv):
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert rc == 0, err
    return out


def test_emit_prints_one_runnable_command_per_point(base, capsys):
    path, over = base
    lines = _main(capsys, "sweep", "--config", path, *over, *GRID, "--emit").splitlines()
    assert len(lines) == 2
    for line, ctx, name in zip(lines, (20, 40), NAMES):
        argv = shlex.split(line)
        assert argv[:4] == ["climit", "run", "--config", str(path)]
        assert argv[4:] == [*over, f"imitator.context_len={ctx}", f"run.name={name}"]
    assert not (path.parent / "runs").exists()  # --emit runs nothing



def test_one_value_entries_after_grid_are_plain_overrides(base, capsys):
    """argparse hands --grid every key=value after it: one value (none for env.transfer=, a
    list holding commas) applies to every point and does not name runs. (A mapping holding
    commas splits the same way: test_values_split_on_commas_outside_brackets_and_braces.)"""
    path, _ = base
    grid = ["--grid", "imitator.context_len=20,40", f"run.runs_dir={path.parent / 'sw'}",
            "env.transfer=", "teacher.hidden=[32,32]", "run.name=tiny"]
    lines = _main(capsys, "sweep", "--config", path, *grid, "--emit").splitlines()
    assert [shlex.split(line)[-1] for line in lines] == [f"run.name={n}" for n in NAMES]
    for line, ctx in zip(lines, (20, 40)):
        assert shlex.split(line)[4:-1] == [*grid[2:], f"imitator.context_len={ctx}"]
    assert not (path.parent / "sw").exists()


def test_values_split_on_commas_outside_brackets_and_braces():
    assert sweep.split_values("[64,64], [128,128]") == ["[64,64]", "[128,128]"]
    assert sweep.split_values("{lr: [1e-3, 3e-4], gamma: [0.9, 0.99]}") == \
        ["{lr: [1e-3, 3e-4], gamma: [0.9, 0.99]}"]
    assert sweep.split_grid(["a.b=1,2", "c.d=x", "e.f=", "g.h=,"]) == (["c.d=x", "e.f="],
                                                                       ["a.b=1,2", "g.h=,"])

def test_a_point_that_climit_run_would_refuse_stops_the_sweep_before_any_work(base, capsys):
    # The second point's 2 x 20000-step training sequence is longer than the histories: caught
    # with the first point not yet run (without --emit it would have trained it first).
    path, over = base
    argv = ["sweep", "--config", str(path), *over, "--grid", "imitator.context_len=20,20000"]
    for emit in ([], ["--emit"]):
        assert cli.main(argv + emit) == 2
        out, err = capsys.readouterr()
        assert out == "" and "imitator.context_len: a training sequence of 40000 steps" in err, err
    assert not (path.parent / "runs").exists()


def test_two_grid_values_that_read_as_one_are_refused(base, capsys):
    path, over = base
    assert cli.main(["sweep", "--config", str(path), *over, "--grid", "teacher.lr=1e-3,0.001",
                     "--emit"]) == 1
    out, err = capsys.readouterr()
    assert out == "" and ("grid points tiny-lr=1e-3 and tiny-lr=0.001 are the same config"
                          in err), err


def test_a_grid_entry_without_values_is_refused(base, capsys):
    path, over = base
    assert cli.main(["sweep", "--config", str(path), *over, "--grid",
                     "imitator.context_len=,"]) == 2
    assert "imitator.context_len: the grid entry 'imitator.context_len=,' holds no value" in \
        capsys.readouterr().err
    # a value left out between commas, or a stray comma after one, is refused, not dropped
    for entry in ("imitator.context_len=20,,40", "env.transfer=keydoor,"):
        assert cli.main(["sweep", "--config", str(path), *over, "--grid", entry, "--emit"]) == 2
        assert (f"the grid entry '{entry}' holds an empty value between commas"
                in capsys.readouterr().err)


@pytest.fixture
def fake_stages(fake_training, monkeypatch):
    """The teacher, imitator and evaluation stages replaced by fakes that write fingerprinted
    artifacts (the sweep, the pipeline's skipping and the comparison are what is under test).
    The fake evaluation's imitator curve scales with the context length, so the two points'
    ratios differ."""
    calls = fake_training

    def evaluate_(cfg, rd, progress=True, log=print):
        calls["evaluate"].append(cfg.run.name)
        grid = 20 * np.arange(1, 11)
        dqn = np.tile(np.linspace(1.0, 10.0, 10), (2, 5, 1))
        curves = {"imitator": dqn[:1] * cfg.imitator.context_len / 40, "dqn": dqn}
        test = {**stats.summarize_test(curves, grid, n_boot=20), "env": cfg.env.name, "markers": {}}
        results = {"env": cfg.env.name, "transfer": "", "confidence": 0.95, "bootstrap": 20,
                   "config": {}, "tests": {"a": test}, "fingerprint": evaluate.fingerprint(cfg)}
        report.write_eval(Path(rd) / "eval", results,
                          {"a.grid": grid, **{f"a.{k}": v for k, v in curves.items()}})

    monkeypatch.setattr(evaluate, "evaluate", evaluate_)
    return calls


def test_two_point_sweep_compare_and_rerun(base, fake_stages, capsys):
    path, over = base
    runs = path.parent / "runs"
    out = _main(capsys, "sweep", "--config", path, *over, *GRID)
    done = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    # The grid varies only the imitator, so the second point shares the first one's teacher.
    assert done == [{"run": n, "teach": t, "imitate": "done", "evaluate": "done",
                     "report": "done"} for n, t in zip(NAMES, ("done", "skipped"))]
    assert fake_stages["teach"] == NAMES[:1] and fake_stages["evaluate"] == NAMES
    assert (runs / NAMES[1] / "teacher").resolve() == (runs / NAMES[0] / "teacher").resolve()
    # The comparison: the swept key against the test (a) ratios (imitator = ctx/40 x DQN).
    table = _main(capsys, "report", "--compare", *(runs / n for n in NAMES), "--out", runs / "cmp")
    rows = [line for line in table.splitlines() if line.startswith("| tiny")]
    assert [r.split(" | ")[:4] for r in rows] == [
        ["| tiny-context_len=20", "20", "not supported (provisional: 1 seed x 5 tasks)",
         "0.5 [0.5, 0.5]"],
        ["| tiny-context_len=40", "40", "supported (provisional: 1 seed x 5 tasks)", "1 [1, 1]"]]
    assert (runs / "cmp" / "compare.png").is_file()
    # A rerun of the sweep, and an emitted command run by hand, skip every finished stage.
    out = _main(capsys, "sweep", "--config", path, *over, *GRID)
    assert [json.loads(line) for line in out.splitlines() if line.startswith("{")] == [
        {"run": n, "teach": "skipped", "imitate": "skipped", "evaluate": "skipped",
         "report": "skipped"} for n in NAMES]
    line = _main(capsys, "sweep", "--config", path, *over, *GRID, "--emit").splitlines()[1]
    out = _main(capsys, *shlex.split(line)[1:], "--no-progress")
    assert "[3/4] evaluate: skipped" in out
    assert fake_stages["teach"] == NAMES[:1] and fake_stages["evaluate"] == NAMES
    # The shared teacher is a relative link: a copy of the runs directory keeps its points
    # linked inside the copy; a link whose target is gone is a clear error, not EEXIST.
    assert not os.path.isabs(os.readlink(runs / NAMES[1] / "teacher"))
    copy = path.parent / "copy"
    shutil.copytree(runs, copy, symlinks=True)
    assert (copy / NAMES[1] / "teacher").resolve() == (copy / NAMES[0] / "teacher").resolve()
    shutil.rmtree(copy / NAMES[0])
    argv = ["run", "--config", str(path), "imitator.context_len=40", f"run.runs_dir={copy}",
            f"run.name={NAMES[1]}", "--no-progress"]
    assert cli.main(argv) == 1
    assert "which no longer exists; restore that run or remove the link" in capsys.readouterr().err


@pytest.mark.slow
def test_real_tiny_sweep_end_to_end(base, capsys):
    """Every stage for real at tiny size (~75 s on the 2-core CPU container): two points, then
    --compare over them."""
    path, over = base
    runs = path.parent / "runs"
    out = _main(capsys, "sweep", "--config", path, *over, *GRID)
    done = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [d["run"] for d in done] == NAMES and all(d["report"] == "done" for d in done)
    for name, ctx in zip(NAMES, (20, 40)):
        summary = json.loads((runs / name / "report" / "summary.json").read_text())
        assert summary["tests"]["a"]["ran"] and summary["tests"]["b"]["ran"]
        assert f"context_len: {ctx}" in (runs / name / "config.yaml").read_text()
    _main(capsys, "report", "--compare", *(runs / n for n in NAMES), "--out", runs / "cmp")
    data = json.loads((runs / "cmp" / "compare.json").read_text())
    assert data["keys"] == ["imitator.context_len"]
    assert [r["config"]["imitator.context_len"] for r in data["runs"]] == [20, 40]
    assert all(r["tests"]["a"]["ran"] for r in data["runs"])


def test_two_grid_axes_make_every_combination(base):
    path, over = base
    pts = sweep.points(str(path), over, ["imitator.context_len=20,40", "imitator.n_layers=1,2"])
    assert [p.config.run.name for p in pts] == [
        "tiny-context_len=20-n_layers=1", "tiny-context_len=20-n_layers=2",
        "tiny-context_len=40-n_layers=1", "tiny-context_len=40-n_layers=2"]


def test_a_lists_values_name_a_run_without_brackets_or_spaces(base):
    path, over = base
    pts = sweep.points(str(path), over, ["teacher.hidden=[64, 64],[128,128]"])
    assert [p.config.run.name for p in pts] == ["tiny-hidden=64x64", "tiny-hidden=128x128"]


def test_two_configs_that_map_to_one_run_name_are_refused(base):
    # A run name is one directory name: '/' (like any character outside [A-Za-z0-9=._-])
    # becomes '_', and so two different points would share one name.
    path, over = base
    with pytest.raises(ClimitError, match="two grid points map to the same run name"):
        sweep.points(str(path), over, [f"run.runs_dir={path.parent}/a/b,{path.parent}/a_b"])


def test_the_sweep_names_its_runs_itself():
    with pytest.raises(config.ConfigError, match="run.name: is set by the sweep"):
        sweep.parse_grid(["imitator.context_len=20,40", "run.name=a,b"])


def test_no_progress_reaches_every_point(base, monkeypatch, capsys):
    # A sweep in a job's log file wants no progress bars, as `climit run --no-progress`.
    path, over = base
    seen = []
    monkeypatch.setattr(pipeline, "run", lambda cfg, progress=True, log=print: (
        seen.append((cfg.run.name, progress)) or {"teach": "done"}))
    _main(capsys, "sweep", "--config", path, *over, *GRID, "--no-progress")
    _main(capsys, "sweep", "--config", path, *over, *GRID)
    assert seen == [(n, False) for n in NAMES] + [(n, True) for n in NAMES]
    # and an emitted launch list runs its points as asked
    lines = _main(capsys, "sweep", "--config", path, *over, *GRID, "--emit", "--no-progress")
    assert [shlex.split(line)[-1] for line in lines.splitlines()] == ["--no-progress"] * 2


def test_an_emitted_launch_list_carries_the_time_limit_to_each_job(base, capsys):
    # Each job of a launch list stops cleanly after that long, and its line parses back to the
    # same limit (20 days as plain seconds: '1.728e+06s' would be refused).
    path, over = base
    for given, seconds in (("1.5h", 5400.0), ("20d", 1728000.0), ("0.25s", 0.25)):
        lines = _main(capsys, "sweep", "--config", path, *over, *GRID, "--emit",
                      "--time-limit", given).splitlines()
        for line in lines:
            args = cli.build_parser().parse_args(shlex.split(line)[1:])
            assert (args.command, args.time_limit) == ("run", seconds)


def test_a_point_that_trained_its_own_teacher_keeps_it(base, fake_stages):
    # The second point was run on its own before the sweep: its teacher is a directory, kept as
    # it is (not replaced by a link, not an error), and the third point links to the first
    # point's teacher, the first one the sweep finished.
    path, over = base
    pts = sweep.points(str(path), over, ["imitator.n_layers=1,2,3"])
    pipeline.run(pts[1].config, progress=False, log=lambda m: None)
    results = sweep.run_all(pts, log=lambda m: None)
    assert [r["teach"] for r in results] == ["done", "skipped", "skipped"]
    assert fake_stages["teach"] == ["tiny-n_layers=2", "tiny-n_layers=1"]
    runs = path.parent / "runs"
    assert not (runs / "tiny-n_layers=2" / "teacher").is_symlink()
    assert (os.readlink(runs / "tiny-n_layers=3" / "teacher")
            == os.path.join("..", "tiny-n_layers=1", "teacher"))


def test_an_emitted_command_keeps_values_with_spaces_whole_and_needs_no_config(tmp_path):
    # A list written with spaces and a runs directory with a space in it are one argument each
    # when the line is run by a shell; with no --config the defaults are swept, and the line
    # names none.
    runs = tmp_path / "my runs"
    pts = sweep.points(None, [f"run.runs_dir={runs}"], ["teacher.hidden=[64, 64],[32, 32]"])
    argv = shlex.split(sweep.command_line(None, pts[0]))
    assert argv == ["climit", "run", f"run.runs_dir={runs}", "teacher.hidden=[64, 64]",
                    "run.name=default-hidden=64x64"]


def test_a_key_swept_twice_is_refused_before_it_multiplies():
    # Two axes on one key would make points whose later value silently wins over the earlier.
    with pytest.raises(config.ConfigError, match="--grid: a key appears twice"):
        sweep.parse_grid(["imitator.context_len=20,40", "imitator.context_len=80,160"])


def test_a_one_value_grid_entry_wins_over_an_override_written_before_it(base):
    # `climit sweep run.runs_dir=A --grid ... run.runs_dir=B`: B was written later, so every
    # point writes under B, as `climit run` with the same overrides in that order would.
    path, over = base
    later = path.parent / "later"
    pts = sweep.points(str(path), over, ["imitator.context_len=20,40", f"run.runs_dir={later}"])
    assert [p.config.run.runs_dir for p in pts] == [str(later)] * 2
    assert pts[0].overrides[:3] == (*over, f"run.runs_dir={later}")


def test_a_sweep_meeting_a_teacher_link_whose_target_is_gone_says_so(base, fake_stages):
    # A point's teacher/ links to a run since deleted: the sweep stops with the pipeline's clear
    # error naming the link, not a FileExistsError from linking it to the first point's teacher.
    path, over = base
    pts = sweep.points(str(path), over, ["imitator.n_layers=1,2"])
    teacher = path.parent / "runs" / "tiny-n_layers=2" / "teacher"
    teacher.parent.mkdir(parents=True)
    teacher.symlink_to(os.path.join("..", "gone", "teacher"), target_is_directory=True)
    with pytest.raises(ClimitError, match="teacher links to .*gone/teacher .*no longer exists"):
        sweep.run_all(pts, log=lambda m: None)
    assert fake_stages["teach"] == ["tiny-n_layers=1"]
