"""The one rollout primitive: a policy acting in ONE environment, step by step, via ``lax.scan``.

The DQN's greedy evaluation, the frozen imitator, the random control and the benchmarks all act
through :func:`step` / :func:`rollout`, so their environment stepping (``climit.envs.step``,
auto-reset) and episode accounting (:func:`episode_returns`, :func:`curve`) are the same code and
their curves compare step for step. Write the single-environment rollout, ``vmap`` outward over
envs, tasks and seeds (gymnax style).

A *policy* is a pure function

    act(policy_params, carry, inp: PolicyInput, key) -> (action int32 [], carry)

where ``carry`` is the policy's own recurrent state (DQN: ``()``; imitator: its KV cache) and
``inp`` holds what an in-context learner sees at step t: the observation it acts on, the action
and reward of step t-1 and whether t starts an episode. ``prev_action``/``prev_reward`` carry
across episode boundaries (at the first step of episode n+1 they are the last action and reward
of episode n; a policy that wants them zeroed there can use ``episode_start``); at the very first
step of a rollout they are ``NO_ACTION`` (-1, the histories' and the imitator's "none") and 0.0,
and ``episode_start`` is True.

A rollout can run for any number of steps, far longer than an episode: episodes auto-reset, and
:class:`RolloutState` lets a long rollout continue in jitted chunks. What is stacked over time
is chosen by ``record`` (default: :class:`Trajectory`, i.e. action, reward, terminated,
truncated -- no observations, so 10k-step rollouts of thousands of envs stay small).

Axis letters: T time, M episodes, P grid points, O observation, A (padded) actions.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from climit import envs

NO_ACTION = -1  # prev_action at the first step of a rollout (no previous step)


class PolicyInput(NamedTuple):
    """What a policy sees before acting at step t (one environment)."""

    obs: jax.Array  # O, interface storage dtype: the observation acted on
    prev_action: jax.Array  # int32 []: action at t-1 (NO_ACTION = -1 at the rollout's first step)
    prev_reward: jax.Array  # float32 []: reward at t-1 (0 at the rollout's first step)
    episode_start: jax.Array  # bool []: t is the first step of an episode


class RolloutState(NamedTuple):
    """Everything that continues a rollout of one environment between chunks."""

    env_state: Any
    inp: PolicyInput  # the input of the next step
    key: jax.Array
    t: jax.Array  # int32 []: env steps taken so far


class Transition(NamedTuple):
    """One step of one environment, as the history writer and the teacher see it."""

    obs: jax.Array  # O: observation the action was taken from
    action: jax.Array  # int32 []
    reward: jax.Array  # float32 []
    terminated: jax.Array  # bool []
    truncated: jax.Array  # bool []
    final_obs: jax.Array  # O: observation the action led to (before any auto-reset)


class Trajectory(NamedTuple):
    """The default record: enough for episode accounting and action checks."""

    action: jax.Array  # int32 [T]
    reward: jax.Array  # float32 [T]
    terminated: jax.Array  # bool [T]
    truncated: jax.Array  # bool [T]

    @property
    def done(self) -> jax.Array:
        """bool [T]: an episode ended at this step (terminated or truncated)."""
        return self.terminated | self.truncated


Policy = Callable[[Any, Any, PolicyInput, jax.Array], tuple[jax.Array, Any]]


def trajectory(tr: Transition) -> Trajectory:
    """Default ``record``: drop observations."""
    return Trajectory(tr.action, tr.reward, tr.terminated, tr.truncated)


def full(tr: Transition) -> Transition:
    """``record`` that keeps every field (histories, tests)."""
    return tr


def _strong(tree: Any) -> Any:
    """Drop weak types (gymnax ``time`` fields) so the state is a stable ``lax.scan`` carry."""
    return jax.tree.map(lambda x: jnp.asarray(x, dtype=jnp.asarray(x).dtype), tree)


# ---------------------------------------------------------------------------------------------
# Stepping
# ---------------------------------------------------------------------------------------------

def init(env: envs.Env, key: jax.Array, task_K: jax.Array) -> RolloutState:
    """Reset one environment for ``task_K`` (int32 [K]) and return the state of step 0."""
    key, reset_key = jax.random.split(key)
    obs_O, env_state = envs.reset(env, reset_key, task_K)
    inp = PolicyInput(obs=obs_O, prev_action=jnp.int32(NO_ACTION), prev_reward=jnp.float32(0.0),
                      episode_start=jnp.array(True))
    return RolloutState(env_state=_strong(env_state), inp=inp, key=key, t=jnp.int32(0))


def step(env: envs.Env, act: Policy, policy_params: Any, carry: Any, rs: RolloutState,
         task_K: jax.Array) -> tuple[Any, RolloutState, Transition]:
    """One policy decision and one env step: ``(carry, rs, transition)``."""
    key, act_key, env_key = jax.random.split(rs.key, 3)
    action, carry = act(policy_params, carry, rs.inp, act_key)
    action = jnp.asarray(action, jnp.int32)
    out = envs.step(env, env_key, rs.env_state, action, task_K)
    done = out.terminated | out.truncated
    tr = Transition(obs=rs.inp.obs, action=action, reward=out.reward, terminated=out.terminated,
                    truncated=out.truncated, final_obs=out.final_obs)
    inp = PolicyInput(obs=out.obs, prev_action=action, prev_reward=out.reward, episode_start=done)
    rs = RolloutState(env_state=_strong(out.state), inp=inp, key=key, t=rs.t + 1)
    return carry, rs, tr


def run(env: envs.Env, act: Policy, policy_params: Any, carry: Any, rs: RolloutState,
        task_K: jax.Array, num_steps: int, record: Callable[[Transition], Any] = trajectory,
        ) -> tuple[Any, RolloutState, Any]:
    """Continue a rollout by ``num_steps`` (static) steps: ``(carry, rs, record(tr)[T])``.

    Chunks compose: ``run`` for 50 steps then 50 more equals ``run`` for 100 (same keys).
    """
    def body(c, _):
        carry, rs = c
        carry, rs, tr = step(env, act, policy_params, carry, rs, task_K)
        return (carry, rs), record(tr)

    (carry, rs), rec = jax.lax.scan(body, (carry, rs), None, length=num_steps)
    return carry, rs, rec


def rollout(env: envs.Env, act: Policy, policy_params: Any, carry0: Any, task_K: jax.Array,
            key: jax.Array, num_steps: int, record: Callable[[Transition], Any] = trajectory,
            ) -> tuple[Any, Any]:
    """A fresh rollout of ONE environment: reset, then ``num_steps`` steps. ``(carry, rec[T])``.

    ``num_steps`` is static (jit with ``static_argnums``/``functools.partial``); vmap over
    ``task_K``, ``key`` (and ``carry0``/``policy_params`` where they differ per env).
    """
    rs = init(env, key, task_K)
    carry, _, rec = run(env, act, policy_params, carry0, rs, task_K, num_steps, record)
    return carry, rec


# ---------------------------------------------------------------------------------------------
# Standard action rules (shared so the DQN, the imitator and the controls mask alike)
# ---------------------------------------------------------------------------------------------

def masked_argmax(values_A: jax.Array, mask_A: jax.Array) -> jax.Array:
    """Greedy action over the real actions: int32 []. Ties go to the lowest index."""
    return jnp.argmax(jnp.where(mask_A, values_A, -jnp.inf)).astype(jnp.int32)


def masked_sample(key: jax.Array, logits_A: jax.Array, mask_A: jax.Array) -> jax.Array:
    """A categorical sample over the real actions: int32 []."""
    return jax.random.categorical(key, jnp.where(mask_A, logits_A, -jnp.inf)).astype(jnp.int32)


def uniform_action(key: jax.Array, mask_A: jax.Array) -> jax.Array:
    """A uniformly random real action: int32 []."""
    return masked_sample(key, jnp.zeros(mask_A.shape, jnp.float32), mask_A)


def epsilon_greedy(key: jax.Array, values_A: jax.Array, mask_A: jax.Array,
                   eps: jax.Array) -> jax.Array:
    """With probability ``eps`` a uniform real action, else the masked argmax: int32 []."""
    explore_key, action_key = jax.random.split(key)
    explore = jax.random.uniform(explore_key) < eps
    return jnp.where(explore, uniform_action(action_key, mask_A), masked_argmax(values_A, mask_A))


def random_policy(mask_A: jax.Array) -> Policy:
    """The random control: uniform over real actions; no params, no carry."""
    mask_A = jnp.asarray(mask_A)

    def act(params: Any, carry: Any, inp: PolicyInput, key: jax.Array):
        return uniform_action(key, mask_A), carry

    return act


def q_policy(q_fn: Callable[[Any, jax.Array], jax.Array], mask_A: jax.Array) -> Policy:
    """Epsilon-greedy over ``q_fn(params, obs_O) -> q_A``; params = ``(net_params, eps)``.

    ``eps = 0`` is the greedy evaluation policy of a DQN.
    """
    mask_A = jnp.asarray(mask_A)

    def act(params: Any, carry: Any, inp: PolicyInput, key: jax.Array):
        net_params, eps = params
        return epsilon_greedy(key, q_fn(net_params, inp.obs), mask_A, eps), carry

    return act


# ---------------------------------------------------------------------------------------------
# Episode accounting (jnp: jittable and vmappable; also works on numpy inputs)
# ---------------------------------------------------------------------------------------------

class Episodes(NamedTuple):
    """Completed episodes of one stream, in order, padded to a fixed count M."""

    returns: jax.Array  # float32 [M]: NaN where not valid
    lengths: jax.Array  # int32 [M]: 0 where not valid
    end_step: jax.Array  # int32 [M]: env steps taken when the episode ended (1-based); 0 invalid
    valid: jax.Array  # bool [M]: the episode finished within the stream and fits in M


def episode_returns(reward_T: jax.Array, done_T: jax.Array, max_episodes: int) -> Episodes:
    """Per-episode returns of one stream from rewards and boundaries (``terminated|truncated``).

    Only episodes that END within the stream count (an unfinished last episode is dropped);
    episodes past ``max_episodes`` are dropped. Episode n is the segment after the n-th boundary.
    """
    reward_T = jnp.asarray(reward_T, jnp.float32)
    done_T = jnp.asarray(done_T, bool)
    steps_T = jnp.arange(1, reward_T.shape[0] + 1, dtype=jnp.int32)
    episode_T = jnp.cumsum(done_T.astype(jnp.int32)) - done_T.astype(jnp.int32)
    m = max_episodes
    # Steps of unfinished or overflowing episodes go to segment m, which is then dropped.
    episode_T = jnp.minimum(episode_T, m)
    returns = jax.ops.segment_sum(reward_T, episode_T, num_segments=m + 1)[:m]
    lengths = jax.ops.segment_sum(jnp.ones_like(steps_T), episode_T, num_segments=m + 1)[:m]
    end_step = jax.ops.segment_max(jnp.where(done_T, steps_T, 0), episode_T, num_segments=m + 1)[:m]
    valid = jnp.arange(m) < jnp.sum(done_T.astype(jnp.int32))
    return Episodes(returns=jnp.where(valid, returns, jnp.nan),
                    lengths=jnp.where(valid, lengths, 0),
                    end_step=jnp.where(valid, end_step, 0).astype(jnp.int32), valid=valid)


def _ends(tr: Transition) -> tuple[jax.Array, jax.Array]:
    """What an episode return needs of each step: (reward, episode ended)."""
    return tr.reward, tr.terminated | tr.truncated


def first_returns(env: envs.Env, act: Policy, policy_params: Any, carry0: Any,
                  task_K: jax.Array, key: jax.Array, episodes: int) -> jax.Array:
    """Returns float32 [N] of the first N = ``episodes`` episodes of one fresh rollout.

    ``N * episode_len`` steps hold at least N whole episodes (each ends by its time limit), so
    all N are valid. ``episodes`` is static; vmap as :func:`rollout`.
    """
    _, (reward_T, done_T) = rollout(env, act, policy_params, carry0, task_K, key,
                                    episodes * env.spec.episode_len, record=_ends)
    return episode_returns(reward_T, done_T, max_episodes=episodes).returns


def curve(episodes: Episodes, grid_P: jax.Array) -> jax.Array:
    """Return vs env steps: float32 [P], at each grid step the mean return of the episodes that
    ended in ``(grid[p-1], grid[p]]`` (``grid[-1] = 0``); an empty bin repeats the previous value;
    NaN before the first episode ends. A NaN return stays NaN (its bin is not empty: it is not
    papered over with the previous value), so the statistics refuse it.

    With fixed-length episodes and ``grid = episode_len * (1..M)`` this is exactly the returns.
    """
    grid_P = jnp.asarray(grid_P, jnp.int32)
    p = grid_P.shape[0]
    # bin of each episode: first grid point >= its end step; invalid or beyond the grid -> p
    bin_M = jnp.searchsorted(grid_P, episodes.end_step, side="left")
    bin_M = jnp.where(episodes.valid, bin_M, p)
    ret_M = jnp.where(episodes.valid, episodes.returns, 0.0)
    total_P = jax.ops.segment_sum(ret_M, bin_M, num_segments=p + 1)[:p]
    count_P = jax.ops.segment_sum(episodes.valid.astype(jnp.float32), bin_M, num_segments=p + 1)[:p]
    mean_P = jnp.where(count_P > 0, total_P / jnp.maximum(count_P, 1.0), jnp.nan)

    def carry_forward(last, x_and_empty):
        x, empty = x_and_empty
        v = jnp.where(empty, last, x)
        return v, v

    _, filled_P = jax.lax.scan(carry_forward, jnp.float32(jnp.nan), (mean_P, count_P == 0))
    return filled_P
