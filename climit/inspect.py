"""``climit inspect PATH``: what a teacher or imitator checkpoint holds, without model code.

PATH is a checkpoint directory (``runs/NAME/teacher/checkpoints``, ``.../snapshots``,
``runs/NAME/imitator/checkpoints``), one step inside one, or a run/stage directory (every
checkpoint directory below it, up to three levels deep, is shown). Views, each a plain dict
(``--json`` prints it) with a text rendering:

* :func:`overview` -- saved steps, metrics per step, the resolved config, the parameter tree
  (shapes, dtypes, counts) from checkpoint metadata alone: no arrays are loaded;
* :func:`stats` -- loads one step and gives per-leaf norm, mean, std, min, max. A *stacked*
  tree (every leaf shares a leading axis: the teacher's learner axis) is summarised over
  learners, or reduced to one learner with ``learner=I``;
* :func:`diff` -- two steps of one directory, or two checkpoint paths: which leaves changed and
  by how much (max |b - a|, ||b - a|| / ||a||).

Errors the user can fix (not a checkpoint, damaged files, a missing step) are ArtifactError /
ClimitError, which the CLI prints as one line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from climit import checkpoint
from climit.errors import ArtifactError, ClimitError

_SEARCH_DEPTH = 3


# ---------------------------------------------------------------------------------------------
# Finding checkpoints
# ---------------------------------------------------------------------------------------------

def _step_dir_parent(path: Path) -> Path | None:
    """The checkpoint directory if ``path`` is one step inside it."""
    if path.name.isdigit() and int(path.name) in checkpoint.complete_steps(path.parent):
        return path.parent
    return None


def find(path: str | Path) -> list[tuple[Path, int | None]]:
    """Checkpoint directories at or below ``path``, each with the step PATH names (or None).

    Raises:
        ArtifactError: ``path`` is missing, or holds no complete checkpoint.
    """
    path = Path(path).absolute()
    if not path.exists():
        raise ArtifactError(f"no such file or directory: {path}")
    parent = _step_dir_parent(path)
    if parent is not None:
        return [(parent, int(path.name))]
    if checkpoint.is_checkpoint_dir(path):
        return [(path, None)]
    if not path.is_dir():
        raise ArtifactError(f"{path} is not a checkpoint or run directory")
    found, frontier = [], [path]
    for _ in range(_SEARCH_DEPTH):
        below = []
        for d in frontier:
            for sub in sorted(p for p in d.iterdir() if p.is_dir() and not p.name.isdigit()):
                (found if checkpoint.is_checkpoint_dir(sub) else below).append(sub)
        frontier = below
    if not found:
        interrupted = checkpoint.incomplete_steps(path)
        why = f" (only interrupted saves: steps {interrupted})" if interrupted else ""
        raise ArtifactError(f"{path} holds no checkpoints{why}; expected a checkpoint directory "
                            f"such as runs/NAME/teacher/checkpoints, or a run directory")
    return [(f, None) for f in found]


def _one(path: str | Path) -> tuple[Path, int | None]:
    found = find(path)
    if len(found) > 1:
        names = ", ".join(str(f) for f, _ in found)
        raise ClimitError(f"{path} holds several checkpoint directories ({names}); name one")
    return found[0]


# ---------------------------------------------------------------------------------------------
# Views
# ---------------------------------------------------------------------------------------------

def _groups(tree: dict[str, dict]) -> dict[str, int]:
    """Element counts per top-level entry (params, opt_state, buffer, ...)."""
    out: dict[str, int] = {}
    for leaf, info in tree.items():
        top = leaf.split("/", 1)[0]
        out[top] = out.get(top, 0) + info["size"]
    return out


def overview(path: str | Path, step: int | None = None) -> dict:
    """Steps, metrics per step, config and parameter tree of every checkpoint dir at PATH.

    Returns ``{"path": str, "checkpoints": [describe(...) + {"name", "groups"}]}``; reads
    metadata only.
    """
    root = Path(path).absolute()
    out = []
    for directory, named_step in find(root):
        d = checkpoint.describe(directory, step if step is not None else named_step)
        d["name"] = str(directory.relative_to(root)) if directory != root and root in directory.parents \
            else directory.name
        d["groups"] = _groups(d["tree"])
        out.append(d)
    return {"path": str(root), "checkpoints": out}


def _load(path: str | Path, step: int | None) -> tuple[Path, int, dict[str, np.ndarray]]:
    directory, named = _one(path)
    step = named if step is None else step
    with checkpoint.Checkpointer(directory, readonly=True) as ck:
        step = ck.latest_step() if step is None else step
        tree = ck.restore(step)
    return directory, step, {k: _numeric(v) for k, v in checkpoint.flatten(tree).items()}


def _numeric(leaf: Any) -> np.ndarray:
    """A float64 numpy view of a leaf (typed PRNG keys as their key data)."""
    import jax

    if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        leaf = jax.random.key_data(leaf)
    return np.asarray(leaf).astype(np.float64)


def _stacked_size(leaves: dict[str, np.ndarray]) -> int | None:
    """The shared leading axis size if every leaf has one (a stacked teacher), else None."""
    leads = {a.shape[0] if a.ndim else None for a in leaves.values()}
    if len(leads) == 1 and None not in leads and len(leaves) > 1:
        return leads.pop()
    return None


def _select(leaves: dict[str, np.ndarray], prefix: str, learner: int | None) -> tuple[dict, int | None]:
    leaves = {k: v for k, v in leaves.items() if k.startswith(prefix)}
    if not leaves:
        raise ClimitError(f"no leaf starts with {prefix!r}")
    stacked = _stacked_size(leaves)
    if learner is None:
        return leaves, stacked
    if stacked is None:
        raise ClimitError("--learner needs a stacked tree (every leaf with the same leading "
                          "learner axis); this one is not stacked")
    if not 0 <= learner < stacked:
        raise ClimitError(f"--learner {learner} out of range: {stacked} learners")
    return {k: v[learner] for k, v in leaves.items()}, None


def _moments(a: np.ndarray) -> dict[str, float]:
    if a.size == 0:
        return {"norm": 0.0, "mean": 0.0, "std": 0.0, "min": 0.0, "max": 0.0}
    return {"norm": float(np.linalg.norm(a.ravel())), "mean": float(a.mean()), "std": float(a.std()),
            "min": float(a.min()), "max": float(a.max())}


def stats(path: str | Path, step: int | None = None, learner: int | None = None,
          prefix: str = "") -> dict:
    """Per-leaf statistics of one step (loads its arrays).

    Unstacked trees, or one learner of a stacked tree: ``leaves[path] = {shape, norm, mean, std,
    min, max}``. A stacked tree without ``learner``: per-learner norm/mean/std, then
    ``{norm_mean, norm_min, norm_max, mean_mean, std_mean}`` over learners (``learners`` = L).
    """
    directory, step, leaves = _load(path, step)
    leaves, stacked = _select(leaves, prefix, learner)
    out: dict[str, Any] = {"path": str(directory), "step": step, "learner": learner,
                           "learners": stacked, "leaves": {}}
    for name, a in leaves.items():
        if stacked is None:
            out["leaves"][name] = {"shape": list(a.shape), **_moments(a)}
            continue
        flat = a.reshape(stacked, -1)
        norms = np.linalg.norm(flat, axis=1)
        out["leaves"][name] = {"shape": list(a.shape), "norm_mean": float(norms.mean()),
                               "norm_min": float(norms.min()), "norm_max": float(norms.max()),
                               "mean_mean": float(flat.mean(axis=1).mean()) if flat.size else 0.0,
                               "std_mean": float(flat.std(axis=1).mean()) if flat.size else 0.0}
    return out


def _ref(path: str | Path, ref: str) -> tuple[Path, int | None]:
    """``ref`` is a step of PATH's checkpoint directory, or a path (dir or step dir)."""
    if ref.isdigit():
        directory, _ = _one(path)
        return directory, int(ref)
    return _one(ref)


def diff(path: str | Path, a: str, b: str, learner: int | None = None, prefix: str = "") -> dict:
    """Compare two checkpoints leaf by leaf.

    ``a``/``b``: step numbers of PATH's checkpoint directory, or checkpoint paths. Returns
    ``{a, b, leaves: {path: {shape, changed, max_abs_diff, rel_change}}, only_a, only_b,
    changed, unchanged}``; ``rel_change = ||b - a|| / ||a||`` (inf when ||a|| = 0 and b != a),
    a shape mismatch adds ``shape_b`` and has ``changed = True`` and no numbers.
    """
    (dir_a, step_a), (dir_b, step_b) = _ref(path, a), _ref(path, b)
    dir_a, step_a, leaves_a = _load(dir_a, step_a)
    dir_b, step_b, leaves_b = _load(dir_b, step_b)
    leaves_a, _ = _select(leaves_a, prefix, learner)
    leaves_b, _ = _select(leaves_b, prefix, learner)
    out: dict[str, Any] = {"a": {"path": str(dir_a), "step": step_a},
                           "b": {"path": str(dir_b), "step": step_b}, "learner": learner,
                           "leaves": {}, "only_a": sorted(set(leaves_a) - set(leaves_b)),
                           "only_b": sorted(set(leaves_b) - set(leaves_a))}
    for name in sorted(set(leaves_a) & set(leaves_b)):
        x, y = leaves_a[name], leaves_b[name]
        if x.shape != y.shape:
            out["leaves"][name] = {"shape": list(x.shape), "shape_b": list(y.shape), "changed": True,
                                   "max_abs_diff": None, "rel_change": None}
            continue
        delta = np.abs(y - x)
        dist, base = float(np.linalg.norm(delta.ravel())), float(np.linalg.norm(x.ravel()))
        rel = dist / base if base > 0 else (0.0 if dist == 0 else float("inf"))
        out["leaves"][name] = {"shape": list(x.shape), "changed": bool(dist > 0),
                               "max_abs_diff": float(delta.max()) if delta.size else 0.0,
                               "rel_change": rel}
    out["changed"] = sum(v["changed"] for v in out["leaves"].values())
    out["unchanged"] = len(out["leaves"]) - out["changed"]
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
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.4g}"
    return str(x)


def format_overview(view: dict) -> str:
    import yaml

    lines = []
    for d in view["checkpoints"]:
        lines.append(f"{d['name']}  ({d['path']})")
        interrupted = f"; interrupted saves (ignored): {d['incomplete_steps']}" if d["incomplete_steps"] else ""
        lines.append(f"  steps: {', '.join(map(str, d['steps']))} (showing {d['step']}){interrupted}")
        keys = sorted({k for c in d["checkpoints"] for k in c["metrics"]})
        if keys:
            lines.append("  metrics:")
            rows = [["step", *keys]] + [[str(c["step"]), *(_num(c["metrics"].get(k)) for k in keys)]
                                        for c in d["checkpoints"]]
            lines += _table(rows, "    ")
        groups = ", ".join(f"{k} {v:,}" for k, v in d["groups"].items())
        lines.append(f"  tree at step {d['step']}: {d['num_params']:,} elements in "
                     f"{len(d['tree'])} leaves ({groups})")
        rows = [["leaf", "shape", "dtype", "count"]] + [
            [k, "x".join(map(str, v["shape"])) or "scalar", v["dtype"], f"{v['size']:,}"]
            for k, v in d["tree"].items()]
        lines += _table(rows, "    ")
        if d["config"]:
            lines.append(f"  config (step {d['step']}):")
            lines += ["    " + ln for ln in yaml.safe_dump(d["config"], sort_keys=False).splitlines()]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def format_stats(view: dict) -> str:
    who = (f"learner {view['learner']}" if view["learner"] is not None else
           f"summary over {view['learners']} learners" if view["learners"] else "all leaves")
    lines = [f"{view['path']} step {view['step']}: {who}"]
    if view["learners"]:
        cols = ["norm_mean", "norm_min", "norm_max", "mean_mean", "std_mean"]
    else:
        cols = ["norm", "mean", "std", "min", "max"]
    rows = [["leaf", "shape", *cols]] + [
        [k, "x".join(map(str, v["shape"])) or "scalar", *(_num(v[c]) for c in cols)]
        for k, v in view["leaves"].items()]
    return "\n".join(lines + _table(rows)) + "\n"


def format_diff(view: dict) -> str:
    a, b = view["a"], view["b"]
    lines = [f"A: {a['path']} step {a['step']}", f"B: {b['path']} step {b['step']}",
             f"{view['changed']} leaves changed, {view['unchanged']} unchanged"
             + (f" (learner {view['learner']})" if view["learner"] is not None else "")]
    rows = [["leaf", "shape", "changed", "max|B-A|", "|B-A|/|A|"]]
    for k, v in view["leaves"].items():
        shape_s = "x".join(map(str, v["shape"])) or "scalar"
        if "shape_b" in v:
            shape_s += " -> " + ("x".join(map(str, v["shape_b"])) or "scalar")
        rows.append([k, shape_s, "yes" if v["changed"] else "no", _num(v["max_abs_diff"]),
                     _num(v["rel_change"])])
    lines += _table(rows)
    for side in ("only_a", "only_b"):
        if view[side]:
            lines.append(f"only in {side[-1].upper()}: {', '.join(view[side])}")
    return "\n".join(lines) + "\n"


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
