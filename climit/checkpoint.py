"""Checkpoints of whole training states (orbax v1), snapshots kept for good, and ``describe``.

One directory holds a sequence of steps, ``DIR/<step>/``, each a full pytree (params, optimizer
state, counters, PRNG keys, replay buffers ...) saved by ``orbax.checkpoint.v1`` plus two
climit additions:

* the resolved config and a JSON metrics dict stored with the step (orbax custom metadata and
  metrics), so ``describe`` and ``climit inspect`` need nothing else;
* ``climit_checksums.json``: the byte length and crc32 of every file of the step, written
  atomically right after orbax commits the step. orbax already writes a step to a temporary
  directory and renames it when complete, but it does not checksum array data (a flipped byte
  in a data file restores silently). A step without this file is one whose save was killed
  between the two writes: it is never listed or restored, and a writing ``Checkpointer``
  deletes it on opening. So a killed process leaves the old or the new checkpoint, never a
  half one that restores. Every restore verifies every file first.

Retention: keep the latest ``keep`` steps, and optionally the ``keep_best`` steps with the
lowest ``metrics[best]``; the newest step is never deleted (orbax's v1 ``LatestN`` or'd with
``BestN``; the old v0 manager's ``max_to_keep`` + ``best_fn`` could delete it). ``keep=None``
keeps everything: that is :func:`snapshots`, for the teacher's parameter snapshots. ``keep`` is
at least 2: orbax applies the policy inside its save, before the checksums make the new step
count, so with 1 a kill in between would leave no checkpoint at all.

Saving is synchronous: when ``save`` returns, the step is on disk with its checksums (it is
not read back: a restore verifies it then).
Typed PRNG key arrays (``jax.random.key``) are saved as their key data and come back typed.

Restoring onto another device count: pass ``target`` as a tree of ``jax.ShapeDtypeStruct`` with
the shardings wanted (e.g. ``NamedSharding`` over a mesh of all devices); without a target, every
array comes back on the first local device, whatever topology saved it.

Usage::

    ckpt = checkpoint.Checkpointer(run / "teacher" / "checkpoints", keep=2)
    ckpt.save(step, state, config=config.to_dict(cfg), metrics={"return": 12.5})
    state = ckpt.restore(target=jax.eval_shape(init, key))    # latest step, exact structure
    checkpoint.describe(run / "teacher" / "checkpoints")       # metadata only, no arrays
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import os
import shutil
import zlib
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import jax
import numpy as np

from climit import histories, jsonfile, stopping
from climit.errors import ArtifactError, ClimitError

T = TypeVar("T")

CHECKSUM_FILE = "climit_checksums.json"
# beside checkpoints/: its damaged steps set aside (damaged_dir)
DAMAGED_DIR = "damaged_checkpoints"
FORMAT_VERSION = 1
# Disk a saved step takes beyond its arrays: orbax's metadata and store files and our
# checksums, each rounded up to a block (a step of three small arrays: 32 KB in 13 files, 80 KB
# of 4 KB blocks), with room for more files.
STEP_OVERHEAD_BYTES = 256 * 1024
_TMP_MARK = ".orbax-checkpoint-tmp"


def _ocp():
    """orbax v1 (imported lazily: it is heavy and only needed when touching checkpoints)."""
    from orbax.checkpoint import v1 as ocp
    return ocp


# ---------------------------------------------------------------------------------------------
# Checksums
# ---------------------------------------------------------------------------------------------

def _crc32_file(path: Path) -> int:
    crc = 0
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            crc = zlib.crc32(block, crc)
    return crc


def _write_checksums(step_dir: Path) -> None:
    files = {}
    for p in sorted(step_dir.rglob("*")):
        if p.is_file() and p.name != CHECKSUM_FILE:
            files[str(p.relative_to(step_dir))] = [p.stat().st_size, _crc32_file(p)]
    jsonfile.write_atomic(step_dir / CHECKSUM_FILE,  # synced: the step counts from here
                          json.dumps({"format_version": FORMAT_VERSION, "files": files}).encode())


def _read_checksums(step_dir: Path) -> dict[str, list[int]]:
    """{relative path: [size, crc32]} of a step's files, as its checksum file lists them."""
    try:
        files = json.loads((step_dir / CHECKSUM_FILE).read_text())["files"]
    except FileNotFoundError:
        raise ArtifactError(f"checkpoint {step_dir} is incomplete (its save never "
                            "finished)") from None
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError):
        files = None
    # JSON that parses yet is not {path: [size, crc]} is as damaged as JSON that does not.
    if not (isinstance(files, dict) and all(_is_size_and_crc(v) for v in files.values())):
        raise ArtifactError(f"checkpoint {step_dir} is damaged: {CHECKSUM_FILE} is unreadable")
    return files


def _is_size_and_crc(entry: Any) -> bool:
    return (isinstance(entry, list) and len(entry) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in entry))


def verify_step(step_dir: str | Path, only: tuple[str, ...] | None = None) -> int:
    """Check the files of one step against its checksums; returns how many were checked.

    ``only``: restrict to files whose relative path starts with one of these prefixes (e.g. the
    small metadata files, to describe a checkpoint without reading its arrays).

    Raises:
        ArtifactError: naming the first missing, resized or corrupt file.
    """
    step_dir = Path(step_dir)
    count = 0
    for rel, (size, crc) in _read_checksums(step_dir).items():
        if only is not None and not rel.startswith(only):
            continue
        p = step_dir / rel
        if not p.is_file():
            raise ArtifactError(f"checkpoint {step_dir} is damaged: {rel} is missing")
        if p.stat().st_size != size:
            raise ArtifactError(f"checkpoint {step_dir} is damaged: {rel} is truncated or resized "
                                f"({p.stat().st_size} bytes, {size} written)")
        if _crc32_file(p) != crc:
            raise ArtifactError(f"checkpoint {step_dir} is damaged: {rel} is corrupt (checksum "
                                "mismatch)")
        count += 1
    return count


# ---------------------------------------------------------------------------------------------
# Directory scanning (no orbax needed)
# ---------------------------------------------------------------------------------------------

def _step_dirs(directory: Path) -> dict[int, Path]:
    """Integer-named subdirectories (orbax's in-progress temporaries excluded)."""
    if not directory.is_dir():
        return {}
    return {int(p.name): p for p in directory.iterdir()
            if p.is_dir() and p.name.isdigit() and _TMP_MARK not in p.name}


def complete_steps(directory: str | Path) -> list[int]:
    """Steps whose save finished (they have a checksum file), ascending."""
    return sorted(s for s, p in _step_dirs(Path(directory)).items()
                  if (p / CHECKSUM_FILE).is_file())


def incomplete_steps(directory: str | Path) -> list[int]:
    """Step directories whose save was interrupted (no checksum file)."""
    return sorted(s for s, p in _step_dirs(Path(directory)).items()
                  if not (p / CHECKSUM_FILE).is_file())


def is_checkpoint_dir(path: str | Path) -> bool:
    """True if ``path`` holds at least one complete climit checkpoint step."""
    return bool(complete_steps(path))


def _require_dir(directory: Path) -> None:
    if not directory.exists():
        raise ArtifactError(f"no checkpoint directory at {directory}")
    if not directory.is_dir():
        raise ArtifactError(f"{directory} is not a checkpoint directory (it is a file)")
    if not complete_steps(directory):
        extra = (f"; interrupted saves at steps {incomplete_steps(directory)}"
                 if incomplete_steps(directory) else "")
        raise ArtifactError(f"{directory} is not a checkpoint directory (no saved steps{extra})")


# ---------------------------------------------------------------------------------------------
# Target trees
# ---------------------------------------------------------------------------------------------

def _default_sharding() -> jax.sharding.Sharding:
    return jax.sharding.SingleDeviceSharding(jax.local_devices()[0])


def _abstract_leaf(leaf: Any) -> Any:
    """What orbax should restore a target leaf as (arrays keep their given shardings)."""
    if isinstance(leaf, jax.ShapeDtypeStruct):
        if leaf.sharding is None:
            return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=_default_sharding())
        return leaf
    if isinstance(leaf, jax.Array):
        return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=leaf.sharding)
    return leaf  # numpy arrays and Python scalars restore as themselves


def _array_spec(leaf: Any) -> tuple[tuple[int, ...], str] | None:
    """(shape, dtype) of an array leaf or its metadata, a typed PRNG key as its key data; None
    for a Python scalar."""
    dtype = getattr(leaf, "dtype", None)
    if dtype is None:
        return None
    if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        leaf = jax.eval_shape(jax.random.key_data, leaf)
    return tuple(leaf.shape), str(np.dtype(leaf.dtype))


def _mismatch(tree_meta: Any, abstract: Any) -> str:
    """Why a saved tree does not fit ``abstract`` ('' when it does): the first leaves missing
    from either side, or the first leaf of another shape or dtype. orbax would refuse the first
    two with a line naming no leaf, and convert the third without a word (a float32 state
    resumed as bfloat16 would train on, rounded)."""
    saved, wanted = flatten(tree_meta), flatten(abstract)
    missing, extra = sorted(set(wanted) - set(saved)), sorted(set(saved) - set(wanted))
    if missing or extra:
        return (f"{len(missing)} leaves wanted are not saved ({', '.join(missing[:3]) or '-'}), "
                f"{len(extra)} saved are not wanted ({', '.join(extra[:3]) or '-'})")
    for path, leaf in wanted.items():
        have, want = _array_spec(saved[path]), _array_spec(leaf)
        if None not in (have, want) and have != want:
            return (f"{path} is saved as {have[1]} {list(have[0])}, wanted {want[1]} "
                    f"{list(want[0])}")
    return ""


def _abstract_from_metadata(tree_meta: Any) -> Any:
    """Abstract target from stored metadata: every jax array on the first local device.

    orbax v1 metadata leaves are ``ArrayMetadata`` (jax arrays), ``NumpyMetadata`` and plain
    Python scalars; anything else is passed through for orbax to resolve.
    """
    def leaf(m: Any) -> Any:
        kind = type(m).__name__
        if kind == "ArrayMetadata":
            return jax.ShapeDtypeStruct(tuple(m.shape), m.dtype, sharding=_default_sharding())
        if kind == "NumpyMetadata":
            return np.zeros(tuple(m.shape), m.dtype)
        return m

    return jax.tree.map(leaf, tree_meta)


# ---------------------------------------------------------------------------------------------
# Checkpointer
# ---------------------------------------------------------------------------------------------

def _json_safe(obj: Any) -> Any:
    """Metrics/config as plain JSON (numpy and jax scalars become Python numbers)."""
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (np.generic, jax.Array)) or hasattr(obj, "item"):
        return np.asarray(obj).item()
    return obj


class Checkpointer:
    """A directory of checkpoint steps with a retention policy. Use as a context manager.

    Args:
        directory: created if missing (unless ``readonly``).
        keep: latest steps kept (None: keep every step, e.g. snapshots).
        best: metric name; with it the ``keep_best`` steps of lowest ``metrics[best]`` are kept
            too (steps without that metric count as worst). The newest step is always kept.
        keep_best: how many best steps to keep.
        readonly: open an existing directory for reading only (nothing is created or deleted).

    Raises:
        ArtifactError: ``readonly`` and the directory holds no complete checkpoint.
    """

    def __init__(self, directory: str | Path, *, keep: int | None = 2, best: str | None = None,
                 keep_best: int = 1, readonly: bool = False):
        if keep is not None and keep < 2 and not readonly:
            raise ValueError(f"keep={keep}: at least 2 latest steps are kept (see the module "
                             f"docstring: with 1 a killed save would leave no checkpoint)")
        self.directory = Path(directory).absolute()
        self.readonly = readonly
        self._unreadable_metrics: list[int] = []
        if readonly:
            _require_dir(self.directory)
            _refuse_unreadable_metrics(self.directory)
        else:
            self.directory.mkdir(parents=True, exist_ok=True)
            _remove_incomplete(self.directory)
            # orbax reads every step's metrics as it opens the directory (for ``best``) and
            # fails on a damaged one with a bare JSONDecodeError: such steps are set aside
            # first, and :meth:`restore_newest` reports them with the other damaged ones.
            self._unreadable_metrics = _unreadable_metrics(self.directory)
            self._move_aside(self._unreadable_metrics, self.damaged_dir)
        ocp = _ocp()
        pp = ocp.training.preservation_policies
        policies = [pp.PreserveAll()] if keep is None or readonly else [pp.LatestN(keep)]
        if best is not None and not readonly:  # a reader deletes nothing: no policy to apply
            policies.append(pp.BestN(get_metric_fn=lambda m: float(m.get(best, math.inf)),
                                     reverse=True, n=keep_best,
                                     keep_checkpoints_without_metrics=False))
        self._ckpt = ocp.training.Checkpointer(
            self.directory, preservation_policy=pp.AnyPreservationPolicy(policies),
            cleanup_tmp_directories=not readonly)

    @property
    def damaged_dir(self) -> Path:
        """Where damaged steps go: ``damaged_<name>/`` beside the directory, one per directory
        (a run's checkpoints and snapshots often share step numbers)."""
        return self.directory.parent / f"damaged_{self.directory.name}"

    @property
    def set_aside_on_open(self) -> list[int]:
        """Steps whose metrics did not parse, moved to :attr:`damaged_dir` as this opened."""
        return list(self._unreadable_metrics)

    # -- context manager ---------------------------------------------------------------------
    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is None:
            self.close()
            return
        # An error is already on its way out (a full disk, say): closing waits on orbax's
        # background writes, which then often fail the same way. Raising that on top would bury
        # the first, specific message under its echo; it is logged (at INFO: an echo, not news)
        # and the first one goes through.
        try:
            self.close()
        except Exception as close_error:
            logging.getLogger(__name__).info(
                "climit: closing the checkpoints at %s also failed (%s: %s), while handling the "
                "error reported below", self.directory, type(close_error).__name__,
                str(close_error)[:300])

    def close(self) -> None:
        self._ckpt.close()

    # -- listing ------------------------------------------------------------------------------
    def steps(self) -> list[int]:
        """Complete steps on disk, ascending."""
        return complete_steps(self.directory)

    def latest_step(self) -> int | None:
        steps = self.steps()
        return steps[-1] if steps else None

    def _step_dir(self, step: int | None) -> tuple[int, Path]:
        steps = self.steps()
        if step is None:
            if not steps:
                raise ArtifactError(f"no checkpoint saved yet in {self.directory}")
            step = steps[-1]
        if step not in steps:
            raise ArtifactError(f"no checkpoint at step {step} in {self.directory}; saved steps: "
                                f"{steps or 'none'}")
        return step, self.directory / str(step)

    # -- save ---------------------------------------------------------------------------------
    def save(self, step: int, tree: Any, *, config: dict | None = None,
             metrics: dict | None = None) -> None:
        """Save ``tree`` at ``step`` (synchronously), then apply the retention policy.

        ``config``: the resolved config dict; ``metrics``: JSON values (the ``best`` one a number).
        A step that already exists is replaced (a resumed run re-saves the steps it redoes).
        """
        if self.readonly:
            raise ClimitError(f"checkpoint directory {self.directory} was opened read-only")
        step = int(step)
        custom = {"climit": {"format_version": FORMAT_VERSION, "config": _json_safe(config or {})}}
        with stopping.held_interrupts():  # Ctrl-C waits for the save (see held_interrupts)
            if (self.directory / str(step)).exists():
                self._ckpt.delete(step, missing_ok=True)
                shutil.rmtree(self.directory / str(step), ignore_errors=True)
                self._ckpt.reload()
            self._ckpt.save(step, tree, force=True, metrics=_json_safe(metrics or {}),
                            custom_metadata=custom)
            if jax.process_index() == 0:  # orbax returns once every host's files are committed
                _write_checksums(self.directory / str(step))

    def set_aside(self, steps: list[int], into: Path) -> None:
        """Move ``steps`` (e.g. damaged ones) out of the directory into ``into/STEP`` (process 0;
        an older copy there is replaced): kept for a look, gone from :meth:`steps`."""
        self._move_aside(steps, into)
        self._ckpt.reload()  # orbax lists the steps it has seen: forget the moved ones

    def _move_aside(self, steps: list[int], into: Path) -> None:
        if jax.process_index() != 0 or not steps:
            return
        into.mkdir(parents=True, exist_ok=True)
        for step in steps:
            shutil.rmtree(into / str(step), ignore_errors=True)
            (self.directory / str(step)).rename(into / str(step))

    # -- restore ------------------------------------------------------------------------------
    def restore_newest(self, restore: Callable[[int], T], log: Callable[[str], None],
                       what: str) -> tuple[int, T] | None:
        """``(step, restore(step))`` for the newest step that restores; None with no step.

        A damaged step (``restore`` raises ArtifactError: a flipped byte, a truncated file) is
        skipped with a logged warning and the one before it is tried: a run is never given up
        for one file. The damaged ones are then set aside in :attr:`damaged_dir`
        (``damaged_<name>/`` beside this directory; kept for a look; no later resume tries
        them first, no message names them as the latest). ``what``: the stage, for messages
        ("teacher", "imitator").

        Raises:
            ArtifactError: every step is damaged. Whatever else ``restore`` raises (e.g. a
            ClimitError for another config's checkpoints) passes through.
        """
        damaged = {step: f"checkpoint {self.directory / str(step)} is damaged: its metrics "
                         f"file is not JSON" for step in self._unreadable_metrics}
        for message in damaged.values():
            log(f"{what}: warning: skipping a damaged checkpoint: {message}")
        for step in reversed(self.steps()):
            try:
                restored = restore(step)
            except ArtifactError as e:
                damaged[step] = str(e)
                log(f"{what}: warning: skipping a damaged checkpoint: {e}")
                continue
            if damaged:
                aside = self.damaged_dir
                self.set_aside([s for s in damaged if s not in self._unreadable_metrics], aside)
                log(f"{what}: warning: resuming from the older checkpoint at step {step}; the "
                    f"steps after it are redone, and the damaged checkpoints are kept in {aside}")
            return step, restored
        if not damaged:
            return None
        raise ArtifactError(f"every checkpoint in {self.directory} is damaged "
                            f"({'; '.join(damaged.values())}); remove {self.directory.parent} to "
                            f"start the {what} over, or choose another run.name")

    def restore(self, step: int | None = None, target: Any = None,
                only: tuple[str, ...] | None = None) -> Any:
        """The pytree saved at ``step`` (None: latest), verified against its checksums.

        Args:
            target: a tree of the same structure whose leaves are arrays or
                ``jax.ShapeDtypeStruct`` (e.g. ``jax.eval_shape(init, key)``); the result has
                exactly its structure, dtypes and shardings. Without it, containers come back
                as dicts/lists (NamedTuples lose their type) and arrays on the first device.
            only: without ``target``, restore only the leaves whose path (as :func:`flatten`
                writes it, e.g. "learners/params/q/w") starts with one of these strings; the
                others are never read into memory (a teacher's replay buffers stay on disk) and
                come back as None, so :func:`flatten` of the result lists just the chosen
                leaves. Every file is still checksum-verified.

        Raises:
            ArtifactError: missing step, or damaged files. ClimitError: the saved tree does not
            match ``target`` (a leaf missing on either side, or one of another shape or dtype:
            nothing is converted), or ``only`` is given with ``target``.
        """
        if only is not None and target is not None:
            raise ClimitError("Checkpointer.restore: pass target or only, not both")
        step, step_dir = self._step_dir(step)
        verify_step(step_dir)
        if target is None:
            abstract = _abstract_from_metadata(self._tree_metadata(step))
        else:
            abstract = jax.tree.map(_abstract_leaf, target)
            mismatch = _mismatch(self._tree_metadata(step), abstract)
            if mismatch:
                raise ClimitError(f"checkpoint {step_dir} does not match the requested tree: "
                                  f"{mismatch}")
        try:
            return self._load(step, abstract, only)
        except Exception as e:  # checksums passed, so this is a structure/shape mismatch
            msg = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
            raise ClimitError(f"checkpoint {step_dir} does not match the requested tree: "
                              f"{msg}") from None

    def _load(self, step: int, abstract: Any, only: tuple[str, ...] | None) -> Any:
        """orbax's load of ``abstract``, pruned to the ``only`` prefixes (None leaves are
        skipped by orbax's partial load, which reads nothing of them)."""
        if only is None:
            return self._ckpt.load(step, abstract)
        only = tuple(only)
        pruned = jax.tree_util.tree_map_with_path(
            lambda path, leaf: leaf if _path_str(path).startswith(only) else None, abstract)
        if not jax.tree.leaves(pruned):  # nothing chosen: nothing to read
            return pruned
        ctx = _ocp().Context()
        ctx.pytree.loading.partial_load = True  # orbax 0.12: restore just the non-None leaves
        with ctx:
            return self._ckpt.load(step, pruned)

    # -- metadata -----------------------------------------------------------------------------
    def _orbax_metadata(self, step: int) -> Any:
        """orbax's step metadata; reads the tree's JSON and zarr headers, never array chunks."""
        try:
            meta = self._ckpt.metadata(step)
        except Exception as e:
            meta, err = None, type(e).__name__
        else:
            err = "orbax found no tree metadata"
        if meta is None or meta.metadata is None:  # orbax logs and returns None on damage
            raise ArtifactError(f"checkpoint {self.directory / str(step)} is damaged: its tree "
                                f"metadata cannot be read ({err})")
        return meta

    def _tree_metadata(self, step: int) -> Any:
        return self._orbax_metadata(step).metadata

    def metadata(self, step: int | None = None) -> dict:
        """``{step, config, metrics, tree}`` of a step, read from metadata alone.

        ``tree`` maps each leaf path (as :func:`flatten` writes it, e.g. a teacher's
        "learners/params/q/w") to ``{shape, dtype, size}``.
        """
        step, step_dir = self._step_dir(step)
        verify_step(step_dir, only=_METADATA_FILES)
        meta = self._orbax_metadata(step)
        custom = (meta.custom_metadata or {}).get("climit", {})
        return {"step": step, "config": custom.get("config", {}),
                "metrics": dict(meta.metrics or {}), "tree": tree_table(meta.metadata)}


# Small JSON files that metadata() verifies before reading. (orbax also reads each array's zarr
# header from the OCDBT store under d/, which is interleaved with array data; damage there
# shows up as unreadable metadata.)
_METADATA_FILES = ("_CHECKPOINT_METADATA", "metrics", "state/_METADATA", "state/_sharding",
                   "state/array_metadatas")


def _unreadable_metrics(directory: Path) -> list[int]:
    """Complete steps whose ``metrics/metrics`` (orbax's JSON) exists but does not parse."""
    return [step for step in complete_steps(directory)
            if not _parses(directory / str(step) / "metrics" / "metrics")]


def _parses(path: Path) -> bool:
    """Whether a JSON file parses (an absent one counts as parsing: nothing to fail on)."""
    try:
        json.loads(path.read_bytes())
    except FileNotFoundError:
        return True
    except (ValueError, OSError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return False
    return True


def _refuse_unreadable_metrics(directory: Path) -> None:
    """ArtifactError naming the steps whose metrics do not parse (orbax would fail opening the
    directory with a bare JSONDecodeError); a reader must not move them."""
    bad = _unreadable_metrics(directory)
    if bad:
        raise ArtifactError(f"checkpoint {directory / str(bad[-1])} is damaged: its metrics file "
                            f"is not JSON (damaged steps: {bad}); running the stage again with "
                            f"the run's config sets damaged checkpoints aside and resumes from "
                            f"the one before, or remove them")


def _remove_incomplete(directory: Path) -> None:
    """Delete steps killed between orbax's commit and our checksums (process 0 writes)."""
    if jax.process_index() != 0:
        return
    for step in incomplete_steps(directory):
        shutil.rmtree(directory / str(step))


# ---------------------------------------------------------------------------------------------
# A full disk while a stage writes
# ---------------------------------------------------------------------------------------------

def disk_full(exc: BaseException | None, out_dir: Path) -> BaseException | None:
    """The exception in ``exc``'s chain (itself, what it was raised from, or what it was raised
    while handling, unless suppressed) that reports a full disk under ``out_dir``, or None.

    Python's own writes raise OSError(ENOSPC) with the file name; orbax (tensorstore) raises a
    ValueError whose text carries the path and the OS message ("... No space left on device
    [os_error_code='28']"). A full disk elsewhere (/tmp, a compile cache, a TensorBoard
    directory) is not this run's, and its error passes through as it is.
    """
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if _is_full_disk_under(exc, out_dir):
            return exc
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    return None


def _is_full_disk_under(exc: BaseException, out_dir: Path) -> bool:
    # The directory as given (maybe relative) and absolute, each ending in a separator: a file
    # under it, not a sibling that shares its prefix (runs/a, runs/ab).
    roots = {os.path.join(str(out_dir), ""), os.path.join(str(out_dir.resolve()), "")}
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return (exc.filename is None
                or Path(exc.filename).resolve().is_relative_to(out_dir.resolve()))
    return os.strerror(errno.ENOSPC) in str(exc) and any(r in str(exc) for r in roots)


@contextlib.contextmanager
def full_disk_is_a_clear_error(out_dir: Path, ckpt_dir: Path, what: str,
                               step_unit: str = "step") -> Iterator[None]:
    """Turn a full disk under ``out_dir`` while a stage writes (``what``: "the teacher run",
    "the imitator") into a ClimitError that says how to go on: free space and run the same
    command, which resumes from the last checkpoint in ``ckpt_dir`` (its steps named
    ``step_unit``, e.g. "env step").

    Nothing on disk is damaged by a failed write: checkpoints are committed by rename and
    checksummed, history chunks and summaries replaced atomically, and a torn last metrics line
    is skipped on reading. Enter it outside the stage's Checkpointer (``ckpt_dir`` is read from
    disk), so that closing it -- orbax's background writes, which a full disk fails too -- is
    covered. Meanwhile orbax's log records of that full disk are dropped: each of its writer
    threads logs the error with a traceback through absl (a thousand lines for one imitator),
    burying the one message that says what to do.
    """
    def not_full_disk(record: logging.LogRecord) -> bool:
        return disk_full(record.exc_info[1] if record.exc_info else None, out_dir) is None

    absl = logging.getLogger("absl")
    absl.addFilter(not_full_disk)
    try:
        yield
    except Exception as e:
        full = disk_full(e, out_dir)
        if full is None:
            raise
        steps = complete_steps(ckpt_dir)
        then = (f"it resumes from its last checkpoint ({step_unit} {steps[-1]}) in {ckpt_dir}"
                if steps else "no checkpoint was saved yet, so it starts over")
        # ``full`` names the file: OSError's text carries its filename, tensorstore's its path.
        raise ClimitError(f"the disk is full: writing {what} at {out_dir} failed ({full}); "
                          f"{histories.human_bytes(histories.free_bytes(out_dir))} free there now. "
                          f"Free space and run the same command again: {then}; nothing written "
                          f"so far is lost") from e
    finally:
        absl.removeFilter(not_full_disk)


def snapshots(directory: str | Path, readonly: bool = False) -> Checkpointer:
    """A directory of snapshots kept for good (no deletion policy); same API as Checkpointer."""
    return Checkpointer(directory, keep=None, readonly=readonly)


# ---------------------------------------------------------------------------------------------
# Describe (metadata only)
# ---------------------------------------------------------------------------------------------

def _key_str(k: Any) -> str:
    """One pytree path entry as text: a dict key, an attribute name or a sequence index."""
    attr = next((a for a in ("key", "name", "idx") if hasattr(k, a)), None)
    return str(k) if attr is None else str(getattr(k, attr))


def _path_str(path: tuple) -> str:
    return "/".join(_key_str(k) for k in path)


def flatten(tree: Any) -> dict[str, Any]:
    """{"a/b/0/c": leaf} for any pytree (dict keys, sequence indices and attribute names)."""
    return {_path_str(path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def tree_table(tree_meta: Any) -> dict[str, dict]:
    """{leaf path: {shape, dtype, size}} from orbax tree metadata (or any tree of arrays; a
    typed PRNG key as its key data, as it is saved). A Python scalar's dtype is its type."""
    out = {}
    for path, m in flatten(tree_meta).items():
        shape, dtype = _array_spec(m) or ((), type(m).__name__)
        out[path] = {"shape": list(shape), "dtype": dtype, "size": int(np.prod(shape))}
    return out


def describe(path: str | Path, step: int | None = None) -> dict:
    """Everything about a checkpoint directory that metadata alone tells (no arrays loaded).

    ``path`` is a checkpoint directory or one step inside it. Returns
    ``{path, steps, step, config, checkpoints: [{step, metrics}], tree: {leaf: {shape, dtype,
    size}}, num_params, incomplete_steps}`` where config and tree are those of ``step`` (default:
    the latest; the given one when ``path`` is a step directory). Another step whose metadata
    is damaged is listed with empty metrics and ``damaged`` (why), so one bad step does not
    hide the others.

    Raises:
        ArtifactError: not a checkpoint directory, a missing step, or damaged metadata files of
            ``step``.
    """
    path = Path(path).absolute()
    if path.name.isdigit() and (path / "_CHECKPOINT_METADATA").exists():  # one step directory
        step = int(path.name) if step is None else step
        path = path.parent
    with Checkpointer(path, readonly=True) as ckpt:
        meta = ckpt.metadata(step)
        checkpoints = [{"step": s, "metrics": meta["metrics"]} if s == meta["step"]
                       else _listed(path / str(s)) for s in ckpt.steps()]
        return {"path": str(path), "steps": ckpt.steps(), "step": meta["step"],
                "config": meta["config"], "checkpoints": checkpoints, "tree": meta["tree"],
                "num_params": sum(v["size"] for v in meta["tree"].values()),
                "incomplete_steps": incomplete_steps(path)}


def _listed(step_dir: Path) -> dict:
    """``{step, metrics}`` of a step in a listing, or ``{step, metrics: {}, damaged}`` (its
    metrics or the small file orbax describes it by fail their checksums)."""
    try:
        verify_step(step_dir, only=("_CHECKPOINT_METADATA",))
        return {"step": int(step_dir.name), "metrics": _read_metrics(step_dir)}
    except ArtifactError as e:
        return {"step": int(step_dir.name), "metrics": {}, "damaged": str(e)}


def _read_metrics(step_dir: Path) -> dict:
    """Metrics of a step straight from its JSON file (cheaper than orbax's full metadata),
    checksum-verified."""
    verify_step(step_dir, only=("metrics",))
    f = step_dir / "metrics" / "metrics"
    if not f.is_file():
        return {}
    try:
        return json.loads(f.read_text())
    except json.JSONDecodeError:
        raise ArtifactError(f"checkpoint {step_dir} is damaged: metrics unreadable") from None


__all__ = ["Checkpointer", "complete_steps", "describe", "flatten", "incomplete_steps",
           "is_checkpoint_dir", "snapshots", "tree_table", "verify_step"]
