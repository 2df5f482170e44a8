"""From learning histories to training sequences for the imitator (Algorithm Distillation).

**What a sequence is.** One stream of a history (one environment of one DQN learner) is a list
of episodes. A *dataset variant* picks and orders episodes per stream, giving a *virtual
stream*: the picked episodes back to back. A training sequence is ``T`` consecutive steps of
one virtual stream (``T = imitator.train_windows * imitator.context_len``), so it spans several
consecutive episodes of one learner and improvement is visible inside it. Step ``v`` of a
sequence becomes one token (see :mod:`climit.imitator.model`): the observation at ``v``, the
action and reward of virtual step ``v-1`` (``NO_ACTION``/0 at the very start of a virtual
stream), and whether ``v`` starts an episode; its target is the learner's action at ``v``.

**Variants** (applied per stream, in this order):

1. ``imitator.horizon`` H > 0: only the stream's steps ``t < H // E`` (E envs per learner, so H
   counts env steps of the learner, like ``teacher.total_env_steps``); an episode cut by H keeps
   its steps before H.
2. ``variant: ed``: only episodes that start at or after ``(1 - ed_fraction) * T_stream``.
3. ``imitator.subsample`` k: keep episodes whose index (after 1-2) is a multiple of k (the
   evaluation trains its ED control with k = 1, see :func:`control_subsample`).
4. ``variant: shuffled``: the kept episodes in a random order (fixed per ``run.seed`` and
   stream), so a context holds episodes from all stages of learning with no trend to follow.
   The imitator seeds of one run share that order (one dataset feeds them all, each with its
   own window order), so the control's interval does not cover other shuffles.
   ``variant: single_episode`` uses the AD data; its model attends only within the current
   episode (:class:`climit.imitator.model.ModelConfig` ``episode_local``).

**Held-out data.** :func:`split_streams` keeps a fraction of the history's *tasks* (of its
learners, for single-task environments) out of training; held-out loss and action accuracy
are measured on sequences of those streams only, i.e. on tasks (for single-task environments:
learners) the imitator never saw; the training summary's ``heldout`` says which.

**Why a small index sampler and not a data-loading library.** Grain is not installed and the
access pattern is simple: a global batch is a pure function of (seed, replica, step). Window
ids come from a keyed Feistel permutation of ``[0, num_windows)`` per epoch (O(1) memory and
time per id, however many windows; training caches each epoch's whole order, the same ids,
up to 2^23 entries), so the data order is deterministic for a seed, resuming
at step i needs nothing but i, and every process of a multi-host job computes the same global
batch and reads only its own rows. A per-stream episode index (a few integers per episode)
is built once. When the dataset's virtual streams fit in a memory budget
(``imitator.data_memory_mb`` in training; by default the history's decoded-chunk cache size),
they are decoded once into flat arrays and a whole batch
is cut out of them with a few vectorized gathers (the GPU step takes milliseconds, so window-
by-window Python would leave it data-bound); larger histories fall back to reading each window
lazily through :meth:`climit.histories.History.read` (which caches a bounded number of decoded
chunks). Both give the same batches, bit for bit.

Axis letters: S seeds (replicas), B batch, T sequence, O observation shape.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import math
from typing import Any, Callable, Iterator, NamedTuple, Sequence

import numpy as np

from climit import keys
from climit.errors import ClimitError
from climit.imitator.model import NO_ACTION, Tokens

_U64 = np.uint64


class Batch(NamedTuple):
    """Model inputs and targets; leaves have leading axes [..., B, T]."""

    tokens: Tokens
    target: np.ndarray  # int32: the learner's action at each step


class StreamIndex(NamedTuple):
    """The episodes a variant keeps of one stream, in virtual order.

    start [M], length [M]: first original step and length of each kept episode;
    offset [M + 1]: where each begins in the virtual stream (offset[-1] = its length).
    """

    start: np.ndarray
    length: np.ndarray
    offset: np.ndarray


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """What to cut from a history (static; see the module docstring for the semantics)."""

    variant: str = "ad"
    seq_len: int = 160
    subsample: int = 1
    ed_fraction: float = 0.1
    horizon: int = 0  # env steps per learner; 0: all
    seed: int = 0

    @classmethod
    def from_config(cls, icfg: Any, seed: int) -> DatasetSpec:
        return cls(variant=icfg.variant, seq_len=icfg.train_windows * icfg.context_len,
                   subsample=icfg.subsample, ed_fraction=icfg.ed_fraction,
                   horizon=icfg.horizon, seed=seed)


# ---------------------------------------------------------------------------------------------
# Keyed permutation (Feistel network with cycle walking)
# ---------------------------------------------------------------------------------------------

def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on uint64 arrays (a good 64-bit hash)."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> _U64(27))) * _U64(0x94D049BB133111EB)
        return x ^ (x >> _U64(31))


def hash_key(*parts: int | np.ndarray) -> np.ndarray:
    """Fold integers (or int arrays, broadcast) into one uint64 key per element."""
    h = np.asarray(0x9E3779B97F4A7C15, dtype=_U64)
    with np.errstate(over="ignore"):
        for p in parts:
            h = _mix(h ^ (np.asarray(p).astype(_U64) + _U64(0x632BE59BD9B4E019)))
    return h


def permute(i: np.ndarray, n: int, key: np.ndarray) -> np.ndarray:
    """A keyed bijection of ``[0, n)``: ``permute(arange(n), n, k)`` is a permutation.

    Four Feistel rounds on ``2 * half`` bits (``4**half >= n``); values that land outside
    ``[0, n)`` are walked through the cipher again (expected fewer than 4 rounds).
    """
    i = np.asarray(i, dtype=np.int64)
    if n <= 1:
        return np.zeros_like(i)
    half = max(1, math.ceil(math.log2(n) / 2))
    mask = _U64((1 << half) - 1)
    key = np.broadcast_to(np.asarray(key, dtype=_U64), i.shape)

    def cipher(x: np.ndarray, k: np.ndarray) -> np.ndarray:
        left, right = x >> _U64(half), x & mask
        for r in range(4):
            left, right = right, left ^ (_mix(right ^ k ^ _U64(r * 0x51ED27)) & mask)
        return (left << _U64(half)) | right

    x = cipher(i.astype(_U64), key)
    outside = x >= _U64(n)
    while outside.any():
        x[outside] = cipher(x[outside], key[outside])
        outside = x >= _U64(n)
    return x.astype(np.int64)


# ---------------------------------------------------------------------------------------------
# Stream selection and episode indices
# ---------------------------------------------------------------------------------------------

def envs_per_learner(history: Any) -> int:
    return 1 + max(history.stream_info(i).env for i in range(history.num_streams))


def heldout_unit(history: Any) -> str:
    """What :func:`split_streams` holds out of ``history``: ``'tasks'`` when it has several
    tasks, else ``'learners'`` (a single-task environment, e.g. one MinAtar game: the held-out
    learners then play the very task the imitator was trained on)."""
    tasks = {history.stream_info(i).task for i in range(history.num_streams)}
    return "tasks" if len(tasks) > 1 else "learners"


def split_streams(history: Any, heldout_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train streams, held-out streams): whole tasks (or, with one task, whole learners) held out
    (:func:`heldout_unit` says which).

    Raises:
        ClimitError: the history has a single task and a single learner (nothing to hold out).
    """
    infos = [history.stream_info(i) for i in range(history.num_streams)]
    by_task = heldout_unit(history) == "tasks"
    group_of = [info.task if by_task else info.learner for info in infos]
    groups = sorted(set(group_of))
    if len(groups) < 2:
        raise ClimitError(f"history {history.path} has one task and one learner; held-out loss "
                          "needs at least two (raise env.train_tasks or teacher.seeds)")
    n_held = min(max(1, round(heldout_fraction * len(groups))), len(groups) - 1)
    order = np.random.default_rng([seed, keys.HELDOUT_STREAMS]).permutation(len(groups))
    held = {groups[j] for j in order[:n_held]}
    train = [i for i, g in enumerate(group_of) if g not in held]
    heldout = [i for i, g in enumerate(group_of) if g in held]
    return train, heldout


def stream_index(history: Any, stream: int, spec: DatasetSpec) -> StreamIndex:
    """The episodes ``spec`` keeps of ``stream``, in virtual order (see the module docstring)."""
    ep = history.episodes(stream)
    start, length = ep.start.astype(np.int64), ep.length.astype(np.int64)
    steps = history.num_steps
    if spec.horizon:
        steps = min(steps, spec.horizon // envs_per_learner(history))
        keep = start < steps
        start, length = start[keep], np.minimum(length[keep], steps - start[keep])
    if spec.variant == "ed":
        keep = start >= math.ceil((1.0 - spec.ed_fraction) * steps)
        start, length = start[keep], length[keep]
    keep = np.arange(len(start)) % spec.subsample == 0
    start, length = start[keep], length[keep]
    if spec.variant == "shuffled":
        rng = np.random.default_rng([spec.seed, stream, keys.SHUFFLED_EPISODES])
        order = rng.permutation(len(start))
        start, length = start[order], length[order]
    offset = np.concatenate([[0], np.cumsum(length)]).astype(np.int64)
    return StreamIndex(start, length, offset)


def control_subsample(variant: str, subsample: int) -> int:
    """The ``imitator.subsample`` the evaluation trains ``variant`` with, from the run's own.

    ED keeps every episode of its last ``ed_fraction`` (1), as AD's expert distillation trains
    on all of the expert's data: subsampling compresses a learning history's progress into one
    context, and expert data has none to compress. Subsampled, ED would learn from k times
    fewer steps than it could, a handicap the control must not have. Every other variant keeps
    the run's ``subsample``."""
    return 1 if variant == "ed" else subsample


def kept_steps(spec: Any, teacher_steps: int) -> tuple[int, str]:
    """About how many env steps per learner :func:`stream_index` keeps, and how it chose them
    in words, from the settings alone (before any history exists: the evaluation checks its
    roles' data against their sequence length before the teacher trains). Exact for
    fixed-length episodes whose kept count the subsample divides, within an episode per stream
    or so otherwise. ``spec``: an ImitatorConfig or a DatasetSpec; ``teacher_steps``:
    ``teacher.total_env_steps``."""
    steps, what = (spec.horizon, f"the first {spec.horizon} env steps") if spec.horizon else \
        (teacher_steps, f"all {teacher_steps} env steps")
    if spec.variant == "ed":
        steps, what = int(steps * spec.ed_fraction), f"the last {spec.ed_fraction:.0%} of {what}"
    kept = "every episode" if spec.subsample == 1 else f"1 episode in {spec.subsample}"
    return steps // spec.subsample, f"{what}, {kept}"


def _gather(history: Any, field: str, stream: int, steps: np.ndarray) -> np.ndarray:
    """``field`` at original ``steps`` [n] (int: runs of consecutive steps, in any order of
    runs) of a stream -> [n, ...] in the field's stored dtype (``obs``: [n, *O]), reading
    contiguous runs (or one short span)."""
    lo, hi = int(steps.min()), int(steps.max()) + 1
    if np.all(np.diff(steps) > 0) and hi - lo <= 4 * len(steps):
        return history.read(field, stream, lo, hi)[steps - lo]
    breaks = np.flatnonzero(np.diff(steps) != 1) + 1
    runs = np.split(steps, breaks)
    return np.concatenate([history.read(field, stream, int(r[0]), int(r[-1]) + 1) for r in runs])


class _Virtual(NamedTuple):
    """The virtual streams of a dataset's streams, decoded and laid back to back: leaves [L, ...]
    (L = ``num_tokens``); stream j's virtual step v sits at row ``base[j] + v``."""

    obs: np.ndarray  # stored dtype [L, *O]
    action: np.ndarray  # stored dtype (uint8) [L]
    reward: np.ndarray  # float32 [L]
    episode_start: np.ndarray  # bool [L]


_VIRTUAL_FIELDS = ("obs", "action", "reward")


def virtual_bytes(history: Any, num_tokens: int) -> int:
    """Bytes of a :class:`_Virtual` of ``num_tokens`` steps of ``history``."""
    dtypes = history.meta["dtypes"]
    obs = int(np.prod(history.env["obs_shape"])) * np.dtype(dtypes["obs"]).itemsize
    return num_tokens * (obs + np.dtype(dtypes["action"]).itemsize + 4 + 1)


class WindowDataset:
    """All length-``seq_len`` windows of the virtual streams of some streams of a history.

    Window ``w`` is (stream, virtual offset); windows never cross streams.

    Two ways to read windows, with identical results (same values and dtypes):
    :meth:`window` reads one window lazily through :meth:`History.read` (the reference);
    :meth:`windows` cuts a whole batch out of the virtual streams held decoded in memory
    (a few array operations per batch), built once here when they take at most ``max_bytes``
    (default: the history's decoded-chunk cache budget ``history.cache_bytes``; see
    :func:`virtual_bytes`), and otherwise falls back to stacking :meth:`window`.
    ``in_memory`` says which.
    """

    def __init__(self, history: Any, streams: Sequence[int], spec: DatasetSpec,
                 max_bytes: int | None = None):
        self.history, self.spec = history, spec
        self.streams = list(streams)
        self.index = {s: stream_index(history, s, spec) for s in self.streams}
        lengths = np.array([int(self.index[s].offset[-1]) for s in self.streams], np.int64)
        per_stream = np.maximum(0, lengths - spec.seq_len + 1)
        self._first = np.concatenate([[0], np.cumsum(per_stream)]).astype(np.int64)
        self._base = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        self.num_windows = int(self._first[-1])
        self.num_tokens = int(self._base[-1])
        self.max_bytes = history.cache_bytes if max_bytes is None else max_bytes
        self.in_memory = virtual_bytes(history, self.num_tokens) <= self.max_bytes
        self._virtual = self._materialise() if self.in_memory else None

    def locate(self, w: int) -> tuple[int, int]:
        """Window id -> (stream, virtual offset)."""
        j = int(np.searchsorted(self._first, w, side="right")) - 1
        return self.streams[j], int(w - self._first[j])

    def virtual_steps(self, stream: int, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Virtual positions ``v`` [n] (int) of ``stream`` -> (original steps int64 [n],
        episode_start bool [n]: True where ``v`` is the first step of a kept episode)."""
        ix = self.index[stream]
        m = np.searchsorted(ix.offset, v, side="right") - 1
        return ix.start[m] + (v - ix.offset[m]), v == ix.offset[m]

    def window(self, w: int) -> Batch:
        """One sequence: leaves [T, ...], read lazily (the reference for :meth:`windows`)."""
        stream, o = self.locate(w)
        T, h = self.spec.seq_len, self.history
        v = np.arange(max(o - 1, 0), o + T)  # includes the previous step when there is one
        steps, starts = self.virtual_steps(stream, v)
        action = _gather(h, "action", stream, steps).astype(np.int32)
        reward = _gather(h, "reward", stream, steps).astype(np.float32)
        if o == 0:  # the virtual stream's first step has no previous step
            action = np.concatenate([np.array([NO_ACTION], np.int32), action])
            reward = np.concatenate([np.zeros(1, np.float32), reward])
            steps, starts = np.concatenate([steps[:1], steps]), np.concatenate([starts[:1], starts])
        tokens = Tokens(obs=_gather(h, "obs", stream, steps[1:]), prev_action=action[:-1],
                        prev_reward=reward[:-1], episode_start=starts[1:])
        return Batch(tokens=tokens, target=action[1:])

    def windows(self, ids: Sequence[int]) -> Batch:
        """Stacked sequences: leaves [len(ids), T, ...], equal to stacking :meth:`window`."""
        if self._virtual is None:
            parts = [self.window(int(w)) for w in ids]
            return Batch(*[_stack([p[k] for p in parts]) for k in range(2)])
        ids = np.asarray(ids, np.int64).reshape(-1)
        if ids.size and not (0 <= ids.min() and ids.max() < self.num_windows):
            raise IndexError(f"window ids outside [0, {self.num_windows})")
        j = np.searchsorted(self._first, ids, side="right") - 1
        o = ids - self._first[j]
        # Rows of the previous step and the T steps of each window: [n, T + 1]. A window at
        # virtual offset 0 has no previous step: its row 0 (the previous stream's last step,
        # or row -1) is read, then masked.
        rows = np.add.outer(self._base[j] + o - 1, np.arange(self.spec.seq_len + 1))
        vt, first = self._virtual, o == 0
        action = np.take(vt.action, rows).astype(np.int32)  # np.take: ~10x faster than [rows]
        action[first, 0] = NO_ACTION
        reward = np.take(vt.reward, rows)
        reward[first, 0] = 0.0
        rows = rows[:, 1:]
        tokens = Tokens(obs=np.take(vt.obs, rows, axis=0), prev_action=action[:, :-1],
                        prev_reward=reward[:, :-1], episode_start=np.take(vt.episode_start, rows))
        return Batch(tokens=tokens, target=action[:, 1:])

    def _materialise(self) -> _Virtual:
        """Read the virtual streams once, a group of streams (one storage block, within
        ``max_bytes`` of full-length fields) per :meth:`History.read_streams` call."""
        h = self.history
        steps = [_virtual_to_original(self.index[s]) for s in self.streams]
        parts: dict[str, list[np.ndarray]] = {f: [] for f in _VIRTUAL_FIELDS}
        for group in self._read_groups():
            lo = min((int(steps[j].min()) for j in group if steps[j].size), default=0)
            hi = max((int(steps[j].max()) + 1 for j in group if steps[j].size), default=0)
            for f in _VIRTUAL_FIELDS:
                full = h.read_streams(f, [self.streams[j] for j in group], lo, max(lo, hi))
                parts[f] += [full[i, steps[j] - lo] for i, j in enumerate(group)]
        start = np.zeros(self.num_tokens, bool)
        for j, s in enumerate(self.streams):
            start[self._base[j] + self.index[s].offset[:-1]] = True
        obs, action, reward = (_concat(parts[f], h, f) for f in _VIRTUAL_FIELDS)
        return _Virtual(obs, action, reward.astype(np.float32), start)

    def _read_groups(self) -> list[list[int]]:
        """Positions in ``streams``, in order, cut where the storage block changes or a group's
        full-length fields would pass ``max_bytes`` (at least one stream per group)."""
        h = self.history
        per_stream = max(1, virtual_bytes(h, h.num_steps))
        size = max(1, self.max_bytes // per_stream)
        block = [s // h.meta["streams_per_chunk"] for s in self.streams]
        groups: list[list[int]] = []
        for j in range(len(self.streams)):
            if not groups or len(groups[-1]) >= size or block[j] != block[groups[-1][0]]:
                groups.append([])
            groups[-1].append(j)
        return groups


def _virtual_to_original(ix: StreamIndex) -> np.ndarray:
    """int64 [offset[-1]]: the original step of each virtual step of one stream."""
    return np.repeat(ix.start - ix.offset[:-1], ix.length) + np.arange(ix.offset[-1])


def _concat(parts: list[np.ndarray], history: Any, field: str) -> np.ndarray:
    """Concatenate per-stream arrays along time (an empty [0, ...] when there are none)."""
    if parts:
        return np.concatenate(parts)
    return history.read(field, 0, 0, 0)


def _stack(items: list[Any]) -> Any:
    if isinstance(items[0], tuple):
        return type(items[0])(*[np.stack(f) for f in zip(*items)])
    return np.stack(items)


# ---------------------------------------------------------------------------------------------
# Batches
# ---------------------------------------------------------------------------------------------

_MAX_ORDER_ENTRIES = 1 << 23  # int32 entries of whole-epoch orders a Sampler may hold (32 MiB)


@dataclasses.dataclass(frozen=True)
class Sampler:
    """Window ids of global batches: epochs of keyed permutations, a pure function of
    (seed, replica, step). Replica r (one per vmapped imitator seed) has its own order.

    With ``cache_orders`` the current epoch's whole order of each replica is computed once and
    indexed (a batch then costs a few array lookups instead of a Feistel pass of ~100 small
    numpy calls, 0.3 ms a batch: most of a small batch's host time), as long as two epochs of
    every replica fit in ``_MAX_ORDER_ENTRIES``; the ids are the same either way.
    """

    num_windows: int
    batch_size: int
    seed: int
    cache_orders: bool = False
    _orders: dict = dataclasses.field(default_factory=dict, init=False, repr=False,
                                      compare=False, hash=False)

    def ids(self, step: int, replica: int | np.ndarray = 0) -> np.ndarray:
        """int64 [batch_size]: window ids of the global batch at ``step`` (int64 [R, batch_size]
        for an array of R replicas, row r equal to ``ids(step, replica[r])``)."""
        j = step * self.batch_size + np.arange(self.batch_size, dtype=np.int64)
        epoch, pos = np.divmod(j, self.num_windows)
        replica = np.asarray(replica, np.int64)[..., None]
        if self.cache_orders and 2 * replica.size * self.num_windows <= _MAX_ORDER_ENTRIES:
            return self._cached_ids(replica[..., 0], epoch, pos)
        key = hash_key(self.seed, replica, epoch)
        out = permute(np.broadcast_to(pos, key.shape), self.num_windows, key)
        return out.reshape(*replica.shape[:-1], self.batch_size)

    def _cached_ids(self, replica_R: np.ndarray, epoch_B: np.ndarray,
                    pos_B: np.ndarray) -> np.ndarray:
        """:meth:`ids` by lookups in whole-epoch orders ([R] replicas -> [R, B])."""
        first = int(epoch_B[0])
        for key in [k for k in self._orders if k[1] < first]:  # epochs behind us
            del self._orders[key]
        out = np.empty(replica_R.shape + pos_B.shape, np.int64)
        for e in np.unique(epoch_B):
            in_e = epoch_B == e
            for i, r in np.ndenumerate(replica_R):
                out[i][in_e] = self._order(int(r), int(e))[pos_B[in_e]]
        return out

    def _order(self, replica: int, epoch: int) -> np.ndarray:
        """int32 [num_windows]: the window ids of one replica's epoch, in order."""
        key = (replica, epoch)
        if key not in self._orders:
            every = np.arange(self.num_windows, dtype=np.int64)
            self._orders[key] = permute(every, self.num_windows,
                                        hash_key(self.seed, replica, epoch)).astype(np.int32)
        return self._orders[key]


def local_rows(batch_size: int, process_index: int, process_count: int) -> slice:
    """The rows of a global batch this process reads (contiguous, equal shares)."""
    if batch_size % process_count:
        raise ClimitError(f"imitator.batch_size {batch_size} must be a multiple of the "
                          f"{process_count} processes")
    share = batch_size // process_count
    return slice(process_index * share, (process_index + 1) * share)


def require_windows(dataset: WindowDataset, kind: str) -> None:
    """ClimitError unless ``dataset`` holds at least one sequence (``kind``: "training" or
    "held-out", for the message)."""
    if dataset.num_windows == 0:
        raise ClimitError(f"no {kind} sequence fits: every virtual stream is shorter than "
                          f"{dataset.spec.seq_len} steps (lower imitator.context_len or "
                          f"imitator.train_windows, or teach longer)")


class Loader:
    """Training batches [S, B_local, T] for S vmapped imitators; ``batch(step)`` is pure."""

    def __init__(self, dataset: WindowDataset, batch_size: int, replicas: int, seed: int,
                 process_index: int = 0, process_count: int = 1):
        require_windows(dataset, "training")
        self.dataset, self.replicas = dataset, replicas
        self.sampler = Sampler(dataset.num_windows, batch_size, seed, cache_orders=True)
        self.rows = local_rows(batch_size, process_index, process_count)

    def batch(self, step: int) -> Batch:
        """The batch at ``step``: leaves [S, B_local, T, ...] (every replica read at once)."""
        ids_SxB = self.sampler.ids(step, np.arange(self.replicas))[:, self.rows]
        flat = self.dataset.windows(ids_SxB.reshape(-1))
        split = lambda x: x.reshape(self.replicas, -1, *x.shape[1:])  # noqa: E731
        return Batch(Tokens(*map(split, flat.tokens)), split(flat.target))


def heldout_batches(dataset: WindowDataset, num_batches: int, batch_size: int, seed: int,
                    rows: slice = slice(None)) -> list[Batch]:
    """A fixed set of held-out batches [B_local, T] (the same for every seed and evaluation)."""
    require_windows(dataset, "held-out")
    sampler = Sampler(dataset.num_windows, batch_size, seed ^ keys.HELDOUT_BATCHES)
    return [dataset.windows(sampler.ids(i)[rows]) for i in range(num_batches)]


class Prefetcher:
    """``fn(start), fn(start+1), ...`` computed ``depth`` steps ahead on a background thread.

    Because batches are pure functions of the step, prefetching never changes what is seen.
    """

    def __init__(self, fn: Callable[[int], Any], start: int, stop: int, depth: int):
        self._fn, self._next, self._stop = fn, start, stop
        self._pool = concurrent.futures.ThreadPoolExecutor(1) if depth else None
        self._queue: collections.deque = collections.deque()
        for _ in range(depth):
            self._submit()

    def _submit(self) -> None:
        if self._pool is not None and self._next < self._stop:
            self._queue.append(self._pool.submit(self._fn, self._next))
            self._next += 1

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        if self._pool is None:
            if self._next >= self._stop:
                raise StopIteration
            self._next += 1
            return self._fn(self._next - 1)
        if not self._queue:
            raise StopIteration
        out = self._queue.popleft().result()
        self._submit()
        return out

    def close(self) -> None:
        if self._pool is not None:
            for f in self._queue:
                f.cancel()
            self._pool.shutdown(wait=True)
