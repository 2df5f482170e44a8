"""A tiny synthetic learning history with a known answer, for tests and smoke runs.

Each stream is a scripted "learner" on a 4-armed task (interface: 5 actions, the 5th padded and
invalid) whose good arm ``g`` is hidden in the task ``(g, variant)``: arm g always pays 1, the
others pay 1 with probability 1/4. The learner cycles through the arms and skips one whenever
the pull two steps back paid off:

    a_t = (a_{t-1} + 1 + r_{t-2}) mod 4          (a_0 random, r_{-1} = 0)

So every action is a known function of an earlier reward that sits in the *previous* token
(its ``prev_reward``): an imitator predicts all actions after the first two only if it reads
the context; without the rewards it can do no better than 1/2, and chance is 1/4.

Observations are ``(step within the episode, 0)`` as uint8 (the grid interface's form).
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Sequence

import numpy as np

from climit import histories

NUM_ARMS = 4
SPEC = {"name": "synthetic-bandit", "interface": "grid", "obs_shape": [2], "obs_dtype": "uint8",
        "num_actions": NUM_ARMS + 1, "action_mask": [True] * NUM_ARMS + [False],
        "episode_len": None, "task_dim": 2}


def learner_stream(good_arm: int, steps: int, episode_len: int, rng: np.random.Generator) -> dict:
    """One stream's fields: obs [T, 2] uint8, action/reward/terminated/truncated [T]."""
    action = np.zeros(steps, np.uint8)
    reward = np.zeros(steps, np.float32)
    luck = rng.random(steps) < 0.25
    a, r_prev2 = int(rng.integers(NUM_ARMS)), 0.0
    for t in range(steps):
        if t > 0:
            a = (int(action[t - 1]) + 1 + int(r_prev2)) % NUM_ARMS
        action[t], reward[t] = a, float(a == good_arm or luck[t])
        r_prev2 = reward[t - 1] if t > 0 else 0.0
    t_in_ep = np.arange(steps) % episode_len
    obs = np.stack([t_in_ep, np.zeros(steps, np.int64)], -1).astype(np.uint8)
    return {"obs": obs, "action": action, "reward": reward,
            "terminated": np.zeros(steps, bool), "truncated": t_in_ep == episode_len - 1}


def write_history(path: str | Path, *, variants: int = 3, seeds: int = 1, envs: int = 1,
                  steps: int = 200, episode_len: int = 4, chunk: int = 64, seed: int = 0,
                  total_env_steps: int | None = None,
                  good_arms: Sequence[int] = tuple(range(NUM_ARMS))) -> histories.History:
    """Write a complete history of ``len(good_arms) * variants * seeds`` learners with ``envs``
    streams each: one task ``(g, v)`` per good arm g and variant v, ``seeds`` learners per task
    (``good_arms=(g,), variants=1``: a single-task history, whose held-out set is learners).

    ``total_env_steps`` (per learner, recorded in the stored config as teacher.total_env_steps)
    defaults to ``steps * envs``.
    """
    rng = np.random.default_rng(seed)
    infos, fields = [], []
    learners = itertools.product(good_arms, range(variants), range(seeds))
    for learner, (g, v, s) in enumerate(learners):  # (g, v, s, e) order fixes the rng draws
        infos += [histories.StreamInfo(learner, e, (g, v), s, {}) for e in range(envs)]
        fields += [learner_stream(g, steps, episode_len, rng) for _ in range(envs)]
    total = total_env_steps or steps * envs
    w = histories.create(path, spec=SPEC, streams=infos, total_steps=steps, streams_per_chunk=5,
                         config={"teacher": {"total_env_steps": total, "num_envs": envs}},
                         overwrite=True, check_space=False)
    with w:
        for t0 in range(0, steps, chunk):
            t1 = min(steps, t0 + chunk)
            w.append(*[np.stack([f[k][t0:t1] for f in fields]) for k in histories.STEP_FIELDS])
    return histories.open(path)
