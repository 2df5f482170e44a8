"""``climit sweep``: settings that change shapes run as separate runs.

Scalar DQN hyperparameters sweep inside one compiled program (``teacher.sweep``); everything
else (context length, depth, number of tasks, horizon, ...) changes shapes and so becomes one run
per grid point, named after the base run and the point:

    climit sweep --config configs/darkroom.yaml \\
        --grid imitator.context_len=40,80 imitator.n_layers=2,4
    -> runs darkroom-context_len=40-n_layers=2, ... one after another (finished ones are skipped
       by ``climit run`` itself), or with ``--emit`` one ``climit run`` command per line for a
       cluster's job array.

A ``--grid`` entry with one value (``run.runs_dir=/tmp/sw``, ``env.transfer=``) is a plain
override: it applies to every point and does not name runs, wherever it is written.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import re
import shlex
from pathlib import Path
from typing import Any

from climit import config as config_lib
from climit.errors import ClimitError


@dataclasses.dataclass(frozen=True)
class Point:
    """One grid point: its overrides (including ``run.name``) and its validated config."""

    overrides: tuple[str, ...]
    config: config_lib.ExperimentConfig


def split_values(text: str) -> list[str]:
    """The values of a grid entry (stripped, empty ones kept), split on commas outside brackets
    and braces:
    ``[64,64],[128,128]`` is two values, ``{lr: [1e-3, 3e-4], gamma: [0.9, 0.99]}`` one."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += (ch in "[{") - (ch in "]}")
        if ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts]


def split_grid(items: list[str]) -> tuple[list[str], list[str]]:
    """``--grid`` entries as (plain overrides, grid axes): one value (or none, as in
    ``env.transfer=``) is an override applied to every point; two or more make an axis.

    ``--grid`` takes every ``section.key=...`` written after it, so the overrides that follow
    it on the command line arrive here and must not become one-value axes that name runs.
    Entries that hold commas but no value stay axes, for :func:`parse_grid` to refuse.
    """
    overrides, axes = [], []
    for item in items:
        values = item.partition("=")[2]
        one_value = not values.strip() or len(split_values(values)) == 1
        (overrides if one_value else axes).append(item)
    return overrides, axes


def parse_grid(items: list[str]) -> list[tuple[str, list[str]]]:
    """``['a.b=1,2', 'c.d=x']`` -> ``[('a.b', ['1', '2']), ('c.d', ['x'])]``.

    Values are split by :func:`split_values`, so ``teacher.hidden=[64,64],[128,128]`` works.
    """
    grid = []
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not key or not values:
            raise config_lib.ConfigError(item, "a grid entry must look like section.key=v1,v2")
        parts = split_values(values)
        if not any(parts):
            raise config_lib.ConfigError(key.strip(), f"the grid entry {item!r} holds no value")
        if not all(parts):  # "20,,40" or "keydoor,": a value left out, or a stray comma
            raise config_lib.ConfigError(key.strip(), f"the grid entry {item!r} holds an empty "
                                         f"value between commas")
        grid.append((key.strip(), parts))
    keys = [k for k, _ in grid]
    if len(set(keys)) != len(keys):
        raise config_lib.ConfigError("--grid", "a key appears twice")
    if "run.name" in keys:
        raise config_lib.ConfigError("run.name", "is set by the sweep for each point")
    return grid


def _slug(key: str, value: str) -> str:
    value = value.strip("[]{}").replace(", ", "x").replace(",", "x")
    text = f"{key.split('.')[-1]}={value}"
    return re.sub(r"[^A-Za-z0-9=._-]+", "_", text)


def points(config_path: str | None, base_overrides: list[str],
           grid_items: list[str]) -> list[Point]:
    """Every grid point's config, validated before any work (a bad point stops the sweep): the
    config's own checks and those ``climit run`` makes before it starts (``evaluate.plan``),
    so that no point trains before a later one is refused.

    One-value ``grid_items`` join ``base_overrides`` (see :func:`split_grid`); only the axes
    of two or more values multiply into points and name them.
    """
    fixed, axes = split_grid(grid_items)
    base_overrides = list(base_overrides) + fixed
    from climit import evaluate  # imports JAX: only once the configs parsed
    base = config_lib.load(config_path, base_overrides)
    grid = parse_grid(axes)
    out = []
    for values in itertools.product(*(vals for _, vals in grid)):
        pairs = [(k, v) for (k, _), v in zip(grid, values)]
        name = "-".join([base.run.name] + [_slug(k, v) for k, v in pairs])
        overrides = (tuple(base_overrides) + tuple(f"{k}={v}" for k, v in pairs)
                     + (f"run.name={name}",))
        out.append(Point(overrides=overrides, config=config_lib.load(config_path, overrides)))
        evaluate.plan(out[-1].config)
    names = [p.config.run.name for p in out]
    if len(set(names)) != len(names):
        raise ClimitError("two grid points map to the same run name; use distinct values")
    unnamed = [dataclasses.replace(p.config, run=dataclasses.replace(p.config.run, name=""))
               for p in out]
    for i, j in itertools.combinations(range(len(out)), 2):
        if unnamed[i] == unnamed[j]:  # e.g. teacher.lr=1e-3,0.001: one run twice
            raise ClimitError(f"grid points {names[i]} and {names[j]} are the same config; use "
                              f"distinct values")
    return out


def command_line(config_path: str | None, point: Point, progress: bool = True,
                 time_limit: float | None = None) -> str:
    """The ``climit run`` command of one point (for ``--emit``): ``progress`` False adds
    ``--no-progress`` and ``time_limit`` (seconds) ``--time-limit``, as ``climit sweep --emit``
    was given them (each job of the launch list stops cleanly after that long)."""
    args = ["climit", "run"]
    if config_path:
        args += ["--config", str(config_path)]
    flags = [] if progress else ["--no-progress"]
    if time_limit is not None:  # positional seconds: '1.728e+06s' would not parse back
        flags += ["--time-limit", f"{time_limit:f}".rstrip("0").rstrip(".") + "s"]
    return shlex.join(args + list(point.overrides) + flags)


def run_all(pts: list[Point], log: Any = print, progress: bool = True) -> list[dict]:
    """Run every point locally, one after another; finished runs are skipped stage by stage
    (``progress``: the stages' progress bars, as ``climit run --no-progress`` sets it).

    Points whose teacher settings are identical (same ``teacher.fingerprint``: the grid varies
    only the imitator or the evaluation) share one teacher: later points link their
    ``teacher/`` directory to the first finished one instead of training the same DQNs again.
    (``--emit`` launch lists run in parallel and so train their own.)
    """
    from climit import pipeline
    from climit.teacher import train as teacher_train

    teachers: dict[str, Path] = {}
    results = []
    for i, p in enumerate(pts):
        log(f"[sweep {i + 1}/{len(pts)}] {p.config.run.name}")
        fp = teacher_train.fingerprint(p.config)
        own = pipeline.run_dir(p.config) / "teacher"
        if fp in teachers and not own.exists() and not own.is_symlink():
            own.parent.mkdir(parents=True, exist_ok=True)
            # relative, so a runs directory copied or moved whole keeps its points linked
            own.symlink_to(os.path.relpath(teachers[fp].resolve(), own.parent.resolve()),
                           target_is_directory=True)
            log(f"  teacher: shared with {teachers[fp].parent.name} (same teacher settings)")
        results.append({"run": p.config.run.name, **pipeline.run(p.config, progress=progress)})
        teachers.setdefault(fp, own)
    return results
