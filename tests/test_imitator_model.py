"""The imitator network: causality, sliding windows, ring-buffer KV cache, masking, jit."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from climit.imitator import model as M

GRID = dict(obs_shape=(2,), obs_dtype="uint8", num_actions=5, action_mask=(True,) * 4 + (False,))
FLOAT = dict(obs_shape=(3,), obs_dtype="float32", num_actions=3, action_mask=(True, True, True))


_init = jax.jit(M.init, static_argnums=0)
_forward = jax.jit(M.forward)


def cfg_(**kw):
    base = dict(GRID, d_model=32, n_layers=2, n_heads=4, context_len=8)
    base.update(kw)
    return M.ModelConfig(**base)


def tokens(cfg, B, T, seed=0, start_p=0.2):
    rng = np.random.default_rng(seed)
    if cfg.obs_dtype == "uint8":
        obs = rng.integers(0, 9, (B, T) + cfg.obs_shape).astype(np.uint8)
    else:
        obs = rng.normal(size=(B, T) + cfg.obs_shape).astype(np.float32)
    return M.Tokens(obs=jnp.asarray(obs),
                    prev_action=jnp.asarray(rng.integers(-1, sum(cfg.action_mask), (B, T)),
                                            jnp.int32),
                    prev_reward=jnp.asarray(rng.random((B, T)), jnp.float32),
                    episode_start=jnp.asarray(rng.random((B, T)) < start_p))


def decode_all(params, toks):
    """Logits of every step by feeding tokens one at a time through the KV cache: [B, T, A]."""
    B = toks.prev_action.shape[0]

    def body(cache, tok):
        logits, cache = M.decode_step(params, cache, tok)
        return cache, logits

    _, logits = jax.lax.scan(body, M.init_cache(params, B),
                             jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), toks))
    return jnp.swapaxes(logits, 0, 1)


def reward_jacobian(params, toks, b=0):
    """d logits[b, t, :].sum() / d prev_reward[b, t'] as [T, T'] (float inputs: exact zeros)."""
    def f(r):
        return M.forward(params, toks._replace(prev_reward=r))[b].sum(-1)
    return np.asarray(jax.jit(jax.jacrev(f))(toks.prev_reward)[:, b])


def test_causal_gradient_of_step_t_wrt_later_inputs_is_exactly_zero():
    cfg = cfg_(**FLOAT, context_len=16)
    params = _init(cfg, jax.random.key(0))
    toks = tokens(cfg, 2, 12)
    J = reward_jacobian(params, toks)
    assert np.all(J[np.triu_indices(12, k=1)] == 0.0)
    assert np.all(np.abs(np.diag(J)) > 0) and np.abs(J[11, :11]).max() > 0

    def g(obs):
        return M.forward(params, toks._replace(obs=obs))[0, 5].sum()
    grad_obs = np.asarray(jax.jit(jax.grad(g))(toks.obs))
    assert np.all(grad_obs[0, 6:] == 0.0) and np.abs(grad_obs[0, :6]).max() > 0
    assert np.all(grad_obs[1] == 0.0)  # other sequences of the batch never mix


def test_one_layer_attends_to_exactly_the_last_context_len_steps():
    cfg = cfg_(**FLOAT, n_layers=1, context_len=4)
    params = _init(cfg, jax.random.key(1))
    J = reward_jacobian(params, tokens(cfg, 1, 10))
    for t in range(10):
        inside = np.arange(10)[(np.arange(10) <= t) & (np.arange(10) > t - 4)]
        outside = np.setdiff1d(np.arange(10), inside)
        assert np.all(J[t, outside] == 0.0), t
        assert np.all(np.abs(J[t, inside]) > 0), t


def test_two_layers_reach_back_two_windows():
    cfg = cfg_(**FLOAT, n_layers=2, context_len=4)
    params = _init(cfg, jax.random.key(2))
    J = reward_jacobian(params, tokens(cfg, 1, 12))
    assert np.all(J[11, :5] == 0.0)  # beyond 2 * (4 - 1) steps back
    assert np.abs(J[11, 5]).max() > 0


@pytest.mark.parametrize("episode_local", [False, True])
def test_kv_cache_equals_full_forward_before_and_after_many_wraps(episode_local):
    cfg = cfg_(context_len=8, episode_local=episode_local)
    params = _init(cfg, jax.random.key(3))
    toks = tokens(cfg, 3, 8 * 6 + 3)  # the ring buffer wraps six times
    full = jax.jit(M.forward)(params, toks)
    cached = jax.jit(decode_all)(params, toks)
    np.testing.assert_allclose(cached, full, rtol=1e-5, atol=1e-5)
    # before wrapping, the cache also equals a forward pass over the prefix alone
    prefix = jax.jit(M.forward)(params, jax.tree.map(lambda x: x[:, :8], toks))
    np.testing.assert_allclose(cached[:, :8], prefix, rtol=1e-5, atol=1e-5)


def test_one_layer_cache_equals_a_fresh_pass_over_the_last_window():
    cfg = cfg_(n_layers=1, context_len=5)
    params = _init(cfg, jax.random.key(4))
    toks = tokens(cfg, 2, 23)
    cached = jax.jit(decode_all)(params, toks)
    for t in (4, 5, 11, 22):
        window = jax.tree.map(lambda x: x[:, t - 4:t + 1], toks)
        np.testing.assert_allclose(cached[:, t], _forward(params, window)[:, -1], rtol=1e-5,
                                   atol=1e-5)


def test_cache_streams_are_independent_and_keep_their_own_step_counts():
    """Stream 1 joins 3 steps after stream 0; each gets the logits of its own history."""
    cfg = cfg_(context_len=4)
    params = _init(cfg, jax.random.key(5))
    toks = tokens(cfg, 2, 11)
    cache = M.init_cache(params, 2)
    step = jax.jit(M.decode_step)
    for t in range(11):
        tok = jax.tree.map(lambda x: jnp.stack([x[0, t], x[1, max(t - 3, 0)]]), toks)
        logits, new = step(params, cache, tok)
        if t < 3:  # stream 1 has not started: keep its empty cache
            new = jax.tree.map(lambda n, o: jnp.concatenate([n[:1], o[1:]]), new, cache)
        cache = new
    assert cache.t_B.tolist() == [11, 8]
    # references by causal forward passes: stream 1's first 8 tokens sit at positions 0..7
    ref = _forward(params, toks._replace(**{f: jnp.stack([getattr(toks, f)[0], jnp.concatenate(
        [getattr(toks, f)[1, :8], getattr(toks, f)[1, :3]])]) for f in toks._fields}))
    np.testing.assert_allclose(logits[0], ref[0, 10], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(logits[1], ref[1, 7], rtol=1e-5, atol=1e-5)


def test_episode_local_model_sees_only_the_current_episode():
    cfg = cfg_(**FLOAT, context_len=16, episode_local=True)
    params = _init(cfg, jax.random.key(6))
    toks = tokens(cfg, 1, 10, start_p=0.0)
    starts = np.zeros((1, 10), bool)
    starts[0, [0, 4]] = True
    toks = toks._replace(episode_start=jnp.asarray(starts))
    J = reward_jacobian(params, toks)
    assert np.all(J[4:, :5] == 0.0)  # prev_reward at the episode start (4) is blanked too
    assert np.abs(J[9, 5:10]).min() > 0
    logits = _forward(params, toks)
    other = toks._replace(obs=toks.obs.at[0, :4].set(5.0))
    np.testing.assert_array_equal(_forward(params, other)[0, 4:], logits[0, 4:])
    # The action before the episode start (4) is blanked: every other value of it, so the edit
    # is never a no-op (the token drawn may already hold any one of them).
    for a in sorted(set(range(-1, cfg.num_actions)) - {int(toks.prev_action[0, 4])}):
        other = toks._replace(prev_action=toks.prev_action.at[0, 4].set(a))
        np.testing.assert_array_equal(_forward(params, other)[0, 4:], logits[0, 4:])


def test_invalid_actions_are_masked_and_logits_float32():
    cfg = cfg_()
    params = _init(cfg, jax.random.key(7))
    logits = _forward(params, tokens(cfg, 2, 6))
    assert logits.dtype == jnp.float32 and logits.shape == (2, 6, 5)
    probs = jax.nn.softmax(logits, -1)
    assert np.all(np.asarray(probs[..., 4]) == 0.0)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-6)


def test_jit_equals_no_jit():
    cfg = cfg_(n_layers=1)
    params = _init(cfg, jax.random.key(8))
    toks = tokens(cfg, 2, 6)
    np.testing.assert_allclose(_forward(params, toks), M.forward(params, toks), rtol=1e-5,
                               atol=1e-5)
    # (decode_step jitted == forward jitted == forward eager: see the KV-cache tests)


def test_dropout_only_with_a_key_and_changes_outputs():
    cfg = cfg_(dropout=0.5)
    params = _init(cfg, jax.random.key(9))
    toks = tokens(cfg, 1, 6)
    plain = _forward(params, toks)
    np.testing.assert_array_equal(plain, _forward(params, toks))
    a = _forward(params, toks, dropout_key=jax.random.key(0))
    b = _forward(params, toks, dropout_key=jax.random.key(1))
    assert not np.allclose(a, plain) and not np.allclose(a, b)


def test_seeds_vmap_over_stacked_params():
    cfg = cfg_()
    keys = jax.random.split(jax.random.key(10), 3)
    stacked = jax.vmap(lambda k: _init(cfg, k))(keys)
    toks = tokens(cfg, 2, 6)
    out = jax.jit(jax.vmap(M.forward, in_axes=(0, None)))(stacked, toks)
    for s in range(3):
        np.testing.assert_allclose(out[s], _forward(_init(cfg, keys[s]), toks), rtol=1e-5,
                                   atol=1e-6)
    assert not np.allclose(out[0], out[1])  # different seeds, different imitators


def test_bf16_compute_keeps_fp32_params_and_stays_close():
    cfg = cfg_()
    params = _init(cfg, jax.random.key(11))
    bf = M.Params(dataclasses.replace(cfg, compute_dtype="bfloat16"), params.tree)
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params.tree))
    toks = tokens(cfg, 2, 12)
    # bf16 matmuls and residual stream differ from f32 by ~1.3e-3 here (logits spread ~0.2)
    np.testing.assert_allclose(_forward(bf, toks), _forward(params, toks), atol=3e-3)
    assert all(k.dtype == jnp.bfloat16 for k in M.init_cache(bf, 1).k)
    np.testing.assert_allclose(jax.jit(decode_all)(bf, toks), _forward(bf, toks), atol=2e-3)


def test_rope_is_periodic_so_decoding_a_million_steps_on_equals_decoding_near_the_start():
    """Periodic RoPE: only t mod C enters the angles (no drift with absolute t)."""
    cfg = cfg_(context_len=4)
    params = _init(cfg, jax.random.key(12))
    toks = tokens(cfg, 1, 7)
    cache = M.init_cache(params, 1)
    far = cache.replace(t_B=jnp.array([1_000_004], jnp.int32))  # same slot as t = 4
    step = jax.jit(M.decode_step)
    outs = {}
    for name, c in (("near", cache.replace(t_B=jnp.array([4], jnp.int32))), ("far", far)):
        for t in range(7):  # same slots filled in the same order; only t differs by a multiple of C
            logits, c = step(params, c, jax.tree.map(lambda x: x[:, t], toks))
        outs[name] = logits
    np.testing.assert_allclose(outs["far"], outs["near"], rtol=1e-6, atol=1e-6)


# (context_len, head_dim): the ModelConfig and config-section defaults, the GPU benchmark's
# C=1024 with h=32, the tests' tiny ones, and cases that need the forced harmonic 1
ROPE_CASES = [(80, 16), (60, 16), (1024, 32), (256, 32), (4096, 64), (8, 8), (16, 8), (4, 8),
              (2, 8), (3, 4)]


@pytest.mark.parametrize("C, h", ROPE_CASES)
def test_rope_harmonics_are_integers_below_nyquist_and_include_1(C, h):
    k = M.rope_harmonics(C, h)
    assert k.dtype.kind == "i" and k.shape == (h // 2,)
    assert k.min() >= 0 and k.max() <= max(1, (C - 1) // 2) and 1 in k
    # the plain rounded geometric spectrum, unless it lacks the harmonic 1 (tiny head sizes)
    ideal = np.clip(np.rint(C * 10_000.0 ** (-np.arange(h // 2) / (h // 2)) / (2 * np.pi)), 0,
                    max(1, (C - 1) // 2))
    if 1 in ideal:
        np.testing.assert_array_equal(k, ideal)
    else:
        assert np.sum(k != ideal) == 1


def test_rope_harmonics_known_answers():
    np.testing.assert_array_equal(M.rope_harmonics(60, 16), [10, 3, 1, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(M.rope_harmonics(1024, 32)[:11],
                                  [163, 92, 52, 29, 16, 9, 5, 3, 2, 1, 1])
    np.testing.assert_array_equal(M.rope_harmonics(16, 8), [3, 1, 0, 0])  # 1 forced
    np.testing.assert_array_equal(M.rope_harmonics(2, 8), [1, 0, 0, 0])  # 1 forced


@pytest.mark.parametrize("C, h", ROPE_CASES)
def test_every_distance_in_the_window_is_a_distinct_rotation(C, h):
    # Rotations form a group, so distances d != d' turn alike iff d - d' turns like 0: compare
    # every distance 1..C-1 with distance 0 (the identity row), directly in float64.
    cos_Cxh, sin_Cxh = M.rope_table(C, h)
    np.testing.assert_array_equal(cos_Cxh[0], 1.0)
    moved = (cos_Cxh[1:].astype(np.float64) - 1) ** 2 + sin_Cxh[1:].astype(np.float64) ** 2
    assert moved.sum(-1).min() > 1e-6  # >= (2*pi/C)^2 from the harmonic 1 alone
    # the same in exact integers: no distance 0 < d < C turns every pair by a multiple of 2*pi
    assert np.gcd.reduce(np.append(M.rope_harmonics(C, h), C)) == 1


def test_rope_of_t_mod_context_equals_the_exact_angle_up_to_ten_million_steps():
    cfg = cfg_(d_model=64, n_heads=2, context_len=60)  # h = 32
    theta = 2 * np.pi * M.rope_harmonics(60, 32).astype(np.float64) / 60
    t = np.array([0, 1, 59, 60, 61, 1234, 99_991, 1_000_003, 9_999_999, 10_000_000, 10_000_037])
    cos, sin = jax.jit(lambda p: M._rope_angles(cfg, p))(jnp.asarray(t, jnp.int32))
    angle = t[:, None].astype(np.float64) * theta  # float64: exact enough at 1e7 * 2pi
    np.testing.assert_allclose(cos, np.cos(angle), atol=1e-6)
    np.testing.assert_allclose(sin, np.sin(angle), atol=1e-6)
    x = np.random.default_rng(0).normal(size=(len(t), 3, 32)).astype(np.float32)
    rotated = np.asarray(M._rotate(jnp.asarray(x), cos, sin), np.float64)
    x1, x2, c, s = x[..., :16], x[..., 16:], np.cos(angle)[:, None], np.sin(angle)[:, None]
    exact = np.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], -1)
    np.testing.assert_allclose(rotated, exact, atol=1e-5)


def test_cache_layout_and_keys_stored_rotated_by_their_slot():
    """Each layer's cache is its own [B, C, N, h] array; a cached key is the raw key of its
    token rotated ONCE by the angles of its slot (so decoding never re-rotates the cache)."""
    cfg = cfg_(context_len=4)
    params = _init(cfg, jax.random.key(14))
    B, T, C = 2, 11, 4  # the ring wraps twice
    toks = tokens(cfg, B, T)

    def run(params, toks):
        def body(cache, tok):
            return M.decode_step(params, cache, tok)[1], None
        return jax.lax.scan(body, M.init_cache(params, B),
                            jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), toks))[0]

    cache = jax.jit(run)(params, toks)
    assert isinstance(cache.k, tuple) and len(cache.k) == len(cache.v) == cfg.n_layers
    assert all(x.shape == (B, C, cfg.n_heads, cfg.head_dim) for x in cache.k + cache.v)

    def layer0_keys(params, toks):  # raw (un-rotated) keys of layer 0: [B, T, N, h]
        module = M._module(params)
        return module.blocks()[0].qkv_heads(module.embed(toks))[1]

    raw = jax.jit(layer0_keys)(params, toks)
    last = np.arange(T - C, T)  # the tokens still in the ring, slot t % C
    cos, sin = M._rope_angles(cfg, jnp.asarray(last))
    want = M._rotate(raw[:, last], cos[None], sin[None])
    got = cache.k[0][:, last % C]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    assert np.abs(np.asarray(got) - np.asarray(raw[:, last])).max() > 1e-3  # rotation is real
    one = jax.tree.map(lambda x: x[1], cache)  # stream 1's cache: leading axis B everywhere
    np.testing.assert_array_equal(one.k[0], cache.k[0][1])


def test_config_checks():
    with pytest.raises(ValueError):
        cfg_(d_model=30, n_heads=4)
    with pytest.raises(ValueError):
        cfg_(d_model=12, n_heads=4)  # odd head size: no RoPE pairs
    assert cfg_().categorical_obs and not cfg_(**FLOAT).categorical_obs
    assert M.attention_impl(cfg_(compute_dtype="bfloat16"), backend="gpu") == "cudnn"
    assert M.attention_impl(cfg_(compute_dtype="float32"), backend="gpu") == "xla"
    assert M.attention_impl(cfg_(compute_dtype="bfloat16", d_model=24, n_heads=4),
                            backend="gpu") == "xla"
    assert M.attention_impl(cfg_(compute_dtype="bfloat16"), backend="cpu") == "xla"
    # The single-episode ablation's mask fails cuDNN's batching rule under the vmap over seeds
    # (seen on an H200, jax 0.11.2): auto gives it XLA, a config may still ask for cuDNN.
    assert M.attention_impl(cfg_(compute_dtype="bfloat16", episode_local=True),
                            backend="gpu") == "xla"
    assert M.attention_impl(cfg_(compute_dtype="bfloat16", episode_local=True, attention="cudnn"),
                            backend="gpu") == "cudnn"
    assert M.resolve_compute_dtype("auto", "gpu") == "bfloat16"
    assert M.resolve_compute_dtype("auto", "cpu") == "float32"


def test_model_config_takes_every_model_setting_of_the_imitator_section():
    from types import SimpleNamespace

    from climit import config

    spec = SimpleNamespace(**GRID)
    icfg = config.ImitatorConfig(variant="single_episode", context_len=12, d_model=48,
                                 n_layers=3, n_heads=6, mlp_ratio=2, dropout=0.25,
                                 use_reward=False, compute_dtype="bfloat16", attention="xla")
    assert M.model_config(icfg, spec) == M.ModelConfig(
        **GRID, d_model=48, n_layers=3, n_heads=6, mlp_ratio=2, context_len=12, dropout=0.25,
        episode_local=True, use_reward=False, compute_dtype="bfloat16", attention="xla")
    assert not M.model_config(config.ImitatorConfig(), spec, backend="cpu").episode_local


def test_a_model_option_added_to_both_configs_reaches_the_network(monkeypatch):
    # A field that ImitatorConfig and ModelConfig both gain needs no line in model_config:
    # were it left out there, `imitator.X=...` would change the fingerprint and retrain, with
    # the network at ModelConfig's default and nothing to say so.
    from types import SimpleNamespace

    from climit import config

    model_cls = dataclasses.make_dataclass("WithNorm", [("norm", str, "pre")],
                                           bases=(M.ModelConfig,), frozen=True)
    icfg_cls = dataclasses.make_dataclass("WithNorm", [("norm", str, "pre")],
                                          bases=(config.ImitatorConfig,), frozen=True)
    monkeypatch.setattr(M, "ModelConfig", model_cls)
    assert M.model_config(icfg_cls(norm="post"), SimpleNamespace(**GRID)).norm == "post"


def test_policy_rollout_takes_the_actions_of_full_recomputation():
    """The KV-cached imitator agent, stepped through the project's rollout far past its context,
    acts exactly like recomputing the whole trajectory with a full forward pass."""
    from climit import envs, rollout
    from climit.imitator import policy

    env = envs.make("darkroom")
    cfg = cfg_(context_len=8)
    params = random_tree(_init(cfg, jax.random.key(13)))  # logits that depend on every input
    act, cache0 = policy.policy(params, "greedy")
    steps = 50  # 2.5 episodes, 6 wraps of the cache
    run = jax.jit(lambda p, k: rollout.rollout(env, act, p, cache0, jnp.array([2, 7], jnp.int32),
                                               k, steps, record=rollout.full))
    cache, tr = run(params, jax.random.key(0))
    assert int(cache.t_B[0]) == steps
    done = np.asarray(tr.terminated | tr.truncated)
    starts = np.concatenate([[True], done[:-1]])
    toks = policy.trajectory_tokens(tr.obs, tr.action, tr.reward, starts)
    logits = _forward(params, toks)[0]
    mask = jnp.asarray(cfg.action_mask)
    recomputed = jax.vmap(lambda l: rollout.masked_argmax(l, mask))(logits)
    np.testing.assert_array_equal(np.asarray(tr.action), np.asarray(recomputed))
    assert len(set(np.asarray(tr.action).tolist())) > 1



def test_policy_never_takes_an_action_the_acting_env_lacks():
    """An imitator of 3 real actions acting in an env of 2 (Acrobot -> CartPole share the control
    interface): its preferred action 2 is left out of both greedy and sampled choices."""
    from climit import rollout
    from climit.imitator import policy

    params = _init(cfg_(**FLOAT, context_len=4), jax.random.key(0))
    tree = jax.tree.map(lambda x: x, params.tree)
    tree["head"]["bias"] = jnp.array([0.0, 0.0, 100.0])  # action 2 all but certain
    params = M.Params(params.cfg, tree)
    inp = rollout.PolicyInput(obs=jnp.zeros(3), prev_action=jnp.int32(-1),
                              prev_reward=jnp.float32(0.0), episode_start=jnp.array(True))
    free, cache = policy.policy(params, "greedy")
    assert int(free(params, cache, inp, jax.random.key(1))[0]) == 2  # without an env mask
    for mode in ("greedy", "sample"):
        act, cache = policy.policy(params, mode, env_mask=np.array([True, True, False]))
        actions = jax.vmap(lambda k: act(params, cache, inp, k)[0])(
            jax.random.split(jax.random.key(2), 64))
        assert not np.any(np.asarray(actions) == 2), mode
        assert mode == "greedy" or len(set(np.asarray(actions).tolist())) == 2  # both remain


@pytest.mark.parametrize("env_mask", [None, (True, True, True)], ids=["own_env", "env_of_more"])
def test_policy_keeps_to_the_imitators_own_actions_even_below_the_masked_logit(env_mask):
    """The policy masks with ``cfg.action_mask`` itself, not only through the model's
    MASKED_LOGIT: real logits of -1e10 (below the -1e9 a padded action gets) still never let
    the padded action 2 be taken, greedy or sampled. ``env_of_more``: the other direction of
    the new-family test, an imitator of 2 real actions (CartPole) acting in an env of 3
    (Acrobot); the env allows action 2, the imitator never learnt it."""
    from climit import rollout
    from climit.imitator import policy

    cfg = cfg_(**dict(FLOAT, action_mask=(True, True, False)), context_len=4)
    params = _init(cfg, jax.random.key(0))
    tree = jax.tree.map(lambda x: x, params.tree)
    tree["head"]["bias"] = jnp.array([-1e10, -1e10, 0.0])
    params = M.Params(params.cfg, tree)
    inp = rollout.PolicyInput(obs=jnp.zeros(3), prev_action=jnp.int32(-1),
                              prev_reward=jnp.float32(0.0), episode_start=jnp.array(True))
    mask = None if env_mask is None else np.array(env_mask)
    for mode in ("greedy", "sample"):
        act, cache = policy.policy(params, mode, env_mask=mask)
        actions = jax.vmap(lambda k: act(params, cache, inp, k)[0])(
            jax.random.split(jax.random.key(2), 16))
        assert set(np.asarray(actions).tolist()) <= {0, 1}, mode


def test_policy_modes_and_the_shared_act_function():
    """Equal logits (a zero action head): greedy takes the lowest index, 0, every time; the
    default mode samples, meeting all three actions in 64 draws (each missed with chance
    (2/3)^64). A mode other than the two is refused, and the same mode and mask give the same
    act function (one compilation for every imitator acting alike)."""
    from climit import rollout
    from climit.imitator import policy

    params = _init(cfg_(**FLOAT, context_len=4), jax.random.key(0))
    tree = jax.tree.map(lambda x: x, params.tree)
    tree["head"] = jax.tree.map(jnp.zeros_like, tree["head"])
    params = M.Params(params.cfg, tree)
    inp = rollout.PolicyInput(obs=jnp.zeros(3), prev_action=jnp.int32(-1),
                              prev_reward=jnp.float32(0.0), episode_start=jnp.array(True))
    keys = jax.random.split(jax.random.key(3), 64)
    for (act, cache), want in (((policy.policy(params, "greedy")), {0}),
                               ((policy.policy(params)), {0, 1, 2})):
        actions = jax.vmap(lambda k: act(params, cache, inp, k)[0])(keys)
        assert set(np.asarray(actions).tolist()) == want
    for mode in ("best", "Greedy", "argmax"):
        with pytest.raises(ValueError, match=f"mode must be 'greedy' or 'sample', got '{mode}'"):
            policy.act_fn(mode)
    mask = np.array([1, 1, 0])
    assert policy.policy(params, "sample", mask)[0] is policy.act_fn("sample", (True, True, False))
    assert policy.act_fn("greedy") is policy.act_fn("greedy") is not policy.act_fn("sample")


# FLOP counts. The shared config (GRID, d 32, 2 layers, MLP x4, context 8) by hand:
# per layer qkv 2*32*96 = 6144, out 2*32*32 = 2048, MLP 2*32*128 + 2*128*32 = 16384: 24576
# dense, and 4*32 = 128 per attended key (scores and values); per token the action head
# 2*32*5 = 320 and the categorical observation lookup 2*32 = 64.

def test_flops_per_token_known_answers():
    cfg = cfg_()
    # T = 8 = C, plain causal: query t sees t + 1 keys, 36 over 8 queries = 4.5 each
    assert M.flops_per_token(cfg, 8, training=False) == 2 * (24576 + 128 * 4.5) + 384 == 50688
    assert M.flops_per_token(cfg, 8) == 3 * 50688  # forward + backward
    # T = 4 < C: 1 + 2 + 3 + 4 = 10 keys over 4 queries = 2.5 each
    assert M.flops_per_token(cfg, 4, training=False) == 2 * (24576 + 128 * 2.5) + 384 == 50176
    # T = 16 > C, banded: queries 0..7 see 1..8 keys (36), queries 8..15 see 8 each (64):
    # 100 over 16 queries = 6.25 each
    assert M.flops_per_token(cfg, 16, training=False) == 2 * (24576 + 128 * 6.25) + 384 == 51136
    assert M.flops_per_token(cfg, 16) == 3 * 51136
    # without the causal discount (PaLM / nanoGPT): every query against all 8 keys of its window
    assert M.flops_per_token(cfg, 8, training=False, causal=False) == 2 * (24576 + 128 * 8) + 384
    assert M.flops_per_token(cfg, 16, training=False, causal=False) == 2 * (24576 + 128 * 8) + 384
    # a linear observation embedding: 6 float entries -> 2*32*6 = 384; head 2*32*3 = 192
    linear = cfg_(**dict(FLOAT, obs_shape=(6,)))
    assert M.flops_per_token(linear, 8, training=False) == 2 * (24576 + 128 * 4.5) + 576 == 50880


def _cost_flops(fn, *args) -> float:
    """XLA's FLOP count of ``fn`` compiled for abstract ``args``."""
    cost = jax.jit(fn).lower(*args).compile().cost_analysis()
    return float((cost[0] if isinstance(cost, list) else cost)["flops"])


@pytest.mark.parametrize("T", [16, 32])  # T = C (plain causal) and T = 2C (banded)
def test_flops_per_token_agree_with_xla_cost_analysis(T):
    """XLA's own count of the compiled forward pass, and of forward + backward, matches
    :func:`M.flops_per_token` once two known differences are accounted for: XLA's attention
    computes the whole T x T score square and masks it afterwards (4*D per masked-out key per
    layer, counted here from the mask itself), and it counts elementwise work (norms, RoPE,
    softmax, GELU, residuals) that flops_per_token leaves out: 2-9% at these sizes on CPU,
    hence the bound of 15% above."""
    cfg = cfg_(d_model=64, n_layers=2, n_heads=4, context_len=16)
    B, d, C = 2, cfg.d_model, cfg.context_len
    q, k = np.arange(T)[:, None], np.arange(T)[None, :]
    attended = ((k <= q) & (k > q - C)).sum() / T  # mean keys per query under the band
    masked = cfg.n_layers * 4 * d * (T - attended)  # computed by XLA, then masked out
    toks = M.Tokens(obs=jax.ShapeDtypeStruct((B, T, 2), jnp.uint8),
                    prev_action=jax.ShapeDtypeStruct((B, T), jnp.int32),
                    prev_reward=jax.ShapeDtypeStruct((B, T), jnp.float32),
                    episode_start=jax.ShapeDtypeStruct((B, T), jnp.bool_))
    params = M.abstract(cfg)
    fwd = _cost_flops(M.forward, params, toks) / (B * T)
    ratio = fwd / (M.flops_per_token(cfg, T, training=False) + masked)
    assert 1.0 <= ratio <= 1.15, ratio
    grad = jax.grad(lambda tree, t: M.forward(M.Params(cfg, tree), t).sum())
    train = _cost_flops(grad, params.tree, toks) / (B * T)
    ratio = train / (M.flops_per_token(cfg, T) + 3 * masked)
    assert 1.0 <= ratio <= 1.15, ratio


@pytest.mark.parametrize("refuse", [False, True])
def test_forward_runs_the_attention_that_attention_used_reports(fake_gpu_attention, refuse):
    import warnings

    cfg = cfg_(n_layers=2)
    params = _init(cfg, jax.random.key(0))
    toks = tokens(cfg, 2, 12)
    want = np.asarray(_forward(params, toks))  # real XLA attention
    calls = fake_gpu_attention(refuse)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = M.forward(params, toks)  # eagerly: traced anew, under the fake
        M.forward(params, toks)  # the decision is made once per shape
    used = "xla" if refuse else "cudnn"
    assert M.attention_used(cfg, 2, 12) == used
    # the probe asks for cuDNN (forward, then backward unless the forward was refused); then
    # every layer of both passes runs what was reported
    probes = ["cudnn"] if refuse else ["cudnn", "cudnn"]
    assert calls == probes + [used] * (2 * cfg.n_layers)
    fallbacks = [w for w in caught if issubclass(w.category, M.AttentionFallback)]
    assert len(fallbacks) == int(refuse)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def random_tree(params, seed=0, scale=0.5):
    """``params`` with every entry redrawn from N(0, scale^2): norm scales other than 1 and
    nonzero biases, so a reference must use each parameter as documented to match."""
    leaves, treedef = jax.tree.flatten(params.tree)
    rng = np.random.default_rng(seed)
    new = [jnp.asarray(rng.normal(0, scale, x.shape), jnp.float32) for x in leaves]
    return M.Params(params.cfg, jax.tree.unflatten(treedef, new))


def test_token_is_the_documented_sum_of_embeddings():
    """token = E_obs(obs) + E_act(prev_action) + w_r * prev_reward + E_start(episode_start):
    one table row per (entry, value) of a small uint8 observation (so (1, 2) != (2, 1)), action
    row A for "none" (-1) and never for action 0, the reward term gone with use_reward off."""
    params = random_tree(_init(cfg_(), jax.random.key(20)))
    t = params.tree
    toks = M.Tokens(obs=jnp.array([[1, 2], [2, 1], [0, 0], [7, 3]], jnp.uint8),
                    prev_action=jnp.array([0, -1, 3, 0], jnp.int32),
                    prev_reward=jnp.array([0.5, 1.0, -2.0, 0.0], jnp.float32),
                    episode_start=jnp.array([False, True, False, True]))
    obs_rows = np.asarray(toks.obs, int) + np.array([0, 256])
    action_rows = np.where(np.asarray(toks.prev_action) < 0, 5, np.asarray(toks.prev_action))
    no_reward = (np.asarray(t["obs_embed"]["embedding"])[obs_rows].sum(1)
                 + np.asarray(t["action_embed"]["embedding"])[action_rows]
                 + np.asarray(t["start_embed"]["embedding"])[np.asarray(toks.episode_start, int)])
    want = no_reward + np.asarray(toks.prev_reward)[:, None] * np.asarray(t["reward_embed"])
    embed = lambda p, tok: M._module(p).embed(tok)  # noqa: E731
    np.testing.assert_allclose(embed(params, toks), want, rtol=1e-6, atol=1e-6)
    blind = M.Params(dataclasses.replace(params.cfg, use_reward=False), params.tree)
    np.testing.assert_allclose(embed(blind, toks), no_reward, rtol=1e-6, atol=1e-6)
    assert np.abs(want - no_reward).max() > 0.1 and np.abs(want[0] - want[1]).max() > 0.1


def _np_rms_norm(scale, x):
    return x / np.sqrt(np.mean(x * x, -1, keepdims=True) + 1e-6) * scale


def reference_forward(params, toks):
    """The documented architecture in plain numpy (float64, T <= context, linear observation
    embedding): pre-norm blocks of RoPE attention (scale 1/sqrt(h)) and a tanh-GELU MLP, each
    residual; final RMSNorm; linear head; invalid actions at MASKED_LOGIT. [B, T, A]."""
    cfg, t = params.cfg, jax.tree.map(lambda a: np.asarray(a, np.float64), params.tree)
    B, T = toks.prev_action.shape
    N, h = cfg.n_heads, cfg.head_dim
    action_rows = np.where(toks.prev_action < 0, cfg.num_actions, toks.prev_action)
    x = (np.asarray(toks.obs, np.float64) @ t["obs_embed"]["kernel"] + t["obs_embed"]["bias"]
         + t["action_embed"]["embedding"][action_rows]
         + t["start_embed"]["embedding"][np.asarray(toks.episode_start, int)]
         + np.asarray(toks.prev_reward)[..., None] * t["reward_embed"])
    cos, sin = (np.asarray(a, np.float64)[:T, None] for a in M.rope_table(cfg.context_len, h))
    rope = lambda y: np.concatenate([y[..., :h // 2] * cos - y[..., h // 2:] * sin,  # noqa: E731
                                     y[..., h // 2:] * cos + y[..., :h // 2] * sin], -1)
    causal = np.tril(np.ones((T, T), bool))
    for i in range(cfg.n_layers):
        b = t[f"block{i}"]
        q, k, v = np.split(_np_rms_norm(b["norm1"], x) @ b["qkv"]["kernel"], 3, -1)
        q, k, v = (y.reshape(B, T, N, h) for y in (q, k, v))
        s = np.einsum("bqnh,bknh->bnqk", rope(q), rope(k)) / np.sqrt(h)
        p = np.exp(np.where(causal, s, -np.inf) - s.max(-1, keepdims=True))
        attn = np.einsum("bnqk,bknh->bqnh", p / p.sum(-1, keepdims=True), v).reshape(B, T, -1)
        x = x + attn @ b["proj"]["kernel"]
        u = _np_rms_norm(b["norm2"], x) @ b["up"]["kernel"] + b["up"]["bias"]
        gelu = 0.5 * u * (1 + np.tanh(np.sqrt(2 / np.pi) * (u + 0.044715 * u ** 3)))
        x = x + gelu @ b["down"]["kernel"] + b["down"]["bias"]
    logits = _np_rms_norm(t["norm_f"], x) @ t["head"]["kernel"] + t["head"]["bias"]
    return np.where(np.asarray(cfg.action_mask), logits, M.MASKED_LOGIT)


def test_forward_and_decoding_equal_a_numpy_reference_of_the_documented_architecture():
    cfg = cfg_(**dict(FLOAT, action_mask=(True, True, False)), context_len=8)
    params = random_tree(_init(cfg, jax.random.key(21)), seed=1)
    toks = tokens(cfg, 2, 7)
    want = reference_forward(params, jax.tree.map(np.asarray, toks))
    np.testing.assert_allclose(_forward(params, toks), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(jax.jit(decode_all)(params, toks), want, rtol=1e-5, atol=1e-5)
    assert np.ptp(want[..., :2]) > 1.0  # logits that differ: a wrong layer would show


def test_dropout_keeps_one_minus_rate_of_the_entries_scaled_by_its_inverse():
    x = jnp.full((200, 100), 3.0, jnp.float32)
    out = np.asarray(M._dropout(x, 0.2, jax.random.key(0)))
    kept = out != 0
    np.testing.assert_allclose(out[kept], 3.0 / 0.8, rtol=1e-6)  # E[out] = x
    assert abs(kept.mean() - 0.8) < 0.012  # 4 binomial s.d. of 20000 draws = 0.011
    np.testing.assert_array_equal(M._dropout(x, 0.2, None), x)  # no key: identity


def test_policy_token_forces_none_on_an_empty_cache_only():
    """The first token of an empty cache has no previous step (prev_action -1, reward 0),
    whatever the caller's input says; from the second on the input passes through."""
    from climit import rollout
    from climit.imitator import policy

    cache = M.init_cache(cfg_(), 1)
    inp = rollout.PolicyInput(obs=jnp.array([3, 4], jnp.uint8), prev_action=jnp.int32(2),
                              prev_reward=jnp.float32(0.5), episode_start=jnp.array(False))
    first = policy.token(cache, inp)
    later = policy.token(cache.replace(t_B=jnp.array([1], jnp.int32)), inp)
    assert (first.prev_action.tolist(), first.prev_reward.tolist()) == ([-1], [0.0])
    assert (later.prev_action.tolist(), later.prev_reward.tolist()) == ([2], [0.5])
    for tok in (first, later):  # a batch of 1, observation and start unchanged
        np.testing.assert_array_equal(tok.obs, [[3, 4]])
        assert tok.episode_start.tolist() == [False] and tok.prev_action.dtype == jnp.int32


def test_trajectory_tokens_carry_the_previous_action_and_reward():
    from climit.imitator import policy

    toks = policy.trajectory_tokens(np.arange(8).reshape(4, 2), [3, 0, 2, 1], [0.0, 1.0, 0.5, 2.0],
                                    [True, False, True, False])
    assert toks.prev_action.tolist() == [[-1, 3, 0, 2]]
    assert toks.prev_reward.tolist() == [[0.0, 0.0, 1.0, 0.5]]
    assert toks.episode_start.tolist() == [[True, False, True, False]]
    np.testing.assert_array_equal(toks.obs, np.arange(8).reshape(1, 4, 2))


def test_rms_norm_of_a_bf16_stream_takes_its_statistics_in_float32():
    x = jnp.asarray(np.random.default_rng(0).normal(0, 3, (4, 64)), jnp.bfloat16)
    scale = jnp.linspace(0.5, 1.5, 64, dtype=jnp.float32)
    got = jax.jit(M._rms_norm)(scale, x)
    want = _np_rms_norm(np.asarray(scale), np.asarray(x, np.float64))  # the bf16 values exactly
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_block_drops_its_attention_and_mlp_outputs_with_independent_keys():
    """finish(x, attn) = x + drop(proj(attn), k1), then + drop(down(gelu(up(norm2(.)))), k2)
    with (k1, k2) = split(key): two different masks, not one mask used twice."""
    params = random_tree(_init(cfg_(dropout=0.5), jax.random.key(22)))
    block = M._module(params).blocks()[0]
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.normal(size=(3, 32)), jnp.float32)
    attn = jnp.asarray(rng.normal(size=(3, 4, 8)), jnp.float32)
    key = jax.random.key(5)
    k1, k2 = jax.random.split(key)
    mid = x + M._dropout(block.proj(attn.reshape(3, 32)), 0.5, k1)
    hidden = jax.nn.gelu(block.up(M._rms_norm(block.norm2[...], mid)))
    want = mid + M._dropout(block.down(hidden), 0.5, k2)
    np.testing.assert_allclose(block.finish(x, attn, 0.5, key), want, rtol=1e-6, atol=1e-6)
    keep1 = M._dropout(jnp.ones((3, 32)), 0.5, k1) != 0
    keep2 = M._dropout(jnp.ones((3, 32)), 0.5, k2) != 0
    assert not np.array_equal(keep1, keep2)


def test_forward_drops_the_token_embedding_and_each_block_with_its_own_key():
    """With a dropout key k, forward = its parts with keys split(k, n_layers + 1): keys[0]
    drops the token embedding, keys[i + 1] block i (never one key reused across layers)."""
    cfg = cfg_(dropout=0.5)
    params = random_tree(_init(cfg, jax.random.key(23)))
    toks, key = tokens(cfg, 2, 6), jax.random.key(6)
    model, keys = M._module(params), jax.random.split(key, cfg.n_layers + 1)
    cos, sin = M._rope_angles(cfg, jnp.arange(6))
    x = M._dropout(model.embed(toks), 0.5, keys[0])
    for block, k_i in zip(model.blocks(), keys[1:]):
        q, k, v = block.qkv_heads(x)
        attn = M._attention(M._rotate(q, cos, sin), M._rotate(k, cos, sin), v, None, None, "xla")
        x = block.finish(x, attn, 0.5, k_i)
    np.testing.assert_allclose(M.forward(params, toks, dropout_key=key), model.logits(x),
                               rtol=1e-6, atol=1e-6)


def test_residual_output_projections_start_at_the_scaled_down_init():
    # GPT-2 style: layers writing into the residual stream (proj, down) start at
    # N(0, (0.02 / sqrt(2 * n_layers))^2) = N(0, 0.01^2) for 2 layers, the rest at N(0, 0.02^2).
    t = _init(cfg_(d_model=64, n_layers=2), jax.random.key(24)).tree
    for name, std in [("proj", 0.01), ("down", 0.01), ("qkv", 0.02), ("up", 0.02)]:
        w = np.concatenate([np.ravel(t[f"block{i}"][name]["kernel"]) for i in range(2)])
        assert abs(w.std() / std - 1) < 0.05, (name, w.std())  # >= 8192 draws: s.e. < 1%


def test_cudnn_attention_needs_a_head_size_that_is_a_multiple_of_8():
    for d_model, n_heads, want in [(16, 4, "xla"), (48, 4, "xla"), (32, 4, "cudnn"),
                                   (64, 4, "cudnn")]:  # head sizes 4, 12, 8, 16
        cfg = cfg_(compute_dtype="bfloat16", d_model=d_model, n_heads=n_heads)
        assert M.attention_impl(cfg, backend="gpu") == want, cfg.head_dim


def test_small_uint8_observations_up_to_8_entries_are_categorical():
    assert cfg_(obs_shape=(8,)).categorical_obs and cfg_(obs_shape=(2, 4)).categorical_obs
    assert not cfg_(obs_shape=(9,)).categorical_obs
    assert not cfg_(**dict(FLOAT, obs_shape=(2,))).categorical_obs


def test_rope_harmonics_are_clipped_below_the_nyquist_harmonic():
    # A base below 1 makes the geometric spectrum grow: ideal [1.3, 4.0, 12.7, 40.3] for C = 8,
    # clipped to (C - 1) // 2 = 3, never to the Nyquist harmonic C / 2 = 4 (a turn by pi).
    np.testing.assert_array_equal(M.rope_harmonics(8, 8, base=0.01), [1, 3, 3, 3])
    np.testing.assert_array_equal(M.rope_harmonics(9, 8, base=0.01), [1, 4, 4, 4])


def test_num_params_known_answer():
    # obs 2 x 256 rows, actions 5 + "none", start 2 rows, reward 1 row, of 32 each; per block
    # norms 2 x 32, qkv 32 x 96, proj 32 x 32, up 32 x 128 + 128, down 128 x 32 + 32; final norm
    # 32 and head 32 x 5 + 5.
    block = 2 * 32 + 32 * 96 + 32 * 32 + (32 * 128 + 128) + (128 * 32 + 32)
    want = (512 + 6 + 2 + 1) * 32 + 2 * block + 32 + 32 * 5 + 5
    assert M.num_params(_init(cfg_(), jax.random.key(0))) == want == 41893


def test_padded_actions_get_exactly_the_documented_logit():
    cfg = cfg_()
    logits = np.asarray(_forward(_init(cfg, jax.random.key(7)), tokens(cfg, 2, 6)))
    assert np.all(logits[..., 4] == -1e9) and np.all(np.abs(logits[..., :4]) < 100)


def test_token_embedding_comes_out_in_the_compute_dtype():
    # The sum is taken in float32, then the residual stream starts in the compute dtype.
    cfg = cfg_(compute_dtype="bfloat16")
    params = random_tree(_init(cfg, jax.random.key(25)))
    toks = tokens(cfg, 2, 3)
    wide = M._module(M.Params(cfg_(), params.tree)).embed(toks)
    got = M._module(params).embed(toks)
    assert wide.dtype == jnp.float32 and got.dtype == jnp.bfloat16
    np.testing.assert_array_equal(got, wide.astype(jnp.bfloat16))
