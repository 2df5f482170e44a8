"""In-context evaluation: the frozen imitator as an agent, the three claim tests, their controls.

**The frozen imitator as an agent.** :func:`imitator_policy` wraps the imitator's
``decode_step`` as a :mod:`climit.rollout` policy whose carry is the ring-buffer KV cache of one
environment: from an empty cache, it feeds its own (observation, previous action, previous
reward, episode start) back token by token, for as many steps as asked -- far more than the
context holds (the cache slides). Weights are an argument, never a carry: nothing in a rollout
can change them. :func:`window_policy` is the same agent recomputing a forward pass over a
window of recent tokens every step (no cache): the reference the cache must reproduce
(tests) and the baseline of ``climit bench rollout``.

**The tests** (:func:`evaluate`), on held-out tasks (``envs.sample_tasks(..., "heldout")``,
never given to the teacher) and environment keys derived from ``run.seed`` with a salt no
training stage uses (:func:`climit.keys.evaluation`):

- (a) skill match: the AD imitator from an empty context for ``eval.env_steps`` on held-out
  tasks of ``env.name``, against fresh DQN learners trained on the same tasks;
- (b) horizon extrapolation: an imitator trained on the first H env steps of each history,
  evaluated to ``horizon_factor`` x H; metrics over (H, factor x H], against the same fresh
  DQNs' continuation, and the same comparison over the steps up to H (``before_h``: the report's
  precondition that the imitator matched the DQN over the DQN's steps its histories hold);
- (c) new family: the imitators trained on ``env.name`` acting in ``env.transfer`` (same
  interface), against fresh DQNs there.

Controls in every test: ED, the context-ablated imitator (``eval.ablation``), a uniformly random
policy, and the DQN itself. Every imitator and random-policy row ``s`` acts on task ``k`` with the
same environment key (common random numbers: at every step they draw the same key, so their first
episodes start alike, e.g. Key-to-Door's start cells, and so do later ones wherever their episodes
end on the same step; an episode that ends earlier resets with another step's key, so shared
randomness is partial: the paired statistics gain from it, their validity does not rely on it). The
fresh DQNs share the tasks, not the environment keys: their keys drive their exploration too, so
their environment randomness is drawn apart (paired with the others by task only). Fresh DQN ``r``
on task ``k`` gets ``fold_in(fold_in(key, r), k)``, so adding evaluation tasks leaves the DQNs of
the tasks already there unchanged. Imitators that share a model config and a rollout length
(the AD imitator, ED and a shuffled-ablation control; their H-trained versions too where
factor x H equals eval.env_steps: :func:`model_groups`) roll out together, their seeds
stacked on the row axis (:func:`stacked_imitator_steps`): a rollout is a long chain of small
steps, latency-bound on a GPU, so they run side by side instead of in turn, and every row
still computes exactly what it would alone (a test checks it).

With ``imitator.subsample`` k > 1 the histories of the imitator and the ablated control kept
every k-th episode, so an imitator that replays their progress runs about k times ahead of the
DQN in env steps; the windows stay in env steps (the report says so). ED keeps every episode of
its last ``ed_fraction`` (:func:`imitator_config`).

**Curves.** Return against env steps of one environment stream: episodes are binned by the step
at which they end (:func:`climit.rollout.curve`) on a grid of ``eval.curve_points`` multiples of
the episode length. The DQN's curve is its training-episode return (exploration included: that
is the behaviour the histories hold and the imitator imitates), per stream. The evaluation
needs one env per learner (``teacher.num_envs`` 1, :func:`plan` refuses more: H and the windows
count a learner's env steps); :func:`dqn_curves` would average a learner's E streams.

An interrupted evaluation resumes: every finished agent's output (step signals; the fresh DQNs'
training episodes) is kept in ``eval/parts/`` (valid for the same config fingerprint) until
results.json is written.

Axis letters: S agent rows (imitator seeds, DQN seeds, random repeats), K tasks, T time,
P grid points, M episodes, A actions.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from climit import config as config_lib
from climit import envs, jsonfile, keys, parallel, report, rollout, stopping
from climit.config import ConfigError, ExperimentConfig
from climit.errors import ArtifactError

ROLES = ("imitator", "ed", "ablated")  # trained imitators of tests (a) and (c)


# ---------------------------------------------------------------------------------------------
# The imitator as a rollout policy
# ---------------------------------------------------------------------------------------------

def _token(inp: rollout.PolicyInput) -> Any:
    """One environment's PolicyInput as one token (no batch or time axis)."""
    from climit.imitator import model

    return model.Tokens(obs=inp.obs, prev_action=jnp.asarray(inp.prev_action, jnp.int32),
                        prev_reward=jnp.asarray(inp.prev_reward, jnp.float32),
                        episode_start=jnp.asarray(inp.episode_start, bool))


def imitator_policy(mask_A: np.ndarray, mode: str = "sample") -> rollout.Policy:
    """The frozen imitator through its KV cache: params = ``model.Params`` (one seed), carry =
    ``model.init_cache(params, 1)`` (one environment). ``mask_A``: the acting env's real
    actions (intersected with the model's own mask). The same arguments return the same
    function, so jitted rollouts of several imitators share their compilation (see
    :func:`climit.imitator.policy.act_fn`, the one implementation)."""
    from climit.imitator import policy

    return policy.act_fn(mode, tuple(bool(m) for m in np.asarray(mask_A)))


class WindowCarry(NamedTuple):
    """Recent tokens of one stream for recomputation: leaves [W, ...]; ``t`` tokens seen."""

    tokens: Any
    t: jax.Array


def init_window(params: Any, window: int) -> WindowCarry:
    """An empty token window of ``window`` steps for :func:`window_policy`."""
    from climit.imitator import model

    cfg = params.cfg
    tokens = model.Tokens(obs=jnp.zeros((window,) + tuple(cfg.obs_shape), cfg.obs_dtype),
                          prev_action=jnp.full((window,), model.NO_ACTION, jnp.int32),
                          prev_reward=jnp.zeros((window,), jnp.float32),
                          episode_start=jnp.zeros((window,), bool))
    return WindowCarry(tokens=tokens, t=jnp.int32(0))


def window_policy(mask_A: np.ndarray, mode: str = "sample") -> rollout.Policy:
    """The imitator WITHOUT a cache: every step, a full forward pass over the last W tokens
    (W = the carry's window), taking the logits of the newest.

    While fewer than W tokens exist they sit at the front of the window (later slots are
    unused future positions that causal attention cannot see); after that the window slides.
    With W >= the rollout length this is exactly the model's forward over the whole stream,
    which the KV cache must reproduce; with W = the context length it is the usual
    sliding-window recomputation (exact for one layer; the cache sees further back with more).
    """
    from climit.imitator import model, policy

    mask_A = jnp.asarray(mask_A, bool)

    def act(params: Any, carry: WindowCarry, inp: rollout.PolicyInput, key: jax.Array):
        w = carry.tokens.prev_action.shape[0]
        new = _token(inp)
        full = carry.t >= w
        pos = jnp.minimum(carry.t, w - 1)

        def put(buf, x):  # slide left once full, then write the newest token at ``pos``
            buf = jnp.where(full, jnp.roll(buf, -1, axis=0), buf)
            return buf.at[pos].set(x)

        tokens = jax.tree.map(put, carry.tokens, new)
        logits_1xWxA = model.forward(params, jax.tree.map(lambda x: x[None], tokens))
        mask = mask_A & jnp.asarray(params.cfg.action_mask)
        action = policy.choose(logits_1xWxA[0, pos], mask, key, mode)
        return action, WindowCarry(tokens=tokens, t=carry.t + 1)

    return act


# ---------------------------------------------------------------------------------------------
# Rolling many agents x tasks in chunks
# ---------------------------------------------------------------------------------------------

def _signal(tr: rollout.Transition) -> tuple[jax.Array, jax.Array]:
    """What a curve needs of each step: (reward, episode ended)."""
    return tr.reward, tr.terminated | tr.truncated


def rollout_rows(env: envs.Env, act: rollout.Policy, params_S: Any, carry0: Any,
                 tasks_KxD: np.ndarray, keys_SxK: jax.Array, num_steps: int, *,
                 chunk_steps: int = 2000, params_batched: bool = True, desc: str = "",
                 progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Roll S x K environments (agent row s on task k) for ``num_steps`` steps in jitted chunks.

    ``params_S``: leaves with a leading S axis if ``params_batched`` else shared; ``carry0``:
    the carry of ONE environment (broadcast to every row). Returns host arrays
    ``reward_SxKxT`` float32 and ``done_SxKxT`` bool.
    """
    from tqdm import tqdm

    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    s, k = keys_SxK.shape[:2]
    tasks = jnp.asarray(tasks_KxD, jnp.int32)
    rs = _init_rows(env)(keys_SxK, tasks)
    carry = jax.tree.map(lambda x: jnp.broadcast_to(x, (s, k) + jnp.shape(x)), carry0)
    placed = [x for x in jax.tree.leaves(params_S) if isinstance(x, jax.Array) and x.committed]
    if placed:  # where the restored params live: otherwise chunk 2's committed carry recompiles
        rs, carry = jax.device_put((rs, carry), placed[0].sharding)
    rewards, dones = [], []
    bar = tqdm(total=num_steps, unit="step", desc=desc, disable=not progress, dynamic_ncols=True,
               mininterval=1.0)
    t, pending = 0, None
    while t < num_steps:
        n = min(chunk_steps, num_steps - t)
        carry, rs, out = _row_runner(env, act, params_batched, n)(params_S, carry, rs, tasks)
        if pending is not None:  # fetch the previous chunk while this one runs (one chunk late)
            rewards.append(np.asarray(pending[0][0]))
            dones.append(np.asarray(pending[0][1]))
            bar.update(pending[1])
        pending = (out, n)
        t += n
    rewards.append(np.asarray(pending[0][0]))
    dones.append(np.asarray(pending[0][1]))
    bar.update(pending[1])
    bar.close()
    return np.concatenate(rewards, axis=-1), np.concatenate(dones, axis=-1)


@functools.lru_cache(maxsize=None)
def _init_rows(env: envs.Env):
    """jit: keys [S, K], tasks [K, D] -> RolloutState [S, K] (env keys shared across agents)."""
    one = lambda key, task: rollout.init(env, key, task)
    return jax.jit(jax.vmap(jax.vmap(one, (0, 0)), (0, None)))


@functools.lru_cache(maxsize=None)
def _row_runner(env: envs.Env, act: rollout.Policy, params_batched: bool, n: int):
    """jit: (params [S] or shared, carry [S, K], rs [S, K], tasks [K, D]) -> n more steps.

    Cached on its (hashable, identity-stable) arguments: one compilation per policy, env and
    chunk length, reused across agents whose params have the same structure."""
    def one(p, c, r, task):
        return rollout.run(env, act, p, c, r, task, n, _signal)

    per_task = jax.vmap(one, (None, 0, 0, 0))
    # The carry (a KV cache per row) and env states are donated: each chunk replaces them.
    return jax.jit(jax.vmap(per_task, (0 if params_batched else None, 0, 0, None)),
                   donate_argnums=(1, 2))


def grid(episode_len: int, num_steps: int, points: int, through: int = 0) -> np.ndarray:
    """Curve grid: int64 [P] multiples of the episode length (so every bin holds an episode
    end of a fixed-length env), at most ``points`` of them (but see ``through``), the last at
    or below num_steps.

    ``through`` (a multiple of the episode length; test (b)'s H): the grid has a point there, so
    that no bin mixes episodes that ended before it with episodes after it. The stride is then
    the smallest one at least as large that divides it (fewer points where none near does), or
    ``through`` itself when the stride asked for is longer than it: then every point is a
    multiple of H, num_steps // H points, more than ``points`` (e.g. horizon_factor 10 with
    curve_points 5 gives 10).
    """
    n_episodes = max(num_steps // episode_len, 1)
    stride = math.ceil(n_episodes / points)
    if through:
        units = through // episode_len
        stride = next(s for s in range(stride, units + 1) if units % s == 0) \
            if stride <= units else units
    return episode_len * stride * np.arange(1, n_episodes // stride + 1, dtype=np.int64)


@functools.partial(jax.jit, static_argnums=2)
def _curves_from_steps(reward_NxT: jax.Array, done_NxT: jax.Array, max_episodes: int,
                       grid_P: jax.Array) -> jax.Array:
    def one(r, d):
        return rollout.curve(rollout.episode_returns(r, d, max_episodes), grid_P)
    return jax.vmap(one)(reward_NxT, done_NxT)


def curves_from_steps(reward_SxKxT: np.ndarray, done_SxKxT: np.ndarray,
                      grid_P: np.ndarray) -> np.ndarray:
    """Per-row curves [S, K, P] from step signals (episodes binned by end step)."""
    s, k, t = reward_SxKxT.shape
    t_used = int(grid_P[-1])  # steps after the last grid point cannot enter a bin
    c = _curves_from_steps(jnp.asarray(reward_SxKxT[..., :t_used].reshape(s * k, t_used)),
                           jnp.asarray(done_SxKxT[..., :t_used].reshape(s * k, t_used)),
                           t_used, jnp.asarray(grid_P))
    return np.asarray(c, np.float64).reshape(s, k, -1)


def curves_from_episodes(ep: rollout.Episodes, grid_P: np.ndarray) -> np.ndarray:
    """Curves [N, P] from padded Episodes [N, M] (the fresh DQNs' training episodes)."""
    c = _curves_of_episodes(jax.tree.map(jnp.asarray, ep), jnp.asarray(grid_P))
    return np.asarray(c, np.float64)


_curves_of_episodes = jax.jit(jax.vmap(rollout.curve, (0, None)))  # compiled once per shape


# ---------------------------------------------------------------------------------------------
# The plan: resolved sizes, the imitators each test needs
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Plan:
    """Resolved evaluation sizes (config zeros replaced) and the imitators to load."""

    env_steps: int  # tests (a), (c) controls on env.name
    transfer_steps: int  # test (c)
    transfer_tasks: int  # test (c): eval.transfer_tasks, else eval.tasks capped at the family's
    horizon: int  # H
    horizon_steps: int  # factor x H
    imitators: dict[str, ExperimentConfig]  # role -> the config that trains it


def imitator_config(cfg: ExperimentConfig, variant: str, horizon: int = 0) -> ExperimentConfig:
    """``cfg`` with the imitator dataset variant and horizon of one role, and the subsample
    the evaluation trains that variant with (:func:`climit.imitator.data.control_subsample`:
    ED keeps every episode)."""
    from climit.imitator import data

    subsample = data.control_subsample(variant, cfg.imitator.subsample)
    return dataclasses.replace(cfg, imitator=dataclasses.replace(
        cfg.imitator, variant=variant, horizon=horizon, subsample=subsample))


def _check_imitator_data(cfg: ExperimentConfig, roles: dict[str, ExperimentConfig]) -> None:
    """What the imitators need of the histories, checked before the teacher trains (climit
    run would otherwise find out only at the imitate stage, after the teacher and the imitators
    before it): something to hold out, and training sequences that fit in every role's data
    (the H-imitator's first H steps, the expert distillers' last ``ed_fraction`` of theirs,
    every ``subsample``-th episode of them except for ED)."""
    from climit.imitator import data

    if cfg.env.train_tasks * cfg.teacher.seeds < 2:
        raise ConfigError("env.train_tasks", "the imitators' held-out loss needs two training "
                          "tasks or two learners of one task; raise env.train_tasks or "
                          "teacher.seeds")
    seq = cfg.imitator.context_len * cfg.imitator.train_windows
    for role, rcfg in roles.items():
        kept, what = data.kept_steps(rcfg.imitator, cfg.teacher.total_env_steps)
        if seq > kept:
            who = "the imitator" if role == "imitator" else f"the {role} imitator"
            raise ConfigError("imitator.context_len", f"a training sequence of {seq} steps "
                              f"(context_len {cfg.imitator.context_len} x train_windows "
                              f"{cfg.imitator.train_windows}) is longer than the ~{kept} steps "
                              f"per history {who} learns from ({what}); "
                              f"{_longer_data(role, rcfg)}")


def _longer_data(role: str, rcfg: ExperimentConfig) -> str:
    """What would fit a training sequence into ``role``'s data (see _check_imitator_data), from
    the role's own imitator config (ED's subsample is 1 whatever the run's: lowering it there
    cannot help)."""
    icfg = rcfg.imitator
    fixes = ["lower imitator.context_len or imitator.train_windows"]
    if icfg.subsample > 1:
        fixes.append("lower imitator.subsample")
    fixes.append("raise eval.horizon" if icfg.horizon else "raise teacher.total_env_steps")
    if icfg.variant == "ed":
        fixes.append("raise imitator.ed_fraction")
    if role in ("ed_h", "ablated_h"):
        fixes.append("set eval.horizon_controls=false")
    return ", ".join(fixes[:-1]) + f" or {fixes[-1]}"


def _horizon_strides(episode_len: int, horizon: int, factor: int, points: int) -> tuple[int, int]:
    """(the stride of test (b)'s grid, which has a point at H; the stride asked for), env steps."""
    steps = horizon * factor
    return (int(grid(episode_len, steps, points, through=horizon)[0]),
            int(grid(episode_len, steps, points)[0]))


def _grid_ok(episode_len: int, horizon: int, factor: int, points: int) -> bool:
    """Test (b)'s grid keeps a stride up to twice the one asked for with this H (a multiple of
    the episode length). grid() takes the next divisor of H's episode count, up to the count
    itself when it is prime: one grid point up to H, where the DQN's gain before H reads 0 and
    test (b) can never fail."""
    got, asked = _horizon_strides(episode_len, horizon, factor, points)
    return got <= 2 * asked


def _nearest_horizon(episode_len: int, horizon: int, factor: int, points: int) -> int:
    """The H nearest ``horizon`` that is a whole number of episodes and passes
    :func:`_grid_ok` (the smaller of two as near): what an error about H suggests. One episode
    always passes (its stride is one episode), and no count past 2 units + 1 is nearer than it."""
    units = horizon // episode_len
    nearest_first = sorted(range(1, 2 * units + 2),
                           key=lambda u: (abs(episode_len * u - horizon), u))
    return episode_len * next(u for u in nearest_first
                              if _grid_ok(episode_len, episode_len * u, factor, points))


def _check_horizon_grid(episode_len: int, horizon: int, factor: int, points: int) -> None:
    """ConfigError for an H whose episode count no stride near the requested one divides
    (:func:`_grid_ok`)."""
    if _grid_ok(episode_len, horizon, factor, points):
        return
    units = horizon // episode_len
    near = _nearest_horizon(episode_len, horizon, factor, points)
    stride, asked = _horizon_strides(episode_len, horizon, factor, points)
    raise ConfigError("eval.horizon", f"H = {horizon} env steps ({units} episodes) leaves test "
                      f"(b)'s curves a grid point every {stride} env steps, {horizon // stride} up "
                      f"to H, where {points} points over {factor} H ask for one every {asked} "
                      f"(the grid needs a point at H and its stride must divide {units}); set "
                      f"eval.horizon={near} (or eval.env_steps to {factor}x that)")


def plan(cfg: ExperimentConfig) -> Plan:
    """Resolve the evaluation sizes; ConfigError (before any work) for impossible ones."""
    ev = cfg.eval
    if cfg.teacher.num_envs != 1:
        # Histories hold total_env_steps / E steps per stream while H and the evaluation windows
        # count env steps per learner; comparing them would shift every curve by a factor E.
        raise ConfigError("teacher.num_envs", f"the evaluation compares per-stream curves and "
                          f"needs one env per learner, got {cfg.teacher.num_envs} (climit teach "
                          f"alone accepts any number)")
    if cfg.teacher.sweep:
        # The imitator would learn from every sweep point but face a DQN with the base values.
        raise ConfigError("teacher.sweep", "the evaluation compares against one DQN setting; "
                          "evaluate one point per run (climit sweep --grid teacher.lr=...)")
    for key, value, default in (("variant", cfg.imitator.variant, "ad"),
                                ("horizon", cfg.imitator.horizon, 0)):
        if value != default:
            # Every role sets its own (imitator_config); accepted here, it would be ignored,
            # yet change the fingerprint (a whole evaluation again) and misdescribe config.yaml.
            raise ConfigError(f"imitator.{key}", f"{value!r} is for `climit imitate` alone: the "
                              f"evaluation trains and loads each imitator with its own (AD, ED, "
                              f"the eval.ablation control; the H-imitator cut at eval.horizon)")
    env_steps = ev.env_steps or cfg.teacher.total_env_steps
    horizon = ev.horizon or env_steps // ev.horizon_factor
    spec = envs.spec(cfg.env.name)
    if horizon < spec.episode_len:
        raise ConfigError("eval.horizon", f"H = {horizon} env steps is shorter than one "
                          f"{cfg.env.name} episode ({spec.episode_len}); raise eval.env_steps or "
                          f"lower eval.horizon_factor")
    if horizon % spec.episode_len:
        # Test (b)'s curves need a grid point at H (evaluate.grid), so that no bin after H holds
        # episodes that ended before it; the grid's points are whole episode lengths.
        near = _nearest_horizon(spec.episode_len, horizon, ev.horizon_factor, ev.curve_points)
        raise ConfigError("eval.horizon", f"H = {horizon} env steps is not a multiple of the "
                          f"{cfg.env.name} episode length ({spec.episode_len}); set "
                          f"eval.horizon={near} (or eval.env_steps to {ev.horizon_factor}x "
                          f"that)")
    _check_horizon_grid(spec.episode_len, horizon, ev.horizon_factor, ev.curve_points)
    if horizon > cfg.teacher.total_env_steps:
        raise ConfigError("eval.horizon", f"H = {horizon} exceeds the teacher's "
                          f"{cfg.teacher.total_env_steps} env steps of history")
    if horizon * ev.horizon_factor > env_steps:
        raise ConfigError("eval.horizon", f"{horizon} x {ev.horizon_factor} exceeds the "
                          f"{env_steps} evaluation steps")
    if ev.tasks > spec.num_tasks["heldout"] and spec.task_dim:
        raise ConfigError("eval.tasks", f"{ev.tasks} exceeds the {spec.num_tasks['heldout']} "
                          f"held-out tasks of {cfg.env.name}")
    transfer_steps = ev.transfer_env_steps or env_steps
    if cfg.env.transfer and transfer_steps < envs.spec(cfg.env.transfer).episode_len:
        raise ConfigError("eval.transfer_env_steps", f"{transfer_steps} env steps hold no whole "
                          f"{cfg.env.transfer} episode ({envs.spec(cfg.env.transfer).episode_len})")
    fresh_teacher(cfg, env_steps)
    if cfg.env.transfer:
        fresh_teacher(cfg, transfer_steps)
    roles = {"imitator": imitator_config(cfg, "ad"), "ed": imitator_config(cfg, "ed"),
             "ablated": imitator_config(cfg, ev.ablation),
             "imitator_h": imitator_config(cfg, "ad", horizon)}
    if ev.horizon_controls:
        roles["ed_h"] = imitator_config(cfg, "ed", horizon)
        roles["ablated_h"] = imitator_config(cfg, ev.ablation, horizon)
    _check_imitator_data(cfg, roles)
    transfer_tasks = ev.transfer_tasks or ev.tasks
    if cfg.env.transfer and envs.spec(cfg.env.transfer).task_dim and not ev.transfer_tasks:
        transfer_tasks = min(ev.tasks, envs.spec(cfg.env.transfer).num_tasks["heldout"])
    return Plan(env_steps=env_steps, transfer_steps=transfer_steps, transfer_tasks=transfer_tasks,
                horizon=horizon, horizon_steps=horizon * ev.horizon_factor, imitators=roles)


def fingerprint(cfg: ExperimentConfig) -> str:
    """What the evaluation's artifacts depend on: every section except run naming, and the
    fingerprint of every imitator it evaluates (which carries the model's code revision, so
    imitators retrained after a model change are evaluated again)."""
    from climit.imitator import train as imitator_train

    imitators = {role: imitator_train.fingerprint(r) for role, r in plan(cfg).imitators.items()}
    # Settings that change no result are compared at their defaults: the imitators' neutral
    # fields (logging, prefetch, kept checkpoints...) and the rollout's chunk length (its state
    # carries across chunks), so changing one does not redo the evaluation and its fresh DQNs.
    ev = dataclasses.replace(cfg.eval, chunk_steps=config_lib.EvalConfig().chunk_steps)
    return config_lib.fingerprint(cfg.run.seed, cfg.env, config_lib.teacher_identity(cfg.teacher),
                                  cfg.histories, imitator_train.identity(cfg.imitator), ev,
                                  sorted(imitators.items()))


# ---------------------------------------------------------------------------------------------
# Agents
# ---------------------------------------------------------------------------------------------

def _keys(key: jax.Array, s: int, k: int) -> jax.Array:
    """Env keys [S, K]: row s, task k -- the same for every agent (common random numbers)."""
    return keys.cells(key, jnp.arange(s), jnp.arange(k))


def imitator_steps(loaded: Any, env: envs.Env, tasks: np.ndarray, key: jax.Array, num_steps: int,
                   cfg: ExperimentConfig, desc: str, progress: bool):
    """Step signals [S, K, T] of a trained imitator (S seeds) acting from an empty context."""
    return stacked_imitator_steps([loaded], env, tasks, key, num_steps, cfg, desc, progress)[0]


def stacked_imitator_steps(loaded: list[Any], env: envs.Env, tasks: np.ndarray, key: jax.Array,
                           num_steps: int, cfg: ExperimentConfig, desc: str,
                           progress: bool) -> list[tuple[np.ndarray, np.ndarray]]:
    """:func:`imitator_steps` of several imitators with the same model config in ONE rollout:
    their seeds stacked on the row axis ([S1 + S2 + ..., K] rows), each with the env keys it
    would get alone. A rollout is a chain of small sequential steps (latency-bound on a GPU),
    so the imitators then run side by side instead of in turn; every row computes what it
    would alone. Returns one (reward [Si, K, T], done [Si, K, T]) per imitator, in order."""
    from climit.imitator import model

    params = jax.tree.map(lambda *x: jnp.concatenate(x), *[im.params for im in loaded])
    counts = [int(jax.tree.leaves(im.params.tree)[0].shape[0]) for im in loaded]
    keys_RxK = jnp.concatenate([_keys(key, n, len(tasks)) for n in counts])
    reward, done = rollout_rows(env, imitator_policy(env.spec.action_mask, cfg.eval.mode), params,
                                model.init_cache(params.cfg, 1), tasks, keys_RxK, num_steps,
                                chunk_steps=cfg.eval.chunk_steps, desc=desc, progress=progress)
    cuts = np.cumsum(counts)[:-1]
    return list(zip(np.split(reward, cuts), np.split(done, cuts)))


def model_groups(imitators: dict[str, Any], steps: dict[str, int]) -> list[list[str]]:
    """The roles of ``steps`` (role -> env steps to roll out) grouped by model config and step
    count (groups in first-seen order, roles in given order): the imitators one
    :func:`stacked_imitator_steps` can roll out together."""
    groups: dict[Any, list[str]] = {}
    for role, n in steps.items():
        groups.setdefault((imitators[role].params.cfg, n), []).append(role)
    return list(groups.values())


def random_steps(env: envs.Env, tasks: np.ndarray, key: jax.Array, num_steps: int,
                 cfg: ExperimentConfig, progress: bool):
    """Step signals [R, K, T] of the uniformly random policy."""
    return rollout_rows(env, _random_policy(tuple(bool(m) for m in env.spec.action_mask)), None, (),
                        tasks, _keys(key, cfg.eval.random_seeds, len(tasks)), num_steps,
                        chunk_steps=cfg.eval.chunk_steps, params_batched=False,
                        desc=f"random {env.spec.name}", progress=progress)


def fresh_teacher(cfg: ExperimentConfig, num_steps: int) -> config_lib.TeacherConfig:
    """The teacher config of the evaluation's fresh DQNs: the teacher's hyperparameters, one
    seed per learner, no sweep, ``num_steps`` env steps per stream. ConfigError if impossible,
    or if a learning-rate decay would run over other steps than the teacher's (its schedule
    ends at ``total_env_steps``: the baseline would not be the learner the imitator watched)."""
    tcfg = dataclasses.replace(cfg.teacher, total_env_steps=num_steps * cfg.teacher.num_envs,
                               seeds=1, sweep=config_lib.FrozenMap(), q_log_period=0)
    if tcfg.lr_final_frac != 1.0 and tcfg.total_env_steps != cfg.teacher.total_env_steps:
        raise ConfigError("teacher.lr_final_frac", f"the evaluation's fresh DQNs learn for "
                          f"{num_steps} env steps, so their learning rate would decay over those "
                          f"instead of the teacher's {cfg.teacher.total_env_steps}; evaluate with "
                          f"teacher.lr_final_frac=1 (or eval.env_steps equal to "
                          f"teacher.total_env_steps and no transfer test of another length)")
    try:
        tcfg.check()
    except ConfigError as err:
        msg = str(err).partition(": ")[2]
        raise ConfigError(err.key, f"{msg} (the evaluation's fresh DQNs learn for {num_steps} "
                          f"env steps)") from None
    return tcfg


@functools.lru_cache(maxsize=None)
def _random_policy(mask: tuple[bool, ...]) -> rollout.Policy:
    return rollout.random_policy(np.asarray(mask))  # identity-stable: compiled once per env


def dqn_episodes(cfg: ExperimentConfig, env: envs.Env, tasks: np.ndarray, key: jax.Array,
                 num_steps: int, progress: bool) -> rollout.Episodes:
    """Training episodes of ``eval.dqn_seeds`` fresh DQN learners per task, each stream
    ``num_steps`` long, as host arrays: leaves [R*K*E, M], stream (r*K + k)*E + e
    (E = ``teacher.num_envs``)."""
    from climit.teacher import train as teacher_train

    tcfg = fresh_teacher(cfg, num_steps)
    r = cfg.eval.dqn_seeds
    k = len(tasks)
    tasks_GxD = np.tile(np.asarray(tasks), (r, 1))  # learner g = r * K + k
    keys_Gx2 = _keys(jax.random.key_data(key), r, k).reshape(r * k, -1)  # not a function of K
    res = teacher_train.train_learners(tcfg, env, tasks_GxD, keys_Gx2, progress=progress)
    return rollout.Episodes(*(np.asarray(x) for x in res.episodes))


def discard_parts(run_dir: str | Path) -> None:
    """Forget the finished agents of an interrupted evaluation (its imitators were retrained,
    or its results.json was written and a kill came before the parts were cleared)."""
    PartCache(Path(run_dir) / "eval" / "parts", "").clear()


class PartCache:
    """Finished agents of an interrupted evaluation, one ``.npz`` per agent, valid only for the
    same evaluation fingerprint; cleared once results.json is written. Each array is a zip
    member with its own CRC-32, checked on load: a damaged or cut part is recomputed."""

    def __init__(self, directory: Path, fingerprint: str):
        self.directory, self.fingerprint = Path(directory), fingerprint

    def _path(self, name: str) -> Path:
        return self.directory / ("".join(c if c.isalnum() else "_" for c in name) + ".npz")

    def _read(self, path: Path) -> tuple[np.ndarray, ...] | None:
        """The arrays of a finished part of this fingerprint; None if absent, stale or damaged."""
        try:
            with np.load(path) as z:
                stored, arrays = (str(z["fingerprint"]),
                                  tuple(z[f"a{i}"] for i in range(int(z["n"]))))
        except Exception:  # missing, or a part cut short by the interruption: recompute it
            return None
        return arrays if stored == self.fingerprint else None

    def get_or_run(self, name: str, fn) -> tuple[tuple[np.ndarray, ...], bool]:
        """(``fn()``'s arrays, whether they came from disk): a finished part is not recomputed."""
        cached = self.cached(name)
        if cached is not None:
            return cached, True
        return self.put(name, fn()), False

    def cached(self, name: str) -> tuple[np.ndarray, ...] | None:
        """The arrays of finished part ``name``; None if absent, stale or damaged on any process.

        A collective with several processes: process 0 runs ahead between collectives and may
        have written this part already while another is still on its way here. Were each to
        decide alone, one would reuse the part and the other compute it, and their collectives
        (the stop polls after each part) would no longer pair up."""
        path = self._path(name)
        arrays = self._read(path) if path.is_file() else None
        return arrays if parallel.everywhere(arrays is not None) else None

    def put(self, name: str, arrays) -> tuple[np.ndarray, ...]:
        """Keep ``arrays`` as finished part ``name`` (process 0 writes; every process computed
        the same part) and return them as host arrays."""
        out = tuple(np.asarray(x) for x in arrays)
        if not parallel.is_primary():
            return out
        path = self._path(name)
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.stem + ".tmp.npz")
        np.savez(tmp, fingerprint=self.fingerprint, n=len(out),
                 **{f"a{i}": x for i, x in enumerate(out)})
        tmp.replace(path)
        return out

    def clear(self) -> None:
        if parallel.is_primary() and self.directory.is_dir():
            for f in self.directory.glob("*.npz"):
                f.unlink()
            self.directory.rmdir()


def dqn_curves(episodes: rollout.Episodes, num_envs: int, r: int, k: int,
               grid_P: np.ndarray) -> np.ndarray:
    """[R, K, P]: per-stream curves of the fresh DQNs, a learner's E streams averaged."""
    c = curves_from_episodes(episodes, grid_P)  # [R*K*E, P]
    return c.reshape(r, k, num_envs, -1).mean(axis=2)


# ---------------------------------------------------------------------------------------------
# The three tests
# ---------------------------------------------------------------------------------------------

def load_imitators(run_dir: Path, roles: dict[str, ExperimentConfig]) -> dict:
    """Trained imitators by role; ArtifactError naming the missing one."""
    from climit.imitator import train as imitator_train

    out = {}
    for role, rcfg in roles.items():
        path = Path(run_dir) / "imitator" / imitator_train.tag(rcfg.imitator)
        how = (f"run `climit run` (or `climit imitate imitator.variant={rcfg.imitator.variant} "
               f"imitator.horizon={rcfg.imitator.horizon} imitator.subsample="
               f"{rcfg.imitator.subsample}`) with this config")
        if not (path / "checkpoints").is_dir():
            raise ArtifactError(f"the {role!r} imitator is missing ({path}); {how}")
        summary = jsonfile.read_or_empty(path / "summary.json")
        if not imitator_train.fingerprint_matches(summary.get("fingerprint"), rcfg):
            raise ArtifactError(f"the {role!r} imitator in {path} is unfinished or was trained "
                                f"with another config; {how}")
        out[role] = imitator_train.load(path, "best")
    return out


_TRAINING_FACTS = ("tag", "seeds", "final_step", "params", "heldout_loss",
                   "heldout_action_accuracy",
                   "chance_accuracy", "heldout_accuracy_by_position", "position_bins")


def training_facts(run_dir: Path, roles: dict[str, ExperimentConfig]) -> dict[str, dict]:
    """What each imitator's training measured offline (from its summary.json), by role, and
    what of each history it learned from (``data``, and its ``subsample``): the report shows
    it beside the rollouts."""
    from climit.imitator import data
    from climit.imitator import train as imitator_train

    out = {}
    for role, rcfg in roles.items():
        s = jsonfile.read_or_empty(Path(run_dir) / "imitator" / imitator_train.tag(rcfg.imitator)
                          / "summary.json")
        out[role] = {k: s[k] for k in _TRAINING_FACTS if k in s}
        out[role]["data"] = data.kept_steps(rcfg.imitator, rcfg.teacher.total_env_steps)[1]
        out[role]["subsample"] = rcfg.imitator.subsample
    return out


def _log_replaced(cfg: ExperimentConfig, run_dir: Path, log) -> None:
    """Say so when ``run_dir/eval`` holds a finished evaluation that this one replaces (an
    evaluation is derived data: a changed eval setting evaluates again, as ``climit run``
    does), with the settings that differ."""
    previous = jsonfile.read_or_empty(run_dir / "eval" / "results.json")
    if previous.get("fingerprint") in (None, fingerprint(cfg)):
        return

    def identity(d: dict) -> dict:  # run naming aside
        return {**{k: v for k, v in d.items() if k != "run"},
                "run.seed": d.get("run", {}).get("seed")}

    diffs = config_lib.config_diff(identity(config_lib.as_read_now(previous.get("config", {}))),
                                   identity(config_lib.to_dict(cfg)))
    log(f"evaluate: replacing the evaluation in {run_dir / 'eval'}, made with "
        f"{'; '.join(diffs[:4]) or 'other imitators (retrained since)'}")


def _test_entry(env_name: str, markers: dict) -> dict:
    """What a test records besides its statistics (:func:`report.with_statistics` adds those)."""
    spec = envs.spec(env_name)
    # How many held-out tasks the family has (the report's planned scale is min(20, this)); a
    # family without task parameters (MinAtar) is evaluated on env seeds, which have no limit.
    return dict(env=env_name, markers=markers, task_dim=spec.task_dim,
                heldout_tasks_available=spec.num_tasks["heldout"] if spec.task_dim else None)


def heldout_family(cfg: ExperimentConfig) -> tuple[envs.Env, np.ndarray, keys.Evaluation]:
    """(env, held-out tasks [K, ...], the evaluation's keys): derived from ``run.seed`` alone,
    so every agent, re-run or later script meets the same tasks and environment seeds."""
    ks = keys.evaluation(cfg.run.seed)
    env = envs.make(cfg.env.name, cfg.env.sticky_action_prob)
    return env, envs.sample_tasks(cfg.env.name, ks.tasks, cfg.eval.tasks, "heldout"), ks


def _roles_on(parts: PartCache, imitators: dict[str, Any], steps: dict[str, int], env: envs.Env,
              tasks: np.ndarray, key: jax.Array, *, cfg: ExperimentConfig, progress: bool, log,
              timing: dict[str, float]) -> dict[str, tuple[np.ndarray, ...]]:
    """Step signals of the imitator roles of ``steps`` (role -> env steps) on ``env`` (role ->
    (reward, done) [S, K, T]): parts finished before an interruption are reused, the others
    rolled out together, one rollout per model config and step count
    (:func:`stacked_imitator_steps`), each role kept as its own part."""
    name = lambda role: f"{role} on {env.spec.name}"  # noqa: E731
    out = {role: parts.cached(name(role)) for role in steps}
    for role in [r for r in steps if out[r] is not None]:
        log(f"evaluate: {name(role)} reused")
    for group in model_groups(imitators, {r: n for r, n in steps.items() if out[r] is None}):
        t0 = time.perf_counter()
        signals = stacked_imitator_steps([imitators[r] for r in group], env, tasks, key,
                                         steps[group[0]], cfg, f"{'+'.join(group)} {env.spec.name}",
                                         progress)
        out.update({role: parts.put(name(role), sig) for role, sig in zip(group, signals)})
        label = f"{' + '.join(group)} on {env.spec.name}"
        timing[label] = round(time.perf_counter() - t0, 2)
        log(f"evaluate: {label} done in {timing[label]:.1f} s")
        stopping.stop_here(f"the evaluation after {label}, every finished agent saved")
    return out


def evaluate(cfg: ExperimentConfig, run_dir: str | Path, *, progress: bool = True,
             log=print) -> dict[str, Any]:
    """Run tests (a), (b) and (c) (when ``env.transfer`` is set) and write
    ``RUN_DIR/eval/{results.json, curves.npz}``. Returns the results dict."""
    run_dir = Path(run_dir)
    p = plan(cfg)
    log = log if parallel.is_primary() else (lambda msg: None)
    timing: dict[str, float] = {}
    imitators = load_imitators(run_dir, p.imitators)
    ev = cfg.eval
    env, tasks, ks = heldout_family(cfg)
    k = len(tasks)
    context = imitators["imitator"].params.cfg.context_len

    _log_replaced(cfg, run_dir, log)
    parts = PartCache(run_dir / "eval" / "parts", fingerprint(cfg))

    def timed(name: str, fn, *args, **kw) -> tuple[np.ndarray, ...]:
        """Run one agent (or reuse its saved output after an interruption)."""
        t0 = time.perf_counter()
        out, cached = parts.get_or_run(name, lambda: fn(*args, **kw))
        timing[name] = round(time.perf_counter() - t0, 2)
        log(f"evaluate: {name} " + ("reused" if cached else f"done in {timing[name]:.1f} s"))
        if not cached:
            stopping.stop_here(f"the evaluation after {name}, every finished agent saved")
        return out

    # Step signals of every agent on the training family, each as long as its tests need.
    roles_on = functools.partial(_roles_on, parts, imitators, cfg=cfg, progress=progress,
                                 log=log, timing=timing)
    h_roles = [role for role in ("imitator_h", "ed_h", "ablated_h") if role in imitators]
    lengths = {**dict.fromkeys(ROLES, p.env_steps), **dict.fromkeys(h_roles, p.horizon_steps)}
    steps = roles_on(lengths, env, tasks, ks.env)
    steps["random"] = timed(f"random on {env.spec.name}", random_steps, env, tasks, ks.env,
                            p.env_steps, cfg, progress)
    e = cfg.teacher.num_envs
    dqn_ep = rollout.Episodes(*timed(f"fresh DQN on {env.spec.name}", dqn_episodes, cfg, env, tasks,
                                  ks.dqn, p.env_steps, progress))

    tests, curves, skipped = {}, {}, {}
    # (a) skill match
    grid_a = grid(env.spec.episode_len, p.env_steps, ev.curve_points)
    ca = {role: curves_from_steps(*steps[role], grid_a) for role in ROLES}
    ca["random"] = curves_from_steps(*steps["random"], grid_a)
    ca["dqn"] = dqn_curves(dqn_ep, e, ev.dqn_seeds, k, grid_a)
    tests["a"] = _test_entry(cfg.env.name, {"context": context, "horizon": None})
    curves.update({"a.grid": grid_a, **{f"a.{n}": c for n, c in ca.items()}})
    # (b) horizon extrapolation: the H-imitators; metrics over (H, factor x H]
    grid_b = grid(env.spec.episode_len, p.horizon_steps, ev.curve_points, through=p.horizon)
    cb = {"imitator": curves_from_steps(*steps["imitator_h"], grid_b)}
    for ctrl in report.TRAINED_CONTROLS:
        src = f"{ctrl}_h" if f"{ctrl}_h" in steps else ctrl
        cb[ctrl] = curves_from_steps(*steps[src], grid_b)
    cb["random"] = curves_from_steps(*steps["random"], grid_b)
    cb["dqn"] = dqn_curves(dqn_ep, e, ev.dqn_seeds, k, grid_b)
    # Metrics over (H, factor x H]; the report's statistics add the same comparison over the steps
    # up to H ("before_h"), which the H-imitator's histories covered.
    tests["b"] = _test_entry(cfg.env.name, {"context": context, "horizon": p.horizon})
    tests["b"]["controls_trained_to_h"] = bool(ev.horizon_controls)
    curves.update({"b.grid": grid_b, **{f"b.{n}": c for n, c in cb.items()}})
    # (c) new family
    if cfg.env.transfer:
        env_c = envs.make(cfg.env.transfer, cfg.env.sticky_action_prob)
        tasks_c = envs.sample_tasks(cfg.env.transfer, ks.transfer_tasks, p.transfer_tasks,
                                    "heldout")
        grid_c = grid(env_c.spec.episode_len, p.transfer_steps, ev.curve_points)
        sigs = roles_on(dict.fromkeys(ROLES, p.transfer_steps), env_c, tasks_c, ks.transfer_env)
        cc = {role: curves_from_steps(*sigs[role], grid_c) for role in ROLES}
        sig = timed(f"random on {env_c.spec.name}", random_steps, env_c, tasks_c, ks.transfer_env,
                    p.transfer_steps, cfg, progress)
        cc["random"] = curves_from_steps(*sig, grid_c)
        ep_c = rollout.Episodes(*timed(f"fresh DQN on {env_c.spec.name}", dqn_episodes, cfg, env_c,
                                      tasks_c, ks.transfer_dqn, p.transfer_steps, progress))
        cc["dqn"] = dqn_curves(ep_c, e, ev.dqn_seeds, len(tasks_c), grid_c)
        tests["c"] = _test_entry(cfg.env.transfer, {"context": context, "horizon": None})
        curves.update({"c.grid": grid_c, **{f"c.{n}": c for n, c in cc.items()}})
    else:
        skipped["c"] = "env.transfer is empty"

    results = {
        "env": cfg.env.name, "transfer": cfg.env.transfer, "context_steps": context,
        "horizon": p.horizon, "horizon_factor": ev.horizon_factor, "env_steps": p.env_steps,
        "transfer_steps": p.transfer_steps, "mode": ev.mode, "confidence": ev.confidence,
        "bootstrap": ev.bootstrap, "final_frac": ev.final_frac, "ablation": ev.ablation,
        "fingerprint": fingerprint(cfg), "tasks": {"a": np.asarray(tasks).tolist()},
        "imitator_steps": {role: int(im.step) for role, im in imitators.items()},
        "imitators": training_facts(run_dir, p.imitators),
        "timing_s": timing, "skipped": skipped, "config": config_lib.to_dict(cfg), "tests": tests,
    }
    results = report.with_statistics(results, curves)
    if parallel.is_primary():
        report.write_eval(run_dir / "eval", results, curves)
    parts.clear()
    return results


# ---------------------------------------------------------------------------------------------
# climit bench rollout
# ---------------------------------------------------------------------------------------------

def bench_rollout(env_name: str, batches: list[int], contexts: list[int], *, steps: int,
                  recompute_steps: int, d_model: int, n_layers: int, n_heads: int,
                  compute_dtype: str = "auto", repeats: int = 3, modes=("kv_cache", "recompute")):
    """Env steps/s of in-context acting, B envs x context L, KV cache vs recomputing the window.

    Random-init weights (throughput only), greedy actions, real ``envs.step``, one jitted
    ``lax.scan`` per measurement (compile time reported apart). Yields JSON-ready dicts: one per
    (L, B, mode), then one ``rollout_ratio`` line per (L, B) with kv_cache / recompute.
    """
    from climit.imitator import model

    env = envs.make(env_name)
    spec = env.spec
    dtype = model.resolve_compute_dtype(compute_dtype)
    task = jnp.asarray(envs.all_tasks(env_name, "heldout")[0])
    for ctx in contexts:
        mcfg = model.ModelConfig(obs_shape=spec.obs_shape, obs_dtype=spec.obs_dtype,
                                 num_actions=spec.num_actions,
                                 action_mask=tuple(bool(m) for m in spec.action_mask),
                                 d_model=d_model, n_layers=n_layers, n_heads=n_heads,
                                 context_len=ctx, compute_dtype=dtype)
        params = model.init(mcfg, jax.random.key(0))
        for b in batches:
            yield from _bench_batch(env, task, mcfg, params, b, modes, steps, recompute_steps,
                                    repeats, {"env": env_name, "batch_envs": b, "context": ctx})


def _bench_batch(env, task, mcfg, params, b: int, modes, steps: int, recompute_steps: int,
                 repeats: int, tags: dict):
    """:func:`bench_rollout`'s lines for one (context, batch): one per mode, then the ratio."""
    import statistics

    rates = {}
    for mode in modes:
        n = steps if mode == "kv_cache" else recompute_steps
        compile_s, times = _time_rollout(env, task, mcfg, params, mode, b, n, repeats)
        med = statistics.median(times)
        rates[mode] = b * n / med
        yield {"bench": "rollout", "mode": mode, **tags, "steps": n, "d_model": mcfg.d_model,
               "layers": mcfg.n_layers, "heads": mcfg.n_heads, "dtype": mcfg.compute_dtype,
               "compile_s": round(compile_s, 3), "times_s": [round(t, 4) for t in times],
               "median_s": round(med, 4), "env_steps_per_s": round(rates[mode], 1),
               "device": jax.devices()[0].device_kind, "backend": jax.default_backend()}
    if len(rates) == 2:
        yield {"bench": "rollout_ratio", **tags,
               "kv_cache_over_recompute": round(rates["kv_cache"] / rates["recompute"], 2)}


def _time_rollout(env, task, mcfg, params, mode: str, b: int, n: int,
                  repeats: int) -> tuple[float, list[float]]:
    """(compile seconds, wall seconds per repeat) of one jitted ``lax.scan`` rollout of ``n``
    steps in ``b`` envs, acting greedily by the KV cache or by recomputing the window."""
    from climit.imitator import model

    if mode == "kv_cache":
        act, carry0 = imitator_policy(mcfg.action_mask, "greedy"), model.init_cache(mcfg, 1)
    else:
        act, carry0 = (window_policy(mcfg.action_mask, "greedy"),
                       init_window(params, mcfg.context_len))

    def one(params, key):
        rs = rollout.init(env, key, task)
        _, _, (rew, _) = rollout.run(env, act, params, carry0, rs, task, n, _signal)
        return rew.sum()

    keys_B = jax.random.split(jax.random.key(1), b)
    t0 = time.perf_counter()
    compiled = jax.jit(jax.vmap(one, in_axes=(None, 0))).lower(params, keys_B).compile()
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(params, keys_B))
        times.append(time.perf_counter() - t0)
    return compile_s, times


def peer_ratio(ours: dict, peer: dict) -> dict | None:
    """The climit/peer line for one peer record: the KV-cache rollout's median env steps/s over
    the reference's at the same batch and context (None without a matching climit record).
    ``ours``: {(context, batch): kv_cache env steps/s}."""
    mine = ours.get((peer.get("context"), peer.get("batch_envs")))
    if not (mine and peer.get("env_steps_per_s")):
        return None
    return {"bench": "ratio_climit_over_peer", "batch_envs": peer["batch_envs"],
            "context": peer["context"], "env_steps_per_s": round(mine / peer["env_steps_per_s"], 3)}


def bench_peer(script: Path, env_name: str, batches: list[int], contexts: list[int], *, steps: int,
               d_model: int, n_layers: int, n_heads: int, dtype: str, repeats: int = 3):
    """Run the reference ``icrl_rollout_bench.py`` at the same sizes and repeats in this
    command; yields its JSON lines (tagged ``peer``)."""
    import json
    import subprocess
    import sys

    script = script.resolve()  # it runs from its own folder, so a relative path would break
    if not script.is_file():
        raise ArtifactError(f"peer benchmark not found at {script}; pass --peer-script")
    cmd = [sys.executable, str(script), "--env", env_name, "--batch", *map(str, batches),
           "--context", *map(str, contexts), "--steps", str(steps), "--d-model", str(d_model),
           "--layers", str(n_layers), "--heads", str(n_heads), "--dtype", dtype,
           "--repeats", str(repeats)]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=script.parent)
    if out.returncode:
        raise ArtifactError(f"peer benchmark failed: {out.stderr.strip()[-500:]}")
    for line in out.stdout.splitlines():
        if line.startswith("{"):
            yield {"peer": "icrl_rollout_bench", **json.loads(line)}
