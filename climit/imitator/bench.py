"""``climit bench imitator``: training throughput and model FLOP utilisation of the imitator.

For each size it times the real jitted train step (forward, backward, AdamW; ``--seeds``
imitators vmapped, one by default) on random tokens already on the device, and prints one
JSON line per (size, attention kernel): tokens/s, step time, compile time apart, and MFU =
useful matmul FLOPs/s (:func:`climit.imitator.model.flops_per_token`) over the chip's dense
bf16 peak (null where the peak is unknown, e.g. on CPU, or the step does not run in bf16).
On GPU each size runs with the cuDNN and then the XLA attention; the cuDNN record is printed
as soon as it is measured (a command cut short keeps it) and the XLA record carries
``cudnn_xla_ratio`` (tokens/s cuDNN / XLA); elsewhere it is null.

Sizes: ``documented`` = d_model 512, 8 layers, 8 heads, 2048 tokens of context (one window
per sequence); ``default`` = the defaults of the ``imitator`` config section. ``--reduced``
makes a CPU smoke run well under a minute: it shrinks the documented size (labelled
``documented-reduced``) and takes 8 sequences per step; the default size is already small
enough for a CPU, so it keeps its model and its label (``default``) and only takes the smaller
batch (the record's ``batch`` says which).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, Iterator

import jax
import jax.numpy as jnp
import numpy as np

from climit import config as config_lib
from climit.imitator import data as data_lib
from climit.imitator import model as model_lib
from climit.imitator import train as train_lib

# Dense bf16 peak FLOP/s by device kind (vendor datasheets, no sparsity).
BF16_PEAK = {
    "H100 SXM": 989e12, "H100 80GB HBM3": 989e12, "H100 PCIe": 756e12, "H100": 989e12,
    "H200": 989e12, "GH200": 989e12, "A100": 312e12, "L4": 121e12, "A10G": 70e12,
    "TPU v4": 275e12, "TPU v5 lite": 197e12, "TPU v5e": 197e12, "TPU v5p": 459e12,
    "TPU v6 lite": 918e12, "TPU v6e": 918e12,
}

SIZES = {
    "documented": dict(d_model=512, n_layers=8, n_heads=8, context_len=2048, train_windows=1),
    "default": {},
}
# --reduced versions of the sizes too large for a CPU smoke run (the others run as they are).
REDUCED = {
    "documented": dict(d_model=128, n_layers=2, n_heads=4, context_len=256, train_windows=1),
}


def peak_flops(device: Any) -> float | None:
    """The chip's dense bf16 peak, matched on its device kind (longest name first)."""
    if device.platform == "cpu":
        return None
    kind = getattr(device, "device_kind", "")
    for name in sorted(BF16_PEAK, key=len, reverse=True):
        if name.lower() in kind.lower():
            return BF16_PEAK[name]
    return None


def _random_batch(mcfg: model_lib.ModelConfig, seeds: int, batch: int, seq: int,
                  key: jax.Array) -> data_lib.Batch:
    """[S, B, T] random tokens in the grid interface's form (S seeds, each its own batch)."""
    k1, k2, k3, k4 = jax.random.split(key, 4)
    valid = int(sum(mcfg.action_mask))
    shape = (seeds, batch, seq)
    obs = jax.random.randint(k1, shape + mcfg.obs_shape, 0, 9).astype(mcfg.obs_dtype)
    act = jax.random.randint(k2, shape, 0, valid)
    tokens = model_lib.Tokens(obs=obs, prev_action=act,
                              prev_reward=jax.random.bernoulli(k3, 0.2, shape).astype(jnp.float32),
                              episode_start=jax.random.bernoulli(k4, 0.05, shape))
    return data_lib.Batch(tokens=tokens, target=jnp.roll(act, -1, axis=-1))


def measure(icfg: config_lib.ImitatorConfig, batch: int, steps: int, repeats: int = 3) -> dict:
    """Time ``steps`` train steps (median of ``repeats``) for one imitator config; with
    ``icfg.seeds`` S > 1 the step trains S imitators at once (vmapped, as the presets do) and
    tokens/s counts every seed's tokens."""
    spec = train_lib._HistorySpec((2,), "uint8", 5, (True,) * 4 + (False,))
    mcfg = model_lib.model_config(icfg, spec)
    seq = icfg.train_windows * icfg.context_len
    key = jax.random.key(0)
    state = jax.jit(functools.partial(train_lib.init_state, mcfg, icfg))(key)
    data = _random_batch(mcfg, icfg.seeds, batch, seq, key)
    step_fn = jax.jit(functools.partial(train_lib.train_step, mcfg, icfg, key), donate_argnums=0)
    t0 = time.perf_counter()
    compiled = step_fn.lower(state, data).compile()
    compile_s = time.perf_counter() - t0
    state, m = compiled(state, data)  # warm-up
    jax.block_until_ready(m)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(steps):
            state, m = compiled(state, data)
        jax.block_until_ready((state, m))
        times.append(time.perf_counter() - t0)
    med = float(np.median(times))
    tokens_per_s = steps * icfg.seeds * batch * seq / med
    flops = model_lib.flops_per_token(mcfg, seq, training=True)
    peak = peak_flops(jax.devices()[0])
    return {
        "d_model": mcfg.d_model, "n_layers": mcfg.n_layers, "n_heads": mcfg.n_heads,
        "context_len": mcfg.context_len, "seq_len": seq, "batch": batch, "seeds": icfg.seeds,
        "params": model_lib.num_params(model_lib.abstract(mcfg)),
        "compute_dtype": mcfg.compute_dtype,
        "attention": model_lib.attention_used(mcfg, batch, seq),
        "compile_s": round(compile_s, 3), "step_ms": round(1e3 * med / steps, 3),
        "tokens_per_s": round(tokens_per_s, 1), "flops_per_token": flops,
        "mfu": None if peak is None or mcfg.compute_dtype != "bfloat16"
        else round(flops * tokens_per_s / peak, 4),
        # The same time in the PaLM / nanoGPT convention (attention counted without the causal
        # mask), for comparison with figures quoted that way; "mfu" is the one the target uses.
        "mfu_full_attention": None if peak is None or mcfg.compute_dtype != "bfloat16"
        else round(model_lib.flops_per_token(mcfg, seq, causal=False) * tokens_per_s / peak, 4),
        "loss_finite": bool(np.all(np.isfinite(np.asarray(m.loss)))),
    }


def run(sizes: list[str], *, batch: int | None = None, steps: int = 10, reduced: bool = False,
        repeats: int = 3, seeds: int = 1) -> Iterator[dict]:
    """One record per size (two on GPU: cuDNN and XLA attention); ``seeds`` imitators per step."""
    base = config_lib.ImitatorConfig()
    device = jax.devices()[0]
    on_gpu = device.platform == "gpu"
    info = {"bench": "imitator", "backend": jax.default_backend(),
            "device_kind": getattr(device, "device_kind", str(device)),
            "devices": jax.device_count(), "jax_version": jax.__version__,
            "date": time.strftime("%Y-%m-%d")}
    for size in sizes:
        shrunk = reduced and size in REDUCED  # only a size that has a reduced version says so
        icfg = dataclasses.replace(base, seeds=seeds, **(REDUCED if shrunk else SIZES)[size])
        b = batch or (16 if size == "documented" else 64)
        if reduced:
            b = batch or 8
        tokens_per_s = {}  # by kernel; cuDNN runs first, so the XLA record can carry the ratio
        for kernel in ["cudnn", "xla"] if on_gpu else ["auto"]:
            rec = measure(dataclasses.replace(icfg, attention=kernel), b, steps, repeats)
            tokens_per_s[kernel] = rec["tokens_per_s"]
            ratio = round(tokens_per_s["cudnn"] / tokens_per_s[kernel], 3) if kernel == "xla" \
                else None
            yield {**info, "size": size + ("-reduced" if shrunk else ""), **rec,
                   "cudnn_xla_ratio": ratio}
