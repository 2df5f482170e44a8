"""Training the imitator: next-action prediction on learning histories.

``train(cfg)`` reads ``runs/NAME/teacher/histories``, trains ``imitator.seeds`` independent
imitators at once (``vmap`` over a leading seed axis S: one compiled step, one stacked
checkpoint) and writes ``runs/NAME/imitator/<tag>/``::

    checkpoints/    orbax steps (latest ``keep_checkpoints`` + the best by held-out loss)
    metrics.jsonl   train loss/accuracy every ``log_every`` steps, held-out ones every ``eval_every``
    summary.json    heldout_loss, heldout_action_accuracy, heldout_accuracy_by_position,
                    tokens_per_s, params, ... (final)
    config.yaml     the resolved config

``<tag>`` names the dataset variant (:func:`tag`: ``ad``, ``ed``, ``shuffled``,
``single_episode``, with ``_h<H>`` appended when ``imitator.horizon`` is set), so one run
directory holds the AD imitator, its controls and the horizon-test imitator side by side.
``runs/NAME/imitator/summary.json`` indexes the summaries of every tag trained so far.

The loop is a jitted train step inside a Python loop (tqdm progress bar). Each step's global
batch is a pure function of (seed, step) (:mod:`climit.imitator.data`), dropout keys are
derived from the step, so a run killed anywhere and restarted resumes from its latest
checkpoint and ends bit-identical (on CPU) to an uninterrupted one. Data parallel: the batch
axis is sharded over a 1-D mesh of every device of every process (:mod:`climit.parallel`),
parameters and optimizer state are replicated; the global batch does not depend on the device
count, so 1 and 8 devices give the same loss curve up to float reduction order.

Optimizer: AdamW (weight decay on matrices only), linear warmup then cosine decay to 10% of
``imitator.lr``, global-norm gradient clipping; dropout and label smoothing optional.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from jax.sharding import NamedSharding, PartitionSpec

from climit import checkpoint, histories, parallel
from climit import config as config_lib
from climit.errors import ArtifactError, ClimitError, TrainingDiverged
from climit.imitator import data as data_lib
from climit.imitator import model as model_lib
from climit.metrics import MetricsLogger

_KEY_SALT = 0x1D17  # separates the imitator's key stream from the teacher's

# Config fields that do not change what is trained (a resumed run may change them).
_NEUTRAL_FIELDS = ("log_every", "prefetch", "data_memory_mb", "eval_every", "keep_checkpoints")


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
    """What determines a trained imitator: its section (minus logging knobs), the teacher's
    sections that shape the histories, and the root seed."""
    defaults = config_lib.ImitatorConfig()
    icfg = dataclasses.replace(cfg.imitator, **{f: getattr(defaults, f) for f in _NEUTRAL_FIELDS})
    return config_lib.fingerprint(icfg, cfg.env, cfg.teacher, cfg.histories, cfg.run.seed,
                                  model_lib.REVISION)


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
    keys = jax.random.split(key, icfg.seeds)
    tree = jax.vmap(lambda k: model_lib.init(mcfg, k).tree)(keys)
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


def eval_sums(mcfg: model_lib.ModelConfig, tree: dict, batch: data_lib.Batch) -> tuple[jax.Array, jax.Array]:
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
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


class _Programs(NamedTuple):
    init: Callable  # key -> TrainState
    step: Callable  # (key, state, batch [S, B, T]) -> (state, StepMetrics)
    eval: Callable  # (tree, batch [B, T]) -> (loss sums [S], correct sums [S])
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


def _check_finite(finite: bool, step: int, ckpt: checkpoint.Checkpointer) -> None:
    """Raise TrainingDiverged unless ``finite``."""
    if finite:
        return
    last = ckpt.latest_step()
    kept = f"the last good checkpoint (step {last}) is kept" if last is not None else \
        "no checkpoint had been saved yet"
    raise TrainingDiverged(f"imitator loss became NaN/Inf by step {step}; {kept}. Lower "
                           f"imitator.lr, keep imitator.max_grad_norm > 0, or check the history")


def _restore_or_init(cfg: config_lib.ExperimentConfig, ckpt: checkpoint.Checkpointer,
                     programs: _Programs, init_key: jax.Array,
                     replicated: NamedSharding) -> tuple[int, TrainState]:
    """(start step, state): the latest checkpoint of this same imitator, or a fresh init."""
    start = ckpt.latest_step()
    if start is None:
        return 0, programs.init(init_key)
    if ckpt.metadata(start)["config"].get("imitator_fingerprint") != fingerprint(cfg):
        raise ClimitError(f"{ckpt.directory.parent} holds an imitator trained with a different "
                          f"config; remove it or choose another run.name")
    state = ckpt.restore(start, target=jax.eval_shape(programs.init, init_key))
    return start, jax.device_put(state, replicated)


def train(cfg: config_lib.ExperimentConfig, *, progress: bool = True,
          interrupt_after: int | None = None) -> dict:
    """Train (or resume, or return the summary of an already finished) imitator for ``cfg``.

    ``interrupt_after``: test hook; raise KeyboardInterrupt once that many steps are done
    (simulates a kill between checkpoints).

    Returns:
        the summary dict (also written to ``summary.json``).

    Raises:
        ArtifactError / ClimitError: missing, incomplete or unreadable histories; a previous,
            different imitator in the same directory. TrainingDiverged: NaN/Inf loss.
    """
    parallel.initialize()  # multi-host start-up when the environment asks for it (no-op otherwise)
    icfg = cfg.imitator
    out = output_dir(cfg)
    summary_file = out / "summary.json"
    history = open_histories(histories_dir(cfg))
    done = _read_json(summary_file)  # a damaged summary counts as unfinished: retrain/resume
    if done.get("fingerprint") == fingerprint(cfg):
        return done
    setup = _prepare(cfg, history)
    mcfg = setup.mcfg
    mesh = parallel.mesh()
    parallel.check_divisible(icfg.batch_size, "imitator.batch_size")
    rows = data_lib.local_rows(icfg.batch_size, jax.process_index(), jax.process_count())
    loader = data_lib.Loader(setup.train_set, icfg.batch_size, icfg.seeds, cfg.run.seed,
                             jax.process_index(), jax.process_count())
    heldout = data_lib.heldout_batches(setup.heldout_set, icfg.eval_batches, icfg.batch_size,
                                       cfg.run.seed, rows)
    seq_sharding = NamedSharding(mesh, PartitionSpec(None, parallel.AXIS))  # [S, B, T]
    heldout_sharding = NamedSharding(mesh, PartitionSpec(parallel.AXIS))  # [B, T]
    replicated = parallel.replicated(mesh)

    def to_global(batch: data_lib.Batch, sharding: NamedSharding, axis: int) -> data_lib.Batch:
        return jax.tree.map(lambda x: jax.make_array_from_process_local_data(
            sharding, x, x.shape[:axis] + (icfg.batch_size,) + x.shape[axis + 1:]), batch)

    key = jax.random.fold_in(jax.random.key(cfg.run.seed), _KEY_SALT)
    init_key, step_key = jax.random.split(key)
    programs = _programs(mcfg, icfg, mesh)

    out.mkdir(parents=True, exist_ok=True)
    ckpt = checkpoint.Checkpointer(out / "checkpoints", keep=icfg.keep_checkpoints,
                                   best="heldout_loss")
    try:
        start, state = _restore_or_init(cfg, ckpt, programs, init_key, replicated)
    except BaseException:
        ckpt.close()
        raise
    primary = jax.process_index() == 0  # one process writes files and logs
    if primary:
        (out / "config.yaml").write_text(config_lib.dump_yaml(cfg))
    logger = MetricsLogger(out / "metrics.jsonl", resume_step=start, tensorboard=cfg.run.tensorboard,
                           wandb_project=cfg.run.wandb_project,
                           run_name=f"{cfg.run.name}/imitator/{tag(icfg)}") if primary else None

    def evaluate(tree: dict) -> dict:
        loss = correct_SxT = 0.0
        for b in heldout:
            s_loss, s_correct = programs.eval(tree, to_global(b, heldout_sharding, 0))
            loss, correct_SxT = loss + np.asarray(s_loss), correct_SxT + np.asarray(s_correct)
        sequences = icfg.eval_batches * icfg.batch_size
        tokens = sequences * setup.heldout_set.spec.seq_len
        return {"heldout_loss_per_seed": (loss / tokens).tolist(),
                "heldout_accuracy_per_seed": (correct_SxT.sum(-1) / tokens).tolist(),
                **accuracy_by_position(correct_SxT / sequences)}

    tokens_per_step = icfg.seeds * icfg.batch_size * setup.train_set.spec.seq_len
    batches = data_lib.Prefetcher(loader.batch, start, icfg.train_steps, icfg.prefetch)
    bar = _progress(progress and primary, start, icfg.train_steps, tag(icfg))
    pending: list[StepMetrics] = []
    timing = {"t0": None, "steps": 0, "compile_s": 0.0}
    last_eval: dict = {}
    try:
        for step in range(start + 1, icfg.train_steps + 1):
            batch = to_global(next(batches), seq_sharding, 1)
            t = time.perf_counter()
            state, metrics = programs.step(step_key, state, batch)
            pending.append(metrics)
            if timing["t0"] is None:  # the first step compiles: time the rest
                jax.block_until_ready(metrics)
                timing["compile_s"], timing["t0"] = time.perf_counter() - t, time.perf_counter()
            else:
                timing["steps"] += 1
            is_eval = step % icfg.eval_every == 0 or step == icfg.train_steps
            if step % icfg.log_every == 0 or is_eval or step == 1:
                _check_finite(all(np.all(np.isfinite(np.asarray(m.loss))) for m in pending),
                              step, ckpt)
                rec = _train_record(step, pending, tokens_per_step, timing, icfg)
                pending = []
                if is_eval:  # nothing non-finite may reach a checkpoint
                    last_eval = evaluate(state.tree)
                    _check_finite(bool(programs.finite(state.tree)) and
                                  bool(np.all(np.isfinite(last_eval["heldout_loss_per_seed"]))),
                                  step, ckpt)
                    rec.update(_means(last_eval))
                    rec.update({k: last_eval[k] for k in _PROFILE})
                    ckpt.save(step, state, config=_checkpoint_config(cfg, mcfg),
                              metrics={k: rec[k] for k in ("heldout_loss",
                                                           "heldout_action_accuracy", *_PROFILE)})
                if logger is not None:
                    logger.log(rec)
                bar.set_postfix(loss=f"{rec['loss']:.3f}", acc=f"{rec['accuracy']:.2f}")
            bar.update(1)
            if interrupt_after is not None and step >= interrupt_after:
                raise KeyboardInterrupt
    finally:
        batches.close()
        bar.close()
        if logger is not None:
            logger.close()
        ckpt.close()
    summary = _summary(cfg, setup, out, last_eval, timing, tokens_per_step)
    if primary:
        _write_json(summary_file, summary)
        _update_index(out.parent / "summary.json", tag(icfg), summary)
    return summary


def _progress(enabled: bool, start: int, total: int, name: str) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=start, desc=f"imitate {name}", disable=not enabled,
                dynamic_ncols=True)


POSITION_BINS = 8
_PROFILE = ("heldout_accuracy_by_position", "position_bins")  # logged, checkpointed, summarised


def accuracy_by_position(accuracy_SxT: np.ndarray) -> dict:
    """Held-out accuracy against the position in the training sequence, in ``POSITION_BINS``
    near-equal bins of positions, averaged over seeds.

    The diagnostic of in-context learning that needs no rollout: a token at position p sees
    min(p + 1, context_len) steps of its own learner (windows start anywhere in a stream), so
    accuracy that climbs across the first ``context_len`` positions is accuracy the context
    buys; a flat profile means the model predicts from the current step alone.
    """
    t = accuracy_SxT.shape[-1]
    parts = np.array_split(np.arange(t), min(POSITION_BINS, t))
    return {"heldout_accuracy_by_position": [float(accuracy_SxT[:, p].mean()) for p in parts],
            "position_bins": [int(p[0]) for p in parts] + [t]}


def _means(ev: dict) -> dict:
    return {"heldout_loss": float(np.mean(ev["heldout_loss_per_seed"])),
            "heldout_action_accuracy": float(np.mean(ev["heldout_accuracy_per_seed"]))}


def _train_record(step: int, pending: list[StepMetrics], tokens_per_step: int, timing: dict,
                  icfg: config_lib.ImitatorConfig) -> dict:
    m = jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *pending)
    elapsed = time.perf_counter() - timing["t0"] if timing["t0"] else 0.0
    rate = timing["steps"] * tokens_per_step / elapsed if elapsed > 0 and timing["steps"] else None
    return {"step": step, "loss": float(m.loss[-1].mean()), "accuracy": float(m.accuracy[-1].mean()),
            "grad_norm": float(m.grad_norm[-1].mean()), "lr": float(m.lr[-1][0]),
            "tokens_per_s": rate}


def _best(ckpt_dir: Path) -> tuple[int | None, float | None]:
    """(step, heldout_loss) of the best kept checkpoint."""
    info = checkpoint.describe(ckpt_dir)
    scored = [(c["metrics"]["heldout_loss"], c["step"]) for c in info["checkpoints"]
              if "heldout_loss" in c.get("metrics", {})]
    if not scored:
        return None, None
    loss, step = min(scored)
    return step, loss


def _summary(cfg: config_lib.ExperimentConfig, setup: _Setup, out: Path, last_eval: dict,
             timing: dict, tokens_per_step: int) -> dict:
    icfg, mcfg = cfg.imitator, setup.mcfg
    elapsed = time.perf_counter() - timing["t0"] if timing["t0"] else 0.0
    best_step, best_loss = _best(out / "checkpoints")
    if not last_eval:  # resumed after the last evaluation: nothing new was measured
        with checkpoint.Checkpointer(out / "checkpoints", readonly=True) as ckpt:
            metrics = ckpt.metadata()["metrics"]
        last_eval = {"heldout_loss_per_seed": [metrics["heldout_loss"]],
                     "heldout_accuracy_per_seed": [metrics["heldout_action_accuracy"]],
                     **{k: metrics[k] for k in _PROFILE if k in metrics}}
    valid = sum(mcfg.action_mask)
    return {
        "tag": tag(icfg), "variant": icfg.variant, "horizon": icfg.horizon,
        **_means(last_eval), **last_eval,
        "chance_accuracy": 1.0 / valid,
        "best_step": best_step, "best_heldout_loss": best_loss,
        "final_step": icfg.train_steps,
        # end to end (data, evaluation and checkpoints included; compilation excluded)
        "tokens_per_s": timing["steps"] * tokens_per_step / elapsed if elapsed > 0 else None,
        "compile_s": timing["compile_s"],
        "params": model_lib.num_params(model_lib.abstract(mcfg)),
        "seeds": icfg.seeds,
        "train_streams": len(setup.train_streams), "heldout_streams": len(setup.heldout_streams),
        "train_windows": setup.train_set.num_windows, "train_tokens": setup.train_set.num_tokens,
        "heldout_tasks": sorted({setup.heldout_set.history.stream_info(s).task
                                 for s in setup.heldout_streams}),
        "seq_len": setup.train_set.spec.seq_len, "context_len": mcfg.context_len,
        "compute_dtype": mcfg.compute_dtype, "attention": model_lib.attention_impl(mcfg),
        "devices": jax.device_count(), "device_kind": jax.devices()[0].device_kind,
        "fingerprint": fingerprint(cfg),
    }


def _write_json(path: Path, obj: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=1, default=list))
    os.replace(tmp, path)


def _read_json(path: Path) -> dict:
    """A JSON object from disk, or {} when it is missing or damaged (e.g. torn by a kill)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _update_index(path: Path, name: str, summary: dict) -> None:
    index = _read_json(path)
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
    """Load the imitators saved in ``path`` (a ``runs/NAME/imitator/<tag>`` directory).

    Args:
        step: 'best' (lowest held-out loss kept), 'latest', or a step number.
        compute_dtype: override the activation dtype; default re-resolves the saved
            ``imitator.compute_dtype`` for this machine (auto: bf16 on GPU, fp32 on CPU).

    Raises:
        ArtifactError: no checkpoint there, a damaged one, or one from an older model revision.
    """
    ckpt_dir = Path(path) / "checkpoints"
    with checkpoint.Checkpointer(ckpt_dir, readonly=True) as ckpt:
        if step == "best":
            step = _best(ckpt_dir)[0]
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
        target = jax.eval_shape(functools.partial(init_state, mcfg, cfg.imitator), jax.random.key(0))
        state = ckpt.restore(meta["step"], target=target)
    dtype = compute_dtype or model_lib.resolve_compute_dtype(cfg.imitator.compute_dtype)
    mcfg = dataclasses.replace(mcfg, compute_dtype=dtype)
    return Loaded(model_lib.Params(mcfg, state.tree), cfg, int(meta["step"]), meta["metrics"])


def seed_params(params: model_lib.Params, seed: int) -> model_lib.Params:
    """One imitator out of a stacked [S, ...] Params."""
    return jax.tree.map(lambda x: x[seed], params)
