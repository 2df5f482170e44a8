"""The DQN learner as pure functions, vmapped over one flat learner axis G.

G = hyperparameter points x tasks x seeds. Every learner has its own task (int32 [K]), PRNG key
and scalar hyperparameters (:class:`HParams`, leaves [G]), so a seed sweep, a task sweep and a
learning-rate sweep are one compiled program. Shape fields (widths, buffer size, batch, number
of envs) stay static in :class:`~climit.config.TeacherConfig`.

All learners step in lockstep, so the step counter ``t`` (vector env steps done) and the update
counter are scalars of the whole :class:`TrainState`, not per learner. Learning starts, the
replay ratio and hard target copies are decided from them *outside* the vmap: a ``lax.cond`` on
an unbatched predicate stays a real branch (under vmap it would become a select that runs both
branches every step). Past learning starts, the driver runs chunks whose update
rounds are scheduled statically instead (:func:`schedulable`): a GPU copies a cond's predicate
to the host, which then cannot queue ahead. Not with one env, one vector step and one TD update
per round (every Dark Room, Key-to-Door and MinAtar preset but the 10^9-step one): XLA then
fuses the step's replay write into the update's sampling and copies every buffer twice per step,
so those chunks keep the cond.

    state = init(tcfg, env, keys_Gx2, tasks_GxK)   # raw uint32 keys, one per learner
    chunk = make_chunk(tcfg, env, length=1000, record="full")
    state, out = chunk(state, hparams_G, tasks_GxK)      # jitted lax.scan over 1000 vector steps

Acting goes through :func:`climit.rollout.step` (the one rollout primitive), with the same
epsilon-greedy and masking rules as every other policy in climit.

Axis letters: G learners, E envs per learner, N = G*E streams, T time, B batch, O observation,
A (padded) actions.
"""

from __future__ import annotations

import functools
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from climit import envs, keys, rollout
from climit.config import TeacherConfig
from climit.teacher import networks, replay

Record = Literal["stats", "returns", "full"]


class HParams(NamedTuple):
    """Scalar hyperparameters that may differ per learner (float32 leaves; [G] when stacked)."""

    lr: jax.Array
    gamma: jax.Array
    eps_end: jax.Array
    eps_decay_steps: jax.Array
    tau: jax.Array


def hparams(tcfg: TeacherConfig, n: int = 1, **values: Any) -> HParams:
    """HParams [n] from the config, with ``values`` (scalars or [n] arrays) replacing fields.

    A value for anything else is refused: ``teacher.sweep`` accepts the names of
    ``TeacherConfig.SWEEPABLE``, which must be these fields (a test checks), and a swept value
    that no field took would leave every learner at the config's value.
    """
    unknown = sorted(set(values) - set(HParams._fields))
    if unknown:
        raise ValueError(f"not per-learner hyperparameters: {', '.join(unknown)} "
                         f"(those are {', '.join(HParams._fields)})")
    fields = {f: np.broadcast_to(np.asarray(values.get(f, getattr(tcfg, f)), np.float32), (n,))
              for f in HParams._fields}
    return HParams(**{f: jnp.asarray(v) for f, v in fields.items()})


def sweep_points(tcfg: TeacherConfig) -> list[dict[str, float]]:
    """The points of ``teacher.sweep`` (values zipped into one axis); one empty point if none."""
    if not tcfg.sweep:
        return [{}]
    n = len(next(iter(tcfg.sweep.values())))
    return [{k: float(v[i]) for k, v in tcfg.sweep.items()} for i in range(n)]


@struct.dataclass
class Learner:
    """One learner's whole state (leaves gain a leading [G] axis when stacked)."""

    params: Any
    target_params: Any
    opt_state: Any
    replay: replay.Replay
    envs: rollout.RolloutState  # leaves [E, ...]
    episode_return_E: jax.Array  # float32: return so far of each env's current episode
    key: jax.Array  # raw uint32 [2]: TD-update sampling


@struct.dataclass
class TrainState:
    """Every learner, stacked, plus the lockstep counters."""

    learners: Learner  # leaves [G, ...]
    t: jax.Array  # int32 []: vector env steps done by every learner
    updates: jax.Array  # int32 []: TD updates done by every learner


class UpdateStats(NamedTuple):
    """What one TD update reports of one learner (float32 []; [G] stacked, [U, G] per round).

    A chunk sums every field over its updates and the run logs each sum over the update count
    as a metric of that name: a new field here is a new column of metrics.jsonl.
    """

    loss: jax.Array  # the update's mean TD loss over its batch


class ChunkStats(NamedTuple):
    """Per-learner summaries of one chunk (always returned; small)."""

    episodes_G: jax.Array  # int32: episodes finished
    return_sum_G: jax.Array  # float32: summed returns of those episodes
    update_sum_G: UpdateStats  # float32 leaves [G]: each field summed over the chunk's updates
    loss_count: jax.Array  # int32 []: TD updates in the chunk (same for every learner)
    params_finite_G: jax.Array  # bool: online params all finite at the chunk's end (a finite
    #                             loss can still leave inf weights, e.g. an inf gradient norm)


class Streams(NamedTuple):
    """Every transition of the chunk, one row per stream n = g*E + e."""

    obs_NxTxO: jax.Array  # storage dtype: the observation acted on
    action_NxT: jax.Array  # uint8
    reward_NxT: jax.Array  # float32
    terminated_NxT: jax.Array  # bool
    truncated_NxT: jax.Array  # bool


class ChunkOut(NamedTuple):
    stats: ChunkStats
    episode_return_NxT: jax.Array | None  # float32, NaN except where an episode ended
    streams: Streams | None  # record == "full"
    q_NxTqxA: jax.Array | None  # float16, at steps 0, q, 2q, ... of the chunk (record == "full")


# ---------------------------------------------------------------------------------------------
# Building blocks (one learner)
# ---------------------------------------------------------------------------------------------

def network(tcfg: TeacherConfig, spec: envs.EnvSpec) -> networks.QNet:
    return networks.QNet(kind=tcfg.network, obs_shape=tuple(spec.obs_shape),
                         num_actions=spec.num_actions, hidden=tuple(tcfg.hidden),
                         dueling=tcfg.dueling, activation=tcfg.activation,
                         action_mask=tuple(bool(m) for m in spec.action_mask))


def optimizer(tcfg: TeacherConfig) -> optax.GradientTransformation:
    """Clip, then Adam or centred RMSProp *directions*; the per-learner lr scales them after.

    It runs on the parameters raveled into one vector (its moments are one vector each): on a
    GPU, one learner's update is launch-bound, and per-leaf moments and norms cost a kernel per
    leaf (8 for the dueling MLP); raveled, one learner trained 7% faster (H200, 2026-11-27).
    """
    parts = [optax.clip_by_global_norm(tcfg.max_grad_norm)] if tcfg.max_grad_norm > 0 else []
    if tcfg.optimizer == "adam":
        parts.append(optax.scale_by_adam(eps=tcfg.opt_eps))
    else:  # centred RMSProp as in the MinAtar paper (torch: eps outside the square root)
        parts.append(optax.scale_by_stddev(decay=tcfg.rms_decay, eps=tcfg.opt_eps,
                                           eps_in_sqrt=False))
    return optax.flatten(optax.chain(*parts))


def epsilon(tcfg: TeacherConfig, hp: HParams, env_steps: jax.Array) -> jax.Array:
    """``eps_start`` until learning starts, then linear to ``eps_end`` over ``eps_decay_steps``
    env steps (the MinAtar-paper schedule; env steps per learner, all its envs together)."""
    frac = jnp.clip((env_steps - tcfg.learning_starts) / hp.eps_decay_steps, 0.0, 1.0)
    return tcfg.eps_start + frac * (hp.eps_end - tcfg.eps_start)


def lr_scale(tcfg: TeacherConfig, env_steps: jax.Array) -> jax.Array:
    """1 until learning starts, then linear to ``lr_final_frac`` at ``total_env_steps``."""
    span = max(tcfg.total_env_steps - tcfg.learning_starts, 1)
    frac = jnp.clip((env_steps - tcfg.learning_starts) / span, 0.0, 1.0)
    return 1.0 - frac * (1.0 - tcfg.lr_final_frac)


def td_target(reward_B: jax.Array, terminated_B: jax.Array, gamma: jax.Array,
              q_next_target_BxA: jax.Array, q_next_online_BxA: jax.Array | None,
              mask_A: jax.Array) -> jax.Array:
    """r + gamma * (1 - terminated) * Q_target(s', a*), float32 [B].

    a* = masked argmax of the online net (Double DQN) or of the target net (plain DQN). Only
    ``terminated`` stops the bootstrap: a time-limit truncation is stored with
    ``terminated=False`` and ``s'`` = the final observation, so it bootstraps.
    """
    chooser = q_next_target_BxA if q_next_online_BxA is None else q_next_online_BxA
    a_B = jnp.argmax(jnp.where(mask_A, chooser, -jnp.inf), axis=-1)
    v_B = jnp.take_along_axis(q_next_target_BxA, a_B[:, None], axis=-1)[:, 0]
    return reward_B + gamma * (1.0 - terminated_B.astype(jnp.float32)) * v_B


def td_loss(tcfg: TeacherConfig, net: networks.QNet, params: Any, target_params: Any,
            batch: replay.Batch, gamma: jax.Array) -> jax.Array:
    """Mean Huber (delta 1) or squared (0.5 e^2) TD error over the batch."""
    mask_A = jnp.asarray(net.action_mask)
    q_next_target = networks.apply(net, target_params, batch.next_obs_BxO)
    q_next_online = (networks.apply(net, jax.lax.stop_gradient(params), batch.next_obs_BxO)
                     if tcfg.double else None)
    y_B = jax.lax.stop_gradient(td_target(batch.reward_B, batch.terminated_B, gamma,
                                          q_next_target, q_next_online, mask_A))
    q_B = jnp.take_along_axis(networks.apply(net, params, batch.obs_BxO),
                              batch.action_B[:, None], axis=-1)[:, 0]
    err_B = q_B - y_B
    if tcfg.loss == "huber":
        return jnp.mean(optax.huber_loss(err_B, delta=1.0))
    return jnp.mean(0.5 * err_B**2)


def td_update(tcfg: TeacherConfig, net: networks.QNet, learner: Learner, hp: HParams,
              count: jax.Array) -> tuple[Learner, UpdateStats]:
    """One TD update of one learner from ``count`` stored transitions: (learner, its stats)."""
    key, sample_key = jax.random.split(learner.key)
    batch = replay.sample(learner.replay, count, sample_key, tcfg.batch_size)
    loss, grads = jax.value_and_grad(td_loss, argnums=2)(tcfg, net, learner.params,
                                                        learner.target_params, batch, hp.gamma)
    direction, opt_state = optimizer(tcfg).update(grads, learner.opt_state, learner.params)
    lr = hp.lr * lr_scale(tcfg, count)
    params = jax.tree.map(lambda p, d: p - lr * d, learner.params, direction)
    target = learner.target_params
    if tcfg.target == "polyak":
        target = optax.incremental_update(params, target, hp.tau)
    return learner.replace(params=params, target_params=target, opt_state=opt_state,
                           key=key), UpdateStats(loss=loss)


def act_step(tcfg: TeacherConfig, env: envs.Env, net: networks.QNet, learner: Learner,
             hp: HParams, task_K: jax.Array, t: jax.Array) -> tuple[Learner, rollout.Transition,
                                                                      jax.Array]:
    """One epsilon-greedy step of every env of one learner, stored in its replay buffer.

    Returns (learner, transitions [E], finished-episode return [E] (NaN where none ended)).
    """
    num_envs = tcfg.num_envs
    eps = epsilon(tcfg, hp, t * num_envs)
    policy = rollout.q_policy(functools.partial(networks.apply, net), net.action_mask)
    step_E = jax.vmap(lambda rs: rollout.step(env, policy, (learner.params, eps), (), rs, task_K))
    _, rs, tr = step_E(learner.envs)
    buf = replay.add(learner.replay, t * num_envs, tr.obs, tr.action, tr.reward, tr.final_obs,
                     tr.terminated)
    done_E = tr.terminated | tr.truncated
    ret_E = learner.episode_return_E + tr.reward
    finished_E = jnp.where(done_E, ret_E, jnp.nan)
    learner = learner.replace(replay=buf, envs=rs, episode_return_E=jnp.where(done_E, 0.0, ret_E))
    return learner, tr, finished_E


def init_learner(tcfg: TeacherConfig, env: envs.Env, key: jax.Array, task_K: jax.Array) -> Learner:
    """A fresh learner: network, target copy, optimizer, empty replay, reset envs."""
    net = network(tcfg, env.spec)
    net_key, env_key, learn_key = jax.random.split(key, 3)
    params = networks.init(net, net_key)
    env_keys = jax.random.split(env_key, tcfg.num_envs)
    rs = jax.vmap(lambda k: rollout.init(env, k, task_K))(env_keys)
    return Learner(params=params, target_params=params, opt_state=optimizer(tcfg).init(params),
                   replay=replay.init(tcfg.buffer_size, env.spec.obs_shape, env.spec.obs_dtype),
                   envs=rs, episode_return_E=jnp.zeros((tcfg.num_envs,), jnp.float32),
                   key=learn_key)


@functools.partial(jax.jit, static_argnums=(0, 1))
def init(tcfg: TeacherConfig, env: envs.Env, keys_Gx2: jax.Array,
         tasks_GxK: jax.Array) -> TrainState:
    """Stacked fresh learners: one per (raw uint32) key and task."""
    learners = jax.vmap(lambda k, task: init_learner(tcfg, env, k, task))(keys_Gx2, tasks_GxK)
    return TrainState(learners=learners, t=jnp.int32(0), updates=jnp.int32(0))


def learner_keys(root: jax.Array, n_tasks: int, n_seeds: int, n_points: int = 1) -> jax.Array:
    """Raw keys [P*K*S, 2] in learner order g = (p*K + k)*S + s.

    A learner's key depends on its (task index, seed index) only, so the points of a
    hyperparameter sweep share initialisation and environment randomness (common random
    numbers); different tasks or seeds always get different keys.
    """
    keys_KxSx2 = keys.cells(root, jnp.arange(n_tasks), jnp.arange(n_seeds))
    return jnp.tile(keys_KxSx2.reshape(n_tasks * n_seeds, -1), (n_points, 1))


# ---------------------------------------------------------------------------------------------
# The jitted chunk (all learners)
# ---------------------------------------------------------------------------------------------

def _train_round(tcfg: TeacherConfig, net: networks.QNet, learners: Learner, hp_G: HParams,
                 updates: jax.Array, count: jax.Array) -> tuple[Learner, jax.Array, UpdateStats]:
    """``updates_per_train`` TD updates of every learner: (learners, updates, their stats
    summed, leaves [G])."""
    def one(carry, _):
        learners, updates = carry
        learners, stats_G = jax.vmap(lambda ln, hp: td_update(tcfg, net, ln, hp, count))(
            learners, hp_G)
        updates = updates + 1
        if tcfg.target == "hard":
            learners = jax.lax.cond(updates % tcfg.target_period == 0,
                                    lambda ln: ln.replace(target_params=ln.params),
                                    lambda ln: ln, learners)
        return (learners, updates), stats_G

    (learners, updates), stats_UxG = jax.lax.scan(one, (learners, updates), None,
                                                  length=tcfg.updates_per_train,
                                                  unroll=min(tcfg.scan_unroll,
                                                             tcfg.updates_per_train))
    return learners, updates, jax.tree.map(lambda x: x.sum(0), stats_UxG)


def _act(tcfg: TeacherConfig, env: envs.Env, net: networks.QNet, hp_G: HParams,
         tasks_GxK: jax.Array, carry: tuple[TrainState, ChunkStats], _=None):
    """Act in every env of every learner: (carry, (transitions [G, E], finished [G, E]))."""
    state, stats = carry
    act = jax.vmap(lambda ln, hp, task: act_step(tcfg, env, net, ln, hp, task, state.t))
    learners, tr, finished_GxE = act(state.learners, hp_G, tasks_GxK)
    done_GxE = ~jnp.isnan(finished_GxE)
    stats = stats._replace(
        episodes_G=stats.episodes_G + done_GxE.sum(-1),
        return_sum_G=stats.return_sum_G + jnp.where(done_GxE, finished_GxE, 0.0).sum(-1))
    return (state.replace(learners=learners, t=state.t + 1), stats), (tr, finished_GxE)


def _unit(tcfg: TeacherConfig, env: envs.Env, net: networks.QNet, hp_G: HParams,
          tasks_GxK: jax.Array, scheduled: bool, carry: tuple[TrainState, ChunkStats]):
    """One step of the chunk's scan: vector steps, then maybe an update round.

    Unscheduled: one vector step, then the round under a ``lax.cond`` on the step count.
    Scheduled (every step of the chunk is past learning_starts, on the train_every grid):
    train_every vector steps, then the round, with no condition. On a GPU a ``lax.cond``
    copies its predicate to the host, so the host cannot queue the next step's kernels
    before the device finishes this one: one learner ran 9% faster without it (H200).

    Returns (carry, (transitions [k, G, E], finished [k, G, E])), k vector steps.
    """
    k = tcfg.train_every if scheduled else 1
    carry, ys = jax.lax.scan(functools.partial(_act, tcfg, env, net, hp_G, tasks_GxK), carry,
                             None, length=k)
    state, stats = carry
    count = state.t * tcfg.num_envs
    train_now = jnp.bool_(True)
    if scheduled:
        learners, updates, sum_G = _train_round(tcfg, net, state.learners, hp_G, state.updates,
                                                count)
    else:
        train_now = (count >= tcfg.learning_starts) & (state.t % tcfg.train_every == 0)
        no_round = jax.tree.map(jnp.zeros_like, stats.update_sum_G)
        learners, updates, sum_G = jax.lax.cond(
            train_now, lambda ln, u: _train_round(tcfg, net, ln, hp_G, u, count),
            lambda ln, u: (ln, u, no_round), state.learners, state.updates)
    stats = stats._replace(update_sum_G=jax.tree.map(jnp.add, stats.update_sum_G, sum_G),
                           loss_count=stats.loss_count + jnp.where(train_now,
                                                                   tcfg.updates_per_train, 0))
    return (state.replace(learners=learners, updates=updates), stats), ys


def _block(length: int, record: Record, q_period: int) -> int:
    """Vector steps per block of a chunk's outer scan: Q-values are recorded once per block."""
    return (q_period if record == "full" else 0) or length


def schedulable(tcfg: TeacherConfig, t0: int, length: int, record: Record, q_period: int) -> bool:
    """Whether the chunk of ``length`` vector steps from step ``t0`` runs its update rounds
    unconditionally (see _unit): all its steps past learning_starts, and train_every dividing
    ``t0`` and the scan's blocks. Either way the chunk computes the same values.

    Never with one env, one vector step and one TD update per round (every MinAtar, Dark Room
    and Key-to-Door preset but teacher_darkroom_1b.yaml, whose train_every is 4): there the
    step writes one row of each replay buffer and neither the steps nor the updates form a
    loop of their own, so XLA (CPU) fuses that in-place write into the update's sampling
    gather and then copies every replay buffer twice per step (MinAtar Breakout ran 15x
    slower than under the cond). A loop on either side, or a write of
    several rows, keeps them apart (a test compiles such chunks and finds no copy).
    """
    k = tcfg.train_every
    return (not (k == tcfg.updates_per_train == tcfg.num_envs == 1)
            and (t0 + 1) * tcfg.num_envs >= tcfg.learning_starts and t0 % k == 0
            and _block(length, record, q_period) % k == 0)


def _keep(record: Record, from_replay: bool,
          ys: tuple[rollout.Transition, jax.Array]) -> tuple[Any, Any]:
    """What the scan stacks over time: nothing unrequested leaves the device, and with
    ``from_replay`` only what the replay buffer does not hold (``truncated``)."""
    tr, finished = ys
    if record != "full":
        return None, None if record == "stats" else finished
    return (tr.truncated if from_replay else tr), finished


def _streams(x_TxGxE: jax.Array) -> jax.Array:
    """[T, G, E, ...] -> [G*E, T, ...]: one row per stream, time contiguous."""
    x = jnp.moveaxis(x_TxGxE, 0, 2)
    return x.reshape((-1,) + x.shape[2:])


def streams_from_replay(tcfg: TeacherConfig, replay_G: replay.Replay, t0: jax.Array, length: int,
                        truncated_TxGxE: jax.Array) -> Streams:
    """A chunk's transitions read back from the replay buffers that stored them.

    Vector step s of env e was added as transition number s*E + e, at row (s*E + e) % C; the
    chunk's ``length`` steps from ``t0`` are all still there when length*E <= C. Reading them
    once per chunk replaces four per-step outputs of the scan (observation, action, reward,
    terminated), each expected to be a small kernel per step on a GPU (its gain is measured only
    together with train.BackgroundAppend's, see there). The values are the stored ones, which
    are what the learner trains on: bitwise what the per-step outputs held.

    Returns Streams with rows n = g*E + e: obs [N, T, *O], the rest [N, T].
    """
    e = tcfg.num_envs
    rows_TxE = ((t0 + jnp.arange(length))[:, None] * e + jnp.arange(e)) % tcfg.buffer_size

    def per_stream(x_GxC: jax.Array) -> jax.Array:
        x = jnp.moveaxis(x_GxC[:, rows_TxE], 2, 1)  # [G, T, E, ...] -> [G, E, T, ...]
        return x.reshape((-1,) + x.shape[2:])

    return Streams(obs_NxTxO=per_stream(replay_G.obs_CxO), action_NxT=per_stream(replay_G.action_C),
                   reward_NxT=per_stream(replay_G.reward_C),
                   terminated_NxT=per_stream(replay_G.terminated_C),
                   truncated_NxT=_streams(truncated_TxGxE))


def chunk(tcfg: TeacherConfig, env: envs.Env, length: int, record: Record, q_period: int,
          state: TrainState, hp_G: HParams, tasks_GxK: jax.Array,
          from_replay: bool = True, scheduled: bool = False) -> tuple[TrainState, ChunkOut]:
    """``length`` vector steps of every learner (a ``lax.scan``), un-jitted; see make_chunk.

    With ``record="full"`` and ``q_period`` q > 0, the scan is nested (outer blocks of q steps)
    so the Q-values of the observations acted on at steps 0, q, 2q, ... of the chunk are
    recorded without a per-step output. The transitions are read from the replay buffers after
    the scan (:func:`streams_from_replay`) when they all fit there and ``from_replay``; else the
    scan stacks them step by step (the same values). ``scheduled``: the update rounds run
    without a condition, for a chunk that :func:`schedulable` allows (see _unit).
    """
    net = network(tcfg, env.spec)
    g = tasks_GxK.shape[0]
    block = _block(length, record, q_period)
    q_period = q_period if record == "full" else 0
    units = block // (tcfg.train_every if scheduled else 1)
    from_replay = from_replay and length * tcfg.num_envs <= tcfg.buffer_size
    t0 = state.t

    def inner(carry, _):
        carry, ys = _unit(tcfg, env, net, hp_G, tasks_GxK, scheduled, carry)
        return carry, _keep(record, from_replay, ys)

    def outer(carry, _):
        obs_GxExO = carry[0].learners.envs.inp.obs
        q_GxExA = jax.vmap(lambda p, o: networks.apply(net, p, o))(
            carry[0].learners.params, obs_GxExO)
        carry, ys = jax.lax.scan(inner, carry, None, length=units,
                                 unroll=min(tcfg.scan_unroll, units))
        return carry, (ys, q_GxExA.astype(jnp.float16))

    zeros_G = jnp.zeros((g,), jnp.float32)
    stats0 = ChunkStats(episodes_G=jnp.zeros((g,), jnp.int32), return_sum_G=zeros_G,
                        update_sum_G=UpdateStats(*[zeros_G] * len(UpdateStats._fields)),
                        loss_count=jnp.int32(0), params_finite_G=jnp.ones((g,), bool))
    (state, stats), ((tr, finished), q) = jax.lax.scan(outer, (state, stats0), None,
                                                       length=length // block)
    finite_G = jax.vmap(lambda p: jnp.all(jnp.stack(
        [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(p)])))(state.learners.params)
    stats = stats._replace(params_finite_G=finite_G)
    flat = lambda x: x.reshape((length,) + x.shape[3:])  # [blocks, units, k, ...] -> [T, ...]
    tr, finished = jax.tree.map(flat, tr), jax.tree.map(flat, finished)
    out = ChunkOut(stats=stats, episode_return_NxT=None, streams=None, q_NxTqxA=None)
    if record in ("returns", "full"):
        out = out._replace(episode_return_NxT=_streams(finished))
    if record == "full" and from_replay:
        out = out._replace(streams=streams_from_replay(tcfg, state.learners.replay, t0, length, tr))
    elif record == "full":
        out = out._replace(streams=Streams(
            obs_NxTxO=_streams(tr.obs), action_NxT=_streams(tr.action.astype(jnp.uint8)),
            reward_NxT=_streams(tr.reward), terminated_NxT=_streams(tr.terminated),
            truncated_NxT=_streams(tr.truncated)))
    if q_period:
        out = out._replace(q_NxTqxA=_streams(q))
    return state, out


@functools.lru_cache(maxsize=64)
def make_chunk(tcfg: TeacherConfig, env: envs.Env, length: int, record: Record = "full",
               q_period: int = 0, scheduled: bool = False):
    """The jitted ``chunk(state, hp_G, tasks_GxK) -> (state, ChunkOut)``; the state is donated.

    ``record``: "stats" (per-learner summaries only), "returns" (+ finished-episode returns per
    step), "full" (+ every transition, and Q-values every ``q_period`` steps if > 0).
    ``scheduled``: update rounds without a condition; the caller checks with
    :func:`schedulable` that the chunk's first step allows it. Cached per argument tuple, so a
    run compiles once per distinct chunk length and schedule.
    """
    if record not in ("stats", "returns", "full"):
        raise ValueError(f"record must be stats, returns or full, got {record!r}")
    if record == "full" and q_period and length % q_period:
        raise ValueError(f"chunk length {length} is not a multiple of q_period {q_period}")
    block = _block(length, record, q_period)
    if scheduled and block % tcfg.train_every:
        raise ValueError(f"a scheduled chunk's scan blocks ({block} steps) must be a multiple of "
                         f"train_every {tcfg.train_every}")
    fn = functools.partial(chunk, tcfg, env, length, record, q_period, scheduled=scheduled)
    return jax.jit(fn, donate_argnums=(0,))


# ---------------------------------------------------------------------------------------------
# Policies for evaluation
# ---------------------------------------------------------------------------------------------

def q_fn(tcfg: TeacherConfig, spec: envs.EnvSpec):
    """``q(params, obs_O) -> q_A`` of the teacher's network (for rollout.q_policy)."""
    return functools.partial(networks.apply, network(tcfg, spec))


def greedy_policy(tcfg: TeacherConfig, spec: envs.EnvSpec) -> rollout.Policy:
    """The rollout policy of a DQN; its params are ``(net_params, eps)`` (eps 0: greedy)."""
    return rollout.q_policy(q_fn(tcfg, spec), spec.action_mask)
