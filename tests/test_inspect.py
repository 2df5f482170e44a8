"""`climit inspect`: overview, --stats, --diff, --json, histories and error messages on
synthetic checkpoints, then --eval on a real tiny run."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from climit import checkpoint, cli, histories, keys
from climit import inspect as inspect_lib
from climit.errors import ClimitError

L = 4  # learners of the stacked teacher
S = 2  # seeds of the stacked imitator
TEACHER_CONFIG = {"teacher": {"lr": 0.001}, "env": {"name": "toy"}}  # the kind's markers
IMITATOR_CONFIG = {"imitator": {"d_model": 4}, "imitator_model": {"d_model": 4}}

# A failed orbax load leaves a pending coroutine reported at garbage collection: not ours.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def _teacher_params(scale: float) -> dict:
    """Stacked over L learners: learner l's kernel is all (l + 1) * scale."""
    kernel = jnp.stack([jnp.full((2, 3), (l + 1) * scale) for l in range(L)])
    return {"Dense_0": {"kernel": kernel, "bias": jnp.zeros((L, 3))},
            "Dense_1": {"kernel": jnp.ones((L, 3, 5)), "bias": jnp.zeros((L, 5))}}


def _imitator_tree(i: int) -> dict:
    """Stacked over S seeds: seed s's embedding at save i is arange(12) + 10 s + i."""
    embed = jnp.stack([jnp.arange(12.0).reshape(3, 4) + 10 * s + i for s in range(S)])
    return {"embed": embed, "head": {"w": jnp.ones((S, 4, 5), jnp.bfloat16)}}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """runs/tiny: teacher snapshots (10k, 20k) and checkpoint (20k, with a replay buffer and
    scalar counters), an imitator (steps 100, 200, 300; best: 100) and a checkpoint of no
    climit kind."""
    root = tmp_path_factory.mktemp("runs") / "tiny"
    with checkpoint.snapshots(root / "teacher" / "snapshots") as ck:
        ck.save(10_000, {"params": _teacher_params(1.0)}, config=TEACHER_CONFIG,
                metrics={"return": 3.0})
        ck.save(20_000, {"params": _teacher_params(1.5)}, config=TEACHER_CONFIG,
                metrics={"return": 7.5})
    state = {"learners": {"params": _teacher_params(1.5), "replay": {"obs": jnp.ones((L, 64, 3))}},
             "t": jnp.int32(20_000), "updates": jnp.int32(77)}
    with checkpoint.Checkpointer(root / "teacher" / "checkpoints") as ck:
        ck.save(20_000, state, config=TEACHER_CONFIG)
    with checkpoint.Checkpointer(root / "imitator" / "ad" / "checkpoints", keep=2,
                                 best="heldout_loss") as ck:
        for i, (step, loss) in enumerate(((100, 1.0), (200, 2.0), (300, 3.0))):
            tree = _imitator_tree(i)
            state = {"tree": tree, "opt_state": optax.adamw(1e-3).init(tree),
                     "step": jnp.int32(step)}
            ck.save(step, state, config=IMITATOR_CONFIG, metrics={"heldout_loss": loss})
    with checkpoint.Checkpointer(root / "other" / "checkpoints") as ck:
        ck.save(1, {"w": jnp.arange(6.0).reshape(2, 3)})
    return root


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    rc = cli.main(["inspect", *map(str, argv)])
    out, err = capsys.readouterr()
    return rc, out, err


def _by_name(view: dict) -> dict[str, dict]:
    return {d["name"]: d for d in view["checkpoints"]}


def test_overview_of_a_run_directory(run, capsys):
    view = inspect_lib.overview(run)
    dirs = _by_name(view)
    assert set(dirs) == {"imitator/ad/checkpoints", "other/checkpoints", "teacher/checkpoints",
                         "teacher/snapshots"}
    imitator, teacher = dirs["imitator/ad/checkpoints"], dirs["teacher/snapshots"]
    assert imitator["steps"] == [100, 200, 300] and imitator["config"] == IMITATOR_CONFIG
    assert [c["metrics"]["heldout_loss"] for c in imitator["checkpoints"]] == [1.0, 2.0, 3.0]
    assert imitator["tree"]["tree/head/w"] == {"shape": [S, 4, 5], "dtype": "bfloat16", "size": 40}
    assert imitator["groups"] == {"opt_state": 1 + 2 * 32 * S, "step": 1, "tree": 32 * S}
    assert teacher["steps"] == [10_000, 20_000] and teacher["num_params"] == L * (6 + 3 + 15 + 5)
    assert teacher["tree"]["params/Dense_0/kernel"]["shape"] == [L, 2, 3]
    rc, out, err = _cli(capsys, run)
    assert rc == 0 and err == ""
    assert "teacher/snapshots" in out and "params/Dense_0/kernel  4x2x3  float32  24" in out
    assert "step   return" in out and "20000  7.5" in out and "lr: 0.001" in out
    rc, out, _ = _cli(capsys, run, "--json")
    assert rc == 0 and json.loads(out) == json.loads(inspect_lib.dumps(view))
    # A step directory shows that step.
    assert (inspect_lib.overview(run / "teacher" / "snapshots" / "10000")["checkpoints"][0]["step"]
            == 10_000)


def test_overview_marks_the_best_step_and_takes_best_or_latest(run, capsys):
    imit = run / "imitator" / "ad" / "checkpoints"
    d = inspect_lib.overview(imit)["checkpoints"][0]
    assert (d["best_step"], d["step"]) == (100, 300)
    assert inspect_lib.overview(imit, "best")["checkpoints"][0]["step"] == 100
    assert inspect_lib.overview(imit, "latest")["checkpoints"][0]["step"] == 300
    rc, out, _ = _cli(capsys, imit, "--step", "best")
    assert rc == 0 and "steps: 100*, 200, 300 (showing 100; * best: lowest heldout_loss)" in out
    assert (inspect_lib.overview(run / "teacher" / "snapshots")["checkpoints"][0]["best_step"]
            is None)
    assert "no best step" in _error(capsys, run / "teacher" / "snapshots", "--step", "best")


def test_best_step_of_tied_losses_is_the_earlier_as_training_picks_it(tmp_path):
    from climit.imitator import train

    with checkpoint.Checkpointer(tmp_path / "checkpoints", keep=3) as ck:
        for step, loss in ((1, 1.0), (2, 0.5), (3, 0.5)):
            ck.save(step, {"w": jnp.ones(2)}, config=IMITATOR_CONFIG,
                    metrics={"heldout_loss": loss})
    assert inspect_lib.overview(tmp_path / "checkpoints")["checkpoints"][0]["best_step"] == 2
    assert train._best(tmp_path / "checkpoints") == (2, 0.5)  # what `climit evaluate` loads


def test_overview_step_shown_where_it_exists(run, capsys):
    view = _by_name(inspect_lib.overview(run, 10_000))
    assert view["teacher/snapshots"]["step"] == 10_000
    assert "no checkpoint at step 10000" in view["teacher/checkpoints"]["missing"]
    assert ("tree" not in view["teacher/checkpoints"]
            and "missing" in view["imitator/ad/checkpoints"])
    rc, out, _ = _cli(capsys, run, "--step", 10_000)
    assert (rc == 0 and "(showing 10000)" in out
            and "not showing: no checkpoint at step 10000" in out)
    with pytest.raises(ClimitError, match="no checkpoint at step 5 "):
        inspect_lib.overview(run, 5)


def test_no_directory_has_the_step_one_short_line_of_what_each_has(run, capsys):
    # Used to be every directory's full message joined: absolute paths and whole step lists.
    err = _error(capsys, run, "--step", 5)
    assert f"no checkpoint at step 5 in any of the 4 checkpoint directories in {run} (" in err
    for each in ("imitator/ad/checkpoints: steps 100, 200, 300", "other/checkpoints: steps 1",
                 "teacher/checkpoints: steps 20000", "teacher/snapshots: steps 10000, 20000"):
        assert each in err
    assert err.count(str(run)) == 1 and len(err) < 300
    assert inspect_lib._brief(list(range(100, 1100, 100))) == "100, 200, ..., 1000 (10 steps)"
    # One directory keeps its own message, as --stats and --diff give it.
    assert "no checkpoint at step 5 in " in _error(capsys, run / "teacher" / "snapshots",
                                                   "--step", 5)


def test_text_views_round_floats_json_keeps_them(tmp_path, capsys):
    loss = [0.12345678901234567, 0.9876543210987654]
    with checkpoint.Checkpointer(tmp_path / "checkpoints") as ck:
        ck.save(1, {"w": jnp.ones(2)}, config=IMITATOR_CONFIG,
                metrics={"heldout_loss": 0.5555555555555556, "heldout_loss_per_seed": loss,
                         "position_bins": [0, 60, 120]})
    rc, out, _ = _cli(capsys, tmp_path / "checkpoints")
    assert rc == 0 and "0.5556" in out and "[0.1235, 0.9877]" in out and "[0, 60, 120]" in out
    assert "2 elements in 1 leaf (w 2)" in out
    assert "0.123456" not in out and "0.555555" not in out
    rc, out, _ = _cli(capsys, tmp_path / "checkpoints", "--json")
    assert (json.loads(out)["checkpoints"][0]["checkpoints"][0]["metrics"]["heldout_loss_per_seed"]
            == loss)


def test_counts_of_one_are_singular():
    est = {"value": 1.0, "lo": 0.5, "hi": 1.5}
    view = {"confidence": 0.9, "interval_over": "imitator seeds x held-out tasks",
            "kind": "imitator", "path": "ck", "step": 4, "step_choice": "best", "env": "toy",
            "policy": "imitator", "episodes": 2, "seed": 0, "imitator_seed": None,
            "seeds": [{"seed": 0, "mean_return": 1.0}], "tasks": [[1, 2]],
            "task_unit": "held-out tasks", "single_task": False, "mean_return": est,
            "first_episodes": est, "last_episodes": est}
    assert "  1 seed x 1 held-out task: mean return" in inspect_lib.format_eval(view)
    single = inspect_lib.format_eval({**view, "single_task": True, "tasks": [[], []],
                                      "task_unit": "rollouts (env seeds) of its single task"})
    assert "1 seed x 2 rollouts (env seeds) of its single task" in single
    teacher = {**view, "kind": "teacher_snapshot", "learner": None,
               "learners": [{"learner": 0, "task": [1], "mean_return": 1.0}]}
    assert "  1 learner, each on its own task" in inspect_lib.format_eval(teacher)


def test_runs_root_finds_imitators_and_says_what_was_not_searched(run, tmp_path):
    names = [d["name"] for d in inspect_lib.overview(run.parent)["checkpoints"]]
    assert "tiny/imitator/ad/checkpoints" in names  # four levels below runs/
    deep = tmp_path / "a" / "b" / "c" / "d" / "e" / "f"
    with checkpoint.Checkpointer(deep / "ck") as ck:
        ck.save(1, {"w": jnp.ones(2)})
    with pytest.raises(ClimitError, match="not searched deeper than 5 levels"):
        inspect_lib.overview(tmp_path / "a")
    # ... and five levels down is searched: c, d, e, f, ck below b
    assert [d["name"] for d in inspect_lib.overview(tmp_path / "a" / "b")["checkpoints"]] == [
        "c/d/e/f/ck"]


def test_a_run_named_with_digits_is_found_and_an_interrupted_save_named(tmp_path):
    # run.name=2024 is valid: its directory is searched like any other (it was skipped as a
    # checkpoint step, and the error called it an interrupted save).
    ck_dir = tmp_path / "runs" / "2024" / "teacher" / "checkpoints"
    with checkpoint.Checkpointer(ck_dir) as ck:
        ck.save(7, {"w": jnp.ones(2)})
    found = inspect_lib.locate(tmp_path / "runs")
    assert [path for path, _ in found.checkpoints] == [ck_dir]
    (ck_dir / "7" / checkpoint.CHECKSUM_FILE).unlink()  # a save killed before its checksums
    with pytest.raises(ClimitError,
                       match=r"holds no checkpoints \(only interrupted saves: steps \[7\]\)"):
        inspect_lib.locate(ck_dir)
    with pytest.raises(ClimitError) as e:
        inspect_lib.locate(tmp_path / "runs")
    assert "interrupted" not in str(e.value)  # the run 2024 is not a step


def test_partial_restore_reads_only_the_leaves_asked_for(run, monkeypatch):
    with checkpoint.Checkpointer(run / "teacher" / "checkpoints", readonly=True) as ck:
        full = checkpoint.flatten(ck.restore())
        part = checkpoint.flatten(ck.restore(only=("learners/params/", "t")))
        assert checkpoint.flatten(ck.restore(only=("nothing",))) == {}
        with pytest.raises(ClimitError, match="not both"):
            ck.restore(target={"t": jnp.int32(0)}, only=("t",))
    assert set(part) == {k for k in full if k.startswith("learners/params/")} | {"t"}
    assert all(np.array_equal(part[k], full[k]) for k in part)
    # --stats with a prefix restores only that subtree: the replay buffer is never read.
    real, restored = checkpoint.Checkpointer.restore, []

    def spy(self, *args, **kwargs):
        out = real(self, *args, **kwargs)
        restored.append(set(checkpoint.flatten(out)))
        return out

    monkeypatch.setattr(checkpoint.Checkpointer, "restore", spy)
    view = inspect_lib.stats(run / "teacher" / "checkpoints", prefix="learners/params")
    assert restored == [set(view["leaves"])] and len(view["leaves"]) == 4


def test_stats_of_stacked_teacher_and_imitator(run, capsys):
    snap = run / "teacher" / "snapshots"
    view = inspect_lib.stats(snap)  # latest: scale 1.5, kernel of learner l = 1.5 (l + 1)
    k = view["leaves"]["params/Dense_0/kernel"]
    norms = [1.5 * (l + 1) * math.sqrt(6) for l in range(L)]
    assert ((view["learners"], view["axis"], view["step"], view["pooled"])
            == (L, "learner", 20_000, False))
    assert (k["norm_mean"] == pytest.approx(np.mean(norms))
            and k["norm_min"] == pytest.approx(norms[0]))
    assert k["norm_max"] == pytest.approx(norms[-1]) and k["mean_mean"] == pytest.approx(1.5 * 2.5)
    assert k["std_mean"] == pytest.approx(0.0) and k["stacked"]
    one = inspect_lib.stats(snap, step=10_000, learner=2)["leaves"]["params/Dense_0/kernel"]
    assert one == {"shape": [2, 3], "stacked": True, "norm": pytest.approx(3 * math.sqrt(6)),
                   "mean": 3.0, "std": 0.0, "min": 3.0, "max": 3.0}
    rc, out, err = _cli(capsys, snap, "--stats", "--learner", 1)
    assert rc == 0 and "learner 1 of 4:" in out and "params/Dense_0/kernel  2x3" in out
    rc, out, _ = _cli(capsys, snap, "--stats", "--step", 10_000, "--json")
    assert rc == 0 and json.loads(out)["step"] == 10_000
    assert json.loads(out)["leaves"]["params/Dense_0/kernel"]["mean_mean"] == pytest.approx(2.5)
    named = inspect_lib.stats(snap / "10000")  # a step directory: that step, not the latest
    assert named["step"] == 10_000 and named["leaves"]["params/Dense_0/kernel"]["norm_max"] == \
        pytest.approx(L * math.sqrt(6))
    rc, out, _ = _cli(capsys, snap, "--stats", "--json")
    assert (json.loads(out)["leaves"]["params/Dense_1/kernel"]["norm_min"]
            == pytest.approx(math.sqrt(15)))


def test_stacked_axis_is_known_per_leaf_from_the_kind(run, capsys):
    imit = run / "imitator" / "ad" / "checkpoints"
    view = inspect_lib.stats(imit)  # step 300: seed s's embed = arange(12) + 10 s + 2
    assert (view["axis"], view["learners"]) == ("imitator seed", S)
    e = view["leaves"]["tree/embed"]
    assert e["stacked"] and e["mean_mean"] == pytest.approx(5.5 + 5 + 2)  # not pooled over seeds
    assert e["norm_min"] == pytest.approx(np.linalg.norm(np.arange(12.0) + 2))
    assert view["leaves"]["step"] == {"shape": [], "stacked": False, "norm": 300.0, "mean": 300.0,
                                      "std": 0.0, "min": 300.0, "max": 300.0}
    one = inspect_lib.stats(imit, learner=1, prefix="tree/embed")["leaves"]["tree/embed"]
    assert (one["mean"] == pytest.approx(5.5 + 10 + 2)
            and one["std"] == pytest.approx(np.arange(12).std()))
    # Scalars (t, updates) beside the stacked learners/ do not hide the learner axis.
    ck = inspect_lib.stats(run / "teacher" / "checkpoints", learner=3)["leaves"]
    assert ck["learners/params/Dense_0/kernel"]["mean"] == pytest.approx(6.0)
    assert ck["t"]["mean"] == 20_000 and not ck["t"]["stacked"]
    assert ck["learners/replay/obs"]["shape"] == [64, 3]
    # One leaf alone is still stacked.
    single = inspect_lib.stats(run / "teacher" / "snapshots", prefix="params/Dense_0/kernel",
                               learner=0)
    assert single["leaves"]["params/Dense_0/kernel"]["max"] == 1.5
    rc, out, _ = _cli(capsys, imit, "--stats")
    assert rc == 0 and "summarised over the 2 imitator seeds" in out and "not stacked" in out
    # No kind: every leaf pooled, and said so.
    other = inspect_lib.stats(run / "other" / "checkpoints")
    assert other["pooled"] and other["leaves"]["w"]["mean"] == 2.5
    rc, out, _ = _cli(capsys, run / "other" / "checkpoints", "--stats")
    assert rc == 0 and "pooled over all elements" in out


def test_diff_steps_and_paths(run, capsys):
    snap = run / "teacher" / "snapshots"
    view = inspect_lib.diff(snap, "10000", "20000")
    assert (view["changed"], view["unchanged"], view["warning"]) == (1, 3, None)
    k = view["leaves"]["params/Dense_0/kernel"]
    # B - A = 0.5 (l + 1) everywhere; ||A|| = sqrt(6 * sum (l+1)^2)
    assert k["changed"] and k["max_abs_diff"] == pytest.approx(0.5 * L)
    assert k["rel_change"] == pytest.approx(0.5)
    assert view["leaves"]["params/Dense_1/kernel"] == {"shape": [L, 3, 5], "changed": False,
                                                       "max_abs_diff": 0.0, "rel_change": 0.0}
    # all zeros on both sides: no change (0, not inf)
    assert view["leaves"]["params/Dense_0/bias"] == {"shape": [L, 3], "changed": False,
                                                     "max_abs_diff": 0.0, "rel_change": 0.0}
    one = inspect_lib.diff(snap, "10000", "20000", learner=0)["leaves"]["params/Dense_0/kernel"]
    assert one["max_abs_diff"] == pytest.approx(0.5) and one["shape"] == [2, 3]
    # Two checkpoint paths, steps by name: shared leaves compared.
    imit = run / "imitator" / "ad" / "checkpoints"
    cross = inspect_lib.diff(snap, str(imit / "100"), str(imit / "300"), prefix="tree")
    assert cross["leaves"]["tree/embed"]["max_abs_diff"] == 2.0 and cross["changed"] == 1
    assert inspect_lib.diff(imit, "best", "latest", prefix="tree/embed")["leaves"]["tree/embed"][
        "max_abs_diff"] == 2.0
    rc, out, _ = _cli(capsys, snap, "--diff", 10_000, 20_000)
    assert rc == 0 and "1 leaf changed, 3 unchanged" in out
    assert "params/Dense_0/kernel  4x2x3  yes" in out
    rc, out, _ = _cli(capsys, snap, "--diff", 10_000, 20_000, "--prefix", "params/Dense_1")
    assert rc == 0 and "0 leaves changed, 2 unchanged" in out and "Dense_0" not in out


def test_diff_aligns_a_snapshot_with_a_checkpoint(run, capsys):
    snap, ck = run / "teacher" / "snapshots", run / "teacher" / "checkpoints"
    same = inspect_lib.diff(snap, "20000", str(ck))
    assert same["aligned"] == "B's learners/params/ as params/"
    assert (same["changed"], same["unchanged"], same["only_b"]) == (0, 4, [])
    back = inspect_lib.diff(ck, str(ck), str(snap / "10000"))  # the checkpoint as A
    assert back["aligned"] == "A's learners/params/ as params/"
    assert (back["changed"], back["unchanged"], back["only_a"], back["only_b"]) == (1, 3, [], [])
    assert back["leaves"]["params/Dense_0/kernel"]["max_abs_diff"] == pytest.approx(0.5 * L)
    moved = inspect_lib.diff(ck, str(snap / "10000"), str(ck), prefix="params/Dense_0/k", learner=1)
    assert list(moved["leaves"]) == ["params/Dense_0/kernel"]
    assert moved["leaves"]["params/Dense_0/kernel"]["max_abs_diff"] == pytest.approx(1.0)
    rc, out, _ = _cli(capsys, snap, "--diff", 20_000, ck)
    assert rc == 0 and "0 leaves changed, 4 unchanged" in out and "aligned: B's" in out
    # Kinds that do not align: said loudly, not "0 leaves changed" alone.
    rc, out, _ = _cli(capsys, run / "imitator" / "ad" / "checkpoints", "--diff", 100, snap)
    assert rc == 0 and "warning: A (imitator) and B (teacher_snapshot) share no leaf path" in out
    rc, out, _ = _cli(capsys, run / "imitator" / "ad" / "checkpoints", "--diff", 100, snap,
                      "--json")
    data = json.loads(out)
    assert data["only_a"][:1] == ["opt_state/0/count"] and "params/Dense_0/bias" in data["only_b"]


def _error(capsys, *argv) -> str:
    rc, out, err = _cli(capsys, *argv)
    assert rc == 1 and out == "" and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and err.startswith("climit: error: ")
    return err


def test_clear_errors_never_tracebacks(run, tmp_path, capsys):
    assert "no such file or directory" in _error(capsys, tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    assert "holds no checkpoints" in _error(capsys, tmp_path / "empty")
    assert "several checkpoint directories" in _error(capsys, run, "--stats")
    snap = run / "teacher" / "snapshots"
    assert "out of range: 4 learners" in _error(capsys, snap, "--stats", "--learner", 4)
    assert "out of range: 2 imitator seeds" in _error(capsys,
                                                      run / "imitator" / "ad" / "checkpoints",
                                                      "--stats", "--learner", 2)
    assert "no learners to choose" in _error(capsys, run / "other" / "checkpoints", "--stats",
                                             "--learner", 0)
    assert "no checkpoint at step 5" in _error(capsys, snap, "--diff", 5, 10000)
    assert "no leaf of" in _error(capsys, snap, "--stats", "--prefix", "learners/")


def test_options_a_view_would_ignore_are_refused(run, tmp_path, capsys):
    snap = run / "teacher" / "snapshots"
    refused = [
        ((snap, "--prefix", "params"),
         "--prefix would be ignored without --stats, --diff or --eval"),
        ((snap, "--learner", 1), "--learner would be ignored without"),
        ((snap, "--seed", 1), "--seed would be ignored without"),
        ((snap, "--tasks", 2), "--tasks would be ignored without"),
        ((snap, "--stats", "--seed", 1, "--tasks", 2),
         "--tasks, --seed would be ignored with --stats"),
        ((snap, "--diff", 10_000, 20_000, "--step", 10_000),
         "--diff takes its two steps as A and B"),
        ((snap, "--diff", 10_000, 20_000, "--tasks", 1), "--tasks would be ignored with --diff"),
        ((snap, "--eval", 1, "--prefix", "params"), "--eval rolls the whole policy"),
        ((snap, "--eval", 1, "--tasks", 2), "--tasks applies to imitator checkpoints"),
        ((snap, "--eval", 1, "--stats"), "choose one of"),
    ]
    for argv, message in refused:
        assert message in _error(capsys, *argv), argv
    h = histories.create(tmp_path / "hist", spec=_SPEC,
                         streams=[histories.StreamInfo(0, 0, (1,), 0)])
    assert "--step would be ignored on a learning history" in _error(capsys, h.path, "--step", 1)
    assert "is a learning history, not a checkpoint" in _error(capsys, h.path, "--stats")


def test_bad_values_are_refused(run, capsys):
    snap = run / "teacher" / "snapshots"
    assert "--seed -1: must be in [0, 2^32)" in _error(capsys, snap, "--eval", 1, "--seed", -1)
    assert "--seed 4294967296" in _error(capsys, snap, "--eval", 1, "--seed", 2 ** 32)
    assert "--tasks 0: needs at least one task" in _error(capsys,
                                                          run / "imitator" / "ad" / "checkpoints",
                                                          "--eval", 1, "--tasks", 0)
    assert "at least one episode" in _error(capsys, snap, "--eval", 0)
    assert "--step soon: expected a step number" in _error(capsys, snap, "--step", "soon")
    assert "--learner -1: must be 0 or more" in _error(capsys, snap, "--stats", "--learner", -1)


def test_damaged_checkpoint_message(tmp_path, capsys):
    with checkpoint.Checkpointer(tmp_path / "ck") as ck:
        ck.save(7, {"w": jnp.arange(500.0)})
    data = max((p for p in (tmp_path / "ck" / "7").rglob("*") if p.is_file() and "/d/" in str(p)),
               key=lambda p: p.stat().st_size)
    raw = bytearray(data.read_bytes()); raw[-10] ^= 0xFF; data.write_bytes(bytes(raw))
    err = _error(capsys, tmp_path / "ck", "--stats")
    assert "is damaged" in err and data.name in err
    # Damage that orbax meets while reading the tree's metadata: its tensorstore details
    # (kilobytes, logged at absl WARNING) and its background tasks' reports stay out of the
    # output, which is climit's message (a real process: pytest captures logs in-process).
    with checkpoint.Checkpointer(tmp_path / "ck2") as ck:
        ck.save(7, {"u": jnp.zeros(3), "w": jnp.arange(500.0)})
    first = min(p for p in (tmp_path / "ck2" / "7").rglob("*") if p.is_file() and "/d/" in str(p))
    first.write_bytes(first.read_bytes()[:20])
    proc = subprocess.run([sys.executable, "-m", "climit.cli", "inspect", str(tmp_path / "ck2"),
                           "--stats"], capture_output=True, text=True,
                          env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert proc.returncode == 1 and "climit: error: checkpoint" in proc.stderr
    assert "absl" not in proc.stderr and "Error details" not in proc.stderr
    assert "Task exception was never retrieved" not in proc.stderr
    (tmp_path / "ck" / "7" / "_CHECKPOINT_METADATA").write_text("{broken")
    err = _error(capsys, tmp_path / "ck")
    assert "is damaged" in err and "_CHECKPOINT_METADATA" in err
    # orbax's own report of that file (absl ERROR, once per look at the step) stays out too
    proc = subprocess.run([sys.executable, "-m", "climit.cli", "inspect", str(tmp_path / "ck")],
                          capture_output=True, text=True,
                          env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert proc.returncode == 1 and proc.stderr.startswith("climit: error: checkpoint"), proc.stderr
    assert "absl" not in proc.stderr


def test_one_damaged_step_or_directory_does_not_hide_the_rest(tmp_path, capsys):
    # A damaged step lists as damaged while the intact ones show; a directory whose latest step
    # is damaged is noted in a run's overview instead of failing it; the steps a stage set
    # aside in damaged_<dir>/ are named, never described (their damage stopped every overview).
    run = tmp_path / "run"
    with checkpoint.snapshots(run / "teacher" / "snapshots") as ck:
        for step in (10, 20, 30):
            ck.save(step, {"params": _teacher_params(1.0)}, config=TEACHER_CONFIG,
                    metrics={"return": step})
    with checkpoint.Checkpointer(run / "teacher" / "checkpoints") as ck:
        ck.save(30, {"w": jnp.zeros(3)}, config=TEACHER_CONFIG)
    (run / "teacher" / "snapshots" / "20" / checkpoint.CHECKSUM_FILE).write_text("{broken")
    d = checkpoint.describe(run / "teacher" / "snapshots")
    assert d["step"] == 30 and [c["step"] for c in d["checkpoints"]] == [10, 20, 30]
    assert "climit_checksums.json is unreadable" in d["checkpoints"][1]["damaged"]
    assert d["checkpoints"][0]["metrics"] == {"return": 10}
    rc, out, _ = _cli(capsys, run / "teacher" / "snapshots" / "10")
    assert rc == 0 and "showing 10" in out and "damaged (metadata unreadable): [20]" in out
    (run / "teacher" / "snapshots" / "30" / checkpoint.CHECKSUM_FILE).write_text("{broken")
    aside = run / "teacher" / "damaged_checkpoints" / "30"
    aside.parent.mkdir()
    (run / "teacher" / "checkpoints" / "30").rename(aside)
    with checkpoint.Checkpointer(run / "teacher" / "checkpoints") as ck:
        ck.save(40, {"w": jnp.ones(3)}, config=TEACHER_CONFIG)
    view = inspect_lib.overview(run)
    dirs = _by_name(view)
    assert set(dirs) == {"teacher/snapshots", "teacher/checkpoints"}
    assert dirs["teacher/checkpoints"]["step"] == 40
    assert "is damaged" in dirs["teacher/snapshots"]["missing"]
    assert view["set_aside"] == ["teacher/damaged_checkpoints"]
    rc, out, _ = _cli(capsys, run)
    assert (rc == 0
            and "teacher/damaged_checkpoints  (damaged steps climit set aside: not shown)" in out)
    # Every directory's latest step damaged: said, not "no checkpoint at step None" beside
    # step lists that hold it.
    (run / "teacher" / "checkpoints" / "40" / checkpoint.CHECKSUM_FILE).write_text("{broken")
    err = _error(capsys, run)
    assert err.startswith("climit: error: no readable checkpoint at the latest step in any of the "
                          "2 checkpoint directories") and "None" not in err
    assert "teacher/checkpoints: steps 40 (damaged: inspect it alone for why)" in err
    assert "no readable checkpoint at step 40" in _error(capsys, run, "--step", 40)


def test_a_run_named_damaged_something_is_searched_and_empty_ends_are_not_deeper(tmp_path):
    # damaged_<name>/ is set aside only beside a checkpoint directory <name>/: a run named
    # damaged_x (nothing called x beside it) is a run like any other. A directory at the depth
    # limit that holds no directories is the end of the tree, not something left unsearched.
    ck_dir = tmp_path / "runs" / "damaged_x" / "teacher" / "checkpoints"
    with checkpoint.Checkpointer(ck_dir) as ck:
        ck.save(3, {"w": jnp.ones(2)})
    (tmp_path / "runs" / "a" / "b" / "c" / "d" / "e").mkdir(parents=True)
    view = inspect_lib.overview(tmp_path / "runs")
    assert [d["name"] for d in view["checkpoints"]] == ["damaged_x/teacher/checkpoints"]
    assert view["set_aside"] == [] and view["not_searched"] == []


def test_a_change_is_any_change_and_relative_to_nothing_is_infinite():
    tiny = inspect_lib._change(np.ones(3), np.ones(3) + 1e-9)
    assert tiny["changed"] and tiny["max_abs_diff"] == pytest.approx(1e-9)
    assert inspect_lib._change(np.zeros(3), np.ones(3))["rel_change"] == math.inf
    assert inspect_lib._change(np.zeros(3), np.zeros(3))["rel_change"] == 0.0


def test_stacked_leaves_that_disagree_on_the_learner_count_are_refused():
    meta = {"path": "ck", "step": 5, "config": TEACHER_CONFIG,
            "tree": {"params/a": {"shape": [4, 3]}, "params/b": {"shape": [3, 3]}}}
    with pytest.raises(ClimitError, match=r"ck step 5: the leaves under params/ disagree on the "
                                          r"learner axis \(\[3, 4\]\)"):
        inspect_lib.layout(meta)


def test_four_saved_steps_are_listed_whole_and_more_in_brief():
    assert inspect_lib._brief([1, 2, 3, 4]) == "1, 2, 3, 4"
    assert inspect_lib._brief([1, 2, 3, 4, 5]) == "1, 2, ..., 5 (5 steps)"
    assert inspect_lib._brief([]) == "none"


# ---------------------------------------------------------------------------------------------
# Learning histories
# ---------------------------------------------------------------------------------------------

_SPEC = {"name": "toy", "interface": "grid", "obs_shape": [2], "obs_dtype": "uint8",
         "num_actions": 2}


def _history(path, steps=(30, 31)):
    """2 streams, episodes of 3 steps; stream i's episode j returns j + i (its last reward).
    The last step ends no episode, so 20 of 21 episodes are finished."""
    infos = [histories.StreamInfo(0, 0, (1, 2), 0, {"lr": 0.1}),
             histories.StreamInfo(1, 0, (3, 4), 1, {"lr": 0.2})]
    t = 0
    with histories.create(path, spec=_SPEC, streams=infos, q_period=4, total_steps=sum(steps),
                          config={"env": {"name": "toy"}}) as w:
        for n in steps:
            step = np.arange(t, t + n)
            done = np.broadcast_to((step % 3 == 2) & (step < 60), (2, n))
            reward = np.where(done, step // 3 + np.arange(2)[:, None], 0.0)
            q = histories.num_q_rows(t + n, 4) - histories.num_q_rows(t, 4)
            w.append(np.zeros((2, n, 2), np.uint8), np.zeros((2, n)), reward, done,
                     np.zeros((2, n), bool), np.zeros((2, q, 2)))
            t += n
    return path


def test_history_overview_reads_no_observations(tmp_path, monkeypatch, capsys):
    path = _history(tmp_path / "histories")
    real, fields = histories.History._load, set()

    def spy(self, chunk, block, field):
        fields.add(field)
        return real(self, chunk, block, field)

    monkeypatch.setattr(histories.History, "_load", spy)
    view = inspect_lib.history_overview(path)
    assert fields == {"reward", "terminated", "truncated"}
    assert ((view["env"], view["num_streams"], view["num_steps"], view["complete"])
            == ("toy", 2, 61, True))
    assert (view["q_period"], view["q_rows"]) == (4, 16)
    s0, s1 = view["streams"]
    assert (s0["learner"], s0["task"], s0["seed"], s0["hparams"]) == (0, [1, 2], 0, {"lr": 0.1})
    assert (s1["episodes"], s1["first_return"], s1["last_return"]) == (20, 5.5, 15.5)
    assert view["first_return"] == 5.0 and view["last_return"] == 15.0
    rc, out, err = _cli(capsys, path)
    assert rc == 0 and err == ""
    assert "toy (grid): 2 streams x 61 steps (complete); Q-values every 4 steps (16 rows)" in out
    assert "first 10 finished episodes 5 -> last 10 15" in out
    assert "1       1        0    [3, 4]  1     lr=0.2           20        5.5       15.5" in out
    rc, out, _ = _cli(capsys, path, "--json")
    assert rc == 0 and json.loads(out) == json.loads(inspect_lib.dumps(view))
    partial = {**view, "num_steps": 30, "complete": False}  # as after the first chunk
    assert "2 streams x 30 steps (30 of 61 planned)" in inspect_lib.format_history(partial)
    empty = histories.create(tmp_path / "empty", spec=_SPEC,
                             streams=[histories.StreamInfo(0, 0, (1,), 0)])
    rc, out, _ = _cli(capsys, empty.path)
    assert rc == 0 and "1 stream x 0 steps (no plan stored); no Q-values" in out
    # A run directory lists its histories beside its checkpoints.
    with checkpoint.Checkpointer(tmp_path / "checkpoints") as ck:
        ck.save(1, {"w": jnp.ones(2)})
    assert inspect_lib.overview(tmp_path)["histories"] == ["empty", "histories"]


def test_history_lists_only_the_hyperparameters_of_its_target_rule(tmp_path, capsys):
    infos = [histories.StreamInfo(0, 0, (1,), 0, {"lr": 0.1, "tau": 0.005})]
    for rule in ("hard", "polyak"):
        config = {"env": {"name": "toy"}, "teacher": {"target": rule, "target_period": 500}}
        with histories.create(tmp_path / rule, spec=_SPEC, streams=infos, config=config):
            pass
    hard = inspect_lib.history_overview(tmp_path / "hard")
    assert hard["streams"][0]["hparams"] == {"lr": 0.1}
    assert hard["target"] == {"rule": "hard", "period": 500}
    rc, out, _ = _cli(capsys, tmp_path / "hard")
    assert rc == 0 and "tau" not in out and "target network: hard copy every 500 updates" in out
    assert (inspect_lib.history_overview(tmp_path / "polyak")["streams"][0]["hparams"]
            == infos[0].hparams)
    rc, out, _ = _cli(capsys, tmp_path / "polyak")
    assert rc == 0 and "lr=0.1 tau=0.005" in out and "every 500" not in out


# ---------------------------------------------------------------------------------------------
# --eval on a real tiny teacher run (CartPole: even an untrained greedy DQN earns ~9 per
# episode, so returns are informative) and a tiny imitator trained on its histories
# ---------------------------------------------------------------------------------------------

EVAL_RUN = ["env.name=CartPole-v1", "env.transfer=", "env.train_tasks=1",
            "teacher.seeds=3", "teacher.total_env_steps=400", "teacher.learning_starts=100",
            "teacher.buffer_size=400", "teacher.batch_size=16", "teacher.hidden=[16]",
            "teacher.chunk_steps=200", "teacher.snapshot_steps=[200]", "teacher.eval_episodes=1",
            "imitator.context_len=16", "imitator.d_model=16", "imitator.n_layers=1",
            "imitator.n_heads=2", "imitator.batch_size=4", "imitator.train_steps=4",
            "imitator.warmup_steps=1", "imitator.eval_every=2", "imitator.seeds=2",
            "imitator.eval_batches=1", "imitator.train_windows=2",
            "eval.confidence=0.9", "eval.bootstrap=200"]  # --eval's interval follows these


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """`climit teach` (3 CartPole learners x 400 steps) then `climit imitate` (2 seeds x 4
    steps) in a tmp runs dir (~20 s on the 2-core CPU container)."""
    runs = tmp_path_factory.mktemp("evalruns")
    args = [*EVAL_RUN, f"run.runs_dir={runs}", "run.name=cp"]
    assert cli.main(["teach", "--no-progress", *args]) == 0
    assert cli.main(["imitate", "--no-progress", *args]) == 0
    return runs / "cp"


def test_eval_teacher_matches_greedy_evaluation(trained, capsys, monkeypatch):
    from climit import config, envs
    from climit.teacher import train

    snap = trained / "teacher" / "snapshots"
    view = inspect_lib.evaluate(snap, 5)
    assert (view["kind"], view["env"], view["step"], view["episodes"], view["step_choice"]) == (
        "teacher_snapshot", "CartPole-v1", 400, 5, "latest")
    assert (view["confidence"], view["bootstrap"]) == (0.9, 200)  # the run's eval config
    means = [r["mean_return"] for r in view["learners"]]
    assert [r["learner"] for r in view["learners"]] == [0, 1, 2] and min(means) > 0
    # Known answer: the same rollouts as the teacher's own greedy evaluation with the same key.
    cfg = config.load(None, EVAL_RUN)
    with checkpoint.snapshots(snap, readonly=True) as s:
        params_G = s.restore(400)["params"]
    expected = train.evaluate_greedy(cfg.teacher, envs.make("CartPole-v1"), params_G,
                                     train.plan(cfg).tasks_GxK,
                                     keys.inspect_eval(cfg.run.seed, 0), 5)
    assert means == pytest.approx(expected.tolist(), rel=1e-6)
    est = view["mean_return"]
    assert est["value"] == pytest.approx(np.mean(means)) and est["lo"] <= est["value"] <= est["hi"]
    # One learner alone gets the same rollout; the whole-state checkpoint at the same step too,
    # restoring its parameters alone (not its replay buffers).
    one = inspect_lib.evaluate(snap, 5, learner=1)
    assert one["mean_return"]["value"] == means[1] and one["interval_over"] == "episodes"
    real, restored = checkpoint.Checkpointer.restore, []

    def spy(self, *args, **kwargs):
        out = real(self, *args, **kwargs)
        restored.extend(checkpoint.flatten(out))
        return out

    monkeypatch.setattr(checkpoint.Checkpointer, "restore", spy)
    ckpt = inspect_lib.evaluate(trained / "teacher" / "checkpoints", 5)
    assert ckpt["kind"] == "teacher_checkpoint" and ckpt["learners"] == view["learners"]
    assert restored and all(k.startswith("learners/params/") for k in restored)
    rc, out, err = _cli(capsys, snap, "--eval", 5, "--learner", 2, "--json")
    assert rc == 0 and json.loads(out)["learners"] == [view["learners"][2]]
    rc, out, _ = _cli(capsys, snap, "--eval", 3)
    assert rc == 0 and "3 learners, each on its own task: mean return" in out
    assert "90% bootstrap interval over learners x episodes" in out and "(the latest)" in out


def test_eval_imitator_seeds_from_an_empty_context(trained, capsys):
    from climit.imitator import train

    ck = trained / "imitator" / "ad" / "checkpoints"
    view = inspect_lib.evaluate(ck, 2, tasks=2)
    # The best step by default, as `climit evaluate` loads it.
    assert (view["kind"], view["step"], view["step_choice"]) == (
        "imitator", train.load(ck.parent, "best").step, "best")
    assert (view["tasks"] == [[], []]
            and view["task_unit"] == "rollouts (env seeds) of its single task")
    seeds = [r["mean_return"] for r in view["seeds"]]
    assert [r["seed"] for r in view["seeds"]] == [0, 1] and min(seeds) > 0
    assert view["mean_return"]["value"] == pytest.approx(np.mean(seeds))
    # Known answer: the evaluation's own rollouts (evaluate.imitator_steps, the path test (a)
    # takes) with the same key and tasks give each seed the same first two episodes.
    import jax

    from climit import envs, evaluate, rollout
    loaded = train.load(ck.parent, "best")
    key = keys.inspect_eval(loaded.config.run.seed, 0)
    env = envs.make(loaded.config.env.name, loaded.config.env.sticky_action_prob)
    tasks = envs.sample_tasks(loaded.config.env.name, jax.random.fold_in(key, 0), 2, "heldout")
    reward_SxKxT, done_SxKxT = evaluate.imitator_steps(
        loaded, env, tasks, jax.random.fold_in(key, 1), 2 * env.spec.episode_len, loaded.config,
        "", False)
    first_two = jax.vmap(jax.vmap(lambda r, d: rollout.episode_returns(r, d, 2).returns))(
        reward_SxKxT, done_SxKxT)
    assert seeds == pytest.approx(np.asarray(first_two).mean(axis=(1, 2)).tolist(), rel=1e-6)
    # in context: the first episode against the last (of two), over seeds and tasks
    assert view["first_episodes"]["value"] == pytest.approx(float(first_two[..., 0].mean()))
    assert view["last_episodes"]["value"] == pytest.approx(float(first_two[..., -1].mean()))
    assert view["policy"] == "imitator (sample actions) from an empty context"
    assert (view["confidence"], view["bootstrap"]) == (0.9, 200)
    assert view["interval_over"] == "imitator seeds x rollouts (env seeds) of its single task"
    assert inspect_lib.evaluate(ck, 2, tasks=2) == view  # deterministic
    other = inspect_lib.evaluate(ck, 2, tasks=2, seed=1)  # another evaluation key
    assert [r["mean_return"] for r in other["seeds"]] != seeds
    alone = inspect_lib.evaluate(ck, 2, tasks=2, learner=1)
    assert alone["seeds"] == [view["seeds"][1]]
    assert alone["interval_over"] == "rollouts (env seeds) of its single task"
    latest = inspect_lib.evaluate(ck, 2, tasks=2, step="latest")
    assert (latest["step"], latest["step_choice"]) == (4, "latest")
    named = inspect_lib.evaluate(ck / "4", 2, tasks=2)  # a step directory: that step, not the best
    assert (named["step"], named["step_choice"], named["seeds"]) == (4, "given", latest["seeds"])
    rc, out, err = _cli(capsys, ck, "--eval", 2, "--tasks", 2)
    assert rc == 0 and "2 seeds x 2 rollouts (env seeds) of its single task: mean return" in out
    assert "held-out" not in out and "in context:" in out and "90% bootstrap interval" in out
    assert "(the best: lowest heldout_loss, as `climit evaluate` loads it)" in out
    rc, out, _ = _cli(capsys, ck, "--eval", 2, "--tasks", 2, "--json")
    assert json.loads(out) == json.loads(inspect_lib.dumps(view))


def test_eval_errors(trained, run, capsys):
    assert "neither a climit teacher" in _error(capsys, run / "other" / "checkpoints", "--eval", 2)
    assert "out of range: 3 learners" in _error(capsys, trained / "teacher" / "snapshots", "--eval",
                                                2, "--learner", 3)
    assert "--learner -1 out of range: 3 learners" in _error(
        capsys, trained / "teacher" / "snapshots", "--eval", 2, "--learner", -1)
    assert "out of range: 2 imitator seeds" in _error(capsys, trained / "imitator" / "ad" /
                                                      "checkpoints", "--eval", 2, "--learner", 5)
    assert "choose one of" in _error(capsys, trained / "teacher" / "snapshots", "--eval", 2,
                                     "--stats")
    assert "at least one episode" in _error(capsys, trained / "teacher" / "snapshots", "--eval", 0)
    assert "no best step" in _error(capsys, trained / "teacher" / "snapshots", "--eval", 2,
                                    "--step", "best")


def test_closed_event_loop_reports_from_orbax_io_are_dropped_others_printed(capsys, monkeypatch):
    # tensorstore callbacks that finish after a failed restore closed orbax's event loop used to
    # print up to a hundred "Event loop is closed" tracebacks around climit's one-line message.
    import sys

    class RaisesWhenCollected:
        def __init__(self, exc):
            self.exc = exc

        def __del__(self):
            raise self.exc

    monkeypatch.setattr(sys, "unraisablehook", cli._quiet_closed_loop)
    RaisesWhenCollected(RuntimeError("Event loop is closed"))
    assert capsys.readouterr().err == ""
    RaisesWhenCollected(ValueError("something else"))
    assert "ValueError: something else" in capsys.readouterr().err
