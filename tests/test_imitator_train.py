"""Imitator training: learns a reward-dependent policy, resumes exactly, stops on NaN,
checkpoints round-trip, 1 and 8 devices agree, and `climit imitate` end to end."""

import collections
import dataclasses
import errno
import gc
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from climit import checkpoint, cli, stopping
from climit import config as config_lib
from climit import metrics as metrics_lib
from climit.errors import ArtifactError, ClimitError, TrainingDiverged
from climit.imitator import model as M
from climit.imitator import synthetic
from climit.imitator import train as T

import procs

TINY = ["imitator.context_len=8", "imitator.train_windows=2", "imitator.d_model=32",
        "imitator.n_layers=1", "imitator.n_heads=4", "imitator.batch_size=8",
        "imitator.warmup_steps=2", "imitator.lr=3e-3", "imitator.eval_batches=2",
        "imitator.heldout_fraction=0.25"]
# The shared short run: 2 seeds, dropout and label smoothing on, every step logged.
SHORT = ["imitator.train_steps=10", "imitator.eval_every=4", "imitator.log_every=1",
         "imitator.seeds=2", "imitator.dropout=0.1", "imitator.label_smoothing=0.1"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A runs dir whose run 'base' holds a synthetic teacher history (16 learners x 160 steps)."""
    root = tmp_path_factory.mktemp("runs")
    synthetic.write_history(root / "base" / "teacher" / "histories", steps=160, variants=4)
    return root


def make_cfg(runs, name, *overrides):
    """A config for run ``name`` reading the shared history (linked into its run dir)."""
    hist = runs / name / "teacher" / "histories"
    if not hist.exists():
        hist.parent.mkdir(parents=True, exist_ok=True)
        hist.symlink_to(runs / "base" / "teacher" / "histories")
    return config_lib.load(None, [f"run.runs_dir={runs}", f"run.name={name}", *TINY, *overrides])


def records(cfg):
    lines = (T.output_dir(cfg) / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(l).items() if k != "tokens_per_s"} for l in lines]


def latest_tree(cfg):
    with checkpoint.Checkpointer(T.output_dir(cfg) / "checkpoints", readonly=True) as c:
        return c.restore()


def copy_history(good, path, nan_rewards=()):
    """A copy of history ``good`` at ``path`` whose streams ``nan_rewards`` have NaN rewards."""
    from climit import histories

    w = histories.create(path, spec=synthetic.SPEC, total_steps=good.num_steps, check_space=False,
                         streams=[good.stream_info(i) for i in range(good.num_streams)])
    fields = [np.stack([good.read(f, i) for i in range(good.num_streams)])
              for f in histories.STEP_FIELDS]
    fields[2][list(nan_rewards)] = np.nan
    with w:
        w.append(*fields)


@pytest.fixture(scope="module")
def baseline(runs):
    """An uninterrupted SHORT run (shared by the resume, device and CLI tests)."""
    cfg = make_cfg(runs, "baseline", *SHORT)
    T.train(cfg, progress=False)
    return cfg


def test_action_loss_smooths_over_the_valid_actions_only():
    # 4 valid actions of 5, target 1, smoothing 0.1: weights 0.925 on the target, 0.025 on each
    # other valid action, none on the padded one (whose logit is -inf: no NaN either).
    mcfg = types.SimpleNamespace(action_mask=(True, True, True, True, False), num_actions=5)
    logits = jnp.array([[1.0, 2.0, 0.0, 0.0, -jnp.inf]])
    loss, correct = T.action_loss(mcfg, logits, jnp.array([1]), label_smoothing=0.1)
    logp = np.asarray(jax.nn.log_softmax(logits[0, :4]))
    expected = -(0.925 * logp[1] + 0.025 * (logp[0] + logp[2] + logp[3]))
    np.testing.assert_allclose(np.asarray(loss), [expected], rtol=1e-6)
    assert bool(correct[0])
    plain, _ = T.action_loss(mcfg, logits, jnp.array([0]))
    np.testing.assert_allclose(np.asarray(plain), [-logp[0]], rtol=1e-6)


def test_lr_warms_up_linearly_then_decays_by_cosine_to_a_tenth():
    # Peak 1e-3 after 10 warmup steps of 110; halfway through the decay (step 60) the cosine
    # is at its middle: 1e-4 + 0.5 * (1e-3 - 1e-4); from step 110 on, 10% of the peak.
    lr = T.schedule(config_lib.ImitatorConfig(lr=1e-3, warmup_steps=10, train_steps=110))
    np.testing.assert_allclose([float(lr(s)) for s in (0, 5, 10, 60, 110, 200)],
                               [0.0, 5e-4, 1e-3, 5.5e-4, 1e-4, 1e-4], rtol=1e-6)


def test_the_logged_lr_is_the_schedules_at_the_step_it_was_used(baseline):
    # The record of step s (s steps done) carries the lr of its last update, optax's count s - 1:
    # 0 at step 1 (the warmup starts from 0), the peak at step 3 (TINY's 2 warmup steps).
    lr = T.schedule(baseline.imitator)
    recs = records(baseline)
    assert [r["step"] for r in recs] == list(range(1, 11))
    np.testing.assert_allclose([r["lr"] for r in recs], [float(lr(s - 1)) for s in range(1, 11)],
                               rtol=1e-6)
    assert recs[0]["lr"] == 0.0 and recs[2]["lr"] == pytest.approx(3e-3)


def test_first_adamw_step_is_lr_times_the_gradients_sign_plus_decay_of_matrices_only():
    """Adam's first update is -lr * g / (|g| + eps) per weight, whatever the gradient's scale
    (max_grad_norm=0: no clipping, not a clip to 0); AdamW adds -lr * weight_decay * w on
    matrices (ndim >= 2) only, not on biases or norm scales. Warmup 0: the peak lr at once."""
    icfg = config_lib.ImitatorConfig(lr=1e-3, warmup_steps=0, weight_decay=0.5, max_grad_norm=0.0)
    params = {"bias": jnp.array([0.5, -2.0]), "scale": jnp.ones(2),
              "w": jnp.array([[1.0, -3.0], [1.5, 0.25]])}
    grads = {"bias": jnp.array([3.0, -0.01]), "scale": jnp.array([-0.2, 5.0]),
             "w": jnp.array([[0.01, 4.0], [-7.0, 0.5]])}
    opt = T.optimizer(icfg)
    updates, _ = opt.update(grads, opt.init(params), params)
    for name, w in params.items():
        decay = 0.5 * np.asarray(w) if w.ndim >= 2 else 0.0
        np.testing.assert_allclose(updates[name], -1e-3 * (np.sign(grads[name]) + decay),
                                   rtol=1e-5, err_msg=name)


def test_the_best_step_is_the_lowest_heldout_loss_not_the_latest(tmp_path):
    # Steps 4, 8, 10, 12 scored 0.9, 0.3, 0.4, 0.5: the latest two and the best (8) are kept.
    ckpt_dir = tmp_path / "checkpoints"
    with checkpoint.Checkpointer(ckpt_dir, keep=2, best="heldout_loss") as c:
        for step, loss in ((4, 0.9), (8, 0.3), (10, 0.4), (12, 0.5)):
            c.save(step, {"w": jnp.full(2, float(step))}, metrics={"heldout_loss": loss})
    assert checkpoint.complete_steps(ckpt_dir) == [8, 10, 12]
    assert T._best(ckpt_dir) == (8, 0.3)
    assert T._best_step(ckpt_dir) == 8  # no summary.json yet (a run still training)


def test_heldout_loss_is_the_mean_plain_cross_entropy_over_every_heldout_token(baseline):
    """The summary's held-out numbers, recomputed from the final imitators (step 10) on the
    eval_batches x batch_size fixed held-out sequences: per seed, the mean over every token of
    the cross-entropy without label smoothing (SHORT trains with 0.1) and the share of
    argmax == target; heldout_loss is their mean over the seeds."""
    icfg, out = baseline.imitator, T.output_dir(baseline)
    summary = json.loads((out / "summary.json").read_text())
    loaded = T.load(out, "latest")
    assert loaded.step == summary["final_step"] == 10
    setup = T._prepare(baseline, T.open_histories(T.histories_dir(baseline)))
    heldout = T.data_lib.heldout_batches(setup.heldout_set, icfg.eval_batches, icfg.batch_size,
                                         baseline.run.seed)
    target = np.concatenate([b.target for b in heldout])[..., None]  # [eval_batches * B, T, 1]
    forward = jax.jit(M.forward)
    losses, accuracies = [], []
    for seed in range(icfg.seeds):
        logits = np.concatenate([forward(T.seed_params(loaded.params, seed), b.tokens)
                                 for b in heldout])
        logp = np.asarray(jax.nn.log_softmax(logits, -1))
        losses.append(-np.take_along_axis(logp, target, -1).mean())
        accuracies.append((logits.argmax(-1)[..., None] == target).mean())
    np.testing.assert_allclose(summary["heldout_loss_per_seed"], losses, rtol=1e-5)
    np.testing.assert_allclose(summary["heldout_accuracy_per_seed"], accuracies, rtol=1e-6)
    assert summary["heldout_loss"] == pytest.approx(np.mean(losses), rel=1e-5)
    assert summary["heldout_action_accuracy"] == pytest.approx(np.mean(accuracies), rel=1e-6)
    assert losses[0] != pytest.approx(losses[1], rel=1e-3)  # the seeds differ: the mean is seen


def test_loss_falls_and_heldout_accuracy_beats_chance(runs):
    """The synthetic learner's action is a function of the reward two steps back: the imitator
    learns it on unseen tasks, and its predictions collapse when the rewards are hidden."""
    cfg = make_cfg(runs, "learn", "imitator.train_steps=150", "imitator.eval_every=75",
                   "imitator.log_every=25")
    s = T.train(cfg, progress=False)
    recs = records(cfg)
    assert recs[0]["loss"] > 1.0 and recs[-1]["loss"] < 0.3 * recs[0]["loss"]
    assert s["chance_accuracy"] == 0.25
    assert s["heldout_action_accuracy"] > 0.85, s
    assert s["heldout_loss"] < 0.4
    for key in ("heldout_loss", "heldout_action_accuracy", "tokens_per_s", "params"):
        assert isinstance(s[key], (int, float)) and s[key] > 0
    # Accuracy by position: 8 bins of 2 of the 16 positions. Position 0 lacks the reward two
    # steps back (its window starts mid-stream), so ~1/2 there; every later one has it.
    profile = s["heldout_accuracy_by_position"]
    assert s["position_bins"] == list(range(0, 17, 2)) and len(profile) == 8
    assert np.mean(profile) == pytest.approx(s["heldout_action_accuracy"], abs=1e-6)
    assert profile[0] < np.mean(profile[1:]) - 0.1 and np.mean(profile[1:]) > 0.9, profile
    assert recs[-1]["heldout_accuracy_by_position"] == profile
    loaded = T.load(T.output_dir(cfg))
    assert s["params"] == M.num_params(loaded.params) // cfg.imitator.seeds
    setup = T._prepare(cfg, T.open_histories(T.histories_dir(cfg)))
    batch = T.data_lib.heldout_batches(setup.heldout_set, 1, 16, seed=1)[0]
    forward = jax.jit(M.forward)
    one = T.seed_params(loaded.params, 0)
    acc = {}
    for name, toks in (("rewards", batch.tokens), ("hidden", batch.tokens._replace(
            prev_reward=np.zeros_like(batch.tokens.prev_reward)))):
        pred = np.asarray(forward(one, toks)).argmax(-1)
        acc[name] = (pred == batch.target)[:, 2:].mean()  # every step with two steps of context
    assert acc["rewards"] > 0.95 and acc["hidden"] < 0.75, acc


def _resume_steps(monkeypatch) -> list[int]:
    """The step each later T.train call resumes from (0: a fresh start), recorded as it goes:
    training is deterministic, so a run that restarted from scratch would end bit-identical
    too, and only this tells a resume from a restart."""
    starts: list[int] = []
    restore = T._restore_or_init

    def spy(*args, **kwargs):
        resumed = restore(*args, **kwargs)
        starts.append(resumed.start)
        return resumed

    monkeypatch.setattr(T, "_restore_or_init", spy)
    return starts


def test_kill_and_restart_resumes_exactly(runs, baseline, monkeypatch):
    cfg = make_cfg(runs, "killed", *SHORT)
    with pytest.raises(KeyboardInterrupt):
        # killed 3 steps after the step-4 checkpoint
        T.train(cfg, progress=False, interrupt_after=7)
    assert checkpoint.complete_steps(T.output_dir(cfg) / "checkpoints") == [4]
    starts = _resume_steps(monkeypatch)
    T.train(cfg, progress=False)
    assert starts == [4]
    a, b = latest_tree(baseline), latest_tree(cfg)
    assert int(b["step"]) == 10
    jax.tree.map(np.testing.assert_array_equal, a, b)  # params, optimizer state, step: bitwise
    assert records(cfg) == records(baseline)


def test_a_kill_right_after_a_checkpoint_keeps_that_steps_metrics_record(runs, baseline,
                                                                         monkeypatch):
    # Killed the moment the step-8 checkpoint is saved: the run resumes from step 8, and
    # metrics.jsonl still holds step 8's record (it was logged before the save; saved first,
    # the resumed run never wrote it again).
    cfg = make_cfg(runs, "killed_at_save", *SHORT)
    save = checkpoint.Checkpointer.save

    def save_then_die(self, step, *args, **kwargs):
        save(self, step, *args, **kwargs)
        if step == 8:
            raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(checkpoint.Checkpointer, "save", save_then_die)
        with pytest.raises(KeyboardInterrupt):
            T.train(cfg, progress=False)
    starts = _resume_steps(monkeypatch)
    T.train(cfg, progress=False)
    assert starts == [8]
    assert records(cfg) == records(baseline)


def test_sigterm_stops_at_the_next_checkpoint_step_and_the_rerun_is_identical(runs, baseline,
                                                                               monkeypatch):
    # A stop requested before step 1 waits for the first checkpoint step (eval_every 4): a
    # checkpoint off that schedule could change which one is best.
    cfg = make_cfg(runs, "stopped", *SHORT)
    with stopping.watch(), pytest.raises(stopping.Stopped) as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        T.train(cfg, progress=False)
    assert stop.value.why == "SIGTERM" and "imitator ad at step 4 of 10" in str(stop.value)
    assert checkpoint.complete_steps(T.output_dir(cfg) / "checkpoints") == [4]
    assert not (T.output_dir(cfg) / "summary.json").exists()
    starts = _resume_steps(monkeypatch)
    with stopping.watch():  # no request now: it runs to the end
        T.train(cfg, progress=False)
    assert starts == [4]
    jax.tree.map(np.testing.assert_array_equal, latest_tree(baseline), latest_tree(cfg))
    assert records(cfg) == records(baseline)


def test_a_stop_asked_for_when_only_the_summary_is_left_finishes_the_imitator(runs, baseline):
    # The one checkpoint step is the last (eval_every > train_steps): a stop requested before it
    # lets the run write its summary (all that is left) instead of exiting to be run again.
    # (The baseline's programs: eval_every changes no compiled program.)
    cfg = make_cfg(runs, "stop_at_end", *SHORT, "imitator.eval_every=20")
    with stopping.watch(time_limit_s=0):
        assert stopping.requested() == "time limit"
        summary = T.train(cfg, progress=False)
    assert summary["final_step"] == summary["best_step"] == 10 and T.finished(cfg)


def test_histories_of_a_teacher_with_another_config_are_refused(runs, tmp_path):
    """`climit imitate` with another env, teacher or seed than the histories were written with
    would train and label an imitator as the config's; it is refused, naming the difference."""
    src = runs / "base" / "teacher" / "histories"
    hist = tmp_path / "other" / "teacher" / "histories"
    shutil.copytree(src, hist)
    teacher_cfg = config_lib.load(None, ["teacher.lr=0.01", "run.name=teacher"])
    meta = json.loads((hist / "meta.json").read_text())
    meta["config"] = config_lib.to_dict(teacher_cfg)  # as `climit teach` records it
    (hist / "meta.json").write_text(json.dumps(meta))
    cfg = config_lib.load(None, [f"run.runs_dir={tmp_path}", "run.name=other", *TINY, *SHORT])
    with pytest.raises(ClimitError, match=r"another config \(teacher\.lr: 0\.01 -> 0\.001\)"):
        T.train(cfg, progress=False)
    assert not (T.output_dir(cfg) / "checkpoints").exists()  # refused before any work
    history = T.open_histories(hist)
    T._check_history_config(config_lib.load(None, ["teacher.lr=0.01", *TINY]), history)  # matches
    for override, named in (("env.name=darkroom_hard", "env.name: 'darkroom' -> 'darkroom_hard'"),
                            ("run.seed=5", "run.seed: 0 -> 5")):
        with pytest.raises(ClimitError) as err:
            T._check_history_config(config_lib.load(None, ["teacher.lr=0.01", override]), history)
        assert named in str(err.value)


def test_imitator_seeds_start_apart_and_run_seed_changes_the_run(runs, baseline):
    # Every weight matrix differs between the vmapped seeds at initialisation (one key each),
    icfg = baseline.imitator
    mcfg = M.model_config(icfg, T.history_spec(T.open_histories(T.histories_dir(baseline))))
    state = T.init_state(mcfg, icfg, jax.random.key(0))
    kernels = [x for x in jax.tree.leaves(state.tree) if x.ndim >= 3]  # [S, in, out]
    assert kernels and all(not np.array_equal(x[0], x[1]) for x in kernels)
    # and run.seed reaches the imitator: another seed, another run (the same one, the same run).
    cfg = make_cfg(runs, "seed1", *SHORT, "run.seed=1")
    T.train(cfg, progress=False)
    other, base = latest_tree(cfg)["tree"], latest_tree(baseline)["tree"]
    assert all(not np.array_equal(a, b)
               for a, b in zip(jax.tree.leaves(other), jax.tree.leaves(base))
               if np.ndim(a) >= 3)
    # The held-out tasks are drawn from run.seed too (keys.py: [seed, HELDOUT_STREAMS]).
    held = [json.loads((T.output_dir(c) / "summary.json").read_text())["heldout_tasks"]
            for c in (cfg, baseline)]
    assert held[0] != held[1]


def test_checkpoint_round_trip_is_identical(runs, baseline, tmp_path):
    from climit import parallel

    icfg = baseline.imitator
    mcfg = M.model_config(icfg, T.history_spec(T.open_histories(T.histories_dir(baseline))))
    programs = T._programs(mcfg, icfg, parallel.mesh())  # compiled by the baseline run
    state = programs.init(jax.random.key(0))
    S, B, L = icfg.seeds, icfg.batch_size, icfg.context_len * icfg.train_windows
    batch = T.data_lib.Batch(
        tokens=M.Tokens(obs=np.zeros((S, B, L, 2), np.uint8),
                        prev_action=np.zeros((S, B, L), np.int32),
                        prev_reward=np.ones((S, B, L), np.float32),
                        episode_start=np.zeros((S, B, L), bool)),
        target=np.ones((S, B, L), np.int32))
    for _ in range(2):
        state, _ = programs.step(jax.random.key(1), state, batch)
    with checkpoint.Checkpointer(tmp_path / "c", keep=2) as c:
        c.save(2, state, config={"x": 1}, metrics={"heldout_loss": 1.0})
        back = c.restore(target=jax.eval_shape(lambda: state))
    assert type(back) is type(state) and int(back.step) == 2
    assert len(jax.tree.leaves(state.opt_state)) > 2 * len(jax.tree.leaves(state.tree))  # mu, nu
    jax.tree.map(np.testing.assert_array_equal, state, back)


def test_data_memory_budget_only_chooses_the_reader(runs, baseline):
    # 0 MB: every batch is read window by window; the batches, and so the imitator, are the same.
    small = make_cfg(runs, "lowmem", *SHORT, "imitator.data_memory_mb=0")
    assert T.fingerprint(small) == T.fingerprint(baseline)
    history = T.open_histories(T.histories_dir(baseline))
    fast, slow = T._prepare(baseline, history), T._prepare(small, history)
    assert fast.train_set.in_memory and not slow.train_set.in_memory
    ids = np.arange(0, fast.train_set.num_windows, 7)
    jax.tree.map(np.testing.assert_array_equal, fast.train_set.windows(ids),
                 slow.train_set.windows(ids))


def test_checkpoint_of_another_model_revision_is_refused(runs, baseline, monkeypatch):
    # A checkpoint whose parameters meant something else (older position encoding) must not
    # load silently; the same config under a new revision is another imitator to train.
    fp = T.fingerprint(baseline)
    monkeypatch.setattr(M, "REVISION", M.REVISION + 1)
    with pytest.raises(ArtifactError, match="model revision"):
        T.load(T.output_dir(baseline))
    assert T.fingerprint(baseline) != fp


def test_a_step_too_big_for_memory_is_refused_before_it_runs(runs, monkeypatch):
    # XLA's count of the compiled step against the device's memory: here a limit of 1 MiB
    # (the step needs more), so no step runs and nothing is logged; with room, it trains.
    from climit import parallel

    cfg = make_cfg(runs, "toobig", *SHORT)
    monkeypatch.setattr(parallel, "device_memory", lambda: (2**20, "host memory"))
    with pytest.raises(ClimitError, match=r"the imitator's train step needs [0-9.]+ GiB per device "
                       r"\(XLA's count for imitator.seeds=2 x imitator.batch_size=8 sequences of "
                       r"2 x 8 steps, d_model 32, 1 layers\), more than the 0.0 GiB of host "
                       r"memory; lower imitator.batch_size"):
        T.train(cfg, progress=False)
    assert not (T.output_dir(cfg) / "metrics.jsonl").exists()
    # Weights and optimizer state alone above the limit: refused from their shapes, before
    # they are allocated (imitator.seeds=100000 at the default size met the OOM killer).
    monkeypatch.setattr(parallel, "device_memory", lambda: (2**10, "host memory"))
    with pytest.raises(ClimitError, match=r"the imitators' weights and optimizer state take "
                       r"[0-9.]+ GiB per device \(imitator.seeds=2 models of d_model 32, 1 "
                       r"layers\), more than the 0.0 GiB of host memory; lower imitator.seeds"):
        T.train(cfg, progress=False)
    monkeypatch.setattr(parallel, "device_memory", lambda: (None, "host memory"))  # unknown
    assert T.train(cfg, progress=False)["final_step"] == 10


def test_nan_stops_with_a_clear_error_and_keeps_the_last_good_checkpoint(runs, baseline):
    from climit import histories

    cfg = make_cfg(runs, "nan", *SHORT)
    with pytest.raises(KeyboardInterrupt):  # a good checkpoint at step 4
        T.train(cfg, progress=False, interrupt_after=4)
    # the history turns bad under the run (NaN rewards): the next steps diverge
    good = histories.open(runs / "base" / "teacher" / "histories")
    bad_dir = runs / "nan_history"
    copy_history(good, bad_dir, nan_rewards=range(good.num_streams))
    link = T.histories_dir(cfg)
    link.unlink()
    link.symlink_to(bad_dir)
    # Caught at the first record after it (log_every 1: step 5), before that record is logged,
    # not at the next evaluation's weight check (step 8).
    with pytest.raises(TrainingDiverged, match=r"NaN/Inf by step 5; the last good checkpoint "
                       r"\(step 4\) is kept"):
        T.train(cfg, progress=False)
    assert [r["step"] for r in records(cfg)] == [1, 2, 3, 4]
    loaded = T.load(T.output_dir(cfg), "latest")
    assert loaded.step == 4
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(loaded.params.tree))


def test_nan_in_heldout_data_alone_blames_the_evaluation_not_the_lr(runs, baseline):
    # NaN rewards in the held-out streams only: training stays finite, the first held-out
    # evaluation (step 4) is NaN. Lowering the learning rate would not help; say so.
    from climit import histories

    good = histories.open(runs / "base" / "teacher" / "histories")
    plain = config_lib.load(None, [*TINY, *SHORT])
    _, held = T.data_lib.split_streams(good, plain.imitator.heldout_fraction, plain.run.seed)
    copy_history(good, runs / "nan_heldout_history", nan_rewards=held)
    link = runs / "nan_heldout" / "teacher" / "histories"
    link.parent.mkdir(parents=True)
    link.symlink_to(runs / "nan_heldout_history")
    cfg = make_cfg(runs, "nan_heldout", *SHORT)
    with pytest.raises(TrainingDiverged) as e:
        T.train(cfg, progress=False)
    msg = str(e.value)
    assert "held-out evaluation at step 4" in msg and "held-out data" in msg, msg
    assert "no checkpoint had been saved yet" in msg and "imitator.lr" not in msg, msg
    assert [r["step"] for r in records(cfg)] == [1, 2, 3]  # finite training records, then the stop


TIMINGS = ("tokens_per_s", "compile_s")


def test_run_killed_after_its_last_checkpoint_summarises_like_an_uninterrupted_one(
        runs, baseline, monkeypatch):
    """Killed between the final checkpoint and summary.json, the rerun has no step left: its
    summary must still hold every field of the uninterrupted run's, per-seed held-out metrics
    of every seed (not the mean alone) and the run's throughput (not None or 0)."""
    want = json.loads((T.output_dir(baseline) / "summary.json").read_text())
    cfg = make_cfg(runs, "killed_at_end", *SHORT)
    with pytest.raises(KeyboardInterrupt):
        T.train(cfg, progress=False, interrupt_after=10)  # after the step-10 checkpoint
    summary_file = T.output_dir(cfg) / "summary.json"
    assert checkpoint.complete_steps(T.output_dir(cfg) / "checkpoints")[-1] == 10
    assert not summary_file.exists()
    T.train(cfg, progress=False)
    got = json.loads(summary_file.read_text())
    assert set(got) == set(want)
    assert {k: v for k, v in got.items() if k not in TIMINGS} == \
        {k: v for k, v in want.items() if k not in TIMINGS}
    assert len(got["heldout_loss_per_seed"]) == len(got["heldout_accuracy_per_seed"]) == 2
    for key in TIMINGS:
        assert isinstance(got[key], float) and got[key] > 0, key
    # Its throughput is that of the totals saved at step 10: steps 2..10 (step 1 compiled) of
    # 2 seeds x 8 sequences x 16 tokens each.
    saved = T.load(T.output_dir(cfg), "latest").metrics
    assert saved["timing_steps"] == 9
    assert got["tokens_per_s"] == pytest.approx(9 * 2 * 8 * 16 / saved["timing_run_s"], rel=1e-9)
    # A checkpoint from before evaluations were saved with it: the final weights are evaluated
    # again, to the same numbers.
    summary_file.unlink()
    monkeypatch.setattr(T, "_EVALUATION", T._EVALUATION + ("not_in_that_checkpoint",))
    T.train(cfg, progress=False)
    again = json.loads(summary_file.read_text())
    assert {k: v for k, v in again.items() if k not in TIMINGS} == \
        {k: v for k, v in want.items() if k not in TIMINGS}


def test_summary_says_whether_tasks_or_learners_are_held_out(runs, baseline, tmp_path):
    s = json.loads((T.output_dir(baseline) / "summary.json").read_text())
    assert s["heldout"] == "tasks"  # 16 tasks (one learner each), a quarter held out
    assert len(s["heldout_tasks"]) == len(s["heldout_learners"]) == s["heldout_streams"] == 4
    # One task, four learners: one learner is held out, and it plays the task trained on.
    root = tmp_path / "runs"
    history = synthetic.write_history(root / "one" / "teacher" / "histories", steps=160,
                                      variants=1, seeds=4, good_arms=(1,))
    cfg = config_lib.load(None, [f"run.runs_dir={root}", "run.name=one", *TINY, *SHORT])
    s = T.train(cfg, progress=False)
    setup = T._prepare(cfg, history)
    held = sorted({history.stream_info(i).learner for i in setup.heldout_streams})
    assert s["heldout"] == "learners" and s["heldout_tasks"] == []
    assert s["heldout_learners"] == held and len(held) == 1


@pytest.mark.parametrize("refuse", [True, False])
def test_summary_reports_the_attention_kernel_that_ran(runs, baseline, fake_gpu_attention, refuse):
    fake_gpu_attention(refuse)
    cfg = make_cfg(runs, f"attention_{refuse}", *SHORT)
    if refuse:
        with pytest.warns(M.AttentionFallback, match="using XLA"):
            s = T.train(cfg, progress=False)
    else:
        s = T.train(cfg, progress=False)
    assert s["attention"] == ("xla" if refuse else "cudnn")


def copy_run(runs, src_cfg, name):
    """A config for run ``name`` holding a copy of ``src_cfg``'s finished imitator."""
    cfg = make_cfg(runs, name, *SHORT)
    shutil.copytree(T.output_dir(src_cfg), T.output_dir(cfg))
    return cfg


def truncate_arrays(step_dir):
    """Damage a checkpoint step as the audit did: `truncate -s 50 STEP/state/d/*`."""
    for f in (step_dir / "state" / "d").iterdir():
        os.truncate(f, 50)


def without_timings(summary):
    return {k: v for k, v in summary.items() if k not in TIMINGS}


def test_lost_best_checkpoint_is_never_replaced_by_another_and_is_retrained(runs, baseline):
    """A finished imitator whose best checkpoint is missing or damaged: loading 'best' says so
    (it used to load an earlier step), and it is not finished, so training again recreates
    it, to the same weights and summary."""
    want = json.loads((T.output_dir(baseline) / "summary.json").read_text())
    assert want["best_step"] == want["final_step"] == 10  # SHORT's loss falls to the end
    for how in ("missing", "damaged"):
        cfg = copy_run(runs, baseline, f"lost_best_{how}")
        out = T.output_dir(cfg)
        assert T.finished(cfg)
        if how == "missing":
            shutil.rmtree(out / "checkpoints" / "10")
        else:
            truncate_arrays(out / "checkpoints" / "10")
        left = checkpoint.complete_steps(out / "checkpoints")
        assert left == ([8] if how == "missing" else [8, 10])
        assert not T.finished(cfg)
        with pytest.raises(ArtifactError, match=rf"best checkpoint \(step 10\) is {how}") as e:
            T.load(out, "best")
        assert "climit imitate" in str(e.value)
        logs = []
        T.train(cfg, progress=False, log=logs.append)
        assert any(f"best and final checkpoint (step 10) is {how}" in line for line in logs), logs
        got = json.loads((out / "summary.json").read_text())
        assert T.finished(cfg) and without_timings(got) == without_timings(want)
        jax.tree.map(np.testing.assert_array_equal, latest_tree(baseline), latest_tree(cfg))
        assert T.load(out, "best").step == 10
        assert records(cfg) == records(baseline)
    assert (out / "damaged_checkpoints" / "10").is_dir()  # kept for a look


def test_lost_best_checkpoint_before_the_last_redoes_the_steps_after_it(runs, baseline):
    """The summary's best step (here: said to be 8) gone while a later checkpoint (10) is
    intact: resuming from 10 would end with 10 as the best, so the run restarts before 8 (from
    the start: no earlier checkpoint is kept) and the later step is moved aside."""
    cfg = copy_run(runs, baseline, "lost_best_early")
    out = T.output_dir(cfg)
    summary = json.loads((out / "summary.json").read_text())
    (out / "summary.json").write_text(json.dumps({**summary, "best_step": 8}))
    shutil.rmtree(out / "checkpoints" / "8")
    assert not T.finished(cfg)
    with pytest.raises(ArtifactError, match=r"best checkpoint \(step 8\) is missing"):
        T.load(out, "best")
    logs = []
    T.train(cfg, progress=False, log=logs.append)
    assert [p.name for p in (out / "superseded_checkpoints").iterdir()] == ["10"]
    assert any("superseded_checkpoints" in line for line in logs), logs
    assert checkpoint.complete_steps(out / "checkpoints") == [8, 10]
    jax.tree.map(np.testing.assert_array_equal, latest_tree(baseline), latest_tree(cfg))
    assert records(cfg) == records(baseline)


def test_damaged_latest_checkpoint_falls_back_to_the_one_before(runs, baseline, monkeypatch):
    cfg = make_cfg(runs, "damaged_latest", *SHORT)
    with pytest.raises(KeyboardInterrupt):
        T.train(cfg, progress=False, interrupt_after=9)
    ckpt_dir = T.output_dir(cfg) / "checkpoints"
    assert checkpoint.complete_steps(ckpt_dir) == [4, 8]
    truncate_arrays(ckpt_dir / "8")
    logs = []
    starts = _resume_steps(monkeypatch)
    T.train(cfg, progress=False, log=logs.append)
    assert starts == [4]
    assert any(str(ckpt_dir / "8") in line and "damaged" in line for line in logs), logs
    aside = T.output_dir(cfg) / "damaged_checkpoints"
    assert [p.name for p in aside.iterdir()] == ["8"] and any(str(aside) in line for line in logs)
    assert checkpoint.complete_steps(ckpt_dir) == [8, 10]
    checkpoint.verify_step(ckpt_dir / "8")  # saved again on the way
    jax.tree.map(np.testing.assert_array_equal, latest_tree(baseline), latest_tree(cfg))
    assert records(cfg) == records(baseline)  # resumed from 4: the metrics after it redone
    for step in (8, 10):
        truncate_arrays(ckpt_dir / str(step))
    (T.output_dir(cfg) / "summary.json").unlink()
    with pytest.raises(ArtifactError, match="every checkpoint in .* is damaged") as e:
        T.train(cfg, progress=False, log=lambda m: None)
    assert f"remove {T.output_dir(cfg).absolute()}" in str(e.value)


def _disk_full_at(where, monkeypatch):
    """Make one write of a SHORT run fail as a full disk does, after the checkpoint at step 4:
    the checkpoint at 8 (orbax's RESOURCE_EXHAUSTED ValueError, after which closing orbax's
    checkpointer fails too), or the metrics record of step 6 (Python's OSError)."""
    if where == "metrics":
        log = metrics_lib.MetricsLogger.log

        def full_log(self, rec):
            if rec["step"] == 6:
                raise OSError(errno.ENOSPC, "No space left on device", str(self.path))
            log(self, rec)
        monkeypatch.setattr(metrics_lib.MetricsLogger, "log", full_log)
        return
    save, close = checkpoint.Checkpointer.save, checkpoint.Checkpointer.close

    def full_save(self, step, tree, **kw):
        if step == 8:
            self.failed = True
            try:  # orbax's writer threads log the error with its traceback first
                raise ValueError(f"No space left on device: {self.directory}/8/state/d/0")
            except ValueError:
                logging.getLogger("absl").error("_SignalingThread.run() raised", exc_info=True)
            raise ValueError(f'RESOURCE_EXHAUSTED: Failed writing: "{self.directory}/8.orbax-'
                             f'checkpoint-tmp/state/d/0": No space left on device '
                             f'[os_error_code=\'28\']')
        save(self, step, tree, **kw)

    def failing_close(self):
        close(self)
        if getattr(self, "failed", False):
            raise RuntimeError("Event loop is closed")
    monkeypatch.setattr(checkpoint.Checkpointer, "save", full_save)
    monkeypatch.setattr(checkpoint.Checkpointer, "close", failing_close)


@pytest.mark.parametrize("where", ["checkpoints", "metrics"])
def test_full_disk_is_a_clear_error_and_the_run_resumes(runs, baseline, monkeypatch, capsys,
                                                        caplog, where):
    cfg = make_cfg(runs, f"full_{where}", *SHORT)
    # Earlier tests' failed orbax restores leave asyncio tasks whose collection logs "Task
    # exception was never retrieved" wherever it happens: collect them now, out of this test.
    gc.collect()
    caplog.clear()
    _disk_full_at(where, monkeypatch)
    args = ["imitate", "--no-progress", f"run.runs_dir={runs}", f"run.name=full_{where}",
            *TINY, *SHORT]
    assert cli.main(args) == 1
    err = capsys.readouterr().err + caplog.text
    assert err.count("\n") == 1 and "Traceback" not in err and "Event loop" not in err, err
    with pytest.raises(ClimitError, match="the disk is full") as e:
        T.train(cfg, progress=False)
    ckpt_dir = T.output_dir(cfg) / "checkpoints"
    msg = str(e.value)
    assert f"resumes from its last checkpoint (step 4) in {ckpt_dir}" in msg, msg
    assert "No space left on device" in msg and "nothing written so far is lost" in msg
    assert not isinstance(e.value.__cause__, RuntimeError)  # not the close that failed after it
    monkeypatch.undo()  # space freed
    starts = _resume_steps(monkeypatch)
    T.train(cfg, progress=False)
    assert starts == [4]
    jax.tree.map(np.testing.assert_array_equal, latest_tree(baseline), latest_tree(cfg))
    assert records(cfg) == records(baseline)


def test_other_errors_are_not_taken_for_a_full_disk(runs, baseline, monkeypatch):
    cfg = make_cfg(runs, "not_full", *SHORT)
    for exc in (OSError(errno.EACCES, "Permission denied", str(T.output_dir(cfg))),
                OSError(errno.ENOSPC, "No space left on device", "/tmp/elsewhere/cache.bin")):
        def fail(self, step, tree, exc=exc, **kw):
            raise exc
        monkeypatch.setattr(checkpoint.Checkpointer, "save", fail)
        with pytest.raises(OSError) as e:
            T.train(cfg, progress=False)
        assert e.value is exc


def test_refuses_to_start_without_histories(tmp_path, capsys):
    cfg = config_lib.load(None, [f"run.runs_dir={tmp_path}", "run.name=empty"])
    with pytest.raises(ArtifactError, match="teacher/histories"):
        T.train(cfg, progress=False)
    assert cli.main(["imitate", f"run.runs_dir={tmp_path}", "run.name=empty"]) == 1
    err = capsys.readouterr().err
    assert "histories" in err and "climit teach" in err and "Traceback" not in err
    assert "note" not in err
    # a subsampled ED is not the evaluation's control: said before any work
    assert cli.main(["imitate", f"run.runs_dir={tmp_path}", "run.name=empty",
                     "imitator.variant=ed", "imitator.subsample=3"]) == 1
    assert "note: the evaluation's ed imitator has imitator.subsample=1 (see climit.imitator" \
           ".data.control_subsample); this one (subsample 3) is not" in capsys.readouterr().err


def test_incomplete_history_is_refused(tmp_path):
    from climit import histories

    w = histories.create(tmp_path / "r" / "teacher" / "histories", spec=synthetic.SPEC,
                         streams=[histories.StreamInfo(0, 0, (0, 0), 0, {})], total_steps=100,
                         check_space=False)
    with w:
        w.append(np.zeros((1, 10, 2), np.uint8), np.zeros((1, 10)), np.zeros((1, 10)),
                 np.zeros((1, 10), bool), np.zeros((1, 10), bool))
    cfg = config_lib.load(None, [f"run.runs_dir={tmp_path}", "run.name=r"])
    with pytest.raises(ClimitError, match="incomplete"):
        T.train(cfg, progress=False)


def test_cli_imitate_writes_variant_dirs_summary_and_a_loadable_imitator(runs, baseline, capsys):
    base = [f"run.runs_dir={runs}", "run.name=cli", *TINY, *SHORT]  # compiled for the baseline
    make_cfg(runs, "cli")
    assert cli.main(["imitate", "--no-progress", *base]) == 0
    assert cli.main(["imitate", "--no-progress", *base, "imitator.variant=shuffled",
                     "imitator.horizon=80"]) == 0
    assert "heldout_loss" in capsys.readouterr().out
    root = runs / "cli" / "imitator"
    index = json.loads((root / "summary.json").read_text())
    assert set(index) == {"ad", "shuffled_h80"}
    for tag, s in index.items():
        assert json.loads((root / tag / "summary.json").read_text()) == s
        assert (root / tag / "config.yaml").is_file() and (root / tag / "metrics.jsonl").is_file()
    assert index["shuffled_h80"]["horizon"] == 80
    assert index["ad"]["train_tokens"] == 2 * index["shuffled_h80"]["train_tokens"]
    loaded = T.load(root / "shuffled_h80")
    assert (loaded.config.imitator.horizon == 80
            and loaded.step == index["shuffled_h80"]["best_step"])
    assert loaded.params.cfg == T.load(root / "ad").params.cfg
    # the checkpoints directory itself and a step given as digits name the same imitator
    again = T.load(root / "shuffled_h80" / "checkpoints", str(loaded.step))
    assert again.step == loaded.step
    jax.tree.map(np.testing.assert_array_equal, again.params.tree, loaded.params.tree)
    with pytest.raises(ValueError, match="'best', 'latest' or a step number"):
        T.load(root / "ad", "newest")
    one = T.seed_params(loaded.params, 1)
    cache = M.init_cache(one, 3)
    tok = M.Tokens(obs=np.zeros((3, 2), np.uint8), prev_action=np.full((3,), -1, np.int32),
                   prev_reward=np.zeros((3,), np.float32), episode_start=np.ones((3,), bool))
    logits, cache = jax.jit(M.decode_step)(one, cache, tok)
    assert logits.shape == (3, 5) and np.all(np.isfinite(logits[:, :4]))
    # a finished imitator is not retrained; a different one in the same dir is refused
    assert cli.main(["imitate", "--no-progress", *base]) == 0
    (root / "ad" / "summary.json").unlink()
    assert cli.main(["imitate", "--no-progress", *base, "imitator.lr=1e-3"]) == 1
    assert "different config (imitator.lr: 0.003 -> 0.001); remove it" in capsys.readouterr().err


class _SavedCheckpoint:
    """A checkpointer stand-in whose every step was saved under ``cfg`` (metadata only)."""

    def __init__(self, cfg, directory):
        self.directory = directory
        saved = {**config_lib.to_dict(cfg), "imitator_model_revision": M.REVISION,
                 "imitator_fingerprint": T.fingerprint(cfg)}
        self.config = json.loads(json.dumps(saved))  # as the checkpoint's JSON metadata holds it

    def metadata(self, step):
        return {"config": self.config, "metrics": {}}


def test_refusing_another_imitator_names_the_keys_that_differ(tmp_path):
    """Only what the imitator's fingerprint covers: not logging knobs, eval, run.name or the
    transfer family."""
    ckpt = _SavedCheckpoint(config_lib.load(None, ["imitator.lr=1e-3"]), tmp_path / "checkpoints")
    now = config_lib.load(None, ["imitator.lr=5e-4", "imitator.log_every=7", "eval.tasks=3",
                                 "run.name=other", "teacher.scan_unroll=2", "env.transfer="])
    with pytest.raises(ClimitError) as e:
        T._restore_step(now, ckpt, 10, target=None)
    assert str(e.value) == (f"{tmp_path} holds an imitator trained with a different config "
                            f"(imitator.lr: 0.001 -> 0.0005); remove it or choose another run.name")
    # eval_every sets the steps among which the best imitator is chosen: another result.
    with pytest.raises(ClimitError, match=r"\(imitator.eval_every: 200 -> 300\)"):
        T._restore_step(config_lib.load(None, ["imitator.lr=1e-3", "imitator.eval_every=300"]),
                        ckpt, 10, target=None)
    # in declaration order, the imitator's own section first; four named, the rest counted
    now = config_lib.load(None, ["imitator.lr=5e-4", "imitator.n_layers=3", "run.seed=1",
                                 "teacher.gamma=0.9", "histories.compression_level=5",
                                 "env.train_tasks=32"])
    with pytest.raises(ClimitError, match=r"\(imitator.n_layers: 2 -> 3; imitator.lr: 0.001 -> "
                       r"0.0005; env.train_tasks: 64 -> 32; teacher.gamma: 0.99 -> 0.9; "
                       r"and 2 more\)"):
        T._restore_step(now, ckpt, 10, target=None)


def test_the_transfer_family_is_not_part_of_an_imitators_identity():
    """Only test (c) uses env.transfer: another transfer family is the same imitator (the
    evaluation reruns, the imitators do not retrain). An imitator saved before the change
    (its fingerprint covered env.transfer) still matches the config that made it."""
    cfg = config_lib.load(None, [])
    other = config_lib.load(None, ["env.transfer="])
    assert T.fingerprint(cfg) == T.fingerprint(other)
    assert T.fingerprint_matches(T.fingerprint(cfg), other)
    legacy = T._fingerprint(cfg, cfg.env)  # what imitators saved until 2026-11-27
    assert legacy != T.fingerprint(cfg) and T.fingerprint_matches(legacy, cfg)
    assert not T.fingerprint_matches(legacy, config_lib.load(None, ["imitator.lr=1e-3"]))
    assert not T.fingerprint_matches(None, cfg)
    from climit import evaluate
    assert evaluate.fingerprint(cfg) != evaluate.fingerprint(other)  # the evaluation does rerun


DEVICES_SCRIPT = textwrap.dedent("""
    import sys, jax
    from climit import config
    from climit.imitator import train
    assert jax.device_count() == 8
    cfg = config.load(None, sys.argv[1:])
    s = train.train(cfg, progress=False)
    print("DEVICES", s["devices"])
""")


def test_one_and_eight_devices_give_the_same_loss_curve(runs, baseline, tmp_path):
    cfg = make_cfg(runs, "dev8", *SHORT)
    script = tmp_path / "dev8.py"
    script.write_text(DEVICES_SCRIPT)
    env = procs.cpu_env(8)
    args = [f"run.runs_dir={runs}", "run.name=dev8", *TINY, *SHORT]
    out = subprocess.run([sys.executable, str(script), *args], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "DEVICES 8" in out.stdout
    one, eight = records(baseline), records(cfg)
    assert [r["step"] for r in one] == [r["step"] for r in eight]
    keys = ("loss", "accuracy", "grad_norm", "heldout_loss", "heldout_action_accuracy")
    # each metric is compared somewhere (a renamed one would skip its check silently)
    assert all(any(key in a for a in one) for key in keys)
    for a, b in zip(one, eight):
        assert a.keys() == b.keys(), a["step"]
        for key in keys:
            if key in a:
                # float32 reduction order only (measured: 3e-7 relative)
                np.testing.assert_allclose(b[key], a[key], rtol=1e-5, atol=1e-6, err_msg=key)


def test_imitator_presets_load():
    from pathlib import Path

    presets = sorted((Path(__file__).resolve().parents[1] / "configs").glob("imitator_*.yaml"))
    assert presets
    for path in presets:
        cfg = config_lib.load(path)
        assert cfg.imitator.d_model % cfg.imitator.n_heads == 0


@pytest.mark.slow
def test_two_processes_give_the_single_device_loss_curve(runs, baseline, tmp_path):
    """Multi-host data parallel: 2 local processes x 2 CPU devices, each reading its rows of the
    global batch, reproduce the 1-device run (~40 s on 2 cores)."""
    make_cfg(runs, "hosts2", *SHORT)
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent("""
        import sys
        from climit import parallel
        assert parallel.initialize()
        from climit import config
        from climit.imitator import train
        train.train(config.load(None, sys.argv[1:]), progress=False)
    """))
    args = [f"run.runs_dir={runs}", "run.name=hosts2", *TINY, *SHORT]
    results = procs.run_job([sys.executable, str(script), *args], 300)
    assert all(rc == 0 for rc, _ in results), results
    one = records(baseline)
    two = records(make_cfg(runs, "hosts2", *SHORT))
    assert [r["step"] for r in one] == [r["step"] for r in two]
    assert all(any(key in a for a in one) for key in ("loss", "heldout_loss"))
    for a, b in zip(one, two):
        assert a.keys() == b.keys(), a["step"]
        for key in ("loss", "heldout_loss"):
            if key in a:
                # float32 reduction order only (measured: 3e-7 relative)
                np.testing.assert_allclose(b[key], a[key], rtol=1e-5, atol=1e-6, err_msg=key)


def test_bench_reports_throughput_and_null_mfu_on_cpu():
    from types import SimpleNamespace

    from climit.imitator import bench

    (rec,) = list(bench.run(["default"], batch=2, steps=1, reduced=True, repeats=1))
    defaults = config_lib.ImitatorConfig()
    assert rec["tokens_per_s"] > 0 and rec["loss_finite"]
    assert rec["seq_len"] == defaults.train_windows * defaults.context_len  # the "default" size
    assert rec["mfu"] is None and rec["cudnn_xla_ratio"] is None and rec["backend"] == "cpu"
    assert rec["attention"] == "xla"  # FLOP counts: known answers in test_imitator_model.py
    assert rec["size"] == "default"  # --reduced leaves the default model as it is: not "-reduced"
    gpu = SimpleNamespace(platform="gpu", device_kind="NVIDIA H100 80GB HBM3")
    assert bench.peak_flops(gpu) == 989e12
    assert bench.peak_flops(SimpleNamespace(platform="gpu", device_kind="NVIDIA H200")) == 989e12
    # the longest name that matches: not "H100" (SXM's 989) for the PCIe card
    pcie = SimpleNamespace(platform="gpu", device_kind="NVIDIA H100 PCIe")
    assert bench.peak_flops(pcie) == 756e12
    assert bench.peak_flops(SimpleNamespace(platform="gpu", device_kind="Mystery GPU")) is None


def test_bench_times_the_compiled_steps_apart_and_counts_every_seeds_tokens(monkeypatch):
    """A scripted clock: the compile takes 4 s; 3 repeats of 2 steps take 2, 3 and 10 s. The
    record: compile_s 4, the median repeat (3 s) for 2 steps of 2 seeds x 2 sequences x 16
    tokens, and MFU = training FLOPs per token (forward + backward) x tokens/s / peak."""
    from climit.imitator import bench

    events, clock = [], iter([100.0, 104.0, 200.0, 202.0, 300.0, 303.0, 400.0, 410.0])
    wait = jax.block_until_ready
    monkeypatch.setattr(bench, "time", types.SimpleNamespace(
        perf_counter=lambda: events.append("clock") or next(clock)))
    monkeypatch.setattr(bench.jax, "block_until_ready", lambda x: events.append("wait") or wait(x))
    models, flops = [], M.flops_per_token
    monkeypatch.setattr(bench.model_lib, "flops_per_token",
                        lambda mcfg, *a, **kw: models.append(mcfg) or flops(mcfg, *a, **kw))
    peak = 1e7
    monkeypatch.setattr(bench, "peak_flops", lambda device: peak)
    icfg = config_lib.ImitatorConfig(d_model=32, n_layers=1, n_heads=4, context_len=8,
                                     train_windows=2, seeds=2, compute_dtype="bfloat16")
    rec = bench.measure(icfg, batch=2, steps=2, repeats=3)
    # The compile timed alone, the warm-up step waited for before the first repeat, and each
    # repeat's clock read once its steps are done on the device, not once they are dispatched.
    assert events == ["clock", "clock", "wait"] + ["clock", "wait", "clock"] * 3
    tokens_per_s = 2 * 2 * 2 * 16 / 3.0
    assert (rec["compile_s"], rec["step_ms"], rec["seq_len"]) == (4.0, 1500.0, 16)
    assert rec["tokens_per_s"] == round(tokens_per_s, 1)
    mcfg = models[0]
    assert (mcfg.d_model, mcfg.compute_dtype) == (32, "bfloat16")
    assert rec["flops_per_token"] == flops(mcfg, 16, training=True)
    assert rec["mfu"] == round(flops(mcfg, 16, training=True) * tokens_per_s / peak, 4)
    assert rec["mfu_full_attention"] == round(
        flops(mcfg, 16, training=True, causal=False) * tokens_per_s / peak, 4)
    assert 0.01 < rec["mfu"] < rec["mfu_full_attention"] < 1  # the peak chosen to make it so


def test_bench_reduced_labels_only_the_sizes_it_shrinks(monkeypatch):
    """--reduced shrinks the documented model ("documented-reduced"); the default model is
    measured as it is, so its record says "default" (only the batch drops to 8)."""
    from types import SimpleNamespace

    from climit.imitator import bench

    def fake_measure(icfg, batch, steps, repeats):
        return {"tokens_per_s": 1.0, "d_model": icfg.d_model, "context_len": icfg.context_len,
                "batch": batch}

    monkeypatch.setattr(bench, "measure", fake_measure)
    # one kernel
    monkeypatch.setattr(bench.jax, "devices", lambda: [SimpleNamespace(platform="cpu")])
    documented, default = bench.run(["documented", "default"], steps=1, repeats=1, reduced=True)
    assert (documented["size"], documented["d_model"], documented["batch"]) == (
        "documented-reduced", 128, 8)
    defaults = config_lib.ImitatorConfig()
    assert (default["size"], default["d_model"], default["context_len"], default["batch"]) == (
        "default", defaults.d_model, defaults.context_len, 8)
    full = list(bench.run(["documented", "default"], steps=1, repeats=1))
    assert [(r["size"], r["d_model"], r["batch"]) for r in full] == [
        ("documented", 512, 16), ("default", defaults.d_model, 64)]


def test_bench_on_gpu_prints_cudnn_first_and_the_ratio_on_the_xla_record(monkeypatch):
    """The cuDNN record leaves before the XLA one is measured (a command cut short keeps it);
    the XLA record carries tokens/s cuDNN / XLA. GPU faked: ``measure`` returns known rates."""
    from types import SimpleNamespace

    from climit.imitator import bench

    rates = {"cudnn": 3000.0, "xla": 1000.0}
    measured = []

    def fake_measure(icfg, batch, steps, repeats):
        measured.append(icfg.attention)
        return {"tokens_per_s": rates[icfg.attention], "attention": icfg.attention}

    gpu = SimpleNamespace(platform="gpu", device_kind="NVIDIA H200")
    monkeypatch.setattr(bench, "measure", fake_measure)
    monkeypatch.setattr(bench.jax, "devices", lambda: [gpu])
    records = bench.run(["documented"], steps=1, repeats=1)
    first = next(records)
    assert measured == ["cudnn"]  # yielded before XLA ran
    assert first["attention"] == "cudnn" and first["cudnn_xla_ratio"] is None
    (second,) = list(records)
    assert second["attention"] == "xla" and second["cudnn_xla_ratio"] == 3.0


def test_bench_run_keeps_the_batch_asked_for_and_the_documented_size(monkeypatch):
    """--reduced lowers only the default batch (to 8): a --batch given is measured as given.
    The documented size is d_model 512, 8 layers, 8 heads, 2048 tokens in one window."""
    from types import SimpleNamespace

    from climit.imitator import bench

    def fake_measure(icfg, batch, steps, repeats):
        return {"tokens_per_s": 1.0, "batch": batch, "steps": steps, "repeats": repeats,
                "size": (icfg.d_model, icfg.n_layers, icfg.n_heads, icfg.context_len,
                         icfg.train_windows, icfg.seeds)}

    monkeypatch.setattr(bench, "measure", fake_measure)
    monkeypatch.setattr(bench.jax, "devices", lambda: [SimpleNamespace(platform="cpu")])
    (rec,) = bench.run(["default"], batch=4, steps=2, repeats=5, reduced=True)
    assert (rec["batch"], rec["steps"], rec["repeats"]) == (4, 2, 5)
    (rec,) = bench.run(["documented"], seeds=3)
    assert rec["size"] == (512, 8, 8, 2048, 1, 3)


def test_bench_mfu_is_null_when_the_step_does_not_run_in_bf16(monkeypatch):
    """The peak is a bf16 one: a float32 step has no MFU even on a chip with a known peak. The
    record says how many imitators the step trained (``seeds``)."""
    from climit.imitator import bench

    metrics = collections.namedtuple("metrics", "loss")  # a pytree with the step's .loss
    monkeypatch.setattr(bench.train_lib, "init_state", lambda mcfg, icfg, key: jnp.zeros(()))
    monkeypatch.setattr(bench.train_lib, "train_step",  # the step itself is not under test
                        lambda mcfg, icfg, key, state, data: (state + 1, metrics(state)))
    monkeypatch.setattr(bench, "peak_flops", lambda device: 1e12)
    icfg = config_lib.ImitatorConfig(d_model=16, n_layers=1, n_heads=2, context_len=8,
                                     train_windows=1, seeds=2, compute_dtype="float32")
    rec = bench.measure(icfg, batch=1, steps=1, repeats=1)
    assert rec["compute_dtype"] == "float32" and rec["seeds"] == 2
    assert rec["mfu"] is None and rec["mfu_full_attention"] is None


def test_peak_flops_takes_the_longest_matching_name_whatever_the_tables_order(monkeypatch):
    # The table lists "H100 PCIe" before "H100" today, so a first match would pass the card
    # test above too; a table with the short name first must still give the PCIe card its own.
    from types import SimpleNamespace

    from climit.imitator import bench

    monkeypatch.setattr(bench, "BF16_PEAK", {"H100": 989e12, "H100 PCIe": 756e12})
    assert bench.peak_flops(SimpleNamespace(platform="gpu", device_kind="NVIDIA H100 PCIe")) \
        == 756e12


def test_timing_counts_the_first_step_as_compilation_and_the_rest_as_run_time(monkeypatch):
    # A resumed segment starts from the saved totals (1 s compiling, 3 steps in 5 s): its first
    # step (begun at 10, waited for until 13) adds 3 s of compilation, its next two steps add
    # 7 s of run time (13 -> 20): 5 steps of 60 tokens in 12 s.
    now, waited = [13.0], []
    monkeypatch.setattr(T.time, "perf_counter", lambda: now[0])
    monkeypatch.setattr(T.jax, "block_until_ready", waited.append)
    t = T.Timing(compile_s=1.0, run_s=5.0, steps=3).after_step(10.0, "first")
    t = t.after_step(13.0, "second").after_step(13.5, "third")
    assert waited == ["first"]
    now[0] = 20.0
    assert t.totals() == {"compile_s": 4.0, "run_s": 12.0, "steps": 5}
    assert t.tokens_per_s(60) == pytest.approx(25.0)
    assert T.Timing().tokens_per_s(60) is None


def test_summary_counts_the_data_and_sizes_of_the_run(baseline):
    # 16 learners of 160 steps, a quarter held out; sequences of 2 windows of 8 steps: each of
    # the 12 training streams holds 160 - 16 + 1 windows and 160 tokens.
    s = json.loads((T.output_dir(baseline) / "summary.json").read_text())
    assert (s["train_streams"], s["heldout_streams"]) == (12, 4)
    assert (s["train_windows"], s["train_tokens"]) == (12 * 145, 12 * 160)
    assert (s["seq_len"], s["context_len"], s["seeds"], s["final_step"]) == (16, 8, 2, 10)
    assert (s["tag"], s["variant"], s["horizon"]) == ("ad", "ad", 0)
    assert s["fingerprint"] == T.fingerprint(baseline) and s["devices"] == jax.device_count()


def test_sparse_records_hold_their_own_steps_metrics_and_the_latest_checkpoints_are_kept(
        runs, baseline):
    """log_every 3 and eval_every 2 change which steps are recorded, not what is trained: a
    record holds its own step's training metrics (not those of the first step since the last
    record), equal to the every-step baseline's; step 1 is recorded too. keep_checkpoints 4
    keeps the latest 4 evaluated steps plus the best (lowest held-out loss)."""
    cfg = make_cfg(runs, "sparse", *SHORT, "imitator.log_every=3", "imitator.eval_every=2",
                   "imitator.keep_checkpoints=4")
    s = T.train(cfg, progress=False)
    got, want = records(cfg), {r["step"]: r for r in records(baseline)}
    assert [r["step"] for r in got] == [1, 2, 3, 4, 6, 8, 9, 10]
    keys = ("loss", "accuracy", "grad_norm", "lr")
    assert [[r[k] for k in keys] for r in got] == [[want[r["step"]][k] for k in keys] for r in got]
    scored = {r["step"]: r["heldout_loss"] for r in got if "heldout_loss" in r}
    assert sorted(scored) == [2, 4, 6, 8, 10]
    assert [scored[i] for i in (4, 8, 10)] == [want[i]["heldout_loss"] for i in (4, 8, 10)]
    best = min(scored, key=scored.get)
    assert s["best_step"] == best
    kept = checkpoint.complete_steps(T.output_dir(cfg) / "checkpoints")
    assert kept == sorted({4, 6, 8, 10, best})


def test_dropout_masks_differ_between_steps_and_between_seeds(runs, baseline):
    # Two seeds with the same weights on the same sequences: their losses differ only through
    # dropout (the held-out evaluation, without dropout, scores them equal), whose keys come
    # from the step and the seed; the same weights at another step draw other masks.
    from climit import parallel

    icfg = baseline.imitator
    history = T.open_histories(T.histories_dir(baseline))
    mcfg = M.model_config(icfg, T.history_spec(history))
    programs = T._programs(mcfg, icfg, parallel.mesh())  # compiled by the baseline run
    state = programs.init(jax.random.key(0))
    twin = lambda tree: jax.tree.map(lambda x: jnp.broadcast_to(x[:1], x.shape), tree)  # noqa: E731
    batch = T._prepare(baseline, history).train_set.windows(np.arange(icfg.batch_size))
    both = jax.tree.map(lambda x: np.stack([x, x]), batch)

    def loss_at(step):
        start = T.TrainState(step=jnp.int32(step), tree=twin(state.tree),
                             opt_state=twin(state.opt_state))
        return np.asarray(programs.step(jax.random.key(1), start, both)[1].loss)

    evaluated, _ = programs.eval(twin(state.tree), batch)
    assert evaluated[0] == evaluated[1]
    at0, at1 = loss_at(0), loss_at(1)
    assert at0[0] != at0[1] and at1[0] != at0[0] and at1[1] != at0[1]


def test_clipping_scales_the_global_norm_before_adam_sees_it():
    """Two updates of max_grad_norm 1: g1 = (6, 8) (norm 10) is clipped to (0.6, 0.8), g2 =
    (-0.3, 0.4) (norm 0.5) passes. Adam's first update is the gradient's sign whatever its
    scale; the second, -lr * m_hat / sqrt(v_hat) with m = 0.09 c1 + 0.1 c2 over 1 - 0.9^2 and
    v = 0.0475 c1^2 + 0.05 c2^2 over 1 - 0.95^2, sees the ratio of the two norms: unclipped, or
    clipped at another norm, or per leaf, the updates differ. 1-D leaves: no weight decay."""
    icfg = config_lib.ImitatorConfig(lr=1e-3, warmup_steps=0, train_steps=1000, weight_decay=0.5,
                                     max_grad_norm=1.0)
    params = {"a": jnp.zeros(1), "b": jnp.zeros(1)}
    opt = T.optimizer(icfg)
    state = opt.init(params)
    _, state = opt.update({"a": jnp.array([6.0]), "b": jnp.array([8.0])}, state, params)
    updates, _ = opt.update({"a": jnp.array([-0.3]), "b": jnp.array([0.4])}, state, params)
    m_hat = {"a": (0.09 * 0.6 - 0.1 * 0.3) / 0.19, "b": (0.09 * 0.8 + 0.1 * 0.4) / 0.19}
    v_hat = {"a": (0.0475 * 0.36 + 0.05 * 0.09) / 0.0975,
             "b": (0.0475 * 0.64 + 0.05 * 0.16) / 0.0975}
    lr1 = float(T.schedule(icfg)(1))
    for name in params:
        np.testing.assert_allclose(updates[name], [-lr1 * m_hat[name] / np.sqrt(v_hat[name])],
                                   rtol=1e-5, err_msg=name)
    assert float(updates["a"][0]) == pytest.approx(-lr1 * 0.268371, rel=1e-5)  # the numbers


def test_accuracy_by_position_averages_the_seeds_in_at_most_eight_bins():
    # Two seeds' accuracies at 3 positions: fewer positions than bins, one bin per position,
    # the mean over the seeds (not the first seed's).
    got = T.accuracy_by_position(np.array([[1.0, 0.0, 0.5], [0.0, 0.0, 1.0]]))
    assert got == {"heldout_accuracy_by_position": [0.5, 0.0, 0.75], "position_bins": [0, 1, 2, 3]}
    # 10 positions in 8 near-equal bins: the first two bins hold two positions each.
    got = T.accuracy_by_position(np.arange(10.0)[None])
    assert got["position_bins"] == [0, 2, 4, 5, 6, 7, 8, 9, 10]
    assert got["heldout_accuracy_by_position"] == [0.5, 2.5, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]


def test_the_train_step_reports_the_smoothed_loss_and_shares_programs_over_data_fields(baseline):
    """Without dropout, a step's metrics per seed are known: the loss is the mean over the
    batch's tokens of the cross-entropy against 0.9 one-hot + 0.1 / 4 (label smoothing 0.1 over
    the 4 valid actions of 5), the accuracy the share of argmax == target, grad_norm the global norm
    of that loss's gradient. The programs shared between configs (:func:`T._programs`) step as
    those built for this very config do: only fields that do not reach them are set aside
    (label_smoothing 0.1, max_grad_norm 0 here, neither at its default)."""
    from climit import parallel

    icfg = dataclasses.replace(baseline.imitator, dropout=0.0, max_grad_norm=0.0)
    history = T.open_histories(T.histories_dir(baseline))
    mcfg = M.model_config(icfg, T.history_spec(history))
    assert mcfg.action_mask == (True, True, True, True, False)
    batch = T._prepare(baseline, history).train_set.windows(np.arange(icfg.batch_size))
    both = jax.tree.map(lambda x: np.stack([x, x]), batch)
    shared = T._programs(mcfg, icfg, parallel.mesh())
    own = T._build_programs.__wrapped__(mcfg, icfg, parallel.mesh())
    runs_of = []
    for programs in (shared, own):
        state = programs.init(jax.random.key(0))
        first = jax.tree.map(np.asarray, state.tree)  # the step donates (deletes) its input
        trace = []
        for _ in range(2):
            state, metrics = programs.step(jax.random.key(1), state, both)
            trace.append(metrics)
        runs_of.append((state, trace))
    jax.tree.map(np.testing.assert_array_equal, runs_of[0], runs_of[1])

    def objective(tree):
        logp = jax.nn.log_softmax(M.forward(M.Params(mcfg, tree), batch.tokens), -1)
        smooth = 0.9 * jax.nn.one_hot(batch.target, 5) + 0.025  # padded action 4: no weight
        return -jnp.sum(smooth[..., :4] * logp[..., :4], -1).mean(), logp

    step1 = runs_of[0][1][0]
    for seed in range(2):
        tree = jax.tree.map(lambda x: x[seed], first)
        (loss, logp), grads = jax.value_and_grad(objective, has_aux=True)(tree)
        np.testing.assert_allclose(step1.loss[seed], loss, rtol=1e-5)
        assert step1.accuracy[seed] == pytest.approx(
            float((np.argmax(logp, -1) == batch.target).mean()), abs=1e-6)
        norm = np.sqrt(sum(float(jnp.sum(g ** 2)) for g in jax.tree.leaves(grads)))
        assert step1.grad_norm[seed] == pytest.approx(norm, rel=1e-4)


def test_logging_and_storage_knobs_do_not_change_an_imitators_identity():
    # A resumed run may change how often it logs, how far it prefetches, its data memory and
    # how many checkpoints it keeps: the same imitator. eval_every chooses the best: another.
    base = T.fingerprint(config_lib.load(None, []))
    for knob in ("log_every=7", "prefetch=0", "data_memory_mb=1", "keep_checkpoints=5"):
        assert T.fingerprint(config_lib.load(None, [f"imitator.{knob}"])) == base, knob
    assert T.fingerprint(config_lib.load(None, ["imitator.eval_every=7"])) != base
