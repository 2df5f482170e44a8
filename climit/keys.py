"""Every random stream of a run, derived from ``run.seed``: one table, one place to change.

Each stage draws from its own stream, split off the run's seed by a constant no other stream uses,
so adding randomness to one stage (or re-running it) leaves the numbers of every other stage as
they were. JAX keys (the functions below):

    stream               from the run seed     then                               used by
    teacher tasks        PRNGKey, fold 101     envs.sample_tasks (train split)    teacher plan
    teacher learners     PRNGKey, fold 102     cells (task k, seed s)             dqn.init
    teacher greedy eval  PRNGKey, fold 103     split over the G learners          teacher summary
    imitator             key, fold 0x1D17      split: (init weights, steps)       imitator.train
    evaluation           key, fold 0xE7A1      fold 0..5: :class:`Evaluation`     evaluate
    inspect --eval       PRNGKey, fold 0x1A5E  fold --seed: :func:`inspect_eval`  inspect

The teacher's keys are raw ``uint32 [2]`` arrays (``PRNGKey``) because they live in the stacked,
checkpointed learner state and in the plan, and so is ``inspect --eval``'s, which rolls a
teacher's learners with them; the imitator's and the evaluation's are typed keys. Both hold the
same bits for the same seed and folds.

NumPy streams on the host (the imitator's data order, the statistics), with their salts here:

    held-out streams   default_rng([seed, HELDOUT_STREAMS])            data.split_streams
    shuffled episodes  default_rng([seed, stream, SHUFFLED_EPISODES])  data.stream_index
    training batches   hash_key(seed, replica, epoch)                  data.Sampler
    held-out batches   hash_key(seed ^ HELDOUT_BATCHES, 0, epoch)      data.heldout_batches
    bootstrap, test i  default_rng(seed + i) (i: 0 a, 1 b, 2 c)        report.summarize
    inspect --eval     default_rng(--seed) (its interval's bootstrap)  inspect (stats.describe)

(``data`` is :mod:`climit.imitator.data`.)
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

TEACHER_TASKS, TEACHER_LEARNERS, TEACHER_EVAL = 101, 102, 103
IMITATOR = 0x1D17
EVALUATION = 0xE7A1
INSPECT_EVAL = 0x1A5E
HELDOUT_STREAMS, SHUFFLED_EPISODES, HELDOUT_BATCHES = 0x4E1D, 0x5A0F, 0x7E57


def teacher_tasks(seed: int) -> jax.Array:
    """Raw key that orders the training tasks the teacher's learners get."""
    return jax.random.fold_in(jax.random.PRNGKey(seed), TEACHER_TASKS)


def teacher_learners(seed: int) -> jax.Array:
    """Raw root of the learners' keys (:func:`climit.teacher.dqn.learner_keys`)."""
    return jax.random.fold_in(jax.random.PRNGKey(seed), TEACHER_LEARNERS)


def teacher_eval(seed: int) -> jax.Array:
    """Raw key of the teacher's final greedy evaluation (split over the learners)."""
    return jax.random.fold_in(jax.random.PRNGKey(seed), TEACHER_EVAL)


def imitator(seed: int) -> tuple[jax.Array, jax.Array]:
    """(initial weights, training steps) keys of the imitator. Every imitator variant of a run
    (AD, ED, the ablated control, their H-trained versions) gets the same two, so their seed s
    starts from the same weights: the statistics pair them by seed (stats.difference)."""
    init_key, step_key = jax.random.split(jax.random.fold_in(jax.random.key(seed), IMITATOR))
    return init_key, step_key


class Evaluation(NamedTuple):
    """The evaluation's keys: held-out tasks and environment keys of the training family, the
    fresh DQNs' keys there, and the same three for test (c)'s family. Field i is
    ``fold_in(root, i)``: a new stream goes last, or the ones after it move."""

    tasks: jax.Array
    env: jax.Array
    dqn: jax.Array
    transfer_tasks: jax.Array
    transfer_env: jax.Array
    transfer_dqn: jax.Array


def evaluation(seed: int) -> Evaluation:
    """The evaluation's keys, a function of ``run.seed`` alone: every agent, re-run or later
    script meets the same tasks and environment seeds."""
    root = jax.random.fold_in(jax.random.key(seed), EVALUATION)
    return Evaluation(*(jax.random.fold_in(root, i) for i in range(len(Evaluation._fields))))


def inspect_eval(seed: int, eval_seed: int) -> jax.Array:
    """Raw root key of ``climit inspect --eval --seed eval_seed``, apart from every training and
    evaluation stream: a teacher's G learners split it; an imitator takes its held-out tasks
    from ``fold_in(root, 0)`` and its rollout keys from ``fold_in(root, 1)``."""
    return jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(seed), INSPECT_EVAL), eval_seed)


def cells(key: jax.Array, rows_R: jax.Array, cols_C: jax.Array) -> jax.Array:
    """Keys [R, C] (raw keys: uint32 [R, C, 2]): ``fold_in(fold_in(key, rows_R[i]), cols_C[j])``.
    A cell's key depends on its own (row, column) only, so adding rows or columns leaves the
    other cells' keys unchanged."""
    return jax.vmap(lambda i: jax.vmap(lambda j: jax.random.fold_in(jax.random.fold_in(key, i), j))(
        jnp.asarray(cols_C)))(jnp.asarray(rows_R))
