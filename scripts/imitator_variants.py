"""The imitator's train step with one piece of the model changed, at the documented size.

The MFU work of issue 4, one change at a time: each named variant patches one piece of
`climit.imitator.model` (nothing is committed to the model by running this), times the real
jitted train step with `climit.imitator.bench.measure` (d 512, 8 layers, 8 heads, 2048 tokens,
batch 16, bf16, cuDNN attention on GPU) and prints one JSON line with its step time and MFU.
Run it under different ``XLA_FLAGS`` to time compiler settings (flags are read once per process).

Variants:

- ``committed``: the model as it is (since 2026-11-26, session 9: the residual stream in the
  compute dtype, bf16 on GPU; norm statistics, RoPE and logits in float32);
- ``f32_stream``: the residual stream in float32, as the model had it before (twice the bytes
  of every residual read and write);
- ``rope_bf16``: RoPE computed in the compute dtype as well;
- ``no_rope`` and ``no_norm``: probes, not candidates: RoPE or RMSNorm removed, to show what
  each costs.

(In ``docs/bench/2026-11-26-h200-mfu/``, measured before the change, ``committed`` is today's
``f32_stream``, ``bf16_stream`` today's ``committed`` and ``bf16_stream_rope`` today's
``rope_bf16``.)

Usage (GPU): ``python scripts/imitator_variants.py committed f32_stream``; ``--small`` shrinks
the size for a CPU dry run.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
from typing import Callable, Iterator

import jax
import jax.numpy as jnp

from climit import config as config_lib
from climit.imitator import bench
from climit.imitator import model as model_lib


def _rotate_in_input_dtype(x_xNxh, cos_xh, sin_xh):
    """model._rotate without the float32 round trip."""
    x1, x2 = jnp.split(x_xNxh, 2, axis=-1)
    c = cos_xh[..., None, :].astype(x_xNxh.dtype)
    s = sin_xh[..., None, :].astype(x_xNxh.dtype)
    return jnp.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], -1)


def _patches(name: str) -> list[tuple[object, str, Callable]]:
    """(owner, attribute, replacement) triples of one variant."""
    embed = model_lib.Transformer.embed  # the blocks keep whatever dtype the stream starts in
    return {
        "committed": [],
        "f32_stream": [(model_lib.Transformer, "embed",
                        lambda self, tok: embed(self, tok).astype(jnp.float32))],
        "rope_bf16": [(model_lib, "_rotate", _rotate_in_input_dtype)],
        "no_rope": [(model_lib, "_rotate", lambda x, cos, sin: x)],
        "no_norm": [(model_lib, "_rms_norm", lambda scale, x: x)],
    }[name]


@contextlib.contextmanager
def patched(name: str) -> Iterator[None]:
    """The model with variant ``name``'s pieces swapped in, restored on exit."""
    saved = []
    for owner, attr, new in _patches(name):
        saved.append((owner, attr, getattr(owner, attr)))
        setattr(owner, attr, new)
    jax.clear_caches()  # jit's trace cache would otherwise reuse the unpatched trace
    try:
        yield
    finally:
        for owner, attr, old in reversed(saved):
            setattr(owner, attr, old)
        jax.clear_caches()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variants", nargs="+")
    parser.add_argument("--small", action="store_true", help="CPU dry run at a tiny size")
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    sizes = bench.REDUCED if args.small else bench.SIZES
    on_gpu = jax.default_backend() == "gpu"
    icfg = dataclasses.replace(config_lib.ImitatorConfig(), **sizes["documented"],
                               attention="cudnn" if on_gpu else "auto")
    batch = 4 if args.small else args.batch
    for name in args.variants:
        with patched(name):
            rec = bench.measure(icfg, batch, steps=2 if args.small else 10,
                                repeats=1 if args.small else 3)
        print(json.dumps({"variant": name, "xla_flags": os.environ.get("XLA_FLAGS", ""),
                          "device": jax.devices()[0].device_kind, "batch": batch,
                          **{k: rec[k] for k in ("attention", "compile_s", "step_ms",
                                                 "tokens_per_s", "mfu", "mfu_full_attention",
                                                 "loss_finite")}}), flush=True)


if __name__ == "__main__":
    main()
