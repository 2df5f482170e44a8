"""The frozen imitator as a :mod:`climit.rollout` policy, acting through its ring-buffer KV cache
(the one implementation: the evaluation and ``climit inspect --eval`` both act through it).

``act, carry0 = policy(params, mode)`` gives ``act(params, cache, inp, key) -> (action, cache)``
for ONE environment (vmap outward over environments, tasks or seeds). The carry is a
:class:`climit.imitator.model.Cache` for a batch of 1. Each call feeds one token and reads the
logits of the newest step, so a rollout of any length costs O(context) per step and equals a
full recomputation over the whole trajectory (see :mod:`climit.imitator.model`).

Token mapping from :class:`climit.rollout.PolicyInput`: at its very first step the rollout
reports ``prev_action = NO_ACTION`` (:func:`climit.rollout.init`) and ``prev_reward = 0``, as
the training histories have at the start of a stream; the first token of an empty cache is also
forced to ``NO_ACTION``, so a caller's carry that starts otherwise gets the same token.
Everything else passes through unchanged (previous action/reward carry across episode
boundaries, exactly as in the training histories).
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from climit import rollout
from climit.imitator import model as model_lib


def token(cache: model_lib.Cache, inp: rollout.PolicyInput) -> model_lib.Tokens:
    """One environment's PolicyInput -> Tokens with a batch axis of 1."""
    first = cache.t_B[0] == 0
    prev_action = jnp.where(first, model_lib.NO_ACTION, inp.prev_action).astype(jnp.int32)
    prev_reward = jnp.where(first, 0.0, inp.prev_reward).astype(jnp.float32)
    return model_lib.Tokens(obs=inp.obs[None], prev_action=prev_action[None],
                            prev_reward=prev_reward[None],
                            episode_start=jnp.asarray(inp.episode_start, bool)[None])


def choose(logits_A: jax.Array, mask_A: jax.Array, key: jax.Array, mode: str) -> jax.Array:
    """An action from logits over the allowed actions: the best (``greedy``) or a sample."""
    if mode == "greedy":
        return rollout.masked_argmax(logits_A, mask_A)
    return rollout.masked_sample(key, logits_A, mask_A)


@functools.lru_cache(maxsize=None)
def act_fn(mode: str, env_mask: tuple[bool, ...] | None = None) -> rollout.Policy:
    """``act(params, cache, inp, key) -> (action, cache)`` for one environment.

    Acts among the model's own actions (``params.cfg.action_mask``), intersected with
    ``env_mask`` (the acting environment's real actions) when given. The same arguments return
    the same function, so jitted rollouts of several imitators share their compilation.
    """
    if mode not in ("greedy", "sample"):
        raise ValueError(f"mode must be 'greedy' or 'sample', got {mode!r}")

    def act(p: model_lib.Params, cache: model_lib.Cache, inp: rollout.PolicyInput,
            key: jax.Array) -> tuple[jax.Array, model_lib.Cache]:
        logits_1xA, cache = model_lib.decode_step(p, cache, token(cache, inp))
        mask_A = jnp.asarray(p.cfg.action_mask)
        if env_mask is not None:
            mask_A = mask_A & jnp.asarray(env_mask)
        return choose(logits_1xA[0], mask_A, key, mode), cache

    return act


def policy(params: model_lib.Params, mode: str = "sample",
           env_mask: Any = None) -> tuple[Callable, model_lib.Cache]:
    """(act, empty cache) for one environment; ``mode`` is 'greedy' or 'sample' (see act_fn).

    ``params`` here only fixes the config of the cache; ``act`` takes the parameters as its first
    argument (so they can be vmapped over seeds). Weights never change.
    """
    mask = None if env_mask is None else tuple(bool(m) for m in np.asarray(env_mask))
    return act_fn(mode, mask), model_lib.init_cache(params, 1)


def trajectory_tokens(obs_TxO: Any, action_T: Any, reward_T: Any,
                      episode_start_T: Any) -> model_lib.Tokens:
    """The tokens [1, T] an imitator saw along a recorded rollout (for full recomputation)."""
    prev_action = jnp.concatenate([jnp.array([model_lib.NO_ACTION]),
                                   jnp.asarray(action_T[:-1], jnp.int32)])
    prev_reward = jnp.concatenate([jnp.zeros(1), jnp.asarray(reward_T[:-1], jnp.float32)])
    return model_lib.Tokens(obs=jnp.asarray(obs_TxO)[None], prev_action=prev_action[None],
                            prev_reward=prev_reward[None],
                            episode_start=jnp.asarray(episode_start_T, bool)[None])
