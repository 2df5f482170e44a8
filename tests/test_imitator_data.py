"""Imitator datasets: windows hold exactly the steps they claim; sampling is pure and sharded."""

import math

import numpy as np
import pytest

from climit import config, histories
from climit.errors import ClimitError
from climit.imitator import data as D
from climit.imitator import synthetic
from climit.imitator.model import NO_ACTION


@pytest.fixture(scope="module")
def hist(tmp_path_factory):
    """24 streams (12 tasks x 2 envs), 200 steps, episodes of 4 (random-length ones below)."""
    return synthetic.write_history(tmp_path_factory.mktemp("h") / "histories", steps=200, envs=2)


@pytest.fixture(scope="module")
def ragged(tmp_path_factory):
    """Two learners, one stream each, with episodes of varied lengths (one unfinished at the
    end)."""
    rng = np.random.default_rng(3)
    T = 150
    lengths = rng.integers(2, 9, 40)
    done = np.zeros(T, bool)
    done[np.cumsum(lengths)[np.cumsum(lengths) < T] - 1] = True
    done[-1] = False
    infos = [histories.StreamInfo(i, 0, (i, 0), 0, {}) for i in range(2)]
    w = histories.create(tmp_path_factory.mktemp("r") / "h", spec=synthetic.SPEC, streams=infos,
                         total_steps=T, check_space=False)
    step = np.arange(T)
    obs = np.stack([np.stack([step % 256, np.full(T, i)], -1) for i in range(2)]).astype(np.uint8)
    action = np.stack([(step * 7 + i) % 4 for i in range(2)]).astype(np.uint8)
    reward = np.stack([step * 0.5 + i for i in range(2)]).astype(np.float32)
    term = np.stack([done, done])
    with w:
        for t0 in range(0, T, 40):
            sl = slice(t0, t0 + 40)
            w.append(obs[:, sl], action[:, sl], reward[:, sl], term[:, sl],
                     np.zeros_like(term[:, sl]))
    return histories.open(w.path)


def virtual_stream(h, stream, ix):
    """The steps of a stream's virtual stream, read the slow obvious way."""
    return np.concatenate([np.arange(s, s + n) for s, n in zip(ix.start, ix.length)])


def check_window_contents(h, ds, w):
    """Every field of window w equals the raw history at the virtual steps it claims."""
    stream, o = ds.locate(w)
    ix = ds.index[stream]
    steps = virtual_stream(h, stream, ix)
    T = ds.spec.seq_len
    win = ds.window(w)
    raw = h.read_steps(stream)
    np.testing.assert_array_equal(win.tokens.obs, raw["obs"][steps[o:o + T]])
    np.testing.assert_array_equal(win.target, raw["action"][steps[o:o + T]])
    prev = steps[o - 1:o + T - 1] if o > 0 else steps[:T - 1]
    exp_prev_a = raw["action"][prev].astype(np.int32)
    exp_prev_r = raw["reward"][prev]
    if o == 0:
        exp_prev_a = np.concatenate([[NO_ACTION], exp_prev_a])
        exp_prev_r = np.concatenate([[0.0], exp_prev_r])
    np.testing.assert_array_equal(win.tokens.prev_action, exp_prev_a)
    np.testing.assert_array_equal(win.tokens.prev_reward, exp_prev_r)
    first = set(ix.offset[:-1].tolist())
    np.testing.assert_array_equal(win.tokens.episode_start, [v in first for v in range(o, o + T)])
    return steps[o:o + T]


def test_permute_is_a_keyed_bijection():
    for n in (1, 2, 7, 1000, 4097):
        p = D.permute(np.arange(n), n, D.hash_key(1, 2))
        assert sorted(p.tolist()) == list(range(n))
    a = D.permute(np.arange(500), 500, D.hash_key(0))
    assert not np.array_equal(a, D.permute(np.arange(500), 500, D.hash_key(1)))
    np.testing.assert_array_equal(a, D.permute(np.arange(500), 500, D.hash_key(0)))
    assert not np.array_equal(a, np.arange(500))


def test_sampler_is_pure_covers_each_epoch_once_and_replicas_differ():
    s = D.Sampler(num_windows=96, batch_size=8, seed=5)
    epoch = np.concatenate([s.ids(i) for i in range(12)])
    assert sorted(epoch.tolist()) == list(range(96))
    nxt = np.concatenate([s.ids(i) for i in range(12, 24)])
    assert sorted(nxt.tolist()) == list(range(96)) and not np.array_equal(epoch, nxt)
    np.testing.assert_array_equal(s.ids(7), D.Sampler(96, 8, 5).ids(7))  # resumable: f(seed, i)
    assert not np.array_equal(s.ids(3, replica=0), s.ids(3, replica=1))
    assert not np.array_equal(s.ids(3), D.Sampler(96, 8, 6).ids(3))
    # all replicas at once: row r is replica r's batch
    np.testing.assert_array_equal(s.ids(9, np.array([0, 3, 1])),
                                  np.stack([s.ids(9, r) for r in (0, 3, 1)]))


@pytest.mark.parametrize("num_windows, batch_size", [(96, 8), (50, 8), (5, 12)])
def test_cached_epoch_orders_give_the_same_ids(num_windows, batch_size):
    # The Loader's sampler indexes whole-epoch orders; they must equal the per-batch Feistel
    # ids at epoch boundaries inside a batch, with more rows than windows (several epochs in
    # one batch), for several replicas at once, and when a resume goes back to earlier steps.
    plain = D.Sampler(num_windows, batch_size, seed=3)
    cached = D.Sampler(num_windows, batch_size, seed=3, cache_orders=True)
    replicas = np.array([0, 2, 1])
    for step in [*range(40), 7, 0, 33]:
        np.testing.assert_array_equal(cached.ids(step, replicas), plain.ids(step, replicas))
        np.testing.assert_array_equal(cached.ids(step), plain.ids(step))
    assert len(cached._orders) <= 3 * 2 * (batch_size // num_windows + 2)  # old epochs dropped


def test_ad_windows_are_exact_slices_across_episodes(hist, ragged):
    for h in (hist, ragged):
        spec = D.DatasetSpec(variant="ad", seq_len=13)
        ds = D.WindowDataset(h, range(h.num_streams), spec)
        assert ds.num_windows == sum(h.num_steps - 13 + 1 for _ in range(h.num_streams))
        for w in (0, 1, 5, ds.num_windows // 2, ds.num_windows - 1):
            steps = check_window_contents(h, ds, w)
            np.testing.assert_array_equal(steps, np.arange(steps[0], steps[0] + 13))


def test_subsampling_keeps_every_kth_episode_and_links_prev_action_across_the_gap(ragged):
    ad = D.stream_index(ragged, 0, D.DatasetSpec(seq_len=10))
    sub = D.stream_index(ragged, 0, D.DatasetSpec(seq_len=10, subsample=3))
    np.testing.assert_array_equal(sub.start, ad.start[::3])
    np.testing.assert_array_equal(sub.length, ad.length[::3])
    ds = D.WindowDataset(ragged, [0], D.DatasetSpec(seq_len=10, subsample=3))
    for w in range(0, ds.num_windows, 7):
        check_window_contents(ragged, ds, w)
    # the first step of kept episode 1 sees the last action of kept episode 0 (3 episodes back)
    o = int(sub.offset[1])
    win = ds.window(o - 1)
    assert win.tokens.episode_start[1]
    last_of_prev = int(sub.start[0] + sub.length[0] - 1)
    assert win.tokens.prev_action[1] == ragged.read("action", 0)[last_of_prev]


def test_ed_holds_exactly_the_final_fraction(ragged):
    spec = D.DatasetSpec(variant="ed", seq_len=5, ed_fraction=0.3)
    ix = D.stream_index(ragged, 1, spec)
    ep = ragged.episodes(1)
    cut = np.ceil(0.7 * ragged.num_steps)
    np.testing.assert_array_equal(ix.start, ep.start[ep.start >= cut])
    ds = D.WindowDataset(ragged, [1], spec)
    seen = set()
    for w in range(ds.num_windows):
        seen.update(check_window_contents(ragged, ds, w).tolist())
    assert min(seen) >= cut and max(seen) == ragged.num_steps - 1
    assert seen == set(virtual_stream(ragged, 1, ix).tolist())


def test_horizon_keeps_only_the_first_h_env_steps_per_learner(hist, ragged):
    ix = D.stream_index(ragged, 0, D.DatasetSpec(seq_len=5, horizon=61))
    steps = virtual_stream(ragged, 0, ix)
    np.testing.assert_array_equal(steps, np.arange(61))  # the episode crossing 61 is cut there
    # two envs per learner: H counts the learner's env steps, so each stream keeps H // 2
    ix2 = D.stream_index(hist, 3, D.DatasetSpec(seq_len=5, horizon=100))
    np.testing.assert_array_equal(virtual_stream(hist, 3, ix2), np.arange(50))
    assert D.envs_per_learner(hist) == 2


def test_shuffled_permutes_the_same_episodes_deterministically(ragged):
    ad = D.stream_index(ragged, 0, D.DatasetSpec(seq_len=10, subsample=2))
    sh = D.stream_index(ragged, 0, D.DatasetSpec(variant="shuffled", seq_len=10, subsample=2))
    assert sorted(zip(sh.start, sh.length)) == sorted(zip(ad.start, ad.length))
    assert not np.array_equal(sh.start, ad.start)
    again = D.stream_index(ragged, 0, D.DatasetSpec(variant="shuffled", seq_len=10, subsample=2))
    np.testing.assert_array_equal(sh.start, again.start)
    other = D.stream_index(ragged, 0, D.DatasetSpec(variant="shuffled", seq_len=10, subsample=2,
                                                    seed=1))
    assert not np.array_equal(sh.start, other.start)
    ds = D.WindowDataset(ragged, [0], D.DatasetSpec(variant="shuffled", seq_len=10, subsample=2))
    for w in range(0, ds.num_windows, 5):
        check_window_contents(ragged, ds, w)


def test_single_episode_variant_reads_the_ad_data(ragged):
    """The single-episode ablation is a property of the model (episode-local attention)."""
    a = D.WindowDataset(ragged, [0, 1], D.DatasetSpec(variant="ad", seq_len=9))
    b = D.WindowDataset(ragged, [0, 1], D.DatasetSpec(variant="single_episode", seq_len=9))
    for w in (0, 17, 100):
        for x, y in zip(a.window(w).tokens, b.window(w).tokens):
            np.testing.assert_array_equal(x, y)


def test_heldout_split_holds_out_whole_tasks(hist, ragged):
    train, held = D.split_streams(hist, 0.25, seed=0)
    tasks = lambda ss: {hist.stream_info(s).task for s in ss}  # noqa: E731
    assert sorted(train + held) == list(range(hist.num_streams))
    assert tasks(train).isdisjoint(tasks(held)) and len(tasks(held)) == 3
    assert D.split_streams(hist, 0.25, seed=0) == (train, held)
    assert D.split_streams(hist, 0.25, seed=1) != (train, held)
    t2, h2 = D.split_streams(ragged, 0.5, seed=0)
    assert len(t2) == len(h2) == 1


def test_process_shards_of_a_batch_concatenate_to_the_global_batch(hist):
    ds = D.WindowDataset(hist, range(hist.num_streams), D.DatasetSpec(seq_len=12))
    full = D.Loader(ds, 8, replicas=2, seed=3).batch(4)
    parts = [D.Loader(ds, 8, 2, 3, process_index=p, process_count=4).batch(4) for p in range(4)]
    for k in range(len(full.tokens)):
        np.testing.assert_array_equal(np.concatenate([p.tokens[k] for p in parts], axis=1),
                                      full.tokens[k])
    np.testing.assert_array_equal(np.concatenate([p.target for p in parts], axis=1), full.target)
    assert full.target.shape == (2, 8, 12) and full.tokens.obs.shape == (2, 8, 12, 2)
    assert not np.array_equal(full.target[0], full.target[1])  # replicas draw different windows
    with pytest.raises(ClimitError, match="batch_size"):
        D.Loader(ds, 6, 1, 0, process_index=0, process_count=4)


def test_prefetcher_yields_the_same_batches_in_order(hist):
    ds = D.WindowDataset(hist, range(4), D.DatasetSpec(seq_len=12))
    loader = D.Loader(ds, 4, 1, 0)
    direct = [loader.batch(i).target for i in range(3, 9)]
    for depth in (0, 3):
        pf = D.Prefetcher(loader.batch, 3, 9, depth)
        got = [b.target for b in pf]
        pf.close()
        assert len(got) == 6 and all(np.array_equal(a, b) for a, b in zip(got, direct))


def test_too_long_sequences_are_a_clear_error(ragged):
    ds = D.WindowDataset(ragged, [0], D.DatasetSpec(seq_len=1000))
    assert ds.num_windows == 0
    with pytest.raises(ClimitError, match="context_len"):
        D.Loader(ds, 4, 1, 0)


def stacked_windows(ds, ids):
    """The reference: ``ds.window`` of each id, stacked."""
    parts = [ds.window(int(w)) for w in ids]
    return D.Batch(D.Tokens(*[np.stack([p.tokens[k] for p in parts]) for k in range(4)]),
                   np.stack([p.target for p in parts]))


def assert_batches_identical(a, b):
    for x, y in zip((*a.tokens, a.target), (*b.tokens, b.target)):
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(x, y)


VARIANTS = [dict(seq_len=13), dict(seq_len=40), dict(seq_len=10, subsample=3),
            dict(variant="ed", seq_len=5, ed_fraction=0.3),
            dict(variant="single_episode", seq_len=9),
            dict(variant="shuffled", seq_len=10, subsample=2),
            dict(variant="shuffled", seq_len=6, subsample=2, horizon=122, seed=4),
            dict(variant="ed", seq_len=4, subsample=2, horizon=100, ed_fraction=0.5)]


@pytest.mark.parametrize("kw", VARIANTS, ids=lambda kw: "-".join(f"{k}{v}" for k, v in kw.items()))
def test_vectorized_windows_equal_stacked_window_for_every_variant(hist, ragged, kw):
    """In memory and in the per-window fallback, a batch is bit-identical to stacking window():
    random ids, every window at virtual offset 0 (no previous step), and the windows on both
    sides of every stream boundary of the flat index; long windows span many episodes."""
    rng = np.random.default_rng(len(str(kw)))
    for h, streams in ((hist, [3, 0, 7, 8, 9, 23, 12]), (ragged, [1, 0])):
        spec = D.DatasetSpec(**kw)
        ds = D.WindowDataset(h, streams, spec)
        slow = D.WindowDataset(h, streams, spec, max_bytes=0)
        assert ds.in_memory and not slow.in_memory and ds.num_windows == slow.num_windows > 0
        starts = ds._first[:-1][np.diff(ds._first) > 0]
        ids = np.concatenate([rng.integers(0, ds.num_windows, 24), starts, starts[1:] - 1,
                              [ds.num_windows - 1]])
        ref = stacked_windows(ds, ids)
        assert ref.target.dtype == ref.tokens.prev_action.dtype == np.int32
        assert (ref.tokens.prev_action[:, 0] == NO_ACTION).sum() >= len(starts)
        assert_batches_identical(ds.windows(ids), ref)
        assert_batches_identical(slow.windows(ids), ref)


def test_loader_batches_are_the_same_in_memory_and_window_by_window(hist):
    """A tight budget still fits (reading the virtual streams in several groups), no budget
    falls back; the [S, B, T] batches and held-out batches agree exactly either way."""
    spec = D.DatasetSpec(variant="shuffled", seq_len=12, subsample=8)
    streams = list(range(hist.num_streams))
    need = D.virtual_bytes(hist, D.WindowDataset(hist, streams, spec, max_bytes=0).num_tokens)
    tight = D.WindowDataset(hist, streams, spec, max_bytes=need)
    slow = D.WindowDataset(hist, streams, spec, max_bytes=need - 1)
    assert tight.in_memory and not slow.in_memory
    groups = tight._read_groups()
    assert len(groups) > 5 and sum(groups, []) == list(range(len(streams)))
    for step in (0, 5):
        fast, ref = D.Loader(tight, 8, 3, 2).batch(step), D.Loader(slow, 8, 3, 2).batch(step)
        assert_batches_identical(fast, ref)
        assert fast.target.shape == (3, 8, 12)
        ids = D.Sampler(tight.num_windows, 8, 2).ids(step, 1)
        assert_batches_identical(D.Batch(D.Tokens(*[x[1] for x in fast.tokens]), fast.target[1]),
                                 stacked_windows(slow, ids))
    for a, b in zip(D.heldout_batches(tight, 2, 8, 0), D.heldout_batches(slow, 2, 8, 0)):
        assert_batches_identical(a, b)
    with pytest.raises(IndexError):
        tight.windows([tight.num_windows])


@pytest.mark.parametrize("cache_bytes", [1, 512 << 20])
def test_read_streams_equals_stacked_reads(hist, cache_bytes):
    """Streams from several storage blocks, in any order, repeated; ranges across chunk edges."""
    h = histories.open(hist.path, cache_bytes=cache_bytes)
    streams = [7, 2, 0, 23, 7, 11]
    for field in histories.STEP_FIELDS:
        for t0, t1 in ((0, None), (60, 130), (64, 128), (5, 6), (70, 70), (199, 200)):
            got = h.read_streams(field, streams, t0, t1)
            want = np.stack([h.read(field, s, t0, t1) for s in streams])
            assert got.dtype == want.dtype
            np.testing.assert_array_equal(got, want)
    assert h.read_streams("obs", [], 3, 9).shape == (0, 6, 2)
    with pytest.raises(IndexError, match="out of range"):
        h.read_streams("action", [0, h.num_streams])
    with pytest.raises(IndexError, match="outside"):
        h.read_streams("action", [0], 10, 500)


def test_single_task_history_holds_out_whole_learners(hist, tmp_path):
    assert D.heldout_unit(hist) == "tasks"
    one = synthetic.write_history(tmp_path / "h", steps=40, variants=1, seeds=4, good_arms=(1,))
    assert {one.stream_info(i).task for i in range(one.num_streams)} == {(1, 0)}
    assert D.heldout_unit(one) == "learners"
    train, held = D.split_streams(one, 0.25, seed=0)
    learners = lambda ss: {one.stream_info(s).learner for s in ss}  # noqa: E731
    assert len(learners(held)) == 1 and learners(train).isdisjoint(learners(held))
    assert sorted(train + held) == list(range(one.num_streams))


def test_heldout_split_of_two_tasks_at_the_largest_fraction_keeps_one_for_training(tmp_path):
    infos = [histories.StreamInfo(i, 0, (i, 0), 0, {}) for i in range(2)]  # two tasks
    w = histories.create(tmp_path / "h", spec=synthetic.SPEC, streams=infos, total_steps=8,
                         check_space=False)
    with w:
        w.append(np.zeros((2, 8, 2), np.uint8), np.zeros((2, 8)), np.zeros((2, 8)),
                 np.zeros((2, 8), bool), np.zeros((2, 8), bool))
    h = histories.open(tmp_path / "h")
    train, held = D.split_streams(h, 0.9, seed=0)  # 0.9 is imitator.heldout_fraction's maximum
    assert train and held
    assert {h.stream_info(s).task for s in train}.isdisjoint({h.stream_info(s).task for s in held})


@pytest.mark.parametrize("spec", [
    D.DatasetSpec(), D.DatasetSpec(subsample=2), D.DatasetSpec(variant="ed", ed_fraction=0.5),
    D.DatasetSpec(variant="shuffled", subsample=5), D.DatasetSpec(horizon=120),
    D.DatasetSpec(horizon=122), D.DatasetSpec(variant="ed", ed_fraction=0.25, horizon=160)])
def test_kept_steps_says_what_the_stream_index_keeps(hist, spec):
    # The evaluation checks each role's data against its sequence length from kept_steps alone,
    # before the teacher trains: it must be what stream_index then keeps, in env steps per
    # learner (2 streams of 200 steps, episodes of 4: fixed-length, as kept_steps assumes).
    kept, _ = D.kept_steps(spec, 400)
    assert [kept, kept] == [2 * D.stream_index(hist, s, spec).offset[-1] for s in (0, 1)]


def test_kept_steps_is_within_an_episode_when_the_subsample_does_not_divide_the_episodes(hist):
    # ED's last half is 25 episodes of 4 per stream; every 3rd keeps 9 of them, 36 steps, where
    # kept_steps says 200 // 3 per learner, 33 per stream: off by less than one episode.
    spec = D.DatasetSpec(variant="ed", ed_fraction=0.5, subsample=3)
    assert D.kept_steps(spec, 400)[0] == 66
    assert D.stream_index(hist, 0, spec).offset[-1] == 36


def test_ed_keeps_the_episode_that_starts_exactly_at_the_cut(tmp_path):
    h = synthetic.write_history(tmp_path / "h", steps=200, variants=2)  # episodes of 4 steps
    cut = math.ceil(0.9 * 200)
    ep = h.episodes(0)
    assert cut in ep.start.tolist()
    ix = D.stream_index(h, 0, D.DatasetSpec(variant="ed", seq_len=5, ed_fraction=0.1))
    assert ix.start.tolist() == [180, 184, 188, 192, 196]


def test_synthetic_learner_follows_its_documented_rule():
    """a_t = (a_{t-1} + 1 + r_{t-2}) mod 4 (r_{-1} = 0); the good arm always pays and the
    others 1 time in 4; observations (step within the episode, 0); episodes truncate."""
    T, g = 4000, 2
    s = synthetic.learner_stream(g, T, 5, np.random.default_rng(0))
    a, r = s["action"].astype(int), s["reward"]
    r_before_last = np.concatenate([[0.0, 0.0], r[:-2]])  # r_{t-2}, 0 where none
    np.testing.assert_array_equal(a[1:], (a[:-1] + 1 + r_before_last[1:]) % 4)
    assert r[a == g].min() == 1.0 and set(np.unique(r).tolist()) == {0.0, 1.0}
    assert abs(r[a != g].mean() - 0.25) < 0.033  # 4 binomial s.d. of the ~2800 other pulls
    np.testing.assert_array_equal(s["obs"], np.stack([np.arange(T) % 5, np.zeros(T)], -1))
    assert s["obs"].dtype == np.uint8 and not s["terminated"].any()
    np.testing.assert_array_equal(np.flatnonzero(s["truncated"]), np.arange(4, T, 5))


def test_the_smallest_heldout_fraction_still_holds_out_one_task(hist):
    # 0.01 of 12 tasks rounds to 0: held-out loss needs at least one task (0 is not allowed).
    train, held = D.split_streams(hist, 0.01, seed=0)
    assert len({hist.stream_info(s).task for s in held}) == 1 and len(train) == 22


def test_a_horizon_on_an_episode_start_keeps_no_empty_episode(hist):
    # H = 96 env steps of a 2-env learner: 48 steps per stream, where an episode of 4 starts;
    # that episode has no step before H, so it is not kept (as an empty episode).
    spec = D.DatasetSpec(seq_len=5, horizon=96)
    ix = D.stream_index(hist, 5, spec)
    assert ix.start.tolist() == list(range(0, 48, 4)) and ix.length.tolist() == [4] * 12
    ds = D.WindowDataset(hist, [0, 5], spec)
    assert ds.num_tokens == 96 and ds.in_memory
    assert ds._virtual.episode_start.sum() == 24


def test_shuffled_orders_differ_between_streams(hist):
    # Fixed per run.seed *and* stream: two streams with the same episodes get other orders.
    spec = D.DatasetSpec(variant="shuffled", seq_len=10)
    a, b = D.stream_index(hist, 0, spec), D.stream_index(hist, 2, spec)
    assert sorted(a.start.tolist()) == sorted(b.start.tolist())
    assert not np.array_equal(a.start, b.start)


def test_negative_window_ids_are_refused(ragged):
    # np.take wraps negative rows around: an id below 0 would read another stream's steps.
    ds = D.WindowDataset(ragged, [0, 1], D.DatasetSpec(seq_len=10))
    assert ds.in_memory
    with pytest.raises(IndexError, match="outside"):
        ds.windows([3, -1])


def test_read_groups_cut_at_blocks_and_at_the_memory_budget(hist):
    # Blocks of 5 streams; a full-length stream takes 200 steps x 8 bytes: a budget of three
    # streams' bytes reads blocks [0..4], [5..9] as groups of at most 3 within one block.
    per_stream = D.virtual_bytes(hist, hist.num_steps)
    assert per_stream == 200 * (2 + 1 + 4 + 1)
    spec = D.DatasetSpec(seq_len=10)
    ds = D.WindowDataset(hist, range(10), spec, max_bytes=3 * per_stream)
    assert ds._read_groups() == [[0, 1, 2], [3, 4], [5, 6, 7], [8, 9]]
    ds = D.WindowDataset(hist, range(10), spec, max_bytes=3 * per_stream - 1)
    assert ds._read_groups() == [[0, 1], [2, 3], [4], [5, 6], [7, 8], [9]]


def test_virtual_bytes_counts_every_field_held_in_memory(hist, ragged):
    for h, spec in ((hist, D.DatasetSpec(seq_len=8)),
                    (ragged, D.DatasetSpec(variant="ed", seq_len=4, subsample=2))):
        ds = D.WindowDataset(h, range(h.num_streams), spec)
        assert ds.in_memory
        held = sum(x.nbytes for x in ds._virtual)
        assert held == D.virtual_bytes(h, ds.num_tokens) > 0


def test_heldout_batches_are_distinct_windows_and_shard_by_rows(hist, monkeypatch):
    # eval_batches batches of one epoch's order: 3 x 4 different windows (not one batch 3
    # times); a process's rows of each are that slice of the global batch.
    ds = D.WindowDataset(hist, range(6), D.DatasetSpec(seq_len=12))
    read, windows = [], ds.windows
    monkeypatch.setattr(ds, "windows", lambda ids: read.append(list(ids)) or windows(ids))
    full = D.heldout_batches(ds, 3, 4, seed=1)
    assert [len(ids) for ids in read] == [4, 4, 4] and len(set(sum(read, []))) == 12
    parts = [D.heldout_batches(ds, 3, 4, seed=1, rows=slice(r, r + 2)) for r in (0, 2)]
    for b, lo, hi in zip(full, *parts):
        assert lo.target.shape == (2, 12)
        assert_batches_identical(D.Batch(*[_cat(x, y) for x, y in zip(lo, hi)]), b)


def _cat(a, b):
    """Concatenate two batches' leaves (or Tokens of leaves) along the batch axis."""
    if isinstance(a, tuple):
        return type(a)(*[np.concatenate([x, y]) for x, y in zip(a, b)])
    return np.concatenate([a, b])


def test_mix_is_the_splitmix64_finaliser():
    # splitmix64 seeded with 0: its first output is the finaliser of the golden-ratio increment.
    assert int(D._mix(np.asarray(0x9E3779B97F4A7C15, np.uint64))) == 0xE220A8397B1DCDAF


def test_window_order_of_a_seed_is_pinned():
    # The data order is a pure function of (seed, replica, step) across versions too: a changed
    # hash would let a resumed run see other batches than the run it continues.
    assert int(D.hash_key(1, 2)) == 4676466392371425043
    assert D.Sampler(10, 4, 7).ids(3, np.arange(2)).tolist() == [[3, 5, 2, 9], [5, 1, 4, 3]]
    assert D.permute(np.arange(8), 8, D.hash_key(5)).tolist() == [7, 0, 2, 4, 5, 3, 6, 1]


def test_every_window_can_come_first_in_an_epoch():
    # Four rounds on 2 * ceil(log2(n) / 2) bits: with too few bits the high bits of an id
    # would pass the cipher untouched and position 0 would only ever get the low ids.
    firsts = {int(D.permute(np.array([0]), 8, D.hash_key(k))[0]) for k in range(100)}
    assert firsts == set(range(8))


class _FakeHistory:
    """Just what split_streams and stream_index read: stream infos and episode bounds."""

    path = "fake"

    def __init__(self, tasks, starts=(), lengths=(), num_steps=0):
        self.infos = [histories.StreamInfo(i, 0, (t,), 0) for i, t in enumerate(tasks)]
        self.num_streams, self.num_steps = len(self.infos), num_steps
        self.ep = type("Ep", (), {"start": np.array(starts), "length": np.array(lengths)})

    def stream_info(self, i):
        return self.infos[i]

    def episodes(self, stream):
        return self.ep


def test_heldout_count_rounds_the_fraction_to_the_nearest_task():
    train, held = D.split_streams(_FakeHistory([0, 1, 2, 3, 4]), 0.35, seed=0)  # 1.75 -> 2
    assert len(held) == 2 and len(train) == 3


def test_ed_cut_is_rounded_up_to_a_whole_step():
    # 10 steps, fraction 0.25: the cut is at 7.5, so the episode starting at 7 is not kept.
    h = _FakeHistory([0], starts=[0, 4, 7, 8], lengths=[4, 3, 1, 2], num_steps=10)
    ix = D.stream_index(h, 0, D.DatasetSpec(variant="ed", ed_fraction=0.25))
    assert ix.start.tolist() == [8] and ix.offset.tolist() == [0, 2]


def test_a_window_id_equal_to_the_window_count_is_refused(ragged):
    ds = D.WindowDataset(ragged, [0, 1], D.DatasetSpec(seq_len=10))
    assert ds.in_memory
    with pytest.raises(IndexError, match="outside"):
        ds.windows([0, ds.num_windows])


def test_dataset_spec_sequence_is_train_windows_context_windows():
    icfg = config.ImitatorConfig(context_len=5, train_windows=3)
    assert D.DatasetSpec.from_config(icfg, seed=4) == D.DatasetSpec(seq_len=15, seed=4)


def test_cached_epoch_orders_are_computed_once_per_replica_and_epoch(monkeypatch):
    calls = []
    permute = D.permute
    monkeypatch.setattr(D, "permute", lambda *a: calls.append(a[1]) or permute(*a))
    s = D.Sampler(10, 4, 0, cache_orders=True)
    first = [s.ids(step, np.arange(2)) for step in (0, 1)]  # both in epoch 0
    assert len(calls) == 2 and set(s._orders) == {(0, 0), (1, 0)}
    s.ids(3, np.arange(2))  # ids 12..15: epoch 1 only, epoch 0 dropped
    assert len(calls) == 4 and set(s._orders) == {(0, 1), (1, 1)}
    assert np.array_equal(first[1], D.Sampler(10, 4, 0).ids(1, np.arange(2)))


def test_only_ed_is_trained_with_another_subsample_by_the_evaluation():
    # ED keeps every episode (expert data has no progress to compress); the others keep k.
    assert D.control_subsample("ed", 4) == 1
    assert [D.control_subsample(v, 4) for v in ("ad", "shuffled", "single_episode")] == [4] * 3
