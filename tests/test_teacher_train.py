"""The teacher driver: `climit teach` end to end, resume == uninterrupted, divergence, disk check,
sweeps, and the fresh-learner API used by evaluation."""

from __future__ import annotations

import collections
import dataclasses
import errno
import json
import os
import shutil
import signal
import time
import types
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from climit import checkpoint, cli, config, envs, histories, parallel, stopping
from climit.errors import ArtifactError, ClimitError, TrainingDiverged
from climit.metrics import read_jsonl
from climit.teacher import dqn, networks, train

import procs

TINY = ["env.name=darkroom", "env.train_tasks=2", "teacher.seeds=2", "teacher.total_env_steps=1200",
        "teacher.chunk_steps=200", "teacher.checkpoint_every=2", "teacher.q_log_period=50",
        "teacher.learning_starts=200", "teacher.buffer_size=500", "teacher.batch_size=16",
        "teacher.hidden=[16]", "teacher.eps_decay_steps=600", "teacher.snapshot_steps=[300, 600]",
        "teacher.eval_episodes=2", "histories.streams_per_chunk=3"]


def tiny(tmp_path: Path, name: str, *extra: str) -> config.ExperimentConfig:
    return config.load(None, TINY + [f"run.runs_dir={tmp_path}", f"run.name={name}", *extra])


class Kill(Exception):
    pass


def kill_after(k: int):
    def hook(chunk: int) -> None:
        if chunk == k:
            raise Kill(f"killed after chunk {k}")
    return hook


def _history_arrays(run: Path) -> dict[str, np.ndarray]:
    h = histories.open(run / "teacher" / "histories")
    h.verify()
    return {f"{f}/{i}": h.read(f, i) for f in histories.FIELDS for i in range(h.num_streams)}


def _final_params(run: Path):
    with checkpoint.Checkpointer(run / "teacher" / "checkpoints", readonly=True) as c:
        return c.restore()["learners"]["params"]


def _metrics(run: Path) -> list[dict]:
    wall = ("wall_s", "env_steps_per_s", "save_s")
    return [{k: v for k, v in r.items() if k not in wall}
            for r in read_jsonl(run / "teacher" / "metrics.jsonl")]


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory) -> Path:
    """The TINY run, never interrupted: what every resumed run must reproduce exactly."""
    root = tmp_path_factory.mktemp("clean")
    train.teach(tiny(root, "clean"), root / "clean", progress=False, log=lambda s: None)
    return root / "clean"


def _assert_identical_runs(clean: Path, resumed: Path, summary: dict) -> None:
    """Histories, final parameters, metrics and final returns equal to the clean run's."""
    a, b = _history_arrays(clean), _history_arrays(resumed)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    jax.tree.map(np.testing.assert_array_equal, _final_params(clean), _final_params(resumed))
    assert _metrics(clean) == _metrics(resumed)
    clean_summary = json.loads((clean / "teacher" / "summary.json").read_text())
    assert clean_summary["final_return_per_learner"] == summary["final_return_per_learner"]


def test_teach_cli_end_to_end(tmp_path, capsys):
    assert cli.main(["teach", "--no-progress", *TINY, f"run.runs_dir={tmp_path}",
                     "run.name=e2e"]) == 0
    out = tmp_path / "e2e" / "teacher"
    summary = json.loads((out / "summary.json").read_text())
    for key in ("final_return_mean", "final_return_per_learner", "env_steps_per_learner",
                "env_steps_per_s", "td_updates_per_s"):
        assert key in summary
    assert len(summary["final_return_per_learner"]) == 4
    assert summary["env_steps_per_learner"] == 1200 and summary["td_updates_per_s"] > 0
    assert np.isclose(summary["final_return_mean"], np.mean(summary["final_return_per_learner"]))
    h = histories.open(out / "histories")
    assert h.num_streams == 4 and h.num_steps == 1200 and h.num_q == 24 and h.complete
    assert h.stream_info(3).seed == 1 and h.stream_info(3).hparams["lr"] == pytest.approx(1e-3)
    ep = h.episodes(0)
    assert (ep.length == 20).all() and len(ep.start) == 60  # Dark Room: 20-step episodes
    # checkpoints every 2 chunks, the latest 2 kept; snapshots at 300 -> 400 (chunk end), 600, end
    assert checkpoint.complete_steps(out / "checkpoints") == [800, 1200]
    assert checkpoint.complete_steps(out / "snapshots") == [400, 600, 1200]
    records = read_jsonl(out / "metrics.jsonl")
    assert [r["step"] for r in records] == [200, 400, 600, 800, 1000, 1200]
    # saves at 400, 600, 800 (and 1200, the end): their time is the next chunk's save_s, not wall_s
    assert [r["step"] for r in records if "save_s" in r] == [600, 800, 1000]
    assert "histories" in capsys.readouterr().out


@pytest.mark.parametrize("kill_at", [1, 3, 5])
def test_resume_after_kill_is_identical(tmp_path, clean_run, kill_at):
    # Kill points: 1, before any checkpoint; 3, after the snapshot at 600 drained the history
    # past the checkpoint at 400 (the resume cuts it back); 5, right after the checkpoint at 800.
    killed = tiny(tmp_path, "killed")
    with pytest.raises(Kill):
        train.teach(killed, tmp_path / "killed", progress=False, log=lambda s: None,
                    stop_hook=kill_after(kill_at))
    written = histories.open(tmp_path / "killed" / "teacher" / "histories").num_steps
    assert written == {1: 0, 3: 600, 5: 800}[kill_at]
    summary = train.teach(killed, tmp_path / "killed", progress=False, log=lambda s: None)
    assert summary["resumed_from_env_step"] == {1: None, 3: 400, 5: 800}[kill_at]
    _assert_identical_runs(clean_run, tmp_path / "killed", summary)


def test_every_save_waits_for_the_history_write_in_flight(tmp_path, monkeypatch, clean_run):
    # Histories are written by a background thread while the next chunk runs. Made slow here,
    # every checkpoint and snapshot must still find the history on disk up to its own step
    # (a resume after a hard kill continues the history from the checkpoint's step), and the
    # run must end the same as the clean one.
    append = histories.HistoryWriter.append

    def slow_append(self, *args, **kwargs):
        time.sleep(0.3)
        append(self, *args, **kwargs)

    seen = []

    def save_checking(self, step, *args, **kwargs):
        seen.append((step, histories.open(tmp_path / "slow" / "teacher" / "histories").num_steps))
        return save(self, step, *args, **kwargs)

    save = checkpoint.Checkpointer.save
    monkeypatch.setattr(histories.HistoryWriter, "append", slow_append)
    monkeypatch.setattr(checkpoint.Checkpointer, "save", save_checking)
    summary = train.teach(tiny(tmp_path, "slow"), tmp_path / "slow", progress=False,
                          log=lambda s: None)
    # snapshots at 400, 600, 1200; checkpoints at 400, 800, 1200 (one learner step per env step)
    assert sorted(seen) == [(400, 400), (400, 400), (600, 600), (800, 800), (1200, 1200),
                            (1200, 1200)]
    _assert_identical_runs(clean_run, tmp_path / "slow", summary)


def test_resume_with_another_config_is_refused(tmp_path, clean_run):
    cfg = tiny(tmp_path, "r")
    with pytest.raises(Kill):
        train.teach(cfg, tmp_path / "r", progress=False, log=lambda s: None,
                    stop_hook=kill_after(2))
    with pytest.raises(ClimitError, match="teacher.lr: 0.001 -> 0.002"):
        train.teach(tiny(tmp_path, "r", "teacher.lr=0.002"), tmp_path / "r", progress=False,
                    log=lambda s: None)
    # How often the run checkpoints and how many it keeps change nothing learned: a resume
    # with other values is accepted and ends as the uninterrupted run.
    storage = tiny(tmp_path, "r", "teacher.checkpoint_every=1", "teacher.keep_checkpoints=3")
    assert train.fingerprint(storage) == train.fingerprint(cfg)
    summary = train.teach(storage, tmp_path / "r", progress=False, log=lambda s: None)
    assert summary["resumed_from_env_step"] == 400
    _assert_identical_runs(clean_run, tmp_path / "r", summary)
    assert len(checkpoint.complete_steps(tmp_path / "r" / "teacher" / "checkpoints")) == 3


def test_divergence_stops_and_keeps_last_good_checkpoint(tmp_path):
    cfg = tiny(tmp_path, "nan", "teacher.lr=1e30", "teacher.max_grad_norm=0",
               "teacher.checkpoint_every=1",
               "teacher.learning_starts=300", "teacher.snapshot_steps=[5000]")
    with pytest.raises(TrainingDiverged, match="NaN/Inf") as e:
        train.teach(cfg, tmp_path / "nan", progress=False, log=lambda s: None)
    steps = checkpoint.complete_steps(tmp_path / "nan" / "teacher" / "checkpoints")
    assert steps and max(steps) <= 400
    # The message names the checkpoint that is kept, as of the divergence (not "step None",
    # what the run had before training began).
    assert f"the last good checkpoint (env step {max(steps)}) is kept in" in str(e.value)
    with checkpoint.Checkpointer(tmp_path / "nan" / "teacher" / "checkpoints", readonly=True) as c:
        params = c.restore()["learners"]["params"]
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(params))


def test_non_finite_weights_stop_even_with_a_finite_loss():
    from climit.teacher import dqn

    stats = dqn.ChunkStats(episodes_G=np.zeros(3, np.int32), return_sum_G=np.zeros(3, np.float32),
                           update_sum_G=dqn.UpdateStats(loss=np.ones(3, np.float32)),
                           loss_count=np.int32(1),
                           params_finite_G=np.array([True, False, True]))
    out = dqn.ChunkOut(stats=stats, episode_return_NxT=None, streams=None, q_NxTqxA=None)
    with pytest.raises(TrainingDiverged, match=r"learners \[1\]") as e:
        train._check_finite(out, 10, 1, "the last good checkpoint (env step 8) is kept in x")
    # ... and says what to do, as the imitator's does.
    assert "is kept in x. Lower teacher.lr" in str(e.value) and "max_grad_norm" in str(e.value)
    assert "rewards" in str(e.value) and "run.name" in str(e.value)
    train._check_finite(out._replace(stats=stats._replace(params_finite_G=np.ones(3, bool))),
                        10, 1, "")


def test_a_divergence_names_at_most_8_learners():
    def out(bad: int) -> dqn.ChunkOut:
        return _chunk_out([0] * 12, [0.0] * 12, np.where(np.arange(12) < bad, np.nan, 1.0), 1)
    eight = r"learners \[0, 1, 2, 3, 4, 5, 6, 7\]"
    with pytest.raises(TrainingDiverged, match=r"env step 10 for " + eight + "; "):
        train._check_finite(out(8), 10, 1, "kept")
    with pytest.raises(TrainingDiverged, match=r"env step 20 for " + eight + r"\.\.\.; "):
        train._check_finite(out(9), 10, 2, "kept")  # vector step 10 of 2 envs


def _count_real_inits(monkeypatch) -> list[bool]:
    """Spy on dqn.init: one entry per call with real arrays (not eval_shape's tracers)."""
    real, calls = dqn.init, []

    def spy(tcfg, env, keys, tasks):
        if not isinstance(keys, jax.core.Tracer):
            calls.append(True)
        return real(tcfg, env, keys, tasks)
    monkeypatch.setattr(dqn, "init", spy)
    return calls


def test_disk_check_stops_before_any_work(tmp_path, monkeypatch):
    # Before any work means before the learners' state is allocated, too: a huge
    # teacher.buffer_size must fail at once, not after minutes of allocating it.
    inits = _count_real_inits(monkeypatch)
    monkeypatch.setattr(histories, "free_bytes", lambda path: 1000)
    with pytest.raises(ClimitError, match="not enough disk space"):
        train.teach(tiny(tmp_path, "full"), tmp_path / "full", progress=False, log=lambda s: None)
    assert inits == []
    assert not (tmp_path / "full" / "teacher" / "histories").exists()
    assert checkpoint.complete_steps(tmp_path / "full" / "teacher" / "checkpoints") == []


def test_disk_check_counts_checkpoints_and_snapshots(tmp_path, monkeypatch):
    # Room for the histories alone is not enough: the checkpoints hold the whole state (the
    # replay buffers) up to keep_checkpoints + 1 times, and snapshots keep parameters.
    cfg = tiny(tmp_path, "tight")
    env = envs.make("darkroom")
    hist = histories.estimate_bytes(env.spec, 4, 1200, 50)
    state = train._tree_bytes(train._abstract_state(cfg.teacher, env, train.num_learners(cfg)))
    assert state > 4 * 500 * (2 * 2 + 4 + 2)  # 4 learners' replay buffers of 500 transitions
    monkeypatch.setattr(histories, "free_bytes", lambda path: hist + 2 * state)
    logs: list[str] = []
    with pytest.raises(ClimitError, match="not enough disk space for the teacher run") as e:
        train.teach(cfg, tmp_path / "tight", progress=False, log=logs.append)
    assert "checkpoints" in str(e.value) and "snapshots" in str(e.value)
    step_bytes = state + checkpoint.STEP_OVERHEAD_BYTES  # the arrays and orbax's own files
    # keep 2 + 1 during a save
    assert f"checkpoints {histories.human_bytes(3 * step_bytes)}" in logs[0]
    assert not (tmp_path / "tight" / "teacher" / "histories").exists()
    # A run killed after its last checkpoint, before its summary, writes nothing more: it
    # needs no room at all.
    shape = train._abstract_state(cfg.teacher, env, train.num_learners(cfg))
    needs = train._disk_needs(cfg, env.spec, shape, train.plan(cfg), 1200, 50, 2)
    assert needs == {"histories": 0, "checkpoints": 0, "snapshots": 0}
    assert sum(train._disk_needs(cfg, env.spec, shape, train.plan(cfg), 1000, 50, 2).values()) > 0


def test_disk_needs_count_what_is_still_ahead(tmp_path):
    # 4 learners x 2 envs, 600 vector steps (1200 env steps), keep_checkpoints 2. Snapshots
    # at the steps asked for strictly after the resume's step and before the end, plus the end
    # (1200, asked for too, is that one); checkpoints: keep + 1 during a save, less those on
    # disk, never below 0; histories: every stream's remaining vector steps.
    cfg = tiny(tmp_path, "n", "teacher.num_envs=2", "teacher.snapshot_steps=[300, 400, 600, 1200]")
    env = envs.make("darkroom")
    shape = train._abstract_state(cfg.teacher, env, train.num_learners(cfg))
    state = train._tree_bytes(shape) + checkpoint.STEP_OVERHEAD_BYTES
    params = train._tree_bytes(shape.learners.params) + checkpoint.STEP_OVERHEAD_BYTES

    def needs(start_t, saved):
        return train._disk_needs(cfg, env.spec, shape, train.plan(cfg), start_t, 50, saved)
    assert needs(0, 0) == {"histories": histories.estimate_bytes(env.spec, 8, 600, 50),
                           "checkpoints": 3 * state, "snapshots": 4 * params}
    assert needs(200, 1) == {"histories": histories.estimate_bytes(env.spec, 8, 400, 50),
                             "checkpoints": 2 * state, "snapshots": 2 * params}  # 600, 1200
    assert needs(300, 5)["checkpoints"] == 0  # keep_checkpoints lowered on a resume


def test_each_saved_step_fits_the_disk_checks_estimate(clean_run):
    # What a checkpoint and a snapshot step take on disk (blocks allocated, metadata files
    # included: 2 KB of parameters took 38 KB) is within the estimate the disk check adds up.
    cfg = tiny(clean_run.parent, "clean")
    shape = train._abstract_state(cfg.teacher, envs.make("darkroom"), train.num_learners(cfg))
    budget = {"checkpoints": train._tree_bytes(shape),
              "snapshots": train._tree_bytes(shape.learners.params)}
    for kind, arrays in budget.items():
        steps = [p for p in (clean_run / "teacher" / kind).iterdir() if p.name.isdigit()]
        assert steps, kind
        for step in steps:
            used = sum(f.stat().st_blocks * 512 for f in step.rglob("*") if f.is_file())
            assert used <= arrays + checkpoint.STEP_OVERHEAD_BYTES, (step, used, arrays)


def test_state_too_big_for_memory_stops_before_allocating(tmp_path, monkeypatch):
    inits = _count_real_inits(monkeypatch)
    cfg = tiny(tmp_path, "big")
    state = train._tree_bytes(train._abstract_state(cfg.teacher, envs.make("darkroom"),
                                                    train.num_learners(cfg)))
    monkeypatch.setattr(parallel, "device_memory", lambda: (state - 1, "host memory"))
    with pytest.raises(ClimitError, match="4 learners do not fit in memory") as e:
        train.teach(cfg, tmp_path / "big", progress=False, log=lambda s: None)
    assert "teacher.buffer_size=500" in str(e.value) and "lower teacher.buffer_size" in str(e.value)
    assert inits == [] and not (tmp_path / "big" / "teacher" / "checkpoints").exists()
    monkeypatch.setattr(parallel, "device_memory", lambda: (state, "host memory"))  # just fits
    monkeypatch.setattr(histories, "free_bytes", lambda path: 1000)
    with pytest.raises(ClimitError, match="not enough disk space"):
        train.teach(cfg, tmp_path / "big", progress=False, log=lambda s: None)
    assert parallel.device_memory()[0] is None or parallel.device_memory()[0] > 0
    # Sizes far past any memory are refused from their count alone, before the plan lays out
    # a key and a task per learner (10^12 learners took a traceback from numpy there).
    monkeypatch.setattr(train, "plan", lambda cfg: pytest.fail("planned before the check"))
    with pytest.raises(ClimitError, match="1000000000000 learners do not fit in memory"):
        train.teach(tiny(tmp_path, "huge", "teacher.seeds=500000000000"), tmp_path / "huge",
                    progress=False, log=lambda s: None)


def _disk_full_in(where: str, monkeypatch) -> None:
    """Make one write of the TINY run fail as a full disk does, after the checkpoint at 400.

    histories: the second block's file of the chunk at 600 (Python's OSError; the first block's
    file is then an orphan on disk). checkpoints: the checkpoint at 800, with the ValueError
    orbax (tensorstore) raises on a full disk.
    """
    if where == "histories":
        write = histories._write_atomic

        def full(path, data):
            if path.name.startswith("b00001_t000000000600"):
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
            write(path, data)
        monkeypatch.setattr(histories, "_write_atomic", full)
        return
    save = checkpoint.Checkpointer.save

    def full_ckpt(self, step, tree, **kw):
        if self.directory.name == "checkpoints" and step == 800:
            raise ValueError('RESOURCE_EXHAUSTED: Failed writing: '
                             f'"{self.directory}/800.orbax-checkpoint-tmp'
                             f'/d/0": No space left on device [os_error_code=\'28\']')
        save(self, step, tree, **kw)
    monkeypatch.setattr(checkpoint.Checkpointer, "save", full_ckpt)


@pytest.mark.parametrize("where", ["histories", "checkpoints"])
def test_full_disk_is_a_clear_error_and_the_run_resumes(tmp_path, monkeypatch, clean_run, where):
    cfg = tiny(tmp_path, "full")
    _disk_full_in(where, monkeypatch)
    closed = []
    close = histories.HistoryWriter.close
    monkeypatch.setattr(histories.HistoryWriter, "close",
                        lambda self: (closed.append(self), close(self)))
    with pytest.raises(ClimitError, match="the disk is full") as e:
        train.teach(cfg, tmp_path / "full", progress=False, log=lambda s: None)
    ckpt_dir = tmp_path / "full" / "teacher" / "checkpoints"
    msg = str(e.value)
    assert f"resumes from its last checkpoint (env step 400) in {ckpt_dir}" in msg
    assert "nothing written so far is lost" in msg and "No space left on device" in msg
    assert len(closed) == 1  # the writer's threads are released on the way out
    monkeypatch.undo()  # space freed
    summary = train.teach(cfg, tmp_path / "full", progress=False, log=lambda s: None)
    assert summary["resumed_from_env_step"] == 400
    _assert_identical_runs(clean_run, tmp_path / "full", summary)


def test_full_disk_message_survives_a_checkpointer_that_fails_to_close(tmp_path, monkeypatch,
                                                                       capsys):
    # On a really full disk orbax's close (waiting on its background writes) fails as well;
    # the specific message must still be what the CLI prints, not ~200 lines of tracebacks.
    write = histories._write_atomic
    _disk_full_in("histories", monkeypatch)
    close = checkpoint.Checkpointer.close

    def full_close(self):
        close(self)
        raise ValueError(f'Failed writing: "{self.directory}/x": No space left on device '
                         f"[os_error_code='28']")
    monkeypatch.setattr(checkpoint.Checkpointer, "close", full_close)
    rc = cli.main(["teach", "--no-progress", *TINY, f"run.runs_dir={tmp_path}", "run.name=full"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "climit: error: the disk is full" in err and "env step 400" in err, err
    # one message, and the log lines
    assert "Traceback" not in err and len(err.splitlines()) <= 4, err
    # A close that fails after a run's last save is the same full disk, said as clearly.
    monkeypatch.setattr(histories, "_write_atomic", write)
    rc = cli.main(["teach", "--no-progress", *TINY, f"run.runs_dir={tmp_path}", "run.name=full"])
    err = capsys.readouterr().err
    assert rc == 1 and "the disk is full" in err and "env step 1200" in err, err


def test_other_errors_are_not_taken_for_a_full_disk(tmp_path, monkeypatch):
    def fail(path, data):
        raise OSError(errno.EACCES, "Permission denied", str(path))
    monkeypatch.setattr(histories, "_write_atomic", fail)
    with pytest.raises(PermissionError):
        train.teach(tiny(tmp_path, "ro"), tmp_path / "ro", progress=False, log=lambda s: None)

    def full_elsewhere(path, data):  # a full /tmp (say) is not this run's disk
        raise OSError(errno.ENOSPC, "No space left on device", "/tmp/elsewhere/cache.bin")
    monkeypatch.setattr(histories, "_write_atomic", full_elsewhere)
    with pytest.raises(OSError, match="No space left") as e:
        train.teach(tiny(tmp_path, "ro2"), tmp_path / "ro2", progress=False, log=lambda s: None)
    assert not isinstance(e.value, ClimitError)


def test_damaged_latest_checkpoint_falls_back_to_the_one_before(tmp_path, clean_run):
    cfg = tiny(tmp_path, "bad")
    with pytest.raises(Kill):
        train.teach(cfg, tmp_path / "bad", progress=False, log=lambda s: None,
                    stop_hook=kill_after(5))
    ckpt_dir = tmp_path / "bad" / "teacher" / "checkpoints"
    assert checkpoint.complete_steps(ckpt_dir) == [400, 800]
    _flip_a_byte(ckpt_dir / "800")
    logs: list[str] = []
    summary = train.teach(cfg, tmp_path / "bad", progress=False, log=logs.append)
    warnings = [line for line in logs if "warning" in line]
    assert any(str(ckpt_dir / "800") in line and "corrupt" in line for line in warnings), logs
    assert summary["resumed_from_env_step"] == 400  # history and metrics cut back to 400, redone
    _assert_identical_runs(clean_run, tmp_path / "bad", summary)
    assert checkpoint.complete_steps(ckpt_dir) == [800, 1200]
    checkpoint.verify_step(ckpt_dir / "800")  # the damaged step was saved again
    # ... and the damaged copy kept aside, out of the steps a resume or a message would name
    aside = tmp_path / "bad" / "teacher" / "damaged_checkpoints"
    assert ([p.name for p in aside.iterdir()] == ["800"]
            and any(str(aside) in line for line in warnings))
    for step in (800, 1200):
        _flip_a_byte(ckpt_dir / str(step))
    with pytest.raises(ArtifactError, match="every checkpoint in .* is damaged"):
        train.teach(cfg, tmp_path / "bad", progress=False, log=lambda s: None)


def _flip_a_byte(step_dir: Path) -> None:
    """Corrupt a checkpoint step as tests/test_checkpoint.py does, its largest array data file
    (or a history directory's largest chunk)."""
    data = max((p for p in step_dir.rglob("*")
                if p.is_file() and ("/d/" in str(p) or p.suffix == ".npz")),
               key=lambda p: p.stat().st_size)
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0x10
    data.write_bytes(bytes(raw))


def test_a_finished_teacher_is_not_trained_again(tmp_path, clean_run, monkeypatch):
    # `climit teach` again on a finished run: its summary, no restore, no training, no greedy
    # evaluation (each of which would have cost a compile and more).
    run = tmp_path / "again"
    shutil.copytree(clean_run, run)
    before = (run / "teacher" / "summary.json").read_text()
    monkeypatch.setattr(train, "evaluate_greedy", lambda *a, **k: pytest.fail("evaluated again"))
    lines = []
    summary = train.teach(tiny(tmp_path, "again"), run, progress=False, log=lines.append)
    assert (summary == json.loads(before)
            and (run / "teacher" / "summary.json").read_text() == before)
    assert lines == [f"teacher: already finished at {run / 'teacher'} (same config, complete "
                     f"histories); nothing to do"]
    # Its checkpoints deleted to free space (whole states with replay buffers): still finished,
    # not trained again over its complete history.
    shutil.rmtree(run / "teacher" / "checkpoints")
    assert train.teach(tiny(tmp_path, "again"), run, progress=False, log=lines.append) == summary
    assert lines[1:] == lines[:1]
    # Another config in the same directory is still refused, not returned as finished.
    with pytest.raises(ClimitError, match="teacher.lr"):
        train.teach(tiny(tmp_path, "again", "teacher.lr=0.002"), run, progress=False,
                    log=lambda s: None)


def test_a_finished_run_whose_latest_checkpoint_or_history_is_damaged_is_not_finished(tmp_path,
                                                                                     clean_run):
    # Then the run resumes, which reports (or repairs) the damage, rather than returning the
    # summary of a run `climit imitate` cannot read.
    cfg, out = tiny(tmp_path, "f"), tmp_path / "f" / "teacher"
    shutil.copytree(clean_run / "teacher", out)
    assert train.finished_summary(cfg, out) is not None
    assert checkpoint.complete_steps(out / "checkpoints") == [800, 1200]
    for damaged in (out / "checkpoints" / "1200", out / "histories"):
        _flip_a_byte(damaged)
        assert train.finished_summary(cfg, out) is None, damaged
        _flip_a_byte(damaged)  # the same bit back
        assert train.finished_summary(cfg, out) is not None


def test_a_snapshot_whose_metrics_do_not_parse_is_set_aside_with_a_warning(tmp_path):
    # Killed after the snapshot at 600 (checkpoint at 400); snapshot 400's metrics file is then
    # damaged. The resume moves it to damaged_snapshots/ (not damaged_checkpoints/, where a
    # checkpoint 400 would replace it) and says so; it did so silently before.
    cfg = tiny(tmp_path, "snap")
    with pytest.raises(Kill):
        train.teach(cfg, tmp_path / "snap", progress=False, log=lambda s: None,
                    stop_hook=kill_after(3))
    out = tmp_path / "snap" / "teacher"
    assert checkpoint.complete_steps(out / "snapshots") == [400, 600]
    (out / "snapshots" / "400" / "metrics" / "metrics").write_text("{oops")
    logs: list[str] = []
    train.teach(cfg, tmp_path / "snap", progress=False, log=logs.append)
    assert any("snapshots at steps [400] are damaged" in line
               and str(out / "damaged_snapshots") in line
               for line in logs), logs
    assert ((out / "damaged_snapshots" / "400").is_dir()
            and not (out / "damaged_checkpoints").exists())
    assert checkpoint.complete_steps(out / "snapshots") == [600, 1200]


def test_resume_without_its_history_says_what_to_do(tmp_path):
    cfg = tiny(tmp_path, "lost")
    with pytest.raises(Kill):
        train.teach(cfg, tmp_path / "lost", progress=False, log=lambda s: None,
                    stop_hook=kill_after(2))
    shutil.rmtree(tmp_path / "lost" / "teacher" / "histories")
    with pytest.raises(ArtifactError, match="cannot resume the learning history") as e:
        train.teach(cfg, tmp_path / "lost", progress=False, log=lambda s: None)
    assert "remove the run directory" in str(e.value) and "run.name" in str(e.value)
    assert "first" not in str(e.value)  # not "run `climit teach` first": this is climit teach


def test_a_damaged_history_never_survives_a_resume(tmp_path, capsys):
    # Killed after the checkpoint at 800; then the history is damaged before the same command
    # runs again. Each damage stops the resume with one message naming what to remove, never
    # a run that finishes "done" with a history `climit imitate` cannot read.
    cfg = tiny(tmp_path, "dmg")
    with pytest.raises(Kill):
        train.teach(cfg, tmp_path / "dmg", progress=False, log=lambda s: None,
                    stop_hook=kill_after(5))
    out = tmp_path / "dmg" / "teacher"
    args = ["teach", "--no-progress", *TINY, f"run.runs_dir={tmp_path}", "run.name=dmg"]
    chunk = out / "histories" / "chunks" / "b00000_t000000000200.npz"
    saved = chunk.read_bytes()
    chunk.write_bytes(saved[:100])  # truncate -s 100
    assert cli.main(args) == 1
    err = capsys.readouterr().err
    assert f"{chunk} is truncated" in err and f"remove {out} to start it over" in err, err
    assert not (out / "summary.json").exists() and chunk.exists()
    chunk.write_bytes(saved)
    # The manifest cut to 400 steps (consistently) under the checkpoint at 800.
    manifest = out / "histories" / "manifest.json"
    saved_manifest = manifest.read_text()
    m = json.loads(saved_manifest)
    m["chunks"] = m["chunks"][:2]
    m["num_steps"], m["num_q"] = 400, 8
    manifest.write_text(json.dumps(m))
    assert cli.main(args) == 1
    err = capsys.readouterr().err
    assert "holds 400 steps per stream, fewer than the 800" in err and "remove" in err, err
    assert "not a chunk boundary" not in err
    manifest.write_text(saved_manifest)
    shutil.rmtree(out / "histories" / "chunks")  # rm -r histories/chunks
    assert cli.main(args) == 1
    err = capsys.readouterr().err
    assert "b00000_t000000000000.npz is missing" in err and "Errno" not in err, err


def test_rerun_without_checkpoints_never_overwrites_another_configs_run(tmp_path):
    # A finished run whose checkpoints/ was deleted: another config must not wipe its history
    # (nor leave new snapshots beside its old ones); the same config starts over, and says so.
    cfg = tiny(tmp_path, "done")
    train.teach(cfg, tmp_path / "done", progress=False, log=lambda s: None)
    out = tmp_path / "done" / "teacher"
    before = _history_arrays(tmp_path / "done")
    summary_before = (out / "summary.json").read_text()
    shutil.rmtree(out / "checkpoints")
    other = tiny(tmp_path, "done", "teacher.lr=0.002")
    with pytest.raises(ClimitError, match="teacher.lr: 0.001 -> 0.002") as e:
        train.teach(other, tmp_path / "done", progress=False, log=lambda s: None)
    assert str(out / "histories") in str(e.value) and "run.name" in str(e.value)
    after = _history_arrays(tmp_path / "done")
    assert (before.keys() == after.keys()
            and all(np.array_equal(before[k], after[k]) for k in before))
    assert histories.open(out / "histories").complete
    assert checkpoint.complete_steps(out / "snapshots") == [400, 600, 1200]
    assert (out / "summary.json").read_text() == summary_before
    # Without the history, the snapshots' config is checked; without those, summary.json's.
    shutil.rmtree(out / "histories")
    with pytest.raises(ClimitError, match=f"{out / 'snapshots'}.*teacher.lr: 0.001 -> 0.002"):
        train.teach(other, tmp_path / "done", progress=False, log=lambda s: None)
    shutil.rmtree(out / "snapshots")
    with pytest.raises(ClimitError,
                       match="summary.json is the summary of a teacher run with another"):
        train.teach(other, tmp_path / "done", progress=False, log=lambda s: None)
    assert (out / "summary.json").read_text() == summary_before
    logs: list[str] = []
    train.teach(cfg, tmp_path / "done", progress=False, log=logs.append)
    assert any("no checkpoint" in line and "starting over" in line for line in logs), logs
    assert histories.open(out / "histories").complete


def test_a_run_that_failed_before_its_first_chunk_does_not_block_a_fixed_config(tmp_path,
                                                                                monkeypatch):
    """Its history is created but empty: it holds nothing another config could overwrite."""
    from climit.teacher import dqn

    def broken(*args, **kw):
        raise RuntimeError("out of memory while compiling")
    with monkeypatch.context() as m:
        m.setattr(dqn, "make_chunk", broken)
        with pytest.raises(RuntimeError, match="out of memory"):
            train.teach(tiny(tmp_path, "oom"), tmp_path / "oom", progress=False, log=lambda s: None)
    assert histories.open(tmp_path / "oom" / "teacher" / "histories").num_steps == 0
    fixed = tiny(tmp_path, "oom", "teacher.lr=0.002")
    summary = train.teach(fixed, tmp_path / "oom", progress=False, log=lambda s: None)
    assert summary["env_steps_per_learner"] == 1200


@pytest.mark.parametrize("updates_per_train,programs", [(2, [False, True]), (1, [False])])
def test_chunks_past_learning_starts_run_their_update_rounds_unconditionally(tmp_path, monkeypatch,
                                                                             updates_per_train,
                                                                             programs):
    """The first chunk straddles learning_starts (a lax.cond per step); the rest are scheduled:
    one compiled program each, however many chunks. With one step and one update per round
    (this config's defaults) every chunk keeps the cond (dqn.schedulable says why)."""
    made, real = [], dqn.make_chunk
    monkeypatch.setattr(dqn, "make_chunk", lambda *a, **kw: made.append(kw) or real(*a, **kw))
    train.teach(tiny(tmp_path, "sched", "teacher.checkpoint_every=10",
                     f"teacher.updates_per_train={updates_per_train}"), tmp_path / "sched",
                progress=False, log=lambda s: None)
    assert made == [{"scheduled": s} for s in programs]


def test_sweep_is_one_axis_with_common_random_numbers(tmp_path):
    cfg = tiny(tmp_path, "sweep", "teacher.sweep={lr: [0.001, 0.01], gamma: [0.9, 0.8]}",
               "teacher.total_env_steps=400", "teacher.snapshot_steps=[5000]")
    p = train.plan(cfg)
    assert p.num_learners == 8
    np.testing.assert_allclose(np.asarray(p.hparams.lr), [1e-3] * 4 + [1e-2] * 4)
    np.testing.assert_allclose(np.asarray(p.hparams.gamma), [0.9] * 4 + [0.8] * 4)
    summary = train.teach(cfg, tmp_path / "sweep", progress=False, log=lambda s: None)
    # learner g = (point*2 + task)*2 + seed, as the summary lists them
    assert train.num_learners(cfg) == summary["num_learners"] == 8
    assert [(x["learner"], x["sweep_point"], x["seed"], x["task"]) for x in summary["learners"]] \
        == [(g, g // 4, g % 2, p.tasks_GxK[g].tolist()) for g in range(8)]
    h = histories.open(tmp_path / "sweep" / "teacher" / "histories")
    assert h.stream_info(5).hparams["lr"] == pytest.approx(0.01)
    # learner 1 and learner 5: same task and seed, other point -> same random actions until
    # learning starts (200 steps), different afterwards
    a1, a5 = h.read("action", 1), h.read("action", 5)
    np.testing.assert_array_equal(a1[:200], a5[:200])
    assert (a1[200:] != a5[200:]).any()
    assert not np.array_equal(h.read("action", 0)[:200], a1[:200])


def test_train_learners_fresh_curves():
    tcfg = config.TeacherConfig(hidden=(16,), total_env_steps=600, chunk_steps=200,
                                learning_starts=100,
                                buffer_size=300, batch_size=16, eps_decay_steps=300, q_log_period=0)
    env = envs.make("darkroom")
    tasks = envs.all_tasks("darkroom", "heldout")[:3]
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.PRNGKey(7), i))(np.arange(3))
    res = train.train_learners(tcfg, env, tasks, keys)
    ep = res.episodes
    assert ep.returns.shape == (3, 30)  # 600 steps / 20-step episodes
    np.testing.assert_array_equal(ep.end_step, np.tile(np.arange(20, 601, 20), (3, 1)))
    assert ep.valid.all() and (ep.lengths == 20).all()
    np.testing.assert_array_equal(res.learner_env_steps(1), ep.end_step)
    # Learners trained in memory (evaluation's fresh DQNs, benchmarks) have nowhere to save:
    # a pending stop request must not cut them short.
    with stopping.watch(time_limit_s=0.0):
        again = train.train_learners(tcfg, env, tasks, keys)
    np.testing.assert_array_equal(again.episodes.returns, ep.returns)
    assert res.timing.env_steps == again.timing.env_steps == 3 * 600


def test_bench_measure_closes_its_history_writer(monkeypatch):
    from climit.teacher import bench

    closed = []
    close = histories.HistoryWriter.close
    monkeypatch.setattr(histories.HistoryWriter, "close",
                        lambda self: (closed.append(self), close(self)))
    monkeypatch.setattr(train, "evaluate_greedy", lambda *a, **k: np.zeros(1))  # not under test
    cfg = bench.bench_config(200, ["teacher.learning_starts=100", "teacher.buffer_size=200",
                                   "teacher.chunk_steps=10", "teacher.q_log_period=10"])
    rec = bench.measure(cfg, learners=1, write_histories=True)
    assert rec["histories_bytes_on_disk"] > 0 and len(closed) == 1


def test_no_chunk_runs_while_a_later_program_compiles(monkeypatch):
    # A run compiles a second program mid-loop (here the scheduled chunk, once past
    # learning_starts); compile time is subtracted from the run's clock, so a chunk still
    # running then would vanish from run_s (CPU: up to 1.6x too fast at one learner).
    from climit.teacher import bench

    ready_at_compile = []
    make = dqn.make_chunk

    class Spy:
        def __init__(self, fn):
            self.fn = fn

        def lower(self, state, *args):
            ready_at_compile.append(all(x.is_ready() for x in jax.tree.leaves(state)))
            return self.fn.lower(state, *args)

    monkeypatch.setattr(dqn, "make_chunk", lambda *a, **k: Spy(make(*a, **k)))
    monkeypatch.setattr(train, "evaluate_greedy", lambda *a, **k: np.zeros(1))  # not under test
    cfg = bench.bench_config(6000, ["teacher.learning_starts=1000", "teacher.chunk_steps=200"])
    rec = bench.measure(cfg, learners=1, write_histories=False)
    assert len(ready_at_compile) == 2 and all(ready_at_compile), ready_at_compile
    assert rec["td_updates_per_learner"] > 0


def test_bench_ratio_only_for_the_same_steps_and_says_the_devices():
    from climit.teacher import bench

    mine = {"env_steps_per_learner": 6000, "env_steps_per_s": 200.0, "td_updates_per_s": 50.0,
            "n_devices": 1}
    peer = {"num_seeds": 2, "env_steps_total": 12000, "env_steps_per_s": 100.0,
            "grad_updates_per_s": 100.0}
    (line,) = bench._ratio(mine, peer, "uniform")
    assert ((line["env_steps_per_s"], line["td_updates_per_s"], line["climit_devices"])
            == (2.0, 0.5, 1))
    (line,) = bench._ratio(mine, {**peer, "env_steps_total": 15000}, "uniform")  # rejax's 7500
    assert ("env_steps_per_s" not in line
            and "the peer ran 7500 env steps per learner" in line["error"])
    assert list(bench._ratio(None, peer, "uniform")) == []


def test_bench_counts_every_learners_steps_and_updates_and_times_compiles_apart(monkeypatch):
    # 2 learners x 200 env steps (10 envs: 20 vector steps); from env step 100 (vector step 10)
    # on, 5 updates a vector step: 55 per learner. The rates divide the totals of both learners
    # by the loop's time, which leaves out every compile (each made 1000 s longer on the
    # loop's clock here: two programs, before and past learning_starts).
    from climit.teacher import bench

    offset, runs = [0.0], []
    monkeypatch.setattr(train, "time",
                        types.SimpleNamespace(perf_counter=lambda: time.perf_counter() + offset[0]))

    class Lowered:
        def __init__(self, lowered):
            self.lowered = lowered

        def compile(self):
            offset[0] += 1000.0
            return self.lowered.compile()

    make, run_chunks = dqn.make_chunk, train._run_chunks
    monkeypatch.setattr(dqn, "make_chunk", lambda *a, **k: types.SimpleNamespace(
        lower=lambda *args: Lowered(make(*a, **k).lower(*args))))
    monkeypatch.setattr(train, "_run_chunks", lambda *a, **k: runs.append(run_chunks(*a, **k))
                        or runs[-1])
    monkeypatch.setattr(train, "evaluate_greedy", lambda *a, **k: np.zeros(1))  # not under test
    cfg = bench.bench_config(200, ["teacher.learning_starts=100", "teacher.chunk_steps=10",
                                   "teacher.q_log_period=10"])
    rec = bench.measure(cfg, learners=2, write_histories=False)
    ((_, timing),) = runs
    assert rec["td_updates_per_learner"] == 5 * len(range(10, 21)) == 55
    assert (timing.env_steps, timing.td_updates) == (2 * 200, 2 * 55)
    assert timing.compile_s >= 2000.0 and timing.run_s < 1000.0
    assert (rec["env_steps_per_s"], rec["td_updates_per_s"]) == (round(400 / timing.run_s, 1),
                                                                 round(110 / timing.run_s, 1))
    assert (rec["compile_s"], rec["train_s"]) == (round(timing.compile_s, 3),
                                                  round(timing.run_s, 3))


def test_bench_ratio_compares_the_peer_with_the_run_without_histories(monkeypatch):
    # The peer writes no histories: its ratio line divides by climit's run that writes none,
    # not by the (slower) one that does, which runs after it.
    from climit.teacher import bench

    def measure(cfg, learners, write):
        speed = 30.0 if write else 60.0
        return {"bench": "climit_teacher", "histories": write, "n_devices": 1,
                "env_steps_per_learner": 6000, "env_steps_per_s": speed,
                "td_updates_per_s": speed / 10}

    peer = {"bench": "rejax_dqn", "num_seeds": 2, "env_steps_total": 12000, "env_steps_per_s": 20.0,
            "grad_updates_per_s": 2.0}
    monkeypatch.setattr(bench, "measure", measure)
    monkeypatch.setattr(bench, "run_peer", lambda script, learners, steps, sampler: [peer])
    recs = list(bench.run([2], 6000, histories="both", peer="uniform"))
    assert [(r["bench"], r.get("histories")) for r in recs] == [
        ("climit_teacher", False), ("climit_teacher", True), ("rejax_dqn", None),
        ("ratio_climit_over_peer", None)]
    assert (recs[-1]["env_steps_per_s"], recs[-1]["td_updates_per_s"]) == (3.0, 3.0)


def test_bench_steps_below_the_peer_learning_starts_say_what_to_pass(monkeypatch, capsys):
    # The user passed only --steps; the config key it broke (learning_starts) is the peer's.
    from climit.teacher import bench

    monkeypatch.setattr(bench, "measure", lambda *a, **k: pytest.fail("measured before the check"))
    assert cli.main(["bench", "teacher", "--steps", "2000", "--peer", "none"]) == 2
    err = capsys.readouterr().err
    assert err == ("climit: config error: --steps 2000 must exceed the peer config's "
                   "teacher.learning_starts 5000 (no TD update happens before it): pass a larger "
                   "--steps, or teacher.learning_starts=N with N below 2000\n")
    # A learning_starts the user set themselves keeps the config's own message.
    with pytest.raises(config.ConfigError,
                       match="^teacher.learning_starts: 3000 leaves no updates"):
        bench.bench_config(2000, ["teacher.learning_starts=3000"])
    assert (bench.bench_config(2000, ["teacher.learning_starts=1000"]).teacher.learning_starts
            == 1000)


def test_bench_measure_rates_from_the_loops_counts_and_time_plus_the_last_write(monkeypatch):
    # The loop faked: it reports 2 learners x 200 env steps (400) and 110 TD updates in 2 s of
    # run time after 3 s of compiling, and the histories' last write is waited for 1 s. The
    # record: per-learner counts as set, rates over the 3 s of run + wait (compile apart), and
    # the loop asked for full records with Q-values (histories on) or summaries only (off).
    from climit.teacher import bench

    calls = []

    def run_chunks(tcfg, env, state, hp, tasks, *, record, q_period, hooks):
        calls.append((record, q_period))
        timing = train.Timing(compile_s=3.0, run_s=2.0, env_steps=400, td_updates=110)
        return state.replace(updates=jnp.int32(55)), timing

    monkeypatch.setattr(train, "_run_chunks", run_chunks)
    monkeypatch.setattr(bench, "_timed_wait", lambda appender: 0.0 if appender is None else 1.0)
    monkeypatch.setattr(train, "evaluate_greedy", lambda *a, **k: np.zeros(1))  # not under test
    cfg = bench.bench_config(200, ["teacher.learning_starts=100", "teacher.buffer_size=200",
                                   "teacher.chunk_steps=10", "teacher.q_log_period=10"])
    on = bench.measure(cfg, learners=2, write_histories=True)
    off = bench.measure(cfg, learners=2, write_histories=False)
    assert calls == [("full", 10), ("stats", 0)]
    assert (on["histories"], off["histories"]) == (True, False)
    for rec in (on, off):
        assert (rec["num_learners"], rec["env_steps_per_learner"]) == (2, 200)
        assert (rec["td_updates_per_learner"], rec["compile_s"]) == (55, 3.0)
    assert (on["train_s"], on["env_steps_per_s"], on["td_updates_per_s"]) == (3.0, 133.3, 36.7)
    assert (off["train_s"], off["env_steps_per_s"], off["td_updates_per_s"]) == (2.0, 200.0, 55.0)


def test_bench_run_matches_each_peer_record_to_climit_by_learner_count(monkeypatch):
    # Two learner counts, climit at 60 env steps/s per learner (x S), the peer at 20 (x S): each
    # ratio line divides climit's run of the peer record's own count (3.0 for both), never
    # another count's. histories="on" measures only the run that writes them.
    from climit.teacher import bench

    measured = []

    def measure(cfg, learners, write):
        measured.append((learners, write))
        return {"bench": "climit_teacher", "histories": write, "n_devices": 1,
                "env_steps_per_learner": 6000, "env_steps_per_s": 60.0 * learners,
                "td_updates_per_s": 6.0 * learners}

    def run_peer(script, learners, steps, sampler):
        return [{"bench": "rejax_dqn", "num_seeds": s, "env_steps_total": 6000 * s,
                 "env_steps_per_s": 20.0 * s, "grad_updates_per_s": 2.0 * s} for s in learners]

    monkeypatch.setattr(bench, "measure", measure)
    monkeypatch.setattr(bench, "run_peer", run_peer)
    recs = list(bench.run([1, 4], 6000, histories="off", peer="uniform"))
    ratios = [r for r in recs if r["bench"] == "ratio_climit_over_peer"]
    assert [(r["num_learners"], r["env_steps_per_s"], r["td_updates_per_s"]) for r in ratios] == [
        (1, 3.0, 3.0), (4, 3.0, 3.0)]
    measured.clear()
    list(bench.run([1], 6000, histories="on", peer="none"))
    assert measured == [(1, True)]


def test_bench_config_is_the_rejax_peers_cartpole_dqn():
    # rejax configs/gymnax/cartpole.yaml, dqn (CARTPOLE_CONFIGS in ../shared/anchors/
    # rejax_dqn_bench.py): num_envs 10, num_epochs 5 (TD updates per vector step), batch 100,
    # DuelingQNetwork 64-64 swish, ddqn, buffer 50k, fill_buffer 5k, polyak 0.98 (tau 0.02),
    # lr 1e-3, gamma 0.99, eps_end 0.05 over exploration_fraction 0.5 of 100k steps, clip 10.
    from climit.teacher import bench

    t = bench.bench_config(100_000).teacher
    assert (t.num_envs, t.updates_per_train, t.train_every, t.batch_size) == (10, 5, 1, 100)
    assert (tuple(t.hidden), t.dueling, t.double, t.activation) == ((64, 64), True, True, "swish")
    assert (t.buffer_size, t.learning_starts, t.target, t.tau) == (50_000, 5_000, "polyak", 0.02)
    assert (t.lr, t.gamma, t.eps_end, t.eps_decay_steps) == (1e-3, 0.99, 0.05, 50_000)
    assert (t.max_grad_norm, t.loss, t.total_env_steps) == (10, "mse", 100_000)
    # The overrides come last: one the user gives wins over the peer's value and over --steps.
    t = bench.bench_config(6000, ["teacher.tau=0.05", "teacher.total_env_steps=7000"]).teacher
    assert (t.tau, t.total_env_steps) == (0.05, 7000)


def test_bench_run_peer_runs_as_many_steps_as_climit_and_keeps_its_rates(tmp_path):
    # A stand-in peer script echoes its argv: one eval block of --steps env steps (rejax runs
    # whole eval_freq blocks), no evaluation inside the timed run, the sampler asked for, and
    # every learner count; its gradient-update rate is kept for the ratio.
    from climit.teacher import bench

    script = tmp_path / "rejax_dqn_bench.py"
    script.write_text("import json, pathlib, sys\n"
                      "pathlib.Path('argv.json').write_text(json.dumps(sys.argv[1:]))\n"
                      "print('not json')\n"
                      "print(json.dumps({'num_seeds': 8, 'grad_updates_per_s': 5.0, "
                      "'env_steps_per_s': 9.0, 'extra': 1}))\n")
    (rec,) = bench.run_peer(script, [1, 8], 6000, "rejax")
    assert rec == {"bench": "rejax_dqn", "num_seeds": 8, "sampler": None, "compile_s": None,
                   "train_s": None, "env_steps_total": None, "grad_updates_total": None,
                   "env_steps_per_s": 9.0, "grad_updates_per_s": 5.0, "final_return_mean": None}
    argv = json.loads((tmp_path / "argv.json").read_text())  # the peer runs in its own folder
    assert argv == ["--eval-mode", "none", "--sampler", "rejax", "--total-timesteps", "6000",
                    "--eval-freq", "6000", "--final-eval-episodes", "10", "--force-vmap",
                    "--num-seeds", "1", "8"]


SHARDED = ["teach", "--no-progress", *TINY, "env.train_tasks=4", "teacher.snapshot_steps=[5000]",
           "teacher.total_env_steps=400"]  # G = 8 learners
RUN_CLI = "import sys; from climit import cli; sys.exit(cli.main(sys.argv[1:]))"


@pytest.fixture(scope="module")
def one_device_run(tmp_path_factory) -> Path:
    """The G = 8 run on this process's one device: what every sharded layout must reproduce."""
    root = tmp_path_factory.mktemp("sharded")
    assert cli.main(SHARDED + [f"run.runs_dir={root}", "run.name=one"]) == 0
    return root / "one"


def _assert_same_run(a: Path, b: Path) -> None:
    ha, hb = _history_arrays(a), _history_arrays(b)
    assert ha.keys() == hb.keys()
    for k in ha:  # same transitions, same actions
        np.testing.assert_array_equal(ha[k], hb[k], err_msg=k)
    # Parameters agree to float rounding: per-device batched matmuls over fewer learners may
    # pick other CPU kernels (seen: 2e-8 absolute).
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6),
                 _final_params(a), _final_params(b))
    sa, sb = (json.loads((r / "teacher" / "summary.json").read_text()) for r in (a, b))
    assert sa["final_return_per_learner"] == sb["final_return_per_learner"]


def test_learners_sharded_over_8_devices_match_one_device(tmp_path, one_device_run):
    import subprocess
    import sys

    env = procs.cpu_env(8)
    code = "import jax; assert jax.device_count() == 8; " + RUN_CLI
    proc = subprocess.run([sys.executable, "-c", code, *SHARDED, f"run.runs_dir={tmp_path}",
                           "run.name=eight"], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    _assert_same_run(one_device_run, tmp_path / "eight")


def test_run_seed_reaches_every_learner(tmp_path, one_device_run):
    # The other tests all run with run.seed 0: a key derived without it would go unnoticed.
    assert cli.main(SHARDED + [f"run.runs_dir={tmp_path}", "run.name=seed1", "run.seed=1"]) == 0
    other, base = _history_arrays(tmp_path / "seed1"), _history_arrays(one_device_run)
    streams = [k for k in base if k.startswith("action/")]
    assert len(streams) == 8 and other.keys() == base.keys()
    assert all(not np.array_equal(other[k], base[k]) for k in streams)  # every learner's stream


def _two_processes(args: list[str], timeout: float = 300) -> list[tuple[int, str]]:
    """Run the CLI as one job of two processes with 2 CPU devices each: [(exit code, output)]."""
    import sys

    code = ("import jax; from climit import parallel; assert parallel.initialize(); "
            "assert (jax.process_count(), jax.device_count()) == (2, 4); " + RUN_CLI)
    return procs.run_job([sys.executable, "-c", code, *args], timeout)


def test_two_processes_match_one_device(tmp_path, one_device_run):
    # Two processes with 2 CPU devices each: one 4-device job; process 0 alone writes files.
    (rc0, out0), (rc1, out1) = _two_processes([*SHARDED, f"run.runs_dir={tmp_path}",
                                               "run.name=hosts"])
    assert rc0 == 0, out0[-3000:]
    assert rc1 == 0, out1[-3000:]
    assert "teacher:" in out0 and "teacher:" not in out1  # one process logs
    _assert_same_run(one_device_run, tmp_path / "hosts")


def test_too_little_disk_stops_every_process_of_a_job(tmp_path):
    """The disk check fails on every process with its message, not on process 0 alone (the
    other process then died in its next collective with a traceback from the distributed
    runtime instead)."""
    args = [*SHARDED[:-1], "env.train_tasks=64", "teacher.seeds=4",  # ~4.7 TB of histories
            "teacher.total_env_steps=2000000000", f"run.runs_dir={tmp_path}"]
    for rc, out in _two_processes(args, timeout=120):
        assert rc == 1, out[-3000:]
        assert "not enough disk space for the teacher run" in out


def test_a_damaged_history_stops_every_process_of_a_resumed_job(tmp_path, one_device_run):
    """Process 0 alone opens the histories; a damaged chunk found on resume stops every process
    with a message (the other process used to run on into its next collective and die there
    with the distributed runtime's traceback)."""
    import shutil

    shutil.copytree(one_device_run, tmp_path / "one")
    chunk = sorted((tmp_path / "one" / "teacher" / "histories" / "chunks").glob("*.npz"))[0]
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))
    (rc0, out0), (rc1, out1) = _two_processes([*SHARDED, f"run.runs_dir={tmp_path}",
                                               "run.name=one"],
                                              timeout=120)
    assert (rc0, rc1) == (1, 1), (out0[-3000:], out1[-3000:])
    assert chunk.name in out0, out0[-3000:]
    assert "failed on process 0" in out1 and "Traceback" not in out1, out1[-3000:]


def test_neutral_teacher_fields_change_no_fingerprint_and_old_runs_still_match():
    """teacher.scan_unroll changes how the learning is computed, not what is learned: no
    fingerprint (teacher, imitator, evaluation) moves with it, and a run recorded before the
    field existed (its saved config lacks the key) still matches and resumes."""
    from climit import evaluate
    from climit.imitator import train as imitator_train

    base = config.load(None, ["teacher.total_env_steps=2000", "teacher.learning_starts=100"])
    unrolled = config.load(None, ["teacher.total_env_steps=2000", "teacher.learning_starts=100",
                                  "teacher.scan_unroll=4"])
    assert train.fingerprint(base) == train.fingerprint(unrolled)
    assert imitator_train.fingerprint(base) == imitator_train.fingerprint(unrolled)
    assert evaluate.fingerprint(base) == evaluate.fingerprint(unrolled)
    old = config.to_dict(base)
    del old["teacher"]["scan_unroll"]
    assert train._config_diff(old, config.to_dict(unrolled)) == []
    assert train.fingerprint(base) == config.fingerprint(train._teacher_sections(old))
    # a field that does change the learning still counts
    other = config.load(None, ["teacher.total_env_steps=2000", "teacher.learning_starts=100",
                               "teacher.lr=0.01"])
    assert train._config_diff(old, config.to_dict(other)) == ["teacher.lr: 0.001 -> 0.01"]


def test_load_gives_each_learner_its_q_network_at_a_step(tmp_path):
    """teacher.train.load: the snapshot's parameters of every learner, its task, and Q-values
    equal to the network applied by hand; 'latest' is the newest of snapshots and
    checkpoints; a missing step names the saved ones."""
    from climit.teacher import networks

    assert cli.main(["teach", "--no-progress", *TINY, "env.train_tasks=2",
                     "teacher.snapshot_steps=[200]",
                     "teacher.total_env_steps=400", f"run.runs_dir={tmp_path}", "run.name=t"]) == 0
    run = tmp_path / "t"
    early = train.load(run, 200)
    assert early.directory == run / "teacher" / "snapshots" and early.step == 200
    summary = json.loads((run / "teacher" / "summary.json").read_text())
    assert early.tasks_GxK.tolist() == [x["task"] for x in summary["learners"]]
    latest = train.load(run)
    assert latest.step == 400
    assert latest.directory == run / "teacher" / "snapshots"  # 400 is in both: snapshots first
    obs_GxBxO = (np.random.default_rng(0).integers(0, 2, (len(early.tasks_GxK), 3, 2))
                 .astype(np.uint8))
    net = dqn.network(latest.config.teacher, envs.make(latest.config.env.name).spec)
    for g in range(len(latest.tasks_GxK)):
        by_hand = networks.apply(net, jax.tree.map(lambda x: x[g], latest.params), obs_GxBxO[g])
        np.testing.assert_allclose(latest.q_values(obs_GxBxO)[g], by_hand, rtol=1e-6)
    assert not np.allclose(early.q_values(obs_GxBxO), latest.q_values(obs_GxBxO))  # it learned
    from_ckpt = train.load(run / "teacher" / "checkpoints", 400)
    jax.tree.map(np.testing.assert_array_equal, from_ckpt.params, latest.params)
    with pytest.raises(ArtifactError, match="saved steps"):
        train.load(run, 300)


def _sigterm_after(k: int):
    """A stop_hook that sends this process SIGTERM after chunk k (as a scheduler would)."""
    def hook(chunk: int) -> None:
        if chunk == k:
            os.kill(os.getpid(), signal.SIGTERM)
    return hook


def test_sigterm_checkpoints_where_it_stops_and_the_rerun_is_identical(tmp_path, clean_run):
    # SIGTERM after chunk 2 is seen at the end of chunk 3 (env step 600), off the checkpoint
    # schedule (every 2 chunks): the stop saves a checkpoint there and the rerun starts from it.
    cfg = tiny(tmp_path, "term")
    before = signal.getsignal(signal.SIGTERM)
    with stopping.watch(), pytest.raises(stopping.Stopped) as stop:
        train.teach(cfg, tmp_path / "term", progress=False, log=lambda s: None,
                    stop_hook=_sigterm_after(2))
    assert stop.value.why == "SIGTERM" and "env step 600 of 1200" in str(stop.value)
    assert signal.getsignal(signal.SIGTERM) == before  # the earlier handler is back after it
    assert checkpoint.complete_steps(tmp_path / "term" / "teacher" / "checkpoints") == [400, 600]
    assert histories.open(tmp_path / "term" / "teacher" / "histories").num_steps == 600
    summary = train.teach(cfg, tmp_path / "term", progress=False, log=lambda s: None)
    assert summary["resumed_from_env_step"] == 600
    _assert_identical_runs(clean_run, tmp_path / "term", summary)


def test_a_stop_seen_after_the_last_chunk_lets_the_run_finish(tmp_path):
    # SIGTERM after chunk 5 is seen at the end of chunk 6, the last: nothing is left to stop,
    # so the run finishes (evaluation and summary) rather than stopping to be run again.
    with stopping.watch():
        summary = train.teach(tiny(tmp_path, "late"), tmp_path / "late", progress=False,
                              log=lambda s: None, stop_hook=_sigterm_after(5))
        assert stopping.requested() == "SIGTERM"
    assert summary["resumed_from_env_step"] is None
    assert (tmp_path / "late" / "teacher" / "summary.json").is_file()


def test_time_limit_stops_the_cli_with_exit_75_and_the_same_command_finishes(tmp_path, clean_run,
                                                                               capsys):
    argv = ["teach", "--no-progress", *TINY, f"run.runs_dir={tmp_path}", "run.name=limited"]
    assert cli.main([argv[0], "--time-limit", "0.001s", *argv[1:]]) == stopping.EXIT_CODE
    err = capsys.readouterr().err
    assert "stopped (time limit): the teacher at env step 200 of 1200" in err
    assert "run the same command again to resume" in err
    assert cli.main(argv) == 0
    summary = json.loads((tmp_path / "limited" / "teacher" / "summary.json").read_text())
    assert summary["resumed_from_env_step"] == 200
    _assert_identical_runs(clean_run, tmp_path / "limited", summary)
    with pytest.raises(SystemExit):  # argparse: a clear usage error, exit 2
        cli.main([argv[0], "--time-limit", "soon", *argv[1:]])
    assert "not a positive duration: 'soon'" in capsys.readouterr().err



def test_a_teach_process_sent_sigterm_exits_75_with_its_checkpoint(tmp_path):
    """The real thing: `climit teach` in its own process, SIGTERM from outside (a scheduler, or
    `timeout`) once training is under way."""
    import subprocess
    import sys
    import time

    argv = [sys.executable, "-m", "climit", "teach", "--no-progress", *TINY,
            "teacher.total_env_steps=200000", f"run.runs_dir={tmp_path}", "run.name=proc"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "proc" / "teacher" / "metrics.jsonl"
    deadline = time.monotonic() + 300
    while not (metrics.is_file() and metrics.read_text().strip()) and proc.poll() is None:
        assert time.monotonic() < deadline, "no chunk finished in 300 s"
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == stopping.EXIT_CODE, err
    assert "climit: stopped (SIGTERM): the teacher at env step" in err and "Traceback" not in err
    steps = checkpoint.complete_steps(tmp_path / "proc" / "teacher" / "checkpoints")
    assert steps and steps[-1] == read_jsonl(metrics)[-1]["step"] < 200000
    assert histories.open(tmp_path / "proc" / "teacher" / "histories").num_steps == steps[-1]


@pytest.fixture(scope="module")
def two_env_run(tmp_path_factory):
    """The TINY run with 2 envs per learner and no Q-values recorded: (teacher dir, summary)."""
    root = tmp_path_factory.mktemp("two_envs")
    cfg = config.load(None, TINY + [f"run.runs_dir={root}", "run.name=two", "teacher.num_envs=2",
                                    "histories.record_q=false"])
    summary = train.teach(cfg, root / "two", progress=False, log=lambda s: None)
    return root / "two" / "teacher", summary


def test_two_env_summary_counts_env_steps_per_learner(two_env_run):
    _, summary = two_env_run
    assert summary["num_envs"] == 2 and summary["env_steps_per_learner"] == 1200


def test_two_env_snapshots_land_at_the_env_steps_asked_for(two_env_run):
    # chunks of 200 vector steps end at env steps 400, 800, 1200: 300 -> 400, 600 -> 800, end.
    out, _ = two_env_run
    assert checkpoint.complete_steps(out / "snapshots") == [400, 800, 1200]
    assert checkpoint.complete_steps(out / "checkpoints") == [800, 1200]


def test_two_env_metrics_count_env_steps_episodes_and_mean_returns(two_env_run):
    # One record per chunk of 200 vector steps (400 env steps): 8 streams of 20-step episodes
    # finish 80 episodes, whose mean return is the history's over the same steps.
    out, _ = two_env_run
    records = read_jsonl(out / "metrics.jsonl")
    assert [(r["step"], r["vector_steps"], r["episodes"]) for r in records] == \
        [(400, 200, 80), (800, 400, 80), (1200, 600, 80)]
    h = histories.open(out / "histories")
    returns = np.stack([h.episodes(n).ret for n in range(h.num_streams)])  # [8, 30]
    for k, r in enumerate(records):
        assert r["return_mean"] == pytest.approx(returns[:, 10 * k:10 * (k + 1)].mean(), rel=1e-6)


def test_record_q_false_writes_no_q_values(two_env_run):
    out, _ = two_env_run
    h = histories.open(out / "histories")
    assert (h.num_streams, h.num_steps) == (8, 600)
    assert h.q_period == 0 and h.num_q == 0


def test_a_matching_summary_beside_an_incomplete_history_is_not_finished(tmp_path):
    """E.g. a resume that cut the history back to an older checkpoint and was killed: the old
    summary still carries the fingerprint, but the run is not done."""
    cfg = config.load(None, TINY + [f"run.runs_dir={tmp_path}", "run.name=r"])
    out = tmp_path / "r" / "teacher"
    out.mkdir(parents=True)
    summary = {"fingerprint": train.fingerprint(cfg), "final_return_mean": 1.0}
    (out / "summary.json").write_text(json.dumps(summary))
    spec = envs.spec("darkroom")
    w = histories.create(out / "histories", spec=spec, total_steps=10, check_space=False,
                         streams=[histories.StreamInfo(0, 0, (1, 2), 0, {})])

    def append(n):
        w.append(np.zeros((1, n, *spec.obs_shape), spec.obs_dtype), np.zeros((1, n)),
                 np.zeros((1, n)), np.zeros((1, n), bool), np.zeros((1, n), bool))

    append(5)
    assert train.finished_summary(cfg, out) is None
    append(5)  # complete: now it is the finished run's summary
    w.close()
    assert train.finished_summary(cfg, out) == summary


def test_fresh_learners_stop_at_total_env_steps_when_chunks_do_not_divide_it():
    tcfg = config.TeacherConfig(hidden=(16,), total_env_steps=300, chunk_steps=200,
                                learning_starts=100, buffer_size=300, batch_size=16,
                                eps_decay_steps=300, q_log_period=0)
    env = envs.make("darkroom")
    tasks = envs.all_tasks("darkroom", "heldout")[:2]
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.PRNGKey(7), i))(np.arange(2))
    res = train.train_learners(tcfg, env, tasks, keys)
    ep = res.episodes
    assert ep.valid.sum(1).tolist() == [15, 15]  # 300 steps / 20-step episodes
    assert int(ep.end_step[ep.valid].max()) == 300
    assert res.timing.env_steps == 2 * 300


def test_greedy_evaluation_runs_each_learner_greedily_on_its_own_task():
    """Dark Room, constant Q-networks: learner 0 always stays (goal at the centre: reward on all
    20 steps), learner 1 always moves +y (goal 4 cells away on the wall: 17 rewards)."""
    tcfg = config.TeacherConfig(hidden=(4,))
    env = envs.make("darkroom")
    net = dqn.network(tcfg, env.spec)
    zero = jax.tree.map(jnp.zeros_like, networks.init(net, jax.random.PRNGKey(0)))
    prefer = jnp.eye(env.spec.num_actions)[jnp.array([4, 0])]  # action 4 stays, action 0 is +y
    params_G = jax.tree.map(lambda x: jnp.stack([x, x]), zero)
    params_G["q"]["b"] = prefer
    tasks_GxK = np.array([[4, 4], [4, 8]], np.int32)
    want = [env.gym.optimal_return((4, 4)), env.gym.optimal_return((4, 8))]
    assert want == [20.0, 17.0]
    got = train.evaluate_greedy(tcfg, env, params_G, tasks_GxK, jax.random.PRNGKey(1), episodes=3)
    np.testing.assert_array_equal(got, want)


def test_greedy_evaluation_averages_every_asked_episode():
    """Random actions (eps=1) on Dark Room make episodes differ, so the mean of 16 episodes
    spreads over learners about 4x less than one episode's return (the same task and params for
    all): a mean of fewer episodes than asked would spread as much as one."""
    tcfg = config.TeacherConfig(hidden=(4,))
    env = envs.make("darkroom")
    params = networks.init(dqn.network(tcfg, env.spec), jax.random.PRNGKey(0))
    g = 256
    params_G = jax.tree.map(lambda x: jnp.stack([x] * g), params)
    tasks_GxK = np.tile(np.array([[4, 5]], np.int32), (g, 1))  # the goal next to the start

    def spread(episodes):
        got = train.evaluate_greedy(tcfg, env, params_G, tasks_GxK, jax.random.PRNGKey(1),
                                    episodes=episodes, eps=1.0)
        assert np.isfinite(got).all() and got.shape == (g,)
        return got.mean(), got.std()

    mean_1, std_1 = spread(1)
    mean_16, std_16 = spread(16)
    assert std_1 > 1.0
    assert std_16 < 0.4 * std_1
    assert abs(mean_16 - mean_1) < 4 * std_1 / np.sqrt(g)

def test_summary_holds_each_learners_greedy_return_on_its_own_task_in_learner_order(tmp_path,
                                                                                    monkeypatch):
    calls = []

    def fake_eval(tcfg, env, params_G, tasks_GxK, key, episodes, eps=0.0):
        calls.append((params_G, np.asarray(tasks_GxK), episodes, eps))
        return 10.0 * np.arange(len(tasks_GxK)) ** 2 + 1.0  # skewed: mean != median

    monkeypatch.setattr(train, "evaluate_greedy", fake_eval)
    cfg = tiny(tmp_path, "wired", "teacher.total_env_steps=400", "teacher.snapshot_steps=[]",
               "teacher.eval_episodes=3")
    summary = train.teach(cfg, tmp_path / "wired", progress=False, log=lambda s: None)
    [(params_G, tasks_GxK, episodes, eps)] = calls
    assert (episodes, eps) == (3, 0.0)
    np.testing.assert_array_equal(tasks_GxK, train.plan(cfg).tasks_GxK)
    jax.tree.map(np.testing.assert_array_equal, params_G, _final_params(tmp_path / "wired"))
    assert summary["final_return_per_learner"] == [1.0, 11.0, 41.0, 91.0]
    assert summary["final_return_mean"] == 36.0
    saved = json.loads((tmp_path / "wired" / "teacher" / "summary.json").read_text())
    assert saved["final_return_per_learner"] == summary["final_return_per_learner"]


class _Saves:
    """A stand-in Checkpointer (or metrics logger) that records what it is given."""

    def __init__(self):
        self.saved: list[tuple[int, dict]] = []

    def save(self, step, tree, *, config=None, metrics=None):
        self.saved.append((step, metrics))

    def log(self, record):
        self.saved.append((record["step"], record))


_STATE = types.SimpleNamespace(learners=types.SimpleNamespace(params={}))  # what sync saves


def _chunk_out(episodes, return_sum, loss_sum, loss_count) -> dqn.ChunkOut:
    stats = dqn.ChunkStats(episodes_G=np.array(episodes),
                           return_sum_G=np.array(return_sum, np.float32),
                           update_sum_G=dqn.UpdateStats(loss=np.array(loss_sum, np.float32)),
                           loss_count=np.int32(loss_count),
                           params_finite_G=np.ones(len(episodes), bool))
    return dqn.ChunkOut(stats=stats, episode_return_NxT=None, streams=dqn.Streams(*[None] * 5),
                        q_NxTqxA=None)


def test_each_metrics_record_means_over_episodes_and_over_learners_updates(tmp_path):
    # 3 learners, 2 envs each: return_mean is per finished episode (8 / 4), loss per learner
    # and TD update (6 / (3 * 2)); a chunk with neither has None for both. The record after
    # a save carries its time as save_s, and only that one.
    cfg = tiny(tmp_path, "io", "teacher.num_envs=2")
    writer, metrics = _Saves(), _Saves()
    writer.append = lambda *arrays: None
    io = train._RunIO(cfg, 0, writer, _Saves(), _Saves(), metrics)
    with io.appender:
        io.output(_chunk_out([2, 0, 2], [3.0, 0.0, 5.0], [1.0, 2.0, 3.0], 2), 0, 200)
        io.sync(_STATE, 200, train.Timing())  # a checkpoint (the chunk numbered 2 of 200 steps)
        io.output(_chunk_out([0, 0, 0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0], 0), 200, 400)
        io.output(_chunk_out([1, 1, 1], [1.0, 1.0, 1.0], [3.0, 3.0, 3.0], 1), 400, 600)
    first, second, third = (r for _, r in metrics.saved)
    assert (first["step"], first["vector_steps"], first["episodes"]) == (400, 200, 4)
    assert (first["return_mean"], first["loss"], first["td_updates"]) == (2.0, 1.0, 2)
    assert (second["step"], second["episodes"], second["return_mean"], second["loss"]) == \
        (800, 0, None, None)
    assert (third["return_mean"], third["loss"]) == (1.0, 3.0)
    assert "save_s" not in first and second["save_s"] >= 0 and "save_s" not in third


def test_every_update_stat_is_a_metrics_column_of_its_own_name(tmp_path):
    # A field added to dqn.UpdateStats reaches metrics.jsonl with nothing else to edit: each is
    # its chunk sum over the learners' updates (here 2 learners x 2 updates).
    two = collections.namedtuple("TwoStats", ["loss", "q_mean"])
    writer, metrics = _Saves(), _Saves()
    writer.append = lambda *arrays: None
    io = train._RunIO(tiny(tmp_path, "io"), 0, writer, _Saves(), _Saves(), metrics)
    stats = dqn.ChunkStats(episodes_G=np.zeros(2, np.int32), return_sum_G=np.zeros(2, np.float32),
                           update_sum_G=two(np.array([1.0, 3.0]), np.array([8.0, 12.0])),
                           loss_count=np.int32(2), params_finite_G=np.ones(2, bool))
    with io.appender:
        io.output(dqn.ChunkOut(stats=stats, episode_return_NxT=None,
                               streams=dqn.Streams(*[None] * 5), q_NxTqxA=None), 0, 100)
    (_, record), = metrics.saved
    assert (record["loss"], record["q_mean"]) == (1.0, 5.0)


def test_a_resumed_run_takes_only_the_snapshots_ahead_and_names_the_first_one_asked_for(tmp_path):
    # 2 envs, chunks of 200 vector steps (400 env steps), checkpoints every 2 chunks. Resumed
    # at env step 400: the snapshots at 300 and 400 were taken before; 500 and 700 fall in the
    # next chunk (one snapshot at 800, for 500), 1000 in the last (at the end, 1200).
    cfg = tiny(tmp_path, "io", "teacher.num_envs=2",
               "teacher.snapshot_steps=[300, 400, 500, 700, 1000]")
    ckpt, snaps = _Saves(), _Saves()
    io = train._RunIO(cfg, 200, None, ckpt, snaps, None)
    assert io.pending_snaps == [500, 700, 1000] and io.needs_sync(400) and io.needs_sync(600)
    timing = train.Timing(compile_s=1.5, run_s=2.5, env_steps=30, td_updates=4)
    for t1 in (400, 600):
        io.sync(_STATE, t1, timing)
    assert snaps.saved == [(800, {"env_steps": 800, "requested": 500}),
                           (1200, {"env_steps": 1200, "requested": 1000})]
    # Each checkpoint carries the loop's totals so far, which a resume continues from.
    totals = {"timing_compile_s": 1.5, "timing_run_s": 2.5, "timing_env_steps": 30,
              "timing_td_updates": 4}
    assert ckpt.saved == [(800, {"env_steps": 800, **totals}),
                          (1200, {"env_steps": 1200, **totals})]


def test_timing_rates_divide_each_total_by_the_loop_time():
    rates = train.Timing(compile_s=1.5, run_s=4.0, env_steps=100, td_updates=20).rates()
    assert rates == {"env_steps_per_s": 25.0, "td_updates_per_s": 5.0, "compile_s": 1.5,
                     "train_wall_s": 4.0}


def test_a_resume_counts_the_run_before_the_kill_in_its_disk_check_and_summary(tmp_path,
                                                                               monkeypatch):
    # The checkpoint at 800 holds the first run's totals (here made 1000 s of loop time and
    # 500 s of compiles longer): the summary's times add the resumed part to them, and its
    # rates count the env steps and TD updates of the whole run, all 4 learners.
    cfg = tiny(tmp_path, "t")
    with pytest.raises(Kill):
        train.teach(cfg, tmp_path / "t", progress=False, log=lambda s: None,
                    stop_hook=kill_after(5))
    restore = train._restore_step

    def longer(*args):
        state, timing = restore(*args)
        assert (timing.env_steps, timing.run_s > 0) == (4 * 800, True)
        return state, dataclasses.replace(timing, run_s=timing.run_s + 1000,
                                          compile_s=timing.compile_s + 500)
    monkeypatch.setattr(train, "_restore_step", longer)
    logs: list[str] = []
    summary = train.teach(cfg, tmp_path / "t", progress=False, log=logs.append)
    assert summary["resumed_from_env_step"] == 800
    # The disk check before it counts what is left: 400 steps of history, one checkpoint more
    # than the 2 on disk, the last snapshot.
    env = envs.make("darkroom")
    shape = train._abstract_state(cfg.teacher, env, 4)
    size = histories.human_bytes
    left = (f"histories {size(histories.estimate_bytes(env.spec, 4, 400, 50))}, checkpoints "
            f"{size(train._tree_bytes(shape) + checkpoint.STEP_OVERHEAD_BYTES)}, snapshots "
            f"{size(train._tree_bytes(shape.learners.params) + checkpoint.STEP_OVERHEAD_BYTES)}")
    assert any(left in line and "resuming from env step 800" in line for line in logs), logs
    assert not any("starting over" in line for line in logs), logs  # what it resumes is not redone
    assert summary["train_wall_s"] > 1000 and summary["compile_s"] >= 500
    updates = sum(r["td_updates"] for r in read_jsonl(tmp_path / "t" / "teacher" / "metrics.jsonl"))
    assert updates > 0
    wall = summary["train_wall_s"]
    assert summary["env_steps_per_s"] * wall == pytest.approx(4 * 1200, rel=1e-9)
    assert summary["td_updates_per_s"] * wall == pytest.approx(4 * updates, rel=1e-9)


def test_the_last_history_writes_error_is_raised_on_closing_unless_another_is(capsys):
    # A full disk on the last chunk's write must not end a run as if it were written; while
    # another error is already on its way out, it is only printed.
    def full(*arrays):
        raise OSError(errno.ENOSPC, "No space left on device")
    out = _chunk_out([0], [0.0], [0.0], 0)
    appender = train.BackgroundAppend(types.SimpleNamespace(append=full))
    appender.append(out)
    with pytest.raises(OSError, match="No space left"):
        appender.close()
    appender = train.BackgroundAppend(types.SimpleNamespace(append=full))
    with pytest.raises(KeyError, match="first"):
        with appender:
            appender.append(out)
            raise KeyError("first")
    assert "the history write in flight failed too" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# Known answers pinning mutants that the tests above let through
# ---------------------------------------------------------------------------------------------

def test_a_finished_two_env_run_has_a_complete_history_and_is_not_trained_again(two_env_run):
    # The history plans 600 vector steps per stream (1200 env steps over 2 envs), all written.
    out, summary = two_env_run
    h = histories.open(out / "histories")
    assert (h.num_steps, h.complete) == (600, True)
    cfg = config.load(None, TINY + [f"run.runs_dir={out.parent.parent}", "run.name=two",
                                    "teacher.num_envs=2", "histories.record_q=false"])
    assert train.finished_summary(cfg, out) == summary


def test_metrics_env_steps_per_s_counts_every_learner_and_env(tmp_path, monkeypatch):
    # 3 learners x 2 envs x 200 vector steps = 1200 env steps in a chunk of 2 s (a fake clock).
    clock = iter([10.0, 12.0])
    monkeypatch.setattr(train, "time", types.SimpleNamespace(perf_counter=lambda: next(clock)))
    writer, metrics = _Saves(), _Saves()
    writer.append = lambda *arrays: None
    io = train._RunIO(tiny(tmp_path, "io", "teacher.num_envs=2"), 0, writer, _Saves(), _Saves(),
                      metrics)
    with io.appender:
        io.output(_chunk_out([0, 0, 0], [0.0] * 3, [0.0] * 3, 0), 0, 200)
    (_, record), = metrics.saved
    assert (record["wall_s"], record["env_steps_per_s"]) == (2.0, 600.0)


def test_fresh_episodes_end_at_their_1_based_steps_and_count_the_learners_envs():
    # Stream 0 ends episodes at its steps 2 and 5 (lengths 2, 3); stream 1 ends none. M is the
    # most any stream ends, at least 1; with 3 envs per learner, step 5 is learner env step 15.
    nan = np.nan
    ep = train._episodes_from_returns(np.array([[nan, 1.0, nan, nan, 2.0], [nan] * 5]))
    np.testing.assert_array_equal(ep.returns, [[1.0, 2.0], [nan, nan]])
    assert (ep.end_step.tolist(), ep.lengths.tolist(), ep.valid.tolist()) == \
        ([[2, 5], [0, 0]], [[2, 3], [0, 0]], [[True, True], [False, False]])
    res = train.FreshResult(None, ep, 5, train.Timing())
    assert res.learner_env_steps(3).tolist() == [[6, 15], [0, 0]]
    none = train._episodes_from_returns(np.full((2, 3), nan))
    assert none.valid.shape == (2, 1) and not none.valid.any()


def test_streams_are_learner_major_with_each_learners_task_seed_and_hparams(tmp_path):
    # Stream n = g*E + e; TINY's learners g = task*2 + seed.
    p = train.plan(tiny(tmp_path, "p"))
    infos = p.stream_infos(2)
    assert [(s.learner, s.env, s.seed) for s in infos] == \
        [(n // 2, n % 2, [0, 1, 0, 1][n // 2]) for n in range(8)]
    assert [s.task for s in infos] == [tuple(p.tasks_GxK[n // 2].tolist()) for n in range(8)]
    assert infos[0].task != infos[4].task
    assert [s.hparams["lr"] for s in infos] == pytest.approx([1e-3] * 8)


def test_a_failed_history_write_is_raised_by_the_next_append_before_it_writes(monkeypatch):
    # A full disk on chunk k's write stops the run at chunk k+1, which is not written after it
    # (a history with a hole would pass for a complete one).
    written = []

    def append(*arrays):
        written.append(len(written))
        if len(written) == 1:
            raise OSError(errno.ENOSPC, "No space left on device")
    appender = train.BackgroundAppend(types.SimpleNamespace(append=append))
    out = _chunk_out([0], [0.0], [0.0], 0)
    appender.append(out)
    with pytest.raises(OSError, match="No space left"):
        appender.append(out)
    appender.close()
    assert written == [0]


def test_the_memory_check_counts_the_learners_share_of_each_device(tmp_path, monkeypatch):
    # Learners sharded over 2 devices: each holds half the state, which just fits there.
    cfg = tiny(tmp_path, "m")
    shape = train._abstract_state(cfg.teacher, envs.make("darkroom"), 4)
    half = train._tree_bytes(shape) // 2
    monkeypatch.setattr(jax, "device_count", lambda: 2)
    monkeypatch.setattr(parallel, "device_memory", lambda: (half, "each device"))
    train._check_memory(cfg.teacher, shape, 4)
    monkeypatch.setattr(parallel, "device_memory", lambda: (half - 1, "each device"))
    with pytest.raises(ClimitError, match="4 learners do not fit in memory"):
        train._check_memory(cfg.teacher, shape, 4)


def test_load_latest_takes_a_checkpoint_newer_than_every_snapshot(tmp_path):
    # Killed after chunk 2: a snapshot at 200, checkpoints at 200 and 400; 'latest' is 400.
    cfg = tiny(tmp_path, "k", "teacher.total_env_steps=600", "teacher.checkpoint_every=1",
               "teacher.snapshot_steps=[200]")
    with pytest.raises(Kill):
        train.teach(cfg, tmp_path / "k", progress=False, log=lambda s: None,
                    stop_hook=kill_after(2))
    teacher = tmp_path / "k" / "teacher"
    assert checkpoint.complete_steps(teacher / "snapshots") == [200]
    latest = train.load(tmp_path / "k")
    assert (latest.step, latest.directory) == (400, teacher / "checkpoints")


def test_fresh_learners_need_one_raw_2_word_key_each():
    # A key too many, or 3 words per learner, is refused before any work, naming the shape.
    tasks = envs.all_tasks("darkroom", "heldout")[:2]
    for keys in (np.zeros((3, 2), np.uint32), np.zeros((2, 3), np.uint32)):
        with pytest.raises(ValueError, match=r"one raw key per learner, \[2, 2\]"):
            train.train_learners(config.TeacherConfig(), envs.make("darkroom"), tasks, keys)


def test_an_infinite_loss_stops_the_run_as_a_nan_does():
    # Learner 1's loss overflowed to +Inf while its weights are still finite.
    out = _chunk_out([0, 0, 0], [0.0] * 3, [1.0, np.inf, 1.0], 1)
    with pytest.raises(TrainingDiverged, match=r"learners \[1\]"):
        train._check_finite(out, 10, 1, "kept")


def test_a_stop_at_a_scheduled_checkpoint_saves_it_once(tmp_path):
    # Chunks of 200, checkpoint_every 2: the stop's save at 400 is the one sync just made (the
    # whole state, replay buffers too, is not written twice); at 200, off the schedule, it saves.
    ckpt, timing = _Saves(), train.Timing()
    io = train._RunIO(tiny(tmp_path, "io"), 0, None, ckpt, _Saves(), None)
    io.sync(_STATE, 400, timing)
    io.save_before_stop(_STATE, 400, timing)
    assert [step for step, _ in ckpt.saved] == [400]
    io.save_before_stop(_STATE, 200, timing)
    assert [step for step, _ in ckpt.saved] == [400, 200]
