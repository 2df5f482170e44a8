"""The teacher's driver: a Python loop over jitted chunks, with everything a long run needs.

Two entry points share one loop (:func:`_run_chunks`):

* :func:`teach` (``climit teach``): the learners of a config (sweep points x train tasks x
  seeds), writing ``runs/NAME/teacher/`` -- learning histories (every transition, Q-values every
  ``q_log_period`` steps), ``metrics.jsonl``, full-state checkpoints every ``checkpoint_every``
  chunks (latest ``keep_checkpoints`` kept), parameter snapshots at ``snapshot_steps`` (kept for
  good) and ``summary.json`` with a greedy evaluation through :mod:`climit.rollout`. A run
  killed at any point resumes from its last checkpoint when the same command runs again, and
  ends with histories and parameters identical to an uninterrupted run.
* :func:`train_learners`: fresh learners on given tasks, in memory, returning their
  finished-episode returns against env steps (the evaluation stage's DQN-from-scratch curves).

The device runs chunk k+1 while the host writes chunk k's history (JAX dispatch is async);
the loop synchronises only at checkpoints, snapshots and the end.

Axis letters: G learners, E envs per learner, N = G*E streams, T time, M episodes, K task dim.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from climit import checkpoint, envs, histories, jsonfile, keys, parallel, rollout, stopping
from climit import config as config_lib
from climit.config import ExperimentConfig, TeacherConfig
from climit.errors import ArtifactError, ClimitError, TrainingDiverged
from climit.teacher import dqn

# ---------------------------------------------------------------------------------------------
# Who the learners are
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Plan:
    """The G learners of a run, in order g = (point*K + task)*S + seed."""

    tasks_GxK: np.ndarray  # int32
    hparams: dqn.HParams  # leaves float32 [G]
    keys_Gx2: np.ndarray  # uint32 raw keys
    point_G: np.ndarray  # sweep point index per learner
    task_index_G: np.ndarray
    seed_G: np.ndarray

    @property
    def num_learners(self) -> int:
        return len(self.tasks_GxK)

    def stream_infos(self, num_envs: int) -> list[histories.StreamInfo]:
        """One entry per stream n = g*E + e."""
        hp = {f: np.asarray(getattr(self.hparams, f)) for f in dqn.HParams._fields}
        return [histories.StreamInfo(learner=g, env=e,
                                     task=tuple(int(x) for x in self.tasks_GxK[g]),
                                     seed=int(self.seed_G[g]),
                                     hparams={f: float(v[g]) for f, v in hp.items()})
                for g in range(self.num_learners) for e in range(num_envs)]


def plan(cfg: ExperimentConfig) -> Plan:
    """Sweep points x ``env.train_tasks`` train tasks x ``teacher.seeds`` seeds."""
    tcfg = cfg.teacher
    tasks_KxD = envs.sample_tasks(cfg.env.name, keys.teacher_tasks(cfg.run.seed),
                                  cfg.env.train_tasks, "train")
    points = dqn.sweep_points(tcfg)
    n_p, n_k, n_s = len(points), len(tasks_KxD), tcfg.seeds
    point_G, task_G, seed_G = (a.reshape(-1) for a in np.meshgrid(
        np.arange(n_p), np.arange(n_k), np.arange(n_s), indexing="ij"))
    values = {f: np.array([points[p].get(f, getattr(tcfg, f)) for p in point_G], np.float32)
              for f in dqn.HParams._fields}
    keys_Gx2 = dqn.learner_keys(keys.teacher_learners(cfg.run.seed), n_k, n_s, n_p)
    return Plan(tasks_GxK=np.asarray(tasks_KxD[task_G], np.int32),
                hparams=dqn.hparams(tcfg, len(point_G), **values), keys_Gx2=np.asarray(keys_Gx2),
                point_G=point_G, task_index_G=task_G, seed_G=seed_G)


# ---------------------------------------------------------------------------------------------
# Devices: the learner axis G is sharded over every device of every process (no-op on one)
# ---------------------------------------------------------------------------------------------

def place(state: dqn.TrainState, hp_G: dqn.HParams, tasks_GxK: Any, *,
          require_divisible: bool = True
          ) -> tuple[dqn.TrainState, dqn.HParams, jax.Array]:
    """Shard the learners (and their hparams and tasks) on axis G; counters replicated.

    The chunk is a vmap over G with unbatched counters, so XLA partitions it with no
    communication: each device runs G / devices learners, on one host or several. Every
    process passes the same full values (they come from the same plan or checkpoint); the
    chunk outputs are gathered back with :func:`climit.parallel.to_host` and process 0 alone
    writes files. A G that does not split evenly over the devices is an error, or with
    ``require_divisible=False`` runs whole on each process's first device (evaluation's fresh
    learners, whose count the user does not choose for the device count).
    """
    tasks_GxK = jnp.asarray(tasks_GxK)
    g = int(tasks_GxK.shape[0])
    if jax.device_count() == 1 or (not require_divisible and g % jax.device_count()):
        return state, hp_G, tasks_GxK
    parallel.check_divisible(g,
                             "the number of teacher learners (sweep points x train_tasks x seeds)")
    m = parallel.mesh()
    state = dqn.TrainState(learners=parallel.shard_leading(state.learners, m),
                           t=parallel.replicate(state.t, m),
                           updates=parallel.replicate(state.updates, m))
    return state, parallel.shard_leading(hp_G, m), parallel.shard_leading(tasks_GxK, m)


# ---------------------------------------------------------------------------------------------
# The chunk loop
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Timing:
    """Throughput of a training loop (this process; ``prior`` segments added on resume)."""

    compile_s: float = 0.0
    run_s: float = 0.0  # wall time of the loop, compilation excluded
    env_steps: int = 0  # summed over learners
    td_updates: int = 0  # summed over learners

    def rates(self) -> dict[str, float]:
        run = max(self.run_s, 1e-9)
        return {"env_steps_per_s": self.env_steps / run, "td_updates_per_s": self.td_updates / run,
                "compile_s": self.compile_s, "train_wall_s": self.run_s}

    def to_json(self) -> dict[str, float]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class _Hooks:
    """What the loop calls; the defaults do nothing (in-memory training)."""

    output: Callable[[dqn.ChunkOut, int, int], None] = lambda out, t0, t1: None
    needs_sync: Callable[[int], bool] = lambda t1: False
    sync: Callable[[dqn.TrainState, int, Timing], None] = lambda state, t1, timing: None
    # A checkpoint at any chunk end, before a requested stop (climit.stopping); None: the loop
    # has nowhere to save (in-memory training, benchmarks) and ignores stop requests.
    save_before_stop: Callable[[dqn.TrainState, int, Timing], None] | None = None


def _check_finite(out: dqn.ChunkOut, t1: int, num_envs: int,
                  where: str | Callable[[], str]) -> None:
    """Raise TrainingDiverged if a learner's loss or weights are not finite.

    ``where``: what is kept on disk, or a function that says so; it is called only when raising,
    so a checkpoint saved during the run is named (not the state before training began).
    """
    bad = np.flatnonzero(~np.isfinite(np.asarray(out.stats.update_sum_G.loss))
                         | ~np.asarray(out.stats.params_finite_G))
    if bad.size:
        where = where() if callable(where) else where
        raise TrainingDiverged(f"TD loss or weights became NaN/Inf by env step {t1 * num_envs} for "
                               f"learners {bad[:8].tolist()}{'...' if bad.size > 8 else ''}; "
                               f"{where}. Lower teacher.lr, keep teacher.max_grad_norm > 0, or "
                               "check the environment's rewards for NaN/Inf or huge values (with "
                               "a changed config, choose another run.name: it does not resume "
                               "this run)")


def _run_chunks(tcfg: TeacherConfig, env: envs.Env, state: dqn.TrainState, hp_G: dqn.HParams,
                tasks_GxK: jax.Array, *, record: dqn.Record, q_period: int, hooks: _Hooks,
                timing: Timing | None = None, progress: bool = False,
                diverged_note: str | Callable[[], str] = "",
                stop_hook: Callable[[int], None] | None = None) -> tuple[dqn.TrainState, Timing]:
    """Run chunks from ``state.t`` to the end of training; returns (final state, timing).

    ``hooks.output`` gets every chunk's host arrays in order, one chunk late while the device
    runs the next; before ``hooks.sync(state, t1, timing)`` every earlier output has been
    handled, so a checkpoint never runs ahead of the history on disk, and a diverged chunk is
    never checkpointed. ``diverged_note`` (or its value, computed when the divergence is found)
    ends the TrainingDiverged message. ``stop_hook(k)`` runs after chunk k (tests: a simulated
    kill).

    Raises:
        stopping.Stopped: a stop was requested (SIGTERM, SIGUSR1, time limit) and
            ``hooks.save_before_stop`` saved the state at the end of the chunk it came in.
    """
    from tqdm import tqdm

    total = tcfg.total_env_steps // tcfg.num_envs
    t = int(state.t)
    g = int(tasks_GxK.shape[0])
    timing = timing or Timing()
    prior_run_s, prior_compile_s, compile_s = timing.run_s, timing.compile_s, 0.0
    compiled: dict[tuple[int, bool], Any] = {}
    pending: list[tuple[Any, int, int]] = []
    bar = tqdm(total=tcfg.total_env_steps, initial=t * tcfg.num_envs, unit="step",
               disable=not progress, desc="teach", dynamic_ncols=True, mininterval=1.0)
    loop_start = time.perf_counter()

    def clock() -> None:
        timing.compile_s = prior_compile_s + compile_s
        timing.run_s = prior_run_s + time.perf_counter() - loop_start - compile_s

    def finish() -> None:
        while pending:
            out, t0, t1 = pending.pop(0)
            out = parallel.to_host(out)  # every process, in the same order (a collective)
            _check_finite(out, t1, tcfg.num_envs, diverged_note)
            hooks.output(out, t0, t1)
            episodes = int(out.stats.episodes_G.sum())
            timing.env_steps += g * (t1 - t0) * tcfg.num_envs
            timing.td_updates += g * int(out.stats.loss_count)
            run = max(time.perf_counter() - loop_start - compile_s + prior_run_s, 1e-9)
            bar.update((t1 - t0) * tcfg.num_envs)
            bar.set_postfix_str(f"{timing.env_steps / run:.3g} steps/s "
                                f"{timing.td_updates / run:.3g} updates/s return "
                                f"{out.stats.return_sum_G.sum() / max(episodes, 1):.3g}",
                                refresh=False)

    chunk_index = 0
    while t < total:
        length = min(tcfg.chunk_steps, total - t)
        kind = (length, dqn.schedulable(tcfg, t, length, record, q_period))
        if kind not in compiled:
            # A chunk still running would run inside the compile's clock, and its time would be
            # subtracted from run_s with the compile (CPU: up to 1.6x too fast at one learner).
            jax.block_until_ready(state)
            c0 = time.perf_counter()
            fn = dqn.make_chunk(tcfg, env, length, record, q_period, scheduled=kind[1])
            compiled[kind] = fn.lower(state, hp_G, tasks_GxK).compile()
            compile_s += time.perf_counter() - c0
        state, out = compiled[kind](state, hp_G, tasks_GxK)
        finish()  # the previous chunk's output, while this one runs
        pending.append((out, t, t + length))
        t += length
        synced = hooks.needs_sync(t) or t >= total
        # Every process reaches a sync at the same chunk, so a multi-process stop agrees there.
        why = stopping.requested(collective=synced) \
            if hooks.save_before_stop is not None and t < total else None
        if synced or why is not None:
            finish()
            jax.block_until_ready(state)
            clock()
            hooks.sync(state, t, timing)
        if why is not None:
            hooks.save_before_stop(state, t, timing)
            bar.close()
            raise stopping.Stopped(f"the teacher at env step {t * tcfg.num_envs} of "
                                   f"{tcfg.total_env_steps} per learner, its checkpoint saved", why)
        chunk_index += 1
        if stop_hook is not None:
            stop_hook(chunk_index)
    finish()
    jax.block_until_ready(state)
    clock()
    bar.close()
    return state, timing


# ---------------------------------------------------------------------------------------------
# Greedy evaluation (through the one rollout primitive)
# ---------------------------------------------------------------------------------------------

def evaluate_greedy(tcfg: TeacherConfig, env: envs.Env, params_G: Any, tasks_GxK: Any,
                    key: jax.Array, episodes: int, eps: float = 0.0) -> np.ndarray:
    """Mean return of ``episodes`` greedy (or eps-greedy) episodes per learner: float [G].

    Each learner acts on its own task from fresh resets, and its first ``episodes`` episodes
    (:func:`climit.rollout.first_returns`) are averaged.
    """
    act = dqn.greedy_policy(tcfg, env.spec)

    def one(params, task_K, k):
        return jnp.mean(rollout.first_returns(env, act, (params, jnp.float32(eps)), (), task_K, k,
                                              episodes))

    g = int(np.shape(tasks_GxK)[0])
    tasks, keys_G = jnp.asarray(tasks_GxK), jax.random.split(key, g)
    if jax.process_count() > 1:  # params are sharded over every host: give the rest the same layout
        tasks, keys_G = parallel.shard_leading((tasks, keys_G), parallel.mesh())
    fn = jax.jit(jax.vmap(one))
    return np.asarray(parallel.to_host(fn(params_G, tasks, keys_G)), np.float64)


# ---------------------------------------------------------------------------------------------
# Fresh learners in memory (evaluation's DQN-from-scratch curves)
# ---------------------------------------------------------------------------------------------

class FreshResult(NamedTuple):
    """Learning curves of fresh learners (stream n = g*E + e; E = teacher.num_envs)."""

    params_G: Any  # stacked final online parameters (device arrays)
    episodes: rollout.Episodes  # leaves [N, M]: finished training episodes of every stream
    env_steps_per_learner: int
    timing: Timing

    def learner_env_steps(self, num_envs: int) -> np.ndarray:
        """int64 [N, M]: env steps of the learner (all its envs) when each episode ended."""
        return np.asarray(self.episodes.end_step, np.int64) * num_envs


def _episodes_from_returns(ret_NxT: np.ndarray) -> rollout.Episodes:
    """Finished-episode returns (NaN elsewhere) -> padded Episodes [N, M] (end_step 1-based)."""
    done = ~np.isnan(ret_NxT)
    m = max(int(done.sum(1).max(initial=0)), 1)
    n = ret_NxT.shape[0]
    returns = np.full((n, m), np.nan, np.float32)
    lengths = np.zeros((n, m), np.int32)
    end = np.zeros((n, m), np.int32)
    valid = np.zeros((n, m), bool)
    for i in range(n):
        steps = np.flatnonzero(done[i]) + 1
        k = len(steps)
        returns[i, :k], end[i, :k], valid[i, :k] = ret_NxT[i, steps - 1], steps, True
        lengths[i, :k] = np.diff(steps, prepend=0)
    return rollout.Episodes(returns=returns, lengths=lengths, end_step=end, valid=valid)


def train_learners(tcfg: TeacherConfig, env: envs.Env, tasks_GxK: Any, keys_Gx2: Any, *,
                   hparams: dqn.HParams | None = None, progress: bool = False) -> FreshResult:
    """Train G fresh DQN learners (one per row of ``tasks_GxK``) for ``tcfg.total_env_steps``
    env steps each, in memory, and return their training-episode returns vs env steps.

    ``keys_Gx2``: one raw ``jax.random.PRNGKey`` per learner (uint32 [G, 2]). ``hparams``:
    per-learner overrides (default: the config's values for all). Nothing is written to disk.
    """
    tasks = jnp.asarray(tasks_GxK, jnp.int32)
    g = int(tasks.shape[0])
    keys_Gx2 = jnp.asarray(keys_Gx2)
    if keys_Gx2.shape != (g, 2):
        raise ValueError(f"train_learners needs one raw key per learner, [{g}, 2]; got "
                         f"{keys_Gx2.shape}")
    hp = hparams if hparams is not None else dqn.hparams(tcfg, g)
    state, hp, tasks = place(dqn.init(tcfg, env, keys_Gx2, tasks), hp, tasks,
                             require_divisible=False)
    returns: list[np.ndarray] = []
    hooks = _Hooks(output=lambda out, t0, t1: returns.append(np.asarray(out.episode_return_NxT)))
    state, timing = _run_chunks(tcfg, env, state, hp, tasks, record="returns", q_period=0,
                                hooks=hooks, progress=progress,
                                diverged_note="fresh learners (nothing saved)")
    return FreshResult(params_G=state.learners.params,
                       episodes=_episodes_from_returns(np.concatenate(returns, axis=1)),
                       env_steps_per_learner=tcfg.total_env_steps, timing=timing)


# ---------------------------------------------------------------------------------------------
# teach: a whole run on disk, resumable
# ---------------------------------------------------------------------------------------------

ENV_FIELDS = ("name", "sticky_action_prob", "train_tasks")  # the env fields the teacher uses


def _teacher_sections(cfg_dict: dict) -> dict:
    """The parts of a config dict the teacher's artifacts depend on, JSON-normalised."""
    env = cfg_dict.get("env", {})
    raw = {"run.seed": cfg_dict.get("run", {}).get("seed"),
           "env": {k: env.get(k) for k in ENV_FIELDS},
           "teacher": config_lib.teacher_identity(cfg_dict.get("teacher", {})),
           "histories": config_lib.section_identity(config_lib.HistoriesConfig,
                                                    cfg_dict.get("histories", {}))}
    return json.loads(json.dumps(raw, sort_keys=True))


def fingerprint(cfg: ExperimentConfig) -> str:
    """What the teacher's artifacts depend on: run.seed, env name/sticky/train_tasks, the
    teacher and histories sections (a resumed run must match it)."""
    return config_lib.fingerprint(_teacher_sections(config_lib.to_dict(cfg)))


def _config_diff(saved: dict, now: dict) -> list[str]:
    """``key: old -> new`` for every teacher-relevant config difference."""
    return config_lib.config_diff(_teacher_sections(saved), _teacher_sections(now))


def history_config_diff(cfg: ExperimentConfig, stored: dict) -> list[str]:
    """What differs between ``cfg`` and the config a history was written with (``stored``, a
    whole config dict as `climit teach` records it), in what the histories depend on. The
    stored config is read as this version reads configs first, so fields added since count
    at their defaults, as they do in the teacher's fingerprint."""
    return _config_diff(config_lib.as_read_now(stored), config_lib.to_dict(cfg))


_TIMING_PREFIX = "timing_"


class BackgroundAppend:
    """Appends each chunk's transitions to a history on a background thread, while the chunk
    loop runs the next chunk.

    Why: the metrics of MinAtar Breakout (5 learners with histories, one H200, 2026-11-27) fit a
    GPU call into a chunk that returns only once the chunk's while loop has run (presumably the
    host drives it), in which case a write on the loop's own thread left the device idle, 0.19 s
    of every 1.43 s chunk: a chunk drained at a save read 0.19 s and the one after it 2.69 s.
    Measured since only together with :func:`dqn.streams_from_replay` and on another game: Space
    Invaders' chunks took 1.30 s (same H200 type, same day), though that game ran 8% slower than
    Breakout before (H100, no histories). Here one chunk is written at a time, in order
    (:meth:`append` first waits for the one before: two chunks in host memory at most); a
    write's error (a full disk) is raised by the next call.
    """

    def __init__(self, writer: histories.HistoryWriter):
        self.writer = writer
        self._pool = concurrent.futures.ThreadPoolExecutor(1, "climit-histories")
        self._writing: concurrent.futures.Future | None = None

    def append(self, out: dqn.ChunkOut) -> None:
        """Start writing ``out``'s streams (and Q-values), host arrays, after the previous chunk."""
        self.wait()
        s = out.streams
        self._writing = self._pool.submit(self.writer.append, s.obs_NxTxO, s.action_NxT,
                                          s.reward_NxT, s.terminated_NxT, s.truncated_NxT,
                                          out.q_NxTqxA)

    def wait(self) -> None:
        """Until the chunk being written is on disk; its error is raised here."""
        writing, self._writing = self._writing, None
        if writing is not None:
            writing.result()

    def close(self, quiet: bool = False) -> None:
        """Wait for the last write and stop the thread; ``quiet``: the caller is already raising
        its own error, so the write's is only printed."""
        try:
            self.wait()
        except Exception as e:
            if not quiet:
                raise
            print(f"climit: the history write in flight failed too: {e!r}", file=sys.stderr)
        finally:
            self._pool.shutdown()

    def __enter__(self) -> BackgroundAppend:
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        self.close(quiet=exc_type is not None)


class _RunIO:
    """Histories, metrics, checkpoints and snapshots of one teach run (the loop's hooks).

    Checkpoints fall on global chunk numbers (every ``checkpoint_every``-th chunk of the run,
    counted from step 0, and the last), so a resumed run checkpoints at the same steps as an
    uninterrupted one. A snapshot is taken at the first chunk end at or past each requested
    ``snapshot_steps`` entry (exactly there when chunks divide it), and at the end. Histories go
    through a :class:`BackgroundAppend`; every save first waits for its write in flight, so the
    history on disk always reaches the step of each checkpoint, as a resume requires. The caller
    enters ``appender`` (when there is one) around the loop.
    """

    def __init__(self, cfg: ExperimentConfig, start_t: int, writer: histories.HistoryWriter | None,
                 ckpt: checkpoint.Checkpointer, snaps: checkpoint.Checkpointer, metrics: Any):
        self.tcfg = cfg.teacher
        self.writer, self.ckpt, self.snaps, self.metrics = writer, ckpt, snaps, metrics
        self.appender = BackgroundAppend(writer) if writer is not None else None
        self.cfg_dict = config_lib.to_dict(cfg)
        self.last_time = time.perf_counter()
        self.save_s: float | None = None
        self.total_t = self.tcfg.total_env_steps // self.tcfg.num_envs
        self.pending_snaps = [s for s in self.tcfg.snapshot_steps
                              if s > start_t * self.tcfg.num_envs]

    def output(self, out: dqn.ChunkOut, t0: int, t1: int) -> None:
        if self.writer is None:  # not process 0: it has gathered the chunk, process 0 writes it
            return
        self.appender.append(out)
        stats, now = out.stats, time.perf_counter()
        episodes, g, updates = (int(stats.episodes_G.sum()), len(stats.episodes_G),
                                int(stats.loss_count))
        wall, self.last_time = now - self.last_time, now
        record = {
            "step": t1 * self.tcfg.num_envs, "vector_steps": t1, "episodes": episodes,
            "return_mean": float(stats.return_sum_G.sum() / episodes) if episodes else None,
            **{name: float(sum_G.sum() / (updates * g)) if updates else None
               for name, sum_G in stats.update_sum_G._asdict().items()},
            "td_updates": updates, "wall_s": round(wall, 4),
            "env_steps_per_s": g * (t1 - t0) * self.tcfg.num_envs / max(wall, 1e-9)}
        if self.save_s is not None:  # the checkpoint/snapshot saved just before this chunk
            record["save_s"], self.save_s = round(self.save_s, 4), None
        self.metrics.log(record)

    def _checkpoint_due(self, t1: int) -> bool:
        chunk_number = -(-t1 // self.tcfg.chunk_steps)
        return chunk_number % self.tcfg.checkpoint_every == 0 or t1 >= self.total_t

    def _snapshot_due(self, t1: int) -> bool:
        return t1 >= self.total_t or (bool(self.pending_snaps)
                                      and self.pending_snaps[0] <= t1 * self.tcfg.num_envs)

    def needs_sync(self, t1: int) -> bool:
        return self._checkpoint_due(t1) or self._snapshot_due(t1)

    def sync(self, state: dqn.TrainState, t1: int, timing: Timing) -> None:
        # The pipeline is drained here: time from now to the next chunk's output is that chunk's
        # alone, and the time spent here (the history write in flight, then the saves) goes in
        # that record's ``save_s``, not its ``wall_s``.
        start, step = time.perf_counter(), t1 * self.tcfg.num_envs
        if self.appender is not None:
            self.appender.wait()
        if self._snapshot_due(t1):
            requested = [s for s in self.pending_snaps if s <= step]
            self.pending_snaps = [s for s in self.pending_snaps if s > step]
            self.snaps.save(step, {"params": state.learners.params}, config=self.cfg_dict,
                            metrics={"env_steps": step,
                                     "requested": requested[0] if requested else step})
        if self._checkpoint_due(t1):
            self._save(state, t1, timing)
        self.last_time = time.perf_counter()
        self.save_s = self.last_time - start

    def save_before_stop(self, state: dqn.TrainState, t1: int, timing: Timing) -> None:
        """The checkpoint of a requested stop (after :meth:`sync`): off the schedule, at ``t1``.
        Resuming from any chunk end gives what an uninterrupted run gives."""
        if not self._checkpoint_due(t1):
            self._save(state, t1, timing)

    def _save(self, state: dqn.TrainState, t1: int, timing: Timing) -> None:
        step = t1 * self.tcfg.num_envs
        self.ckpt.save(step, state, config=self.cfg_dict, metrics={
            "env_steps": step, **{_TIMING_PREFIX + k: v for k, v in timing.to_json().items()}})


def _tree_bytes(tree: Any) -> int:
    """Bytes of every array of a tree of arrays or ``jax.ShapeDtypeStruct``."""
    return sum(int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


def num_learners(cfg: ExperimentConfig) -> int:
    """G = sweep points x ``env.train_tasks`` x ``teacher.seeds`` (what :func:`plan` lays out),
    counted without laying anything out."""
    return len(dqn.sweep_points(cfg.teacher)) * cfg.env.train_tasks * cfg.teacher.seeds


def _abstract_state(tcfg: TeacherConfig, env: envs.Env, g: int) -> dqn.TrainState:
    """Shapes and dtypes of the whole state of ``g`` learners (``jax.ShapeDtypeStruct``
    leaves; nothing is allocated or run, so an impossible size is caught before it is)."""
    keys_Gx2 = jax.ShapeDtypeStruct((g, 2), jnp.uint32)
    tasks = jax.ShapeDtypeStruct((g, env.spec.task_dim), jnp.int32)
    return jax.eval_shape(lambda k, t: dqn.init(tcfg, env, k, t), keys_Gx2, tasks)


def _restore_step(cfg: ExperimentConfig, ckpt: checkpoint.Checkpointer, step: int,
                  target: dqn.TrainState) -> tuple[dqn.TrainState, Timing]:
    """The state saved at ``step`` and the timing of the run up to it.

    Raises:
        ClimitError: the step was saved by another config. ArtifactError: the step is damaged.
    """
    meta = ckpt.metadata(step)
    diffs = _config_diff(meta["config"], config_lib.to_dict(cfg))
    if diffs:
        raise ClimitError(f"{ckpt.directory.parent} holds a teacher run with another config "
                          f"({'; '.join(diffs[:4])}); choose another run.name or remove that "
                          f"directory")
    timing = Timing(**{k[len(_TIMING_PREFIX):]: v for k, v in meta["metrics"].items()
                       if k.startswith(_TIMING_PREFIX)})
    return ckpt.restore(step, target=target), timing


def _restore_latest(cfg: ExperimentConfig, ckpt: checkpoint.Checkpointer, target: dqn.TrainState,
                    log: Callable[[str], None]) -> tuple[dqn.TrainState | None, int | None, Timing]:
    """The newest checkpoint of this config's run that restores, or (None, None, Timing()) when
    there is none: fresh learners are made by the caller, after the disk check, so an
    impossible size fails at once instead of after allocating it.

    ``target``: the state's shapes (:func:`_abstract_state`). A damaged checkpoint (a flipped
    byte, a truncated file) is skipped with a logged warning and the one before it is restored:
    the run then redoes the steps after that one, its history and metrics cut back to it as on
    any resume, and re-saves the damaged step when it gets there.

    Raises:
        ClimitError: the run was saved by another config. ArtifactError: every checkpoint is
        damaged.
    """
    newest = ckpt.restore_newest(lambda step: _restore_step(cfg, ckpt, step, target), log,
                                 "teacher")
    if newest is None:
        return None, None, Timing()
    step, (state, timing) = newest
    return state, step, timing


def _earlier_artifacts(hist_dir: Path,
                       snaps: checkpoint.Checkpointer) -> list[tuple[str, Path, dict]]:
    """(description, path, stored config) of a history and snapshots already in the run.

    Raises:
        ArtifactError: their stored metadata cannot be read.
    """
    found = []
    if histories.is_history(hist_dir):
        h = histories.open(hist_dir)
        if h.num_steps:  # an empty one (a run that failed before its first chunk) holds nothing
            found.append((f"the history ({h.num_steps} steps per stream)", hist_dir, h.config))
    if snaps.steps():
        found.append((f"{len(snaps.steps())} snapshots", snaps.directory,
                      snaps.metadata()["config"]))
    return found


def finished_summary(cfg: ExperimentConfig, out_dir: Path) -> dict | None:
    """The summary of a teacher run of ``cfg`` in ``out_dir`` that finished and is intact: its
    summary.json carries this config's fingerprint, its histories hold every planned step and
    every chunk's checksum, and its latest checkpoint, if any is left, verifies. None otherwise:
    then the run resumes from its newest good checkpoint, which reports (or repairs) whatever is
    damaged. Reading the checksums costs seconds; a resume would compile and evaluate again.
    With no checkpoint (deleted to free space: they hold whole replay buffers) there is nothing
    to repair, and starting over would rewrite a complete history."""
    ckpt_dir = out_dir / "checkpoints"
    try:
        summary = jsonfile.read(out_dir / "summary.json")
        history = histories.open(out_dir / "histories")
        if not (summary.get("fingerprint") == fingerprint(cfg) and history.complete):
            return None
        history.verify()
        steps = checkpoint.complete_steps(ckpt_dir) if ckpt_dir.exists() else []
        if steps:
            checkpoint.verify_step(ckpt_dir / str(steps[-1]))
    except (OSError, ValueError, ArtifactError):
        return None
    return summary


def _saved_fingerprint(summary: Path) -> str | None:
    """The config fingerprint stored in summary.json (None when there is no summary).

    Raises:
        ArtifactError: the summary is unreadable.
    """
    if not summary.is_file():
        return None
    return jsonfile.read(summary, "the teacher's summary").get("fingerprint")


def _check_earlier_run(cfg: ExperimentConfig, out_dir: Path, hist_dir: Path,
                       snaps: checkpoint.Checkpointer, log: Callable[[str], None]) -> None:
    """With no checkpoint to resume, refuse to overwrite what a run of another config left.

    The checkpoint's config check cannot see a run whose ``checkpoints/`` was deleted; starting
    over would then wipe its (maybe complete) history and leave its snapshots beside the new
    ones. So the history's and snapshots' stored configs and summary.json's fingerprint must
    match this config; when they do, starting over rewrites them, and the log says so.

    Raises:
        ClimitError: naming the differences and the directory.
    """
    advice = f"choose another run.name, or remove {out_dir} to start the teacher over"
    try:
        found = _earlier_artifacts(hist_dir, snaps)
        fingerprint_saved = _saved_fingerprint(out_dir / "summary.json")
    except ArtifactError as e:
        raise ClimitError(f"{out_dir} holds no checkpoint, and what an earlier run left there "
                          f"cannot be checked against this config ({e}); {advice}") from None
    now = config_lib.to_dict(cfg)
    for what, where, saved in found:
        diffs = _config_diff(saved, now)
        if diffs:
            raise ClimitError(f"{where} holds {what} of a teacher run with another config "
                              f"({'; '.join(diffs[:4])}) and no checkpoint to resume, so starting "
                              f"over would overwrite it; {advice}")
    if fingerprint_saved not in (None, fingerprint(cfg)):
        raise ClimitError(f"{out_dir / 'summary.json'} is the summary of a teacher run with "
                          f"another config (fingerprint {fingerprint_saved}, now "
                          f"{fingerprint(cfg)}) and there is no checkpoint to resume; {advice}")
    left = [f"{what} in {where}" for what, where, _ in found]
    left += ["summary.json"] if fingerprint_saved is not None else []
    if left:
        log(f"teacher: no checkpoint in {out_dir / 'checkpoints'}: starting over; what an earlier "
            f"run of this config left ({', '.join(left)}) is rewritten")


def _disk_needs(cfg: ExperimentConfig, env_spec: envs.EnvSpec, shape: dqn.TrainState, p: Plan,
                start_t: int, q_period: int, saved_checkpoints: int) -> dict[str, int]:
    """Bytes the rest of the run writes, by kind.

    histories: every transition still to come, uncompressed (an upper bound). checkpoints: the
    whole state (replay buffers included) ``keep_checkpoints + 1`` times, as many exist during a
    save, less those already on disk. snapshots: the parameters at every snapshot step still
    ahead, and at the end. Each saved step adds ``checkpoint.STEP_OVERHEAD_BYTES``.
    """
    tcfg = cfg.teacher
    e, total_t = tcfg.num_envs, tcfg.total_env_steps // tcfg.num_envs
    if start_t >= total_t:  # finished but for its summary: nothing more goes to disk
        return {"histories": 0, "checkpoints": 0, "snapshots": 0}
    start_step = start_t * e
    snaps_ahead = sum(start_step < s < tcfg.total_env_steps for s in tcfg.snapshot_steps) + 1
    checkpoints_ahead = max(tcfg.keep_checkpoints + 1 - saved_checkpoints, 0)
    overhead = checkpoint.STEP_OVERHEAD_BYTES
    return {
        "histories": histories.estimate_bytes(env_spec, p.num_learners * e, total_t - start_t,
                                              q_period),
        "checkpoints": checkpoints_ahead * (_tree_bytes(shape) + overhead),
        "snapshots": snaps_ahead * (_tree_bytes(shape.learners.params) + overhead),
    }


def _check_memory(tcfg: TeacherConfig, shape: dqn.TrainState, g: int) -> None:
    """Raise ClimitError when the learners' state alone (replay buffers, networks, optimizer)
    cannot fit in device memory, before anything is allocated. It is a lower bound on what
    training needs, so this only stops a run that would certainly fail (or hang swapping).
    """
    limit, where = parallel.device_memory()
    need = _tree_bytes(shape) // jax.device_count()  # learners are sharded over the devices
    if limit is None or need <= limit:
        return
    size = histories.human_bytes
    raise ClimitError(f"the teacher's {g} learners do not fit in memory: their state (replay "
                      f"buffers of teacher.buffer_size={tcfg.buffer_size} transitions each, "
                      f"networks and optimizer) takes {size(need)} per device, more than the "
                      f"{size(limit)} of {where}; lower teacher.buffer_size, run fewer learners "
                      f"(teacher.seeds, env.train_tasks, sweep points), or use more devices")


def _check_disk(cfg: ExperimentConfig, env_spec: envs.EnvSpec, shape: dqn.TrainState, p: Plan,
                start_t: int, step: int | None, q_period: int, saved_checkpoints: int,
                out_dir: Path, log: Callable[[str], None]) -> None:
    """Log what the rest of the run writes, and raise ClimitError if the disk cannot hold it.

    Sizes come from ``shape`` (:func:`_abstract_state`), so this runs before fresh learners
    are allocated. Every process stops here alike, with the message (none runs on into a
    collective that process 0 never joins): they all judge process 0's measurement of the
    shared run directory.
    """
    tcfg = cfg.teacher
    needs = _disk_needs(cfg, env_spec, shape, p, start_t, q_period, saved_checkpoints)
    sizes = ", ".join(f"{kind} {histories.human_bytes(n)}" for kind, n in needs.items())
    log(f"teacher: {p.num_learners} learners x {tcfg.num_envs} envs x {tcfg.total_env_steps} env "
        f"steps on {cfg.env.name}; to write at {out_dir}: {sizes} (histories uncompressed, an "
        f"upper bound; checkpoints up to {tcfg.keep_checkpoints + 1} whole states with replay "
        "buffers)"
        + (f"; resuming from env step {step}" if step is not None else ""))
    free = parallel.primary_bytes(histories.free_bytes(out_dir))
    histories.check_disk(out_dir, sum(needs.values()), free_fn=lambda _: free,
                         what=f"the teacher run ({sizes})")


def _divergence_note(ckpt: checkpoint.Checkpointer) -> str:
    """What a diverged run keeps (read when the divergence is found, not before training)."""
    step = ckpt.latest_step()
    if step is None:
        return f"no checkpoint was saved before it in {ckpt.directory}"
    return f"the last good checkpoint (env step {step}) is kept in {ckpt.directory}"


def _open_histories(cfg: ExperimentConfig, env_spec: envs.EnvSpec, p: Plan, hist_dir: Path,
                    step: int | None, start_t: int, q_period: int) -> histories.HistoryWriter:
    """A fresh history (no checkpoint yet) or the existing one cut back to ``start_t``."""
    tcfg = cfg.teacher
    if step is not None:
        return histories.resume(hist_dir, start_t)
    return histories.create(hist_dir, spec=env_spec, streams=p.stream_infos(tcfg.num_envs),
                            config=config_lib.to_dict(cfg), q_period=q_period,
                            streams_per_chunk=cfg.histories.streams_per_chunk,
                            compression_level=cfg.histories.compression_level,
                            total_steps=tcfg.total_env_steps // tcfg.num_envs, overwrite=True,
                            check_space=False)


def _metrics_logger(cfg: ExperimentConfig, out_dir: Path, step: int | None) -> Any:
    """``out_dir/metrics.jsonl`` cut back to ``step`` (process 0; a no-op context elsewhere)."""
    from climit.metrics import MetricsLogger

    logger = parallel.on_primary(lambda: MetricsLogger(
        out_dir / "metrics.jsonl", resume_step=step, tensorboard=cfg.run.tensorboard,
        wandb_project=cfg.run.wandb_project, run_name=cfg.run.name,
        config=config_lib.to_dict(cfg)), "opening the teacher's metrics.jsonl")
    return logger or contextlib.nullcontext()


def _train_on_disk(cfg: ExperimentConfig, env: envs.Env, p: Plan, state: dqn.TrainState,
                   step: int | None, timing: Timing, ckpt: checkpoint.Checkpointer,
                   snaps: checkpoint.Checkpointer, *, q_period: int, progress: bool,
                   stop_hook: Callable[[int], None] | None) -> tuple[dqn.TrainState, Timing]:
    """The chunk loop writing histories and metrics (process 0), checkpoints and snapshots.

    The history writer is closed however the loop ends (its compression threads released; every
    chunk written so far stays on disk).
    """
    start_t = int(state.t)
    hist_dir = ckpt.directory.parent / "histories"
    writer = parallel.on_primary(
        lambda: _open_histories(cfg, env.spec, p, hist_dir, step, start_t, q_period),
        "opening the learning histories")
    # The metrics logger is opened inside the writer's ``with``: if it fails, the writer closes.
    with writer or contextlib.nullcontext(), _metrics_logger(cfg, ckpt.directory.parent,
                                                             step) as metrics:
        io = _RunIO(cfg, start_t, writer, ckpt, snaps, metrics)
        hooks = _Hooks(output=io.output, needs_sync=io.needs_sync, sync=io.sync,
                       save_before_stop=io.save_before_stop)
        state, hp, tasks = place(state, p.hparams, p.tasks_GxK)
        # Leaving the appender waits for the last history write (see BackgroundAppend.close).
        with io.appender or contextlib.nullcontext():
            return _run_chunks(cfg.teacher, env, state, hp, tasks, record="full",
                               q_period=q_period, hooks=hooks, timing=timing, progress=progress,
                               diverged_note=lambda: _divergence_note(ckpt), stop_hook=stop_hook)


def teach(cfg: ExperimentConfig, run_dir: str | Path, *, progress: bool = True,
          log: Callable[[str], None] = print,
          stop_hook: Callable[[int], None] | None = None) -> dict:
    """Train the config's learners, writing ``run_dir/teacher/``; resumes if interrupted.

    Resumes from the newest checkpoint that restores (a damaged one is skipped with a warning).
    Before any work -- before the learners' state is allocated, from its shapes alone -- the
    state is checked to fit in device memory and the disk for the histories, checkpoints and
    snapshots still to be written. A resume verifies the checksum of every history chunk it
    keeps. Returns the summary (also written to ``run_dir/teacher/summary.json``).
    ``stop_hook(k)`` is called after chunk k (tests use it to simulate a kill).

    Raises:
        ClimitError: the directory holds a run with another config (in its checkpoints, or with
            no checkpoint, in its history, snapshots or summary); the state does not fit in
            memory; the disk is too small, or filled up during the run (rerunning after freeing
            space resumes it); every checkpoint is damaged, or the history a resume continues
            is damaged or shorter than its checkpoint (ArtifactError).
        TrainingDiverged: NaN/Inf loss; the last good checkpoint stays on disk.
    """
    tcfg = cfg.teacher
    parallel.initialize()
    primary = parallel.is_primary()  # several processes: process 0 writes files and logs
    log = log if primary else (lambda msg: None)
    out_dir = Path(run_dir) / "teacher"
    done = finished_summary(cfg, out_dir)
    if done is not None:
        log(f"teacher: already finished at {out_dir} (same config, complete histories); nothing "
            f"to do")
        return done
    out_dir.mkdir(parents=True, exist_ok=True)
    env = envs.make(cfg.env.name, cfg.env.sticky_action_prob)
    g, e = num_learners(cfg), tcfg.num_envs
    q_period = tcfg.q_log_period if cfg.histories.record_q else 0
    hist_dir, ckpt_dir = out_dir / "histories", out_dir / "checkpoints"
    # Shapes only: sizes are checked against memory and disk before anything is allocated.
    shape = _abstract_state(tcfg, env, g)
    _check_memory(tcfg, shape, g)
    p = plan(cfg)

    with checkpoint.full_disk_is_a_clear_error(out_dir, ckpt_dir, "the teacher run", "env step"), \
            checkpoint.Checkpointer(ckpt_dir, keep=tcfg.keep_checkpoints) as ckpt, \
            checkpoint.snapshots(out_dir / "snapshots") as snaps:
        if snaps.set_aside_on_open:
            log(f"teacher: warning: the snapshots at steps {snaps.set_aside_on_open} are damaged "
                f"(their metrics file is not JSON) and were moved to {snaps.damaged_dir}; this "
                f"run writes only the snapshots still ahead of it")
        state, step, timing = _restore_latest(cfg, ckpt, shape, log)
        if step is None:
            _check_earlier_run(cfg, out_dir, hist_dir, snaps, log)
        _check_disk(cfg, env.spec, shape, p, 0 if state is None else int(state.t), step, q_period,
                    len(ckpt.steps()), out_dir, log)
        if state is None:
            state = dqn.init(tcfg, env, jnp.asarray(p.keys_Gx2), jnp.asarray(p.tasks_GxK))
        state, timing = _train_on_disk(cfg, env, p, state, step, timing, ckpt, snaps,
                                       q_period=q_period, progress=progress and primary,
                                       stop_hook=stop_hook)

    final = evaluate_greedy(tcfg, env, state.learners.params, p.tasks_GxK,
                            keys.teacher_eval(cfg.run.seed),
                            tcfg.eval_episodes)
    summary = {
        "env": cfg.env.name, "num_learners": g, "num_envs": e,
        "env_steps_per_learner": tcfg.total_env_steps,
        "final_return_mean": float(final.mean()),
        "final_return_per_learner": [float(x) for x in final],
        "eval_episodes": tcfg.eval_episodes,
        **{k: float(v) for k, v in timing.rates().items()},
        "resumed_from_env_step": step,
        "learners": [{"learner": i, "task": p.tasks_GxK[i].tolist(), "seed": int(p.seed_G[i]),
                      "sweep_point": int(p.point_G[i])} for i in range(g)],
        "sweep_points": dqn.sweep_points(tcfg),
        "fingerprint": fingerprint(cfg),
    }
    if primary:
        jsonfile.write_atomic(out_dir / "summary.json", json.dumps(summary, indent=1).encode())
    log(f"teacher: final greedy return {summary['final_return_mean']:.3f} (mean of {g}); "
        f"{summary['env_steps_per_s']:.3g} env steps/s, {summary['td_updates_per_s']:.3g} TD "
        f"updates/s (compile {timing.compile_s:.1f} s) -> {out_dir / 'summary.json'}")
    return summary


# ---------------------------------------------------------------------------------------------
# Loading a trained teacher (notebooks, climit inspect)
# ---------------------------------------------------------------------------------------------

class LoadedTeacher(NamedTuple):
    """The Q-networks of every learner of a teacher run at one step.

    ``params`` leaves are stacked [G, ...] in learner order (as ``summary.json``'s
    ``learners`` lists them); ``tasks_GxK`` is each learner's own task.
    """

    params: Any
    config: ExperimentConfig
    step: int
    tasks_GxK: np.ndarray
    directory: Path  # the snapshots or checkpoints directory the step came from

    def q_values(self, obs_GxBxO: Any) -> jax.Array:
        """Q-values [G, B, A] of each learner on its own batch of B observations."""
        env = envs.make(self.config.env.name, self.config.env.sticky_action_prob)
        q = dqn.q_fn(self.config.teacher, env.spec)
        return jax.vmap(jax.vmap(q, in_axes=(None, 0)))(self.params, jnp.asarray(obs_GxBxO))


def _teacher_step_dirs(path: Path) -> list[Path]:
    """The checkpoint directories ``path`` names: itself, or a run's (or its teacher's)
    snapshots and checkpoints."""
    if checkpoint.is_checkpoint_dir(path):
        return [path]
    teacher = path / "teacher" if (path / "teacher").is_dir() else path
    dirs = [d for d in (teacher / "snapshots", teacher / "checkpoints")
            if checkpoint.is_checkpoint_dir(d)]
    if not dirs:
        raise ArtifactError(f"no teacher snapshots or checkpoints at {path}; expected a run "
                            f"directory, its teacher/ or one of teacher/{{snapshots,checkpoints}}")
    return dirs


def load(path: str | Path, step: int | str = "latest") -> LoadedTeacher:
    """The learners' Q-network parameters at ``step`` (a number, or 'latest') from a run
    directory, its ``teacher/``, or one of ``teacher/{snapshots,checkpoints}``. With a run or
    teacher directory the step is looked up in the snapshots (kept for good at log-spaced
    steps) and then in the checkpoints (the latest few); 'latest' is the newest of both. Only
    the parameters are read: a checkpoint's optimizer state and replay buffers stay on disk.

    Raises:
        ArtifactError: nothing to load there, no such step, damaged files, or a stored config
            that plans a different number of learners than are stored.
    """
    path = Path(path)
    dirs = _teacher_step_dirs(path)
    steps = {d: checkpoint.complete_steps(d) for d in dirs}
    if step == "latest":
        step = max(s for ss in steps.values() for s in ss)
    source = next((d for d in dirs if int(step) in steps[d]), None)
    if source is None:
        saved = sorted({s for ss in steps.values() for s in ss})
        raise ArtifactError(f"no teacher step {step} at {path}; saved steps: {saved}")
    with checkpoint.Checkpointer(source, readonly=True) as ck:
        meta = ck.metadata(int(step))
        root = ("learners/params" if any(k.startswith("learners/") for k in meta["tree"])
                else "params")
        tree = ck.restore(int(step), only=(root + "/",))
    try:
        cfg = config_lib.from_dict(meta["config"])
    except config_lib.ConfigError as e:
        raise ArtifactError(f"the config stored in {source} is not valid for this climit "
                            f"version ({e})") from None
    params = tree["learners"]["params"] if root == "learners/params" else tree["params"]
    tasks_GxK = plan(cfg).tasks_GxK
    stored = {int(x.shape[0]) for x in jax.tree.leaves(params)}
    if stored != {len(tasks_GxK)}:
        raise ArtifactError(f"{source} step {step} stores {sorted(stored)} learners but its "
                            f"config plans {len(tasks_GxK)}")
    return LoadedTeacher(jax.tree.map(jnp.asarray, params), cfg, int(step), np.asarray(tasks_GxK),
                         source)
