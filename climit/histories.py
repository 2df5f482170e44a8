"""On-disk learning histories: written chunk by chunk by the teacher, read lazily by the imitator.

A history holds N *streams*; one stream is one environment of one learner (a learner with E
envs has E streams). Each stream is a time series of per-step fields

    obs [T, *O]        interface storage dtype (e.g. uint8 for grid/MinAtar)
    action [T]         uint8
    reward [T]         float32
    terminated [T]     bool
    truncated [T]      bool

plus, optionally, ``q_values [Tq, A]`` (float16) recorded every ``q_period`` steps: row k holds
the learner's Q-values on ``obs[k * q_period]``, so ``Tq = ceil(T / q_period)``.

Layout of ``runs/NAME/teacher/histories/``::

    meta.json        static: format version, env + interface spec, per-stream info, resolved
                     config, dtypes, streams_per_chunk, q_period, planned total steps
    manifest.json    what has been written: num_steps, num_q, and one row per time chunk with,
                     per block of streams, the file name, its byte length and crc32
    chunks/b{BLOCK:05d}_t{T0:012d}.npz   one file per (block of streams, time chunk)

Why npz chunk files plus a JSON manifest rather than zarr through tensorstore: the manifest is
the single source of truth (a chunk exists only once the manifest names it), so appending is
"write the chunk to a temporary name, rename, then replace the manifest" and truncation after a
crash is "drop manifest rows, delete files" -- both atomic under a killed process with nothing
but ``os.replace``. Each file carries a checksum of its stored bytes, which zarr does not keep,
so a truncated or flipped chunk is reported by name instead of decoding to garbage. npz is zip
with one deflate-compressed ``.npy`` member per field, so a reader decompresses only the field
it asks for, and only for its block of streams (``streams_per_chunk``). Zip members are written
with a fixed timestamp, so the same data always gives byte-identical files (resume == no crash).
The static metadata lives apart from the manifest so the per-chunk manifest rewrite stays small.

Usage::

    w = histories.create(path, spec=env.spec, streams=infos, config=config.to_dict(cfg),
                         q_period=100, streams_per_chunk=64, total_steps=T)
    w.append(obs_NxTxO, action_NxT, reward_NxT, terminated_NxT, truncated_NxT, q_NxTqxA)
    h = histories.open(path)
    h.read("reward", stream=3, t0=100, t1=300)   # np.ndarray [200]
    h.episodes(3)                                # Episodes(start, length, ret, finished)

Axis letters: N streams, T time (env steps of one stream), O observation shape, A actions.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import io
import json
import os
import shutil
import threading
import zipfile
import zlib
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import numpy as np

from climit import jsonfile
from climit.errors import ArtifactError, ClimitError

FORMAT_VERSION = 1
META_FILE = "meta.json"
MANIFEST_FILE = "manifest.json"
CHUNK_DIR = "chunks"

#: Per-step fields and their stored dtypes (``obs`` takes the interface storage dtype).
STEP_FIELDS = ("obs", "action", "reward", "terminated", "truncated")
FIELDS = STEP_FIELDS + ("q_values",)
_FIXED_DTYPES = {"action": "uint8", "reward": "float32", "terminated": "bool",
                 "truncated": "bool", "q_values": "float16"}
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed member timestamp: identical data -> identical bytes


@dataclasses.dataclass(frozen=True)
class StreamInfo:
    """Who produced one stream: learner index, its env index, task, seed and hyperparameters."""

    learner: int
    env: int
    task: tuple[int, ...]
    seed: int
    hparams: Mapping[str, float] = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict:
        return {"learner": int(self.learner), "env": int(self.env),
                "task": [int(x) for x in self.task], "seed": int(self.seed),
                "hparams": {k: float(v) for k, v in self.hparams.items()}}

    @classmethod
    def from_json(cls, raw: dict) -> StreamInfo:
        return cls(raw["learner"], raw["env"], tuple(raw["task"]), raw["seed"],
                   dict(raw["hparams"]))


class Episodes(NamedTuple):
    """Episode boundaries of one stream (M episodes, the last one possibly unfinished).

    start [M] int64: first step; length [M] int64; ret [M] float64: sum of rewards;
    finished [M] bool: False only for a trailing episode the history ends inside.
    """

    start: np.ndarray
    length: np.ndarray
    ret: np.ndarray
    finished: np.ndarray


# ---------------------------------------------------------------------------------------------
# Sizes and disk space
# ---------------------------------------------------------------------------------------------

def _spec_json(spec: Any) -> dict:
    """The interface part of an ``envs.EnvSpec`` (or an equivalent dict) as plain JSON."""
    get = spec.get if isinstance(spec, dict) else (lambda k, d=None: getattr(spec, k, d))
    num_actions = int(get("num_actions"))
    mask = get("action_mask")
    mask = [True] * num_actions if mask is None else [bool(m) for m in np.asarray(mask)]
    return {"name": get("name"), "interface": get("interface"),
            "obs_shape": [int(d) for d in get("obs_shape")],
            "obs_dtype": str(np.dtype(get("obs_dtype"))),
            "num_actions": num_actions, "action_mask": mask,
            "episode_len": None if get("episode_len") is None else int(get("episode_len")),
            "task_dim": None if get("task_dim") is None else int(get("task_dim"))}


def num_q_rows(num_steps: int, q_period: int) -> int:
    """Q-value rows recorded in the first ``num_steps`` steps (rows at steps 0, q, 2q, ...)."""
    return 0 if q_period <= 0 else -(-num_steps // q_period)


def estimate_bytes(spec: Any, num_streams: int, num_steps: int, q_period: int = 0) -> int:
    """Uncompressed bytes of a history (an upper bound: chunks are compressed on disk).

    Args:
        spec: ``envs.EnvSpec`` (or a dict with obs_shape, obs_dtype, num_actions).
        num_streams: N, learners x envs per learner.
        num_steps: T, env steps per stream.
        q_period: Q-value recording period in steps (0: none).
    """
    s = _spec_json(spec)
    obs = int(np.prod(s["obs_shape"])) * np.dtype(s["obs_dtype"]).itemsize
    per_step = obs + 1 + 4 + 1 + 1
    q = num_q_rows(num_steps, q_period) * s["num_actions"] * 2
    return int(num_streams * (num_steps * per_step + q))


def free_bytes(path: str | Path) -> int:
    """Free bytes on the filesystem that holds ``path`` (its nearest existing ancestor)."""
    p = Path(path).absolute()
    while not p.exists():
        p = p.parent
    return shutil.disk_usage(p).free


def human_bytes(n: float) -> str:
    """``n`` bytes in decimal units for messages: 512 B, 1.5 KB, 2.0 GB."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return f"{n:.1f} TB"


def check_disk(path: str | Path, needed: int, free_fn: Callable[[Path], int] | None = None,
               what: str = "histories") -> None:
    """Raise ClimitError if the filesystem at ``path`` has fewer than ``needed`` free bytes.

    ``free_fn`` defaults to :func:`free_bytes` (looked up at call time, so tests can
    monkeypatch ``histories.free_bytes``). ``what``: what needs the space, for the message
    (e.g. the teacher's histories, checkpoints and snapshots with their sizes).
    """
    free = (free_fn or free_bytes)(Path(path))
    if needed > free:
        raise ClimitError(f"not enough disk space for {what} at {path}: need "
                          f"{human_bytes(needed)} ({needed} bytes), {human_bytes(free)} ({free} "
                          f"bytes) free; free space, "
                          f"choose another run.runs_dir, or shrink the run")


# ---------------------------------------------------------------------------------------------
# Small file helpers
# ---------------------------------------------------------------------------------------------

_write_atomic = jsonfile.write_atomic  # a module name of its own: tests fake a full disk here


def _chunk_name(block: int, t0: int) -> str:
    return f"b{block:05d}_t{t0:012d}.npz"


def _encode_chunk(arrays: dict[str, np.ndarray], level: int) -> bytes:
    """npz bytes (one deflated .npy member per field) with fixed timestamps: deterministic."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, arr in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(name + ".npy", date_time=_ZIP_TIME)
            info.external_attr = 0o644 << 16
            zf.writestr(info, member.getvalue(), compress_type=zipfile.ZIP_DEFLATED,
                        compresslevel=level)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# Writer
# ---------------------------------------------------------------------------------------------

class HistoryWriter:
    """Appends time chunks of all N streams. Create with :func:`create` or :func:`resume`."""

    def __init__(self, path: Path, meta: dict, manifest: dict, workers: int | None = None):
        self.path = path
        self.meta = meta
        self._manifest = manifest
        self._level = int(meta["compression_level"])
        self._pool = concurrent.futures.ThreadPoolExecutor(workers or min(8, os.cpu_count() or 1))

    def close(self) -> None:
        """Release the compression threads (also done at garbage collection)."""
        self._pool.shutdown()

    def __enter__(self) -> HistoryWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def num_steps(self) -> int:
        """Steps per stream written so far (the next append starts here)."""
        return int(self._manifest["num_steps"])

    @property
    def num_streams(self) -> int:
        return len(self.meta["streams"])

    def _blocks(self) -> list[tuple[int, int]]:
        n, spc = self.num_streams, self.meta["streams_per_chunk"]
        return [(b0, min(n, b0 + spc)) for b0 in range(0, n, spc)]

    def _check(self, name: str, arr: Any, shape: tuple[int, ...], dtype: str) -> np.ndarray:
        arr = np.asarray(arr)
        if arr.shape != shape:
            raise ValueError(f"histories.append: {name} has shape {arr.shape}, expected {shape}")
        out = arr.astype(dtype, copy=False)
        if name == "action" and arr.size and (arr.min() < 0 or arr.max() > 255):
            raise ValueError("histories.append: actions must fit in uint8")
        return out

    def append(self, obs: Any, action: Any, reward: Any, terminated: Any, truncated: Any,
               q_values: Any | None = None) -> None:
        """Append steps [t, t + T) of every stream, t = ``self.num_steps``.

        Args:
            obs: [N, T, *O]; action, reward, terminated, truncated: [N, T].
            q_values: [N, Tq, A] float, the rows for steps in [t, t + T) that are multiples of
                q_period (``Tq = num_q_rows(t + T) - num_q_rows(t)``); required iff q_period > 0.
        """
        n, spec = self.num_streams, self.meta["env"]
        steps = np.shape(action)[1] if np.ndim(action) == 2 else -1
        if steps < 1:
            raise ValueError("histories.append: action must be [N, T] with T >= 1, got "
                             f"{np.shape(action)}")
        t0, t1 = self.num_steps, self.num_steps + steps
        dtypes = self.meta["dtypes"]
        arrays = {
            "obs": self._check("obs", obs, (n, steps, *spec["obs_shape"]), dtypes["obs"]),
            "action": self._check("action", action, (n, steps), dtypes["action"]),
            "reward": self._check("reward", reward, (n, steps), dtypes["reward"]),
            "terminated": self._check("terminated", terminated, (n, steps), dtypes["terminated"]),
            "truncated": self._check("truncated", truncated, (n, steps), dtypes["truncated"]),
        }
        qp = self.meta["q_period"]
        q0, q1 = num_q_rows(t0, qp), num_q_rows(t1, qp)
        if qp > 0:
            if q_values is None:
                raise ValueError("histories.append: q_values required (history has q_period > 0)")
            arrays["q_values"] = self._check("q_values", q_values,
                                             (n, q1 - q0, spec["num_actions"]), dtypes["q_values"])
        elif q_values is not None:
            raise ValueError("histories.append: q_values given but the history has q_period 0")
        if q1 == q0:
            arrays.pop("q_values", None)

        def write_block(block: int, b0: int, b1: int) -> dict:
            data = _encode_chunk({k: v[b0:b1] for k, v in arrays.items()}, self._level)
            name = _chunk_name(block, t0)
            _write_atomic(self.path / CHUNK_DIR / name, data)
            return {"name": name, "bytes": len(data), "crc32": zlib.crc32(data)}

        # zlib releases the GIL, so blocks compress in parallel threads.
        files = list(self._pool.map(lambda args: write_block(*args),
                                    [(i, b0, b1) for i, (b0, b1) in enumerate(self._blocks())]))
        self._manifest["chunks"].append({"t0": t0, "t1": t1, "q0": q0, "q1": q1, "files": files})
        self._manifest["num_steps"], self._manifest["num_q"] = t1, q1
        _write_manifest(self.path, self._manifest)

    def truncate(self, t: int) -> None:
        """Drop everything at steps >= t (t must be 0 or the end of a written chunk)."""
        _truncate(self.path, self._manifest, t)


def _write_manifest(path: Path, manifest: dict) -> None:
    _write_atomic(path / MANIFEST_FILE, json.dumps(manifest, separators=(",", ":")).encode())


def _truncate(path: Path, manifest: dict, t: int) -> None:
    """Keep chunks ending at or before t, replace the manifest, then delete every other file."""
    ends = [0] + [c["t1"] for c in manifest["chunks"]]
    if t not in ends:
        raise ArtifactError(f"cannot truncate history {path} at step {t}: not a chunk boundary "
                            f"(written boundaries: {ends[:3]}...{ends[-3:]}), so its manifest does "
                            f"not belong to the run's checkpoint; remove {path.parent} to start "
                            f"it over, or choose another run.name")
    keep = [c for c in manifest["chunks"] if c["t1"] <= t]
    manifest["chunks"] = keep
    manifest["num_steps"] = t
    manifest["num_q"] = keep[-1]["q1"] if keep else 0
    _write_manifest(path, manifest)
    # Files not named by the manifest: dropped chunks and orphans of a crash mid-append.
    named = {f["name"] for c in keep for f in c["files"]}
    (path / CHUNK_DIR).mkdir(exist_ok=True)  # gone with nothing kept in it: nothing is lost
    for f in (path / CHUNK_DIR).iterdir():
        if f.name not in named:
            f.unlink()


def create(path: str | Path, *, spec: Any, streams: Sequence[StreamInfo],
           config: dict | None = None,
           q_period: int = 0, streams_per_chunk: int = 64, compression_level: int = 3,
           total_steps: int | None = None, overwrite: bool = False,
           check_space: bool = True) -> HistoryWriter:
    """Start a new, empty history at ``path`` and return its writer.

    Args:
        spec: ``envs.EnvSpec`` of the environment (interface form).
        streams: one :class:`StreamInfo` per stream, in stream order.
        config: the resolved config dict (``config.to_dict(cfg)``), stored as is.
        q_period: Q-value recording period in steps (0: no Q-values).
        streams_per_chunk: streams stored together in one chunk file.
        compression_level: zlib level 0-9.
        total_steps: planned steps per stream; with ``check_space`` the disk is checked for
            :func:`estimate_bytes` of it before anything is written.
        overwrite: replace an existing history (otherwise an existing one is an error; resume it
            with :func:`resume`).

    Raises:
        ClimitError: a history already exists (and not ``overwrite``), or the disk is too small.
    """
    path = Path(path)
    if not streams:
        raise ValueError("histories.create: needs at least one stream")
    if (path / META_FILE).exists() and not overwrite:
        raise ClimitError(f"a history already exists at {path}; resume it or remove it")
    if check_space and total_steps:
        check_disk(path, estimate_bytes(spec, len(streams), total_steps, q_period))
    env = _spec_json(spec)
    meta = {
        "format_version": FORMAT_VERSION,
        "env": env,
        "streams_per_chunk": int(streams_per_chunk),
        "compression_level": int(compression_level),
        "q_period": int(q_period),
        "total_steps": None if total_steps is None else int(total_steps),
        "dtypes": {"obs": env["obs_dtype"], **_FIXED_DTYPES},
        "config": config or {},
        "streams": [s.to_json() for s in streams],
    }
    if (path / CHUNK_DIR).exists():
        shutil.rmtree(path / CHUNK_DIR)
    (path / CHUNK_DIR).mkdir(parents=True)
    manifest = {"format_version": FORMAT_VERSION, "num_steps": 0, "num_q": 0, "chunks": []}
    _write_manifest(path, manifest)
    _write_atomic(path / META_FILE, json.dumps(meta, indent=1).encode())
    return HistoryWriter(path, meta, manifest)


def resume(path: str | Path, t: int | None = None) -> HistoryWriter:
    """Reopen a history for appending, first truncating it to step ``t`` (None: keep all).

    After a crash the teacher restores its checkpoint (vector step t, i.e. env step t * E of
    each learner, t steps per stream) and calls ``resume(path, t)``;
    appending the same data again then gives a history identical to an uninterrupted one.

    Raises:
        ArtifactError: the directory is missing (the history a checkpoint continues is gone)
            or its metadata is damaged; or ``t`` is not a written chunk boundary.
    """
    path = Path(path)
    if not path.is_dir():  # not open()'s "run climit teach first": this *is* climit teach resuming
        raise ArtifactError(f"cannot resume the learning history at {path}: the directory is "
                            "missing, so the history that the run's checkpoint continues is gone; "
                            f"remove the run directory to start over, or choose another run.name")
    h = open(path)
    t = h.num_steps if t is None else t
    start_over = f"remove {path.parent} to start it over, or choose another run.name"
    if t > h.num_steps:
        raise ArtifactError(f"cannot resume the learning history at {path}: it holds {h.num_steps} "
                            f"steps per stream, fewer than the {t} the run's checkpoint continues "
                            f"from, so {path / MANIFEST_FILE} was cut or edited and the steps in "
                            f"between are lost; {start_over}")
    _verify_kept(h, t, start_over)
    w = HistoryWriter(h.path, h.meta, h.manifest)
    _truncate(h.path, w._manifest, t)
    return w


def _verify_kept(h: History, t: int, advice: str) -> None:
    """Check the checksum of every chunk file a resume to step ``t`` keeps (they are compressed,
    so reading them costs little next to a run): a chunk damaged after it was written would
    otherwise outlive the resume, and the run would finish with a history no reader can use.

    Raises:
        ArtifactError: naming the first missing, truncated or corrupt file, and what to do.
    """
    kept = [entry for c in h.manifest["chunks"] if c["t1"] <= t for entry in c["files"]]
    try:
        for entry in kept:
            h._verified_bytes(entry)
    except ArtifactError as e:
        raise ArtifactError(f"cannot resume the learning history at {h.path}: {e}, and the steps "
                            f"it holds are older than the run's checkpoint, so they cannot be "
                            f"redone; {advice}") from None


# ---------------------------------------------------------------------------------------------
# Reader
# ---------------------------------------------------------------------------------------------

# Compressed chunk files kept after verification (a MinAtar file is a few MB compressed).
RAW_FILES_KEPT = 4


class History:
    """Lazy, read-only view of a history directory. Create with :func:`open`.

    Reads load only the chunk files they touch. A file is read and checksum-verified once
    while it is among the last ``RAW_FILES_KEPT`` files read; each field is decoded on its own
    (reading rewards never decodes observations), and the decoded fields most recently used
    are kept up to ``cache_bytes`` in total (least recently used dropped first).
    """

    def __init__(self, path: Path, meta: dict, manifest: dict, cache_bytes: int = 512 << 20):
        self.path, self.meta, self.manifest = path, meta, manifest
        self.cache_bytes = cache_bytes
        self._cached_bytes = 0
        self._t0 = np.array([c["t0"] for c in manifest["chunks"]], np.int64)
        self._q0 = np.array([c["q0"] for c in manifest["chunks"]], np.int64)
        self._cache: collections.OrderedDict = collections.OrderedDict()
        self._raw: collections.OrderedDict = collections.OrderedDict()  # (chunk, block) -> bytes
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:  # picklable for multi-process data loaders (no lock, no cache)
        return {"path": self.path, "meta": self.meta, "manifest": self.manifest,
                "cache_bytes": self.cache_bytes}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"], state["meta"], state["manifest"], state["cache_bytes"])

    @property
    def num_streams(self) -> int:
        return len(self.meta["streams"])

    @property
    def num_steps(self) -> int:
        """Steps written per stream (T)."""
        return int(self.manifest["num_steps"])

    @property
    def num_q(self) -> int:
        """Q-value rows per stream (Tq); row k is at step k * q_period."""
        return int(self.manifest["num_q"])

    @property
    def q_period(self) -> int:
        return int(self.meta["q_period"])

    @property
    def complete(self) -> bool:
        """True when the planned ``total_steps`` have all been written."""
        total = self.meta.get("total_steps")
        return total is not None and self.num_steps >= total

    @property
    def env(self) -> dict:
        """Interface spec: name, interface, obs_shape, obs_dtype, num_actions, action_mask, ..."""
        return self.meta["env"]

    @property
    def config(self) -> dict:
        return self.meta["config"]

    def stream_info(self, i: int) -> StreamInfo:
        return StreamInfo.from_json(self.meta["streams"][i])

    def _load(self, chunk: int, block: int, field: str) -> np.ndarray:
        """Decoded ``field`` of one chunk file: [streams in block, T_chunk, ...].

        Only the requested member is decompressed and cached (per chunk, block and field):
        reading rewards or episode boundaries never pays for decoding observations, which
        dominate a MinAtar chunk. A miss reads the file through :meth:`_file_bytes`: its whole
        checksum is verified unless the file is among the last ``RAW_FILES_KEPT`` read.
        """
        key = (chunk, block, field)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        entry = self.manifest["chunks"][chunk]["files"][block]
        data = self._file_bytes(chunk, block)
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                array = z[field]
        except KeyError:
            raise ArtifactError(f"history chunk {self.path / CHUNK_DIR / entry['name']} has no "
                                f"field {field!r}") from None
        except Exception as e:  # a zip/npy decoding failure past the checksum is still damage
            raise ArtifactError(f"history chunk {self.path / CHUNK_DIR / entry['name']} cannot be "
                                f"decoded: {e}") from None
        self._check_decoded(chunk, block, field, array)
        with self._lock:
            if key not in self._cache:
                self._cache[key] = array
                self._cached_bytes += array.nbytes
            while self._cached_bytes > self.cache_bytes and len(self._cache) > 1:
                _, dropped = self._cache.popitem(last=False)
                self._cached_bytes -= dropped.nbytes
        return array

    def _check_decoded(self, chunk: int, block: int, field: str, array: np.ndarray) -> None:
        """Raise ArtifactError unless a decoded field has the shape and dtype the metadata says:
        [streams in the block, the row's steps (or Q rows), *per-step shape]. The checksum
        vouches for the file, not for meta.json; an edited obs_shape or stream count would
        otherwise fail deep in a reader, or silently read the wrong streams."""
        c, spc, n = self.manifest["chunks"][chunk], self.meta["streams_per_chunk"], self.num_streams
        span = c["q1"] - c["q0"] if field == "q_values" else c["t1"] - c["t0"]
        shape = (min(n, (block + 1) * spc) - block * spc, span, *self._field_shape(field))
        if array.shape == shape and array.dtype == np.dtype(self.meta["dtypes"][field]):
            return
        raise ArtifactError(f"history chunk {self.path / CHUNK_DIR / c['files'][block]['name']} "
                            f"holds {field} of shape {array.shape} ({array.dtype}), but "
                            f"{self.path / META_FILE} and the manifest say {shape} "
                            f"({self.meta['dtypes'][field]}): the metadata was edited or belongs "
                            f"to another history; {_REWRITE.format(self.path.parent)}")

    def _file_bytes(self, chunk: int, block: int) -> bytes:
        """One chunk file's checksum-verified (still compressed) bytes. The last few files are
        kept: reading several fields of the same steps (an episode's rewards, terminations and
        truncations) reads and verifies each file once, not once per field."""
        key = (chunk, block)
        with self._lock:
            if key in self._raw:
                self._raw.move_to_end(key)
                return self._raw[key]
        data = self._verified_bytes(self.manifest["chunks"][chunk]["files"][block])
        with self._lock:
            self._raw[key] = data
            while len(self._raw) > RAW_FILES_KEPT:
                self._raw.popitem(last=False)
        return data

    def _verified_bytes(self, entry: dict) -> bytes:
        file = self.path / CHUNK_DIR / entry["name"]
        try:
            data = file.read_bytes()
        except FileNotFoundError:
            raise ArtifactError(f"history chunk {file} is missing") from None
        if len(data) != entry["bytes"]:
            raise ArtifactError(f"history chunk {file} is truncated or resized: "
                                f"{len(data)} bytes on disk, {entry['bytes']} written")
        if zlib.crc32(data) != entry["crc32"]:
            raise ArtifactError(f"history chunk {file} is corrupt (checksum mismatch)")
        return data

    def _span(self, field: str, t0: int, t1: int | None) -> tuple[int, np.ndarray, str, str]:
        """Check a read of ``field`` over [t0, t1): (t1, chunk starts, start key, end key)."""
        if field not in FIELDS:
            raise ValueError(f"unknown history field {field!r}; fields: {', '.join(FIELDS)}")
        is_q = field == "q_values"
        if is_q and self.q_period <= 0:
            raise ValueError(f"history {self.path} has no Q-values (q_period 0)")
        end = self.num_q if is_q else self.num_steps
        t1 = end if t1 is None else t1
        if not 0 <= t0 <= t1 <= end:
            raise IndexError(f"range [{t0}, {t1}) outside [0, {end}) of {field}")
        return (t1, *((self._q0, "q0", "q1") if is_q else (self._t0, "t0", "t1")))

    def _field_shape(self, field: str) -> tuple[int, ...]:
        """Per-step shape of ``field`` (after the time axis)."""
        if field == "q_values":
            return (self.env["num_actions"],)
        return tuple(self.env["obs_shape"]) if field == "obs" else ()

    def read(self, field: str, stream: int, t0: int = 0, t1: int | None = None) -> np.ndarray:
        """Steps [t0, t1) of one stream's ``field`` (for q_values: Q rows [t0, t1)).

        Returns [t1 - t0, ...] in the stored dtype. Loads only the chunks it overlaps.
        """
        if not 0 <= stream < self.num_streams:
            raise IndexError(f"stream {stream} out of range [0, {self.num_streams})")
        return self.read_streams(field, [stream], t0, t1)[0]

    def read_streams(self, field: str, streams: Sequence[int], t0: int = 0,
                     t1: int | None = None) -> np.ndarray:
        """Steps [t0, t1) of ``field`` for several streams: [len(streams), t1 - t0, ...].

        Equals stacking :meth:`read` of each stream, but loads every chunk file it overlaps
        once for all the requested streams of its block of streams (per-stream reads decode a
        block's file once per stream whenever the cache cannot hold a whole stream's files).
        """
        t1, starts, key0, key1 = self._span(field, t0, t1)
        streams = np.asarray(streams, np.int64).reshape(-1)
        if streams.size and not (0 <= streams.min() and streams.max() < self.num_streams):
            raise IndexError(f"streams {streams.tolist()} out of range [0, {self.num_streams})")
        block, row = np.divmod(streams, self.meta["streams_per_chunk"])
        shape = (len(streams), t1 - t0, *self._field_shape(field))
        out = np.empty(shape, self.meta["dtypes"][field])
        # :func:`open` checked the rows are contiguous; this mask keeps a History built any other
        # way from handing out the uninitialised memory of steps no row covers.
        written = np.zeros(t1 - t0, bool)
        first = max(int(np.searchsorted(starts, t0, side="right")) - 1, 0)
        for ci in range(first, len(starts)):
            c = self.manifest["chunks"][ci]
            if c[key0] >= t1:
                break
            lo, hi = max(t0, c[key0]), min(t1, c[key1])
            if hi <= lo:
                continue
            for b in np.unique(block):
                sel = np.flatnonzero(block == b)
                part = self._load(ci, int(b), field)[row[sel], lo - c[key0]:hi - c[key0]]
                out[sel, lo - t0:hi - t0] = part
            written[lo - t0:hi - t0] = True
        if not written.all():
            gap = t0 + int(np.argmin(written))
            raise ArtifactError(f"history manifest {self.path / MANIFEST_FILE} names no chunk for "
                                f"{field} at {'Q row' if field == 'q_values' else 'step'} {gap} "
                                f"(damaged or edited by hand); {_REWRITE.format(self.path.parent)}")
        return out

    def read_steps(self, stream: int, t0: int = 0, t1: int | None = None) -> dict[str, np.ndarray]:
        """All per-step fields of one stream over [t0, t1), as {field: array}."""
        return {f: self.read(f, stream, t0, t1) for f in STEP_FIELDS}

    def q_steps(self) -> np.ndarray:
        """int64 [Tq]: the step of every Q-value row, counted along a stream (one env): vector
        step k*q_period, which is env step k*q_period*num_envs of the learner."""
        return np.arange(self.num_q, dtype=np.int64) * max(self.q_period, 1)

    def episodes(self, stream: int) -> Episodes:
        """Episode boundaries of one stream, from ``terminated | truncated``."""
        done = self.read("terminated", stream) | self.read("truncated", stream)
        reward = self.read("reward", stream).astype(np.float64)
        ends = np.flatnonzero(done)
        starts = np.concatenate([[0], ends + 1]).astype(np.int64)
        starts = starts[starts < len(done)]
        if len(starts) == 0:
            empty = np.zeros(0, np.int64)
            return Episodes(empty, empty, np.zeros(0), np.zeros(0, bool))
        stops = np.append(starts[1:], len(done))
        ret = np.add.reduceat(reward, starts)
        finished = np.ones(len(starts), bool)
        finished[-1] = bool(done[-1])
        return Episodes(starts, stops - starts, ret, finished)

    def verify(self) -> int:
        """Check every chunk file's length and checksum; returns the number checked.

        Raises:
            ArtifactError: naming the first missing, truncated or corrupt chunk.
        """
        count = 0
        for c in self.manifest["chunks"]:
            for entry in c["files"]:
                self._verified_bytes(entry)
                count += 1
        return count


def open(path: str | Path, cache_bytes: int = 512 << 20) -> History:  # noqa: A001 (histories.open)
    """Open a history directory for lazy reading (``cache_bytes``: decoded-chunk cache size).

    Raises:
        ArtifactError: the directory, its metadata or its manifest is missing or damaged, or
            was written by an unknown format version.
    """
    path = Path(path)
    if not path.is_dir():
        raise ArtifactError(f"no learning history at {path} (directory missing); run `climit "
                            "teach` first")
    try:
        meta = jsonfile.read(path / META_FILE, "history metadata")
        manifest = jsonfile.read(path / MANIFEST_FILE, "history manifest")
    except ArtifactError as e:
        raise ArtifactError(f"{e}; {_REWRITE.format(path.parent)}") from None
    for what, raw in (("metadata", meta), ("manifest", manifest)):
        if raw.get("format_version") != FORMAT_VERSION:
            raise ArtifactError(f"history {what} at {path} has format version "
                                f"{raw.get('format_version')!r}; this climit reads "
                                f"{FORMAT_VERSION}")
    missing = [k for k in ("env", "streams", "streams_per_chunk", "q_period", "dtypes")
               if k not in meta]
    if missing or not isinstance(manifest.get("chunks"), list):
        raise ArtifactError(f"history metadata at {path} is damaged: missing "
                            f"{', '.join(missing) or 'manifest chunks'}")
    _check_meta(path, meta)
    _check_manifest(path, meta, manifest)
    return History(path, meta, manifest, cache_bytes)


# What to do about a history whose metadata or files do not agree ({} is the teacher directory).
_REWRITE = ("restore it from a copy, or remove {} and run `climit teach` again to write the "
            "history anew")


def _is_int(x: Any, low: int = 0) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= low


def _meta_problem(meta: dict) -> str | None:
    """What makes ``meta`` unusable (None: nothing): the fields readers size their arrays by."""
    env = meta["env"]
    if not (isinstance(env, dict) and isinstance(env.get("obs_shape"), list)
            and all(_is_int(d, 1) for d in env["obs_shape"])
            and _is_int(env.get("num_actions"), 1)):
        return "env.obs_shape or env.num_actions is not a shape / positive count"
    if not (isinstance(meta["streams"], list) and meta["streams"]
            and _is_int(meta["streams_per_chunk"], 1)
            and _is_int(meta["q_period"], 0)):
        return "streams, streams_per_chunk or q_period is not a non-empty list / count"
    # The writer always stores exactly these; anything else was edited (or cannot be decoded).
    if meta["dtypes"] != {"obs": env.get("obs_dtype"), **_FIXED_DTYPES}:
        return f"dtypes {meta['dtypes']!r} are not the stored ones (obs {env.get('obs_dtype')!r})"
    return None


def _check_meta(path: Path, meta: dict) -> None:
    """Raise ArtifactError naming meta.json if its shape fields are not usable."""
    problem = _meta_problem(meta)
    if problem is not None:
        raise ArtifactError(f"history metadata {path / META_FILE} is damaged or was edited: "
                            f"{problem}; {_REWRITE.format(path.parent)}")


def _chunk_problem(c: Any, t: int, blocks: int, q_period: int) -> str | None:
    """What is wrong with manifest row ``c`` when steps from ``t`` come next (None: nothing).

    ``blocks``: files per row, ceil(streams / streams_per_chunk) by the metadata.
    """
    keys = ("t0", "t1", "q0", "q1")
    if not (isinstance(c, dict) and all(_is_int(c.get(k)) for k in keys)
            and isinstance(c.get("files"), list)):
        return "is not a {t0, t1, q0, q1, files} record"
    if c["t0"] != t or c["t1"] <= t:
        return (f"covers steps [{c['t0']}, {c['t1']}) where step {t} comes next (rows must cover "
                f"the steps from 0 in order, without gaps)")
    q = (num_q_rows(t, q_period), num_q_rows(c["t1"], q_period))
    if (c["q0"], c["q1"]) != q:
        return f"holds Q rows [{c['q0']}, {c['q1']}), not [{q[0]}, {q[1]})"
    names = [_chunk_name(b, t) for b in range(blocks)]
    if [f.get("name") if isinstance(f, dict) else None for f in c["files"]] != names:
        return (f"lists {len(c['files'])} files, not the {blocks} ({names[0]}...) that the "
                f"metadata's streams and streams_per_chunk make")
    if not all(_is_int(f.get("bytes")) and _is_int(f.get("crc32")) for f in c["files"]):
        return "has a file without its byte length or crc32"
    return None


def _check_manifest(path: Path, meta: dict, manifest: dict) -> None:
    """Check that the manifest's rows cover steps [0, num_steps) and Q rows [0, num_q) exactly,
    in order, with one file per block of streams: a reader fills its output only from the rows,
    so a gap, an overlap or a count raised by hand would hand it memory nothing was written to.

    Raises:
        ArtifactError: naming the manifest (and the metadata, whose stream count sets the files).
    """
    blocks = -(-len(meta["streams"]) // meta["streams_per_chunk"])
    qp, t, problem = meta["q_period"], 0, None
    for i, c in enumerate(manifest["chunks"]):
        problem = _chunk_problem(c, t, blocks, qp)
        if problem is not None:
            problem = f"row {i} of chunks {problem}"
            break
        t = c["t1"]
    counts = (manifest.get("num_steps"), manifest.get("num_q"))
    if problem is None and counts != (t, num_q_rows(t, qp)):
        problem = (f"num_steps, num_q = {counts[0]!r}, {counts[1]!r}, but its chunks hold "
                   f"{t} steps and {num_q_rows(t, qp)} Q rows")
    if problem is not None:
        raise ArtifactError(f"history manifest {path / MANIFEST_FILE} does not match its chunks "
                            f"and {path / META_FILE} (damaged or edited by hand): {problem}; "
                            f"{_REWRITE.format(path.parent)}")


def is_history(path: str | Path) -> bool:
    """True if ``path`` looks like a history directory (has its metadata file)."""
    return (Path(path) / META_FILE).is_file()


__all__ = ["FIELDS", "STEP_FIELDS", "Episodes", "History", "HistoryWriter", "StreamInfo",
           "check_disk", "create", "estimate_bytes", "free_bytes", "human_bytes", "is_history",
           "num_q_rows", "open", "resume"]
