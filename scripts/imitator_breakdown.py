"""Where the imitator's train step spends its time, at `climit bench imitator`'s documented size.

A poor man's profile for the MFU work (issue 4): each part of the step is jitted and timed
alone, with the same shapes as the real step (d 512, 8 layers, 8 heads, 2048 tokens, batch 16,
bf16 compute, cuDNN attention), and printed as one JSON line:

- ``train_step``: the real step (`climit.imitator.bench.measure`), the MFU figure of the README;
- ``forward`` and ``forward_backward``: the model and loss without the optimizer;
- ``adamw``: the optimizer update alone on the model's parameter tree (in the real step XLA
  overlaps much of it: compare ``train_step`` with ``forward_backward``);
- ``attention``: cuDNN causal attention, forward and forward + backward, times the layer count;
- ``dense``: the block's four matmuls (qkv, out, MLP up and down), bf16, forward + backward,
  chained with a GELU and residual adds, times the layer count, with the TFLOP/s they reach;
- ``gemm``: the same twelve products (three per weight: forward, input and weight gradients)
  as bare GEMMs, each timed alone, times the layer count: what the block's matmuls cost if
  every norm, RoPE, residual and GELU pass were free.

Usage (GPU): ``python scripts/imitator_breakdown.py``; ``--small`` shrinks every size for a CPU
dry run (XLA attention, float32, no MFU).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from climit import config as config_lib
from climit.imitator import bench
from climit.imitator import model as model_lib
from climit.imitator import train as train_lib


def _ms(fn, *args, steps: int = 10, repeats: int = 3) -> float:
    """Median wall time of one call of jitted ``fn(*args)``, in ms (compile and warm-up apart)."""
    compiled = jax.jit(fn).lower(*args).compile()
    jax.block_until_ready(compiled(*args))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(steps):
            out = compiled(*args)
        jax.block_until_ready(out)
        times.append((time.perf_counter() - t0) / steps)
    return round(1e3 * float(np.median(times)), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="CPU dry run at a tiny size")
    args = parser.parse_args()
    sizes = bench.REDUCED if args.small else bench.SIZES
    batch = 4 if args.small else 16
    on_gpu = jax.default_backend() == "gpu"
    icfg = dataclasses.replace(config_lib.ImitatorConfig(), **sizes["documented"],
                               attention="cudnn" if on_gpu else "xla")
    spec = train_lib._HistorySpec((2,), "uint8", 5, (True,) * 4 + (False,))
    mcfg = model_lib.model_config(icfg, spec)
    d, n_layers, seq, dt = mcfg.d_model, mcfg.n_layers, mcfg.context_len, mcfg.dtype
    key = jax.random.key(0)
    device = jax.devices()[0].device_kind

    def emit(**record) -> None:
        print(json.dumps({"device": device, **record}), flush=True)

    # The dense matmuls of every block alone (x n_layers), forward + backward.
    x_NxD = jax.random.normal(key, (batch * seq, d), dt)
    shapes = [(d, 3 * d), (d, d), (d, mcfg.mlp_ratio * d), (mcfg.mlp_ratio * d, d)]
    ws = [0.02 * jax.random.normal(jax.random.fold_in(key, i), s, dt) for i, s in enumerate(shapes)]

    def dense(ws, x_NxD):
        """A block's matmuls on tokens [N, D], chained so that every product (and its gradient)
        is live: qkv [N, 3D] -> its first D columns through the output projection -> residual
        -> MLP. Returns a float32 scalar."""
        for _ in range(n_layers):
            x_NxD = x_NxD + x_NxD.dtype.type(0.1) * ((x_NxD @ ws[0])[:, :d] @ ws[1])
            x_NxD = x_NxD + jax.nn.gelu(x_NxD @ ws[2]) @ ws[3]
        return jnp.sum(x_NxD.astype(jnp.float32))

    ms = _ms(jax.grad(dense, argnums=(0, 1)), ws, x_NxD)
    flops = 3 * n_layers * 2 * batch * seq * sum(a * b for a, b in shapes)
    emit(part="dense", ms=ms, tflops_per_s=round(flops / ms / 1e9, 1))

    # The same matmuls as bare GEMMs, each timed alone: for every weight shape [K, M] the
    # forward product and the two backward ones (input and weight gradients). Their sum over
    # the layers is what the block's matmuls cost with no elementwise work at all.
    gemm_ms = 0.0
    for i, (k_in, k_out) in enumerate(shapes):
        g_NxM = jax.random.normal(jax.random.fold_in(key, 10 + i), (batch * seq, k_out), dt)
        x_NxK = x_NxD if k_in == d else jax.random.normal(key, (batch * seq, k_in), dt)
        gemm_ms += n_layers * _ms(lambda x, w, g: (x @ w, g @ w.T, x.T @ g), x_NxK, ws[i], g_NxM)
    emit(part="gemm", ms=round(gemm_ms, 3), tflops_per_s=round(flops / gemm_ms / 1e9, 1))

    # Causal attention alone (x8 layers).
    shape = (batch, seq, mcfg.n_heads, mcfg.head_dim)
    q, k, v = (jax.random.normal(jax.random.fold_in(key, i), shape, dt) for i in range(3))

    def attention(q, k, v):
        """Causal attention over [B, T, N, h] inputs, reduced to a float32 scalar."""
        out = jax.nn.dot_product_attention(q, k, v, is_causal=True,
                                           implementation=model_lib.attention_impl(mcfg))
        return jnp.sum(out.astype(jnp.float32) ** 2)

    emit(part="attention", impl=model_lib.attention_impl(mcfg),
         forward_ms=round(n_layers * _ms(attention, q, k, v), 3),
         forward_backward_ms=round(
             n_layers * _ms(jax.grad(attention, argnums=(0, 1, 2)), q, k, v), 3))

    # The model and loss, then the optimizer alone.
    params = model_lib.init(mcfg, key)
    data = bench._random_batch(mcfg, 1, batch, seq, key)
    tokens, target = jax.tree.map(lambda x: x[0], data.tokens), data.target[0]

    def loss(tree):
        """Mean action cross-entropy of the model on the [B, T] batch."""
        logits = model_lib.forward(model_lib.Params(mcfg, tree), tokens)
        return train_lib.action_loss(mcfg, logits, target)[0].mean()

    emit(part="forward", ms=_ms(loss, params.tree))
    emit(part="forward_backward", ms=_ms(jax.value_and_grad(loss), params.tree))
    opt = train_lib.optimizer(icfg)
    grads = jax.tree.map(jnp.ones_like, params.tree)
    emit(part="adamw", ms=_ms(lambda g, state, tree: opt.update(g, state, tree),
                              grads, opt.init(params.tree), params.tree))

    step = bench.measure(icfg, batch, steps=10, repeats=3)
    emit(part="train_step", ms=step["step_ms"], mfu=step["mfu"], tokens_per_s=step["tokens_per_s"])


if __name__ == "__main__":
    main()
