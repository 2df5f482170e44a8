"""Our grid worlds against hand-worked trajectories; splits; interface padding; jit/vmap == loop."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from climit import envs

UP, DOWN, LEFT, RIGHT, NOOP = 0, 1, 2, 3, 4


def run_actions(name, task, actions, seed=0):
    """Step one environment through ``actions`` in Python; returns the list of Steps."""
    env = envs.make(name)
    task = jnp.asarray(task, jnp.int32)
    key = jax.random.key(seed)
    obs, state = envs.reset(env, key, task)
    out = []
    for i, a in enumerate(actions):
        s = envs.step(env, jax.random.fold_in(key, i), state, jnp.int32(a), task)
        out.append(s)
        state = s.state
    return obs, out


def test_darkroom_hand_worked_trajectory():
    # Goal two cells up and one right of the centre (4, 4): optimal = 20 - 3 + 1 = 18.
    goal = (5, 6)
    actions = [UP, UP, RIGHT] + [NOOP] * 17
    obs0, steps = run_actions("darkroom", goal, actions)
    assert tuple(np.asarray(obs0)) == (4, 4)
    positions = [tuple(np.asarray(s.final_obs)) for s in steps]
    assert positions[:3] == [(4, 5), (4, 6), (5, 6)]
    rewards = np.array([float(s.reward) for s in steps])
    np.testing.assert_array_equal(rewards, [0, 0] + [1] * 18)
    assert rewards.sum() == envs.make("darkroom").gym.optimal_return(goal) == 18
    # Truncation at step 20, never termination; then the env resets to the centre.
    assert [bool(s.truncated) for s in steps] == [False] * 19 + [True]
    assert not any(bool(s.terminated) for s in steps)
    assert tuple(np.asarray(steps[-1].obs)) == (4, 4)


def test_darkroom_reward_only_on_goal_and_walls():
    goal = (0, 0)
    # Walk left into the wall: x stays at 0 after 4 moves; reward never off-goal.
    _, steps = run_actions("darkroom", goal, [LEFT] * 6 + [DOWN] * 6)
    pos = [tuple(np.asarray(s.final_obs)) for s in steps]
    assert pos[3] == (0, 4) and pos[5] == (0, 4)  # wall holds
    for p, s in zip(pos, steps):
        assert float(s.reward) == (1.0 if p == goal else 0.0)


def test_darkroom_hard_rewards_once():
    goal = (8, 9)  # one step up from the centre (8, 8) of the 17x17 room
    _, steps = run_actions("darkroom_hard", goal, [UP, NOOP, DOWN, UP, NOOP])
    np.testing.assert_array_equal([float(s.reward) for s in steps], [1, 0, 0, 0, 0])
    assert envs.spec("darkroom_hard").episode_len == 50


def test_keydoor_door_pays_only_after_key_and_terminates():
    key_cell, door_cell = (1, 1), (1, 2)
    env = envs.make("keydoor")
    task = jnp.array(key_cell + door_cell, jnp.int32)
    # Find a reset key whose random start is (1, 3): then DOWN reaches the door before the key.
    for seed in range(2000):
        obs, state = envs.reset(env, jax.random.key(seed), task)
        if tuple(np.asarray(obs)) == (1, 3):
            break
    else:
        pytest.fail("no reset landed on (1, 3)")
    rewards, terms = [], []
    for i, a in enumerate([DOWN, DOWN, UP]):  # door (no key: 0), key (+1), door (+1, ends)
        s = envs.step(env, jax.random.key(100 + i), state, jnp.int32(a), task)
        rewards.append(float(s.reward))
        terms.append(bool(s.terminated))
        state = s.state
    assert rewards == [0.0, 1.0, 1.0]
    assert terms == [False, False, True]


def _keydoor_flags(task, actions, start=None):
    """(terminated, truncated) of each step of Key-to-Door on ``task`` from ``start``."""
    env = envs.make("keydoor")
    task = jnp.asarray(task, jnp.int32)
    obs, state = envs.reset(env, jax.random.key(3), task)
    if start is not None:
        state = state.replace(pos=jnp.asarray(start, state.pos.dtype))
    flags = []
    for i, a in enumerate(actions):
        s = envs.step(env, jax.random.key(i), state, jnp.int32(a), task)
        flags.append((bool(s.terminated), bool(s.truncated)))
        state = s.state
    return flags


def test_keydoor_key_pays_once_however_often_it_is_revisited():
    # Key (1, 1), door (3, 1), start (1, 2): down onto the key (+1), up, down onto it again
    # and a no-op on it (0 each: the key is held), then right twice to the door (+1, ends).
    env, task = envs.make("keydoor"), jnp.array([1, 1, 3, 1], jnp.int32)
    _, state = envs.reset(env, jax.random.key(3), task)
    state = state.replace(pos=jnp.array([1, 2], state.pos.dtype))
    rewards, ends = [], []
    for i, a in enumerate([DOWN, UP, DOWN, NOOP, RIGHT, RIGHT]):
        s = envs.step(env, jax.random.key(i), state, jnp.int32(a), task)
        rewards.append(float(s.reward))
        ends.append(bool(s.terminated))
        state = s.state
    assert rewards == [1.0, 0.0, 0.0, 0.0, 0.0, 1.0]
    assert ends == [False] * 5 + [True]


def test_keydoor_truncates_at_50_steps():
    # The time limit is a truncation (the DQN bootstraps through it), never a termination.
    flags = _keydoor_flags([0, 0, 0, 1], [NOOP] * 50)
    assert flags == [(False, False)] * 49 + [(False, True)]


def test_final_obs_at_the_time_limit_is_the_last_cell_before_the_reset():
    # From (0, 0), 50 steps right end on (8, 0) at the time limit: final_obs is that cell, what
    # the DQN bootstraps from, while obs is already the next episode's random start.
    env, task = envs.make("keydoor"), jnp.array([4, 4, 5, 5], jnp.int32)
    _, state = envs.reset(env, jax.random.key(3), task)
    state = state.replace(pos=jnp.array([0, 0], state.pos.dtype))
    for i in range(50):
        s = envs.step(env, jax.random.key(i), state, jnp.int32(RIGHT), task)
        if i < 49:
            np.testing.assert_array_equal(s.final_obs, s.obs)  # mid-episode: the same
        state = s.state
    assert bool(s.truncated)
    np.testing.assert_array_equal(s.final_obs, [8, 0])
    np.testing.assert_array_equal(s.obs, s.state.pos)  # the new episode's start


def test_keydoor_door_on_the_last_step_is_a_termination_only():
    # Key at (0, 0), door at (0, 1), starting on the key: 49 no-ops, then the 50th step opens
    # the door at the time limit. gymnax raises both flags; climit's step keeps terminated only.
    flags = _keydoor_flags([0, 0, 0, 1], [NOOP] * 49 + [UP], start=[0, 0])
    assert flags == [(False, False)] * 49 + [(True, False)]


def test_random_starts_are_uniform_over_every_cell():
    # The start is uniform over all 81 cells, the key's and the door's included: 8100 resets
    # reach every one, each about 100 times (binomial s.d. 10; 60..140 is 4 s.d.). A start
    # drawn from 0..7 (never on the last row or column: 64 cells) passed "more than 60 of 81".
    env = envs.make("keydoor")
    task = jnp.array([0, 0, 8, 8], jnp.int32)
    starts = jax.vmap(lambda k: envs.reset(env, k, task)[0])(
        jax.random.split(jax.random.key(0), 8100))
    counts = np.zeros((9, 9), int)
    np.add.at(counts, tuple(np.asarray(starts, int).T), 1)
    assert counts.sum() == 8100 and 60 <= counts.min() and counts.max() <= 140, counts


def test_jit_vmap_over_tasks_equals_python_loop():
    env = envs.make("darkroom")
    tasks = jnp.asarray(envs.all_tasks("darkroom", "train")[:6])
    actions = jax.random.randint(jax.random.key(1), (6, 25), 0, 5)

    def episode(task, acts):
        obs, state = envs.reset(env, jax.random.key(0), task)

        def body(state, a):
            s = envs.step(env, jax.random.key(0), state, a, task)
            return s.state, (s.reward, s.obs, s.truncated)
        return jax.lax.scan(body, state, acts)[1]

    batched = jax.jit(jax.vmap(episode))(tasks, actions)
    for i in range(6):
        _, steps = run_actions("darkroom", tasks[i], list(np.asarray(actions[i])))
        np.testing.assert_array_equal(batched[0][i], [float(s.reward) for s in steps])
        np.testing.assert_array_equal(batched[1][i], np.stack([np.asarray(s.obs) for s in steps]))
        np.testing.assert_array_equal(batched[2][i], [bool(s.truncated) for s in steps])


@pytest.mark.parametrize("name", ["darkroom", "darkroom_hard", "keydoor"])
def test_splits_disjoint_deterministic_and_complete(name):
    train, held = envs.all_tasks(name, "train"), envs.all_tasks(name, "heldout")
    t, h = {tuple(x) for x in train}, {tuple(x) for x in held}
    assert not (t & h)
    assert len(t) == len(train) and len(h) == len(held)
    assert len(t) + len(h) == len(envs._all_tasks(name))
    a = envs.sample_tasks(name, jax.random.key(5), 10, "heldout")
    b = envs.sample_tasks(name, jax.random.key(5), 10, "heldout")
    np.testing.assert_array_equal(a, b)
    assert {tuple(x) for x in a} <= h and len({tuple(x) for x in a}) == 10


def test_darkroom_split_sizes():
    assert envs.spec("darkroom").num_tasks == {"train": 64, "heldout": 17}
    # Known answer, not recomputed: every 5th goal of the row-major 9x9 enumeration, so results
    # of any version evaluate on the same held-out goals.
    assert envs.all_tasks("darkroom", "heldout").tolist() == [
        [0, 0], [0, 5], [1, 1], [1, 6], [2, 2], [2, 7], [3, 3], [3, 8], [4, 4], [5, 0], [5, 5],
        [6, 1], [6, 6], [7, 2], [7, 7], [8, 3], [8, 8]]
    assert envs.all_tasks("keydoor", "heldout")[:3].tolist() == [[0, 0, 0, 1], [0, 0, 0, 6],
                                                                 [0, 0, 1, 2]]
    with pytest.raises(ValueError, match="17 heldout tasks"):
        envs.sample_tasks("darkroom", jax.random.key(0), 18, "heldout")
    with pytest.raises(ValueError, match="-2 tasks requested"):  # not 15 of the 17
        envs.sample_tasks("darkroom", jax.random.key(0), -2, "heldout")
    assert envs.sample_tasks("darkroom", jax.random.key(0), 0, "heldout").shape == (0, 2)


def test_keydoor_tasks_have_distinct_key_and_door():
    tasks = envs.all_tasks("keydoor", "train")
    assert not np.any(np.all(tasks[:, :2] == tasks[:, 2:], axis=1))


@pytest.mark.parametrize("name", ["Breakout-MinAtar", "SpaceInvaders-MinAtar", "CartPole-v1",
                                  "MountainCar-v0"])
def test_interface_padding_round_trips(name):
    env = envs.make(name)
    spec = env.spec
    raw_obs, _ = env.gym.reset(jax.random.key(0), env.gym.default_params)
    obs_O = envs.to_interface(spec, raw_obs)
    assert obs_O.shape == spec.obs_shape and obs_O.dtype == np.dtype(spec.obs_dtype)
    back = envs.from_interface(spec, obs_O)
    np.testing.assert_array_equal(np.asarray(back, np.float32), np.asarray(raw_obs, np.float32))
    # Padding is zero.
    pad_mask = np.ones(spec.obs_shape, bool)
    pad_mask[tuple(slice(0, s) for s in spec.native_obs_shape)] = False
    assert not np.asarray(obs_O)[pad_mask].any()


def test_action_masks():
    assert envs.spec("CartPole-v1").action_mask.tolist() == [True, True, False]
    assert envs.spec("Breakout-MinAtar").action_mask.all()
    assert envs.spec("Breakout-MinAtar").num_actions == 6
    assert envs.spec("darkroom").num_actions == envs.spec("keydoor").num_actions == 5
    # A padded action is clipped to the last real one.
    assert int(envs.to_native_action(envs.spec("CartPole-v1"), jnp.int32(2))) == 1


def _breakout_paddle(obs) -> int:
    """Column of the Breakout paddle: channel 0 of the bottom row."""
    return int(np.argmax(np.asarray(obs)[9, :, 0]))


def test_minatar_sticky_actions_are_opt_in():
    plain = envs.make("Breakout-MinAtar")
    sticky = envs.make("Breakout-MinAtar", 0.1)
    assert plain is envs.make("Breakout-MinAtar")
    assert type(sticky.gym).__name__ == "StickyActionWrapper"
    assert type(envs.make("Breakout-MinAtar", 0.0).gym) is type(plain.gym)  # prob 0: no wrapper
    obs, state = envs.reset(sticky, jax.random.key(0), jnp.zeros((0,), jnp.int32))
    s = envs.step(sticky, jax.random.key(1), state, jnp.int32(3), jnp.zeros((0,), jnp.int32))
    assert s.obs.shape == (10, 10, 10)


@pytest.mark.parametrize("prob", [0.0, 1.0])
def test_sticky_actions_repeat_the_previous_action(prob):
    # Breakout's full action set: 1 = left, 3 = right. Ask for left three times when the last
    # executed action was right: without stickiness the paddle goes left; with probability 1
    # the env executes the previous action (right) every time, so the paddle goes right.
    left, right = 1, 3
    env, task = envs.make("Breakout-MinAtar", prob), jnp.zeros((0,), jnp.int32)
    obs, state = envs.reset(env, jax.random.key(0), task)
    if prob:  # the wrapper stores the last executed action (noop after a reset): make it right
        state = state.replace(last_action=jnp.asarray(right, state.last_action.dtype))
    cols = [_breakout_paddle(obs)]
    for i in range(3):
        s = envs.step(env, jax.random.key(10 + i), state, jnp.int32(left), task)
        cols.append(_breakout_paddle(s.obs))
        state = s.state
    assert cols[0] == 4 and np.diff(cols).tolist() == [1 if prob else -1] * 3, cols


def test_sticky_actions_repeat_at_the_probability_asked_for():
    # One step from 4000 keys, the last executed action right (3), left (1) asked for: the
    # wrapper executes the previous action with probability 0.1 (binomial sd 0.005).
    env, task = envs.make("Breakout-MinAtar", 0.1), jnp.zeros((0,), jnp.int32)
    _, state = envs.reset(env, jax.random.key(0), task)
    state = state.replace(last_action=jnp.asarray(3, state.last_action.dtype))
    step = jax.vmap(lambda k: envs.step(env, k, state, jnp.int32(1), task).state.last_action)
    repeated = np.asarray(step(jax.random.split(jax.random.key(1), 4000))) == 3
    assert abs(repeated.mean() - 0.1) < 0.02, repeated.mean()


def test_terminated_and_truncated_disjoint_on_cartpole():
    # Always pushing left falls over (terminations); a balancing controller on the pole angle
    # and the cart reaches the 500-step limit (truncations). No step is both.
    env = envs.make("CartPole-v1")
    task = jnp.zeros((0,), jnp.int32)
    balance = lambda obs: (obs[2] + 0.5 * obs[3] + 0.01 * obs[0] + 0.1 * obs[1]
                           > 0).astype(jnp.int32)
    push_left = lambda obs: jnp.int32(0)

    def run(policy, steps):
        def body(carry, key):
            obs, state = carry
            s = envs.step(env, key, state, policy(obs), task)
            return (s.obs, s.state), (s.terminated, s.truncated)
        start = envs.reset(env, jax.random.key(0), task)
        term, trunc = jax.lax.scan(body, start, jax.random.split(jax.random.key(1), steps))[1]
        return np.asarray(term), np.asarray(trunc)

    term_l, trunc_l = run(push_left, 200)
    term_b, trunc_b = run(balance, 1200)
    assert term_l.any() and trunc_b.sum() >= 2  # both kinds of episode end happen
    assert np.flatnonzero(trunc_b)[0] == 499  # the time limit: the 500th step of the episode
    for term, trunc in ((term_l, trunc_l), (term_b, trunc_b)):
        assert not np.any(term & trunc)


def test_every_env_in_the_table_steps():
    for name in envs.names():
        env = envs.make(name)
        task = jnp.asarray(envs.all_tasks(name, "train")[0])
        obs, state = envs.reset(env, jax.random.key(0), task)
        s = envs.step(env, jax.random.key(1), state, jnp.int32(0), task)
        assert s.obs.shape == env.spec.obs_shape, name
        assert s.obs.dtype == np.dtype(env.spec.obs_dtype), name


def test_sample_tasks_can_draw_the_whole_split_in_a_key_dependent_order():
    held = envs.all_tasks("darkroom", "heldout")
    a = envs.sample_tasks("darkroom", jax.random.key(0), 17, "heldout")
    b = envs.sample_tasks("darkroom", jax.random.key(1), 17, "heldout")
    assert sorted(map(tuple, a)) == sorted(map(tuple, b)) == sorted(map(tuple, held))
    assert a.tolist() != b.tolist() and a.tolist() != held.tolist()


def test_single_task_envs_repeat_their_one_task():
    assert (envs.all_tasks("CartPole-v1", "train").shape
            == envs.all_tasks("CartPole-v1", "heldout").shape == (1, 0))
    tasks = envs.sample_tasks("CartPole-v1", jax.random.key(0), 3, "heldout")
    assert tasks.shape == (3, 0) and tasks.dtype == np.int32


def test_interface_storage_dtypes():
    # MinAtar's boolean channels and the grid positions are stored as uint8 (histories and
    # replay hold millions of them); continuous observations as float32.
    want = {"darkroom": "uint8", "keydoor": "uint8", "Breakout-MinAtar": "uint8",
            "SpaceInvaders-MinAtar": "uint8", "CartPole-v1": "float32", "DeepSea-bsuite": "float32"}
    assert {name: envs.spec(name).obs_dtype for name in want} == want


def test_task_counts_of_every_grid_world():
    # Known answers: 17 x 17 goals (58 of 289 held out); 81 x 80 key/door pairs (1296 of 6480).
    assert envs.spec("darkroom_hard").num_tasks == {"train": 231, "heldout": 58}
    assert envs.spec("keydoor").num_tasks == {"train": 5184, "heldout": 1296}
    goals = np.concatenate([envs.all_tasks("darkroom_hard", s) for s in ("train", "heldout")])
    assert {tuple(g) for g in goals} == {(x, y) for x in range(17) for y in range(17)}


@pytest.mark.parametrize("sticky", [0.0, 0.25])
def test_a_grid_worlds_task_reaches_its_params_through_a_sticky_wrapper(sticky):
    room, keydoor = envs.make("darkroom", sticky), envs.make("keydoor", sticky)
    assert (type(room.gym).__name__ == "StickyActionWrapper") == bool(sticky)
    assert np.asarray(room.params(jnp.array([2, 7], jnp.int32)).goal).tolist() == [2, 7]
    params = keydoor.params(jnp.array([1, 2, 6, 5], jnp.int32))
    assert np.asarray(params.key_pos).tolist() == [1, 2]
    assert np.asarray(params.door_pos).tolist() == [6, 5]
    assert params.max_steps_in_episode == 50


@pytest.mark.parametrize("name, n, k", [("darkroom", 81, 2), ("darkroom_hard", 289, 2),
                                        ("keydoor", 81 * 80, 4), ("CartPole-v1", 1, 0)])
def test_every_environment_enumerates_its_own_tasks(name, n, k):
    # Grid worlds enumerate their cells (x-major; Key-to-Door's key then door, never one cell);
    # environments without tasks in their params have one empty task.
    tasks = envs._all_tasks(name)
    assert tasks.shape == (n, k) and tasks.dtype == np.int32
    assert len({tuple(t) for t in tasks.tolist()}) == n
    if name == "keydoor":
        assert not (tasks[:, :2] == tasks[:, 2:]).all(1).any()
        assert tasks[:3].tolist() == [[0, 0, 0, 1], [0, 0, 0, 2], [0, 0, 0, 3]]
    elif k:
        assert tasks[:3].tolist() == [[0, 0], [0, 1], [0, 2]]
        assert tasks.max() == {"darkroom": 8, "darkroom_hard": 16}[name]


@pytest.mark.parametrize("name, goal, want", [
    ("darkroom", (4, 4), 20.0), ("darkroom", (0, 0), 13.0), ("darkroom", (8, 3), 16.0),
    ("darkroom", (2, 7), 16.0),
    ("darkroom_hard", (0, 0), 1.0), ("darkroom_hard", (16, 16), 1.0),
    ("darkroom_hard", (8, 8), 1.0)])
def test_each_dark_rooms_optimal_return_is_what_walking_there_earns(name, goal, want):
    # The optimum is the room's own (its size, time limit and reward rule): walk x then y from
    # the centre, then stay; Dark Room Hard (17x17, 50 steps, sparse) pays once however near.
    env = envs.make(name)
    c = env.gym.size // 2
    dx, dy = goal[0] - c, goal[1] - c
    actions = [RIGHT if dx > 0 else LEFT] * abs(dx) + [UP if dy > 0 else DOWN] * abs(dy)
    actions += [NOOP] * (env.spec.episode_len - len(actions))
    _, steps = run_actions(name, goal, actions)
    assert sum(float(s.reward) for s in steps) == env.gym.optimal_return(goal) == want


def test_more_tasks_from_the_same_key_keep_the_ones_fewer_drew():
    # One random order per key, cut at n: a run with more evaluation tasks (or teacher tasks)
    # meets the same first ones, so its results extend a smaller run's rather than replace them.
    key = jax.random.key(3)
    five = envs.sample_tasks("darkroom", key, 5, "heldout")
    all_17 = envs.sample_tasks("darkroom", key, 17, "heldout")
    assert five.tolist() == all_17[:5].tolist()


def test_an_observation_larger_than_its_interface_is_refused():
    import dataclasses

    spec = dataclasses.replace(envs.spec("CartPole-v1"), native_obs_shape=(7,))
    with pytest.raises(ValueError, match=r"CartPole-v1: observation \(7,\) does not fit "
                                         r"interface \(6,\)"):
        envs.to_interface(spec, jnp.zeros(7))


def test_the_interface_table_names_every_environment_once_under_its_interface():
    rows = envs.interface_table().splitlines()[2:]
    named = {}
    for row in rows:
        iface, members = (cell.strip().strip("`") for cell in row.split("|")[1:3])
        named.update({m.strip("` "): iface for m in members.split(",")})
    assert named == {n: envs.spec(n).interface for n in envs.names()}
    assert ("| `grid` | `darkroom`, `darkroom_hard`, `keydoor` | the agent's (x, y), `uint8` [2] "
            "| 5: up, down, left, right, no-op |") in rows


@pytest.mark.parametrize("name", envs.names())
def test_every_observation_survives_its_interface_storage(name):
    # Histories and replay buffers keep observations in the interface's storage dtype: a native
    # observation it cannot hold (a fraction in a uint8 interface, a value past 255) would be
    # cut silently by the cast. 200 random-action steps of each registered env, episode ends
    # included, must come back from storage exactly as the env produced them.
    env = envs.make(name)
    params = env.params(jnp.asarray(envs.all_tasks(name, "train")[0]))
    n = env.spec.native_num_actions

    def one(carry, key):
        state = carry
        k_act, k_step = jax.random.split(key)
        action = jax.random.randint(k_act, (), 0, n)
        obs, state, _, _, _, info = env.gym.step(k_step, state, action, params)
        return state, (obs, info["final_observation"])

    obs0, state = env.gym.reset(jax.random.key(0), params)
    _, (obs_T, final_T) = jax.jit(lambda s: jax.lax.scan(one, s, jax.random.split(
        jax.random.key(1), 200)))(state)
    raw = np.concatenate([np.asarray(obs0, np.float64)[None], np.asarray(obs_T, np.float64),
                          np.asarray(final_T, np.float64)])
    stored = jax.vmap(lambda o: envs.from_interface(env.spec, envs.to_interface(env.spec, o)))(
        jnp.asarray(raw, jnp.float32))
    np.testing.assert_array_equal(np.asarray(stored, np.float64), raw)


# ---------------------------------------------------------------------------------------------
# Known answers pinning mutants that the tests above let through
# ---------------------------------------------------------------------------------------------

def test_optimal_return_of_a_goal_exactly_at_the_time_limit_is_one_reward():
    # A 5x5 room (centre (2, 2)) with a 3-step limit: a goal at distance 3 is reached on the
    # last step (one reward, dense or sparse); one at distance 4 never is.
    from climit.envs import gridworlds

    for sparse in (False, True):
        room = gridworlds.DarkRoom(5, 3, sparse=sparse)
        assert room.optimal_return((0, 1)) == 1.0
        assert room.optimal_return((0, 0)) == 0.0
    assert gridworlds.DarkRoom(5, 3).optimal_return((2, 2)) == 3.0


def test_grid_worlds_default_params_take_their_own_time_limit():
    # A world built with a time limit other than the registry's carries it in default_params
    # (the only place gymnax reads the limit from).
    from climit.envs import gridworlds

    assert gridworlds.KeyDoor(5, 7).default_params.max_steps_in_episode == 7
    assert gridworlds.DarkRoom(5, 3).default_params.max_steps_in_episode == 3


def test_grid_observation_space_is_the_cells_coordinates():
    # (x, y) in 0..size-1 each: the box's bounds are exactly the grid's cells.
    from climit.envs import gridworlds

    for world in (gridworlds.DarkRoom(5, 3), gridworlds.KeyDoor(7, 4)):
        box = world.observation_space()
        assert (box.low, box.high, box.shape) == (0, world.size - 1, (2,))
        assert box.dtype == jnp.int32


@pytest.mark.parametrize("name", ["darkroom", "CartPole-v1"])
def test_a_split_other_than_train_or_heldout_is_refused(name):
    # A typo ('test', 'held-out') must not quietly hand out one of the two splits, and a
    # single-task environment (one task in both splits) refuses it alike.
    for split in ("test", "held-out", "Train"):
        with pytest.raises(ValueError, match=f"split must be 'train' or 'heldout', got '{split}'"):
            envs.all_tasks(name, split)
        with pytest.raises(ValueError, match="split must be"):
            envs.sample_tasks(name, jax.random.key(0), 1, split)


def test_an_observation_of_another_rank_than_its_interface_is_refused():
    # A 2 x 3 observation has only 6 numbers, as the control interface, but is not a flat vector:
    # padding it would give a [6, 7] array instead of the [6] every member of the group has.
    import dataclasses

    spec = dataclasses.replace(envs.spec("CartPole-v1"), native_obs_shape=(2, 3))
    with pytest.raises(ValueError, match=r"CartPole-v1: observation \(2, 3\) does not fit "
                                         r"interface \(6,\)"):
        envs.to_interface(spec, jnp.zeros((2, 3)))


def test_a_padded_action_that_reaches_step_is_the_last_real_one():
    # CartPole in the 3-action control interface: action 2 is padding. If one arrives anyway
    # (a policy that forgot its mask), the cart is pushed right exactly as by action 1; passed
    # through raw, gymnax's force (2 * action - 1) * force_mag would push it three times as hard.
    env, task = envs.make("CartPole-v1"), jnp.zeros((0,), jnp.int32)
    _, state = envs.reset(env, jax.random.key(0), task)
    left, right, padded = (envs.step(env, jax.random.key(1), state, jnp.int32(a), task).obs
                           for a in (0, 1, 2))
    np.testing.assert_array_equal(padded, right)
    assert float(right[1]) > float(left[1])  # cart velocity: right pushes right


def test_the_specs_task_dim_is_the_width_of_its_tasks():
    # K of tasks_NxK: a goal (x, y), a key and a door (x, y, x, y), nothing for single-task envs.
    want = {"darkroom": 2, "darkroom_hard": 2, "keydoor": 4, "CartPole-v1": 0}
    assert {name: envs.spec(name).task_dim for name in want} == want
    for name, k in want.items():
        assert envs.sample_tasks(name, jax.random.key(0), 2, "train").shape == (2, k)
