"""The transformer imitator (Algorithm Distillation) and its controls.

model      decoder-only causal transformer, one token per step, ring-buffer KV cache
data       histories -> context windows (AD / ED / shuffled / single-episode, horizon, subsampling)
train      ``climit imitate``: vmapped seeds, data parallel, checkpoints, resume; ``load``
policy     the frozen imitator as a ``climit.rollout`` policy
bench      ``climit bench imitator``
synthetic  a tiny history with a known answer (tests, smoke runs)
"""

try:
    from flax import nnx as _nnx  # noqa: F401
except AttributeError as _e:
    # e.g. flax 0.12.8/0.12.9 import a jax.experimental name jax 0.11.1+ dropped
    import flax as _flax
    import jax as _jax

    raise ImportError(
        f"flax {_flax.__version__} does not import under jax {_jax.__version__} ({_e}); install "
        "the flax release made for this jax (jax 0.11.x needs flax >= 0.12.10) or jax "
        "0.10.x") from _e
