"""Learning bars at reduced size (the full bars are documented commands; see the report)."""

from __future__ import annotations

import jax
import numpy as np

from climit import config, envs
from climit.teacher import train


def test_darkroom_preset_reaches_90_percent_of_optimal_on_hard_goals():
    # The preset's learner on 8 goals including the four corners (farthest from the start).
    cfg = config.load("configs/teacher_darkroom.yaml")
    goals = np.array([[0, 0], [8, 8], [0, 8], [8, 0], [4, 4], [1, 7], [7, 2], [3, 5]], np.int32)
    env = envs.make("darkroom")
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.PRNGKey(11), i))(np.arange(len(goals)))
    res = train.train_learners(cfg.teacher, env, goals, keys)
    returns = train.evaluate_greedy(cfg.teacher, env, res.params_G, goals,
                                    jax.random.PRNGKey(12), 2)
    optimal = np.array([envs.make("darkroom").gym.optimal_return(tuple(g)) for g in goals])
    assert (returns >= 0.9 * optimal).all(), list(zip(goals.tolist(), returns, optimal))
