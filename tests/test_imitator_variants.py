"""scripts/imitator_variants.py: each variant swaps its pieces into the model for the block it
names, and the model is the committed one again after it (the script times several variants in
one process, so a piece left patched would time the next variant wrong)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from climit.imitator import model as M

import procs

CFG = M.ModelConfig(obs_shape=(2,), obs_dtype="uint8", num_actions=3,
                    action_mask=(True, True, True), d_model=16, n_layers=1, n_heads=2,
                    context_len=4)


@pytest.fixture(scope="module")
def tool():
    return procs.load_script("imitator_variants")


TOKENS = M.Tokens(obs=jnp.arange(8, dtype=jnp.uint8).reshape(1, 4, 2),
                  prev_action=jnp.array([[-1, 0, 2, 1]], jnp.int32),
                  prev_reward=jnp.array([[0.0, 1.0, 0.0, 0.5]], jnp.float32),
                  episode_start=jnp.array([[True, False, False, True]]))
PARAMS = jax.jit(M.init, static_argnums=0)(CFG, jax.random.key(0))


def _logits() -> np.ndarray:
    """The tiny model's logits [1, 4, 3] on fixed tokens (traced again after every patch or
    restore: ``patched`` clears jit's caches)."""
    return np.asarray(jax.jit(M.forward)(PARAMS, TOKENS))


def test_variants_patch_the_model_inside_their_block_only(tool):
    assert CFG.dtype == jnp.float32  # CPU: the bf16 variants have nothing to change
    committed = _logits()
    # In float32 a float32 stream and RoPE in the compute dtype are the committed model; the
    # probes remove a piece and so change the logits.
    expect_equal = {"committed": True, "f32_stream": True, "rope_bf16": True,
                    "no_rope": False, "no_norm": False}
    for name, equal in expect_equal.items():
        with tool.patched(name):
            inside = _logits()
        assert np.array_equal(inside, committed) == equal, name
        np.testing.assert_array_equal(_logits(), committed, err_msg=f"{name} left patched")
    with pytest.raises(KeyError):
        tool._patches("no_such_variant")
