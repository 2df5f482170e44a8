"""The run's random streams (climit/keys.py): pinned, apart from each other, and per seed."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np

from climit import keys


def _data(key) -> list[int]:
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    return np.asarray(key).tolist()


def _streams(seed: int) -> dict[str, list[int]]:
    out = {"teacher tasks": keys.teacher_tasks(seed),
           "teacher learners": keys.teacher_learners(seed),
           "teacher eval": keys.teacher_eval(seed), "inspect": keys.inspect_eval(seed, 0),
           "inspect seed 1": keys.inspect_eval(seed, 1)}
    out.update(zip(("imitator init", "imitator steps"), keys.imitator(seed)))
    out.update(keys.evaluation(seed)._asdict())
    return {name: _data(k) for name, k in out.items()}


def test_the_streams_of_seed_0_are_those_every_published_figure_was_made_with():
    # Pinned bits: a stream that moves silently changes every teacher, imitator and evaluation
    # (and the README's figures) without any other test noticing.
    got = _streams(0)
    assert got["teacher tasks"] == [3989841952, 942888756]
    assert got["teacher learners"] == [2636944965, 3798527910]
    assert got["teacher eval"] == [2914981055, 954773331]
    assert got["imitator init"] == [4040661036, 1034111917]
    assert got["imitator steps"] == [3771075419, 506676792]
    assert [got[f] for f in keys.Evaluation._fields] == [
        [386169696, 4201310132], [3467875684, 3355418945], [989253058, 2842275137],
        [2242090125, 696953264], [99204192, 374878145], [3309104320, 1343083418]]
    assert got["inspect"] == [880221528, 893668113]


def test_every_stream_is_apart_from_every_other_and_from_another_seeds():
    every = [(seed, name, tuple(k)) for seed in (0, 1, 2**32 - 1)
             for name, k in _streams(seed).items()]
    assert len({k for _, _, k in every}) == len(every)


def test_teacher_keys_are_raw_and_the_others_typed():
    assert keys.teacher_learners(3).dtype == jnp.uint32 and keys.teacher_learners(3).shape == (2,)
    assert keys.inspect_eval(3, 0).dtype == jnp.uint32
    for k in (*keys.imitator(3), *keys.evaluation(3)):
        assert jax.dtypes.issubdtype(k.dtype, jax.dtypes.prng_key) and k.shape == ()


def test_a_cells_key_is_its_row_and_column_alone():
    root = jax.random.key(7)
    small = _data(keys.cells(root, jnp.arange(2), jnp.arange(3)))
    large = _data(keys.cells(root, jnp.arange(4), jnp.arange(5)))
    for i, j in itertools.product(range(2), range(3)):
        want = _data(jax.random.fold_in(jax.random.fold_in(root, i), j))
        assert small[i][j] == large[i][j] == want
    # chosen rows keep their keys: rows (3, 1) are rows 3 and 1 of the full grid
    chosen = _data(keys.cells(root, jnp.array([3, 1]), jnp.arange(5)))
    assert chosen == [large[3], large[1]]
    flat = {tuple(c) for row in large for c in row}
    assert len(flat) == 4 * 5


def test_the_numpy_salts_are_pinned_and_apart():
    # The host streams (held-out split, episode shuffles, held-out batches) are seeded with
    # these salts: a salt that moves reorders every imitator's data without any JAX key moving,
    # and two equal salts would draw the same numbers for two streams.
    salts = (keys.HELDOUT_STREAMS, keys.SHUFFLED_EPISODES, keys.HELDOUT_BATCHES)
    assert salts == (0x4E1D, 0x5A0F, 0x7E57)
    jax_folds = (keys.TEACHER_TASKS, keys.TEACHER_LEARNERS, keys.TEACHER_EVAL, keys.IMITATOR,
                 keys.EVALUATION, keys.INSPECT_EVAL)
    assert len(set(salts)) == 3 and len(set(jax_folds)) == 6
