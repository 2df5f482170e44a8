"""``climit inspect PATH``: what a teacher or imitator checkpoint holds, without model code.

PATH is a checkpoint directory (``runs/NAME/teacher/checkpoints``, ``.../snapshots``,
``runs/NAME/imitator/TAG/checkpoints``), one step inside one, a learning history
(``runs/NAME/teacher/histories``), or a run directory or runs root (every checkpoint directory
below it, up to :data:`_SEARCH_DEPTH` levels deep, is shown). Views, each a plain dict
(``--json`` prints it) with a text rendering:

* :func:`overview` -- saved steps (the best one marked), metrics per step, the resolved config,
  the parameter tree (shapes, dtypes, counts) from checkpoint metadata alone: no arrays loaded;
* :func:`history_overview` -- a learning history's streams (learner, task, seed,
  hyperparameters, episodes, first and last returns) from its rewards and episode ends alone;
* :func:`stats` -- loads the chosen leaves of one step: per-leaf norm, mean, std, min, max.
  Leaves with the checkpoint kind's stacked axis (a teacher's learners, an imitator's seeds)
  are summarised per learner, or reduced to one learner with ``learner=I``;
* :func:`diff` -- two steps of one directory, or two checkpoint paths (a teacher snapshot's
  ``params/`` is aligned with a teacher checkpoint's ``learners/params/``): which leaves
  changed and by how much (max |b - a|, ||b - a|| / ||a||);
* :func:`evaluate` -- rolls a teacher snapshot/checkpoint (greedy DQN, each learner on its own
  task) or an imitator checkpoint (each seed from an empty context, on held-out tasks; the best
  step by default, as ``climit evaluate`` loads it) in its environment for N episodes with
  :mod:`climit.rollout`; mean return with a bootstrap interval set by the run's ``eval``
  config.

A step is a number, ``"latest"`` or ``"best"`` (the lowest ``heldout_loss``: imitators only).
Errors the user can fix (not a checkpoint, damaged files, a missing step, an option the view
would ignore) are ArtifactError / ClimitError, which the CLI prints as one line.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from climit import checkpoint, histories
from climit.errors import ArtifactError, ClimitError

# runs/ -> NAME/ -> imitator/ -> TAG/ -> checkpoints/ is four levels: one more to spare.
_SEARCH_DEPTH = 5


# ---------------------------------------------------------------------------------------------
# Options: which view uses which option, and their values
# ---------------------------------------------------------------------------------------------

_MODE_OPTIONS = {
    "overview": ("step",),
    "history": (),
    "stats": ("step", "learner", "prefix"),
    "diff": ("learner", "prefix"),
    "eval": ("step", "learner", "tasks", "seed"),
}
_MODE_FLAGS = {"stats": "--stats", "diff": "--diff", "eval": "--eval"}
_HINTS = {("diff", "step"): "--diff takes its two steps as A and B",
          ("eval", "prefix"): "--eval rolls the whole policy"}
_MODE_NAMES = {"overview": "without --stats, --diff or --eval", "history": "on a learning history",
               "stats": "with --stats", "diff": "with --diff", "eval": "with --eval"}


def check_options(mode: str, given: dict[str, Any]) -> None:
    """Refuse every option that ``mode`` would ignore, rather than silently dropping it.

    ``mode``: 'overview', 'history', 'stats', 'diff' or 'eval'; ``given``: option name ->
    value, None when not given.

    Raises:
        ClimitError: naming each ignored option and the views that use it.
    """
    unused = [k for k, v in given.items() if v is not None and k not in _MODE_OPTIONS[mode]]
    if not unused:
        return
    why = "; ".join(_HINTS.get((mode, k)) or f"--{k} works with " + ", ".join(
        _MODE_FLAGS[m] for m in _MODE_FLAGS if k in _MODE_OPTIONS[m]) for k in unused)
    raise ClimitError(f"{', '.join('--' + k for k in unused)} would be ignored "
                      f"{_MODE_NAMES[mode]} ({why})")


def parse_step(step: int | str | None) -> int | str | None:
    """A step as the user gives it: a number, 'latest', 'best', or None (the view's default).

    Raises:
        ClimitError: anything else, or a negative number.
    """
    if step is None or step in ("latest", "best"):
        return step
    if isinstance(step, str) and step.isdigit():
        return int(step)
    if isinstance(step, int) and step >= 0:
        return step
    raise ClimitError(f"--step {step}: expected a step number, 'latest' or 'best'")


# ---------------------------------------------------------------------------------------------
# Finding checkpoints
# ---------------------------------------------------------------------------------------------

def _step_dir_parent(path: Path) -> Path | None:
    """The checkpoint directory if ``path`` is one step inside it."""
    if path.name.isdigit() and int(path.name) in checkpoint.complete_steps(path.parent):
        return path.parent
    return None


def _is_step(p: Path) -> bool:
    """A checkpoint step directory (saved or interrupted), not a run named with digits only."""
    return p.name.isdigit() and any((p / f).exists() for f in ("_CHECKPOINT_METADATA",
                                                                checkpoint.CHECKSUM_FILE))


def _subdirs(d: Path) -> list[Path]:
    """Sub-directories of ``d`` that are not step directories, sorted."""
    return sorted(p for p in d.iterdir() if p.is_dir() and not _is_step(p))


class Found(NamedTuple):
    """What lies at or below a path."""

    checkpoints: list[tuple[Path, int | None]]  # checkpoint dirs, each with the step PATH names
    histories: list[Path]  # learning histories met on the way (never searched inside)
    deeper: list[Path]  # directories at the depth limit that hold more, not searched
    set_aside: list[Path] = []  # damaged steps climit moved beside a checkpoint dir (not shown)


def _set_aside(p: Path) -> bool:
    """A ``damaged_<name>/`` directory of steps set aside beside checkpoint dir ``<name>``
    (:attr:`checkpoint.Checkpointer.damaged_dir`)."""
    prefix = "damaged_"
    return p.name.startswith(prefix) and (p.parent / p.name[len(prefix):]).is_dir()


def is_history(path: str | Path) -> bool:
    """True if ``path`` is a learning history directory (``runs/NAME/teacher/histories``)."""
    return histories.is_history(path)


def _scan(path: Path) -> Found:
    """Breadth first below a directory; neither a checkpoint directory's steps nor a history's
    chunks are searched."""
    found, hists, aside, frontier = [], [], [], [path]
    for _ in range(_SEARCH_DEPTH):
        subs = [sub for d in frontier for sub in _subdirs(d)]
        aside += [sub for sub in subs if _set_aside(sub)]
        found += [sub for sub in subs if checkpoint.is_checkpoint_dir(sub) and sub not in aside]
        hists += [sub for sub in subs if histories.is_history(sub)]
        frontier = [sub for sub in subs if sub not in found and sub not in hists
                    and sub not in aside]
    return Found([(f, None) for f in found], hists, [d for d in frontier if _subdirs(d)], aside)


def locate(path: str | Path) -> Found:
    """Checkpoint directories at or below ``path`` (and the histories and unsearched
    directories met on the way).

    Raises:
        ArtifactError: ``path`` is missing, is a learning history, or holds no complete
            checkpoint.
    """
    path = Path(path).absolute()
    if not path.exists():
        raise ArtifactError(f"no such file or directory: {path}")
    parent = _step_dir_parent(path)
    if parent is not None:
        return Found([(parent, int(path.name))], [], [])
    if checkpoint.is_checkpoint_dir(path):
        return Found([(path, None)], [], [])
    if histories.is_history(path):
        raise ArtifactError(f"{path} is a learning history, not a checkpoint: `climit inspect "
                            f"{path}` alone shows its overview; --stats, --diff and --eval need a "
                            f"checkpoint directory")
    if not path.is_dir():
        raise ArtifactError(f"{path} is not a checkpoint or run directory")
    found = _scan(path)
    if not found.checkpoints:
        interrupted = [s for s in checkpoint.incomplete_steps(path) if _is_step(path / str(s))]
        why = f" (only interrupted saves: steps {interrupted})" if interrupted else ""
        hist = (f"; learning histories: {', '.join(map(str, found.histories))}"
                if found.histories else "")
        deeper = f"; not searched deeper than {_SEARCH_DEPTH} levels" if found.deeper else ""
        raise ArtifactError(f"{path} holds no checkpoints{why}{hist}{deeper}; expected a "
                            f"checkpoint directory such as runs/NAME/teacher/checkpoints, or a "
                            f"run directory")
    return found


def find(path: str | Path) -> list[tuple[Path, int | None]]:
    """Checkpoint directories at or below ``path``, each with the step PATH names (or None).

    Raises:
        ArtifactError: as :func:`locate`.
    """
    return locate(path).checkpoints


def _one(path: str | Path) -> tuple[Path, int | None]:
    found = find(path)
    if len(found) > 1:
        names = ", ".join(str(f) for f, _ in found)
        raise ClimitError(f"{path} holds several checkpoint directories ({names}); name one")
    return found[0]


# ---------------------------------------------------------------------------------------------
# Steps and checkpoint kinds (metadata only)
# ---------------------------------------------------------------------------------------------

BEST_METRIC = "heldout_loss"  # what an imitator keeps its best step by (imitator.train._best)


def _best_step(checkpoints: list[dict]) -> int | None:
    """The step of lowest ``heldout_loss`` (ties: the earlier), as ``climit evaluate`` loads
    it; None when no step has that metric (teachers)."""
    scored = [(c["metrics"][BEST_METRIC], c["step"]) for c in checkpoints
              if isinstance(c["metrics"].get(BEST_METRIC), (int, float))]
    return min(scored)[1] if scored else None


def _describe(directory: Path, want: int | str | None) -> dict:
    """:func:`checkpoint.describe` of the step wanted (None: latest), plus ``best_step``.

    When the directory lacks that step the dict has ``missing`` (why) instead of that step's
    config and tree, so a run overview can note it and go on.
    """
    d = checkpoint.describe(directory)
    best = _best_step(d["checkpoints"])
    step = {None: d["step"], "latest": d["step"], "best": best}.get(want, want)
    if step is None:
        return _missing(d, best, f"no best step in {directory} (no step has a {BEST_METRIC} "
                        f"metric: only imitator checkpoints have one); use latest or a number")
    if step not in d["steps"]:
        return _missing(d, best, f"no checkpoint at step {step} in {directory}; saved steps: "
                        f"{d['steps']}")
    if step != d["step"]:
        d = checkpoint.describe(directory, step)
    return {**d, "best_step": best}


def _missing(d: dict, best: int | None, why: str) -> dict:
    """A directory's listing without any step's config or tree, and why."""
    keep = ("path", "steps", "checkpoints", "incomplete_steps")
    return {**{k: d[k] for k in keep}, "best_step": best, "missing": why}


def _pick(directory: Path, want: int | str | None) -> dict:
    """:func:`_describe`, failing when the step is missing."""
    d = _describe(directory, want)
    if "missing" in d:
        raise ArtifactError(d["missing"])
    return d


def kind_of(config: dict, tree: dict[str, dict]) -> str | None:
    """What a checkpoint holds, from its metadata: 'imitator', 'teacher_snapshot' (``params``,
    leaves [G, ...]), 'teacher_checkpoint' (a whole ``dqn.TrainState``), or None (neither)."""
    if "imitator_model" in config:
        return "imitator"
    if "teacher" in config and "env" in config:
        if any(k.startswith("params/") for k in tree):
            return "teacher_snapshot"
        if any(k.startswith("learners/params/") for k in tree):
            return "teacher_checkpoint"
    return None


def checkpoint_kind(config: dict, tree: dict[str, dict]) -> str:
    """:func:`kind_of`, for views that need a kind.

    Raises:
        ArtifactError: neither (no stored config, or a tree climit does not write).
    """
    kind = kind_of(config, tree)
    if kind is None:
        raise ArtifactError("this checkpoint is neither a climit teacher snapshot/checkpoint nor "
                            "an imitator checkpoint (its stored config or tree lacks the markers), "
                            "so --eval cannot tell which policy or environment to roll")
    return kind


# Leaves that carry the stacked axis first, by kind: a teacher vmaps its G learners over
# everything under params/ (snapshot) or learners/ (checkpoint); an imitator its S seeds over
# its tree/ and opt_state/. Other leaves (step, t, updates) are one value for all.
_STACKED = {"teacher_snapshot": ("params/",), "teacher_checkpoint": ("learners/",),
            "imitator": ("tree/", "opt_state/")}
_AXIS = {"teacher_snapshot": "learner", "teacher_checkpoint": "learner",
         "imitator": "imitator seed"}


class Layout(NamedTuple):
    """Which leaves of a checkpoint are stacked, over which axis."""

    kind: str | None  # kind_of
    axis: str | None  # 'learner', 'imitator seed', or None: no stacked axis known
    size: int | None  # G learners or S seeds
    stacked: frozenset[str]  # leaf paths whose leading axis is that one


def layout(meta: dict) -> Layout:
    """The stacked axis of a checkpoint (``meta``: :func:`checkpoint.describe` output).

    Raises:
        ArtifactError: the stacked leaves disagree on the axis size.
    """
    kind = kind_of(meta["config"], meta["tree"])
    roots = _STACKED.get(kind, ())
    stacked = frozenset(k for k, v in meta["tree"].items() if k.startswith(roots) and v["shape"])
    sizes = sorted({meta["tree"][k]["shape"][0] for k in stacked})
    if len(sizes) > 1:
        raise ArtifactError(f"{meta['path']} step {meta['step']}: the leaves under "
                            f"{', '.join(roots)} disagree on the {_AXIS[kind]} axis ({sizes})")
    if not sizes:
        return Layout(kind, None, None, frozenset())
    return Layout(kind, _AXIS[kind], sizes[0], stacked)


def _check_learner(learner: int | None, lay: Layout, where: Path) -> None:
    if learner is None:
        return
    if learner < 0:
        raise ClimitError(f"--learner {learner}: must be 0 or more")
    if lay.axis is None:
        raise ClimitError(f"--learner needs a climit teacher or imitator checkpoint (their "
                          f"learner or seed axis is known); {where} is neither, so it has no "
                          f"learners to choose from")
    if learner >= lay.size:
        raise ClimitError(f"--learner {learner} out of range: {_count(lay.size, lay.axis)}")


# ---------------------------------------------------------------------------------------------
# Views
# ---------------------------------------------------------------------------------------------

def _groups(tree: dict[str, dict]) -> dict[str, int]:
    """Element counts per top-level entry (a teacher checkpoint's learners, t, updates; a
    snapshot's params; an imitator's step, tree, opt_state)."""
    out: dict[str, int] = {}
    for leaf, info in tree.items():
        top = leaf.split("/", 1)[0]
        out[top] = out.get(top, 0) + info["size"]
    return out


def _name(directory: Path, root: Path) -> str:
    return str(directory.relative_to(root)) if root in directory.parents else directory.name


def overview(path: str | Path, step: int | str | None = None) -> dict:
    """Steps, metrics per step, config and parameter tree of every checkpoint dir at PATH.

    ``step``: a number, 'latest' or 'best' (default: the step PATH names, else the latest).
    A directory without that step gets ``missing`` (why) and no tree.

    Returns ``{"path", "checkpoints": [describe(...) + {"name", "groups", "best_step"}],
    "histories": [names], "not_searched": [names], "set_aside": [names]}``; reads metadata
    only. A directory whose wanted step is damaged gets ``missing`` (why) too, so one damaged
    checkpoint does not hide the others.

    Raises:
        ClimitError: no directory has the step (one short line: what each directory has).
    """
    root = Path(path).absolute()
    want = parse_step(step)
    found = locate(root)
    out, damaged = [], set()
    for directory, named in found.checkpoints:
        try:
            d = _describe(directory, want if want is not None else named)
        except ArtifactError as e:
            d = {"path": str(directory), "steps": checkpoint.complete_steps(directory),
                 "checkpoints": [], "incomplete_steps": checkpoint.incomplete_steps(directory),
                 "best_step": None, "missing": str(e)}
            damaged.add(_name(directory, root))
        d["name"] = _name(directory, root)
        d["groups"] = _groups(d["tree"]) if "missing" not in d else {}
        out.append(d)
    if all("missing" in d for d in out):
        raise _nowhere(path, want, out, damaged)
    return {"path": str(root), "checkpoints": out,
            "histories": [_name(h, root) for h in found.histories],
            "not_searched": [_name(d, root) for d in found.deeper],
            "set_aside": [_name(d, root) for d in found.set_aside]}


def _brief(steps: list[int]) -> str:
    """Saved steps in a few words: a long list keeps its first two and last, and its count."""
    if len(steps) <= 4:
        return ", ".join(map(str, steps)) or "none"
    return f"{steps[0]}, {steps[1]}, ..., {steps[-1]} ({len(steps)} steps)"


def _nowhere(path: str | Path, want: int | str | None, dirs: list[dict],
             damaged: set[str]) -> ClimitError:
    """The error when none of ``dirs`` (overview entries) has the step: one directory keeps its
    own message; several are listed by name with their steps in brief, so that the line stays
    short however many directories a run holds. ``damaged``: names of the directories whose
    step could not be read (said, rather than "no checkpoint at step" a listed step)."""
    if len(dirs) == 1:
        return ClimitError(dirs[0]["missing"])
    step = "the latest step" if want in (None, "latest") else f"step {want}"
    what = (f"no best step (lowest {BEST_METRIC}: imitator checkpoints only)" if want == "best"
            else f"no readable checkpoint at {step}" if damaged else f"no checkpoint at {step}")
    have = "; ".join(f"{d['name']}: steps {_brief(d['steps'])}"
                     + (" (damaged: inspect it alone for why)" if d["name"] in damaged else "")
                     for d in dirs)
    return ClimitError(f"{what} in any of the {len(dirs)} checkpoint directories in {path} "
                       f"({have})")


class _Side(NamedTuple):
    """The chosen leaves of one checkpoint step, as restored (not yet converted)."""

    directory: Path
    step: int
    layout: Layout
    leaves: dict[str, Any]  # shown name -> array (one learner's slice when one is chosen)
    stacked: frozenset[str]  # shown names that still carry the stacked axis


def _restore_prefix(prefix: str, root: tuple[str, str]) -> str | None:
    """The stored path prefix of the leaves shown under ``prefix`` when stored ``root[0]`` is
    shown as ``root[1]`` (None: no leaf can match)."""
    stored, shown = root
    if prefix.startswith(shown):
        return stored + prefix[len(shown):]
    return stored if shown.startswith(prefix) else None


def _load(directory: Path, want: int | str | None, prefix: str, learner: int | None,
          root: tuple[str, str] = ("", "")) -> _Side:
    """Restore only the leaves shown under ``prefix`` (``root``: see :func:`_restore_prefix`),
    reduced to ``learner`` where stacked. Nothing else is read into memory."""
    meta = _pick(directory, want)
    lay = layout(meta)
    _check_learner(learner, lay, directory)
    stored = _restore_prefix(prefix, root)
    names = [k for k in meta["tree"] if stored is not None and k.startswith(stored)]
    if not names:
        raise ClimitError(f"no leaf of {directory} step {meta['step']} starts with "
                          f"{prefix or root[1]!r}")
    with checkpoint.Checkpointer(directory, readonly=True) as ck:
        tree = ck.restore(meta["step"], only=(stored,) if stored else None)
    leaves = checkpoint.flatten(tree)
    if learner is not None:  # index before any conversion: only one learner's slice is kept
        leaves = {k: v[learner] if k in lay.stacked else v for k, v in leaves.items()}
    shown = {root[1] + k[len(root[0]):]: k for k in leaves}
    stacked = frozenset(s for s, k in shown.items() if k in lay.stacked and learner is None)
    return _Side(directory, meta["step"], lay, {s: leaves[k] for s, k in shown.items()}, stacked)


def _numeric(leaf: Any) -> np.ndarray:
    """A float64 numpy copy of one leaf (typed PRNG keys as their key data)."""
    import jax

    if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        leaf = jax.random.key_data(leaf)
    return np.asarray(leaf).astype(np.float64)


def _moments(a: np.ndarray) -> dict[str, float]:
    if a.size == 0:
        return {"norm": 0.0, "mean": 0.0, "std": 0.0, "min": 0.0, "max": 0.0}
    return {"norm": float(np.linalg.norm(a.ravel())), "mean": float(a.mean()),
            "std": float(a.std()), "min": float(a.min()), "max": float(a.max())}


def _over_learners(a_GxN: np.ndarray) -> dict[str, float]:
    """Each learner's norm, mean and std, then their mean (and the norms' min and max)."""
    norms = np.linalg.norm(a_GxN, axis=1)
    empty = a_GxN.size == 0
    return {"norm_mean": float(norms.mean()), "norm_min": float(norms.min()),
            "norm_max": float(norms.max()),
            "mean_mean": 0.0 if empty else float(a_GxN.mean(axis=1).mean()),
            "std_mean": 0.0 if empty else float(a_GxN.std(axis=1).mean())}


def stats(path: str | Path, step: int | str | None = None, learner: int | None = None,
          prefix: str = "") -> dict:
    """Per-leaf statistics of one step; loads only the leaves under ``prefix``.

    Each leaf: ``{shape, stacked, ...}``; ``stacked`` says whether it carries the checkpoint's
    learner/seed axis (known from its kind: :data:`_STACKED`). Stacked leaves, without
    ``learner``: per-learner norm/mean/std summarised as ``{norm_mean, norm_min, norm_max,
    mean_mean, std_mean}`` over ``learners`` = G (or S); with ``learner=I``, learner I's
    ``{norm, mean, std, min, max}``. Other leaves (scalars like ``step``, or every leaf when no
    axis is known: ``axis`` None, ``pooled`` True) get ``{norm, mean, std, min, max}`` over all
    their elements.
    """
    directory, named = _one(path)
    want = parse_step(step)
    side = _load(directory, want if want is not None else named, prefix, learner)
    lay = side.layout
    out: dict[str, Any] = {"path": str(directory), "step": side.step, "kind": lay.kind,
                           "axis": lay.axis, "learners": lay.size, "learner": learner,
                           "pooled": lay.axis is None, "leaves": {}}
    for name, leaf in side.leaves.items():
        a = _numeric(leaf)  # float64 of this leaf only, dropped before the next
        row: dict[str, Any] = {"shape": list(a.shape), "stacked": name in lay.stacked}
        if name in side.stacked:
            row.update(_over_learners(a.reshape(lay.size, -1)))
        else:
            row.update(_moments(a))
        out["leaves"][name] = row
    return out


def _ref(path: str | Path, ref: str) -> tuple[Path, int | str | None]:
    """``ref`` is a step of PATH's checkpoint directory (a number, latest or best), or a path
    (dir or step dir)."""
    if ref.isdigit() or ref in ("latest", "best"):
        directory, _ = _one(path)
        return directory, parse_step(ref)
    return _one(ref)


# A teacher snapshot stores the learners' params/ alone; a teacher checkpoint holds the same
# arrays at learners/params/ of its whole state: compare those, under the snapshot's names.
_ALIGN = {("teacher_snapshot", "teacher_checkpoint"): (("params/", "params/"),
                                                       ("learners/params/", "params/"))}


def _roots(meta_a: dict, meta_b: dict) -> tuple[tuple[str, str], tuple[str, str]]:
    """(stored, shown) roots of sides A and B: identity unless their kinds align."""
    ka = kind_of(meta_a["config"], meta_a["tree"])
    kb = kind_of(meta_b["config"], meta_b["tree"])
    if (ka, kb) in _ALIGN:
        return _ALIGN[ka, kb]
    if (kb, ka) in _ALIGN:
        return _ALIGN[kb, ka][::-1]
    return ("", ""), ("", "")


def _change(x: np.ndarray, y: np.ndarray) -> dict:
    """How leaf y differs from leaf x (same shape)."""
    delta = np.abs(y - x)
    dist, base = float(np.linalg.norm(delta.ravel())), float(np.linalg.norm(x.ravel()))
    rel = dist / base if base > 0 else (0.0 if dist == 0 else float("inf"))
    return {"shape": list(x.shape), "changed": bool(dist > 0),
            "max_abs_diff": float(delta.max()) if delta.size else 0.0, "rel_change": rel}


def diff(path: str | Path, a: str, b: str, learner: int | None = None, prefix: str = "") -> dict:
    """Compare two checkpoints leaf by leaf; loads only the leaves compared.

    ``a``/``b``: steps of PATH's checkpoint directory (numbers, latest, best), or checkpoint
    paths. A teacher snapshot against a teacher checkpoint compares the snapshot's ``params/``
    with the checkpoint's ``learners/params/`` (``aligned`` says so). Returns ``{a, b,
    leaves: {path: {shape, changed, max_abs_diff, rel_change}}, only_a, only_b, changed,
    unchanged, aligned, warning}``; ``rel_change = ||b - a|| / ||a||`` (inf when ||a|| = 0 and
    b != a); a shape mismatch adds ``shape_b`` and has ``changed = True`` and no numbers;
    ``warning`` is set when the two share no leaf (nothing was compared).
    """
    (dir_a, want_a), (dir_b, want_b) = _ref(path, a), _ref(path, b)
    root_a, root_b = _roots(_pick(dir_a, want_a), _pick(dir_b, want_b))
    side_a = _load(dir_a, want_a, prefix, learner, root_a)
    side_b = _load(dir_b, want_b, prefix, learner, root_b)
    leaves_a, leaves_b = side_a.leaves, side_b.leaves
    shared = sorted(set(leaves_a) & set(leaves_b))
    out: dict[str, Any] = {"a": {"path": str(dir_a), "step": side_a.step,
                                 "kind": side_a.layout.kind},
                           "b": {"path": str(dir_b), "step": side_b.step,
                                 "kind": side_b.layout.kind},
                           "learner": learner, "leaves": {},
                           "only_a": sorted(set(leaves_a) - set(leaves_b)),
                           "only_b": sorted(set(leaves_b) - set(leaves_a)),
                           "aligned": _aligned_text(root_a, root_b), "warning": None}
    for name in shared:
        x, y = _numeric(leaves_a[name]), _numeric(leaves_b[name])
        out["leaves"][name] = _change(x, y) if x.shape == y.shape else {
            "shape": list(x.shape), "shape_b": list(y.shape), "changed": True,
            "max_abs_diff": None, "rel_change": None}
    out["changed"] = sum(v["changed"] for v in out["leaves"].values())
    out["unchanged"] = len(out["leaves"]) - out["changed"]
    if not shared:
        out["warning"] = (f"A ({side_a.layout.kind or 'unknown kind'}) and B "
                          f"({side_b.layout.kind or 'unknown kind'}) share no leaf path: nothing "
                          f"was compared")
    return out


def _aligned_text(root_a: tuple[str, str], root_b: tuple[str, str]) -> str | None:
    moved = [f"{side}'s {stored} as {shown}"
             for side, (stored, shown) in (("A", root_a), ("B", root_b))
             if stored != shown]
    return ", ".join(moved) or None


# ---------------------------------------------------------------------------------------------
# Learning histories
# ---------------------------------------------------------------------------------------------

EDGE_EPISODES = 10  # the history overview's first and last returns average this many episodes


def _mean(x: np.ndarray) -> float | None:
    return float(x.mean()) if x.size else None


# Stream hyperparameters that act under one target network rule only: every stream records
# tau, but a hard-copy run never uses it.
_RULE_OF = {"tau": "polyak"}


def _target(config: dict) -> dict | None:
    """The run's target network rule from the history's stored config (None: not stored):
    ``{"rule": "hard", "period": P}`` (a copy every P updates) or ``{"rule": "polyak"}`` (its
    rate is the streams' ``tau``)."""
    teacher = config.get("teacher", {})
    if teacher.get("target") == "hard":
        return {"rule": "hard", "period": teacher.get("target_period")}
    return {"rule": teacher["target"]} if "target" in teacher else None


def _applying(hparams: dict, target: dict | None) -> dict:
    """The hyperparameters that act under ``target`` (all when the rule is unknown)."""
    rule = target and target["rule"]
    return {k: v for k, v in hparams.items() if rule is None or _RULE_OF.get(k, rule) == rule}


def _stream_row(h: histories.History, i: int, target: dict | None) -> dict:
    """One stream: who produced it (the hyperparameters that act under the run's ``target``
    rule), and its finished episodes' first and last returns."""
    info = h.stream_info(i)
    ep = h.episodes(i)  # reads reward, terminated and truncated only
    ret = ep.ret[ep.finished]
    return {"stream": i, "learner": info.learner, "env": info.env, "task": list(info.task),
            "seed": info.seed, "hparams": _applying(dict(info.hparams), target),
            "steps": h.num_steps, "episodes": int(ret.size),
            "first_return": _mean(ret[:EDGE_EPISODES]), "last_return": _mean(ret[-EDGE_EPISODES:])}


def history_overview(path: str | Path) -> dict:
    """A learning history at a glance, without decoding observations.

    Returns ``{path, env, interface, num_streams, num_steps, total_steps, complete, q_period,
    q_rows, target, first_return, last_return, streams: [{stream, learner, env, task, seed, hparams,
    steps, episodes, first_return, last_return}]}``: ``first_return``/``last_return`` are the
    mean return of a stream's first and last :data:`EDGE_EPISODES` finished episodes (None
    when it has none), and at the top their mean over streams. ``target``: the run's target
    network rule (:func:`_target`); ``hparams`` leave out what that rule ignores (``tau`` of a
    hard-copy run). Chunk files are still read whole for their checksums.

    Raises:
        ArtifactError: missing or damaged history files.
    """
    h = histories.open(path)
    # Streams are read one by one: keep a whole block of streams' rewards and episode ends
    # decoded (6 bytes a step) so each chunk file is decoded once, not once per stream.
    h.cache_bytes = max(h.cache_bytes, 6 * h.meta["streams_per_chunk"] * h.num_steps)
    target = _target(h.meta.get("config", {}))
    streams = [_stream_row(h, i, target) for i in range(h.num_streams)]
    firsts = np.array([r["first_return"] for r in streams if r["first_return"] is not None])
    lasts = np.array([r["last_return"] for r in streams if r["last_return"] is not None])
    return {"path": str(Path(path).absolute()), "env": h.env["name"],
            "interface": h.env["interface"], "num_streams": h.num_streams,
            "num_steps": h.num_steps, "total_steps": h.meta.get("total_steps"),
            "complete": h.complete, "q_period": h.q_period, "q_rows": h.num_q if h.q_period else 0,
            "target": target,
            "first_return": _mean(firsts), "last_return": _mean(lasts), "streams": streams}


# ---------------------------------------------------------------------------------------------
# Rolling a checkpoint in its environment (--eval N)
# ---------------------------------------------------------------------------------------------

_MAX_SEED = 2 ** 32  # evaluation seeds are folded into keys as uint32


def _env(cfg: Any) -> Any:
    from climit import envs

    env = envs.make(cfg.env.name, cfg.env.sticky_action_prob)
    if not env.spec.episode_len:
        raise ClimitError(f"{cfg.env.name} has no episode time limit; --eval needs one")
    return env


def _check_index(i: int | None, n: int, what: str) -> np.ndarray:
    """Indices to evaluate: all n, or just ``i`` (``what``: one of them, for the message)."""
    if i is None:
        return np.arange(n)
    if not 0 <= i < n:
        raise ClimitError(f"--learner {i} out of range: {_count(n, what)}")
    return np.array([i])


class _Returns(NamedTuple):
    """Episode returns of the chosen learners or imitator seeds, and what produced them."""

    cfg: Any  # the ExperimentConfig stored with the checkpoint
    chosen: np.ndarray  # learner / seed indices [S]
    tasks: np.ndarray  # int32 [S, D] (teacher: each learner's own) or [K, D] (imitator: held out)
    returns: np.ndarray  # float64 [S, N] (teacher) or [S, K, N] (imitator)
    single_task: bool  # the environment has one task (D = 0): K rollouts differ by env seed only


def _teacher_returns(directory: Path, step: int, episodes: int, learner: int | None,
                     seed: int) -> _Returns:
    """Greedy returns [G', N] of the chosen learners, each on its own task."""
    import jax
    import jax.numpy as jnp

    from climit import keys
    from climit.teacher import train

    teacher = train.load(directory, step)  # the parameters only, not optimizer or replay
    cfg, params_G, tasks_GxD = teacher.config, teacher.params, teacher.tasks_GxK
    g = len(tasks_GxD)
    chosen_G = _check_index(learner, g, "learner")
    # Learner g always gets key g of the split, so one learner alone (--learner g) returns what
    # it returns among all of them. The keys are inspect's own: on an environment with random
    # starts or sticky actions the numbers differ from summary.json's greedy evaluation.
    keys_Gx2 = jax.random.split(keys.inspect_eval(cfg.run.seed, seed), g)
    params_sel = jax.tree.map(lambda x: jnp.asarray(x)[chosen_G], params_G)
    env = _env(cfg)
    returns = _teacher_program(env, cfg.teacher, episodes)(
        params_sel, jnp.asarray(tasks_GxD[chosen_G]), keys_Gx2[chosen_G])
    return _Returns(cfg, chosen_G, tasks_GxD[chosen_G], np.asarray(returns, np.float64),
                    not env.spec.task_dim)


@functools.lru_cache(maxsize=None)
def _teacher_program(env: Any, tcfg: Any, episodes: int) -> Any:
    """jit: (params [G], tasks [G, D], keys [G, 2]) -> greedy returns [G, N]; one compilation
    per environment, teacher config and episode count."""
    import jax
    import jax.numpy as jnp

    from climit import rollout
    from climit.teacher import dqn

    act = dqn.greedy_policy(tcfg, env.spec)

    def one(params, task_K, key):
        return rollout.first_returns(env, act, (params, jnp.float32(0.0)), (), task_K, key,
                                     episodes)

    return jax.jit(jax.vmap(one))


def _imitator_returns(directory: Path, step: int, episodes: int, seed_index: int | None,
                      num_tasks: int | None, seed: int) -> _Returns:
    """Returns [S', K, N] of the chosen imitator seeds on K held-out tasks (K rollouts of the
    one task of a single-task environment), each acting from an empty context (its KV cache
    slides past the context length)."""
    import jax
    import jax.numpy as jnp

    from climit import envs, keys
    from climit.imitator import train

    if directory.name != "checkpoints":
        raise ArtifactError(f"{directory}: an imitator's checkpoints live in "
                            f"runs/NAME/imitator/<tag>/checkpoints (tag: the variant, plus "
                            f"_h<H> with a horizon)")
    loaded = train.load(directory.parent, step)
    cfg = loaded.config
    env = _env(cfg)
    s = int(jax.tree.leaves(loaded.params.tree)[0].shape[0])
    chosen_S = _check_index(seed_index, s, "imitator seed")
    available = env.spec.num_tasks["heldout"] if env.spec.task_dim else None
    k = num_tasks or (min(cfg.eval.tasks, available) if available else cfg.eval.tasks)
    if available is not None and k > available:
        raise ClimitError(f"--tasks {k}: {cfg.env.name} holds out {_count(available, 'task')}")
    root = keys.inspect_eval(cfg.run.seed, seed)
    tasks_KxD = envs.sample_tasks(cfg.env.name, jax.random.fold_in(root, 0), k, "heldout")
    # Seed s on task j gets the same key whichever seeds are chosen.
    keys_SxKx2 = keys.cells(jax.random.fold_in(root, 1), chosen_S, jnp.arange(k))
    params_sel = jax.tree.map(lambda x: x[chosen_S], loaded.params)
    returns = _imitator_program(env, loaded.params.cfg, cfg.eval.mode, episodes)(
        params_sel, jnp.asarray(tasks_KxD), keys_SxKx2)
    return _Returns(cfg, chosen_S, tasks_KxD, np.asarray(returns, np.float64),
                    not env.spec.task_dim)


@functools.lru_cache(maxsize=None)
def _imitator_program(env: Any, mcfg: Any, mode: str, episodes: int) -> Any:
    """jit: (params [S], tasks [K, D], keys [S, K, 2]) -> returns [S, K, N] from an empty cache;
    one compilation per environment, model config, action mode and episode count."""
    import jax

    from climit import rollout
    from climit.imitator import model, policy

    # (the cache it returns is built inside the trace below)
    act, _ = policy.policy(mcfg, mode, env.spec.action_mask)

    def one(params, task_K, key):
        cache0 = model.init_cache(mcfg, 1)  # one environment: an empty cache of batch 1
        return rollout.first_returns(env, act, params, cache0, task_K, key, episodes)

    return jax.jit(jax.vmap(jax.vmap(one, (None, 0, 0)), (0, None, 0)))


def _check_eval(episodes: int, tasks: int | None, seed: int) -> None:
    """Values --eval cannot use, refused before anything is loaded."""
    if episodes < 1:
        raise ClimitError(f"--eval {episodes}: needs at least one episode")
    if tasks is not None and tasks < 1:
        raise ClimitError(f"--tasks {tasks}: needs at least one task")
    if not 0 <= seed < _MAX_SEED:
        raise ClimitError(f"--seed {seed}: must be in [0, 2^32)")


def evaluate(path: str | Path, episodes: int, step: int | str | None = None,
             learner: int | None = None, tasks: int | None = None, seed: int = 0) -> dict:
    """Roll a checkpoint in its environment for ``episodes`` episodes; mean return with a
    bootstrap interval (:func:`climit.stats.describe`) of the run's ``eval.confidence`` and
    ``eval.bootstrap`` resamples.

    Teacher (snapshot or checkpoint, the latest step by default; environment and tasks from its
    stored config): the greedy DQN of every learner (or only ``learner``) on the learner's own
    training task, one rollout of ``episodes`` episodes each; the interval resamples learners
    and episodes. Imitator (the best step by default, as ``climit evaluate`` loads it): every
    seed (or only seed ``learner``) from an empty context on ``tasks`` held-out tasks (default
    ``eval.tasks``, as many as the env holds out at most; for a single-task env, ``tasks``
    rollouts with different env keys), ``episodes`` episodes in ONE in-context run per seed and
    task, actions by the stored ``eval.mode``; the interval resamples seeds and tasks, and
    ``first_episodes``/``last_episodes`` show in-context improvement. ``seed`` picks the
    evaluation keys (same seed: same numbers).

    Returns ``{path, step, step_choice, kind, env, episodes, seed, policy, confidence,
    bootstrap, interval_over, mean_return: {value, lo, hi}, ...}`` plus, for a teacher,
    ``learner`` and ``learners: [{learner, task, mean_return}]``; for an imitator,
    ``imitator_seed``, ``tasks``, ``task_unit``, ``seeds: [{seed, mean_return}]``,
    ``first_episodes`` and ``last_episodes``. ``step_choice``: 'best', 'latest' or 'given'.

    Raises:
        ClimitError: bad values, ``tasks`` for a teacher, an index out of range.
    """
    _check_eval(episodes, tasks, seed)
    directory, named = _one(path)
    want = parse_step(step) if step is not None else named
    latest = checkpoint.describe(directory)
    kind = checkpoint_kind(latest["config"], latest["tree"])
    if kind != "imitator" and tasks is not None:
        raise ClimitError("--tasks applies to imitator checkpoints (held-out tasks); a teacher "
                          "learner is rolled on its own training task")
    if want is None:  # what `climit evaluate` would load
        want = "best" if kind == "imitator" else "latest"
    meta = _pick(directory, want)
    out: dict[str, Any] = {"path": str(directory), "step": meta["step"],
                           "step_choice": want if isinstance(want, str) else "given",
                           "kind": kind, "episodes": episodes, "seed": seed}
    if kind == "imitator":
        return _imitator_view(out, _imitator_returns(directory, meta["step"], episodes, learner,
                                                     tasks, seed), learner)
    return _teacher_view(out, _teacher_returns(directory, meta["step"], episodes, learner, seed),
                         learner)


# What an imitator's --eval repeats K times (singular, plural): held-out tasks, or rollouts of
# the one task of a single-task environment.
_TASK_UNITS = {False: ("held-out task", "held-out tasks"),
               True: ("rollout (env seed) of its single task",
                      "rollouts (env seeds) of its single task")}


def _imitator_view(out: dict, res: _Returns, learner: int | None) -> dict:
    from climit import stats

    cfg, returns_SxKxN = res.cfg, res.returns
    d = stats.describe(returns_SxKxN, n_boot=cfg.eval.bootstrap, confidence=cfg.eval.confidence,
                       seed=out["seed"], final_frac=cfg.eval.final_frac)
    unit = _TASK_UNITS[res.single_task][1]
    over = unit if learner is not None else f"imitator seeds x {unit}"
    out.update(env=cfg.env.name, policy=f"imitator ({cfg.eval.mode} actions) from an empty context",
               confidence=cfg.eval.confidence, bootstrap=cfg.eval.bootstrap, interval_over=over,
               mean_return=d["auc"].to_dict(), imitator_seed=learner, tasks=res.tasks.tolist(),
               task_unit=unit, single_task=res.single_task,
               seeds=[{"seed": int(i), "mean_return": float(r)}
                      for i, r in zip(res.chosen, returns_SxKxN.mean(axis=(1, 2)))],
               first_episodes=d["initial"].to_dict(), last_episodes=d["final"].to_dict())
    return out


def _teacher_view(out: dict, res: _Returns, learner: int | None) -> dict:
    from climit import stats

    cfg, returns_GxN = res.cfg, res.returns
    est = stats.describe(returns_GxN[:, :, None], n_boot=cfg.eval.bootstrap,
                         confidence=cfg.eval.confidence,
                         seed=out["seed"])["auc"]  # learners x episodes, one grid point each
    out.update(env=cfg.env.name, policy="greedy DQN", confidence=cfg.eval.confidence,
               bootstrap=cfg.eval.bootstrap, mean_return=est.to_dict(),
               interval_over="episodes" if len(res.chosen) == 1 else "learners x episodes",
               learner=learner,
               learners=[{"learner": int(g), "task": t.tolist(), "mean_return": float(r)}
                         for g, t, r in zip(res.chosen, res.tasks, returns_GxN.mean(axis=1))])
    return out


# ---------------------------------------------------------------------------------------------
# Text rendering
# ---------------------------------------------------------------------------------------------

def _table(rows: list[list[str]], indent: str = "  ") -> list[str]:
    if not rows:
        return []
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [indent + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]


def _num(x: Any) -> str:
    """A number for reading: 4 significant digits, inside lists too (imitators save per-seed
    and per-position metric lists; --json keeps full precision)."""
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.4g}"
    if isinstance(x, (list, tuple)):
        return "[" + ", ".join(map(_num, x)) + "]"
    return str(x)


def _count(n: int, one: str, many: str | None = None) -> str:
    """``n`` and the noun in its number: 1 seed, 2 seeds."""
    return f"{n:,} {one if n == 1 else many or one + 's'}"


def _shape(shape: list[int]) -> str:
    return "x".join(map(str, shape)) or "scalar"


def _steps_line(d: dict) -> str:
    """Saved steps, the best one starred, and which one is shown."""
    steps = ", ".join(f"{s}*" if s == d["best_step"] else str(s) for s in d["steps"])
    best = f"; * best: lowest {BEST_METRIC}" if d["best_step"] is not None else ""
    shown = f"not showing: {d['missing']}" if "missing" in d else f"showing {d['step']}"
    interrupted = (f"; interrupted saves (ignored): {d['incomplete_steps']}"
                   if d["incomplete_steps"] else "")
    damaged = [c["step"] for c in d["checkpoints"] if "damaged" in c]
    damaged = f"; damaged (metadata unreadable): {damaged}" if damaged else ""
    return f"  steps: {steps} ({shown}{best}){interrupted}{damaged}"


def _overview_lines(d: dict) -> list[str]:
    """One checkpoint directory of the overview."""
    import yaml

    lines = [f"{d['name']}  ({d['path']})", _steps_line(d)]
    keys = sorted({k for c in d["checkpoints"] for k in c["metrics"]})
    if keys:
        lines.append("  metrics:")
        rows = [["step", *keys]] + [[str(c["step"]), *(_num(c["metrics"].get(k)) for k in keys)]
                                    for c in d["checkpoints"]]
        lines += _table(rows, "    ")
    if "missing" in d:
        return lines
    groups = ", ".join(f"{k} {v:,}" for k, v in d["groups"].items())
    lines.append(f"  tree at step {d['step']}: {_count(d['num_params'], 'element')} in "
                 f"{_count(len(d['tree']), 'leaf', 'leaves')} ({groups})")
    rows = [["leaf", "shape", "dtype", "count"]] + [
        [k, _shape(v["shape"]), v["dtype"], f"{v['size']:,}"] for k, v in d["tree"].items()]
    lines += _table(rows, "    ")
    if d["config"]:
        lines.append(f"  config (step {d['step']}):")
        lines += ["    " + ln for ln in yaml.safe_dump(d["config"], sort_keys=False).splitlines()]
    return lines


def format_overview(view: dict) -> str:
    lines = []
    for d in view["checkpoints"]:
        lines += _overview_lines(d) + [""]
    for h in view.get("histories", []):
        lines.append(f"{h}  (learning history: `climit inspect` it for its overview)")
    for a in view.get("set_aside", []):
        lines.append(f"{a}  (damaged steps climit set aside: not shown)")
    if view.get("not_searched"):
        lines.append(f"not searched (deeper than {_SEARCH_DEPTH} levels): "
                     f"{', '.join(view['not_searched'])}")
    return "\n".join(lines).rstrip() + "\n"


_SUMMARY_COLS = ["norm_mean", "norm_min", "norm_max", "mean_mean", "std_mean"]
_MOMENT_COLS = ["norm", "mean", "std", "min", "max"]


def _leaf_table(leaves: dict[str, dict], cols: list[str]) -> list[str]:
    rows = [["leaf", "shape", *cols]] + [[k, _shape(v["shape"]), *(_num(v[c]) for c in cols)]
                                         for k, v in leaves.items()]
    return _table(rows, "    ")


def format_stats(view: dict) -> str:
    lines = [f"{view['path']} step {view['step']}"]
    axis, n = view["axis"], view["learners"]
    if view["pooled"]:
        lines.append("  pooled over all elements of each leaf (no learner axis known: not a "
                     "climit teacher or imitator checkpoint):")
        return "\n".join(lines + _leaf_table(view["leaves"], _MOMENT_COLS)) + "\n"
    summary = {k: v for k, v in view["leaves"].items() if "norm_mean" in v}
    one = {k: v for k, v in view["leaves"].items() if v["stacked"] and "norm" in v}
    shared = {k: v for k, v in view["leaves"].items() if not v["stacked"]}
    if summary:
        lines.append(f"  each {axis} on its own (leading axis), summarised over the "
                     f"{_count(n, axis)}:")
        lines += _leaf_table(summary, _SUMMARY_COLS)
    if one:
        lines.append(f"  {axis} {view['learner']} of {n}:")
        lines += _leaf_table(one, _MOMENT_COLS)
    if shared:
        lines.append(f"  not stacked (one value for all {axis}s), over all elements:")
        lines += _leaf_table(shared, _MOMENT_COLS)
    return "\n".join(lines) + "\n"


def format_diff(view: dict) -> str:
    a, b = view["a"], view["b"]
    lines = [f"A: {a['path']} step {a['step']}", f"B: {b['path']} step {b['step']}"]
    if view["aligned"]:
        lines.append(f"aligned: {view['aligned']}")
    if view["warning"]:
        lines.append(f"warning: {view['warning']}")
    lines.append(f"{_count(view['changed'], 'leaf', 'leaves')} changed, {view['unchanged']} "
                 "unchanged"
                 + (f" (learner {view['learner']})" if view["learner"] is not None else ""))
    rows = [["leaf", "shape", "changed", "max|B-A|", "|B-A|/|A|"]]
    for k, v in view["leaves"].items():
        shape_s = _shape(v["shape"]) + (f" -> {_shape(v['shape_b'])}" if "shape_b" in v else "")
        rows.append([k, shape_s, "yes" if v["changed"] else "no", _num(v["max_abs_diff"]),
                     _num(v["rel_change"])])
    lines += _table(rows) if view["leaves"] else []
    for side in ("only_a", "only_b"):
        if view[side]:
            lines.append(f"only in {side[-1].upper()}: {', '.join(view[side])}")
    return "\n".join(lines) + "\n"


def _est(d: dict) -> str:
    from climit import stats

    return str(stats.estimate_from_dict(d))


_MAX_ROWS = 20  # per-learner / per-seed / per-stream rows in the text view (--json lists all)


def _task(task: list[int]) -> str:
    return str(task) if task else "-"  # single-task environments have an empty task vector


_STEP_CHOICE = {"best": f"the best: lowest {BEST_METRIC}, as `climit evaluate` loads it",
                "latest": "the latest", "given": "as asked"}


def _more(hidden: int) -> list[str]:
    return [f"  ... {hidden} more (--json lists every one)"] if hidden > 0 else []


def format_eval(view: dict) -> str:
    conf = f"{round(100 * view['confidence'])}% bootstrap interval over {view['interval_over']}"
    what = {"imitator": "imitator", "teacher_snapshot": "teacher snapshot",
            "teacher_checkpoint": "teacher checkpoint"}[view["kind"]]
    lines = [f"{what} {view['path']} step {view['step']} ({_STEP_CHOICE[view['step_choice']]}) "
             f"on {view['env']}: {view['policy']}, {_count(view['episodes'], 'episode')} "
             f"(eval seed {view['seed']})"]
    if view["kind"] == "imitator":
        seeds = view["seeds"]
        who = (f"seed {view['imitator_seed']}" if view["imitator_seed"] is not None
               else _count(len(seeds), "seed"))
        tasks = _count(len(view["tasks"]), *_TASK_UNITS[view["single_task"]])
        lines.append(f"  {who} x {tasks}: mean return "
                     f"{_est(view['mean_return'])} ({conf})")
        lines.append(f"  in context: first episodes {_est(view['first_episodes'])} -> last "
                     f"episodes {_est(view['last_episodes'])}")
        rows = [["seed", "mean return"]] + [[str(r["seed"]), _num(r["mean_return"])]
                                            for r in seeds[:_MAX_ROWS]]
        return "\n".join(lines + _table(rows) + _more(len(seeds) - _MAX_ROWS)) + "\n"
    learners = view["learners"]
    if view["learner"] is not None:
        r = learners[0]
        lines.append(f"  learner {r['learner']} (task {_task(r['task'])}): mean return "
                     f"{_est(view['mean_return'])} ({conf})")
        return "\n".join(lines) + "\n"
    lines.append(f"  {_count(len(learners), 'learner')}, each on its own task: mean return "
                 f"{_est(view['mean_return'])} ({conf})")
    rows = [["learner", "task", "mean return"]] + [
        [str(r["learner"]), _task(r["task"]), _num(r["mean_return"])] for r in learners[:_MAX_ROWS]]
    return "\n".join(lines + _table(rows) + _more(len(learners) - _MAX_ROWS)) + "\n"


def _target_text(target: dict | None) -> str:
    """The history header's note of the run's target rule (and a hard copy's period)."""
    if target is None:
        return ""
    if target["rule"] == "hard":
        return f"; target network: hard copy every {target['period']} updates"
    return f"; target network: {target['rule']} (rate: each stream's tau)"


def _hparams(h: dict) -> str:
    return " ".join(f"{k}={v:.4g}" for k, v in h.items()) or "-"


def format_history(view: dict) -> str:
    planned = view["total_steps"]
    done = ("complete" if view["complete"] else
            f"{view['num_steps']:,} of {planned:,} planned" if planned else "no plan stored")
    q = (f"Q-values every {_count(view['q_period'], 'step')} ({_count(view['q_rows'], 'row')})"
         if view["q_period"] else "no Q-values")
    lines = [f"learning history {view['path']}",
             f"  {view['env']} ({view['interface']}): {_count(view['num_streams'], 'stream')} x "
             f"{_count(view['num_steps'], 'step')} ({done}); {q}{_target_text(view['target'])}",
             f"  mean return over streams, first {EDGE_EPISODES} finished episodes "
             f"{_num(view['first_return'])} -> last {EDGE_EPISODES} {_num(view['last_return'])}"]
    streams = view["streams"]
    rows = [["stream", "learner", "env", "task", "seed", "hyperparameters", "episodes",
             f"first {EDGE_EPISODES}", f"last {EDGE_EPISODES}"]] + [
        [str(r["stream"]), str(r["learner"]), str(r["env"]), _task(r["task"]), str(r["seed"]),
         _hparams(r["hparams"]), str(r["episodes"]), _num(r["first_return"]),
         _num(r["last_return"])] for r in streams[:_MAX_ROWS]]
    return "\n".join(lines + _table(rows) + _more(len(streams) - _MAX_ROWS)) + "\n"


def dumps(view: dict) -> str:
    """JSON for ``--json`` (inf/nan become strings so any JSON parser accepts it)."""
    def fix(x: Any) -> Any:
        if isinstance(x, float) and not np.isfinite(x):
            return str(x)
        if isinstance(x, dict):
            return {k: fix(v) for k, v in x.items()}
        if isinstance(x, list):
            return [fix(v) for v in x]
        return x
    return json.dumps(fix(view), indent=1)
