"""The pure DQN learner: known Q-values on tiny environments, targets, replay, keys, sweeps."""

from __future__ import annotations

import dataclasses
import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import struct
from gymnax.environments import environment, spaces

from climit import config, envs, keys
from climit.teacher import dqn, networks, replay

# ---------------------------------------------------------------------------------------------
# Tiny gymnax-API environments with known Q-values
# ---------------------------------------------------------------------------------------------

@struct.dataclass
class ChainState(environment.EnvState):
    pos: jax.Array
    time: int


class Chain(environment.Environment):
    """``n`` states in a row; any action moves one right; reward 1 (and termination) on leaving
    the last one. Q(state i, any a) = gamma^(n-1-i). Observation: one-hot position."""

    def __init__(self, n: int, reward_every_step: bool = False, max_steps: int = 100):
        super().__init__()
        self.n, self.every, self.max_steps = n, reward_every_step, max_steps

    @property
    def default_params(self):
        return environment.EnvParams(max_steps_in_episode=self.max_steps)

    def step_env(self, key, state, action, params):
        last = state.pos == self.n - 1
        reward = jnp.where(last | self.every, 1.0, 0.0)
        terminated = last & (not self.every)
        pos = jnp.where(last, state.pos, state.pos + 1)
        state = ChainState(pos=pos, time=state.time + 1)
        return self.get_obs(state), state, reward, terminated, {}

    def reset_env(self, key, params):
        state = ChainState(pos=jnp.int32(0), time=0)
        return self.get_obs(state), state

    def get_obs(self, state, params=None, key=None):
        return jax.nn.one_hot(state.pos, self.n)

    @property
    def num_actions(self):
        return 2

    def action_space(self, params=None):
        return spaces.Discrete(2)

    def observation_space(self, params=None):
        return spaces.Box(0, 1, (self.n,), jnp.float32)


def tiny_env(n: int, reward_every_step: bool = False, max_steps: int = 100) -> envs.Env:
    """A handle with 3 interface actions of which 2 are real (the third is padding)."""
    gym = Chain(n, reward_every_step, max_steps)
    spec = envs.EnvSpec(name=f"chain{n}", interface="test", obs_shape=(n,), obs_dtype="float32",
                        num_actions=3, native_obs_shape=(n,), native_num_actions=2,
                        episode_len=max_steps, task_dim=0, num_tasks={"train": 1, "heldout": 1},
                        description="test chain")
    return envs.Env(spec=spec, gym=gym)


def tiny_cfg(**kw) -> config.TeacherConfig:
    base = dict(hidden=(32,), num_envs=2, total_env_steps=3000, buffer_size=500, batch_size=32,
                learning_starts=64, lr=3e-3, gamma=0.9, eps_decay_steps=500, eps_end=0.2,
                target_period=50, chunk_steps=100, q_log_period=0)
    base.update(kw)
    return config.TeacherConfig(**base)


def train(tcfg, env, g=1, seed=0, steps=None, record="stats", hp=None):
    tasks = jnp.zeros((g, env.spec.task_dim), jnp.int32)
    state = dqn.init(tcfg, env, dqn.learner_keys(jax.random.PRNGKey(seed), 1, g), tasks)
    hp = hp if hp is not None else dqn.hparams(tcfg, g)
    steps = steps or tcfg.total_env_steps // tcfg.num_envs
    fn = dqn.make_chunk(tcfg, env, steps, record, 0)
    return fn(state, hp, tasks)


def q_values(tcfg, env, state, obs_O):
    net = dqn.network(tcfg, env.spec)
    params0 = jax.tree.map(lambda x: x[0], state.learners.params)
    return np.asarray(networks.apply(net, params0, jnp.asarray(obs_O, jnp.float32)))


# ---------------------------------------------------------------------------------------------
# Known answers
# ---------------------------------------------------------------------------------------------

def test_one_step_reward_one_gives_q_one():
    tcfg, env = tiny_cfg(), tiny_env(1)
    state, _ = train(tcfg, env)
    q = q_values(tcfg, env, state, [1.0])
    np.testing.assert_allclose(q[:2], [1.0, 1.0], atol=0.05)


def test_two_step_chain_gives_gamma():
    tcfg, env = tiny_cfg(), tiny_env(2)
    state, _ = train(tcfg, env)
    np.testing.assert_allclose(q_values(tcfg, env, state, [1.0, 0.0])[:2], [0.9, 0.9], atol=0.05)
    np.testing.assert_allclose(q_values(tcfg, env, state, [0.0, 1.0])[:2], [1.0, 1.0], atol=0.05)


def test_truncation_bootstraps_termination_does_not():
    # One state, reward 1 every step, never terminates, cut at 3 steps. With gamma 0.5 the
    # value is 1 / (1 - 0.5) = 2; treating the cut as terminal would give 1.5 instead.
    tcfg, env = tiny_cfg(gamma=0.5, dueling=True), tiny_env(1, reward_every_step=True, max_steps=3)
    state, _ = train(tcfg, env)
    np.testing.assert_allclose(q_values(tcfg, env, state, [1.0])[:2], [2.0, 2.0], atol=0.08)


def test_td_target_unit():
    mask = jnp.array([True, True, False])
    q_target = jnp.array([[1.0, 3.0, 100.0], [2.0, 0.5, 100.0]])
    q_online = jnp.array([[5.0, 0.0, 100.0], [0.0, 1.0, 100.0]])
    r, gamma = jnp.array([1.0, 1.0]), 0.5
    not_term = jnp.array([False, False])
    # plain: max over real actions of the target net (the padded 100 never counts)
    np.testing.assert_allclose(dqn.td_target(r, not_term, gamma, q_target, None, mask), [2.5, 2.0])
    # double: online argmax (0, then 1) evaluated by the target net
    np.testing.assert_allclose(dqn.td_target(r, not_term, gamma, q_target, q_online, mask),
                               [1.5, 1.25])
    # terminated: no bootstrap
    np.testing.assert_allclose(
        dqn.td_target(r, jnp.array([True, False]), gamma, q_target, None, mask), [1.0, 2.0])


def test_truncated_step_stores_final_obs_and_no_termination():
    # Dark Room: 20 steps, then truncation; the stored next observation is where the agent
    # ended, not the reset centre, and terminated stays False.
    env = envs.make("darkroom")
    tcfg = tiny_cfg(num_envs=1, total_env_steps=200, learning_starts=150, buffer_size=64,
                    batch_size=8)
    tasks = jnp.array([[0, 0]], jnp.int32)
    state = dqn.init(tcfg, env, dqn.learner_keys(jax.random.PRNGKey(3), 1, 1), tasks)
    state, out = dqn.make_chunk(tcfg, env, 20, "full", 0)(state, dqn.hparams(tcfg), tasks)
    buf = jax.tree.map(lambda x: np.asarray(x[0]), state.learners.replay)
    s = jax.tree.map(np.asarray, out.streams)
    assert s.truncated_NxT[0, 19] and not s.truncated_NxT[0, :19].any()
    assert not buf.terminated_C[:20].any()
    np.testing.assert_array_equal(buf.next_obs_CxO[:19], buf.obs_CxO[1:20])  # chain of moves
    np.testing.assert_array_equal(buf.obs_CxO[:20], s.obs_NxTxO[0])
    centre = np.array([4, 4])
    np.testing.assert_array_equal(np.asarray(state.learners.envs.inp.obs[0, 0]), centre)
    # Row 19, the truncated step: its next observation is the cell its action led to (Dark Room
    # moves: up, down, left, right, stay, clipped to the 9x9 room), not the centre it reset to.
    moves = np.array([[0, 1], [0, -1], [-1, 0], [1, 0], [0, 0]])
    last = np.clip(s.obs_NxTxO[0, 19].astype(int) + moves[s.action_NxT[0, 19]], 0, 8)
    assert not np.array_equal(last, centre)  # the seed ends the episode away from the centre
    np.testing.assert_array_equal(buf.next_obs_CxO[19], last)
    assert not buf.terminated_C[19]


@pytest.mark.parametrize("buffer_size,num_envs", [(64, 2), (50, 3), (24, 2)])
def test_streams_read_from_replay_equal_the_per_step_record(buffer_size, num_envs):
    # 2 learners x E envs, chunks of 16 vector steps with Q-values every 8: read back from the
    # replay buffer the chunk's streams equal what the scan stacks step by step, with the ring
    # wrapping between chunks (64 rows, 32 transitions a chunk) and inside them (50 rows, 48).
    # With 24 rows a chunk does not fit, and make_chunk must fall back to the per-step record
    # (reading the buffer would return rows the chunk itself overwrote).
    env = envs.make("darkroom")
    tcfg = tiny_cfg(buffer_size=buffer_size, num_envs=num_envs, batch_size=8, learning_starts=20,
                    total_env_steps=80 * num_envs)
    tasks = jnp.array([[1, 2], [6, 3]], jnp.int32)
    hp = dqn.hparams(tcfg, 2)
    read = dqn.make_chunk(tcfg, env, 16, "full", 8)
    stacked = jax.jit(functools.partial(dqn.chunk, tcfg, env, 16, "full", 8, from_replay=False))
    state = dqn.init(tcfg, env, dqn.learner_keys(jax.random.PRNGKey(5), 1, 2), tasks)
    for _ in range(5):
        ref_state, ref = stacked(state, hp, tasks)
        state, out = read(state, hp, tasks)
        jax.tree.map(np.testing.assert_array_equal, jax.device_get(out), jax.device_get(ref))
        jax.tree.map(np.testing.assert_array_equal, jax.device_get(state),
                     jax.device_get(ref_state))
    s = jax.tree.map(np.asarray, out.streams)
    assert s.obs_NxTxO.shape == (2 * num_envs, 16, 2) and s.action_NxT.dtype == np.uint8
    assert len(np.unique(s.action_NxT)) > 1 and s.truncated_NxT.any()  # not all the same row


def test_epsilon_schedule_known_values():
    # eps_start until learning starts, then linear to eps_end over eps_decay_steps, then flat.
    tcfg = tiny_cfg(eps_start=1.0, eps_end=0.1, eps_decay_steps=200, learning_starts=100)
    hp = dqn.hparams(tcfg)
    steps = jnp.array([0, 50, 100, 150, 200, 250, 300, 301, 10_000])
    expected = [1.0, 1.0, 1.0, 0.775, 0.55, 0.325, 0.1, 0.1, 0.1]
    np.testing.assert_allclose(np.asarray(dqn.epsilon(tcfg, hp, steps)), expected, rtol=1e-6)
    # per learner: a swept eps_end / eps_decay_steps applies to its own learner only
    hp2 = dqn.hparams(tcfg, 2, eps_end=np.array([0.1, 0.5]), eps_decay_steps=np.array([200, 100]))
    np.testing.assert_allclose(np.asarray(dqn.epsilon(tcfg, hp2, jnp.float32(150))), [0.775, 0.75],
                               rtol=1e-6)


def test_act_step_and_td_update_apply_the_schedules_in_env_steps(monkeypatch):
    # The schedules count env steps per learner (all its envs together): vector step t of a
    # 2-env learner is env step 2t for epsilon, and an update after count transitions scales
    # the lr by lr_scale(count) (1 at learning_starts, lr_final_frac at total_env_steps).
    tcfg = tiny_cfg(num_envs=2, lr_final_frac=0.5, learning_starts=100, total_env_steps=3000,
                    buffer_size=80)  # full after the 40 steps: every update samples the same rows
    env, hp = tiny_env(3), jax.tree.map(lambda x: x[0], dqn.hparams(tcfg))  # one learner
    learner = dqn.init_learner(tcfg, env, jax.random.PRNGKey(0), jnp.zeros((0,), jnp.int32))
    seen = []
    real = dqn.epsilon
    monkeypatch.setattr(dqn, "epsilon", lambda c, h, env_steps: seen.append(int(env_steps))
                        or real(c, h, env_steps))
    for t in range(40):  # eager: the spy sees concrete values
        learner, _, _ = dqn.act_step(tcfg, env, dqn.network(tcfg, env.spec), learner, hp,
                                     jnp.zeros((0,), jnp.int32), jnp.int32(t))
    assert seen == [2 * t for t in range(40)]
    net = dqn.network(tcfg, env.spec)
    before = jax.tree.leaves(learner.params)
    deltas = []
    for count in (100, 100 + (3000 - 100) // 2, 3000, 5000):  # start, half way, the end, past it
        after, _ = dqn.td_update(tcfg, net, learner, hp, jnp.int32(count))
        deltas.append(np.concatenate([np.ravel(a - b)
                                      for a, b in zip(jax.tree.leaves(after.params), before)]))
    assert np.abs(deltas[0]).max() > 0
    for d, scale in zip(deltas[1:], (0.75, 0.5, 0.5)):  # the same direction, the lr scaled
        np.testing.assert_allclose(d, scale * deltas[0], rtol=1e-3, atol=1e-9)


def _target_steps(tcfg, n):
    """(updates, online params, target params) as host trees after each of ``n`` single vector
    steps of one learner on the 2-env tiny chain (one TD update per vector step from step 32,
    i.e. 64 env steps, on), after the initial (0, params, target)."""
    env, tasks = tiny_env(2), jnp.zeros((1, 0), jnp.int32)
    state = dqn.init(tcfg, env, dqn.learner_keys(jax.random.PRNGKey(0), 1, 1), tasks)
    one_step = dqn.make_chunk(tcfg, env, 1, "stats", 0)
    host = lambda tree: jax.tree.map(np.asarray, tree)  # noqa: E731
    yield 0, host(state.learners.params), host(state.learners.target_params)
    for _ in range(n):
        state, _ = one_step(state, dqn.hparams(tcfg), tasks)
        yield int(state.updates), host(state.learners.params), host(state.learners.target_params)


def test_hard_target_copies_exactly_every_target_period_updates():
    # target_params change exactly when the update count reaches a multiple of 5, and then
    # equal the online params; in between they stay put while the online params move.
    period = 5
    steps = _target_steps(tiny_cfg(target="hard", target_period=period, total_env_steps=200), 60)
    same = lambda a, b: all(np.array_equal(x, y)
                            for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
    _, params0, prev_target = next(steps)
    assert same(prev_target, params0)  # the target starts as a copy of the online network
    copies = []
    for u, params, target in steps:
        if u > 0 and u % period == 0:
            assert same(target, params), f"after update {u}: target != online params"
            copies.append(u)
        else:
            assert same(target, prev_target), f"target changed at update {u}"
            assert u == 0 or not same(target, params)
        prev_target = target
    assert u == 60 - 31 and copies == [5, 10, 15, 20, 25]


def test_td_loss_switches_on_double_and_loss():
    # Q(s) = the q bias (features are 1 for obs [1]): online [5, 0, (100)], target [1, 3, (100)]
    # with the third action padded. Transition (s, a=0, r=1, s'=s), gamma 0.5, squared loss:
    # plain DQN: y = 1 + 0.5 * max(1, 3) = 2.5, loss 0.5 * (5 - 2.5)^2 = 3.125;
    # Double DQN: y = 1 + 0.5 * Q_target(argmax online = 0) = 1.5, loss 0.5 * 3.5^2 = 6.125.
    # Huber (delta 1) is |e| - 0.5 past 1 (2.0 and 3.0 here) and 0.5 e^2 within (online Q 2.8
    # under plain DQN: e = 0.3, 0.045).
    net = networks.QNet("mlp", (1,), 3, (1,), action_mask=(True, True, False))

    def params(q_bias):
        return {"dense_0": {"w": jnp.ones((1, 1)), "b": jnp.zeros(1)},
                "q": {"w": jnp.zeros((1, 3)), "b": jnp.array(q_bias)}}
    batch = replay.Batch(obs_BxO=jnp.ones((1, 1)), action_B=jnp.array([0]),
                         reward_B=jnp.array([1.0]),
                         next_obs_BxO=jnp.ones((1, 1)), terminated_B=jnp.array([False]))
    target = params([1.0, 3.0, 100.0])
    for double, kind, q0, expected in ((False, "mse", 5.0, 3.125), (True, "mse", 5.0, 6.125),
                                       (False, "huber", 5.0, 2.0), (True, "huber", 5.0, 3.0),
                                       (False, "huber", 2.8, 0.045)):
        tcfg = tiny_cfg(double=double, loss=kind)
        loss = dqn.td_loss(tcfg, net, params([q0, 0.0, 100.0]), target, batch, jnp.float32(0.5))
        np.testing.assert_allclose(float(loss), expected, rtol=1e-5,
                                   err_msg=f"{double=} {kind=} {q0=}")


def test_minatar_network_takes_exactly_one_width():
    # The conv net has one dense layer; extra widths were silently ignored.
    with pytest.raises(config.ConfigError, match="teacher.hidden.*MinAtar.*one width"):
        config.load(None, ["env.name=Breakout-MinAtar", "env.train_tasks=1", "env.transfer=",
                           "teacher.network=minatar"])  # default hidden [64, 64]
    cfg = config.load(None, ["env.name=Breakout-MinAtar", "env.train_tasks=1", "env.transfer=",
                             "teacher.network=minatar", "teacher.hidden=[128]"])
    assert cfg.teacher.hidden == (128,)
    with pytest.raises(ValueError, match="one width"):
        networks.QNet("minatar", (10, 10, 10), 6, (128, 64))


# ---------------------------------------------------------------------------------------------
# Keys, sweeps, masking, records
# ---------------------------------------------------------------------------------------------

def _history(seed: int, g: int = 2, **changes):
    env = envs.make("darkroom")
    tcfg = tiny_cfg(**{"num_envs": 1, "total_env_steps": 400, "learning_starts": 50, **changes})
    tasks = jnp.tile(jnp.array([[1, 2]], jnp.int32), (g, 1))
    state = dqn.init(tcfg, env, dqn.learner_keys(jax.random.PRNGKey(seed), 1, g), tasks)
    state, out = dqn.make_chunk(tcfg, env, 400, "full", 0)(state, dqn.hparams(tcfg, g), tasks)
    return np.asarray(out.streams.action_NxT), jax.tree.map(np.asarray, state.learners.params)


def test_seeds_differ_and_same_seed_is_identical():
    actions_a, params_a = _history(seed=0)
    actions_b, params_b = _history(seed=0)
    np.testing.assert_array_equal(actions_a, actions_b)
    jax.tree.map(np.testing.assert_array_equal, params_a, params_b)
    # two learners of one run (same task) differ, and another root seed differs again
    assert (actions_a[0] != actions_a[1]).mean() > 0.3
    actions_c, _ = _history(seed=1)
    assert (actions_a != actions_c).mean() > 0.3


def test_unrolled_scans_give_the_same_learning():
    """teacher.scan_unroll only changes how many steps a loop iteration holds, not the learning
    (here 3 vector steps and both of a round's 2 updates per iteration): the same actions, and
    weights equal to float32 rounding (XLA fuses the unrolled body differently; seen: 7e-7
    absolute after 700 updates)."""
    actions_a, params_a = _history(seed=0, updates_per_train=2)
    actions_b, params_b = _history(seed=0, updates_per_train=2, scan_unroll=3)
    np.testing.assert_array_equal(actions_a, actions_b)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5), params_a,
                 params_b)


def test_learner_keys_are_distinct_and_shared_across_sweep_points():
    keys = np.asarray(dqn.learner_keys(jax.random.PRNGKey(0), n_tasks=3, n_seeds=2, n_points=2))
    assert keys.shape == (12, 2)
    assert len({tuple(k) for k in keys[:6]}) == 6
    np.testing.assert_array_equal(keys[:6], keys[6:])


def _swept_params(tcfg, hp, points):
    """Online params (host) of ``points`` learners of one sweep on the 2-chain: every point gets
    the same key (common random numbers), as teacher.sweep gives them."""
    env, tasks = tiny_env(2), jnp.zeros((points, 0), jnp.int32)
    keys = dqn.learner_keys(jax.random.PRNGKey(0), 1, 1, n_points=points)
    state = dqn.init(tcfg, env, keys, tasks)
    state, _ = dqn.make_chunk(tcfg, env, 150, "stats", 0)(state, hp, tasks)
    return jax.tree.map(np.asarray, state.learners.params)


# Two values per sweepable field, far enough apart that the two runs differ.
SWEEP_CASES = {"lr": (3e-3, 1e-2), "gamma": (0.9, 0.5), "eps_end": (0.2, 1.0),
               "eps_decay_steps": (500.0, 20.0), "tau": (0.05, 0.5)}


def test_every_sweepable_field_has_a_sweep_case():
    # A field made sweepable (SWEEPABLE and HParams) without a case below would pass every test
    # while its learners still read the config's value (an optimizer built from tcfg, say).
    assert set(SWEEP_CASES) == set(config.TeacherConfig.SWEEPABLE)


@pytest.mark.parametrize("field, values", list(SWEEP_CASES.items()))
def test_each_sweep_point_equals_its_own_run(field, values):
    # A sweep of one SWEEPABLE field over two values: point i is, to float rounding, the run
    # configured with values[i] alone (same key). A learner that read the config's value
    # instead of its own (td_update taking tcfg.gamma, say) would copy point 0 and not match
    # its own run; point 0 alone could not show that, the config holding its value.
    base = tiny_cfg(target="polyak", total_env_steps=300)
    swept = _swept_params(base, dqn.hparams(base, 2, **{field: np.array(values)}), 2)
    close = functools.partial(np.allclose, rtol=1e-4, atol=1e-5)
    alone = []
    for i, v in enumerate(values):
        tcfg = dataclasses.replace(base, **{field: type(getattr(base, field))(v)})
        alone.append(jax.tree.leaves(_swept_params(tcfg, dqn.hparams(tcfg), 1)))
        assert all(close(x[i], y[0]) for x, y in zip(jax.tree.leaves(swept), alone[i])), i
    # the two runs differ beyond that tolerance: a point that took the other's value would fail
    assert not all(close(x, y) for x, y in zip(*alone))


def test_padded_action_never_taken_and_counters():
    tcfg, env = tiny_cfg(total_env_steps=1000, train_every=2, updates_per_train=3), tiny_env(2)
    state, out = train(tcfg, env, record="full")
    actions = np.asarray(out.streams.action_NxT)
    assert actions.shape == (2, 500) and actions.max() == 1 and actions.min() == 0
    # updates: vector steps t = 32..500 (64 env steps with 2 envs), even t only, 3 each
    expected = 3 * len([t for t in range(1, 501) if 2 * t >= 64 and t % 2 == 0])
    assert int(state.updates) == expected == int(out.stats.loss_count)
    assert int(state.t) == 500
    # finished-episode returns: every 2 steps an episode of return 1 ends, per stream
    ret = np.asarray(out.episode_return_NxT)
    np.testing.assert_array_equal(np.isnan(ret[:, 0::2]), True)
    np.testing.assert_array_equal(ret[:, 1::2], 1.0)
    assert out.stats.episodes_G.tolist() == [500]


def test_episode_returns_carry_across_chunk_edges():
    # Reward 1 every step, episodes cut after 3 steps, chunks of 2 steps: every other episode
    # straddles a chunk edge, and every finished return is still 3 (the learner carries the
    # running return from one chunk into the next).
    tcfg, env = (tiny_cfg(num_envs=1, learning_starts=8),
                 tiny_env(1, reward_every_step=True, max_steps=3))
    tasks = jnp.zeros((1, 0), jnp.int32)
    state = dqn.init(tcfg, env, dqn.learner_keys(jax.random.PRNGKey(0), 1, 1), tasks)
    fn, returns, sums = dqn.make_chunk(tcfg, env, 2, "returns", 0), [], []
    for _ in range(6):
        state, out = fn(state, dqn.hparams(tcfg), tasks)
        returns.append(np.asarray(out.episode_return_NxT)[0])
        sums.append(float(out.stats.return_sum_G[0]))
    ret = np.concatenate(returns)  # steps 0..11: episodes end at steps 2, 5, 8, 11
    np.testing.assert_array_equal(np.isnan(ret), [True, True, False] * 4)
    np.testing.assert_array_equal(ret[2::3], 3.0)
    assert sums == [0.0, 3.0, 3.0, 0.0, 3.0, 3.0]


def test_q_values_recorded_every_period():
    # Every recorded row is the online network's Q at that step, on the observation acted on:
    # rows 2-3 fall after learning starts (step 32 of 2 envs), where the online network has
    # moved away from the target network (hard copies every 1000 updates: not yet).
    tcfg, env = tiny_cfg(total_env_steps=400, target_period=1000), tiny_env(2)
    tasks = jnp.zeros((1, 0), jnp.int32)
    state = dqn.init(tcfg, env, dqn.learner_keys(jax.random.PRNGKey(0), 1, 1), tasks)
    copy = jax.tree.map(jnp.copy, state)  # a chunk donates the state it is given
    _, whole = dqn.make_chunk(tcfg, env, 100, "full", 25)(copy, dqn.hparams(tcfg), tasks)
    q = np.asarray(whole.q_NxTqxA)
    assert q.shape == (2, 4, 3) and q.dtype == np.float16
    net, quarter = dqn.network(tcfg, env.spec), dqn.make_chunk(tcfg, env, 25, "full", 25)
    for row in range(4):  # the same 100 steps as 4 chunks of 25: Q at each chunk's first step
        params = jax.tree.map(lambda x: x[0], state.learners.params)
        state, out = quarter(state, dqn.hparams(tcfg), tasks)
        obs_NxO = np.asarray(out.streams.obs_NxTxO)[:, 0]
        want = np.asarray(jax.vmap(lambda o: networks.apply(net, params, o))(jnp.asarray(obs_NxO)))
        np.testing.assert_allclose(q[:, row], want, rtol=1e-2, atol=1e-3)
    target = jax.tree.map(lambda x: x[0], state.learners.target_params)
    assert not np.allclose(np.asarray(networks.apply(net, target, jnp.asarray(obs_NxO[0]))),
                           q[0, 3], rtol=1e-2, atol=1e-3)  # the target's Q would not pass


# ---------------------------------------------------------------------------------------------
# Replay and networks
# ---------------------------------------------------------------------------------------------

def test_replay_ring_wraps_and_samples_only_filled_rows():
    buf = replay.init(5, (2,), "uint8")
    for i in range(3):  # 3 writes of 2 transitions: numbers 0..5, row = number % 5
        obs = np.full((2, 2), [2 * i, 2 * i + 1], np.uint8).T
        buf = replay.add(buf, jnp.int32(2 * i), obs, jnp.array([2 * i, 2 * i + 1]), jnp.zeros(2),
                         obs, jnp.zeros(2, bool))
    assert np.asarray(buf.action_C).tolist() == [5, 1, 2, 3, 4]
    assert np.asarray(buf.obs_CxO).dtype == np.uint8
    small = replay.init(10, (1,), "float32")
    small = replay.add(small, jnp.int32(0), jnp.ones((3, 1)), jnp.array([7, 8, 9]), jnp.zeros(3),
                       jnp.ones((3, 1)), jnp.zeros(3, bool))
    batch = replay.sample(small, jnp.int32(3), jax.random.PRNGKey(0), 200)
    assert set(np.asarray(batch.action_B).tolist()) == {7, 8, 9}


def test_replay_samples_every_row_of_a_full_wrapped_buffer():
    # 9 transitions into 6 rows: numbers 3..8 are left, and uniform sampling reaches each one
    # (the last row too; before the buffer filled, test_replay_ring_wraps... holds it to the
    # filled rows).
    buf = replay.init(6, (1,), "float32")
    for i in range(3):
        n = jnp.arange(3 * i, 3 * i + 3)
        obs = n[:, None].astype(jnp.float32)
        buf = replay.add(buf, jnp.int32(3 * i), obs, n, jnp.zeros(3), obs + 1, jnp.zeros(3, bool))
    batch = replay.sample(buf, jnp.int32(9), jax.random.PRNGKey(0), 300)
    assert sorted(set(np.asarray(batch.action_B).tolist())) == list(range(3, 9))
    np.testing.assert_array_equal(batch.obs_BxO[:, 0], batch.action_B)  # rows kept whole
    np.testing.assert_array_equal(batch.next_obs_BxO[:, 0], batch.action_B + 1)


def test_replay_keeps_every_field_of_a_transition_in_its_row():
    # Transition n: obs n, action n, reward n / 3, next obs n + 1, terminated iff n is even;
    # 7 numbers into 4 rows (the write of 3..6 wraps). Every sampled field belongs to its row.
    buf = replay.init(4, (1,), "uint8")
    for start, n in ((0, 3), (3, 4)):
        num = jnp.arange(start, start + n)
        obs = num[:, None].astype(jnp.uint8)
        reward = (np.arange(start, start + n) / 3).astype(np.float32)
        buf = replay.add(buf, jnp.int32(start), obs, num, reward, obs + 1, num % 2 == 0)
    batch = replay.sample(buf, jnp.int32(7), jax.random.PRNGKey(1), 100)
    num = np.asarray(batch.action_B)
    assert batch.action_B.dtype == jnp.int32 and sorted(set(num.tolist())) == [3, 4, 5, 6]
    np.testing.assert_array_equal(batch.obs_BxO[:, 0], num)
    np.testing.assert_array_equal(batch.next_obs_BxO[:, 0], num + 1)
    np.testing.assert_array_equal(batch.reward_B, (num / 3).astype(np.float32))  # float32 kept
    np.testing.assert_array_equal(batch.terminated_B, num % 2 == 0)


def test_each_td_update_samples_a_new_batch(monkeypatch):
    # A learner's key moves on with every update: three updates from a full buffer of 80
    # distinct transitions draw three different batches (a key left as it was would draw
    # the same rows every time).
    tcfg = tiny_cfg(buffer_size=80, batch_size=8)
    env, hp = tiny_env(3), jax.tree.map(lambda x: x[0], dqn.hparams(tcfg))
    net = dqn.network(tcfg, env.spec)
    learner = dqn.init_learner(tcfg, env, jax.random.PRNGKey(0), jnp.zeros((0,), jnp.int32))
    obs = jax.nn.one_hot(jnp.arange(80) % 3, 3)
    learner = learner.replace(replay=replay.add(learner.replay, jnp.int32(0), obs, jnp.arange(80),
                                                jnp.zeros(80), obs, jnp.zeros(80, bool)))
    drawn = []
    real = replay.sample
    monkeypatch.setattr(replay, "sample", lambda *a: drawn.append(real(*a)) or drawn[-1])
    for _ in range(3):
        learner, _ = dqn.td_update(tcfg, net, learner, hp, jnp.int32(80))
    rows = {tuple(np.asarray(b.action_B).tolist()) for b in drawn}
    assert len(drawn) == 3 and len(rows) == 3, rows


def test_dueling_ignores_padded_actions_and_minatar_shape():
    net = networks.QNet("mlp", (3,), 4, (8,), dueling=True, action_mask=(True, True, False, False))
    params = networks.init(net, jax.random.PRNGKey(0))
    q = networks.apply(net, params, jnp.ones((5, 3)))
    assert q.shape == (5, 4)
    # Changing the padded advantage outputs leaves the real actions' values unchanged.
    bumped = dict(params, q={"w": params["q"]["w"], "b": params["q"]["b"].at[2:].add(50.0)})
    np.testing.assert_allclose(networks.apply(net, bumped, jnp.ones((5, 3)))[:, :2], q[:, :2],
                               rtol=1e-6)
    conv = networks.QNet("minatar", (10, 10, 10), 6, (128,))
    cp = networks.init(conv, jax.random.PRNGKey(1))
    assert cp["conv"]["w"].shape == (3, 3, 10, 16) and cp["dense_0"]["w"].shape == (1024, 128)
    assert networks.apply(conv, cp, jnp.zeros((2, 10, 10, 10), jnp.uint8)).shape == (2, 6)
    # the patch-matmul convolution equals XLA's convolution
    x = jax.random.uniform(jax.random.PRNGKey(2), (3, 10, 10, 10))
    ref = jax.lax.conv_general_dilated(x, cp["conv"]["w"], (1, 1), "VALID",
                                       dimension_numbers=("NHWC", "HWIO", "NHWC"))
    np.testing.assert_allclose(networks._conv3x3_valid(x, cp["conv"]["w"]), ref, atol=1e-5)


def test_polyak_target_moves_tau_of_the_way_after_every_update():
    # target <- tau * online + (1 - tau) * target after each TD update, and not otherwise
    # (learning the chain alone would pass with any target: its episodes end after one step,
    # so the target never enters the TD target).
    tau = 0.25
    steps = _target_steps(tiny_cfg(target="polyak", tau=tau, total_env_steps=200), 45)
    prev_updates, _, prev_target = next(steps)
    moved = 0
    for u, params, target in steps:
        if u > prev_updates:
            want = jax.tree.map(lambda p, t: tau * p + (1 - tau) * t, params, prev_target)
            jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
                         target, want)
            moved += 1
        else:
            jax.tree.map(np.testing.assert_array_equal, target, prev_target)
        prev_target, prev_updates = target, u
    assert moved == 45 - 31


def test_rmsprop_is_centred_with_eps_outside_the_root_and_adam_is_adam():
    # The MinAtar paper's optimizer (torch's centred RMSProp): two steps by hand, decay d.
    d, eps = 0.95, 0.01
    tcfg = tiny_cfg(optimizer="rmsprop", rms_decay=d, opt_eps=eps, max_grad_norm=0.0)
    opt = dqn.optimizer(tcfg)
    grads = [jnp.array([0.5, -2.0]), jnp.array([1.5, 1.0])]
    state, mean, sq = opt.init(grads[0]), 0.0, 0.0
    for g in grads:
        direction, state = opt.update(g, state)
        mean, sq = d * mean + (1 - d) * g, d * sq + (1 - d) * g * g
        np.testing.assert_allclose(direction, g / (np.sqrt(sq - mean * mean) + eps), rtol=1e-5)
    adam = dqn.optimizer(tiny_cfg(optimizer="adam", opt_eps=1e-8, max_grad_norm=0.0))
    direction, _ = adam.update(grads[0], adam.init(grads[0]))
    np.testing.assert_allclose(direction, np.sign(grads[0]), rtol=1e-5)  # step 1: g / |g|


def test_gradients_are_clipped_to_their_global_norm_first():
    # Adam's first direction is g / (|g| + eps) elementwise, so with eps 1 it shows the scale
    # of the gradient it got: [3, 4] over two leaves (global norm 5) clipped to norm 1 is
    # [0.6, 0.8]; a norm of 10, or 0 (no clip), leaves it as it is.
    grads = {"a": jnp.array([3.0]), "b": jnp.array([4.0])}
    for max_norm, scale in ((1.0, 0.2), (10.0, 1.0), (0.0, 1.0)):
        opt = dqn.optimizer(tiny_cfg(optimizer="adam", opt_eps=1.0, max_grad_norm=max_norm))
        direction, _ = opt.update(grads, opt.init(grads))
        g = scale * np.array([3.0, 4.0])
        np.testing.assert_allclose([direction["a"][0], direction["b"][0]], g / (g + 1.0), rtol=1e-5,
                                   err_msg=f"max_grad_norm={max_norm}")


def test_rmsprop_and_polyak_learn_the_chain():
    tcfg = tiny_cfg(optimizer="rmsprop", opt_eps=0.01, lr=1e-3, target="polyak", tau=0.05,
                    loss="mse", double=False)
    state, _ = train(tcfg, tiny_env(1))
    np.testing.assert_allclose(q_values(tcfg, tiny_env(1), state, [1.0])[:2], [1.0, 1.0], atol=0.1)


# ---------------------------------------------------------------------------------------------
# Scheduled chunks: update rounds without a lax.cond, the same values
# ---------------------------------------------------------------------------------------------

def test_scheduled_only_past_learning_starts_and_on_the_train_every_grid():
    tcfg = tiny_cfg(num_envs=2, learning_starts=64, train_every=2, chunk_steps=40, q_log_period=20)
    assert not dqn.schedulable(tcfg, 0, 40, "full", 20)  # step 1 adds transitions 2..3 < 64
    assert not dqn.schedulable(tcfg, 30, 40, "full", 20)  # step 31: 62 stored
    assert dqn.schedulable(tcfg, 32, 40, "full", 20)  # step 33: 66 stored, every round due
    assert not dqn.schedulable(tcfg, 33, 40, "full", 20)  # off the grid of rounds
    assert not dqn.schedulable(tcfg, 40, 40, "full", 5)  # blocks of 5 steps: a round mid-block
    assert dqn.schedulable(tcfg, 40, 40, "stats", 5)  # (only "full" records in blocks)
    with pytest.raises(ValueError, match="multiple of train_every 2"):
        dqn.make_chunk(tcfg, tiny_env(2), 40, "full", 5, scheduled=True)
    # one env, one step and one update per round: never (no loop would keep the replay write
    # and the sampling gather apart; see the next test)
    one = dict(learning_starts=64, num_envs=1)
    assert not dqn.schedulable(tiny_cfg(**one), 64, 40, "stats", 0)
    assert dqn.schedulable(tiny_cfg(**one, updates_per_train=2), 64, 40, "stats", 0)
    assert dqn.schedulable(tiny_cfg(**one, train_every=2), 64, 40, "stats", 0)
    assert dqn.schedulable(tiny_cfg(learning_starts=64), 40, 40, "stats", 0)  # 2 envs


@pytest.mark.parametrize("num_envs,train_every,updates_per_train,target",
                         [(1, 2, 1, "hard"), (1, 1, 2, "polyak"), (1, 4, 3, "hard"),
                          (2, 1, 1, "hard")])
def test_a_scheduled_chunk_does_not_copy_the_replay_buffers(num_envs, train_every,
                                                            updates_per_train, target):
    # The compiled program writes the replay buffers in place: no copy of a [G, C, ...] array.
    # With one env, one step and one update per round XLA (CPU) fused the write into the
    # sampling gather and copied every buffer twice per step (on Dark Room as here; 15x slower
    # on MinAtar), which schedulable forbids.
    tcfg = tiny_cfg(num_envs=num_envs, train_every=train_every, updates_per_train=updates_per_train,
                    target=target, buffer_size=424)
    env = envs.make("darkroom", 0.0)
    tasks = jnp.asarray(envs.sample_tasks("darkroom", jax.random.PRNGKey(0), 2, "train"))
    state = dqn.init(tcfg, env, dqn.learner_keys(jax.random.PRNGKey(0), 1, 2), tasks)
    assert dqn.schedulable(tcfg, 72, 24, "full", 12)
    fn = dqn.make_chunk(tcfg, env, 24, "full", 12, scheduled=True)
    hlo = fn.lower(state, dqn.hparams(tcfg, 2), tasks).compile().as_text().splitlines()
    buffer_shaped = re.compile(r"= \w+\[2,424[,\]]")
    assert any(buffer_shaped.search(line) for line in hlo)  # the pattern finds the buffers
    assert [line for line in hlo if buffer_shaped.search(line) and " copy(" in line] == []


@pytest.mark.parametrize("train_every,record,q_period,target",
                         [(1, "full", 10, "polyak"), (2, "full", 10, "polyak"),
                          (2, "returns", 0, "polyak"), (2, "full", 10, "hard")])
def test_a_scheduled_chunk_equals_the_conditional_one(train_every, record, q_period, target):
    # Past learning_starts, the chunk without a condition around its update rounds computes
    # bitwise what the conditional one does: every state leaf, stat and recorded stream (with
    # hard targets, copies every 3 updates fall inside the chunk).
    tcfg = tiny_cfg(train_every=train_every, target=target, tau=0.1, target_period=3,
                    updates_per_train=2)
    env = tiny_env(3)
    tasks = jnp.zeros((2, 0), jnp.int32)
    state = dqn.init(tcfg, env, dqn.learner_keys(jax.random.PRNGKey(3), 1, 2), tasks)
    state, _ = dqn.make_chunk(tcfg, env, 40, "stats", 0)(state, dqn.hparams(tcfg, 2), tasks)
    assert dqn.schedulable(tcfg, int(state.t), 20, record, q_period)
    outs = []
    for scheduled in (False, True):
        copy = jax.tree.map(jnp.copy, state)  # a chunk donates the state it is given
        fn = dqn.make_chunk(tcfg, env, 20, record, q_period, scheduled=scheduled)
        outs.append(fn(copy, dqn.hparams(tcfg, 2), tasks))
    (s0, o0), (s1, o1) = outs
    assert int(s1.updates) - int(state.updates) == 20 // train_every * 2
    for a, b in zip(jax.tree.leaves((s0, o0)), jax.tree.leaves((s1, o1))):
        np.testing.assert_array_equal(a, b)
    assert jax.tree.structure((s0, o0)) == jax.tree.structure((s1, o1))


def test_dueling_q_is_value_plus_advantage_minus_its_mean_over_real_actions():
    net = networks.QNet("mlp", (2,), 4, (3,), dueling=True, action_mask=(True, True, True, False))
    zero = jax.tree.map(jnp.zeros_like, networks.init(net, jax.random.PRNGKey(0)))
    params = dict(zero, q={"w": zero["q"]["w"], "b": jnp.array([1.0, 2.0, 6.0, 100.0])},
                  value={"w": zero["value"]["w"], "b": jnp.array([5.0])})
    # the real advantages 1, 2, 6 average 3: Q = 5 + A - 3
    q = networks.apply(net, params, jnp.ones((2,)))
    np.testing.assert_allclose(q[:3], [3.0, 4.0, 8.0])


def test_minatar_network_is_a_relu_3x3_conv_of_16_channels_then_one_relu_dense_layer():
    """Known reference: XLA's stride-1 VALID conv + bias + ReLU, flattened in (h, w, c) order,
    one dense layer + ReLU, then the Q head; uint8 observations are read as their values."""
    net = networks.QNet("minatar", (5, 6, 3), 4, (7,))
    params = networks.init(net, jax.random.PRNGKey(3))
    params = dict(params, conv={"w": params["conv"]["w"], "b": jnp.linspace(-0.5, 0.5, 16)},
                  dense_0={"w": params["dense_0"]["w"], "b": jnp.linspace(-0.2, 0.2, 7)})
    obs = jax.random.randint(jax.random.PRNGKey(4), (2, 5, 6, 3), 0, 2).astype(jnp.uint8)
    conv = jax.lax.conv_general_dilated(obs.astype(jnp.float32), params["conv"]["w"], (1, 1),
                                        "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    assert conv.shape == (2, 3, 4, 16)
    x = jax.nn.relu(conv + params["conv"]["b"]).reshape(2, -1)
    x = jax.nn.relu(x @ params["dense_0"]["w"] + params["dense_0"]["b"])
    want = x @ params["q"]["w"] + params["q"]["b"]
    np.testing.assert_allclose(networks.apply(net, params, obs), want, rtol=1e-5, atol=1e-5)


def test_the_sweepable_names_are_the_per_learner_hyperparameters():
    # teacher.sweep accepts SWEEPABLE; each swept value must land in a field of HParams.
    assert dqn.HParams._fields == config.TeacherConfig.SWEEPABLE
    with pytest.raises(ValueError, match="not per-learner hyperparameters: batch_size"):
        dqn.hparams(config.TeacherConfig(), 2, batch_size=np.array([8, 16]))



@pytest.mark.parametrize("activation, dueling", [("relu", False), ("swish", True),
                                                 ("tanh", False)])
def test_mlp_is_every_hidden_layer_then_the_head_in_numpy(activation, dueling):
    """Known reference: flatten, each hidden width as act(x W + b) in turn (two layers of other
    widths, both used), then the Q head; dueling adds V and subtracts the mean advantage of the
    real actions. Random nonzero biases, so a layer skipped or an activation swapped shows."""
    net = networks.QNet("mlp", (2, 3), 4, (5, 7), dueling=dueling, activation=activation,
                        action_mask=(True, True, True, False))
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda x: jnp.asarray(rng.normal(0, 0.8, x.shape), jnp.float32),
                          networks.init(net, jax.random.PRNGKey(0)))
    assert sorted(params) == ["dense_0", "dense_1", "q"] + ["value"] * dueling
    obs = rng.normal(0, 1.5, (6, 2, 3)).astype(np.float32)
    act = {"relu": lambda u: np.maximum(u, 0.0), "swish": lambda u: u / (1 + np.exp(-u)),
           "tanh": np.tanh}[activation]
    p = jax.tree.map(lambda x: np.asarray(x, np.float64), params)
    x = obs.reshape(6, 6).astype(np.float64)
    for layer in ("dense_0", "dense_1"):
        x = act(x @ p[layer]["w"] + p[layer]["b"])
    want = x @ p["q"]["w"] + p["q"]["b"]
    if dueling:
        want = x @ p["value"]["w"] + p["value"]["b"] + want - want[:, :3].mean(1, keepdims=True)
    got = np.asarray(networks.apply(net, params, jnp.asarray(obs)))
    np.testing.assert_allclose(got[:, :3], want[:, :3], rtol=1e-5, atol=1e-5)
    assert np.ptp(want[:, :3]) > 1.0  # outputs that differ: a wrong layer would show


# ---------------------------------------------------------------------------------------------
# Known answers pinning mutants that the tests above let through
# ---------------------------------------------------------------------------------------------

def test_epsilon_starts_from_eps_start_not_from_one():
    # eps_start 0.8 (not the default 1): linear from 0.8 at learning_starts to 0.2 100 steps on.
    tcfg = tiny_cfg(eps_start=0.8, eps_end=0.2, eps_decay_steps=100, learning_starts=10)
    steps = jnp.array([0, 10, 60, 110, 200])
    np.testing.assert_allclose(np.asarray(dqn.epsilon(tcfg, dqn.hparams(tcfg), steps)),
                               [0.8, 0.8, 0.5, 0.2, 0.2], rtol=1e-6)


def test_lr_scale_known_values_over_a_ten_step_span():
    # 1 up to learning_starts 10, then linear to lr_final_frac 0.2 at total_env_steps 20
    # (span 10, not 11 nor 20), then flat; never above 1 before learning starts. (At 0.5,
    # 1 - frac * (1 - f) and 1 - frac * f agree.)
    tcfg = tiny_cfg(learning_starts=10, total_env_steps=20, lr_final_frac=0.2)
    steps = jnp.array([0, 10, 11, 15, 20, 30])
    np.testing.assert_allclose(np.asarray(dqn.lr_scale(tcfg, steps)),
                               [1.0, 1.0, 0.92, 0.6, 0.2, 0.2], rtol=1e-6)


def test_learner_keys_are_the_task_seed_cells_in_g_order():
    # learner g = (p*K + k)*S + s gets the cell (task k, seed s) of keys.cells: rows are tasks.
    root = jax.random.PRNGKey(4)
    got = np.asarray(dqn.learner_keys(root, n_tasks=3, n_seeds=2, n_points=2))
    cells = np.asarray(keys.cells(root, jnp.arange(3), jnp.arange(2)))
    for p in range(2):
        for k in range(3):
            for s in range(2):
                np.testing.assert_array_equal(got[(p * 3 + k) * 2 + s], cells[k, s])


def test_td_update_samples_from_exactly_count_transitions_and_carries_the_optimizer(
        monkeypatch):
    # The batch is drawn from the first ``count`` rows (not count - 1: the newest transition
    # would never be drawn), and the optimizer state of one update is the next one's input
    # (Adam's step count reads 1, then 2).
    tcfg = tiny_cfg(num_envs=1, buffer_size=16, batch_size=4, optimizer="adam")
    env, hp = tiny_env(2), jax.tree.map(lambda x: x[0], dqn.hparams(tcfg))
    learner = dqn.init_learner(tcfg, env, jax.random.PRNGKey(0), jnp.zeros((0,), jnp.int32))
    net, seen, real = dqn.network(tcfg, env.spec), [], replay.sample
    monkeypatch.setattr(replay, "sample", lambda buf, count, key, n: seen.append(int(count))
                        or real(buf, count, key, n))
    counts = []
    for count in (5, 7):
        learner, _ = dqn.td_update(tcfg, net, learner, hp, jnp.int32(count))
        counts.append(int(optax.tree_utils.tree_get(learner.opt_state, "count")))
    assert seen == [5, 7] and counts == [1, 2]


def test_schedulable_from_the_step_whose_transitions_reach_learning_starts():
    # 2 envs, learning_starts 64: the chunk from t0 = 31 first steps to t = 32, 64 stored, and
    # the unconditional chunk trains there as the cond would; from t0 = 30 (62 stored) it may not.
    tcfg = tiny_cfg(num_envs=2, learning_starts=64)
    assert dqn.schedulable(tcfg, 31, 40, "stats", 0)
    assert not dqn.schedulable(tcfg, 30, 40, "stats", 0)


def test_dense_init_is_lecun_normal_with_zero_bias():
    # w = N(0, 1) draws / sqrt(n_in) (here n_in 4: halved), b = 0.
    key = jax.random.PRNGKey(7)
    layer = networks._dense(key, 4, 3)
    np.testing.assert_allclose(layer["w"], jax.random.normal(key, (4, 3)) / 2.0, rtol=1e-6)
    np.testing.assert_array_equal(layer["b"], np.zeros(3, np.float32))


def test_replay_keeps_the_compact_storage_dtypes_whatever_it_is_given():
    # uint8 observations (both), uint8 actions, float32 rewards, bool terminations: a buffer of
    # C transitions of O bytes takes C * (2 O + 6) bytes, and stays so after int32/float64 input.
    buf = replay.init(4, (2, 3), "uint8")
    buf = replay.add(buf, jnp.int32(0), np.ones((2, 2, 3), np.float32), np.array([1, 2], np.int32),
                     np.array([0.5, 1.0]), np.ones((2, 2, 3), np.int32), np.array([True, False]))
    dtypes = {f: np.asarray(getattr(buf, f)).dtype.name for f in
              ("obs_CxO", "action_C", "reward_C", "next_obs_CxO", "terminated_C")}
    assert dtypes == {"obs_CxO": "uint8", "action_C": "uint8", "reward_C": "float32",
                      "next_obs_CxO": "uint8", "terminated_C": "bool"}
    assert sum(x.nbytes for x in jax.tree.leaves(buf)) == 4 * (2 * 6 + 6)


def test_dueling_without_an_action_mask_averages_the_advantage_over_every_action():
    net = networks.QNet("mlp", (2,), 3, (3,), dueling=True)  # no mask: all 3 actions are real
    zero = jax.tree.map(jnp.zeros_like, networks.init(net, jax.random.PRNGKey(0)))
    params = dict(zero, q={"w": zero["q"]["w"], "b": jnp.array([1.0, 2.0, 6.0])},
                  value={"w": zero["value"]["w"], "b": jnp.array([5.0])})
    # the advantages 1, 2, 6 average 3: Q = 5 + A - 3
    np.testing.assert_allclose(networks.apply(net, params, jnp.ones((2,))), [3.0, 4.0, 8.0])


def test_minatar_network_refuses_no_width_and_observations_that_are_not_hxwxc():
    # No width would silently drop the dense layer; a 4-d observation would not unpack to HxWxC.
    with pytest.raises(ValueError, match="one width"):
        networks.QNet("minatar", (10, 10, 4), 6, ())
    with pytest.raises(ValueError, match="HxWxC"):
        networks.QNet("minatar", (10, 10, 4, 1), 6, (128,))


def test_init_draws_every_layer_lecun_normal_from_its_own_key_in_order():
    # keys = split(key, len(hidden) + 4): the dense layers, then the Q head, then the value head
    # (the conv, for MinAtar, takes the first); each layer is _dense(its key, n_in, n_out).
    net = networks.QNet("mlp", (2, 3), 4, (5, 7), dueling=True)
    key = jax.random.PRNGKey(5)
    params = networks.init(net, key)
    k = jax.random.split(key, 6)
    want = {"dense_0": networks._dense(k[0], 6, 5), "dense_1": networks._dense(k[1], 5, 7),
            "q": networks._dense(k[2], 7, 4), "value": networks._dense(k[3], 7, 1)}
    jax.tree.map(np.testing.assert_array_equal, params, want)
