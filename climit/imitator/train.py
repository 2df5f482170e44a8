"""Training the imitator: next-action prediction on learning histories.

``train(cfg)`` reads ``runs/NAME/teacher/histories``, trains ``imitator.seeds`` independent
imitators at once (``vmap`` over a leading seed axis S: one compiled step, one stacked
checkpoint) and writes ``runs/NAME/imitator/<tag>/``::

    checkpoints/    orbax steps (latest ``keep_checkpoints`` + the best by held-out loss)
    metrics.jsonl   train loss/accuracy every ``log_every`` steps, held-out ones every
                    ``eval_every``
    summary.json    heldout_loss, heldout_action_accuracy, heldout_accuracy_by_position,
                    heldout ('tasks' or 'learners': what the held-out set is), tokens_per_s,
                    params, attention (the kernel that ran), ... (final)
    config.yaml     the resolved config

``<tag>`` names the dataset variant (:func:`tag`: ``ad``, ``ed``, ``shuffled``,
``single_episode``, with ``_h<H>`` appended when ``imitator.horizon`` is set), so one run
directory holds the AD imitator, its controls and the horizon-test imitator side by side.
``runs/NAME/imitator/summary.json`` indexes the summaries of every tag trained so far.

The loop is a jitted train step inside a Python loop (tqdm progress bar). Each step's global
batch is a pure function of (seed, step) (:mod:`climit.imitator.data`), dropout keys are
derived from the step, so a run killed anywhere and restarted resumes from its latest
checkpoint and ends bit-identical (on CPU) to an uninterrupted one. Each checkpoint also holds
its step's per-seed held-out evaluation and the run's timing totals, so the summary of a
resumed run (even one killed after its last checkpoint) reports the same fields, throughput
over the whole run included.

Data parallel: the batch axis is sharded over a 1-D mesh of every device of every process
(:mod:`climit.parallel`), parameters and optimizer state are replicated; the global batch does
not depend on the device count, so 1 and 8 devices give the same loss curve up to float
reduction order.

Optimizer: AdamW (weight decay on matrices only), linear warmup then cosine decay to 10% of
``imitator.lr``, global-norm gradient clipping; dropout and label smoothing optional.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from jax.sharding import NamedSharding, PartitionSpec

from climit import checkpoint, histories, jsonfile, keys, parallel, stopping
from climit import config as config_lib
from climit.errors import ArtifactError, ClimitError, TrainingDiverged
from climit.imitator import data as data_lib
from climit.imitator import model as model_lib
from climit.metrics import MetricsLogger

# Config fields that do not change what is trained or evaluated (a resumed run may change them).
# Not eval_every: it sets the steps scored and checkpointed, among which the best (the one
# evaluated) is chosen, so an imitator trained with another eval_every is another result.
_NEUTRAL_FIELDS = ("log_every", "prefetch", "data_memory_mb", "keep_checkpoints")


class TrainState(struct.PyTreeNode):
    """Everything a resumed run needs: leaves of ``tree``/``opt_state`` lead with S seeds."""

    step: jax.Array  # int32 []
    tree: dict  # Params.tree, stacked [S, ...]
    opt_state: Any


class StepMetrics(NamedTuple):
    loss: jax.Array  # [S] training objective (with label smoothing)
    accuracy: jax.Array  # [S]
    grad_norm: jax.Array  # [S]
    lr: jax.Array  # [S] learning rate used by this step


# ---------------------------------------------------------------------------------------------
# Paths and identities
# ---------------------------------------------------------------------------------------------

def tag(icfg: config_lib.ImitatorConfig) -> str:
    """Directory name of an imitator variant: 'ad', 'ed', ..., plus '_h<H>' with a horizon."""
    return icfg.variant + (f"_h{icfg.horizon}" if icfg.horizon else "")


def output_dir(cfg: config_lib.ExperimentConfig) -> Path:
    return Path(cfg.run.runs_dir) / cfg.run.name / "imitator" / tag(cfg.imitator)


def histories_dir(cfg: config_lib.ExperimentConfig) -> Path:
    return Path(cfg.run.runs_dir) / cfg.run.name / "teacher" / "histories"


def fingerprint(cfg: config_lib.ExperimentConfig) -> str:
    """What determines a trained imitator: its section (minus logging knobs), the env and the
    teacher's sections that shape the histories, and the root seed. ``env.transfer`` is not
    part of it: only the evaluation's test (c) uses it, so trying another transfer family
    evaluates again without training the imitators again."""
    return _fingerprint(cfg, dataclasses.replace(cfg.env, transfer=""))


def fingerprint_matches(saved: str | None, cfg: config_lib.ExperimentConfig) -> bool:
    """``saved`` (a summary's or checkpoint's fingerprint) is ``cfg``'s imitator: by
    :func:`fingerprint`, or by the one imitators saved before 2026-11-27, which also covered
    ``env.transfer`` (so their runs still match the config that made them)."""
    return saved is not None and saved in (fingerprint(cfg), _fingerprint(cfg, cfg.env))


def identity(icfg: config_lib.ImitatorConfig) -> config_lib.ImitatorConfig:
    """The imitator section as fingerprints compare it: the neutral fields at their defaults."""
    defaults = config_lib.ImitatorConfig()
    return dataclasses.replace(icfg, **{f: getattr(defaults, f) for f in _NEUTRAL_FIELDS})


def _fingerprint(cfg: config_lib.ExperimentConfig, env: config_lib.EnvConfig) -> str:
    return config_lib.fingerprint(identity(cfg.imitator), env,
                                  config_lib.teacher_identity(cfg.teacher),
                                  cfg.histories, cfg.run.seed, model_lib.REVISION)


@dataclasses.dataclass(frozen=True)
class _HistorySpec:
    """The interface an imitator is built for, as recorded in the history."""

    obs_shape: tuple[int, ...]
    obs_dtype: str
    num_actions: int
    action_mask: tuple[bool, ...]


def history_spec(history: Any) -> _HistorySpec:
    env = history.env
    return _HistorySpec(tuple(env["obs_shape"]), env["obs_dtype"], int(env["num_actions"]),
                        tuple(bool(m) for m in env["action_mask"]))


def open_histories(path: Path) -> Any:
    """The teacher's histories, or a ClimitError/ArtifactError naming what is missing."""
    h = histories.open(path)
    if h.num_steps == 0:
        raise ClimitError(f"the learning history at {path} is empty; run `climit teach` to the end")
    if not h.complete:
        raise ClimitError(f"the learning history at {path} is incomplete ({h.num_steps} of "
                          f"{h.meta.get('total_steps')} steps); finish `climit teach` first")
    return h


def _check_history_config(cfg: config_lib.ExperimentConfig, history: Any) -> None:
    """Refuse histories written by a teacher of another config: the imitator's fingerprint,
    checkpoints and summary would name ``cfg``'s environment and teacher, and the evaluation
    would take it for theirs. Histories that record no whole config (synthetic ones, written
    by :mod:`climit.imitator.synthetic`, not by `climit teach`) are not checked."""
    from climit.teacher import train as teacher_train

    if "run" not in history.config:
        return
    diffs = teacher_train.history_config_diff(cfg, history.config)
    if diffs:
        raise ClimitError(f"the learning history at {history.path} was written by a teacher with "
                          f"another config ({'; '.join(diffs[:4])}); train the imitator with the "
                          "teacher's config, or run `climit teach` (or `climit run`) with this "
                          f"one under another run.name")


# ---------------------------------------------------------------------------------------------
# Pure pieces: optimizer, loss, steps
# ---------------------------------------------------------------------------------------------

def schedule(icfg: config_lib.ImitatorConfig) -> optax.Schedule:
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=icfg.lr, warmup_steps=icfg.warmup_steps,
        decay_steps=icfg.train_steps, end_value=0.1 * icfg.lr)


def optimizer(icfg: config_lib.ImitatorConfig) -> optax.GradientTransformation:
    decay_mask = lambda tree: jax.tree.map(lambda x: x.ndim >= 2, tree)  # noqa: E731
    adamw = optax.adamw(schedule(icfg), b1=0.9, b2=0.95, weight_decay=icfg.weight_decay,
                        mask=decay_mask)
    if icfg.max_grad_norm > 0:
        return optax.chain(optax.clip_by_global_norm(icfg.max_grad_norm), adamw)
    return adamw


def action_loss(mcfg: model_lib.ModelConfig, logits_xA: jax.Array, target_x: jax.Array,
                label_smoothing: float = 0.0) -> tuple[jax.Array, jax.Array]:
    """Per-token (loss, correct): cross-entropy against targets smoothed over VALID actions
    only (padded actions keep probability 0), and argmax == target."""
    valid_A = jnp.asarray(mcfg.action_mask)
    logp = jax.nn.log_softmax(logits_xA, -1)
    onehot = jax.nn.one_hot(target_x, mcfg.num_actions)
    smooth = (1.0 - label_smoothing) * onehot + label_smoothing * valid_A / valid_A.sum()
    loss = -jnp.sum(jnp.where(valid_A, smooth * logp, 0.0), -1)
    return loss, jnp.argmax(logits_xA, -1) == target_x


def init_state(mcfg: model_lib.ModelConfig, icfg: config_lib.ImitatorConfig,
               key: jax.Array) -> TrainState:
    """S = ``icfg.seeds`` independent initialisations, stacked."""
    keys_S = jax.random.split(key, icfg.seeds)
    tree = jax.vmap(lambda k: model_lib.init(mcfg, k).tree)(keys_S)
    opt_state = jax.vmap(optimizer(icfg).init)(tree)
    return TrainState(step=jnp.zeros((), jnp.int32), tree=tree, opt_state=opt_state)


def train_step(mcfg: model_lib.ModelConfig, icfg: config_lib.ImitatorConfig, key: jax.Array,
               state: TrainState, batch: data_lib.Batch) -> tuple[TrainState, StepMetrics]:
    """One optimizer step of every seed. ``batch`` leaves are [S, B, T, ...]."""
    opt = optimizer(icfg)
    step_key = jax.random.fold_in(key, state.step)

    def one_seed(tree, opt_state, batch, seed_index):
        dropout_key = jax.random.fold_in(step_key, seed_index) if mcfg.dropout > 0 else None

        def objective(tree):
            logits = model_lib.forward(model_lib.Params(mcfg, tree), batch.tokens,
                                       dropout_key=dropout_key)
            loss, correct = action_loss(mcfg, logits, batch.target, icfg.label_smoothing)
            return loss.mean(), correct.mean()

        (loss, acc), grads = jax.value_and_grad(objective, has_aux=True)(tree)
        updates, opt_state = opt.update(grads, opt_state, tree)
        return optax.apply_updates(tree, updates), opt_state, StepMetrics(
            loss, acc, optax.tree.norm(grads), schedule(icfg)(state.step))

    seeds = jnp.arange(icfg.seeds)
    tree, opt_state, metrics = jax.vmap(one_seed)(state.tree, state.opt_state, batch, seeds)
    return TrainState(step=state.step + 1, tree=tree, opt_state=opt_state), metrics


def eval_sums(mcfg: model_lib.ModelConfig, tree: dict,
              batch: data_lib.Batch) -> tuple[jax.Array, jax.Array]:
    """Summed plain cross-entropy per seed [S] and correct predictions per seed and sequence
    position [S, T] (summed over the batch); ``batch`` leaves are [B, T, ...] shared by every
    seed."""
    def one_seed(tree):
        logits = model_lib.forward(model_lib.Params(mcfg, tree), batch.tokens)
        loss, correct = action_loss(mcfg, logits, batch.target)
        return loss.sum(), correct.sum(0, dtype=jnp.int32)

    return jax.vmap(one_seed)(tree)


# ---------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------

class _Setup(NamedTuple):
    mcfg: model_lib.ModelConfig
    train_set: data_lib.WindowDataset
    heldout_set: data_lib.WindowDataset
    train_streams: list[int]
    heldout_streams: list[int]


def _prepare(cfg: config_lib.ExperimentConfig, history: Any) -> _Setup:
    icfg = cfg.imitator
    mcfg = model_lib.model_config(icfg, history_spec(history))
    spec = data_lib.DatasetSpec.from_config(icfg, cfg.run.seed)
    train_streams, heldout_streams = data_lib.split_streams(history, icfg.heldout_fraction,
                                                            cfg.run.seed)
    budget = icfg.data_memory_mb * 2**20
    return _Setup(mcfg, data_lib.WindowDataset(history, train_streams, spec, max_bytes=budget),
                  data_lib.WindowDataset(history, heldout_streams, spec, max_bytes=budget),
                  train_streams, heldout_streams)


def _checkpoint_config(cfg: config_lib.ExperimentConfig, mcfg: model_lib.ModelConfig) -> dict:
    """The resolved config plus the imitator's network description and fingerprint."""
    return {**config_lib.to_dict(cfg), "imitator_model": dataclasses.asdict(mcfg),
            "imitator_model_revision": model_lib.REVISION, "imitator_fingerprint": fingerprint(cfg)}


def _all_finite(tree: Any) -> jax.Array:
    """bool []: every entry of every leaf of ``tree`` (any shapes, e.g. stacked [S, ...]
    parameters) is finite."""
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


class _Programs(NamedTuple):
    init: Callable  # key -> TrainState
    step: Callable  # (key, state, batch [S, B, T]) -> (state, StepMetrics)
    eval: Callable  # (tree, batch [B, T]) -> (loss sums [S], correct sums per position [S, T])
    finite: Callable  # tree -> bool []


# Fields that only change the data or the bookkeeping, not the compiled programs.
_DATA_FIELDS = ("variant", "subsample", "ed_fraction", "horizon", "heldout_fraction", "log_every",
                "eval_every", "eval_batches", "keep_checkpoints", "prefetch", "data_memory_mb")


def _programs(mcfg: model_lib.ModelConfig, icfg: config_lib.ImitatorConfig,
              mesh: jax.sharding.Mesh) -> _Programs:
    """The jitted functions of one configuration, built once per process: repeated, resumed or
    variant ``train`` calls in one process reuse their compilations."""
    defaults = config_lib.ImitatorConfig()
    return _build_programs(mcfg, dataclasses.replace(
        icfg, **{f: getattr(defaults, f) for f in _DATA_FIELDS}), mesh)


@functools.lru_cache(maxsize=8)
def _build_programs(mcfg: model_lib.ModelConfig, icfg: config_lib.ImitatorConfig,
                    mesh: jax.sharding.Mesh) -> _Programs:
    replicated = parallel.replicated(mesh)
    return _Programs(
        init=jax.jit(functools.partial(init_state, mcfg, icfg), out_shardings=replicated),
        step=jax.jit(functools.partial(train_step, mcfg, icfg), donate_argnums=1,
                     out_shardings=replicated),
        eval=jax.jit(functools.partial(eval_sums, mcfg), out_shardings=replicated),
        finite=jax.jit(_all_finite))


def _kept(ckpt: checkpoint.Checkpointer) -> str:
    last = ckpt.latest_step()
    return (f"the last good checkpoint (step {last}) is kept" if last is not None
            else "no checkpoint had been saved yet")


def _check_train_finite(finite: bool, step: int, ckpt: checkpoint.Checkpointer) -> None:
    """Raise TrainingDiverged unless the training loss and the weights stayed finite."""
    if finite:
        return
    raise TrainingDiverged(f"imitator loss or weights became NaN/Inf by step {step}; "
                           f"{_kept(ckpt)}. Lower imitator.lr, keep imitator.max_grad_norm > 0, "
                           f"or check the history")


def _check_heldout_finite(finite: bool, step: int, ckpt: checkpoint.Checkpointer) -> None:
    """Raise TrainingDiverged unless the held-out evaluation was finite. It is checked after the
    training loss and weights were found finite, so the optimizer is not the suspect."""
    if finite:
        return
    raise TrainingDiverged(
        f"the held-out evaluation at step {step} produced NaN/Inf while the training loss and "
        f"the weights are finite; {_kept(ckpt)}. Suspect the held-out data (NaN/Inf observations "
        f"or rewards in the history's held-out streams) or the model's numerics on it (e.g. "
        f"overflow in imitator.compute_dtype), not the learning rate")


@dataclasses.dataclass(frozen=True)
class Timing:
    """Throughput totals of a run, summed over its segments: a resumed run starts from the
    totals saved with its checkpoint (``timing_*`` metrics), so its summary reports the whole
    run, as an uninterrupted one does.

    Each segment's first step compiles: its time counts in ``compile_s``, not in ``run_s``.
    """

    compile_s: float = 0.0
    run_s: float = 0.0  # wall time of the other steps, data, evaluation and checkpoints included
    steps: int = 0  # those other steps
    t0: float | None = None  # perf_counter at the end of this segment's first step

    def after_step(self, started: float, metrics: Any) -> Timing:
        """The totals after one more step, begun at ``started`` (perf_counter). The segment's
        first step is waited for: until it returns, the time is compilation."""
        if self.t0 is not None:
            return dataclasses.replace(self, steps=self.steps + 1)
        jax.block_until_ready(metrics)
        now = time.perf_counter()
        return dataclasses.replace(self, compile_s=self.compile_s + now - started, t0=now)

    def totals(self) -> dict:
        """compile_s, run_s (this segment's time so far included) and steps, as JSON numbers."""
        run_s = self.run_s + (time.perf_counter() - self.t0 if self.t0 is not None else 0.0)
        return {"compile_s": self.compile_s, "run_s": run_s, "steps": self.steps}

    def tokens_per_s(self, tokens_per_step: int) -> float | None:
        """End-to-end training tokens/s over the timed steps (None before any)."""
        t = self.totals()
        return t["steps"] * tokens_per_step / t["run_s"] if t["steps"] and t["run_s"] > 0 else None


_TIMING_PREFIX = "timing_"  # checkpoint metrics that carry the Timing totals


class _Resumed(NamedTuple):
    """Where a ``train`` call starts."""

    start: int  # steps already done (0: a fresh run)
    state: TrainState
    timing: Timing  # totals of the earlier segments
    evaluation: dict  # the held-out evaluation at ``start`` ({} if none was saved)


def _identity(cfg_dict: dict) -> dict:
    """What :func:`fingerprint` covers, from a config dict (a checkpoint's, or the current
    one's), as :func:`config_lib.config_diff` compares it: the keys a refusal may name."""
    imitator = {k: v for k, v in cfg_dict.get("imitator", {}).items() if k not in _NEUTRAL_FIELDS}
    env = {k: v for k, v in cfg_dict.get("env", {}).items() if k != "transfer"}
    # As the fingerprint: a field added since, at the default it came with, is no difference.
    raw = {"imitator": config_lib.section_identity(config_lib.ImitatorConfig, imitator),
           "env": config_lib.section_identity(config_lib.EnvConfig, env),
           "teacher": config_lib.teacher_identity(cfg_dict.get("teacher", {})),
           "histories": config_lib.section_identity(config_lib.HistoriesConfig,
                                                    cfg_dict.get("histories", {})),
           "run.seed": cfg_dict.get("run", {}).get("seed"),
           "imitator_model_revision": cfg_dict.get("imitator_model_revision")}
    return json.loads(json.dumps(raw))  # as JSON stored it: lists, string keys


def _differences(saved: dict, cfg: config_lib.ExperimentConfig) -> str:
    """The first differences between a checkpoint's config and ``cfg`` (``imitator.lr: 0.001 ->
    0.0005; ...``), for the refusal to resume another imitator."""
    now = {**config_lib.to_dict(cfg), "imitator_model_revision": model_lib.REVISION}
    diffs = config_lib.config_diff(_identity(saved), _identity(now))
    more = [f"and {len(diffs) - 4} more"] if len(diffs) > 4 else []
    # No setting differs when the fingerprint itself was computed differently (older climit).
    return "; ".join(diffs[:4] + more) or "no setting differs: an older climit saved it"


def _restore_step(cfg: config_lib.ExperimentConfig, ckpt: checkpoint.Checkpointer, step: int,
                  target: TrainState) -> _Resumed:
    """The state saved at ``step`` (``target``: its shapes and shardings), with the timing
    totals and the held-out evaluation saved beside it.

    Raises:
        ClimitError: the step was saved by another imitator config. ArtifactError: the step is
            damaged.
    """
    meta = ckpt.metadata(step)
    if not fingerprint_matches(meta["config"].get("imitator_fingerprint"), cfg):
        raise ClimitError(f"{ckpt.directory.parent} holds an imitator trained with a different "
                          f"config ({_differences(meta['config'], cfg)}); remove it or choose "
                          f"another run.name")
    state = ckpt.restore(step, target=target)
    metrics = meta["metrics"]
    timing = Timing(**{k[len(_TIMING_PREFIX):]: v for k, v in metrics.items()
                       if k.startswith(_TIMING_PREFIX)})
    saved = set(_EVALUATION) <= set(metrics)  # older checkpoints kept the means only
    evaluation = {k: metrics[k] for k in _EVALUATION} if saved else {}
    return _Resumed(step, state, timing, evaluation)


def _restore_or_init(cfg: config_lib.ExperimentConfig, ckpt: checkpoint.Checkpointer,
                     programs: _Programs, init_key: jax.Array, replicated: NamedSharding,
                     log: Callable[[str], None]) -> _Resumed:
    """The newest checkpoint of this same imitator that restores, or a fresh init.

    A damaged checkpoint (a truncated file, a flipped byte) is skipped with a logged warning
    and the one before it is restored, as the teacher does: the run redoes the steps after it,
    bit-identically (batches and dropout keys are functions of the step), its metrics cut back
    to it as on any resume, and saves the damaged step again when it gets there. The damaged
    steps are moved to ``damaged_checkpoints/`` beside ``checkpoints/`` (kept for a look), so
    that no later resume tries them first.

    Raises:
        ClimitError: the checkpoints are another config's. ArtifactError: every one is damaged.
    """
    target = jax.eval_shape(programs.init, init_key)
    _check_state_memory(cfg, target)
    newest = ckpt.restore_newest(lambda step: _restore_step(cfg, ckpt, step, target), log,
                                 "imitator")
    if newest is None:
        return _Resumed(0, programs.init(init_key), Timing(), {})
    resumed = newest[1]
    return resumed._replace(state=jax.device_put(resumed.state, replicated))


def _check_state_memory(cfg: config_lib.ExperimentConfig, target: TrainState) -> None:
    """Raise ClimitError when the imitators' weights and optimizer state alone (``target``,
    shapes only) exceed a device's memory: a lower bound, checked before they are allocated
    (on a CPU an allocation that large meets the kernel's OOM killer, with no message). The
    train step's whole need is checked once it is compiled (:func:`_check_step_memory`)."""
    limit, where = parallel.device_memory()
    need = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(target))  # replicated
    if limit is None or need <= limit:
        return
    icfg = cfg.imitator
    raise ClimitError(
        f"the imitators' weights and optimizer state take {need / 2**30:.1f} GiB per device "
        f"(imitator.seeds={icfg.seeds} models of d_model {icfg.d_model}, {icfg.n_layers} "
        f"layers), more than the {limit / 2**30:.1f} GiB of {where}; lower imitator.seeds or "
        f"the model's size")


def _move_aside(ckpt: checkpoint.Checkpointer, steps: list[int], into: str) -> Path:
    """Move checkpoint ``steps`` out of the checkpoint directory into the directory ``into``
    beside it (process 0): kept for a look, but no longer steps a resume or a load picks."""
    aside = ckpt.directory.parent / into
    if steps:
        ckpt.set_aside(steps, aside)
    return aside


def _redo_from_best(ckpt: checkpoint.Checkpointer, best_step: int,
                    log: Callable[[str], None]) -> None:
    """Make the run recreate its missing or damaged best checkpoint ``best_step``: every step
    from it on is moved aside (the best, there but damaged, into ``damaged_checkpoints/``, the
    later intact ones into ``superseded_checkpoints/``), so that training resumes from an
    earlier checkpoint (or the start) and passes through ``best_step`` again. Resuming from a
    later one would end with another step as the best: the results would change."""
    later = [s for s in ckpt.steps() if s > best_step]
    _move_aside(ckpt, [s for s in ckpt.steps() if s == best_step], checkpoint.DAMAGED_DIR)
    aside = _move_aside(ckpt, later, "superseded_checkpoints")
    parallel.barrier("imitator checkpoints set aside")  # no process may restore a moved step
    if later:
        log(f"imitator: warning: the checkpoints after the best one (steps {later}) are moved to "
            f"{aside}; the run redoes those steps")


def _to_global(sharding: NamedSharding, axis: int, batch_size: int,
               batch: data_lib.Batch) -> data_lib.Batch:
    """This process's rows of a batch (batch axis ``axis`` of every leaf) -> the global batch of
    ``batch_size`` rows on ``sharding``."""
    if jax.process_count() == 1:  # every row is local: one transfer call for the whole tree
        return jax.device_put(batch, sharding)
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(
        sharding, x, x.shape[:axis] + (batch_size,) + x.shape[axis + 1:]), batch)


def _evaluate(programs: _Programs, heldout: list[data_lib.Batch],
              to_global: Callable[[data_lib.Batch], data_lib.Batch], batch_size: int,
              seq_len: int, tree: dict) -> dict:
    """Held-out loss and accuracy of every seed of ``tree`` (stacked [S, ...]) on the fixed
    held-out batches [B_local, T]: ``heldout_loss_per_seed`` and ``heldout_accuracy_per_seed``
    (lists [S]) and the accuracy-by-position profile."""
    loss = correct_SxT = 0.0
    for b in heldout:
        s_loss, s_correct = programs.eval(tree, to_global(b))
        loss, correct_SxT = loss + np.asarray(s_loss), correct_SxT + np.asarray(s_correct)
    sequences = len(heldout) * batch_size
    tokens = sequences * seq_len
    return {"heldout_loss_per_seed": (loss / tokens).tolist(),
            "heldout_accuracy_per_seed": (correct_SxT.sum(-1) / tokens).tolist(),
            **accuracy_by_position(correct_SxT / sequences)}


class _Loop(NamedTuple):
    """What the step loop of one ``train`` call uses besides the state it advances."""

    cfg: config_lib.ExperimentConfig
    mcfg: model_lib.ModelConfig
    programs: _Programs
    step_key: jax.Array
    batches: Iterator[data_lib.Batch]  # global training batches [S, B, T] of the steps to run
    evaluate: Callable[[dict], dict]  # stacked tree -> held-out evaluation (:func:`_evaluate`)
    ckpt: checkpoint.Checkpointer
    logger: MetricsLogger | None  # None but on process 0
    bar: Any  # tqdm progress bar
    tokens_per_step: int  # S * B * T


def _is_eval_step(icfg: config_lib.ImitatorConfig, step: int) -> bool:
    return step % icfg.eval_every == 0 or step == icfg.train_steps


def _run_steps(loop: _Loop, resumed: _Resumed,
               interrupt_after: int | None) -> tuple[TrainState, Timing, dict]:
    """Steps ``resumed.start + 1 .. train_steps``, each logged, evaluated and checkpointed on
    its schedule (:func:`_record`). Returns the final state, the timing totals and the latest
    held-out evaluation (the resumed one when no step is left).

    Raises:
        stopping.Stopped: a stop was requested (SIGTERM, SIGUSR1, time limit); raised at the
            first checkpoint step after the request, once its checkpoint is saved.
    """
    icfg = loop.cfg.imitator
    state, timing, evaluation = resumed.state, resumed.timing, resumed.evaluation
    pending: list[StepMetrics] = []  # the steps since the last record
    for step in range(resumed.start + 1, icfg.train_steps + 1):
        batch = next(loop.batches)
        started = time.perf_counter()
        state, metrics = loop.programs.step(loop.step_key, state, batch)
        pending.append(metrics)
        timing = timing.after_step(started, metrics)
        if step % icfg.log_every == 0 or step == 1 or _is_eval_step(icfg, step):
            evaluation = _record(loop, step, state, pending, timing) or evaluation  # {}: none
            pending = []
        loop.bar.update(1)
        # Only on a checkpoint step: one off the schedule could change which one is best.
        if _is_eval_step(icfg, step) and step < icfg.train_steps:
            stopping.stop_here(f"imitator {tag(icfg)} at step {step} of {icfg.train_steps}, its "
                               f"checkpoint saved")
        if interrupt_after is not None and step >= interrupt_after:
            raise KeyboardInterrupt
    return state, timing, evaluation


def _record(loop: _Loop, step: int, state: TrainState, pending: list[StepMetrics],
            timing: Timing) -> dict:
    """Check and log the metrics record of ``step`` (training metrics of ``pending``, the steps
    since the last record); on an evaluation step, evaluate on held-out data and checkpoint.

    Returns:
        the step's held-out evaluation ({} on a step without one).

    Raises:
        TrainingDiverged: non-finite training loss, weights or held-out loss (checked before
            anything reaches a checkpoint).
    """
    _check_train_finite(all(np.all(np.isfinite(np.asarray(m.loss))) for m in pending), step,
                        loop.ckpt)
    rec = _train_record(step, pending, loop.tokens_per_step, timing)
    checkpoint_step = _is_eval_step(loop.cfg.imitator, step)
    evaluation = _evaluate_finite(loop, step, state) if checkpoint_step else {}
    if evaluation:
        rec.update({**_means(evaluation), **{k: evaluation[k] for k in _PROFILE}})
    if loop.logger is not None:
        loop.logger.log(rec)
    # Saved after its record is logged: a kill between the two resumes from the checkpoint
    # before, which drops this record and logs it again (saved first, the record was lost).
    if checkpoint_step:
        metrics = {**_means(evaluation), **{k: evaluation[k] for k in _EVALUATION},
                   **{_TIMING_PREFIX + k: v for k, v in timing.totals().items()}}
        loop.ckpt.save(step, state, config=_checkpoint_config(loop.cfg, loop.mcfg), metrics=metrics)
    loop.bar.set_postfix(loss=f"{rec['loss']:.3f}", acc=f"{rec['accuracy']:.2f}")
    return evaluation


def _evaluate_finite(loop: _Loop, step: int, state: TrainState) -> dict:
    """The held-out evaluation of ``state``, once both the weights and the evaluation are found
    finite (checked before anything reaches a checkpoint)."""
    _check_train_finite(bool(loop.programs.finite(state.tree)), step, loop.ckpt)
    evaluation = loop.evaluate(state.tree)
    _check_heldout_finite(bool(np.all(np.isfinite(evaluation["heldout_loss_per_seed"]))), step,
                          loop.ckpt)
    return evaluation


def _checkpoint_problem(ckpt_dir: Path, step: int, what: str) -> str | None:
    """Why the ``what`` ('best', 'final') checkpoint at ``step`` cannot be used: missing, or
    failing its checksums; None when it verifies."""
    if step not in checkpoint.complete_steps(ckpt_dir):
        return f"the imitator's {what} checkpoint (step {step}) is missing from {ckpt_dir}"
    step_dir = ckpt_dir / str(step)
    files = tuple(sorted((str(f), f.stat().st_size, f.stat().st_mtime_ns)
                         for f in step_dir.rglob("*") if f.is_file()))
    damage = _damage(str(step_dir), files)
    return (None if damage is None
            else f"the imitator's {what} checkpoint (step {step}) is damaged ({damage})")


@functools.lru_cache(maxsize=64)
def _damage(step_dir: str, files: tuple) -> str | None:
    """verify_step's complaint about a step directory, or None. Remembered while no file in it
    changes (``files``: every path with its size and modification time), so `climit run` reads
    a large checkpoint's files once, not at every status check."""
    try:
        checkpoint.verify_step(step_dir)
    except ArtifactError as e:
        return str(e)
    return None


def _summary_problems(ckpt_dir: Path, summary: dict) -> dict[str, str]:
    """{'best' | 'final': why that checkpoint, named by ``summary`` (``best_step``,
    ``final_step``), cannot be used}, for those that cannot; {} when every one verifies (or
    the summary names none). One step that is both says so once, under both keys."""
    named = {what: summary.get(f"{what}_step") for what in ("best", "final")}
    steps = {step: " and ".join(w for w, s in named.items() if s == step)
             for step in named.values() if step is not None}  # {10: 'best and final'}
    found = {step: _checkpoint_problem(ckpt_dir, step, whats) for step, whats in steps.items()}
    return {what: found[step] for what, step in named.items()
            if step is not None and found[step] is not None}


def finished(cfg: config_lib.ExperimentConfig) -> bool:
    """Whether ``cfg``'s imitator is trained: its summary.json carries ``cfg``'s fingerprint and
    the best and final checkpoints it names are on disk and pass their checksums (a summary
    that names none is judged by its fingerprint alone). ``train`` returns such an imitator's
    summary at once, and ``climit run`` skips it; an imitator whose summary matches but whose
    best checkpoint is lost is trained again, which recreates that checkpoint (bit-identically
    on CPU) instead of letting the evaluation load another."""
    out = output_dir(cfg)
    summary = jsonfile.read_or_empty(out / "summary.json")
    return (fingerprint_matches(summary.get("fingerprint"), cfg)
            and not _summary_problems(out / "checkpoints", summary))


def train(cfg: config_lib.ExperimentConfig, *, progress: bool = True,
          interrupt_after: int | None = None, log: Callable[[str], None] = print) -> dict:
    """Train (or resume, or return the summary of an already :func:`finished`) imitator for
    ``cfg``.

    Resumes from the newest checkpoint that restores (a damaged one is skipped with a logged
    warning). An imitator whose summary matches but whose best or final checkpoint is missing
    or damaged is not finished: it is trained again from an earlier checkpoint, to the same
    result.

    ``interrupt_after``: test hook; raise KeyboardInterrupt once that many steps are done
    (simulates a kill between checkpoints, or, at ``train_steps``, between the last
    checkpoint and the summary).

    Returns:
        the summary dict (also written to ``summary.json``).

    Raises:
        ArtifactError / ClimitError: missing, incomplete or unreadable histories; a previous,
            different imitator in the same directory; every checkpoint damaged; a full disk
            (rerunning after freeing space resumes). TrainingDiverged: NaN/Inf training loss
            or weights, or a NaN/Inf held-out evaluation.
    """
    parallel.initialize()  # multi-host start-up when the environment asks for it (no-op otherwise)
    log = log if jax.process_index() == 0 else (lambda msg: None)
    out = output_dir(cfg)
    history = open_histories(histories_dir(cfg))
    _check_history_config(cfg, history)
    # a damaged summary counts as unfinished: resume
    done = jsonfile.read_or_empty(out / "summary.json")
    matches = fingerprint_matches(done.get("fingerprint"), cfg)
    problems = _summary_problems(out / "checkpoints", done) if matches else {}
    if matches and not problems:
        return done
    if problems:
        log(f"imitator: warning: {'; '.join(dict.fromkeys(problems.values()))}; training it "
            f"again to recreate it (same config, same result)")
    setup = _prepare(cfg, history)
    # Before the checkpoint directory opens (orbax starts background work there that an exit
    # right after would interrupt with a traceback of its own).
    data_lib.require_windows(setup.train_set, "training")
    data_lib.require_windows(setup.heldout_set, "held-out")
    ckpt_dir = out / "checkpoints"
    with checkpoint.full_disk_is_a_clear_error(out, ckpt_dir, "the imitator"), \
            checkpoint.Checkpointer(ckpt_dir, keep=cfg.imitator.keep_checkpoints,
                                    best="heldout_loss") as ckpt:
        if "best" in problems:
            _redo_from_best(ckpt, done["best_step"], log)
        return _train_on_disk(cfg, setup, ckpt, progress, interrupt_after, log)


def _train_on_disk(cfg: config_lib.ExperimentConfig, setup: _Setup, ckpt: checkpoint.Checkpointer,
                   progress: bool, interrupt_after: int | None,
                   log: Callable[[str], None]) -> dict:
    """:func:`train` once its checkpoint directory is open: resume or init, run the remaining
    steps, write the summary (process 0). Returns the summary."""
    icfg = cfg.imitator
    out = output_dir(cfg)
    mesh = parallel.mesh()
    parallel.check_divisible(icfg.batch_size, "imitator.batch_size")
    rows = data_lib.local_rows(icfg.batch_size, jax.process_index(), jax.process_count())
    loader = data_lib.Loader(setup.train_set, icfg.batch_size, icfg.seeds, cfg.run.seed,
                             jax.process_index(), jax.process_count())
    heldout = data_lib.heldout_batches(setup.heldout_set, icfg.eval_batches, icfg.batch_size,
                                       cfg.run.seed, rows)
    seq_len = setup.train_set.spec.seq_len
    train_to_global = functools.partial(  # [S, B, T]
        _to_global, NamedSharding(mesh, PartitionSpec(None, parallel.AXIS)), 1, icfg.batch_size)
    heldout_to_global = functools.partial(  # [B, T]
        _to_global, NamedSharding(mesh, PartitionSpec(parallel.AXIS)), 0, icfg.batch_size)
    init_key, step_key = keys.imitator(cfg.run.seed)
    programs = _programs(setup.mcfg, icfg, mesh)

    resumed = _restore_or_init(cfg, ckpt, programs, init_key, parallel.replicated(mesh), log)
    if resumed.start < icfg.train_steps:  # the compilation counts as the first step's would
        compile_s = _check_step_memory(cfg, programs, step_key, resumed.state,
                                       train_to_global(loader.batch(resumed.start)))
        resumed = resumed._replace(timing=dataclasses.replace(
            resumed.timing, compile_s=resumed.timing.compile_s + compile_s))
    primary = jax.process_index() == 0  # one process writes files and logs
    logger = parallel.on_primary(lambda: _open_logger(cfg, out, resumed.start),
                                 "writing the imitator's config.yaml and metrics.jsonl")
    # The prefetch thread also starts each batch's transfer to the devices, off the main thread.
    batches = data_lib.Prefetcher(lambda step: train_to_global(loader.batch(step)), resumed.start,
                                  icfg.train_steps, icfg.prefetch)
    loop = _Loop(cfg, setup.mcfg, programs, step_key, batches,
                 functools.partial(_evaluate, programs, heldout, heldout_to_global,
                                   icfg.batch_size, seq_len),
                 ckpt, logger, _progress(progress and primary, resumed.start, icfg.train_steps,
                                         tag(icfg)),
                 icfg.seeds * icfg.batch_size * seq_len)
    try:
        state, timing, evaluation = _run_steps(loop, resumed, interrupt_after)
        if not evaluation:  # resumed at the end from a checkpoint that predates saved evaluations
            evaluation = loop.evaluate(state.tree)
    finally:
        batches.close()
        loop.bar.close()
        if logger is not None:
            logger.close()
    summary = _summary(cfg, setup, out, evaluation, timing, loop.tokens_per_step)
    if primary:
        _write_json(out / "summary.json", summary)
        _update_index(out.parent / "summary.json", tag(icfg), summary)
    return summary


def _check_step_memory(cfg: config_lib.ExperimentConfig, programs: _Programs, key: jax.Array,
                       state: TrainState, batch: data_lib.Batch) -> float:
    """Raise ClimitError when the compiled train step needs more memory per device than the
    device has (XLA's own count: arguments, outputs and temporaries), before the first step
    runs into the allocator (on a CPU, the kernel's OOM killer, with no message at all). The
    compilation is the one the first step then reuses (JAX caches it), so this costs nothing
    but moves the compile time here. Returns the seconds it took."""
    t0 = time.perf_counter()
    stats = programs.step.lower(key, state, batch).compile().memory_analysis()
    seconds = time.perf_counter() - t0
    limit, where = parallel.device_memory()
    need = None if stats is None else (stats.argument_size_in_bytes + stats.output_size_in_bytes
                                       + stats.temp_size_in_bytes - stats.alias_size_in_bytes)
    if need is None or limit is None or need <= limit:
        return seconds
    icfg = cfg.imitator
    raise ClimitError(
        f"the imitator's train step needs {need / 2**30:.1f} GiB per device (XLA's count for "
        f"imitator.seeds={icfg.seeds} x imitator.batch_size={icfg.batch_size} sequences of "
        f"{icfg.train_windows} x {icfg.context_len} steps, d_model {icfg.d_model}, "
        f"{icfg.n_layers} layers), more than the {limit / 2**30:.1f} GiB of {where}; lower "
        f"imitator.batch_size or imitator.seeds, or use more devices")


def _open_logger(cfg: config_lib.ExperimentConfig, out: Path, start: int) -> MetricsLogger:
    """``out/config.yaml`` written and ``out/metrics.jsonl`` cut back to ``start`` (process 0)."""
    jsonfile.write_atomic(out / "config.yaml", config_lib.dump_yaml(cfg).encode())
    return MetricsLogger(out / "metrics.jsonl", resume_step=start, tensorboard=cfg.run.tensorboard,
                         wandb_project=cfg.run.wandb_project,
                         run_name=f"{cfg.run.name}/imitator/{tag(cfg.imitator)}")


def _progress(enabled: bool, start: int, total: int, name: str) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=start, desc=f"imitate {name}", disable=not enabled,
                dynamic_ncols=True)


POSITION_BINS = 8
_PROFILE = ("heldout_accuracy_by_position", "position_bins")  # logged, checkpointed, summarised
# A held-out evaluation (:func:`_evaluate`): checkpointed with its step, summarised at the end.
_EVALUATION = ("heldout_loss_per_seed", "heldout_accuracy_per_seed", *_PROFILE)


def accuracy_by_position(accuracy_SxT: np.ndarray) -> dict:
    """Held-out accuracy against the position in the training sequence, in ``POSITION_BINS``
    near-equal bins of positions, averaged over seeds.

    The diagnostic of in-context learning that needs no rollout: a token at position p sees
    min(p + 1, n_layers * (context_len - 1) + 1) steps of its own learner (attention reaches
    ``context_len - 1`` tokens back per layer; windows start anywhere in a stream), so accuracy
    that climbs across the positions is accuracy the context buys, also past ``context_len``;
    a flat profile means the model predicts from the current step alone.
    """
    t = accuracy_SxT.shape[-1]
    parts = np.array_split(np.arange(t), min(POSITION_BINS, t))
    return {"heldout_accuracy_by_position": [float(accuracy_SxT[:, p].mean()) for p in parts],
            "position_bins": [int(p[0]) for p in parts] + [t]}


def _means(ev: dict) -> dict:
    return {"heldout_loss": float(np.mean(ev["heldout_loss_per_seed"])),
            "heldout_action_accuracy": float(np.mean(ev["heldout_accuracy_per_seed"]))}


def _train_record(step: int, pending: list[StepMetrics], tokens_per_step: int,
                  timing: Timing) -> dict:
    m = jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *pending)
    return {"step": step, "loss": float(m.loss[-1].mean()),
            "accuracy": float(m.accuracy[-1].mean()),
            "grad_norm": float(m.grad_norm[-1].mean()), "lr": float(m.lr[-1][0]),
            "tokens_per_s": timing.tokens_per_s(tokens_per_step)}


def _best(ckpt_dir: Path) -> tuple[int | None, float | None]:
    """(step, heldout_loss) of the best kept checkpoint."""
    info = checkpoint.describe(ckpt_dir)
    scored = [(c["metrics"]["heldout_loss"], c["step"]) for c in info["checkpoints"]
              if "heldout_loss" in c.get("metrics", {})]
    if not scored:
        return None, None
    loss, step = min(scored)
    return step, loss


def _heldout(setup: _Setup) -> dict:
    """What the held-out set is: ``heldout`` is 'tasks' or 'learners'
    (:func:`climit.imitator.data.heldout_unit`); ``heldout_tasks`` and ``heldout_learners`` are
    the tasks and the learners that no training stream belongs to (no task, when learners of a
    single-task environment are held out: they play the task the imitator trained on)."""
    info = setup.heldout_set.history.stream_info
    train_tasks = {info(s).task for s in setup.train_streams}
    train_learners = {info(s).learner for s in setup.train_streams}
    return {"heldout": data_lib.heldout_unit(setup.heldout_set.history),
            "heldout_tasks": sorted({info(s).task for s in setup.heldout_streams} - train_tasks),
            "heldout_learners": sorted({info(s).learner for s in setup.heldout_streams}
                                       - train_learners)}


def _summary(cfg: config_lib.ExperimentConfig, setup: _Setup, out: Path, evaluation: dict,
             timing: Timing, tokens_per_step: int) -> dict:
    icfg, mcfg = cfg.imitator, setup.mcfg
    best_step, best_loss = _best(out / "checkpoints")
    seq_len = setup.train_set.spec.seq_len
    valid = sum(mcfg.action_mask)
    return {
        "tag": tag(icfg), "variant": icfg.variant, "horizon": icfg.horizon,
        **_means(evaluation), **evaluation,
        "chance_accuracy": 1.0 / valid,
        "best_step": best_step, "best_heldout_loss": best_loss,
        "final_step": icfg.train_steps,
        # end to end over every segment of the run (data, evaluation and checkpoints included;
        # compilation excluded)
        "tokens_per_s": timing.tokens_per_s(tokens_per_step),
        "compile_s": timing.compile_s,
        "params": model_lib.num_params(model_lib.abstract(mcfg)),
        "seeds": icfg.seeds,
        "train_streams": len(setup.train_streams), "heldout_streams": len(setup.heldout_streams),
        "train_windows": setup.train_set.num_windows, "train_tokens": setup.train_set.num_tokens,
        **_heldout(setup),
        "seq_len": seq_len, "context_len": mcfg.context_len,
        "compute_dtype": mcfg.compute_dtype,
        "attention": model_lib.attention_used(mcfg, icfg.batch_size, seq_len),
        "devices": jax.device_count(), "device_kind": jax.devices()[0].device_kind,
        "fingerprint": fingerprint(cfg),
    }


def _write_json(path: Path, obj: dict) -> None:
    jsonfile.write_atomic(path, json.dumps(obj, indent=1, default=list).encode())


def _update_index(path: Path, name: str, summary: dict) -> None:
    index = jsonfile.read_or_empty(path)
    index[name] = summary
    _write_json(path, index)


# ---------------------------------------------------------------------------------------------
# Loading a trained imitator
# ---------------------------------------------------------------------------------------------

class Loaded(NamedTuple):
    """A trained imitator: ``params`` leaves lead with S seeds (vmap over them)."""

    params: model_lib.Params
    config: config_lib.ExperimentConfig
    step: int
    metrics: dict


def load(path: str | Path, step: int | str = "best", *, compute_dtype: str | None = None) -> Loaded:
    """Load the imitators saved in ``path`` (a ``runs/NAME/imitator/<tag>`` directory, or its
    ``checkpoints`` directory).

    Args:
        step: 'best' (the step summary.json names as ``best_step``; without a summary, as in
            a run still training, the lowest held-out loss kept), 'latest', or a step number
            (int or digits).
        compute_dtype: override the activation dtype; default re-resolves the saved
            ``imitator.compute_dtype`` for this machine (auto: bf16 on GPU, fp32 on CPU).

    Raises:
        ArtifactError: no checkpoint there, a damaged one, the summary's best one missing or
            damaged (never silently another), or one from an older model revision.
        ValueError: ``step`` is none of the above.
    """
    path = Path(path)
    ckpt_dir = (path if path.name == "checkpoints" and checkpoint.is_checkpoint_dir(path)
                else path / "checkpoints")
    if isinstance(step, str) and step not in ("best", "latest"):
        if not step.isdigit():
            raise ValueError(f"step must be 'best', 'latest' or a step number, got {step!r}")
        step = int(step)
    with checkpoint.Checkpointer(ckpt_dir, readonly=True) as ckpt:
        if step == "best":
            step = _best_step(ckpt_dir)
        elif step == "latest":
            step = ckpt.latest_step()
        meta = ckpt.metadata(step)
        raw = dict(meta["config"])
        saved_model = raw.pop("imitator_model")
        raw.pop("imitator_fingerprint", None)
        revision = raw.pop("imitator_model_revision", 1)
        if revision != model_lib.REVISION:
            raise ArtifactError(f"{path} was saved by a climit whose imitator computes positions "
                                f"differently (model revision {revision}, this one "
                                f"{model_lib.REVISION}); train it again with `climit imitate`")
        cfg = config_lib.from_dict(raw)
        mcfg = model_lib.ModelConfig(**{k: tuple(v) if isinstance(v, list) else v
                                        for k, v in saved_model.items()})
        target = jax.eval_shape(functools.partial(init_state, mcfg, cfg.imitator),
                                jax.random.key(0))
        state = ckpt.restore(meta["step"], target=target)
    dtype = compute_dtype or model_lib.resolve_compute_dtype(cfg.imitator.compute_dtype)
    mcfg = dataclasses.replace(mcfg, compute_dtype=dtype)
    return Loaded(model_lib.Params(mcfg, state.tree), cfg, int(meta["step"]), meta["metrics"])


def _best_step(ckpt_dir: Path) -> int | None:
    """The step ``load(..., 'best')`` means: the ``best_step`` of the summary.json beside
    ``ckpt_dir``, checked to be there and intact (another kept step would change every result
    downstream without a word); without a summary naming one, the best kept step.

    Raises:
        ArtifactError: the summary's best checkpoint is missing or damaged.
    """
    step = jsonfile.read_or_empty(ckpt_dir.parent / "summary.json").get("best_step")
    if step is None:
        return _best(ckpt_dir)[0]
    problem = _checkpoint_problem(ckpt_dir, step, "best")
    if problem is not None:
        raise ArtifactError(f"{problem}; run `climit imitate` (or `climit run`) again with the "
                            f"same arguments to retrain it")
    return step


def seed_params(params: model_lib.Params, seed: int) -> model_lib.Params:
    """One imitator out of a stacked [S, ...] Params."""
    return jax.tree.map(lambda x: x[seed], params)
