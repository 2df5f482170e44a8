"""Q-networks as pure functions over plain parameter dicts.

Why not Flax NNX modules: the teacher vmaps thousands of learners through ``lax.scan`` and
stores their stacked parameters in checkpoints, snapshots and ``climit inspect``. A plain
``{"dense_0": {"w", "b"}, ...}`` tree is exactly what those see (no ``Variable`` wrappers, no
graph state to split/merge inside the scan), traces in microseconds, and the networks here are
three layers deep. The module is then pure functions over plain parameter trees throughout.

    params = init(net, key)                 # one learner
    q_A = apply(net, params, obs_O)         # obs in interface storage dtype; any leading axes

Axis letters: O observation shape, A (padded) actions, B batch.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Params = dict[str, Any]

_ACTIVATIONS = {"relu": jax.nn.relu, "swish": jax.nn.swish, "tanh": jnp.tanh}


@dataclasses.dataclass(frozen=True)
class QNet:
    """Static description of a Q-network (hashable; closes over jitted code)."""

    kind: str  # "mlp" or "minatar"
    obs_shape: tuple[int, ...]
    num_actions: int  # interface (padded) action count
    hidden: tuple[int, ...]  # MLP widths; minatar: (dense width,)
    dueling: bool = False
    activation: str = "relu"
    action_mask: tuple[bool, ...] = ()  # real actions; dueling averages the advantage over these

    def __post_init__(self) -> None:
        if self.kind not in ("mlp", "minatar"):
            raise ValueError(f"unknown network kind {self.kind!r}")
        if self.kind == "minatar" and len(self.obs_shape) != 3:
            raise ValueError(f"the MinAtar network needs HxWxC observations, got {self.obs_shape}")
        if self.kind == "minatar" and len(self.hidden) != 1:
            raise ValueError(f"the MinAtar network has one dense layer: hidden takes one width, "
                             f"got {self.hidden}")
        if self.activation not in _ACTIVATIONS:
            raise ValueError(f"unknown activation {self.activation!r}")


def _dense(key: jax.Array, n_in: int, n_out: int, scale: float = 1.0) -> Params:
    # LeCun-scaled weights, N(0, 1/n_in) untruncated (Flax's default lecun_normal draws a
    # truncated normal of that variance), zero bias.
    w = jax.random.normal(key, (n_in, n_out), jnp.float32) * (scale / math.sqrt(n_in))
    return {"w": w, "b": jnp.zeros((n_out,), jnp.float32)}


_CONV_K, _CONV_C = 3, 16  # MinAtar paper: one 3x3 conv, 16 channels, stride 1, no padding


def init(net: QNet, key: jax.Array) -> Params:
    """Fresh parameters of one network."""
    keys = iter(jax.random.split(key, len(net.hidden) + 4))
    params: Params = {}
    if net.kind == "minatar":
        h, w, c = net.obs_shape
        fan_in = _CONV_K * _CONV_K * c
        params["conv"] = {
            "w": jax.random.normal(next(keys), (_CONV_K, _CONV_K, c, _CONV_C), jnp.float32)
            / math.sqrt(fan_in),
            "b": jnp.zeros((_CONV_C,), jnp.float32)}
        n_in = (h - _CONV_K + 1) * (w - _CONV_K + 1) * _CONV_C
        widths = net.hidden[:1]
    else:
        n_in = int(np.prod(net.obs_shape))
        widths = net.hidden
    for i, width in enumerate(widths):
        params[f"dense_{i}"] = _dense(next(keys), n_in, width)
        n_in = width
    params["q"] = _dense(next(keys), n_in, net.num_actions)
    if net.dueling:
        params["value"] = _dense(next(keys), n_in, 1)
    return params


def _conv3x3_valid(x: jax.Array, w_KxKxCxF: jax.Array) -> jax.Array:
    """A stride-1 VALID convolution as one matmul over gathered patches (im2col).

    x [..., H, W, C] -> [..., H-2, W-2, F]. Under ``vmap`` over learners a ``lax.conv`` becomes a
    grouped convolution, which XLA runs slowly on CPU (and cuDNN poorly for tiny groups); a
    patch matmul stays a plain batched matmul.
    """
    k = w_KxKxCxF.shape[0]
    h, w = x.shape[-3] - k + 1, x.shape[-2] - k + 1
    patches = [x[..., i:i + h, j:j + w, :] for i in range(k) for j in range(k)]
    x_patch = jnp.concatenate(patches, axis=-1)  # [..., h, w, K*K*C], (i, j, c) order
    return x_patch @ w_KxKxCxF.reshape(-1, w_KxKxCxF.shape[-1])


def _features(net: QNet, params: Params, obs: jax.Array) -> jax.Array:
    """obs [..., *O] (any dtype) -> features float32 [..., F]."""
    lead = obs.shape[: obs.ndim - len(net.obs_shape)]
    x = obs.astype(jnp.float32)
    act = _ACTIVATIONS[net.activation]
    if net.kind == "minatar":
        x = act(_conv3x3_valid(x, params["conv"]["w"]) + params["conv"]["b"])
        x = x.reshape(lead + (-1,))
        n_dense = 1
    else:
        x = x.reshape(lead + (-1,))
        n_dense = len(net.hidden)
    for i in range(n_dense):
        layer = params[f"dense_{i}"]
        x = act(x @ layer["w"] + layer["b"])
    return x


def apply(net: QNet, params: Params, obs: jax.Array) -> jax.Array:
    """Q-values float32 [..., A] for observations [..., *O].

    Dueling: Q = V + (Adv - mean of Adv over the real actions), so padded actions never shift
    the values of real ones. Padded actions' Q-values are meaningless; callers mask them.
    """
    x = _features(net, params, obs)
    q = x @ params["q"]["w"] + params["q"]["b"]
    if not net.dueling:
        return q
    mask_A = jnp.asarray(net.action_mask if net.action_mask else (True,) * net.num_actions)
    adv_mean = jnp.sum(jnp.where(mask_A, q, 0.0), -1, keepdims=True) / jnp.sum(mask_A)
    value = x @ params["value"]["w"] + params["value"]["b"]
    return value + q - adv_mean


def num_params(params: Params) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
