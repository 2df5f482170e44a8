"""The imitator: a decoder-only causal transformer over one token per environment step.

**Token.** Step ``t`` of a learner's stream becomes ONE token, the sum of four embeddings
(a sum of embeddings is a linear layer over their concatenation):

    token_t = E_obs(obs_t) + E_act(prev_action_t) + w_r * prev_reward_t + E_start(episode_start_t)

- ``obs_t``: the observation the learner acted on at ``t`` (interface form, storage dtype).
  Small integer observations (uint8 with at most 8 entries, e.g. grid (x, y)) get one learned
  vector per (entry, value), so that cells are told apart without the model having to learn a
  nonlinear read-out of coordinates; everything else is flattened, cast to float32 and
  projected linearly.
- ``prev_action_t``: the action taken at the previous step of the same stream (the previous
  episode's last action at an episode start); ``-1`` means "none" (the first step of a stream).
- ``prev_reward_t``: the reward that previous action earned (0 with no previous step, or when
  ``use_reward`` is off).
- ``episode_start_t``: True on the first step of an episode.

The target at ``t`` is the learner's action at ``t``; the model predicts it from tokens
``<= t``. Invalid (padded) actions of the interface get logit ``-1e9``.

**Architecture.** Pre-norm blocks (RMSNorm -> causal multi-head attention with RoPE ->
residual; RMSNorm -> GELU MLP -> residual), a final RMSNorm and a linear action head.
Parameters are float32; matmuls and the residual stream run in ``cfg.compute_dtype`` (bf16
on GPU/TPU; a bf16 stream halves the bytes of every residual read and write, 1.5 points of MFU
on an H200), norm statistics, RoPE and logits in float32. Attention uses
``jax.nn.dot_product_attention`` in a forward pass with cuDNN on GPU (bf16, a head size that is
a multiple of 8, not the single-episode ablation: :func:`attention_impl`) and XLA otherwise
(:func:`attention_used` says which a forward pass of given shapes really runs); a decode step
always runs XLA's.

**Sliding-window attention and the ring-buffer KV cache.** Every token attends to at most
``L = cfg.context_len`` tokens: itself and the ``L-1`` before it. In a forward pass over a
sequence longer than ``L`` (training uses ``imitator.train_windows`` x ``L`` tokens) that is a
banded causal mask; in decoding it is a ring buffer of ``L`` key/value slots per layer. The two
are the same computation, however many times the buffer has wrapped: :func:`decode_step` on
token ``t`` equals position ``t`` of :func:`forward` over the whole stream ``0..t``.
(It does *not* equal a fresh forward pass over only the last ``L`` tokens once ``t >= L`` and
there is more than one layer: a cached key of layer 2 was computed when its token could still
see ``L-1`` older tokens, so the receptive field reaches ``n_layers * (L-1)`` steps back.
Training on sequences longer than ``L`` is what teaches the model that regime: layer ``l`` of
a training sequence of ``train_windows * L`` tokens sees its whole reach ``l * (L-1)`` only at
positions past it, so ``train_windows >= n_layers + 1`` trains every layer in it, and the
presets' 2 windows train the first layer's fully and the deeper layers' in part.)

**Periodic RoPE, keys rotated once.** RoPE pair ``i`` turns by ``theta_i = 2*pi*k_i / L`` per
step, with an *integer* harmonic ``k_i`` of the window (:func:`rope_harmonics`: the usual
geometric spectrum ``base**(-i/(h/2))`` rounded to the nearest harmonic below the Nyquist
harmonic ``L/2``; pairs that round to 0 carry no position, as in p-RoPE, and the harmonic 1 is
always present, so every distance ``0..L-1`` is a distinct rotation). A rotation by ``L`` steps
is then the identity, so position ``t`` turns by exactly the angles of ``t mod L``: one cos/sin
table of ``L`` rows (:func:`rope_table`, float64 angles of the integer phases
``t * k_i mod L``) serves every position, with no large float angles and nothing that drifts
after millions of steps. A score turns by ``(t_q - t_k) * theta``, whichever multiples of ``L``
the two positions carry, so the cache can store each key *rotated once*, by the angles of the
slot it is written to (slot = ``t mod L``): a decode step then reads each layer's cached keys
and values once, in the attention itself, instead of re-rotating the whole cache every step
(read, write, read again: 2-3x the memory traffic), and it equals the forward pass however many
times the ring has wrapped.

**Context-ablated model** (``episode_local``): attention is restricted to the current episode
and the previous action/reward are blanked at episode starts, so the model sees exactly the
current episode, as far back as the window reaches (``imitator.variant = single_episode``).
The cache tracks episodes from ``episode_start``, so decoding needs nothing special.

Functional core: :func:`init` builds the NNX module once and keeps its parameters as a plain
nested dict (``Params.tree``); :func:`forward` and :func:`decode_step` merge it back inside
the trace, so they are pure and work under ``jit``/``vmap``/``lax.scan``.

Axis letters: B batch, L context (window), C cache slots (= L), D model, N heads, h head size,
A actions, O observation shape, S seeds.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, struct

# What saved parameters mean. Bump when the same parameters would compute something else, so
# that old checkpoints are refused instead of silently misread. 2: harmonic RoPE (positions
# taken modulo the context), keys cached rotated.
REVISION = 2
NO_ACTION = -1  # prev_action of the first step of a stream
MASKED_LOGIT = -1e9
_CATEGORICAL_MAX_ENTRIES = 8
_CATEGORICAL_VALUES = 256


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Static description of an imitator network (hashable: it rides in the pytree treedef)."""

    obs_shape: tuple[int, ...]
    obs_dtype: str  # storage dtype of observations
    num_actions: int  # padded (interface) action count
    action_mask: tuple[bool, ...]  # True for actions the environment really has
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    mlp_ratio: int = 4
    context_len: int = 80
    dropout: float = 0.0
    episode_local: bool = False  # single-episode ablation
    use_reward: bool = True
    compute_dtype: str = "float32"  # resolved: 'float32' | 'bfloat16'
    attention: str = "auto"  # 'auto' (cuDNN where it applies) | 'xla' | 'cudnn'
    rope_base: float = 10_000.0

    def __post_init__(self):
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} not divisible by n_heads {self.n_heads}")
        if self.head_dim % 2:
            raise ValueError(f"RoPE needs an even head size, got {self.head_dim}")
        if len(self.action_mask) != self.num_actions:
            raise ValueError("action_mask must have num_actions entries")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def obs_size(self) -> int:
        return int(np.prod(self.obs_shape, dtype=np.int64))

    @property
    def categorical_obs(self) -> bool:
        return self.obs_dtype == "uint8" and self.obs_size <= _CATEGORICAL_MAX_ENTRIES

    @property
    def dtype(self) -> jnp.dtype:
        return jnp.dtype(self.compute_dtype)


def resolve_compute_dtype(name: str, backend: str | None = None) -> str:
    """'auto' -> bfloat16 on GPU/TPU, float32 on CPU."""
    if name != "auto":
        return name
    backend = backend or jax.default_backend()
    return "float32" if backend == "cpu" else "bfloat16"


def model_config(icfg: Any, spec: Any, *, backend: str | None = None) -> ModelConfig:
    """The network of ``imitator`` config section ``icfg`` for environment spec ``spec``.

    Every field of ``icfg`` that ModelConfig has too (d_model, n_layers, ...) is copied by name,
    so a model option added to both reaches the network without a line here; the interface
    comes from ``spec``, and the fields below are derived.
    """
    shared = {f.name for f in dataclasses.fields(ModelConfig)} & \
        {f.name for f in dataclasses.fields(icfg)}
    return ModelConfig(**{
        **{name: getattr(icfg, name) for name in shared},
        "obs_shape": tuple(spec.obs_shape), "obs_dtype": spec.obs_dtype,
        "num_actions": spec.num_actions, "action_mask": tuple(bool(m) for m in spec.action_mask),
        "episode_local": icfg.variant == "single_episode",
        "compute_dtype": resolve_compute_dtype(icfg.compute_dtype, backend)})


class Tokens(NamedTuple):
    """Per-step model inputs; leading axes are free ([B] for decoding, [B, L] for forward)."""

    obs: jax.Array  # [..., *O] storage dtype
    prev_action: jax.Array  # int32 [...], NO_ACTION (-1) for none
    prev_reward: jax.Array  # float32 [...]
    episode_start: jax.Array  # bool [...]


@struct.dataclass
class Params:
    """Imitator parameters: the static config plus a nested dict of float32 arrays."""

    cfg: ModelConfig = struct.field(pytree_node=False)
    tree: dict


@struct.dataclass
class Cache:
    """Ring-buffer KV cache of a batch of B independent streams (leading axis B everywhere,
    so ``cache[i]`` -- ``jax.tree.map(lambda x: x[i], cache)`` -- is stream i's cache).

    Token ``t`` goes to slot ``t % C``. Keys are stored *already rotated* by the RoPE angles of
    their slot (periodic RoPE: those are the angles of ``t`` itself), so a decode step reads
    each layer's keys and values once, in the attention, and never rewrites the cache beyond
    the new slot. One array per layer keeps a layer's cache contiguous ([B, C, N, h]), so its
    attention reads one block.
    """

    k: tuple[jax.Array, ...]  # n_layers x [B, C, N, h] compute dtype, rotated by slot
    v: tuple[jax.Array, ...]  # n_layers x [B, C, N, h] compute dtype
    seg_BxC: jax.Array  # int32: episode counter of the token in each slot
    t_B: jax.Array  # int32: tokens written so far
    episode_B: jax.Array  # int32: episode counter of the newest token


# ---------------------------------------------------------------------------------------------
# Modules
# ---------------------------------------------------------------------------------------------

def _rms_norm(scale: jax.Array, x: jax.Array) -> jax.Array:
    """RMSNorm over the last axis: scale [D] float32, x [..., D] any float dtype -> float32
    [..., D] (the statistics in float32 even for a bf16 input)."""
    x = x.astype(jnp.float32)
    return x * jax.lax.rsqrt(jnp.mean(x * x, -1, keepdims=True) + 1e-6) * scale


def _dropout(x: jax.Array, rate: float, key: jax.Array | None) -> jax.Array:
    """Inverted dropout of x [...] (any shape; same shape and dtype out, kept entries scaled by
    1/(1-rate)); identity without a key (evaluation) or at rate 0."""
    if key is None or rate == 0.0:
        return x
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0).astype(x.dtype)


class Block(nnx.Module):
    """Pre-norm transformer block; attention itself is supplied by the caller."""

    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        d, dt = cfg.d_model, cfg.dtype
        init = nnx.initializers.normal(0.02)
        out_init = nnx.initializers.normal(0.02 / math.sqrt(2 * cfg.n_layers))
        self.norm1 = nnx.Param(jnp.ones((d,), jnp.float32))
        self.qkv = nnx.Linear(d, 3 * d, use_bias=False, dtype=dt, kernel_init=init, rngs=rngs)
        self.proj = nnx.Linear(d, d, use_bias=False, dtype=dt, kernel_init=out_init, rngs=rngs)
        self.norm2 = nnx.Param(jnp.ones((d,), jnp.float32))
        self.up = nnx.Linear(d, cfg.mlp_ratio * d, dtype=dt, kernel_init=init, rngs=rngs)
        self.down = nnx.Linear(cfg.mlp_ratio * d, d, dtype=dt, kernel_init=out_init, rngs=rngs)
        self.n_heads = cfg.n_heads

    def qkv_heads(self, x_xD: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Residual stream [..., D] -> q, k, v [..., N, h] (compute dtype, not rotated)."""
        qkv = self.qkv(_rms_norm(self.norm1[...], x_xD))
        q, k, v = jnp.split(qkv, 3, axis=-1)
        shape = x_xD.shape[:-1] + (self.n_heads, -1)
        return q.reshape(shape), k.reshape(shape), v.reshape(shape)

    def finish(self, x_xD: jax.Array, attn_xNxh: jax.Array, rate: float,
               key: jax.Array | None) -> jax.Array:
        """Attention output projection + MLP, both residual (the stream keeps its dtype)."""
        k1, k2 = jax.random.split(key) if key is not None else (None, None)
        attn = self.proj(attn_xNxh.reshape(x_xD.shape))
        x_xD = x_xD + _dropout(attn, rate, k1).astype(x_xD.dtype)
        hidden = jax.nn.gelu(self.up(_rms_norm(self.norm2[...], x_xD)))
        return x_xD + _dropout(self.down(hidden), rate, k2).astype(x_xD.dtype)


class Transformer(nnx.Module):
    """Token embedding, ``n_layers`` blocks, final norm and action head."""

    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        d = cfg.d_model
        init = nnx.initializers.normal(0.02)
        if cfg.categorical_obs:
            self.obs_embed = nnx.Embed(cfg.obs_size * _CATEGORICAL_VALUES, d,
                                       embedding_init=init, rngs=rngs)
        else:
            self.obs_embed = nnx.Linear(cfg.obs_size, d, kernel_init=init, rngs=rngs)
        self.action_embed = nnx.Embed(cfg.num_actions + 1, d, embedding_init=init, rngs=rngs)
        self.start_embed = nnx.Embed(2, d, embedding_init=init, rngs=rngs)
        self.reward_embed = nnx.Param(init(rngs.params(), (d,), jnp.float32))
        for i in range(cfg.n_layers):  # named attributes keep the parameter dict's keys strings
            setattr(self, f"block{i}", Block(cfg, rngs))
        self.norm_f = nnx.Param(jnp.ones((d,), jnp.float32))
        self.head = nnx.Linear(d, cfg.num_actions, kernel_init=init, rngs=rngs)
        self.cfg = cfg

    def blocks(self) -> list[Block]:
        return [getattr(self, f"block{i}") for i in range(self.cfg.n_layers)]

    def embed(self, tok: Tokens) -> jax.Array:
        """Tokens with leading axes [...] -> [..., D] in the compute dtype (the residual
        stream's; the embeddings are summed in float32 first)."""
        cfg = self.cfg
        lead = tok.prev_action.shape
        prev_action = tok.prev_action.astype(jnp.int32)
        prev_reward = tok.prev_reward.astype(jnp.float32)
        if cfg.episode_local:  # nothing of the previous episode may leak into the token
            prev_action = jnp.where(tok.episode_start, NO_ACTION, prev_action)
            prev_reward = jnp.where(tok.episode_start, 0.0, prev_reward)
        if not cfg.use_reward:
            prev_reward = jnp.zeros_like(prev_reward)
        obs = tok.obs.reshape(lead + (cfg.obs_size,))
        if cfg.categorical_obs:
            offsets = jnp.arange(cfg.obs_size, dtype=jnp.int32) * _CATEGORICAL_VALUES
            x = self.obs_embed(obs.astype(jnp.int32) + offsets).sum(-2)
        else:
            x = self.obs_embed(obs.astype(jnp.float32))
        action_idx = jnp.where(prev_action < 0, cfg.num_actions, prev_action)
        x = (x + self.action_embed(action_idx)
             + self.start_embed(tok.episode_start.astype(jnp.int32)))
        x = x + prev_reward[..., None] * self.reward_embed[...]
        return x.astype(cfg.dtype)

    def logits(self, x_xD: jax.Array) -> jax.Array:
        """Final norm + head in float32; invalid actions masked."""
        logits = self.head(_rms_norm(self.norm_f[...], x_xD))
        return jnp.where(jnp.asarray(self.cfg.action_mask), logits, MASKED_LOGIT)


@functools.lru_cache(maxsize=None)
def _graphdef(cfg: ModelConfig) -> nnx.GraphDef:
    return nnx.split(nnx.eval_shape(lambda: Transformer(cfg, nnx.Rngs(0))))[0]


def _module(params: Params) -> Transformer:
    return nnx.merge(_graphdef(params.cfg), params.tree)


def init(cfg: ModelConfig, key: jax.Array) -> Params:
    """Fresh float32 parameters (pure in ``key``; vmap over keys for several seeds)."""
    module = Transformer(cfg, nnx.Rngs(params=key))
    return Params(cfg=cfg, tree=nnx.to_pure_dict(nnx.state(module)))


def abstract(cfg: ModelConfig) -> Params:
    """Shape/dtype skeleton of :func:`init` (no compute): restore targets, FLOP counts."""
    return jax.eval_shape(lambda: init(cfg, jax.random.key(0)))


def num_params(params: Params) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params.tree)))


# ---------------------------------------------------------------------------------------------
# RoPE and attention
# ---------------------------------------------------------------------------------------------

def rope_harmonics(context_len: int, head_dim: int, base: float = 10_000.0) -> np.ndarray:
    """Integer harmonics ``k_i`` [h/2] (int64) of the window: RoPE pair ``i`` turns by
    ``2*pi*k_i/context_len`` per step, so every rotation is periodic in the window.

    ``k_i = round(C * base**(-i/(h/2)) / (2*pi))`` clipped to ``[0, max(1, (C-1)//2)]`` (below
    the Nyquist harmonic C/2, where frequencies would alias). If no pair rounds to 1 (small head
    sizes, e.g. C=16, h=8, or C <= 3), the first pair that rounds to 0 (else the last pair) gets
    1: the harmonic 1 makes every distance ``0..C-1`` a distinct rotation.
    """
    C, half = context_len, head_dim // 2
    ideal = C * base ** (-np.arange(half, dtype=np.float64) / half) / (2 * np.pi)
    k = np.clip(np.rint(ideal), 0, max(1, (C - 1) // 2)).astype(np.int64)
    if C > 1 and not np.any(k == 1):
        zero = np.flatnonzero(k == 0)
        k[zero[0] if zero.size else half - 1] = 1
    return k


@functools.lru_cache(maxsize=None)
def rope_table(context_len: int, head_dim: int,
               base: float = 10_000.0) -> tuple[np.ndarray, np.ndarray]:
    """cos, sin [C, h/2] float32 of the angles of positions ``0..C-1`` (= any ``t`` mod C).

    The phase ``t * k_i mod C`` is exact integer arithmetic; angles and cos/sin are float64,
    rounded to float32 once.
    """
    C = context_len
    phase_Cxh = (np.arange(C, dtype=np.int64)[:, None] * rope_harmonics(C, head_dim, base)) % C
    angle = 2 * np.pi * phase_Cxh.astype(np.float64) / C
    cos_Cxh, sin_Cxh = np.cos(angle).astype(np.float32), np.sin(angle).astype(np.float32)
    cos_Cxh.setflags(write=False)  # shared by the lru_cache
    sin_Cxh.setflags(write=False)
    return cos_Cxh, sin_Cxh


def _rope_angles(cfg: ModelConfig, pos: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Non-negative integer positions [...] (any size) -> cos, sin [..., h/2] float32: the
    table row of ``pos mod C`` (exactly the angles of ``pos`` itself, by periodicity)."""
    cos_Cxh, sin_Cxh = rope_table(cfg.context_len, cfg.head_dim, cfg.rope_base)
    row = jnp.asarray(pos, jnp.int32) % cfg.context_len
    return jnp.asarray(cos_Cxh)[row], jnp.asarray(sin_Cxh)[row]


def _rotate(x_xNxh: jax.Array, cos_xh: jax.Array, sin_xh: jax.Array) -> jax.Array:
    """Rotate pairs (x_i, x_{i+h/2}); cos/sin broadcast over the head axis."""
    x = x_xNxh.astype(jnp.float32)
    x1, x2 = jnp.split(x, 2, axis=-1)
    c, s = cos_xh[..., None, :], sin_xh[..., None, :]
    return jnp.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], -1).astype(x_xNxh.dtype)


def attention_impl(cfg: ModelConfig, backend: str | None = None) -> str:
    """'cudnn' on GPU for bf16/fp16, head size % 8 == 0 and no episode mask (unless cfg says
    which); else 'xla'."""
    if cfg.attention != "auto":
        return cfg.attention
    backend = backend or jax.default_backend()
    # The single-episode ablation's mask [B, 1, T, T] breaks cuDNN's batching rule under the
    # vmap over imitator seeds (jax 0.11.2 reshapes it to [S*B, N, T, T] and fails): XLA then.
    fits = (cfg.compute_dtype in ("bfloat16", "float16") and cfg.head_dim % 8 == 0
            and not cfg.episode_local)
    return "cudnn" if backend == "gpu" and fits else "xla"


class AttentionFallback(UserWarning):
    """cuDNN attention refused the shapes of a forward pass; it runs XLA attention instead."""


def _window(cfg: ModelConfig, seq_len: int) -> tuple[int, int] | None:
    """The attention band of a forward pass over ``seq_len`` tokens (None: plain causal)."""
    return (cfg.context_len - 1, 0) if seq_len > cfg.context_len else None


def _attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None,
               window: tuple[int, int] | None, impl: str) -> jax.Array:
    """Causal (optionally banded and masked) attention: q, k, v [B, T, N, h] -> [B, T, N, h];
    mask bool [B, 1, T, T] or None."""
    return jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=True,
                                        local_window_size=window, implementation=impl)


@functools.lru_cache(maxsize=None)
def attention_used(cfg: ModelConfig, batch: int, seq_len: int) -> str:
    """The attention implementation :func:`forward` runs on [batch, seq_len] tokens: 'cudnn' or
    'xla'.

    :func:`attention_impl`, except that with ``attention: auto`` a cuDNN kernel that refuses
    these shapes at trace time (cuDNN version, layout, head size or mask limits) is replaced by
    XLA, with an :class:`AttentionFallback` warning, instead of failing the run. Decided by
    tracing the kernel once on abstract inputs of the same shapes (no compute, cached per
    shape), and :func:`forward` itself asks here, so what a summary reports is what ran.
    """
    impl = attention_impl(cfg)
    if impl != "cudnn" or cfg.attention != "auto":
        return impl
    qkv = jax.ShapeDtypeStruct((batch, seq_len, cfg.n_heads, cfg.head_dim), cfg.dtype)
    mask = jax.ShapeDtypeStruct((batch, 1, seq_len, seq_len), jnp.bool_) if cfg.episode_local \
        else None
    probe = functools.partial(_attention, window=_window(cfg, seq_len), impl="cudnn")
    # Training traces cuDNN's backward too, which has limits of its own (e.g. a mask turned bias
    # with an odd length): check both, so a run never meets a refusal after the check.
    grads = jax.grad(lambda q, k, v, m: probe(q, k, v, m).astype(jnp.float32).sum(), (0, 1, 2))
    try:
        jax.eval_shape(probe, qkv, qkv, qkv, mask)
        jax.eval_shape(grads, qkv, qkv, qkv, mask)
    except (ValueError, NotImplementedError, RuntimeError) as e:
        warnings.warn(f"cuDNN attention unavailable ({str(e)[:200]}); using XLA",
                      AttentionFallback, stacklevel=2)
        return "xla"
    return "cudnn"


def _segments(episode_start_BxL: jax.Array) -> jax.Array:
    """Episode counter within a window: equal for two tokens iff no episode starts between."""
    return jnp.cumsum(episode_start_BxL.astype(jnp.int32), axis=-1)


# ---------------------------------------------------------------------------------------------
# Pure entry points
# ---------------------------------------------------------------------------------------------

def forward(params: Params, tokens_BxT: Tokens, *,
            dropout_key: jax.Array | None = None) -> jax.Array:
    """Causal pass with attention windows of ``cfg.context_len``: Tokens with leaves [B, T, ...]
    -> logits_BxTxA float32. ``T`` may exceed the context (banded mask); positions are 0..T-1
    (periodic RoPE: only ``t mod C`` matters).
    ``dropout_key`` enables dropout (training only).
    """
    cfg = params.cfg
    model = _module(params)
    T = tokens_BxT.prev_action.shape[-1]
    cos_Txh, sin_Txh = _rope_angles(cfg, jnp.arange(T))
    mask = None
    if cfg.episode_local:  # [B, 1, T, T]: same episode only (causality comes from is_causal)
        seg_BxT = _segments(tokens_BxT.episode_start)
        mask = (seg_BxT[:, :, None] == seg_BxT[:, None, :])[:, None]
    B = tokens_BxT.prev_action.shape[0]
    window = _window(cfg, T)
    impl = attention_used(cfg, B, T)
    keys = list(jax.random.split(dropout_key, cfg.n_layers + 1)) if dropout_key is not None \
        else [None] * (cfg.n_layers + 1)
    x_BxTxD = _dropout(model.embed(tokens_BxT), cfg.dropout, keys[0])
    for block, key in zip(model.blocks(), keys[1:]):
        q, k, v = block.qkv_heads(x_BxTxD)
        q, k = _rotate(q, cos_Txh, sin_Txh), _rotate(k, cos_Txh, sin_Txh)
        attn = _attention(q, k, v, mask, window, impl)
        x_BxTxD = block.finish(x_BxTxD, attn, cfg.dropout, key)
    return model.logits(x_BxTxD)


def init_cache(params_or_cfg: Params | ModelConfig, batch_size: int) -> Cache:
    """An empty cache for ``batch_size`` streams (context = ``cfg.context_len`` slots)."""
    cfg = params_or_cfg.cfg if isinstance(params_or_cfg, Params) else params_or_cfg
    shape = (batch_size, cfg.context_len, cfg.n_heads, cfg.head_dim)
    zeros_B = jnp.zeros((batch_size,), jnp.int32)
    layers = range(cfg.n_layers)
    return Cache(k=tuple(jnp.zeros(shape, cfg.dtype) for _ in layers),
                 v=tuple(jnp.zeros(shape, cfg.dtype) for _ in layers),
                 seg_BxC=jnp.zeros((batch_size, cfg.context_len), jnp.int32),
                 t_B=zeros_B, episode_B=zeros_B)


def decode_step(params: Params, cache: Cache, tokens_B: Tokens) -> tuple[jax.Array, Cache]:
    """Append one token per stream and return its logits: (logits_BxA float32, new cache).

    On the stream's token ``t`` this equals position ``t`` of :func:`forward` over tokens
    ``0..t`` of the stream, however many times the ring buffer has wrapped.
    """
    cfg = params.cfg
    model = _module(params)
    C = cfg.context_len
    t_B = cache.t_B
    slot_B = t_B % C
    batch_B = jnp.arange(t_B.shape[0])
    write = dict(indices_are_sorted=True, unique_indices=True)  # one slot per stream
    episode_B = cache.episode_B + tokens_B.episode_start.astype(jnp.int32)
    seg_BxC = cache.seg_BxC.at[batch_B, slot_B].set(episode_B, **write)
    slots_C = jnp.arange(C)
    valid_BxC = (t_B[:, None] >= C - 1) | (slots_C[None] <= t_B[:, None])
    if cfg.episode_local:
        valid_BxC &= seg_BxC == episode_B[:, None]
    mask_Bx1x1xC = valid_BxC[:, None, None, :]
    # Periodic RoPE: token t turns by the angles of its slot t % C, its query now and its key
    # once, when written; cached keys already carry theirs, so attention reads them as they are.
    cos_B, sin_B = _rope_angles(cfg, slot_B)
    k_cache, v_cache = [], []
    x_BxD = model.embed(tokens_B)
    for k_BxCxNxh, v_BxCxNxh, block in zip(cache.k, cache.v, model.blocks()):
        q, k, v = block.qkv_heads(x_BxD)  # [B, N, h]
        k_BxCxNxh = k_BxCxNxh.at[batch_B, slot_B].set(_rotate(k, cos_B, sin_B), **write)
        v_BxCxNxh = v_BxCxNxh.at[batch_B, slot_B].set(v, **write)
        attn = jax.nn.dot_product_attention(_rotate(q, cos_B, sin_B)[:, None], k_BxCxNxh,
                                            v_BxCxNxh, mask=mask_Bx1x1xC, implementation="xla")
        x_BxD = block.finish(x_BxD, attn[:, 0], 0.0, None)
        k_cache.append(k_BxCxNxh)
        v_cache.append(v_BxCxNxh)
    new = Cache(k=tuple(k_cache), v=tuple(v_cache), seg_BxC=seg_BxC, t_B=t_B + 1,
                episode_B=episode_B)
    return model.logits(x_BxD), new


def flops_per_token(cfg: ModelConfig, seq_len: int, *, training: bool = True,
                    causal: bool = True) -> float:
    """Useful matmul FLOPs per token of :func:`forward` over ``seq_len`` tokens (x3 for
    forward + backward when ``training``): the MFU numerator.

    ``causal=False`` counts every query against all ``min(L, T)`` keys of its window, the
    PaLM / nanoGPT convention (6N + 12 * layers * D * T per token), which ignores the causal
    mask; MFU figures in that convention are higher by that attention term alone.

    Per layer: qkv 6D^2, out 2D^2, MLP 4*r*D^2 (multiply-adds count 2), attention scores and
    values 4*D per attended key, counting only keys the causal band lets through (on average
    ``(T+1)/2`` for ``T <= L``; for ``T > L`` the first L queries see 1..L keys and the rest L
    each), ignoring the episode mask of the single-episode ablation. Once per token: the
    action head 2*D*A and the observation embedding 2*D*O (2*D for a categorical lookup).
    Norms, RoPE, softmax and other elementwise work are not counted.
    """
    d, T, C = cfg.d_model, seq_len, min(cfg.context_len, seq_len)
    L = (C * (C + 1) / 2 + (T - C) * C) / T if causal else C  # mean keys attended per query
    per_layer = 2 * (4 * d * d + 2 * cfg.mlp_ratio * d * d) + 4 * d * L
    head = 2 * d * cfg.num_actions + 2 * d * (1 if cfg.categorical_obs else cfg.obs_size)
    return (3.0 if training else 1.0) * (cfg.n_layers * per_layer + head)
