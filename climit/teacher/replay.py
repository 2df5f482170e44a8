"""A pytree ring replay buffer with compact storage and uniform sampling (one learner).

The write position and fill level are not stored: every learner of a run steps in lockstep, so
both follow from ``count``, the number of transitions added so far (a scalar the caller derives
from its step counter). Under ``vmap`` the write indices are then unbatched, so writing E
transitions is one scatter of E rows, and sampling is a ``randint`` gather of B rows: no work
proportional to the capacity C, ever.

Observations are kept in the interface storage dtype (uint8 for grid worlds and MinAtar),
actions as uint8, terminations as bool.

Axis letters: C capacity, E envs, B batch, O observation shape.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class Replay:
    """Ring storage of one learner; transition i lives at row ``i % C``."""

    obs_CxO: jax.Array  # storage dtype
    action_C: jax.Array  # uint8
    reward_C: jax.Array  # float32
    next_obs_CxO: jax.Array  # storage dtype: the observation the action led to (pre-reset)
    terminated_C: jax.Array  # bool: no bootstrap from next_obs

    @property
    def capacity(self) -> int:
        return self.action_C.shape[0]


@struct.dataclass
class Batch:
    obs_BxO: jax.Array
    action_B: jax.Array  # int32
    reward_B: jax.Array  # float32
    next_obs_BxO: jax.Array
    terminated_B: jax.Array  # bool


def init(capacity: int, obs_shape: tuple[int, ...], obs_dtype: str) -> Replay:
    """An empty buffer (zeros)."""
    return Replay(obs_CxO=jnp.zeros((capacity,) + tuple(obs_shape), obs_dtype),
                  action_C=jnp.zeros((capacity,), jnp.uint8),
                  reward_C=jnp.zeros((capacity,), jnp.float32),
                  next_obs_CxO=jnp.zeros((capacity,) + tuple(obs_shape), obs_dtype),
                  terminated_C=jnp.zeros((capacity,), bool))


def add(replay: Replay, count: jax.Array, obs_ExO: jax.Array, action_E: jax.Array,
        reward_E: jax.Array, next_obs_ExO: jax.Array, terminated_E: jax.Array) -> Replay:
    """Write E transitions as numbers ``count .. count+E-1`` (rows modulo C)."""
    rows_E = (count + jnp.arange(action_E.shape[0])) % replay.capacity
    return Replay(
        obs_CxO=replay.obs_CxO.at[rows_E].set(obs_ExO.astype(replay.obs_CxO.dtype)),
        action_C=replay.action_C.at[rows_E].set(action_E.astype(jnp.uint8)),
        reward_C=replay.reward_C.at[rows_E].set(reward_E.astype(jnp.float32)),
        next_obs_CxO=replay.next_obs_CxO.at[rows_E].set(next_obs_ExO.astype(replay.obs_CxO.dtype)),
        terminated_C=replay.terminated_C.at[rows_E].set(terminated_E))


def sample(replay: Replay, count: jax.Array, key: jax.Array, batch_size: int) -> Batch:
    """B transitions uniformly with replacement from the ``min(count, C)`` stored ones."""
    size = jnp.clip(count, 1, replay.capacity)
    rows_B = jax.random.randint(key, (batch_size,), 0, size)
    return Batch(obs_BxO=replay.obs_CxO[rows_B], action_B=replay.action_C[rows_B].astype(jnp.int32),
                 reward_B=replay.reward_C[rows_B], next_obs_BxO=replay.next_obs_CxO[rows_B],
                 terminated_B=replay.terminated_C[rows_B])

