"""The rollout primitive: known answers on Dark Room, episode accounting, vmap == loop."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from climit import envs, rollout


def walk_to_goal(goal_2, carry, inp, key):
    """Scripted optimal Dark Room policy: x first, then y, then stay (params = the goal)."""
    pos = inp.obs.astype(jnp.int32)
    dx, dy = goal_2[0] - pos[0], goal_2[1] - pos[1]
    action = jnp.select([dx > 0, dx < 0, dy > 0, dy < 0], [3, 2, 0, 1], 4)
    return action, carry + 1  # carry counts decisions


@pytest.mark.parametrize("goal", [(0, 0), (4, 4), (8, 3), (5, 4), (2, 7)])
def test_scripted_policy_gets_optimal_return_every_episode(goal):
    env = envs.make("darkroom")
    task = jnp.array(goal, jnp.int32)
    steps = env.spec.episode_len * 6 + 7  # six whole episodes and an unfinished seventh
    fn = jax.jit(functools.partial(rollout.rollout, env, walk_to_goal, num_steps=steps))
    carry, traj = fn(task, jnp.int32(0), task, jax.random.key(0))
    assert int(carry) == steps
    ep = rollout.episode_returns(traj.reward, traj.done, max_episodes=8)
    assert ep.valid.tolist() == [True] * 6 + [False] * 2
    np.testing.assert_array_equal(np.asarray(ep.returns[:6]),
                                  envs.make("darkroom").gym.optimal_return(goal))
    assert ep.lengths[:6].tolist() == [20] * 6
    assert ep.end_step[:6].tolist() == [20 * (i + 1) for i in range(6)]
    assert np.isnan(np.asarray(ep.returns[6:])).all()
    assert not bool(traj.terminated.any())  # Dark Room only truncates


def test_policy_input_carries_previous_step_across_boundaries():
    env = envs.make("darkroom")
    task = jnp.array([4, 5], jnp.int32)  # one step up from the centre
    _, tr = rollout.rollout(env, walk_to_goal, task, jnp.int32(0), task, jax.random.key(1), 45,
                            record=rollout.full)
    seen = []

    def spy(params, carry, inp, key):  # re-run, recording what the policy saw
        return walk_to_goal(params, 0, inp, key)[0], carry + [inp]

    env_steps = 45
    rs = rollout.init(env, jax.random.key(1), task)
    for _ in range(env_steps):
        seen, rs, t = rollout.step(env, spy, task, seen, rs, task)
    starts = [bool(i.episode_start) for i in seen]
    assert starts == [(t % 20) == 0 for t in range(env_steps)]
    assert int(seen[0].prev_action) == rollout.NO_ACTION == -1 and float(seen[0].prev_reward) == 0.0
    # at the first step of episode 2, prev_* are the last action/reward of episode 1
    assert int(seen[20].prev_action) == int(tr.action[19]) == 4
    assert float(seen[20].prev_reward) == float(tr.reward[19]) == 1.0
    np.testing.assert_array_equal(np.asarray(seen[20].obs), [4, 4])  # reset to the centre
    np.testing.assert_array_equal(np.asarray(tr.final_obs[19]), [4, 5])
    assert bool(tr.truncated[19]) and not bool(tr.truncated[18])


def test_trajectory_done_is_terminated_or_truncated():
    # Key-to-Door ends episodes by termination, Dark Room by truncation: `done` is either.
    traj = rollout.Trajectory(action=jnp.zeros(4, jnp.int32), reward=jnp.zeros(4),
                              terminated=jnp.array([False, True, False, False]),
                              truncated=jnp.array([False, False, False, True]))
    assert traj.done.tolist() == [False, True, False, True]


def test_episode_accounting_known_answer():
    reward = np.array([1, 0, 2, 0, 0, 5, 1, 1, 3, 9], np.float32)
    done = np.array([0, 1, 0, 0, 1, 1, 0, 0, 1, 0], bool)  # last episode unfinished
    ep = rollout.episode_returns(reward, done, max_episodes=6)
    assert ep.valid.tolist() == [True, True, True, True, False, False]
    np.testing.assert_array_equal(np.asarray(ep.returns[:4]), [1, 2, 5, 5])
    assert ep.lengths.tolist() == [2, 3, 1, 3, 0, 0]
    assert ep.end_step.tolist() == [2, 5, 6, 9, 0, 0]
    # fewer slots than episodes: the first M are kept
    ep2 = rollout.episode_returns(reward, done, max_episodes=2)
    np.testing.assert_array_equal(np.asarray(ep2.returns), [1, 2])
    assert ep2.valid.tolist() == [True, True]


def test_curve_bins_and_carries_forward():
    reward = np.array([1, 0, 2, 0, 0, 5, 1, 1, 3, 9], np.float32)
    done = np.array([0, 1, 0, 0, 1, 1, 0, 0, 1, 0], bool)
    ep = rollout.episode_returns(reward, done, max_episodes=6)
    c = np.asarray(rollout.curve(ep, np.array([1, 3, 6, 8, 10])))
    # bins (0,1] none -> NaN; (1,3] ep0=1; (3,6] ep1=2, ep2=5 -> 3.5; (6,8] none -> 3.5; (8,10] 5
    np.testing.assert_array_equal(c[1:], [1.0, 3.5, 3.5, 5.0])
    assert np.isnan(c[0])


def test_a_nan_return_stays_nan_instead_of_repeating_the_previous_bin():
    reward = np.array([1, 0, 0, np.nan, 0, 0], np.float32)
    done = np.array([0, 1, 0, 1, 0, 1], bool)
    ep = rollout.episode_returns(reward, done, max_episodes=3)
    c = np.asarray(rollout.curve(ep, np.array([2, 4, 5, 6])))
    # (0,2] 1; (2,4] NaN (an episode ended there: not an empty bin); (4,5] empty -> NaN; (5,6] 0
    assert c[0] == 1.0 and np.isnan(c[1]) and np.isnan(c[2]) and c[3] == 0.0


def test_fixed_length_curve_equals_returns():
    env = envs.make("darkroom")
    task = jnp.array([1, 1], jnp.int32)
    act = rollout.random_policy(env.spec.action_mask)
    _, traj = rollout.rollout(env, act, None, (), task, jax.random.key(3), 100)
    ep = rollout.episode_returns(traj.reward, traj.done, 5)
    np.testing.assert_array_equal(np.asarray(rollout.curve(ep, 20 * np.arange(1, 6))),
                                  np.asarray(ep.returns))


def key_then_door(task_4, has_key, inp, key):
    """Scripted Key-to-Door policy: walk to the key, then to the door (carry = has the key)."""
    has_key = has_key & ~inp.episode_start
    pos = inp.obs.astype(jnp.int32)
    # the key is collected by a step that ends on it (a no-op on the start cell counts)
    has_key = has_key | (jnp.all(pos == task_4[:2]) & ~inp.episode_start)
    target = jnp.where(has_key, task_4[2:], task_4[:2])
    action, _ = walk_to_goal(target, 0, inp, key)
    return action, has_key


def test_vmap_equals_loop_and_chunks_compose():
    env = envs.make("keydoor")  # random starts and early termination
    tasks = jnp.asarray(envs.sample_tasks("keydoor", jax.random.key(0), 3, "heldout"))
    keys = jax.random.split(jax.random.key(7), 3)
    fn = jax.jit(lambda task, key: rollout.rollout(env, key_then_door, task, jnp.array(False),
                                                   task, key, 300, rollout.full))
    _, batched = jax.vmap(fn)(tasks, keys)
    for i in range(3):
        _, single = fn(tasks[i], keys[i])
        for a, b in zip(jax.tree.leaves(batched), jax.tree.leaves(single)):
            np.testing.assert_array_equal(np.asarray(a[i]), np.asarray(b))
    # known answer: every finished episode pays key + door and lasts |start-key| + |key-door|
    for i in range(3):
        ep = rollout.episode_returns(batched.reward[i],
                                     batched.terminated[i] | batched.truncated[i], 40)
        n = int(ep.valid.sum())
        assert n >= 5 and not bool(batched.truncated[i].any())
        np.testing.assert_array_equal(np.asarray(ep.returns[:n]), 2.0)
        starts = np.concatenate([[0], np.asarray(ep.end_step[:n - 1])])
        start_pos = np.asarray(batched.obs[i])[starts].astype(int)
        k, d = np.asarray(tasks[i, :2]), np.asarray(tasks[i, 2:])
        expect = np.maximum(np.abs(start_pos - k).sum(1), 1) + np.abs(k - d).sum()
        np.testing.assert_array_equal(np.asarray(ep.lengths[:n]), expect)
    # the same rollout in two chunks
    rs = rollout.init(env, keys[0], tasks[0])
    c, rs, first = rollout.run(env, key_then_door, tasks[0], jnp.array(False), rs, tasks[0], 120,
                               rollout.full)
    _, rs, second = rollout.run(env, key_then_door, tasks[0], c, rs, tasks[0], 180, rollout.full)
    assert int(rs.t) == 300
    joined = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), first, second)
    for a, b in zip(jax.tree.leaves(joined), jax.tree.leaves(batched)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b[0]))


def test_first_returns_are_the_first_n_episodes_all_whole():
    # What `climit inspect --eval` reports: Dark Room episodes end at their time limit, so the
    # scripted walk earns the optimum (18 for goal (5, 6)) in each of the first 3; Key-to-Door's
    # end early (the door), and each of its first 4 still pays key + door. An unfinished last
    # episode would be NaN.
    room, task = envs.make("darkroom"), jnp.array([5, 6], jnp.int32)
    got = rollout.first_returns(room, walk_to_goal, task, jnp.int32(0), task, jax.random.key(0), 3)
    np.testing.assert_array_equal(np.asarray(got), [18.0] * 3)
    keydoor, task = envs.make("keydoor"), jnp.array([1, 7, 6, 2], jnp.int32)
    got = rollout.first_returns(keydoor, key_then_door, task, jnp.array(False), task,
                                jax.random.key(1), 4)
    np.testing.assert_array_equal(np.asarray(got), [2.0] * 4)


def test_keys_differ_and_repeat():
    env = envs.make("darkroom")
    act = rollout.random_policy(env.spec.action_mask)
    task = jnp.array([0, 0], jnp.int32)
    a = rollout.rollout(env, act, None, (), task, jax.random.key(0), 50)[1].action
    b = rollout.rollout(env, act, None, (), task, jax.random.key(0), 50)[1].action
    c = rollout.rollout(env, act, None, (), task, jax.random.key(1), 50)[1].action
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(c))


def test_action_rules_respect_mask():
    mask = jnp.array([True, True, False])
    q = jnp.array([0.0, 1.0, 5.0])
    assert int(rollout.masked_argmax(q, mask)) == 1
    keys = jax.random.split(jax.random.key(0), 200)
    samples = jax.vmap(lambda k: rollout.masked_sample(k, q, mask))(keys)
    assert set(np.asarray(samples).tolist()) == {0, 1}
    greedy = jax.vmap(lambda k: rollout.epsilon_greedy(k, q, mask, 0.0))(keys)
    assert set(np.asarray(greedy).tolist()) == {1}
    explore = jax.vmap(lambda k: rollout.epsilon_greedy(k, q, mask, 1.0))(keys)
    assert set(np.asarray(explore).tolist()) == {0, 1}


def test_masked_argmax_breaks_ties_at_the_lowest_real_index():
    # The docstring's promise, which the DQN's greedy evaluation relies on for equal Q-values:
    # (2, 5, 5, 5) with action 1 masked -> 2 (not 3); all equal -> 0; (1, 3, 3) -> 1.
    mask = jnp.array([True, False, True, True])
    assert int(rollout.masked_argmax(jnp.array([2.0, 5.0, 5.0, 5.0]), mask)) == 2
    assert int(rollout.masked_argmax(jnp.zeros(4), jnp.ones(4, bool))) == 0
    assert int(rollout.masked_argmax(jnp.array([1.0, 3.0, 3.0]), jnp.ones(3, bool))) == 1


def test_random_policy_is_uniform_action_over_its_mask_with_the_step_key():
    # The random control acts as uniform_action(key, mask) with the key the step hands it (so
    # only real actions 1 and 3 occur) and passes its carry through.
    mask = np.array([False, True, False, True, False])
    act = rollout.random_policy(mask)
    inp = rollout.PolicyInput(jnp.zeros(2, jnp.uint8), jnp.int32(-1), jnp.float32(0.0),
                              jnp.array(True))
    keys = jax.random.split(jax.random.key(4), 64)
    action, carry = jax.vmap(lambda k: act(None, jnp.int32(7), inp, k))(keys)
    want = jax.vmap(lambda k: rollout.uniform_action(k, jnp.asarray(mask)))(keys)
    np.testing.assert_array_equal(np.asarray(action), np.asarray(want))
    assert set(np.asarray(action).tolist()) == {1, 3}
    np.testing.assert_array_equal(np.asarray(carry), 7)


def test_q_policy_is_epsilon_greedy_over_its_mask_with_the_eps_of_its_params():
    # q = w * obs with w = 1: Q (0, 9, 1, 2); action 1 (the unmasked best) is not real, so the
    # greedy action is 3. With params (w, eps) the policy draws exactly what epsilon_greedy
    # draws with the same key, for eps 0 (always 3), 0.5 and 1 (never 1).
    mask = jnp.array([True, False, True, True])
    act = rollout.q_policy(lambda w, obs_O: w * obs_O.astype(jnp.float32), mask)
    obs = jnp.array([0, 9, 1, 2], jnp.uint8)
    inp = rollout.PolicyInput(obs, jnp.int32(-1), jnp.float32(0.0), jnp.array(False))
    keys = jax.random.split(jax.random.key(5), 64)
    got = {}
    for eps in (0.0, 0.5, 1.0):
        got[eps] = np.asarray(jax.vmap(
            lambda k: act((jnp.float32(1.0), jnp.float32(eps)), (), inp, k)[0])(keys))
        want = jax.vmap(lambda k: rollout.epsilon_greedy(k, obs.astype(jnp.float32), mask,
                                                         jnp.float32(eps)))(keys)
        np.testing.assert_array_equal(got[eps], np.asarray(want))
    assert set(got[0.0].tolist()) == {3}
    assert set(got[1.0].tolist()) == {0, 2, 3}
    assert 0 < int((got[0.5] != 3).sum()) < 64


def test_uniform_action_and_epsilon_greedy_draw_at_their_known_frequencies():
    # The random control picks each real action 1/3 of the time (action 1 masked). Epsilon
    # 0.25 over Q favouring action 3 among the real ones: 3 with 0.75 + 0.25 / 3 = 5/6, 0 and 2
    # with 1/12 each. (Checking only which actions occur passed a "uniform" sampler with
    # logits 0, 0.5, 1, 1.5: frequencies 0.12, 0.33, 0.54.) 4 binomial s.d. of 6000 draws:
    # 0.024 at 1/3, 0.019 at 5/6.
    mask = jnp.array([True, False, True, True])
    keys = jax.random.split(jax.random.key(2), 6000)
    uniform = np.asarray(jax.vmap(lambda k: rollout.uniform_action(k, mask))(keys))
    np.testing.assert_allclose(np.bincount(uniform, minlength=4) / 6000, [1 / 3, 0, 1 / 3, 1 / 3],
                               atol=0.024)
    q = jnp.array([0.0, 9.0, 1.0, 2.0])  # the masked action would win unmasked
    eps = np.asarray(jax.vmap(lambda k: rollout.epsilon_greedy(k, q, mask, 0.25))(keys))
    np.testing.assert_allclose(np.bincount(eps, minlength=4) / 6000, [1 / 12, 0, 1 / 12, 5 / 6],
                               atol=0.019)


def test_masked_sample_follows_the_softmax_of_the_real_actions():
    # logits (0, log 3, 5) with the third action masked: P(1) = 3/4, P(0) = 1/4, P(2) = 0 (a
    # sampler that ignored the logits or the mask would give 1/2 or let action 2 through).
    logits = jnp.array([0.0, np.log(3.0), 5.0])
    mask = jnp.array([True, True, False])
    keys = jax.random.split(jax.random.key(1), 4000)
    samples = np.asarray(jax.vmap(lambda k: rollout.masked_sample(k, logits, mask))(keys))
    assert set(samples.tolist()) == {0, 1}
    assert abs((samples == 1).mean() - 0.75) < 0.03  # 4 binomial s.d. = 0.027


def test_q_policy_greedy_on_darkroom():
    """A tabular 'Q' that encodes walk_to_goal's choice gets the optimum through q_policy."""
    env = envs.make("darkroom")
    goal = jnp.array([7, 2], jnp.int32)

    def q_fn(goal_2, obs_O):
        a, _ = walk_to_goal(goal_2, 0, rollout.PolicyInput(obs_O, 0, 0.0, False), None)
        return jax.nn.one_hot(a, env.spec.num_actions)

    act = rollout.q_policy(q_fn, env.spec.action_mask)
    _, traj = rollout.rollout(env, act, (goal, 0.0), (), goal, jax.random.key(0), 40)
    ep = rollout.episode_returns(traj.reward, traj.done, 2)
    np.testing.assert_array_equal(np.asarray(ep.returns),
                                  envs.make("darkroom").gym.optimal_return((7, 2)))


def test_every_draw_of_a_rollout_gets_a_key_of_its_own(monkeypatch):
    """The reset, and at every step the policy and the env, each get a key that no other draw
    gets and that no other draw's key was split from (a consumer that splits its key would
    otherwise reuse another's random bits): a policy never sees the env's randomness, and no
    step repeats an earlier one's."""
    env = envs.make("darkroom")
    drawn = []

    def recording(who, fn):  # fn(env, key, ...), noting the key it is called with
        return lambda e, k, *a: (drawn.append((who, k)), fn(e, k, *a))[1]

    monkeypatch.setattr(envs, "reset", recording("reset", envs.reset))
    monkeypatch.setattr(envs, "step", recording("env", envs.step))

    def spy(params, carry, inp, key):
        drawn.append(("policy", key))
        return jnp.int32(4), carry

    task = jnp.array([3, 3], jnp.int32)
    rs = rollout.init(env, jax.random.key(0), task)
    for _ in range(5):
        _, rs, _ = rollout.step(env, spy, None, (), rs, task)
    assert [who for who, _ in drawn] == ["reset"] + ["policy", "env"] * 5
    data = lambda k: tuple(np.asarray(jax.random.key_data(k)).ravel().tolist())  # noqa: E731
    keys = {data(k) for _, k in drawn}
    children = {data(c) for _, k in drawn for c in jax.random.split(k)}
    assert len(keys) == len(drawn) and keys.isdisjoint(children)
