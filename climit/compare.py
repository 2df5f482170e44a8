"""``climit report --compare RUN [RUN ...]``: one table and one plot across runs.

For a sweep (``climit sweep``) or any set of runs: the config keys whose values differ between
the runs (read from the config stored in each run's ``eval/results.json``, the one that produced
the numbers; from ``config.yaml`` only when the results lack it, since ``config.yaml`` is
rewritten by later ``climit`` calls and can be newer than the artifacts) against the headline
ratios of the three claim tests (from each run's ``report/summary.json``:
``tests.{a,b,c}.imitator_dqn_{auc,final}_ratio`` and their ``_ci`` intervals, and the verdict,
marked provisional with its scale when ``provisional`` is true). Writes to ``--out DIR``:

- ``compare.md``: one markdown table, a row per run; a provisional verdict reads e.g.
  "supported (provisional: 1 seed x 17 tasks)";
- ``compare.png``: imitator/DQN AUC and final ratios with their intervals, per test; the x axis
  is the swept key when exactly one numeric key differs, else the runs in the order given;
- ``compare.json``: the same rows, machine-readable (per test ``verdict`` as in summary.json,
  plus ``provisional``, ``imitator_seeds``, ``dqn_seeds`` and ``tasks``).

Imports no JAX (numpy, matplotlib, yaml and the standard library only), like the report.
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from pathlib import Path
from typing import Any

import yaml

from climit import jsonfile, report, stats
from climit.errors import ArtifactError, ClimitError

IDENTITY_KEYS = ("run.name", "run.runs_dir")  # name a run; never a setting that is compared
RATIOS = (("auc", "AUC / DQN"), ("final", "final / DQN"))
SCALE_KEYS = ("provisional", "imitator_seeds", "dqn_seeds", "tasks")  # of summary.json tests


@dataclasses.dataclass(frozen=True)
class Run:
    """One run's label, flattened config and report summary."""

    label: str
    path: Path
    config: dict[str, Any]  # dotted key -> value
    summary: dict[str, Any]  # report/summary.json


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists stay values)."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _config(run_dir: Path) -> dict[str, Any]:
    """The config that produced the run's numbers: the one stored in ``eval/results.json``;
    ``config.yaml`` (written by ``climit run``, possibly after the evaluation) only when the
    results lack one."""
    results = run_dir / "eval" / "results.json"
    stored = (jsonfile.read(results, "the evaluation results").get("config")
              if results.is_file() else None)
    if stored:
        return stored
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise ArtifactError(f"{run_dir} has no config in eval/results.json nor a config.yaml; "
                            f"is it a run directory written by `climit run`?")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ArtifactError(f"{path} is not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ArtifactError(f"{path} does not hold a config mapping")
    return raw


def load_run(run_dir: str | Path, label: str | None = None) -> Run:
    """One run's config and report summary; ArtifactError with the fix when either is missing."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ArtifactError(f"no such run directory: {run_dir}")
    summary_path = run_dir / "report" / "summary.json"
    if not summary_path.is_file():
        raise ArtifactError(f"{run_dir} has no report ({summary_path} is missing); run "
                            f"`climit report {run_dir}` (or `climit run`) first")
    summary = jsonfile.read(summary_path, "the report summary")
    if not isinstance(summary.get("tests"), dict):
        raise ArtifactError(f"{summary_path} is not a climit report summary (no 'tests')")
    for key, test in summary["tests"].items():
        if not _summary_test_ok(test):
            raise ArtifactError(f"{summary_path} is damaged: its tests hold {key!r}: "
                                f"{str(test)[:80]}")
    _check_current(run_dir, summary)
    return Run(label or run_dir.name, run_dir, _resolved(run_dir, flatten(_config(run_dir))),
               summary)


# Config keys whose 0 means "derived" (evaluate.plan), and where results.json has the value used.
_RESOLVED = {"eval.env_steps": "env_steps", "eval.horizon": "horizon",
             "eval.transfer_env_steps": "transfer_steps"}


def _resolved(run_dir: Path, flat: dict[str, Any]) -> dict[str, Any]:
    """``flat`` with each derived key (0 in the config) replaced by the value the evaluation
    used, so that runs compare by what they ran (20000 env steps), not by "0"."""
    results = run_dir / "eval" / "results.json"
    used = jsonfile.read(results, "the evaluation results") if results.is_file() else {}
    return {k: used.get(_RESOLVED[k], v) if k in _RESOLVED and not v else v
            for k, v in flat.items()}


def _check_current(run_dir: Path, summary: dict[str, Any]) -> None:
    """Refuse a report built from an earlier evaluation than the one in eval/ (its numbers
    would be paired with the newer evaluation's config)."""
    results = run_dir / "eval" / "results.json"
    if not results.is_file():
        return
    current = jsonfile.read(results, "the evaluation results").get("fingerprint")
    if current is not None and summary.get("fingerprint") != current:
        raise ArtifactError(f"{run_dir}'s report is older than its evaluation (the fingerprints "
                            f"in report/summary.json and eval/results.json differ); run "
                            f"`climit report {run_dir}` first")


def load_runs(run_dirs: list[str | Path]) -> list[Run]:
    """Every run, labelled by its directory name (by its path where names repeat)."""
    if len(run_dirs) < 2:
        raise ClimitError("--compare needs two or more run directories")
    resolved = [Path(r).resolve() for r in run_dirs]
    twice = sorted({str(r) for r in resolved if resolved.count(r) > 1})
    if twice:
        raise ClimitError(f"--compare names {twice[0]} more than once")
    names = [Path(r).name for r in run_dirs]
    return [load_run(r, n if names.count(n) == 1 else str(r)) for r, n in zip(run_dirs, names)]


def differing_keys(runs: list[Run]) -> list[str]:
    """Config keys (dotted, in config order) whose values are not the same in every run."""
    keys: list[str] = []
    for r in runs:
        keys += [k for k in r.config if k not in keys]
    def value(r: Run, k: str) -> str:
        return json.dumps(r.config[k], sort_keys=True, default=str) if k in r.config else "<unset>"

    return [k for k in keys if k not in IDENTITY_KEYS and len({value(r, k) for r in runs}) > 1]


def tests_run(runs: list[Run]) -> list[str]:
    """The tests (a, b, c) that ran in at least one run."""
    return [k for k in report.TESTS if any(r.summary["tests"].get(k, {}).get("ran") for r in runs)]


def _is_num(v: Any) -> bool:
    """A number as summary.json writes one: a JSON number, null (NaN) or "inf"/"-inf"."""
    return v is None or v in ("inf", "-inf") or (isinstance(v, (int, float))
                                                 and not isinstance(v, bool))


def _summary_test_ok(test: Any) -> bool:
    """A test of summary.json is null or a mapping whose ratios and their intervals are numbers
    (what :func:`ratio` reads)."""
    if test is None:
        return True
    if not isinstance(test, dict):
        return False
    ratios = [v for k, v in test.items() if k.endswith("_ratio")]
    cis = [v for k, v in test.items() if k.endswith("_ratio_ci") and v is not None]
    return (all(_is_num(v) for v in ratios)
            and all(isinstance(ci, list) and len(ci) == 2 and all(map(_is_num, ci)) for ci in cis))


def _num(v: Any) -> float:
    """A summary number as a float (null -> NaN, "inf" -> inf)."""
    return math.nan if v is None else float(v)


def ratio(run: Run, test: str, which: str) -> tuple[float, float, float]:
    """(value, lo, hi) of ``imitator_dqn_{which}_ratio`` in one test; NaNs if it did not run."""
    t = run.summary["tests"].get(test) or {}
    if not t.get("ran"):
        return math.nan, math.nan, math.nan
    lo, hi = t.get(f"imitator_dqn_{which}_ratio_ci") or (None, None)
    return _num(t.get(f"imitator_dqn_{which}_ratio")), _num(lo), _num(hi)


def _json(x: float) -> float | str | None:
    """As in summary.json: NaN -> null, +-inf -> "inf"/"-inf"."""
    if math.isnan(x):
        return None
    return ("inf" if x > 0 else "-inf") if math.isinf(x) else x


def _cell(v: tuple[float, float, float]) -> str:
    value, lo, hi = v
    if math.isnan(value):
        return "n/a"
    return f"{stats.fmt(value)} [{stats.fmt(lo)}, {stats.fmt(hi)}]"


def verdict_cell(run: Run, test: str) -> str:
    """One test's verdict for the table: "not run", or the verdict, provisional ones with their
    scale (see :func:`climit.report.verdict_label`)."""
    entry = run.summary["tests"].get(test) or {}
    if not entry.get("ran"):
        return "not run"
    return report.verdict_label(str(entry.get("verdict")), entry.get("provisional"),
                                entry.get("imitator_seeds"), entry.get("tasks"))


def _value(v: Any) -> str:
    return json.dumps(v) if isinstance(v, (list, dict)) else ("unset" if v is None else str(v))


def rows(runs: list[Run]) -> tuple[list[str], list[dict[str, Any]]]:
    """(differing keys, one JSON-ready row per run: run, path, config values, per test the
    verdict, whether it is provisional and the scale it ran at (null in summaries written before
    these keys), and the AUC/final ratios with intervals)."""
    keys, tests = differing_keys(runs), tests_run(runs)
    out = [{"run": r.label, "path": str(r.path), "config": {k: r.config.get(k) for k in keys},
            "tests": {t: _test_row(r, t) for t in tests}} for r in runs]
    return keys, out


def _test_row(run: Run, test: str) -> dict[str, Any]:
    """One run's entry for one test in :func:`rows`."""
    entry = run.summary["tests"].get(test) or {}
    row = {"ran": bool(entry.get("ran")), "verdict": entry.get("verdict"),
           **{k: entry.get(k) for k in SCALE_KEYS}}
    for which, _ in RATIOS:
        row[f"{which}_ratio"] = [_json(x) for x in ratio(run, test, which)]
    return row


def markdown(runs: list[Run]) -> str:
    """The comparison table (and a line saying which keys differ)."""
    keys, tests = differing_keys(runs), tests_run(runs)
    head = ["run", *keys]
    for t in tests:
        head += [f"({t}) verdict", *(f"({t}) {name}" for _, name in RATIOS)]
    lines = [f"# climit comparison of {len(runs)} runs", "",
             "Imitator/DQN ratios of the three claim tests (point and "
             f"{_conf(runs)} bootstrap interval; 1 = the DQN, {report.MATCH_LEVEL} = match level). "
             + (f"Config keys that differ: {', '.join(keys)}." if keys else
                "The runs' configs do not differ (beyond their names)."), "",
             "| " + " | ".join(head) + " |", "| " + " | ".join("---" for _ in head) + " |"]
    for r in runs:
        cells = [r.label, *(_value(r.config.get(k)) for k in keys)]
        for t in tests:
            cells.append(verdict_cell(r, t))
            cells += [_cell(ratio(r, t, which)) for which, _ in RATIOS]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    if tests:
        lines += ["", "![comparison](compare.png)"]
    return "\n".join(lines) + "\n"


def _conf(runs: list[Run]) -> str:
    levels = {r.summary.get("confidence") for r in runs} - {None}
    return "/".join(f"{round(100 * float(c))}%" for c in sorted(levels)) or "95%"


def _x_axis(runs: list[Run], keys: list[str]) -> tuple[list[float], list[str], str]:
    """x positions, tick labels and axis label: the swept key's values when exactly one numeric
    key differs, else 0..n-1 labelled by run."""
    if len(keys) == 1:
        values = [runs[i].config.get(keys[0]) for i in range(len(runs))]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            return [float(v) for v in values], [str(v) for v in values], keys[0]
    labels = [r.label if not keys else "\n".join(f"{k.split('.')[-1]}={_value(r.config.get(k))}"
                                                   for k in keys) for r in runs]
    return [float(i) for i in range(len(runs))], labels, "run"


def plot(runs: list[Run], path: Path) -> None:
    """Two panels (AUC ratio, final ratio): one series per test with interval bars; an infinite
    ratio or interval end is drawn as an arrow head at the top of the panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    keys, tests = differing_keys(runs), tests_run(runs)
    xs, labels, xlabel = _x_axis(runs, keys)
    order = np.argsort(xs, kind="stable")
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), dpi=110, sharey=False)
    colors = {"a": "tab:blue", "b": "tab:orange", "c": "tab:green"}
    offsets = {t: (i - (len(tests) - 1) / 2) * 0.04 * (max(xs) - min(xs) or 1.0)
               for i, t in enumerate(tests)}
    for ax, (which, name) in zip(axes, RATIOS):
        vals = {t: np.array([ratio(runs[i], t, which) for i in order]) for t in tests}
        finite = np.concatenate([v[np.isfinite(v)] for v in vals.values()] + [np.array([1.0])])
        top = 1.15 * float(finite.max())
        for t in tests:
            x = np.asarray(xs)[order] + offsets[t]
            v, lo, hi = vals[t].T
            # +inf (a positive return against a DQN at or below zero) is an arrow at the top; an
            # undefined ratio (NaN) breaks the line; an undefined interval is a hollow marker,
            # not a zero-width bar that would look perfectly precise.
            ok = np.isfinite(v)
            bars = ok & ~np.isnan(lo) & ~np.isnan(hi)
            up = np.isinf(v) | (bars & np.isinf(hi))
            ax.plot(x, np.where(ok, v, np.nan), "-", color=colors[t],
                    label=f"({t}) {report.TESTS[t][0]}")
            ax.errorbar(x[bars], v[bars], yerr=np.vstack([v[bars] - lo[bars],
                                                          np.minimum(hi[bars], top) - v[bars]]),
                        fmt="o", color=colors[t], capsize=3)
            ax.plot(x[ok & ~bars], v[ok & ~bars], "o", mfc="none", color=colors[t])
            ax.plot(x[up], np.full(int(up.sum()), top), "^", color=colors[t])
        ax.axhline(1.0, color="tab:green", lw=1, ls=":")
        ax.axhline(report.MATCH_LEVEL, color="k", lw=1, ls="--")
        ax.set_ylim(bottom=0.0, top=top * 1.05)
        ax.set_xticks(xs, labels, fontsize=8)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"imitator {name}")
        ax.set_title(f"imitator/DQN {which} ratio")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="best")
    fig.text(0.01, 0.01, "bars: bootstrap intervals (hollow marker: interval undefined); ^ = "
             f"infinite or off the chart; dotted: DQN parity (1); dashed: match level "
             f"({report.MATCH_LEVEL})", fontsize=7)
    with warnings.catch_warnings():  # long tick labels: matplotlib keeps the layout it has
        warnings.filterwarnings("ignore", message="Tight layout not applied")
        fig.tight_layout(rect=(0, 0.03, 1, 1))
    report.save_figure(fig, path)


def build(run_dirs: list[str | Path], out: str | Path = "compare") -> Path:
    """Write ``OUT/{compare.md, compare.png, compare.json}``; returns OUT."""
    runs = load_runs(run_dirs)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ClimitError(f"--out {out} is a file; the comparison needs a directory to write "
                          f"compare.md, compare.png and compare.json into")
    out.mkdir(parents=True, exist_ok=True)
    keys, table_rows = rows(runs)
    if tests_run(runs):
        plot(runs, out / "compare.png")
    jsonfile.write_atomic(out / "compare.md", markdown(runs).encode())
    jsonfile.write_atomic(out / "compare.json", json.dumps(
        {"format": 1, "keys": keys, "runs": table_rows}, indent=1, allow_nan=False).encode())
    return out
