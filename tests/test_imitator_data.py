"""Imitator datasets: windows hold exactly the steps they claim; sampling is pure and sharded."""

import numpy as np
import pytest

from climit import histories
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
    """Two learners, one stream each, with episodes of varied lengths (one unfinished at the end)."""
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
            w.append(obs[:, sl], action[:, sl], reward[:, sl], term[:, sl], np.zeros_like(term[:, sl]))
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
    other = D.stream_index(ragged, 0, D.DatasetSpec(variant="shuffled", seq_len=10, subsample=2, seed=1))
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
