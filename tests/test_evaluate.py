"""The frozen imitator as an agent: KV cache == recomputation, frozen weights, curves, plan."""

import dataclasses
import functools
import json
import math
import os
import signal
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from climit import config, envs, evaluate, rollout, stopping
from climit.config import ConfigError
from climit.imitator import data, model


def tiny_model(env_name="darkroom", context=8, layers=2, seed=0):
    spec = envs.spec(env_name)
    cfg = model.ModelConfig(obs_shape=spec.obs_shape, obs_dtype=spec.obs_dtype,
                            num_actions=spec.num_actions,
                            action_mask=tuple(bool(m) for m in spec.action_mask), d_model=16,
                            n_layers=layers, n_heads=2, context_len=context)
    params = model.init(cfg, jax.random.key(seed))
    # Larger weights: logits far apart (float rounding between the two paths cannot flip an
    # action) and a policy that really depends on its context (it switches action often).
    tree = jax.tree.map(lambda x: x * 10.0, params.tree)
    return model.Params(cfg, tree)


@dataclasses.dataclass(frozen=True)
class _FakeModel:
    context_len: int
    role: str  # one model config per role: each rolled out alone


# A tiny evaluation whose agents _fake_agents replaces (ED's data to H must hold a sequence).
FAKE_EVAL = ["teacher.total_env_steps=400", "teacher.learning_starts=100", "eval.env_steps=400",
             "eval.horizon_factor=2", "eval.tasks=2", "eval.dqn_seeds=2", "eval.random_seeds=1",
             "eval.bootstrap=20", "imitator.context_len=10", "imitator.seeds=2",
             "imitator.ed_fraction=1.0"]


def _fake_agents(monkeypatch, value: dict, calls: list, keys: list | None = None,
                 steps: list | None = None) -> None:
    """Every agent of evaluate.evaluate replaced by one whose every episode returns
    ``value[role]`` (1 for a role not in it); each rollout is recorded in ``calls`` as (imitators,
    random or dqn, env name, tasks shape), in ``keys`` (if given) as (the same agent, env
    name, the key data of its environment key), and in ``steps`` (if given) as (role, random or
    dqn, env name, env steps rolled out)."""
    def note(who, env, tasks, key, n, roles=None):
        calls.append((who, env.spec.name, np.shape(tasks)))
        if keys is not None:
            keys.append((who, env.spec.name, tuple(np.asarray(jax.random.key_data(key)).tolist())))
        if steps is not None:
            steps.extend((role, env.spec.name, n) for role in roles or [who])

    def signals(v, rows, env, tasks, t):
        length = env.spec.episode_len
        done = np.zeros((rows, len(tasks), t), bool)
        done[..., length - 1::length] = True
        return np.full((rows, len(tasks), t), v / length, np.float32), done

    def stacked(loaded, env, tasks, key, n, *a):
        note("imitators", env, tasks, key, n, [im.params.cfg.role for im in loaded])
        return [signals(value.get(im.params.cfg.role, 1.0), 2, env, tasks, n) for im in loaded]

    def random_(env, tasks, key, n, *a):
        note("random", env, tasks, key, n)
        return signals(value.get("random", 1.0), 1, env, tasks, n)

    def dqn_(c, env, tasks, key, n, progress):
        note("dqn", env, tasks, key, n)
        length = env.spec.episode_len
        rows, m = c.eval.dqn_seeds * len(tasks), n // length
        return (np.full((rows, m), value.get("dqn", 1.0), np.float32),
                np.full((rows, m), length, np.int32),
                np.tile(length * np.arange(1, m + 1, dtype=np.int32), (rows, 1)),
                np.ones((rows, m), bool))

    monkeypatch.setattr(evaluate, "load_imitators", lambda rd, r: {
        role: types.SimpleNamespace(params=types.SimpleNamespace(cfg=_FakeModel(20, role)), step=1)
        for role in r})
    monkeypatch.setattr(evaluate, "stacked_imitator_steps", stacked)
    monkeypatch.setattr(evaluate, "random_steps", random_)
    monkeypatch.setattr(evaluate, "dqn_episodes", dqn_)
    monkeypatch.setattr(evaluate, "training_facts",
                        lambda rd, r: {role: {"tag": role} for role in r})


@pytest.mark.parametrize("horizon_controls", [False, True])
def test_each_test_gets_the_curves_of_its_own_agents(tmp_path, monkeypatch, horizon_controls):
    # Every agent replaced by one that returns a known constant per episode: test (a) must show
    # the full-history imitator and test (b) the H-imitator, with the full-history controls when
    # horizon_controls is off and the ones trained to H when it is on, each against the fresh
    # DQNs; a crossed wire shows another value.
    cfg = config.load(None, [*FAKE_EVAL, "env.transfer=",
                             f"eval.horizon_controls={str(horizon_controls).lower()}"])
    value = {"imitator": 11.0, "ed": 12.0, "ablated": 13.0, "imitator_h": 14.0, "ed_h": 15.0,
             "ablated_h": 16.0, "random": 1.0, "dqn": 5.0}
    roles = evaluate.plan(cfg).imitators
    _fake_agents(monkeypatch, value, [])
    results = evaluate.evaluate(cfg, tmp_path, progress=False, log=lambda msg: None)
    with np.load(tmp_path / "eval" / "curves.npz") as z:
        curves = dict(z)
    h = "_h" if horizon_controls else ""
    expected = {"a": {"imitator": "imitator", "ed": "ed", "ablated": "ablated"},
                "b": {"imitator": "imitator_h", "ed": f"ed{h}", "ablated": f"ablated{h}"}}
    assert set(roles) == {"imitator", "ed", "ablated", "imitator_h"} | (
        {"ed_h", "ablated_h"} if horizon_controls else set())
    assert results["tests"]["b"]["controls_trained_to_h"] is horizon_controls
    # no transfer family: test (c) is skipped, with the reason the report shows
    assert "c" not in results["tests"] and results["skipped"] == {"c": "env.transfer is empty"}
    for test, agents in expected.items():
        for agent, role in {**agents, "random": "random", "dqn": "dqn"}.items():
            np.testing.assert_allclose(curves[f"{test}.{agent}"], value[role], rtol=1e-5,
                                       err_msg=f"test {test}, {agent}")
    assert curves["a.dqn"].shape == (2, 2, len(curves["a.grid"]))


def test_dqn_curves_pair_each_fresh_dqn_with_its_task():
    # Streams n = (r*K + k)*E + e as dqn_episodes lays them out; stream n's one episode ends at
    # step 10 with return 10 r + k + e: curve [r, k] = the mean over its E envs, 10 r + k + 0.5.
    r, k, e = 2, 3, 2
    ret_N = np.array([10 * ri + ki + ei for ri in range(r) for ki in range(k) for ei in range(e)],
                     np.float32)
    n = ret_N.size
    episodes = rollout.Episodes(returns=ret_N[:, None], lengths=np.full((n, 1), 10, np.int32),
                                end_step=np.full((n, 1), 10, np.int32), valid=np.ones((n, 1), bool))
    curves_RxKxP = evaluate.dqn_curves(episodes, e, r, k, np.array([10, 20]))
    expected = 10 * np.arange(r)[:, None] + np.arange(k)[None, :] + 0.5
    np.testing.assert_array_equal(curves_RxKxP, np.repeat(expected[..., None], 2, axis=-1))


@pytest.mark.parametrize("mode", ["greedy", "sample"])
def test_kv_cached_rollout_takes_the_actions_of_full_recomputation(mode):
    env = envs.make("darkroom")
    params = tiny_model(context=8, layers=2)
    steps = 70  # > 8 wraps of the 8-slot ring buffer, 3 episode boundaries
    task = jnp.array([1, 7], jnp.int32)
    key = jax.random.key(3)
    cached = jax.jit(functools.partial(
        rollout.rollout, env, evaluate.imitator_policy(env.spec.action_mask, mode),
        num_steps=steps, record=rollout.full))
    recompute = jax.jit(functools.partial(
        rollout.rollout, env, evaluate.window_policy(env.spec.action_mask, mode),
        num_steps=steps, record=rollout.full))
    cache, tr_c = cached(params, model.init_cache(params, 1), task, key)
    win, tr_r = recompute(params, evaluate.init_window(params, steps), task, key)
    np.testing.assert_array_equal(np.asarray(tr_c.action), np.asarray(tr_r.action))
    assert int(cache.t_B[0]) == steps and int(win.t) == steps
    switches = (np.diff(np.asarray(tr_c.action)) != 0).sum()
    assert switches > 10, switches  # a policy that changes its mind, so the test can fail


def test_sliding_window_equals_cache_for_one_layer():
    """With one layer the cache's receptive field is exactly the context, so a sliding
    recomputation over the last L tokens must take the same actions, wrap after wrap."""
    env = envs.make("darkroom")
    params = tiny_model(context=6, layers=1, seed=1)
    task = jnp.array([6, 2], jnp.int32)
    key = jax.random.key(5)
    _, a = rollout.rollout(env, evaluate.imitator_policy(env.spec.action_mask, "greedy"), params,
                           model.init_cache(params, 1), task, key, 50)
    _, b = rollout.rollout(env, evaluate.window_policy(env.spec.action_mask, "greedy"), params,
                           evaluate.init_window(params, 6), task, key, 50)
    np.testing.assert_array_equal(np.asarray(a.action), np.asarray(b.action))


class _Loaded:  # what imitator.train.load returns, as far as evaluation uses it
    def __init__(self, params):
        self.params, self.step = params, 0


def test_weights_never_change_and_rollouts_repeat():
    env = envs.make("darkroom")
    p0, p1 = tiny_model(seed=0), tiny_model(seed=1)
    stacked = model.Params(p0.cfg, jax.tree.map(lambda a, b: jnp.stack([a, b]), p0.tree, p1.tree))
    before = jax.tree.map(np.array, stacked.tree)
    cfg = config.load(None, ["eval.chunk_steps=30", "eval.mode=greedy"])
    tasks = envs.sample_tasks("darkroom", jax.random.key(0), 3, "heldout")
    run = lambda: evaluate.imitator_steps(_Loaded(stacked), env, tasks, jax.random.key(9), 60,
                                          cfg, "test", False)
    r1, d1 = run()
    r2, d2 = run()
    assert r1.shape == (2, 3, 60) and d1.shape == (2, 3, 60)
    np.testing.assert_array_equal(r1, r2)
    np.testing.assert_array_equal(d1, d2)
    # JAX arrays are immutable, so what this catches is a rollout that donates the weights:
    # their buffers would then be deleted, and reading them raises.
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(stacked.tree)):
        np.testing.assert_array_equal(a, np.asarray(b))
    # chunking does not change anything: 30 + 30 steps == one chunk of 60
    cfg60 = config.load(None, ["eval.chunk_steps=60", "eval.mode=greedy"])
    r3, _ = evaluate.imitator_steps(_Loaded(stacked), env, tasks, jax.random.key(9), 60, cfg60,
                                    "test", False)
    np.testing.assert_array_equal(r1, r3)
    assert (d1.sum(-1) == 3).all()  # 20-step episodes end at 20, 40, 60


def test_imitators_stacked_in_one_rollout_act_as_they_do_alone():
    """Evaluation rolls out the imitators that share a model config together (seeds stacked on
    the row axis); each must get exactly the signals of its own rollout, in sampled mode too
    (each row keeps the env and policy keys it has alone)."""
    env = envs.make("darkroom")
    p0, p1, p2 = (tiny_model(seed=s) for s in range(3))
    two = _Loaded(model.Params(p0.cfg, jax.tree.map(lambda a, b: jnp.stack([a, b]), p0.tree,
                                                    p1.tree)))
    one = _Loaded(model.Params(p2.cfg, jax.tree.map(lambda a: a[None], p2.tree)))
    cfg = config.load(None, ["eval.chunk_steps=25", "eval.mode=sample"])
    tasks = envs.sample_tasks("darkroom", jax.random.key(0), 3, "heldout")
    key = jax.random.key(4)
    together = evaluate.stacked_imitator_steps([two, one], env, tasks, key, 50, cfg, "t", False)
    for loaded, (reward, done) in zip([two, one], together):
        alone = evaluate.imitator_steps(loaded, env, tasks, key, 50, cfg, "t", False)
        np.testing.assert_array_equal(reward, alone[0])
        np.testing.assert_array_equal(done, alone[1])
    assert together[0][0].shape == (2, 3, 50) and together[1][0].shape == (1, 3, 50)
    assert not np.array_equal(together[0][0][0], together[0][0][1])  # seeds that differ
    local_cfg = dataclasses.replace(p0.cfg, episode_local=True)  # the context-ablated model
    ablated = _Loaded(model.Params(local_cfg, two.params.tree))
    groups = evaluate.model_groups({"a": two, "b": ablated, "c": one, "d": one},
                                   {"a": 50, "b": 50, "c": 50, "d": 20})
    assert groups == [["a", "c"], ["b"], ["d"]]  # by model config and by step count


def test_roles_rolled_out_together_resume_part_by_part(tmp_path):
    """After an interruption the finished roles' parts are reused and only the others roll out
    (still together where they share a model), to the same signals."""
    env = envs.make("darkroom")
    imitators = {r: _Loaded(model.Params(p.cfg, jax.tree.map(lambda a: a[None], p.tree)))
                 for r, p in (("imitator", tiny_model(seed=0)), ("ed", tiny_model(seed=1)),
                              ("imitator_h", tiny_model(seed=2)))}
    cfg = config.load(None, ["eval.chunk_steps=20", "eval.mode=sample"])
    tasks = envs.sample_tasks("darkroom", jax.random.key(0), 2, "heldout")
    logs, timing = [], {}
    run = lambda parts: evaluate._roles_on(  # noqa: E731
        parts, imitators, dict.fromkeys(imitators, 40), env, tasks, jax.random.key(3), cfg=cfg,
        progress=False, log=logs.append, timing=timing)
    first = run(evaluate.PartCache(tmp_path / "parts", "fp"))
    assert logs == ["evaluate: imitator + ed + imitator_h on darkroom done in "
                    f"{timing['imitator + ed + imitator_h on darkroom']:.1f} s"]
    (tmp_path / "parts" / "ed_on_darkroom.npz").unlink()  # as if killed before ed's part
    logs.clear()
    again = run(evaluate.PartCache(tmp_path / "parts", "fp"))
    assert logs[:2] == ["evaluate: imitator on darkroom reused",
                        "evaluate: imitator_h on darkroom reused"]
    assert logs[2].startswith("evaluate: ed on darkroom done in") and len(logs) == 3
    for role in imitators:
        for x, y in zip(first[role], again[role]):
            np.testing.assert_array_equal(x, y)


def test_a_stop_request_ends_the_evaluation_after_saving_the_agents_rolled_out(tmp_path):
    """SIGTERM during an evaluation: every role of the rollout under way is saved as a part,
    then it stops; the rerun reuses them all."""
    env = envs.make("darkroom")
    imitators = {r: _Loaded(model.Params(p.cfg, jax.tree.map(lambda a: a[None], p.tree)))
                 for r, p in (("imitator", tiny_model(seed=0)), ("ed", tiny_model(seed=1)))}
    cfg = config.load(None, ["eval.chunk_steps=20", "eval.mode=sample"])
    tasks = envs.sample_tasks("darkroom", jax.random.key(0), 2, "heldout")
    logs = []
    run = lambda: evaluate._roles_on(  # noqa: E731
        evaluate.PartCache(tmp_path / "parts", "fp"), imitators, dict.fromkeys(imitators, 40), env,
        tasks, jax.random.key(3), cfg=cfg, progress=False, log=logs.append, timing={})
    with stopping.watch(), pytest.raises(stopping.Stopped) as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        run()
    assert stop.value.why == "SIGTERM"
    assert "the evaluation after imitator + ed on darkroom" in str(stop.value)
    assert sorted(p.name for p in (tmp_path / "parts").iterdir()) == ["ed_on_darkroom.npz",
                                                                     "imitator_on_darkroom.npz"]
    logs.clear()
    with stopping.watch():
        run()
    assert logs == ["evaluate: imitator on darkroom reused", "evaluate: ed on darkroom reused"]


def test_a_rollout_of_restored_params_compiles_once():
    # Restored parameters are committed to a device; a carry that is not used to make the
    # first chunk compile apart from the later ones (seen: every rollout program twice).
    env = envs.make("darkroom")
    p = tiny_model()
    stacked = model.Params(p.cfg, jax.tree.map(lambda a: jax.device_put(a[None], jax.devices()[0]),
                                               p.tree))
    cfg = config.load(None, ["eval.chunk_steps=20", "eval.mode=greedy"])
    tasks = envs.sample_tasks("darkroom", jax.random.key(0), 2, "heldout")
    evaluate.imitator_steps(_Loaded(stacked), env, tasks, jax.random.key(9), 60, cfg, "t", False)
    runner = evaluate._row_runner(env, evaluate.imitator_policy(env.spec.action_mask, "greedy"),
                                  True, 20)
    assert runner._cache_size() == 1


def test_grid_and_curves_known_answer():
    np.testing.assert_array_equal(evaluate.grid(20, 200, 100), 20 * np.arange(1, 11))
    np.testing.assert_array_equal(evaluate.grid(20, 200, 4), [60, 120, 180])
    np.testing.assert_array_equal(evaluate.grid(50, 30, 10), [50])
    # Test (b)'s grid has a point at H: stride 13 episodes would skip H = 2500 (125 episodes),
    # so the grid takes the next stride that divides 125 (25), not a bin straddling H.
    assert 20 * 13 == 20 * math.ceil(1250 / 100)
    g = evaluate.grid(20, 25000, 100, through=2500)
    assert 2500 in g and g[1] - g[0] == 500 and g[-1] == 25000
    assert 8000 in evaluate.grid(20, 80000, 200, through=8000)  # the presets' H: stride 20 kept
    np.testing.assert_array_equal(evaluate.grid(20, 80000, 200, through=8000),
                                  evaluate.grid(20, 80000, 200))
    reward = np.zeros((1, 2, 60), np.float32)
    done = np.zeros((1, 2, 60), bool)
    done[..., [19, 39, 59]] = True
    reward[0, 0, [5, 25, 26, 45]] = 1.0
    reward[0, 1, 59] = 7.0
    c = evaluate.curves_from_steps(reward, done, np.array([20, 40, 60]))
    np.testing.assert_array_equal(c, [[[1, 2, 1], [0, 0, 7]]])


def test_env_randomness_is_the_same_for_every_agent():
    """Common random numbers: the env key of row s, task k does not depend on how many rows and
    tasks an agent has, and the env's own randomness (here Breakout's resets and sticky actions)
    does not depend on the randomness a policy consumes."""
    keys = evaluate._keys(jax.random.key(1), 3, 4)
    np.testing.assert_array_equal(jax.random.key_data(evaluate._keys(jax.random.key(1), 2, 2)),
                                  jax.random.key_data(keys[:2, :2]))
    env = envs.make("Breakout-MinAtar", sticky_action_prob=0.5)
    only_right = jnp.zeros(6, bool).at[3].set(True)
    constant = lambda p, c, inp, k: (jnp.int32(3), c)  # uses no randomness
    sampled = lambda p, c, inp, k: (rollout.uniform_action(k, only_right), c)  # uses its key
    trajs = []
    for act in (constant, sampled):
        run = lambda key: rollout.rollout(env, act, None, (), jnp.zeros(0, jnp.int32), key, 200,
                                          record=rollout.full)[1]
        trajs.append(jax.vmap(run)(keys[0]))
    np.testing.assert_array_equal(np.asarray(trajs[1].action), 3)
    for a, b in zip(jax.tree.leaves(trajs[0]), jax.tree.leaves(trajs[1])):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # rows differ
    assert not np.array_equal(np.asarray(trajs[0].obs[0]), np.asarray(trajs[0].obs[1]))


def test_plan_resolves_and_rejects():
    cfg = config.load(None, ["teacher.total_env_steps=2000", "teacher.learning_starts=100"])
    p = evaluate.plan(cfg)
    assert (p.env_steps, p.horizon, p.horizon_steps, p.transfer_steps) == (2000, 200, 2000, 2000)
    assert set(p.imitators) == {"imitator", "ed", "ablated", "imitator_h"}
    assert p.imitators["ablated"].imitator.variant == "single_episode"
    assert p.imitators["imitator_h"].imitator.horizon == 200
    assert p.imitators["imitator"].imitator.horizon == 0
    with pytest.raises(ConfigError, match="eval.horizon"):
        evaluate.plan(dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, horizon=10)))
    # each role sets its own variant and horizon: the top-level ones would be ignored
    for field, value in (("variant", "ed"), ("horizon", 100)):
        with pytest.raises(ConfigError,
                           match=f"imitator.{field}: .* is for `climit imitate` alone"):
            evaluate.plan(dataclasses.replace(
                cfg, imitator=dataclasses.replace(cfg.imitator, **{field: value})))
    with pytest.raises(ConfigError, match="eval.tasks"):
        evaluate.plan(dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, tasks=18)))
    # H between two episode ends: test (b)'s first bin after H would hold episodes before it.
    # 190 is as near 180 as 200: the smaller is suggested (it keeps H x 10 within env_steps).
    with pytest.raises(ConfigError, match="eval.horizon: H = 190 env steps is not a multiple of "
                       "the darkroom episode length .20.; set eval.horizon=180"):
        evaluate.plan(dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, horizon=190)))
    # H = 101 episodes (the default tenth of 20200 steps): no stride near the 11 episodes that
    # 100 points over 10 H ask for divides 101, so test (b)'s grid would keep 1 point up to H.
    prime = config.load(None, ["teacher.total_env_steps=20200", "teacher.learning_starts=100"])
    assert evaluate.grid(20, 20200, 100, through=2020).tolist() == list(range(2020, 20201, 2020))
    with pytest.raises(ConfigError, match=r"eval.horizon: H = 2020 env steps \(101 episodes\) "
                       r"leaves test \(b\)'s curves a grid point every 2020 env steps, 1 up to H.*"
                       r"set eval.horizon=2000 \(or eval.env_steps to 10x that\)"):
        evaluate.plan(prime)
    evaluate.plan(dataclasses.replace(prime, eval=dataclasses.replace(prime.eval, horizon=2000)))
    # H = 2015 between two episode ends: the nearest multiple, 2020, fails the grid check
    # above, so the error suggests the H that passes both (following it must work).
    with pytest.raises(ConfigError, match=r"H = 2015 env steps is not a multiple of the darkroom "
                       r"episode length \(20\); set eval.horizon=2000 "):
        evaluate.plan(dataclasses.replace(prime,
                                          eval=dataclasses.replace(prime.eval, horizon=2015)))
    # H = 2029: 2020 fails, and 2040 (11 steps away) is nearer than 2000 (29 away).
    with pytest.raises(ConfigError, match=r"H = 2029 env steps .*; set eval.horizon=2040 "):
        evaluate.plan(dataclasses.replace(prime,
                                          eval=dataclasses.replace(prime.eval, horizon=2029)))
    # What the imitate stage would find only after the teacher trained: caught before any work.
    whole = dataclasses.replace(cfg.imitator, context_len=1001)  # x 2 windows > all 2000 steps
    with pytest.raises(ConfigError, match=r"per history the imitator learns from \(all 2000 env "
                       r"steps, every episode\); lower imitator.context_len or "
                       r"imitator.train_windows or raise teacher.total_env_steps$"):
        evaluate.plan(dataclasses.replace(cfg, imitator=whole))
    long_seq = dataclasses.replace(cfg.imitator, context_len=101)  # x 2 windows > H = 200
    with pytest.raises(ConfigError, match="imitator.context_len: a training sequence of 202 steps"):
        evaluate.plan(dataclasses.replace(cfg, imitator=long_seq))
    # Every 4th episode of the first 200 steps is ~50 steps: a 2 x 40-step sequence does not fit
    # (ED on all of each history here, so that the H-imitator is the one refused).
    sparse = dataclasses.replace(cfg.imitator, context_len=40, subsample=4, ed_fraction=1.0)
    with pytest.raises(ConfigError, match="longer than the ~50 steps per history the imitator_h "
                                          "imitator learns from .the first 200 env steps, 1 "
                                          "episode in 4"):
        evaluate.plan(dataclasses.replace(cfg, imitator=sparse))
    # ED keeps the last 10% (200 of 2000 steps): 2 x 100 fits it, 2 x 101 does not. With horizon
    # controls its test (b) twin keeps 10% of H = 200, 20 steps: a 2 x 11 sequence is refused
    # there, and only with the controls on.
    evaluate.plan(dataclasses.replace(
        cfg, imitator=dataclasses.replace(cfg.imitator, context_len=100)))
    with pytest.raises(ConfigError,
                       match="~200 steps per history the ed imitator learns from .the last 10% of "
                             "all"):
        evaluate.plan(dataclasses.replace(cfg, imitator=dataclasses.replace(cfg.imitator,
                                                                            context_len=101)))
    short = dataclasses.replace(cfg, imitator=dataclasses.replace(cfg.imitator, context_len=11))
    evaluate.plan(short)
    with pytest.raises(ConfigError, match="~20 steps per history the ed_h imitator .*"
                                          "eval.horizon_controls=false"):
        evaluate.plan(dataclasses.replace(short, eval=dataclasses.replace(short.eval,
                                                                         horizon_controls=True)))
    # A learning-rate decay tied to the teacher's 2000 steps cannot be rerun over other lengths.
    decay = dataclasses.replace(cfg, teacher=dataclasses.replace(cfg.teacher, lr_final_frac=0.1),
                                eval=dataclasses.replace(cfg.eval, env_steps=4000))
    with pytest.raises(ConfigError,
                       match="teacher.lr_final_frac: .* instead of the teacher's 2000"):
        evaluate.plan(decay)
    with pytest.raises(ConfigError, match="env.train_tasks: the imitators' held-out loss needs"):
        evaluate.plan(dataclasses.replace(cfg, env=dataclasses.replace(cfg.env, train_tasks=1)))
    ctrl = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, horizon_controls=True),
                               imitator=dataclasses.replace(cfg.imitator, ed_fraction=1.0))
    assert set(evaluate.plan(ctrl).imitators) == {"imitator", "ed", "ablated", "imitator_h",
                                                  "ed_h", "ablated_h"}
    assert evaluate.plan(ctrl).imitators["ablated_h"].imitator.horizon == 200


def test_settings_that_change_no_result_leave_the_evaluation_fingerprint():
    # Logging, prefetch, kept checkpoints of the imitators and the rollout's chunk length: the
    # same evaluation (it is not redone, fresh DQNs included); a setting that matters changes it.
    base = ["teacher.total_env_steps=2000", "teacher.learning_starts=100"]
    cfg = config.load(None, base)
    for neutral in ("imitator.prefetch=4", "imitator.log_every=7", "imitator.keep_checkpoints=5",
                    "imitator.data_memory_mb=64", "eval.chunk_steps=100",
                    "teacher.keep_checkpoints=4"):
        assert (evaluate.fingerprint(config.load(None, base + [neutral]))
                == evaluate.fingerprint(cfg)), neutral
    # eval_every picks the steps among which the best imitator (the one evaluated) is chosen.
    for real in ("eval.tasks=3", "imitator.lr=1e-3", "eval.mode=greedy", "imitator.eval_every=7"):
        assert (evaluate.fingerprint(config.load(None, base + [real]))
                != evaluate.fingerprint(cfg)), real


def test_transfer_tasks_resolve_and_leave_older_evaluations_matching():
    """Test (c) evaluates eval.tasks tasks of the new family unless eval.transfer_tasks says
    otherwise (Dark Room holds out 17 goals, Key-to-Door 1296): the default stays out of the
    evaluation's fingerprint (config.ADDED_FIELDS), so evaluations made before the field existed
    still match."""
    overrides = ["teacher.total_env_steps=2000", "teacher.learning_starts=100", "eval.tasks=17"]
    cfg = config.load(None, overrides)
    assert cfg.env.transfer == "keydoor" and evaluate.plan(cfg).transfer_tasks == 17
    more = config.load(None, overrides + ["eval.transfer_tasks=20"])
    assert evaluate.plan(more).transfer_tasks == 20
    assert evaluate.fingerprint(more) != evaluate.fingerprint(cfg)
    identity = {k: v for k, v in config.to_dict(cfg.eval).items() if k != "transfer_tasks"}
    from climit.imitator import train as imitator_train
    imitators = {r: imitator_train.fingerprint(c) for r, c in evaluate.plan(cfg).imitators.items()}
    assert evaluate.fingerprint(cfg) == config.fingerprint(  # the formula before the field
        cfg.run.seed, cfg.env, config.teacher_identity(cfg.teacher), cfg.histories, cfg.imitator,
        identity, sorted(imitators.items()))
    # The other way round a family with fewer held-out tasks caps the default, not a request.
    back = config.load(None, overrides + ["env.name=keydoor", "env.transfer=darkroom",
                                          "eval.tasks=20"])
    assert evaluate.plan(back).transfer_tasks == 17
    with pytest.raises(ConfigError, match="eval.transfer_tasks: 18 exceeds the 17 held-out tasks "
                                          "of darkroom"):
        config.load(None, overrides + ["env.name=keydoor", "env.transfer=darkroom",
                                       "eval.transfer_tasks=18"])
    with pytest.raises(ConfigError,
                       match="eval.transfer_tasks: .*env.transfer names no new family"):
        config.load(None, overrides + ["env.transfer=", "eval.transfer_tasks=5"])


def test_ed_learns_from_every_episode_of_its_part():
    """AD's subsampling compresses a history's progress into one context; ED's expert data has
    none, so ED keeps every episode of its last ed_fraction (subsampled it would learn from k
    times fewer steps than the imitator it controls for), in test (a) and in test (b)."""
    cfg = config.load(None, ["teacher.total_env_steps=2000", "teacher.learning_starts=100",
                             "imitator.subsample=4", "imitator.ed_fraction=0.5",
                             "imitator.context_len=10", "eval.horizon_controls=true"])
    roles = evaluate.plan(cfg).imitators
    assert {r: c.imitator.subsample for r, c in roles.items()} == {
        "imitator": 4, "ed": 1, "ablated": 4, "imitator_h": 4, "ed_h": 1, "ablated_h": 4}
    assert roles["ed"].imitator.ed_fraction == 0.5 and roles["ed_h"].imitator.horizon == 200
    # 1000 steps of ED (half of 2000, every episode) against 500 of AD (every 4th of 2000)
    kept = {r: data.kept_steps(c.imitator, 2000) for r, c in roles.items()}
    assert kept["ed"] == (1000, "the last 50% of all 2000 env steps, every episode")
    assert kept["imitator"] == (500, "all 2000 env steps, 1 episode in 4")
    assert kept["ed_h"] == (100, "the last 50% of the first 200 env steps, every episode")
    # the role's dataset is built from its config: every episode of the last half
    spec = data.DatasetSpec.from_config(roles["ed"].imitator, seed=0)
    assert (spec.variant, spec.subsample, spec.ed_fraction) == ("ed", 1, 0.5)


def test_part_cache_reuses_finished_agents_of_the_same_config(tmp_path):
    calls = []

    def agent():
        calls.append(1)
        return np.arange(3.0), np.array([True, False])

    cache = evaluate.PartCache(tmp_path / "parts", "fp1")
    out, cached = cache.get_or_run("imitator on darkroom", agent)
    assert not cached and len(calls) == 1
    again, cached = evaluate.PartCache(tmp_path / "parts", "fp1").get_or_run(
        "imitator on darkroom", agent)
    assert cached and len(calls) == 1
    for a, b in zip(out, again):
        np.testing.assert_array_equal(a, b)
    _, cached = evaluate.PartCache(tmp_path / "parts", "fp2").get_or_run(
        "imitator on darkroom", agent)
    assert not cached and len(calls) == 2  # another config: recomputed
    cache.clear()
    assert not (tmp_path / "parts").exists()


def test_a_part_only_some_processes_see_is_computed_by_all(tmp_path, monkeypatch):
    # Process 0 runs ahead between collectives and may have written a part while another
    # process has yet to look for it: every process must then compute it, or their stop polls
    # after each part stop pairing up (seen in the two-process `climit run` test).
    from jax.experimental import multihost_utils

    evaluate.PartCache(tmp_path / "parts", "fp1").put("dqn", (np.arange(3.0),))
    gathered = []

    def allgather(x):  # this process sees the part; the other process did not
        gathered.append(int(x))
        return np.array([int(x), 0], np.int32)

    monkeypatch.setattr(jax, "process_count", lambda: 2)
    monkeypatch.setattr(multihost_utils, "process_allgather", allgather)
    assert evaluate.PartCache(tmp_path / "parts", "fp1").cached("dqn") is None
    out, cached = evaluate.PartCache(tmp_path / "parts", "fp1").get_or_run(
        "dqn", lambda: (np.arange(3.0),))
    assert not cached and gathered == [1, 1]
    monkeypatch.setattr(multihost_utils, "process_allgather", lambda x: np.array([1, 1], np.int32))
    assert evaluate.PartCache(tmp_path / "parts", "fp1").get_or_run("dqn", None)[1]  # all see it


@pytest.mark.parametrize("damage", ["flip", "cut"])
def test_part_cache_recomputes_a_damaged_part(tmp_path, damage):
    # A part's arrays are zip members with a CRC-32 each: one flipped byte of an array, or a
    # file cut short, is recomputed instead of read into the results.
    calls = []

    def agent():
        calls.append(1)
        return (np.arange(1000, dtype=np.float32),)

    cache = evaluate.PartCache(tmp_path / "parts", "fp1")
    cache.get_or_run("dqn", agent)
    path = next((tmp_path / "parts").glob("*.npz"))
    data = bytearray(path.read_bytes())
    at = data.find(np.float32(500).tobytes())
    data[at] ^= 1
    path.write_bytes(bytes(data) if damage == "flip" else bytes(data[: len(data) // 2]))
    out, cached = evaluate.PartCache(tmp_path / "parts", "fp1").get_or_run("dqn", agent)
    assert not cached and len(calls) == 2
    np.testing.assert_array_equal(out[0], np.arange(1000, dtype=np.float32))


def test_evaluate_refuses_missing_or_stale_imitators(tmp_path):
    from climit.errors import ArtifactError

    cfg = config.load(None, [f"run.runs_dir={tmp_path}", "run.name=r",
                             "teacher.total_env_steps=2000", "teacher.learning_starts=100"])
    with pytest.raises(ArtifactError, match="the 'imitator' imitator is missing"):
        evaluate.evaluate(cfg, tmp_path / "r", progress=False)
    (tmp_path / "r" / "imitator" / "ad" / "checkpoints").mkdir(parents=True)
    (tmp_path / "r" / "imitator" / "ad" / "summary.json").write_text('{"fingerprint": "old"}')
    with pytest.raises(ArtifactError, match="another config"):
        evaluate.evaluate(cfg, tmp_path / "r", progress=False)


def test_run_presets_cut_test_b_histories_after_exploration():
    """Every `climit run` preset has a valid evaluation plan, and its H falls where the DQN's
    epsilon has decayed at least half way: before that its histories are mostly epsilon-random
    actions and the H-imitator has nothing to extrapolate (configs/darkroom_cpu.yaml's first
    run, H = 3k steps: chance accuracy, random-policy returns)."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "configs"
    presets = [p for p in sorted(root.rglob("*.yaml"))
               if not p.name.startswith(("teacher_", "imitator_"))]
    assert len(presets) >= 4
    for path in presets:
        cfg = config.load(path)
        p = evaluate.plan(cfg)
        t = cfg.teacher
        half_decayed = t.learning_starts + t.eps_decay_steps // 2
        assert p.horizon >= half_decayed, (path.name, p.horizon, half_decayed)
        assert p.horizon_steps == p.horizon * cfg.eval.horizon_factor <= p.env_steps


def test_dqn_episode_accounting_equals_the_rollout_primitive():
    """The fresh DQN's curves come from the returns its training loop sums as it goes; on the
    same transitions they equal ``rollout.episode_returns`` (the imitator's accounting), here on
    CartPole's variable-length episodes with two envs per learner."""
    from climit.teacher import dqn, train

    tcfg = config.TeacherConfig(hidden=(16,), num_envs=2, total_env_steps=1200, chunk_steps=600,
                                learning_starts=100, buffer_size=300, batch_size=16,
                                eps_decay_steps=300, q_log_period=0)
    env = envs.make("CartPole-v1")
    keys = jax.random.split(jax.random.PRNGKey(3), 2)
    tasks = jnp.zeros((2, 0), jnp.int32)
    state = dqn.init(tcfg, env, keys, tasks)
    _, out = dqn.make_chunk(tcfg, env, 600, "full")(state, dqn.hparams(tcfg, 2), tasks)
    ours = train._episodes_from_returns(np.asarray(out.episode_return_NxT))  # [N=4, M]
    s = out.streams
    done = np.asarray(s.terminated_NxT) | np.asarray(s.truncated_NxT)
    ref = jax.vmap(lambda r, d: rollout.episode_returns(r, d, ours.returns.shape[1]))(
        s.reward_NxT, done)
    assert ours.valid.sum() > 20 and len(set(np.asarray(ours.lengths[ours.valid]).tolist())) > 3
    for field in ("valid", "end_step", "lengths"):
        np.testing.assert_array_equal(getattr(ours, field), np.asarray(getattr(ref, field)), field)
    np.testing.assert_allclose(ours.returns, np.asarray(ref.returns), rtol=1e-6)


def test_fresh_dqns_of_a_task_do_not_depend_on_how_many_tasks_are_evaluated():
    # Learner (seed r, task k) used to get fold_in(key, r * K + k): with K = 3, seed 0 on task
    # 2 had the key of seed 1 on task 0 at K = 2, and raising eval.tasks changed the DQN
    # baseline of tasks that were already there.
    cfg = config.load(None, ["eval.dqn_seeds=2", "teacher.hidden=[16]", "teacher.buffer_size=300",
                             "teacher.batch_size=16", "teacher.learning_starts=100",
                             "teacher.eps_decay_steps=300", "teacher.chunk_steps=200"])
    env = envs.make("darkroom")
    # Goals at and next to the start cell: a learner that explores is paid often, so returns
    # tell learners apart (goals far away pay nothing in 400 steps: zeros match any key).
    tasks = np.array([[4, 4], [3, 3], [5, 5]], np.int32)
    assert {tuple(t) for t in tasks.tolist()} <= {tuple(t) for t in
                                                  envs.all_tasks("darkroom", "heldout").tolist()}
    key = jax.random.key(4)
    ep2 = evaluate.dqn_episodes(cfg, env, tasks[:2], key, 400, False)
    ep3 = evaluate.dqn_episodes(cfg, env, tasks, key, 400, False)
    # rows g = r * K + k: (r, k) for k < 2 in both
    rows2, rows3 = ([r * 2 + k for r in range(2) for k in range(2)],
                    [r * 3 + k for r in range(2) for k in range(2)])
    assert (ep3.returns[rows3] > 0).any(axis=1).all()  # every compared learner was paid
    np.testing.assert_array_equal(ep2.returns[rows2], ep3.returns[rows3])
    assert not np.array_equal(ep3.returns[0], ep3.returns[3])  # seeds differ on one task
    assert not np.array_equal(ep3.returns[0], ep3.returns[1])  # and tasks for one seed


def test_run_seed_reaches_the_evaluation():
    # The held-out tasks drawn (10 of the 17 goals by default), the environment keys and the
    # fresh DQNs' root key all follow run.seed (the rest of the suite runs with seed 0).
    base, other = (config.load(None, [f"run.seed={s}"]) for s in (0, 1))
    _, tasks0, ks0 = evaluate.heldout_family(base)
    _, tasks1, ks1 = evaluate.heldout_family(other)
    for k0, k1 in zip(ks0, ks1, strict=True):  # every stream: tasks, env and DQN keys, test (c)'s
        assert not np.array_equal(jax.random.key_data(k0), jax.random.key_data(k1))
    assert not np.array_equal(np.asarray(tasks0), np.asarray(tasks1))
    # Both draws are eval.tasks distinct tasks of the held-out split, none a training task.
    held = {tuple(t) for t in envs.all_tasks(base.env.name, "heldout").tolist()}
    train = {tuple(t) for t in envs.all_tasks(base.env.name, "train").tolist()}
    for tasks in (tasks0, tasks1):
        drawn = [tuple(t) for t in np.asarray(tasks).tolist()]
        assert len(set(drawn)) == len(drawn) == base.eval.tasks
        assert set(drawn) <= held and not set(drawn) & train


def test_bench_rollout_runs_the_peer_with_its_repeats_and_prints_the_ratio(tmp_path, capsys):
    # The peer gets the same sizes and --repeats, and each of its records is followed by the
    # climit / peer ratio of the KV-cache rollout at the same batch and context (it used to be
    # worked out by hand).
    peer = tmp_path / "icrl_rollout_bench.py"
    peer.write_text(
        "import json, sys\n"
        "a = sys.argv\n"
        "print(json.dumps({'bench': 'icrl_rollout', 'argv': a[1:], "
        "'batch_envs': int(a[a.index('--batch') + 1]),\n"
        "                  'context': int(a[a.index('--context') + 1]), "
        "'env_steps_per_s': 10.0}))\n")
    from climit import cli

    assert cli.main(["bench", "rollout", "--batch", "2", "--context", "8", "--steps", "4",
                     "--d-model", "8", "--layers", "1", "--heads", "1", "--mode", "kv_cache",
                     "--repeats", "2", "--peer", "--peer-script", str(peer)]) == 0
    mine, theirs, ratio = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert mine["mode"] == "kv_cache" and len(mine["times_s"]) == 2
    assert theirs["argv"][theirs["argv"].index("--repeats") + 1] == "2"
    assert ratio == {"bench": "ratio_climit_over_peer", "batch_envs": 2, "context": 8,
                     "env_steps_per_s": round(mine["env_steps_per_s"] / 10.0, 3)}


def test_bench_batch_rates_are_every_envs_steps_over_the_median_repeat(monkeypatch):
    # Timings faked: B = 4 envs, the KV cache 10 steps per env in repeats of 2, 1 and 4 s
    # (median 2: 4 x 10 / 2 = 20 env steps/s), recomputing 5 steps in 1, 5 and 2 s (median 2:
    # 4 x 5 / 2 = 10); the ratio line is KV cache over recompute, 2.0.
    times = {"kv_cache": (7.0, [2.0, 1.0, 4.0]), "recompute": (8.0, [1.0, 5.0, 2.0])}
    asked = []

    def time_rollout(env, task, mcfg, params, mode, b, n, repeats):
        asked.append((mode, b, n, repeats))
        return times[mode]

    monkeypatch.setattr(evaluate, "_time_rollout", time_rollout)
    mcfg = types.SimpleNamespace(d_model=8, n_layers=1, n_heads=1, compute_dtype="float32")
    kv, rc, ratio = evaluate._bench_batch(None, None, mcfg, None, 4, ("kv_cache", "recompute"),
                                          10, 5, 3, {"batch_envs": 4})
    assert asked == [("kv_cache", 4, 10, 3), ("recompute", 4, 5, 3)]
    assert (kv["steps"], kv["median_s"], kv["env_steps_per_s"], kv["compile_s"]) == (
        10, 2.0, 20.0, 7.0)
    assert (rc["steps"], rc["median_s"], rc["env_steps_per_s"], rc["compile_s"]) == (
        5, 2.0, 10.0, 8.0)
    assert kv["times_s"] == [2.0, 1.0, 4.0]
    assert ratio == {"bench": "rollout_ratio", "batch_envs": 4, "kv_cache_over_recompute": 2.0}


def test_time_rollout_compiles_before_the_clock_and_waits_inside_it(monkeypatch):
    # Each repeat's clock is read before the call and after waiting for its result, and no
    # compilation (a trace) happens between those two reads: compile time is reported apart.
    # The KV-cache mode acts by the cached policy, not by recomputing the window.
    env = envs.make("CartPole-v1")
    mcfg = model.ModelConfig(obs_shape=env.spec.obs_shape, obs_dtype=env.spec.obs_dtype,
                             num_actions=env.spec.num_actions,
                             action_mask=tuple(bool(m) for m in env.spec.action_mask),
                             d_model=8, n_layers=1, n_heads=1, context_len=4)
    params = model.init(mcfg, jax.random.key(0))
    task = jnp.asarray(envs.all_tasks("CartPole-v1", "heldout")[0])
    events, wait = [], jax.block_until_ready

    def traced(name, *args, **kwargs):
        if name == "/jax/core/compile/jaxpr_trace_duration":
            events.append("trace")

    monkeypatch.setattr(evaluate, "time", types.SimpleNamespace(
        perf_counter=lambda: events.append("clock") or 0.0))
    monkeypatch.setattr(jax, "block_until_ready", lambda x: events.append("wait") or wait(x))
    monkeypatch.setattr(evaluate, "window_policy", lambda *a: pytest.fail("recomputed"))
    jax.monitoring.register_event_duration_secs_listener(traced)
    try:
        compile_s, times = evaluate._time_rollout(env, task, mcfg, params, "kv_cache", 2, 3, 2)
    finally:
        jax.monitoring.unregister_event_duration_listener(traced)
    first = events.index("clock")  # (the envs' keys are drawn, and traced, before it)
    compiled = events.index("clock", first + 1)
    assert "trace" in events[first:compiled]
    assert events[compiled + 1:] == ["clock", "wait", "clock"] * 2
    assert (compile_s, times) == (0.0, [0.0, 0.0])


def test_bench_rollout_gives_the_peer_the_same_case(tmp_path, monkeypatch, capsys):
    # The peer gets the sizes, KV-cache steps, model and repeats climit ran, with the dtype
    # resolved as climit resolved it (auto: float32 on CPU), never the recompute steps.
    peer = tmp_path / "icrl_rollout_bench.py"
    peer.write_text("import json, sys\nprint(json.dumps({'argv': sys.argv[1:]}))\n")
    asked = {}

    def bench_rollout(env_name, batches, contexts, **kwargs):
        asked.update(kwargs, env=env_name, batches=batches, contexts=contexts)
        return iter(())

    monkeypatch.setattr(evaluate, "bench_rollout", bench_rollout)
    from climit import cli

    assert cli.main(["bench", "rollout", "--batch", "2", "3", "--context", "8", "--steps", "40",
                     "--recompute-steps", "7", "--d-model", "16", "--layers", "3", "--heads",
                     "2", "--repeats", "5", "--peer", "--peer-script", str(peer)]) == 0
    assert asked == {"env": "CartPole-v1", "batches": [2, 3], "contexts": [8], "steps": 40,
                     "recompute_steps": 7, "d_model": 16, "n_layers": 3, "n_heads": 2,
                     "compute_dtype": "auto", "repeats": 5, "modes": ("kv_cache", "recompute")}
    (line,) = capsys.readouterr().out.splitlines()
    assert json.loads(line)["argv"] == [
        "--env", "CartPole-v1", "--batch", "2", "3", "--context", "8", "--steps", "40",
        "--d-model", "16", "--layers", "3", "--heads", "2", "--dtype", "float32",
        "--repeats", "5"]
    # A dtype asked for reaches the peer as it is (the same run in bf16 on both sides).
    assert cli.main(["bench", "rollout", "--dtype", "bfloat16", "--peer", "--peer-script",
                     str(peer)]) == 0
    argv = json.loads(capsys.readouterr().out)["argv"]
    assert (asked["compute_dtype"], argv[argv.index("--dtype") + 1]) == ("bfloat16", "bfloat16")


def _evaluate_recording_envs(tmp_path, monkeypatch, *extra, keys=None):
    """evaluate.evaluate with every agent faked: (results, [(agent, env name, tasks shape)]);
    ``keys``: see _fake_agents."""
    cfg = config.load(None, [*FAKE_EVAL, "env.transfer=keydoor", *extra])
    calls = []
    _fake_agents(monkeypatch, {}, calls, keys)
    return evaluate.evaluate(cfg, tmp_path, progress=False, log=lambda msg: None), calls


def test_test_c_runs_every_agent_in_the_transfer_family(tmp_path, monkeypatch):
    # Test (c) rolls every agent out in env.transfer. (Run in the training env, it would reuse
    # test (a)'s finished parts, "... on darkroom", and report them under keydoor's name.)
    results, calls = _evaluate_recording_envs(tmp_path, monkeypatch)
    on_keydoor = [(who, shape) for who, name, shape in calls if name == "keydoor"]
    assert {who for who, _ in on_keydoor} == {"imitators", "random", "dqn"}
    assert all(shape == (2, envs.spec("keydoor").task_dim) for _, shape in on_keydoor)
    assert results["tests"]["c"]["env"] == "keydoor"


def test_imitators_and_the_random_policy_meet_the_same_env_keys(tmp_path, monkeypatch):
    # Common random numbers: in each family every imitator rollout and the random policy get
    # one and the same environment key (row s, task k then share their env randomness); the
    # fresh DQNs get another (their keys drive their exploration too), and so does each family.
    keys = []
    _evaluate_recording_envs(tmp_path, monkeypatch, keys=keys)
    by = {}
    for who, name, key in keys:
        by.setdefault(name, {}).setdefault(who, set()).add(key)
    for name in ("darkroom", "keydoor"):
        assert len(by[name]["imitators"]) == 1 and by[name]["random"] == by[name]["imitators"]
        assert by[name]["dqn"].isdisjoint(by[name]["imitators"])
    assert by["darkroom"]["random"] != by["keydoor"]["random"]


def test_test_c_runs_on_eval_transfer_tasks_tasks(tmp_path, monkeypatch):
    # eval.transfer_tasks (resolved by plan) sets test (c)'s task count.
    results, calls = _evaluate_recording_envs(tmp_path, monkeypatch, "eval.transfer_tasks=3")
    assert {shape[0] for _, name, shape in calls if name == "keydoor"} == {3}
    assert {shape[0] for _, name, shape in calls if name == "darkroom"} == {2}
    assert results["tests"]["c"]["tasks"] == 3


def test_imitator_and_random_rows_get_the_same_env_keys(monkeypatch):
    spec = envs.spec("darkroom")
    mcfg = model.ModelConfig(obs_shape=spec.obs_shape, obs_dtype=spec.obs_dtype,
                             num_actions=spec.num_actions,
                             action_mask=tuple(bool(m) for m in spec.action_mask), d_model=16,
                             n_layers=1, n_heads=2, context_len=8)
    p = model.init(mcfg, jax.random.key(0))
    two_seeds = types.SimpleNamespace(params=model.Params(
        mcfg, jax.tree.map(lambda x: np.stack([x, x]), p.tree)), step=0)
    seen = []

    def fake_rows(env, act, params, carry0, tasks, keys, num_steps, **kw):
        seen.append(np.asarray(jax.random.key_data(keys)))
        s, k = keys.shape[:2]
        return np.zeros((s, k, num_steps), np.float32), np.zeros((s, k, num_steps), bool)

    monkeypatch.setattr(evaluate, "rollout_rows", fake_rows)
    cfg = config.load(None, ["eval.random_seeds=2"])
    env = envs.make("darkroom")
    tasks = envs.all_tasks("darkroom", "heldout")[:3]
    key = jax.random.key(5)
    evaluate.imitator_steps(two_seeds, env, tasks, key, 40, cfg, "t", False)
    evaluate.random_steps(env, tasks, key, 40, cfg, False)
    assert seen[0].shape[:2] == (2, 3)
    np.testing.assert_array_equal(seen[0], seen[1])


def test_eval_ablation_shuffled_trains_a_shuffled_control():
    cfg = config.load(None, ["teacher.total_env_steps=2000", "teacher.learning_starts=100",
                             "eval.ablation=shuffled", "eval.horizon_controls=true",
                             "imitator.ed_fraction=1.0"])
    roles = evaluate.plan(cfg).imitators
    assert roles["ablated"].imitator.variant == "shuffled"
    # test (b)'s twin trained to H is the same control
    assert (roles["ablated_h"].imitator.variant, roles["ablated_h"].imitator.horizon) == (
        "shuffled", 200)


def test_plan_takes_each_size_from_its_own_setting():
    # An explicit H sets test (b)'s span (horizon_factor x H, short of eval.env_steps here) and
    # eval.transfer_env_steps sets test (c)'s; with the defaults all three coincide, which hid a
    # size read from the wrong setting.
    base = ["teacher.total_env_steps=2000", "teacher.learning_starts=100",
            "imitator.context_len=20"]
    p = evaluate.plan(config.load(None, base + ["eval.horizon=100",
                                                "eval.transfer_env_steps=1000"]))
    assert (p.env_steps, p.horizon, p.horizon_steps, p.transfer_steps) == (2000, 100, 1000, 1000)
    # Each bound on H with its own message (the config alone cannot see the teacher's steps).
    for overrides, match in (
            (["eval.horizon=400"], r"eval.horizon: 400 x 10 exceeds the 2000 evaluation steps"),
            (["eval.horizon=2200", "eval.env_steps=30000"],
             r"eval.horizon: H = 2200 exceeds the teacher's 2000 env steps of history"),
            (["eval.horizon=10"], r"eval.horizon: H = 10 env steps is shorter than one "
                                  r"darkroom episode \(20\)"),
            (["eval.transfer_env_steps=40"], r"eval.transfer_env_steps: 40 env steps hold no "
                                             r"whole keydoor episode \(50\)"),
            (["eval.transfer_env_steps=100"], r"teacher.learning_starts: .*\(the evaluation's "
                                              r"fresh DQNs learn for 100 env steps\)")):
        with pytest.raises(ConfigError, match=match):
            evaluate.plan(config.load(None, base + overrides))


def test_two_training_tasks_or_two_learners_are_enough_to_hold_one_out():
    # The imitators hold out one of at least two (task, learner) histories; two are enough.
    base = ["teacher.total_env_steps=2000", "teacher.learning_starts=100"]
    for tasks, seeds in ((2, 1), (1, 2)):
        evaluate.plan(config.load(None, base + [f"env.train_tasks={tasks}",
                                                f"teacher.seeds={seeds}"]))


def test_each_agent_rolls_out_for_its_test_and_results_record_the_settings(tmp_path, monkeypatch):
    # An explicit H (3 episodes) short of eval.env_steps / horizon_factor, test (c) of another
    # length and a grid of a few points: with the defaults every rollout has one length, which
    # hid a length, grid or recorded setting taken from another test.
    cfg = config.load(None, [*FAKE_EVAL, "env.transfer=keydoor", "eval.horizon=60",
                             "eval.transfer_env_steps=300", "eval.curve_points=4",
                             "eval.mode=greedy", "eval.ablation=shuffled", "eval.final_frac=0.3",
                             "eval.confidence=0.9"])
    steps = []
    _fake_agents(monkeypatch, {}, [], steps=steps)
    results = evaluate.evaluate(cfg, tmp_path, progress=False, log=lambda msg: None)
    rolled = {(who, name): n for who, name, n in steps}
    assert len(rolled) == len(steps)  # each agent once per family
    assert rolled == {**{(w, "darkroom"): 400 for w in ("imitator", "ed", "ablated", "random",
                                                        "dqn")},
                      ("imitator_h", "darkroom"): 120,  # (H, 2 H]: nothing past 2 H is used
                      **{(w, "keydoor"): 300 for w in ("imitator", "ed", "ablated", "random",
                                                       "dqn")}}
    with np.load(tmp_path / "eval" / "curves.npz") as z:
        grids = {t: z[f"{t}.grid"].tolist() for t in "abc"}
    # test (b)'s stride is 3 episodes, not the 2 that 4 points ask for: a point at H = 60
    assert grids == {"a": [100, 200, 300, 400], "b": [60, 120], "c": [100, 200, 300]}
    assert not (tmp_path / "eval" / "parts").exists()  # finished: no part is kept
    tasks = np.asarray(evaluate.heldout_family(cfg)[1]).tolist()
    assert (results["horizon"], results["env_steps"], results["transfer_steps"]) == (60, 400, 300)
    assert (results["mode"], results["context_steps"], results["tasks"]) == ("greedy", 20,
                                                                           {"a": tasks})
    roles = evaluate.plan(cfg).imitators
    assert results["imitator_steps"] == dict.fromkeys(roles, 1)
    assert results["imitators"] == {role: {"tag": role} for role in roles}  # training_facts
    settings = ("transfer", "ablation", "horizon_factor", "bootstrap", "final_frac", "confidence")
    assert [results[s] for s in settings] == ["keydoor", "shuffled", 2, 20, 0.3, 0.9]
    tests = results["tests"]
    assert [tests[t]["markers"] for t in "abc"] == [{"context": 20, "horizon": None},
                                                    {"context": 20, "horizon": 60},
                                                    {"context": 20, "horizon": None}]
    held = {name: envs.spec(name).num_tasks["heldout"] for name in ("darkroom", "keydoor")}
    assert [tests[t]["heldout_tasks_available"] for t in "abc"] == [
        held["darkroom"], held["darkroom"], held["keydoor"]]
    assert tests["a"]["heldout_tasks_available"] != envs.spec("darkroom").num_tasks["train"]


def test_agents_act_by_the_env_mask_and_the_evaluation_settings(tmp_path, monkeypatch):
    # CartPole pads its 2 actions to 3: the random control never takes the padded one, and the
    # imitators act by the env's mask in eval.mode; random rows are eval.random_seeds, not
    # the fresh DQNs' count (both 2 by default).
    seen = []

    def fake_rows(env, act, params, carry0, tasks, keys, num_steps, **kw):
        seen.append((act, keys.shape[:2]))
        s, k = keys.shape[:2]
        return np.zeros((s, k, num_steps), np.float32), np.zeros((s, k, num_steps), bool)

    monkeypatch.setattr(evaluate, "rollout_rows", fake_rows)
    env = envs.make("CartPole-v1")
    cfg = config.load(None, ["eval.random_seeds=3", "eval.mode=greedy"])
    tasks = np.zeros((2, 0), np.int32)
    evaluate.random_steps(env, tasks, jax.random.key(0), 10, cfg, False)
    act, rows = seen[-1]
    assert rows == (3, 2)
    actions = jax.vmap(lambda k: act(None, (), None, k)[0])(jax.random.split(jax.random.key(1),
                                                                             300))
    assert set(np.asarray(actions).tolist()) == {0, 1}
    spec = envs.spec("darkroom")
    mcfg = model.ModelConfig(obs_shape=spec.obs_shape, obs_dtype=spec.obs_dtype,
                             num_actions=3, action_mask=(True, True, True), d_model=8,
                             n_layers=1, n_heads=1, context_len=4)
    p = model.init(mcfg, jax.random.key(0))
    one = types.SimpleNamespace(params=model.Params(mcfg, jax.tree.map(lambda x: x[None], p.tree)))
    evaluate.imitator_steps(one, env, tasks, jax.random.key(0), 10, cfg, "t", False)
    # imitator_policy returns one function per (mask, mode): the one of the env and eval.mode
    assert seen[-1][0] is evaluate.imitator_policy(env.spec.action_mask, "greedy")
    assert seen[-1][0] is not evaluate.imitator_policy(env.spec.action_mask, "sample")
    assert seen[-1][0] is not evaluate.imitator_policy(np.ones(3, bool), "greedy")


def test_the_evaluation_loads_each_imitators_best_checkpoint(tmp_path, monkeypatch):
    # The evaluated imitator is the one of lowest held-out loss (summary.json's best_step), as
    # the report describes it, not the last one trained.
    from climit.imitator import train as imitator_train

    cfg = config.load(None, ["teacher.total_env_steps=2000", "teacher.learning_starts=100"])
    roles = evaluate.plan(cfg).imitators
    for rcfg in roles.values():
        (tmp_path / "imitator" / imitator_train.tag(rcfg.imitator) / "checkpoints").mkdir(
            parents=True)
    loads = []
    monkeypatch.setattr(imitator_train, "fingerprint_matches", lambda saved, rcfg: True)
    monkeypatch.setattr(imitator_train, "load", lambda path, step="best", **kw: loads.append(
        (path.name, step)) or path.name)
    loaded = evaluate.load_imitators(tmp_path, roles)
    assert loaded == {r: imitator_train.tag(c.imitator) for r, c in roles.items()}
    assert sorted(loads) == sorted((imitator_train.tag(c.imitator), "best")
                                   for c in roles.values())


def test_a_stop_during_the_random_policy_or_a_fresh_dqn_stops_after_it(tmp_path, monkeypatch):
    # Each agent is a stop point (the fresh DQNs train for minutes): a stop asked while one
    # rolls out ends the evaluation right after it, that agent saved.
    cfg = config.load(None, [*FAKE_EVAL, "env.transfer="])
    _fake_agents(monkeypatch, {}, [])
    for agent in ("random_steps", "dqn_episodes"):
        fake = getattr(evaluate, agent)

        def asking(*a, fake=fake):
            os.kill(os.getpid(), signal.SIGTERM)
            return fake(*a)

        monkeypatch.setattr(evaluate, agent, asking)
        with stopping.watch(), pytest.raises(stopping.Stopped) as stop:
            evaluate.evaluate(cfg, tmp_path, progress=False, log=lambda msg: None)
        who = "random" if agent == "random_steps" else "fresh DQN"
        assert f"the evaluation after {who} on darkroom" in str(stop.value)
        assert (tmp_path / "eval" / "parts" / f"{who.replace(' ', '_')}_on_darkroom.npz").is_file()
        monkeypatch.setattr(evaluate, agent, fake)


def test_fresh_dqns_are_eval_dqn_seeds_learners_per_task(monkeypatch):
    # dqn_seeds (3 here) learners per task, learner g = r K + k on task k with its own key, each
    # a one-seed teacher of the evaluation's length; random_seeds (1) is the random control's.
    from climit.teacher import train as teacher_train

    seen = {}

    def fake_learners(tcfg, env, tasks_GxD, keys_Gx2, progress):
        seen.update(tcfg=tcfg, tasks=np.asarray(tasks_GxD), keys=np.asarray(keys_Gx2))
        g = len(tasks_GxD)
        return types.SimpleNamespace(episodes=(np.zeros((g, 1), np.float32),) * 4)

    monkeypatch.setattr(teacher_train, "train_learners", fake_learners)
    cfg = config.load(None, ["eval.dqn_seeds=3", "eval.random_seeds=1",
                             "teacher.learning_starts=100"])
    tasks = envs.all_tasks("darkroom", "heldout")[:2]
    ep = evaluate.dqn_episodes(cfg, envs.make("darkroom"), tasks, jax.random.key(4), 400, False)
    assert ep.returns.shape == (6, 1)
    np.testing.assert_array_equal(seen["tasks"], np.concatenate([tasks] * 3))
    assert len({tuple(k) for k in seen["keys"].tolist()}) == 6
    assert (seen["tcfg"].seeds, seen["tcfg"].total_env_steps) == (1, 400)


def test_only_an_evaluation_made_otherwise_is_said_to_be_replaced(tmp_path):
    # Nothing is said for a first evaluation or one of the same config; another run.seed is
    # named (it draws other tasks and keys), another run name is not (it changes no result).
    base = ["teacher.total_env_steps=2000", "teacher.learning_starts=100"]
    cfg = config.load(None, base)
    lines = []
    evaluate._log_replaced(cfg, tmp_path, lines.append)
    (tmp_path / "eval").mkdir()
    for made_with in (cfg, config.load(None, base + ["run.seed=1", "run.name=other"])):
        (tmp_path / "eval" / "results.json").write_text(json.dumps(
            {"fingerprint": evaluate.fingerprint(made_with), "config": config.to_dict(made_with)}))
        evaluate._log_replaced(cfg, tmp_path, lines.append)
    assert lines == [f"evaluate: replacing the evaluation in {tmp_path / 'eval'}, made with "
                     f"run.seed: 1 -> 0"]


def test_an_evaluation_made_before_a_field_existed_names_the_field_at_its_default(tmp_path):
    # results.json of a climit without eval.transfer_tasks: that run had the default (0), so
    # the replaced evaluation says 0 -> 3, not None -> 3.
    base = ["teacher.total_env_steps=2000", "teacher.learning_starts=100"]
    cfg = config.load(None, base + ["eval.transfer_tasks=3"])
    older = config.to_dict(config.load(None, base))
    del older["eval"]["transfer_tasks"]
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "results.json").write_text(json.dumps(
        {"fingerprint": "an older one", "config": older}))
    lines = []
    evaluate._log_replaced(cfg, tmp_path, lines.append)
    assert lines == [f"evaluate: replacing the evaluation in {tmp_path / 'eval'}, made with "
                     f"eval.transfer_tasks: 0 -> 3"]


def test_a_rollout_of_no_steps_is_refused_by_name():
    # Zero steps would leave no chunk to fetch (a TypeError deep in the loop): said plainly.
    env = envs.make("darkroom")
    tasks = envs.all_tasks("darkroom", "heldout")[:1]
    with pytest.raises(ValueError, match="num_steps must be >= 1, got 0"):
        evaluate.rollout_rows(env, rollout.random_policy(env.spec.action_mask), None, (), tasks,
                              evaluate._keys(jax.random.key(0), 1, 1), 0, params_batched=False)


def test_a_last_chunk_shorter_than_chunk_steps_ends_at_num_steps():
    # 50 steps in chunks of 20: the last chunk is 10 steps, and the signals are those of one
    # 50-step chunk (the state carries across chunks), not 60 steps.
    env = envs.make("darkroom")
    tasks = envs.all_tasks("darkroom", "heldout")[:2]
    act = evaluate._random_policy(tuple(bool(m) for m in env.spec.action_mask))
    keys = evaluate._keys(jax.random.key(2), 2, 2)
    run = lambda chunk: evaluate.rollout_rows(env, act, None, (), tasks, keys, 50,  # noqa: E731
                                              chunk_steps=chunk, params_batched=False)
    (r20, d20), (r50, d50) = run(20), run(50)
    assert r20.shape == d20.shape == (2, 2, 50)
    np.testing.assert_array_equal(r20, r50)
    np.testing.assert_array_equal(d20, d50)
    assert d20.sum() == 2 * 2 * 2  # each row's episodes end at steps 20 and 40


def test_training_facts_say_what_each_role_learned_from(tmp_path):
    # Per role: its summary's offline measures (nothing else of it), what of each history it
    # learned from and its own subsample (ED keeps every episode; the others every 2nd here).
    cfg = config.load(None, ["teacher.total_env_steps=2000", "teacher.learning_starts=100",
                             "imitator.subsample=2", "imitator.context_len=10"])
    roles = evaluate.plan(cfg).imitators
    (tmp_path / "imitator" / "ad").mkdir(parents=True)
    (tmp_path / "imitator" / "ad" / "summary.json").write_text(json.dumps(
        {"tag": "ad", "seeds": 2, "heldout_loss": 0.5, "fingerprint": "f", "best_step": 5}))
    facts = evaluate.training_facts(tmp_path, roles)
    assert facts["imitator"] == {"tag": "ad", "seeds": 2, "heldout_loss": 0.5,
                                 "data": "all 2000 env steps, 1 episode in 2", "subsample": 2}
    assert facts["ed"] == {"data": "the last 10% of all 2000 env steps, every episode",
                           "subsample": 1}
    assert facts["imitator_h"] == {"data": "the first 200 env steps, 1 episode in 2",
                                   "subsample": 2}


def test_the_plan_refuses_what_the_evaluation_cannot_compare():
    # E envs per learner would shift every curve by a factor E against H and the windows (which
    # count a learner's env steps); a sweep's imitator would face a DQN of the base values.
    base = ["teacher.total_env_steps=2000", "teacher.learning_starts=100"]
    for extra, match in ((["teacher.num_envs=2"], "teacher.num_envs: .* needs one env per "
                                                  "learner, got 2"),
                         (["teacher.sweep={lr: [1e-3, 3e-4]}"], "teacher.sweep: .* evaluate one "
                                                                "point per run")):
        with pytest.raises(ConfigError, match=match):
            evaluate.plan(config.load(None, base + extra))


def test_each_role_too_short_for_a_sequence_gets_the_advice_that_fits_it():
    # Subsampling shortens every role's data but ED's; an H-role grows with H, not with the
    # teacher; ED's with ed_fraction; a test (b) control can also be left out.
    cfg = config.load(None, ["teacher.total_env_steps=2000", "teacher.learning_starts=100",
                             "imitator.subsample=2"])
    shorter = "lower imitator.context_len or imitator.train_windows"
    roles = {"imitator": ("ad", 0), "ed": ("ed", 0), "ablated": ("single_episode", 0),
             "imitator_h": ("ad", 200), "ed_h": ("ed", 200), "ablated_h": ("single_episode", 200)}
    advice = {role: evaluate._longer_data(role, evaluate.imitator_config(cfg, *how))
              for role, how in roles.items()}  # each role's config, as evaluate.plan makes it
    assert advice == {
        "imitator": f"{shorter}, lower imitator.subsample or raise teacher.total_env_steps",
        "ablated": f"{shorter}, lower imitator.subsample or raise teacher.total_env_steps",
        "ed": f"{shorter}, raise teacher.total_env_steps or raise imitator.ed_fraction",
        "imitator_h": f"{shorter}, lower imitator.subsample or raise eval.horizon",
        "ed_h": f"{shorter}, raise eval.horizon, raise imitator.ed_fraction or set "
                "eval.horizon_controls=false",
        "ablated_h": f"{shorter}, lower imitator.subsample, raise eval.horizon or set "
                     "eval.horizon_controls=false"}
