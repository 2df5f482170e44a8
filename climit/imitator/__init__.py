"""The transformer imitator (Algorithm Distillation) and its controls.

model      decoder-only causal transformer, one token per step, ring-buffer KV cache
data       histories -> context windows (AD / ED / shuffled / single-episode, horizon, subsampling)
train      ``climit imitate``: vmapped seeds, data parallel, checkpoints, resume; ``load``
policy     the frozen imitator as a ``climit.rollout`` policy
bench      ``climit bench imitator``
synthetic  a tiny history with a known answer (tests, smoke runs)
"""
