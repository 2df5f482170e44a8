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
  by how much (max |b - a|, ||b - a|| / ||a||);
* :func:`evaluate` -- rolls a teacher snapshot/checkpoint (greedy DQN, each learner on its own
  task) or an imitator checkpoint (each seed from an empty context, on held-out tasks) in its
  environment for N episodes with :mod:`climit.rollout`; mean return with a bootstrap interval.

Errors the user can fix (not a checkpoint, damaged files, a missing step) are ArtifactError /
ClimitError, which the CLI prints as one line.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any, NamedTuple

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


def _subdirs(d: Path) -> list[Path]:
    """Sub-directories of ``d`` that are not step directories, sorted."""
    return sorted(p for p in d.iterdir() if p.is_dir() and not p.name.isdigit())


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
    for _ in range(_SEARCH_DEPTH):  # breadth first: a checkpoint directory's steps are not searched
        subs = [sub for d in frontier for sub in _subdirs(d)]
        found += [sub for sub in subs if checkpoint.is_checkpoint_dir(sub)]
        frontier = [sub for sub in subs if not checkpoint.is_checkpoint_dir(sub)]
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
# Rolling a checkpoint in its environment (--eval N)
# ---------------------------------------------------------------------------------------------

EVAL_SALT = 0x1A5E  # `inspect --eval` keys: apart from every training and evaluation stream
CONFIDENCE, N_BOOT = 0.95, 1000


def checkpoint_kind(config: dict, tree: dict[str, dict]) -> str:
    """What a checkpoint holds, from its metadata: 'imitator', 'teacher_snapshot' (``params``,
    leaves [G, ...]) or 'teacher_checkpoint' (a whole ``dqn.TrainState``).

    Raises:
        ArtifactError: neither (no stored config, or a tree climit does not write).
    """
    if "imitator_model" in config:
        return "imitator"
    if "teacher" in config and "env" in config:
        if any(k.startswith("params/") for k in tree):
            return "teacher_snapshot"
        if any(k.startswith("learners/params/") for k in tree):
            return "teacher_checkpoint"
    raise ArtifactError("this checkpoint is neither a climit teacher snapshot/checkpoint nor an "
                        "imitator checkpoint (its stored config or tree lacks the markers), so "
                        "--eval cannot tell which policy or environment to roll")


def _signal(tr: Any) -> tuple[Any, Any]:
    """What an episode return needs of each step: (reward, episode ended)."""
    return tr.reward, tr.terminated | tr.truncated


def _episode_returns(env: Any, act: Any, params: Any, carry0: Any, task_K: Any, key: Any,
                     episodes: int) -> Any:
    """Returns of the first ``episodes`` episodes of ONE rollout from a fresh reset: float32 [N].

    ``episodes * episode_len`` steps hold at least N whole episodes (each ends by its time
    limit), so all N are valid.
    """
    from climit import rollout

    _, (reward_T, done_T) = rollout.rollout(env, act, params, carry0, task_K, key,
                                            episodes * env.spec.episode_len, record=_signal)
    return rollout.episode_returns(reward_T, done_T, max_episodes=episodes).returns


def _eval_key(run_seed: int, seed: int) -> Any:
    import jax

    return jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(run_seed), EVAL_SALT), seed)


def _stored_config(raw: dict, directory: Path) -> Any:
    from climit import config as config_lib

    raw = {k: v for k, v in raw.items() if k not in ("imitator_model", "imitator_fingerprint")}
    try:
        return config_lib.from_dict(raw)
    except config_lib.ConfigError as e:
        raise ArtifactError(f"the config stored in {directory} is not valid for this climit "
                            f"version ({e})") from None


def _env(cfg: Any) -> Any:
    from climit import envs

    env = envs.make(cfg.env.name, cfg.env.sticky_action_prob)
    if not env.spec.episode_len:
        raise ClimitError(f"{cfg.env.name} has no episode time limit; --eval needs one")
    return env


def _check_index(i: int | None, n: int, what: str) -> np.ndarray:
    """Indices to evaluate: all n, or just ``i``."""
    if i is None:
        return np.arange(n)
    if not 0 <= i < n:
        raise ClimitError(f"--learner {i} out of range: {n} {what}")
    return np.array([i])


class _Returns(NamedTuple):
    """Episode returns of the chosen learners or imitator seeds, and what produced them."""

    cfg: Any  # the ExperimentConfig stored with the checkpoint
    chosen: np.ndarray  # learner / seed indices [S]
    tasks: np.ndarray  # int32 [S, D] (teacher: each learner's own) or [K, D] (imitator: held out)
    returns: np.ndarray  # float64 [S, N] (teacher) or [S, K, N] (imitator)


def _teacher_returns(directory: Path, step: int, kind: str, episodes: int,
                     learner: int | None, seed: int) -> _Returns:
    """Greedy returns [G', N] of the chosen learners, each on its own task."""
    import jax
    import jax.numpy as jnp

    from climit.teacher import train

    with checkpoint.Checkpointer(directory, readonly=True) as ck:
        cfg = _stored_config(ck.metadata(step)["config"], directory)
        tree = ck.restore(step)
    params_G = tree["params"] if kind == "teacher_snapshot" else tree["learners"]["params"]
    tasks_GxD = train.plan(cfg).tasks_GxK  # learner g's own task, as the teacher trained it
    g = len(tasks_GxD)
    stored = {int(x.shape[0]) for x in jax.tree.leaves(params_G)}
    if stored != {g}:
        raise ArtifactError(f"{directory} step {step} stores {sorted(stored)} learners but its "
                            f"config plans {g}")
    chosen_G = _check_index(learner, g, "learners")
    # Learner g always gets key g of the split, so one learner alone matches the summary run.
    keys_Gx2 = jax.random.split(_eval_key(cfg.run.seed, seed), g)
    params_sel = jax.tree.map(lambda x: jnp.asarray(x)[chosen_G], params_G)
    returns = _teacher_program(_env(cfg), cfg.teacher, episodes)(
        params_sel, jnp.asarray(tasks_GxD[chosen_G]), keys_Gx2[chosen_G])
    return _Returns(cfg, chosen_G, tasks_GxD[chosen_G], np.asarray(returns, np.float64))


@functools.lru_cache(maxsize=None)
def _teacher_program(env: Any, tcfg: Any, episodes: int) -> Any:
    """jit: (params [G], tasks [G, D], keys [G, 2]) -> greedy returns [G, N]; one compilation
    per environment, teacher config and episode count."""
    import jax
    import jax.numpy as jnp

    from climit.teacher import dqn

    act = dqn.greedy_policy(tcfg, env.spec)

    def one(params, task_K, key):
        return _episode_returns(env, act, (params, jnp.float32(0.0)), (), task_K, key, episodes)

    return jax.jit(jax.vmap(one))


def _imitator_returns(directory: Path, step: int, episodes: int, seed_index: int | None,
                      num_tasks: int | None, seed: int) -> _Returns:
    """Returns [S', K, N] of the chosen imitator seeds on K held-out tasks, each acting from an
    empty context (its KV cache slides past the context length)."""
    import jax
    import jax.numpy as jnp

    from climit import envs
    from climit.imitator import train

    if directory.name != "checkpoints":
        raise ArtifactError(f"{directory}: an imitator's checkpoints live in "
                            f"runs/NAME/imitator/<variant>/checkpoints")
    loaded = train.load(directory.parent, step)
    cfg = loaded.config
    env = _env(cfg)
    s = int(jax.tree.leaves(loaded.params.tree)[0].shape[0])
    chosen_S = _check_index(seed_index, s, "imitator seeds")
    available = env.spec.num_tasks["heldout"] if env.spec.task_dim else None
    k = num_tasks or (min(cfg.eval.tasks, available) if available else cfg.eval.tasks)
    if available is not None and k > available:
        raise ClimitError(f"--tasks {k}: {cfg.env.name} holds out {available} tasks")
    key = _eval_key(cfg.run.seed, seed)
    tasks_KxD = envs.sample_tasks(cfg.env.name, jax.random.fold_in(key, 0), k, "heldout")
    rollout_key = jax.random.fold_in(key, 1)
    # Seed s on task j gets the same key whichever seeds are chosen.
    keys_SxKx2 = jax.vmap(lambda i: jax.vmap(lambda j: jax.random.fold_in(
        jax.random.fold_in(rollout_key, i), j))(jnp.arange(k)))(jnp.asarray(chosen_S))
    params_sel = jax.tree.map(lambda x: x[chosen_S], loaded.params)
    returns = _imitator_program(env, loaded.params.cfg, cfg.eval.mode, episodes)(
        params_sel, jnp.asarray(tasks_KxD), keys_SxKx2)
    return _Returns(cfg, chosen_S, tasks_KxD, np.asarray(returns, np.float64))


@functools.lru_cache(maxsize=None)
def _imitator_program(env: Any, mcfg: Any, mode: str, episodes: int) -> Any:
    """jit: (params [S], tasks [K, D], keys [S, K, 2]) -> returns [S, K, N] from an empty cache;
    one compilation per environment, model config, action mode and episode count."""
    import jax

    from climit.imitator import model, policy

    act, _ = policy.policy(mcfg, mode)  # (the cache it returns is built inside the trace below)

    def one(params, task_K, key):
        cache0 = model.init_cache(mcfg, 1)  # one environment: an empty cache of batch 1
        return _episode_returns(env, act, params, cache0, task_K, key, episodes)

    return jax.jit(jax.vmap(jax.vmap(one, (None, 0, 0)), (0, None, 0)))


def evaluate(path: str | Path, episodes: int, step: int | None = None, learner: int | None = None,
             tasks: int | None = None, seed: int = 0) -> dict:
    """Roll a checkpoint in its environment for ``episodes`` episodes; mean return with a
    95 % bootstrap interval (:func:`climit.stats.describe`).

    Teacher (snapshot or checkpoint; environment and tasks from its stored config): the greedy
    DQN of every learner (or only ``learner``) on the learner's own training task, one rollout
    of ``episodes`` episodes each; the interval resamples learners and episodes. Imitator: every
    seed (or only seed ``learner``) from an empty context on ``tasks`` held-out tasks
    (default ``eval.tasks``, as many as the env holds out at most), ``episodes`` episodes in ONE
    in-context run per seed and task, actions by the stored ``eval.mode``; the interval resamples
    seeds and tasks, and ``first_episodes``/``last_episodes`` show in-context improvement.
    ``seed`` picks the evaluation keys (same seed: same numbers).

    Returns ``{path, step, kind, env, episodes, seed, policy, confidence, interval_over,
    mean_return: {value, lo, hi}, ...}`` plus, for a teacher, ``learner`` and ``learners: [{learner,
    task, mean_return}]``; for an imitator, ``imitator_seed``, ``tasks``, ``seeds: [{seed,
    mean_return}]``, ``first_episodes`` and ``last_episodes``.
    """
    from climit import stats

    if episodes < 1:
        raise ClimitError(f"--eval {episodes}: needs at least one episode")
    directory, named = _one(path)
    meta = checkpoint.describe(directory, named if step is None else step)
    kind = checkpoint_kind(meta["config"], meta["tree"])
    out: dict[str, Any] = {"path": str(directory), "step": meta["step"], "kind": kind,
                           "episodes": episodes, "seed": seed, "confidence": CONFIDENCE}
    if kind == "imitator":
        res = _imitator_returns(directory, meta["step"], episodes, learner, tasks, seed)
        cfg, returns_SxKxN = res.cfg, res.returns
        d = stats.describe(returns_SxKxN, n_boot=N_BOOT, confidence=CONFIDENCE, seed=seed,
                           final_frac=cfg.eval.final_frac)
        out.update(env=cfg.env.name, policy=f"imitator ({cfg.eval.mode} actions) from an empty context",
                   interval_over="imitator seeds x held-out tasks", mean_return=d["auc"].to_dict(),
                   imitator_seed=learner, tasks=res.tasks.tolist(),
                   seeds=[{"seed": int(i), "mean_return": float(r)}
                          for i, r in zip(res.chosen, returns_SxKxN.mean(axis=(1, 2)))],
                   first_episodes=d["initial"].to_dict(), last_episodes=d["final"].to_dict())
        return out
    res = _teacher_returns(directory, meta["step"], kind, episodes, learner, seed)
    returns_GxN = res.returns
    est = stats.describe(returns_GxN[:, :, None], n_boot=N_BOOT, confidence=CONFIDENCE,
                         seed=seed)["auc"]  # learners x episodes, one grid point each
    out.update(env=res.cfg.env.name, policy="greedy DQN", mean_return=est.to_dict(),
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


def _est(d: dict) -> str:
    from climit import stats

    return str(stats.estimate_from_dict(d))


_MAX_ROWS = 20  # per-learner / per-seed rows in the text view (--json lists all)


def _task(task: list[int]) -> str:
    return str(task) if task else "-"  # single-task environments have an empty task vector


def format_eval(view: dict) -> str:
    conf = f"{round(100 * view['confidence'])}% bootstrap interval over {view['interval_over']}"
    what = {"imitator": "imitator", "teacher_snapshot": "teacher snapshot",
            "teacher_checkpoint": "teacher checkpoint"}[view["kind"]]
    lines = [f"{what} {view['path']} step {view['step']} on {view['env']}: {view['policy']}, "
             f"{view['episodes']} episodes (eval seed {view['seed']})"]
    if view["kind"] == "imitator":
        seeds = view["seeds"]
        who = (f"seed {view['imitator_seed']}" if view["imitator_seed"] is not None
               else f"{len(seeds)} seeds")
        lines.append(f"  {who} x {len(view['tasks'])} held-out tasks: mean return "
                     f"{_est(view['mean_return'])} ({conf})")
        lines.append(f"  in context: first episodes {_est(view['first_episodes'])} -> last episodes "
                     f"{_est(view['last_episodes'])}")
        rows = [["seed", "mean return"]] + [[str(r["seed"]), _num(r["mean_return"])]
                                            for r in seeds[:_MAX_ROWS]]
        hidden = len(seeds) - _MAX_ROWS
    else:
        learners = view["learners"]
        if view["learner"] is not None:
            r = learners[0]
            lines.append(f"  learner {r['learner']} (task {_task(r['task'])}): mean return "
                         f"{_est(view['mean_return'])} ({conf})")
            return "\n".join(lines) + "\n"
        lines.append(f"  {len(learners)} learners, each on its own task: mean return "
                     f"{_est(view['mean_return'])} ({conf})")
        rows = [["learner", "task", "mean return"]] + [
            [str(r["learner"]), _task(r["task"]), _num(r["mean_return"])] for r in learners[:_MAX_ROWS]]
        hidden = len(learners) - _MAX_ROWS
    lines += _table(rows)
    if hidden > 0:
        lines.append(f"  ... {hidden} more (--json lists every one)")
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
