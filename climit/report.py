"""The report: ``runs/NAME/eval/{results.json, curves.npz}`` -> ``runs/NAME/report/``.

Imports no JAX (numpy, matplotlib and the standard library only), so a report can be rebuilt on
any machine from the evaluation artifacts. Writes:

- ``report.md``: per test a verdict table (imitator, controls and DQN side by side, ratios to the
  DQN with intervals), the criteria behind the verdict, and a plain-language reading of what the
  numbers do and do not show; then what each imitator's training measured offline (held-out
  next-action loss and accuracy, and accuracy against the position in the sequence);
- ``test_a.png``, ``test_b.png``, ``test_c.png``: return against env steps, every agent's mean
  curve with its shaded bootstrap interval, markers at the context length and at H;
- ``summary.json``: the headline numbers under stable keys ``tests.{a,b,c}`` (see
  :func:`summary`).

The evaluation artifacts (written by :func:`write_eval`, read by :func:`load_eval`):
``results.json`` holds ``{"format": 1, "env", "transfer", "context_steps", "horizon",
"horizon_factor", "mode", "confidence", "bootstrap", "final_frac", "config", "tasks": {"a":
[K, task_dim] held-out tasks}, "tests": {KEY: stats.summarize_test(...) + {"env", "markers":
{"context", "horizon"}}}, "imitators": {ROLE: what its training measured offline}}``, and
``curves.npz`` holds ``KEY.grid`` [P] (env steps) and ``KEY.AGENT`` [S, K, P] for each test KEY
and agent. Optional keys the report reads when present: test (b)'s ``controls_trained_to_h``
(false: its ED and ablated controls saw the full histories), and ``heldout_tasks_available``
(the number of held-out tasks the env has; per test, or at the top level for the tests on
``env``), which sets the planned task count (see :func:`planned_tasks`). Settings missing from
an older file fall back to :data:`EVAL_DEFAULTS`.
"""

from __future__ import annotations

import io
import itertools
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from climit import jsonfile, stats
from climit.errors import ArtifactError

RESULTS_FORMAT = 1
MATCH_LEVEL = 0.8  # "keeps up with the DQN": ratio interval at or above 0.8 (one-sided)
TESTS: dict[str, tuple[str, str]] = {
    "a": ("skill match", "From an empty context on held-out tasks, does the frozen imitator's "
          f"return keep up with the DQN's learning curve: at least {MATCH_LEVEL} of the DQN's "
          "area under the curve and final return, over the same env steps?"),
    "b": ("horizon extrapolation", "Trained only on the first H env steps of each history, does "
          "the imitator keep improving from H to the evaluation horizon as the DQN does?"),
    "c": ("new family", "On a task family it never saw (through the common interface), does it "
          "learn the way a fresh DQN does?"),
}
AGENTS: dict[str, str] = {
    "imitator": "imitator (AD)",
    "ed": "expert distillation (ED)",
    "ablated": "context-ablated imitator",
    "random": "random policy",
    "dqn": "DQN from scratch",
}
CONTROLS = ("ed", "ablated", "random")  # what the imitator is compared with (imitator_vs)
# The controls that are imitators themselves: trained on full histories in test (b) unless
# eval.horizon_controls, and then not comparable with the H-imitator.
TRAINED_CONTROLS = ("ed", "ablated")
COLORS = {"imitator": "tab:blue", "ed": "tab:orange", "ablated": "tab:purple",
          "random": "tab:gray", "dqn": "tab:green"}
ABLATIONS = {  # eval.ablation -> what its control is (the report's agents say "context-ablated")
    "single_episode": "attends only within the current episode, so it cannot carry over what "
                      "earlier episodes showed",
    "shuffled": "learned from histories whose episodes were shuffled, so their order held no "
                "learning progress to follow",
}
ROLE_LABELS = {**AGENTS, "imitator_h": "imitator (AD, first H steps)",
               "ed_h": "ED (first H steps)", "ablated_h": "context-ablated (first H steps)"}
CHECK_MARKS = {True: "yes", False: "no", None: "unclear"}
PLANNED_SEEDS, PLANNED_TASKS = 5, 20  # the scale the claim calls for (issue 5)
# Coverage (%) of a 95% AUC-ratio interval over N imitator seeds whose differences dominate, in
# the simulation of stats' module docstring (17 tasks, 5 DQN learners per task).
SEED_COVERAGE = {2: 62, 5: 85, 10: 93}
# Settings of the evaluation, as the config defaults them: read through `setting` only, so an
# older results file that lacks one gets the same value everywhere.
EVAL_DEFAULTS: dict[str, float] = {"confidence": stats.DEFAULT_CONFIDENCE,
                                   "bootstrap": stats.DEFAULT_BOOTSTRAP,
                                   "final_frac": stats.DEFAULT_FINAL_FRAC}
NOT_COMPARABLE_CONTROLS = ("not comparable: the controls were trained on the full histories, not "
                           "the first H steps; set eval.horizon_controls=true")


def setting(results: dict[str, Any], name: str) -> float:
    """An evaluation setting (``confidence``, ``bootstrap``, ``final_frac``) of ``results``."""
    value = results.get(name)
    return EVAL_DEFAULTS[name] if value is None else value


# ---------------------------------------------------------------------------------------------
# Artifacts
# ---------------------------------------------------------------------------------------------

def write_eval(eval_dir: str | Path, results: dict[str, Any],
               curves: dict[str, np.ndarray]) -> None:
    """Write ``curves.npz`` then ``results.json`` (the latter last: its presence marks completion).
    An earlier evaluation's ``results.json`` goes first, so a kill between the two files leaves
    no evaluation rather than its results beside the new curves."""
    eval_dir = Path(eval_dir)
    eval_dir.mkdir(parents=True, exist_ok=True)
    (eval_dir / "results.json").unlink(missing_ok=True)
    tmp = eval_dir / "curves.tmp.npz"
    np.savez_compressed(tmp, **{k: np.asarray(v) for k, v in curves.items()})
    os.replace(tmp, eval_dir / "curves.npz")
    results = {"format": RESULTS_FORMAT, **results}
    jsonfile.write_atomic(eval_dir / "results.json",
                  json.dumps(results, indent=1, allow_nan=False).encode())


def load_eval(run_dir: str | Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """``(results, curves)`` of a run's evaluation; ArtifactError naming what is missing."""
    eval_dir = Path(run_dir) / "eval"
    res_path, curves_path = eval_dir / "results.json", eval_dir / "curves.npz"
    for p in (res_path, curves_path):
        if not p.is_file():
            raise ArtifactError(f"{p} is missing; run `climit evaluate` (or `climit run`) first")
    try:
        results = json.loads(res_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{res_path} is not valid JSON: {e}") from None
    if (not isinstance(results, dict) or results.get("format") != RESULTS_FORMAT
            or not isinstance(results.get("tests"), dict)):
        raise ArtifactError(f"{res_path} is not a climit results file of format {RESULTS_FORMAT}")
    _check_settings(results, res_path)
    if not any(results["tests"].values()):
        raise ArtifactError(f"{res_path} holds no test results; run `climit evaluate` again")
    try:
        with np.load(curves_path) as z:
            curves = {k: z[k] for k in z.files}
    except Exception as e:  # zipfile/zlib/ValueError: any damage is reported the same way
        raise ArtifactError(f"{curves_path} is damaged: {e}") from None
    for key, test in results["tests"].items():
        _check_test_curves(curves, key, test, curves_path)
    return results, curves


def _check_settings(results: dict[str, Any], path: Path) -> None:
    """ArtifactError for a results file whose settings or tests have the wrong types (edited by
    hand: climit writes none such), instead of a traceback deep in the report."""
    ok = {"confidence": lambda v: isinstance(v, (int, float)) and 0 < v < 1,
          "bootstrap": lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0,
          "final_frac": lambda v: isinstance(v, (int, float)) and 0 < v <= 1,
          "config": lambda v: isinstance(v, dict) and all(isinstance(s, dict) for s in v.values())}
    for name, check in ok.items():
        if results.get(name) is not None and not check(results[name]):
            raise ArtifactError(f"{path} is damaged: its {name} is {results[name]!r}")
    for key, test in results["tests"].items():
        if key not in TESTS or not (test is None or isinstance(test, dict)):
            raise ArtifactError(f"{path} is damaged: its tests hold {key!r}: {str(test)[:60]}")


def _check_test_curves(curves: dict[str, np.ndarray], key: str, test: dict | None,
                       path: Path) -> None:
    """Every agent of a test that ran has finite curves [S, K, P] on the test's grid [P]."""
    if test is None:
        return
    grid = curves.get(f"{key}.grid")
    if grid is None:
        raise ArtifactError(f"{path} lacks the curves of test {key}")
    for agent in test.get("agents", {}):
        c = curves.get(f"{key}.{agent}")
        if c is None or c.ndim != 3 or c.shape[2] != len(grid) or not np.isfinite(c).all():
            raise ArtifactError(f"{path} is damaged: the curves of {agent} in test {key} are "
                                f"missing, not [seeds, tasks, {len(grid)}] or not finite; run "
                                f"`climit evaluate` again")


# ---------------------------------------------------------------------------------------------
# Verdicts
# ---------------------------------------------------------------------------------------------

def _est(d: dict[str, Any]) -> stats.Estimate:
    return stats.estimate_from_dict(d)


def _positive(diff: stats.Estimate) -> bool | None:
    """A paired difference (a gain, or the imitator minus a control): True if its interval
    lies above 0, False if below, None (unclear) if it holds 0 or is undefined."""
    if diff.lo > 0:
        return True
    if diff.hi < 0:
        return False
    return None


def _matches(*ratios: stats.Estimate) -> bool | None:
    """Imitator/DQN ratios at MATCH_LEVEL or above: True if every interval lies there; False if
    some interval lies wholly below it (that ratio clearly falls short); else None (unclear).

    A ratio with an undefined (NaN) value, lo or hi makes the match None whatever the others
    say: Python's min/max with NaN depend on argument order, and an undefined ratio cannot
    show a match.
    """
    if any(math.isnan(x) for r in ratios for x in (r.value, r.lo, r.hi)):
        return None
    if min(r.lo for r in ratios) >= MATCH_LEVEL:
        return True
    if any(r.hi < MATCH_LEVEL for r in ratios):
        return False
    return None


def criteria(key: str, test: dict[str, Any]) -> list[tuple[str, bool | None, str]]:
    """The checks behind a verdict: ``(name, passed True/False/None=unclear, evidence)``."""
    agents, vs = test["agents"], test["vs_dqn"]
    out = []
    auc_r, fin_r = _est(vs["imitator"]["auc_ratio"]), _est(vs["imitator"]["final_ratio"])
    out.append((f"matches the DQN (AUC and final ratios >= {MATCH_LEVEL})", _matches(auc_r, fin_r),
                f"AUC ratio {auc_r}, final ratio {fin_r}"))
    name = "improves in context (final above initial return)"
    if _dqn_learns(test) is not True:
        hint = "; choose a smaller H" if key == "b" else ""
        out.append((name, None, f"not testable here: the DQN itself does not clearly improve in "
                    f"this window ({_gain_evidence(agents['dqn'])}){hint}"))
    else:
        out.append((name, _positive(_est(agents["imitator"]["gain"])),
                    _gain_evidence(agents["imitator"])))
    for ctrl in ("ablated", "random"):
        if ctrl in agents:
            out.append(_beats_control(key, test, ctrl))
    return out


def _first_bin(first_step: int, end_step: int) -> str:
    """The episodes of a window's first bin: test (b)'s starts at H, not at step 0."""
    if first_step:
        return f"after env step {first_step} and by {end_step}"
    return f"by env step {end_step}"


def _gain_evidence(agent: dict[str, Any]) -> str:
    return (f"initial {_est(agent['initial'])} -> final {_est(agent['final'])}, gain "
            f"{_est(agent['gain'])}")


def _dqn_learns(entry: dict[str, Any]) -> bool | None:
    """Whether the DQN clearly improves over a test's window (its gain's interval above 0)."""
    return _positive(_est(entry["agents"]["dqn"]["gain"]))


def full_history_controls(key: str, test: dict[str, Any]) -> bool:
    """Test (b) whose ED and ablated controls saw the full histories (``eval.horizon_controls``
    false), unlike its imitator, which saw only the first H steps."""
    return key == "b" and test.get("controls_trained_to_h") is False


def _beats_control(key: str, test: dict[str, Any], ctrl: str) -> tuple[str, bool | None, str]:
    """The criterion "beats the control (AUC)", judged on the paired difference imitator -
    control; None (unclear) where the control is not comparable: a full-history control in test
    (b) knows more than the H-imitator, so losing to it says nothing about the use of context."""
    name = f"beats the {AGENTS[ctrl]} (AUC)"
    if ctrl in TRAINED_CONTROLS and full_history_controls(key, test):
        return name, None, NOT_COMPARABLE_CONTROLS
    diff = _est(test["imitator_vs"][ctrl]["auc_diff"])
    return name, _positive(diff), (f"imitator {_est(test['agents']['imitator']['auc'])} vs "
                                   f"{_est(test['agents'][ctrl]['auc'])}, difference {diff}")


def _span(test: dict[str, Any]) -> str:
    """The env steps a test's metrics cover, as ``(from, to]``: the episodes that ended after
    ``steps_counted_from`` (H for test (b), else 0) and by the window's last grid point (its
    first grid point is the end of the first bin, not where the bins start)."""
    return f"({test.get('steps_counted_from', 0)}, {test['window'][1]}]"


def preconditions(key: str, test: dict[str, Any]) -> list[tuple[str, bool | None, str]]:
    """What a failed criterion needs to mean what it says, as ``(name, passed, evidence)``.

    Tests (a) and (c): the DQN must clearly learn over the window (else there is no learning to
    reproduce, and falling short of it says nothing about the imitator). Test (b), over the steps
    up to H, which the H-imitator's histories covered (``before_h``): the DQN must learn there
    (else those histories hold no learning to extrapolate), and the H-imitator must match it
    there (else a shortfall after H measures how well it imitated the first H steps, not whether
    it extrapolates beyond them).
    """
    if key != "b":
        return [(f"the DQN clearly learns over env steps {_span(test)} (final above "
                 f"initial return), so there is learning to reproduce", _dqn_learns(test),
                 f"DQN {_gain_evidence(test['agents']['dqn'])}")]
    before = test.get("before_h")
    if not before:
        return []
    agents = before["agents"]
    ratio = _est(before["vs_dqn"]["imitator"]["auc_ratio"])
    imi, dqn = _est(agents["imitator"]["auc"]), _est(agents["dqn"]["auc"])
    return [(f"the DQN clearly learns before H (env steps {_span(before)}: final above initial "
             f"return), so the H-imitator's histories hold learning", _dqn_learns(before),
             f"DQN {_gain_evidence(agents['dqn'])}"),
            (f"matches the DQN up to H, the DQN's steps its histories hold (AUC ratio over env "
             f"steps {_span(before)} >= {MATCH_LEVEL})", _matches(ratio),
             f"AUC ratio {ratio}: imitator {imi} vs DQN {dqn}")]


def verdict(key: str, test: dict[str, Any]) -> str:
    """'supported' if every criterion holds; 'not supported' if one fails and every
    precondition clearly holds; else 'inconclusive' (a precondition that fails or is unclear
    leaves a failure unexplained: it may come from the setting, not the imitator)."""
    results = [c[1] for c in criteria(key, test)]
    if any(r is False for r in results):
        holds = all(p[1] is True for p in preconditions(key, test))
        return "not supported" if holds else "inconclusive"
    return "supported" if all(r is True for r in results) else "inconclusive"


# ---------------------------------------------------------------------------------------------
# summary.json
# ---------------------------------------------------------------------------------------------

SUMMARY_RATIOS = ("auc_ratio", "final_ratio", "steps_to_80_ratio")


def _ci(d: dict[str, Any]) -> list[Any]:
    return [d["lo"], d["hi"]]


def planned_tasks(test: dict[str, Any], results: dict[str, Any]) -> int:
    """The task count the claim calls for in one test: PLANNED_TASKS, or all the held-out tasks
    the env has when it has fewer (Dark Room: 17 goals).

    The count comes from ``heldout_tasks_available`` of the test, else of the results when the
    test runs on the results' ``env``; without it (or null: a single-task env, whose evaluation
    "tasks" are env seeds without limit) PLANNED_TASKS.
    """
    available = test.get("heldout_tasks_available")
    if available is None and test.get("env", results.get("env")) == results.get("env"):
        available = results.get("heldout_tasks_available")
    return PLANNED_TASKS if available is None else min(PLANNED_TASKS, int(available))


def provisional(test: dict[str, Any], results: dict[str, Any]) -> bool:
    """True when a test ran on fewer imitator seeds or tasks than the claim calls for."""
    return (test["seeds"].get("imitator", 0) < PLANNED_SEEDS
            or test["tasks"] < planned_tasks(test, results))


def summary(results: dict[str, Any]) -> dict[str, Any]:
    """Headline numbers under stable keys. For each test KEY in a, b, c: ``tests.KEY`` holds
    ``ran``, ``verdict``, ``provisional`` (true when ``imitator_seeds`` < PLANNED_SEEDS or
    ``tasks`` < :func:`planned_tasks`: the verdict stands on a smaller run than the claim calls
    for), ``imitator_seeds``, ``dqn_seeds`` and ``tasks`` (the scale it ran at),
    ``imitator_dqn_{auc,final,steps_to_80}_ratio`` (point) and ``..._ci`` ([lo, hi]),
    ``imitator_auc``, ``imitator_final``, ``dqn_auc``, ``dqn_final``, ``imitator_gain`` and
    ``dqn_gain`` (final - initial, paired; +``_ci``), ``controls.{ed,ablated,random}`` each with
    ``imitator_auc_minus``(+``_ci``: the imitator's AUC minus the control's, paired), ``auc``,
    ``final``, ``dqn_auc_ratio``(+``_ci``) and ``dqn_final_ratio``(+``_ci``);
    ``imitator_dqn_auc_ratio_before_h``(+``_ci``): test (b)'s
    AUC ratio over the steps up to H (null for a and c), and ``imitator_dqn_auc_ratio_per_seed``
    (each imitator seed's AUC ratio; null in results older than it). A test that did not run has
    every number (and ``provisional``) null. Values: float, null (undefined) or "inf" (never
    reached)."""
    out: dict[str, Any] = {"format": 1, "fingerprint": results.get("fingerprint"),
                           "env": results.get("env"),
                           "transfer": results.get("transfer"),
                           "confidence": setting(results, "confidence"), "tests": {}}
    for key in TESTS:
        out["tests"][key] = _summary_entry(key, results["tests"].get(key), results)
    return out


def _summary_entry(key: str, test: dict[str, Any] | None,
                   results: dict[str, Any]) -> dict[str, Any]:
    """``tests.KEY`` of :func:`summary` for one test's results (None: the test did not run)."""
    entry: dict[str, Any] = {"ran": test is not None,
                             "verdict": None, "provisional": None, "imitator_seeds": None,
                             "dqn_seeds": None, "tasks": None}
    if test is not None:
        entry.update(verdict=verdict(key, test), provisional=provisional(test, results),
                     imitator_seeds=test["seeds"].get("imitator"),
                     dqn_seeds=test["seeds"].get("dqn"), tasks=test["tasks"])
    vs = test["vs_dqn"] if test else {}
    agents = test["agents"] if test else {}
    for r in SUMMARY_RATIOS:
        d = vs.get("imitator", {}).get(r)
        entry[f"imitator_dqn_{r}"] = d["value"] if d else None
        entry[f"imitator_dqn_{r}_ci"] = _ci(d) if d else [None, None]
    for who, m in itertools.product(("imitator", "dqn"), ("auc", "final")):
        d = agents.get(who, {}).get(m)
        entry[f"{who}_{m}"] = d["value"] if d else None
    for who in ("imitator", "dqn"):  # final - initial return (paired): "improves"
        d = agents.get(who, {}).get("gain")
        entry[f"{who}_gain"], entry[f"{who}_gain_ci"] = ((d["value"], _ci(d)) if d
                                                         else (None, [None, None]))
    diffs = (test or {}).get("imitator_vs") or {}
    entry["controls"] = {ctrl: _control_entry(agents.get(ctrl), vs.get(ctrl),
                                              diffs.get(ctrl, {}).get("auc_diff"))
                         for ctrl in CONTROLS}
    before = (test or {}).get("before_h")
    d = before["vs_dqn"]["imitator"]["auc_ratio"] if before else None
    entry["imitator_dqn_auc_ratio_before_h"] = d["value"] if d else None
    entry["imitator_dqn_auc_ratio_before_h_ci"] = _ci(d) if d else [None, None]
    per_seed = ((test or {}).get("auc_ratio_per_seed") or {}).get("imitator")
    entry["imitator_dqn_auc_ratio_per_seed"] = per_seed
    return entry


def _control_entry(agent: dict | None, vs: dict | None, diff: dict | None) -> dict[str, Any]:
    """A control's values in :func:`summary`: its AUC and final return, its ratios to the DQN,
    and the imitator's AUC minus its own (paired: "beats"), with intervals (null where the
    control did not run)."""
    return {"imitator_auc_minus": diff["value"] if diff else None,
            "imitator_auc_minus_ci": _ci(diff) if diff else [None, None],
            "auc": agent["auc"]["value"] if agent else None,
            "final": agent["final"]["value"] if agent else None,
            "dqn_auc_ratio": vs["auc_ratio"]["value"] if vs else None,
            "dqn_auc_ratio_ci": _ci(vs["auc_ratio"]) if vs else [None, None],
            "dqn_final_ratio": vs["final_ratio"]["value"] if vs else None,
            "dqn_final_ratio_ci": _ci(vs["final_ratio"]) if vs else [None, None]}


# ---------------------------------------------------------------------------------------------
# Plots
# ---------------------------------------------------------------------------------------------

def save_figure(fig: Any, path: Path) -> None:
    """Write a matplotlib figure as PNG the way every file is replaced (jsonfile.write_atomic:
    a full disk leaves the previous plot whole) and close it."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png")
    finally:  # a figure that failed to render is closed too: pyplot keeps every open one alive
        plt.close(fig)
    jsonfile.write_atomic(path, buf.getvalue())


def plot_test(key: str, test: dict[str, Any], curves: dict[str, np.ndarray], path: Path, *,
              confidence: float, n_boot: int) -> None:
    """Return vs env steps for every agent of one test, with shaded intervals and markers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = curves[f"{key}.grid"]
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    for agent in AGENTS:
        c = curves.get(f"{key}.{agent}")
        if c is None:
            continue
        mean, lo, hi = stats.curve_band(c, n_boot=n_boot, confidence=confidence,
                                        crossed=agent not in stats.PER_CELL)
        size = f"{_count(c.shape[0], 'seed')} x {_count(c.shape[1], 'task')}"
        label = f"{agent_label(key, test, agent)} ({size})"
        ax.plot(grid, mean, color=COLORS[agent], label=label,
                lw=2 if agent in ("imitator", "dqn") else 1.3)
        ax.fill_between(grid, lo, hi, color=COLORS[agent], alpha=0.18, lw=0)
    markers = test.get("markers", {})
    if test.get("steps_counted_from"):  # test (b): shade the steps the metrics use, from H
        ax.axvspan(test["steps_counted_from"], test["window"][1], color="tab:red", alpha=0.05, lw=0)
    if markers.get("context"):
        ax.axvline(markers["context"], color="k", ls=":", lw=1)
        ax.annotate("context length", (markers["context"], 1.0), xycoords=("data", "axes fraction"),
                    rotation=90, va="top", ha="right", fontsize=8)
    if markers.get("horizon"):
        ax.axvline(markers["horizon"], color="tab:red", ls="--", lw=1)
        ax.annotate("H (imitator trained up to here)", (markers["horizon"], 1.0),
                    xycoords=("data", "axes fraction"), rotation=90, va="top", ha="right",
                    fontsize=8, color="tab:red")
    title, _ = TESTS[key]
    ax.set_title(f"({key}) {title}: {test.get('env', '')}")
    ax.set_xlabel("environment steps (per task)")
    ax.set_ylabel("episode return")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    save_figure(fig, path)


# ---------------------------------------------------------------------------------------------
# Markdown
# ---------------------------------------------------------------------------------------------

def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def agent_label(key: str, test: dict[str, Any], agent: str) -> str:
    """An agent's name in tables and plots; test (b)'s full-history controls say so."""
    if agent in TRAINED_CONTROLS and full_history_controls(key, test):
        return f"{AGENTS[agent]} (full histories)"
    return AGENTS[agent]


def _task_kind(test: dict[str, Any], results: dict[str, Any]) -> str | None:
    """What a test's K evaluation units are: "task" (task parameters: goals, key/door cells),
    "seed" (a single-task env such as MinAtar, whose K units are env seeds) or None (unknown).

    From the test's ``task_dim`` if recorded, else from the width of ``results["tasks"]["a"]``
    ([K, task_dim]) for a test on the results' env; test (c)'s env is not recorded there.
    """
    task_dim = test.get("task_dim")
    rows = (results.get("tasks") or {}).get("a")
    if task_dim is None and rows and test.get("env", results.get("env")) == results.get("env"):
        task_dim = len(rows[0])
    if task_dim is None:
        return None
    return "seed" if task_dim == 0 else "task"


def _units(n: int, kind: str | None) -> str:
    """``n`` evaluation units of a kind from :func:`_task_kind`, e.g. "17 held-out tasks"."""
    if kind is None:
        return f"{n} held-out task(s) or seeds"
    return _count(n, "evaluation seed" if kind == "seed" else "held-out task")


def _row(label: str, a: dict[str, Any], v: dict[str, Any] | None) -> str:
    cells = [label, str(_est(a["auc"])), str(_est(a["initial"])), str(_est(a["final"]))]
    if v is None:
        cells += ["1 (reference)", "1 (reference)", "1 (reference)"]
    else:
        cells += [str(_est(v["auc_ratio"])), str(_est(v["final_ratio"])),
                  _fmt_est(_est(v["steps_to_80_ratio"]))]
    return "| " + " | ".join(cells) + " |"


def _fmt_est(e: stats.Estimate) -> str:
    """A steps-to-80% ratio: inf means the agent never got there."""
    f = lambda x: stats.fmt(x, inf="never")
    return f"{f(e.value)} [{f(e.lo)}, {f(e.hi)}]"


def _steps_sentences(steps_r: stats.Estimate, since: str = "",
                     seeds: dict[str, int] | None = None) -> list[str]:
    """What the steps-to-80% ratio says, including when the imitator outpaced the DQN;
    ``since`` names where the steps count from when that is not env step 0; ``seeds`` (the
    test's rows per agent) flags a ratio that leans low because the imitator's mean curve
    averages fewer rows than the DQN's."""
    if math.isnan(steps_r.value):
        return ["The steps-to-80% ratio is undefined: the DQN's final return is not above zero, "
                "so it set no level to reach."]
    if math.isinf(steps_r.value):
        return ["It never reached 80% of the DQN's final return within the window."]
    out = [f"It took {stats.fmt(steps_r.value)}x the DQN's env steps{since} to reach 80% of "
           f"the DQN's final return (interval {_fmt_est(steps_r)})."]
    if steps_r.hi < 1:
        # The match criterion is one-sided, so say plainly when passing it means being ahead.
        out.append("That interval lies below 1: the imitator reached the DQN's level faster than "
                   "the DQN did, so it does not reproduce the DQN's learning curve step for "
                   "step, it outpaces it (the match criterion is one-sided: being ahead does not "
                   "fail it).")
    s, r = (seeds or {}).get("imitator", 0), (seeds or {}).get("dqn", 0)
    if 0 < s < r:
        # The first crossing of a noisier curve comes early by chance (identical true curves
        # give a ratio below 1), so say which way this ratio leans.
        out.append(f"The imitator's mean curve averages {_count(s, 'seed')} per task against the "
                   f"DQN's {r} learners, so it is noisier and crosses a level earlier by chance: "
                   f"this ratio leans below its true value.")
    return out


def _control_sentences(key: str, test: dict[str, Any]) -> list[str]:
    """What the controls clearly beaten show. ED (trained on the end of the same histories)
    beaten: more than replaying a final policy. The context-ablated control beaten: the context
    across episodes adds to the return, the evidence for learning in context."""
    if full_history_controls(key, test):
        return []  # not comparable with the H-imitator; a caveat says so
    beaten = {c for c in TRAINED_CONTROLS if c in test["agents"]
              and _positive(_est(test["imitator_vs"][c]["auc_diff"])) is True}
    out = []
    if "ed" in beaten and key == "b":
        out.append("The H-imitator clearly beats expert distillation trained on the last part of "
                   "the same first H steps, so its return is more than replaying the policy the "
                   "DQN had at H would give.")
    elif "ed" in beaten:
        out.append("The imitator clearly beats expert distillation (trained on the end of the "
                   "same histories, the DQN's late behaviour), so its return is more than "
                   "replaying a final policy would give.")
    if "ablated" in beaten:
        out.append(f"{'It' if out else 'The imitator'} clearly beats the context-ablated imitator"
                   f"{' too' if out else ''}, so what its context holds from earlier episodes "
                   f"adds to its return: evidence of learning in context.")
    return out


def reading(key: str, test: dict[str, Any], results: dict[str, Any]) -> list[str]:
    """Plain-language sentences: what the numbers show, then what they do not."""
    agents, vs = test["agents"], test["vs_dqn"]
    conf = int(round(100 * setting(results, "confidence")))
    first_step, hi_step = test.get("steps_counted_from", 0), test["window"][1]
    auc_r, fin_r = _est(vs["imitator"]["auc_ratio"]), _est(vs["imitator"]["final_ratio"])
    imi, dqn = agents["imitator"], agents["dqn"]
    kind = _task_kind(test, results)
    plural = {"seed": "evaluation seeds", "task": "tasks", None: "tasks or seeds"}[kind]
    says = [
        f"Over the episodes that ended between env steps {first_step} and {hi_step} on "
        f"{_units(test['tasks'], kind)} of {test.get('env', '?')}, the imitator's mean return was "
        f"{stats.fmt(imi['auc']['value'])} against the DQN's {stats.fmt(dqn['auc']['value'])}: an "
        f"area ratio of {auc_r} ({conf}% interval resampling imitator seeds and {plural}; the "
        f"DQN's learners are averaged within each task).",
        f"At the end of the window it returned {stats.fmt(imi['final']['value'])} against the "
        f"DQN's {stats.fmt(dqn['final']['value'])} (final ratio {fin_r}); in the window's first "
        f"bin (episodes ending {_first_bin(first_step, test['window'][0])}) it returned "
        f"{stats.fmt(imi['initial']['value'])}.",
        *_steps_sentences(_est(vs["imitator"]["steps_to_80_ratio"]),
                          f" (counted from env step {test['steps_counted_from']})"
                          if test.get("steps_counted_from") else "", test.get("seeds")),
    ]
    ctrl_bits = [f"{agent_label(key, test, c)} {stats.fmt(agents[c]['auc']['value'])}"
                 for c in CONTROLS if c in agents]
    if ctrl_bits:
        says.append("Mean returns of the controls over the same steps: " + ", ".join(ctrl_bits)
                    + ".")
    says += _control_sentences(key, test)
    return ["**What the numbers show.** " + " ".join(says),
            "**What they do not show.** " + " ".join(_caveats(key, test, results, kind))]


def _caveats(key: str, test: dict[str, Any], results: dict[str, Any],
             kind: str | None) -> list[str]:
    """The limits of one test's numbers, as sentences."""
    n_seeds, tasks = test["seeds"].get("imitator", 0), test["tasks"]
    caveats = []
    if provisional(test, results):
        caveats.append(f"This is a small run ({_count(n_seeds, 'imitator seed')} x "
                       f"{_units(tasks, kind)}; the claim calls for at least {PLANNED_SEEDS} x "
                       f"{planned_tasks(test, results)}): intervals from so few seeds and tasks "
                       f"are rough and the verdict is provisional.")
    if tasks < stats.MIN_TASKS:
        caveats.append(f"With fewer than {_units(stats.MIN_TASKS, kind)} no "
                       f"interval is given (a bootstrap over so few misses the truth far more "
                       f"often than it says), so every criterion reads unclear and the verdict "
                       f"is at best inconclusive.")
    if n_seeds == 1:
        caveats.append("With one imitator seed the interval covers task and DQN seed variation "
                       "only, not variation between imitator training runs.")
    caveats += _seed_spread(test, n_seeds)
    caveats.append("The intervals do not cover variation between teacher runs (one set of DQN "
                   "histories trained every imitator here).")
    if results.get("mode") == "greedy":
        caveats.append("The imitator acted greedily while the DQN's curves include its "
                       "epsilon-greedy exploration, which favours the imitator.")
    caveats += _beyond_histories(key, test, results)
    if key == "a":
        caveats.append(f"Keeping up with the DQN (at least {MATCH_LEVEL} of its area and final "
                       "return) does not show that the imitator learns the way the DQN does "
                       "internally, nor that it follows the DQN's curve step for step: the "
                       "criterion is one-sided, so an imitator ahead of the DQN passes too.")
    if key == "b":
        caveats.append(f"H = {test.get('markers', {}).get('horizon')} env steps; the result can "
                       "depend on where H falls on the DQN's learning curve.")
    caveats += _precondition_caveats(key, test)
    if full_history_controls(key, test):
        caveats.append("The ED and context-ablated controls of this test were trained on the "
                       "full histories, not the first H steps, so they are not comparable with "
                       "the H-imitator (set eval.horizon_controls=true to train them on the "
                       "first H steps).")
    if key == "c":
        caveats.append("One target family only; transfer to other families is untested.")
    return caveats


def _seed_spread(test: dict[str, Any], n_seeds: int) -> list[str]:
    """Each imitator seed's AUC ratio, and why an interval over few seeds needs them beside it."""
    ratios = (test.get("auc_ratio_per_seed") or {}).get("imitator")
    if n_seeds < 2 or not ratios:
        return []
    out = [f"The imitator seeds one by one (AUC / the DQN's): "
           f"{', '.join(_num(r) for r in ratios)}."]
    if n_seeds < 10:
        sim = SEED_COVERAGE.get(n_seeds)
        measured = (f"in simulation, {n_seeds} seeds whose differences dominate: {sim}% coverage"
                    if sim else "in simulation, seeds whose differences dominate: " + ", ".join(
                        f"{c}% coverage with {n}" for n, c in SEED_COVERAGE.items()))
        out.append(f"A bootstrap over {n_seeds} seeds gives too narrow an interval when they "
                   f"differ much ({measured} for a 95% interval), so read the interval beside "
                   f"that spread.")
    return out


def _beyond_histories(key: str, test: dict[str, Any], results: dict[str, Any]) -> list[str]:
    """Test (a) run past the length of the teacher's histories: say so (its end compares the
    imitator with the DQN at steps no history held)."""
    history = ((results.get("config") or {}).get("teacher") or {}).get("total_env_steps")
    if key != "a" or not history or test["window"][1] <= history:
        return []
    return [f"The DQN histories the imitator learned from hold {history} env steps per learner; "
            f"from there to {test['window'][1]} (the final return included) the imitator acts "
            f"beyond any history, against a DQN that goes on learning."]


def _precondition_caveats(key: str, test: dict[str, Any]) -> list[str]:
    """A sentence for each precondition that does not clearly hold: the DQN learning over the
    window in tests (a) and (c); in test (b), the DQN learning before H and the H-imitator
    matching it there."""
    checks = preconditions(key, test)
    if key != "b" and checks and checks[0][1] is not True:
        return [f"The DQN did not clearly learn over this window ({checks[0][2]}): there is no "
                f"clear learning to reproduce, so a shortfall says little about the imitator."]
    if len(checks) != 2:
        return []
    (_, learns, learn_evidence), (_, matches, match_evidence) = checks
    out = []
    if learns is not True:
        out.append(f"The DQN did not clearly learn before H ({learn_evidence}): the "
                   "H-imitator's histories hold little or no learning, "
                   "so a flat curve after H is expected whether or not it could extrapolate; "
                   "choose a larger H.")
    if matches is not True:
        out.append(f"Before H, over the steps its histories covered, the imitator "
                   f"{'fell short of' if matches is False else 'did not clearly match'} the DQN "
                   f"({match_evidence}), so a shortfall after H measures how well it imitated the "
                   "first H steps as much as whether it extrapolates; a clean test needs an "
                   "H-imitator that matches the DQN up to H (more histories before H, or a "
                   "larger model or H).")
    return out


def _check_lines(key: str, test: dict[str, Any]) -> list[str]:
    """The preconditions (if any) and criteria of one test as markdown bullet lists."""
    lines = []
    for heading, checks in (("Preconditions", preconditions(key, test)),
                            ("Criteria", criteria(key, test))):
        marks = [f"- {name}: **{CHECK_MARKS[ok]}** ({evidence})" for name, ok, evidence in checks]
        lines += ["", f"{heading}:", "", *marks] if checks else []
    return lines


def verdict_label(verdict_: str, provisional_: bool | None, imitator_seeds: int | None,
                  tasks: int | None) -> str:
    """A verdict as the report and the comparison print it: a provisional one with its scale,
    e.g. "supported (provisional: 1 seed x 17 tasks)"."""
    if not provisional_:
        return verdict_
    return f"{verdict_} (provisional: {_count(imitator_seeds, 'seed')} x {_count(tasks, 'task')})"


def markdown(results: dict[str, Any]) -> str:
    conf = int(round(100 * setting(results, "confidence")))
    lines = [
        f"# climit report: {results.get('env')} (transfer: {results.get('transfer') or 'none'})",
        "",
        "Can a transformer trained by imitation on a DQN's learning histories, then frozen, "
        f"reproduce the DQN's learning with its activations alone? {_heldout_sentence(results)} "
        f"Intervals are {conf}% bootstrap intervals resampling the imitators' training seeds and "
        "the evaluation tasks (crossed); the DQN and the random policy, whose learners are "
        "independent on every task, are resampled by task. Ratios are bootstrapped as ratios "
        "and comparisons as paired differences (\"beats\", \"improves\"), with tasks paired.",
        "",
        f"Imitator action mode: {results.get('mode')}; its context holds "
        f"{results.get('context_steps')} env steps and slides beyond that. "
        "AUC = mean return over the window's env steps; initial = the window's first point (the "
        "episodes that ended by then); final = mean over its last "
        f"{int(round(100 * setting(results, 'final_frac')))}%; gain = final - initial; "
        "steps-to-80% ratio > 1 means slower than the DQN ('never': not reached)."
        + _ablation_sentence(results),
        "",
        *_subsample_lines(results),
    ]
    for key in TESTS:
        lines += _test_section(key, results)
    lines += imitator_section(results.get("imitators", {}))
    return "\n".join(lines)


def _ablation_sentence(results: dict[str, Any]) -> str:
    """' The context-ablated control ...' for the evaluation's eval.ablation ('' for results
    written before it was recorded)."""
    kind = results.get("ablation")
    if kind not in ABLATIONS:
        return ""
    return f" The context-ablated imitator (eval.ablation: {kind}) {ABLATIONS[kind]}."


def _heldout_sentence(results: dict[str, Any]) -> str:
    """Which evaluation units no training used: held-out tasks, or (a single-task game such as
    MinAtar, whose tests run on the training game itself) environment seeds only."""
    if _task_kind(results["tests"].get("a") or {}, results) == "seed":
        return ("Each test below runs on environment seeds no training used; the training game "
                "has no tasks to hold out, so test (a) plays the game the imitator was trained on.")
    return "Each test below runs on held-out tasks and environment seeds no training used."


def _subsample_lines(results: dict[str, Any]) -> list[str]:
    """What ``imitator.subsample`` k does to the env-step axis, when k > 1."""
    k = ((results.get("config") or {}).get("imitator") or {}).get("subsample", 1)
    if not isinstance(k, int) or k <= 1:
        return []
    # Runs before ED kept every episode record no ED subsample: nothing is said of ED there.
    ed_subsample = ((results.get("imitators") or {}).get("ed") or {}).get("subsample")
    ed = (" (ED learns from every episode of the DQN's last part: expert data has no progress "
          "to compress)" if ed_subsample == 1 else "")
    return [f"The imitators' training histories kept 1 episode in {k} of each DQN's{ed}, so one "
            f"episode of the imitator stands for {k} of the DQN's: an imitator that replays the "
            f"progress of its histories runs about {k} times ahead of the DQN in env steps. In "
            f"test (b) the H-imitator's histories (the DQN's first H steps) are used up after "
            f"about H/{k} of its own steps, so everything after that, not only after H, is "
            f"extrapolation.", ""]


def _test_section(key: str, results: dict[str, Any]) -> list[str]:
    """report.md's lines for one test: verdict, table of agents, checks, reading, plot."""
    title, question = TESTS[key]
    test = results["tests"].get(key)
    lines = [f"## ({key}) {title}", "", question, ""]
    if test is None:
        reason = results.get("skipped", {}).get(key, "not run")
        return lines + [f"Not run: {reason}.", ""]
    v = verdict_label(verdict(key, test), provisional(test, results),
                      test["seeds"].get("imitator", 0), test["tasks"])
    lines += [f"**Verdict: {v}.** Metrics over the episodes that ended in env steps {_span(test)}.",
              "", *_agent_table(key, test, test)]
    lines += _check_lines(key, test)
    return lines + ["", *[p + "\n" for p in reading(key, test, results)],
                    f"![test {key}](test_{key}.png)", ""]


def _agent_table(key: str, test: dict[str, Any], entry: dict[str, Any]) -> list[str]:
    """The table of every agent of ``entry`` (a test's statistics, over its window or another):
    AUC, initial and final return, and the ratios to the DQN; ``test`` names the agents."""
    head = ["| agent | AUC | initial | final | AUC / DQN | final / DQN | steps-to-80% / DQN |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    return head + [_row(f"{agent_label(key, test, a)} ({_count(entry['seeds'].get(a, 0), 'seed')})",
                        entry["agents"][a], entry["vs_dqn"].get(a))
                   for a in AGENTS if a in entry["agents"]]


def imitator_section(imitators: dict[str, dict]) -> list[str]:
    """The imitators' offline facts: held-out next-action loss and accuracy, and accuracy
    against the position in the training sequence (how much the context helps)."""
    if not imitators:
        return []
    lines = ["## The imitators offline", "",
             "Next-action prediction on histories of tasks of the training family that were held "
             "out of training, measured while training. A token at sequence position p sees min(p "
             "+ 1, n_layers × (context − 1) + 1) steps of its learner's history (each layer "
             "reaches context − 1 back), so accuracy that climbs along the positions is what the "
             "context buys (inferring the task from earlier rewards); a flat profile means "
             "predictions from the current step alone. Predicting the teacher well offline is "
             "necessary for in-context learning, not sufficient: the rollouts above test the "
             "imitator on its own trajectories.", "",
             "| imitator | learned from (per history) | seeds | steps | held-out loss | "
             "accuracy (chance) | accuracy by position |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for role, f in imitators.items():
        profile = f.get("heldout_accuracy_by_position")
        bins = f.get("position_bins")
        shape = (f"{stats.fmt(profile[0])} (positions {bins[0]}-{bins[1] - 1}) → "
                 f"{stats.fmt(profile[-1])} ({bins[-2]}-{bins[-1] - 1})" if profile and bins
                 else "n/a")
        lines.append(f"| {ROLE_LABELS.get(role, role)} | {f.get('data', f.get('tag', '?'))} | "
                     f"{f.get('seeds', '?')} "
                     f"| {f.get('final_step', '?')} | {_num(f.get('heldout_loss'))} | "
                     f"{_num(f.get('heldout_action_accuracy'))} "
                     f"({_num(f.get('chance_accuracy'))}) | {shape} |")
    return lines + [""]


def _num(v: Any) -> str:
    """A summary.json number for a terminal line (null -> n/a, "inf" -> inf).

    Not "never": the headline prints AUC and final ratios, where inf is a ratio, not a step
    count that was never reached."""
    return stats.fmt(float(v)) if v is not None else "n/a"


def headline(summary_: dict[str, Any]) -> list[str]:
    """One line per test that ran: verdict and the imitator/DQN ratios with intervals."""
    lines = []
    for key, t in summary_.get("tests", {}).items():
        if not t["ran"]:
            continue
        parts = []
        for r in ("auc", "final"):
            lo, hi = t[f"imitator_dqn_{r}_ratio_ci"]
            parts.append(f"{r} ratio {_num(t[f'imitator_dqn_{r}_ratio'])} [{_num(lo)}, {_num(hi)}]")
        verdict_ = verdict_label(t["verdict"], t.get("provisional"), t.get("imitator_seeds"),
                                 t.get("tasks"))
        lines.append(f"test ({key}) {TESTS[key][0]}: {verdict_}; imitator/DQN " + ", ".join(parts))
    return lines


def summarize(results: dict[str, Any], curves: dict[str, np.ndarray], key: str,
              window: tuple[float, float], agents: tuple[str, ...] = tuple(AGENTS)) -> dict:
    """:func:`stats.summarize_test` of test ``key``'s ``agents`` over ``window`` with the
    evaluation's settings; test i of "abc" bootstraps with seed ``run.seed + i``."""
    seed = int(results.get("config", {}).get("run", {}).get("seed", 0)) + list(TESTS).index(key)
    return stats.summarize_test({a: curves[f"{key}.{a}"] for a in agents if f"{key}.{a}" in curves},
                                curves[f"{key}.grid"], window=window,
                                n_boot=int(setting(results, "bootstrap")),
                                confidence=float(setting(results, "confidence")), seed=seed,
                                final_frac=float(setting(results, "final_frac")))


def with_statistics(results: dict[str, Any], curves: dict[str, np.ndarray]) -> dict[str, Any]:
    """``results`` whose tests carry their statistics computed afresh from ``curves`` (what
    :func:`stats.summarize_test` gives, over (H, end] for test (b), and ``before_h``, its
    imitator and DQN over the steps up to H); each test's other entries (env, markers, ...)
    are kept. The evaluation writes results through this, and the report recomputes with it,
    so a report reflects the statistics of the code that builds it."""
    tests = {}
    for key, test in results["tests"].items():
        if test is None:
            tests[key] = None
            continue
        horizon = results.get("horizon") if key == "b" else None
        window = (-math.inf if horizon is None else horizon, math.inf)
        entry = {**test, **summarize(results, curves, key, window)}
        entry.pop("before_h", None)
        if horizon is not None and curves[f"{key}.grid"][0] <= horizon:
            entry["before_h"] = summarize(results, curves, key, (-math.inf, horizon),
                                          ("imitator", "dqn"))
        tests[key] = entry
    return {**results, "tests": tests}


def window_stats(results: dict[str, Any], curves: dict[str, np.ndarray],
                 window: tuple[float, float]) -> dict[str, dict[str, Any]]:
    """Every test's statistics recomputed over the env steps in ``(window[0], window[1]]``
    instead of its own window (e.g. test (a) over the first 30k steps), with the evaluation's
    bootstrap settings and seeds: {test key: :func:`stats.summarize_test`'s dict}. Tests whose
    grid has no point in the window are left out."""
    out = {}
    for key in TESTS:
        test = results["tests"].get(key)
        grid_P = curves.get(f"{key}.grid")
        if test is None or grid_P is None or not ((grid_P > window[0])
                                                  & (grid_P <= window[1])).any():
            continue
        out[key] = summarize(results, curves, key, window)
    return out


def window_markdown(results: dict[str, Any], curves: dict[str, np.ndarray],
                    window: tuple[float, float]) -> str:
    """The tables of :func:`window_stats`, one per test, as report.md writes its own."""
    conf = int(round(100 * setting(results, "confidence")))
    lines = [f"Over env steps ({window[0]:g}, {window[1]:g}] only ({conf}% bootstrap intervals, "
             "as in the report):", ""]
    for key, entry in window_stats(results, curves, window).items():
        lines += [f"## ({key}) {TESTS[key][0]}: env steps {_span(entry)}",
                  "", *_agent_table(key, results["tests"][key], entry), ""]
    return "\n".join(lines)


def build(run_dir: str | Path) -> Path:
    """Write ``RUN_DIR/report/{report.md, test_*.png, summary.json}``; returns the report dir."""
    run_dir = Path(run_dir)
    results, curves = load_eval(run_dir)
    results = with_statistics(results, curves)
    out = run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    n_boot = int(setting(results, "bootstrap"))
    conf = float(setting(results, "confidence"))
    for key, test in results["tests"].items():
        if test is not None:
            plot_test(key, test, curves, out / f"test_{key}.png", confidence=conf, n_boot=n_boot)
    jsonfile.write_atomic(out / "report.md", markdown(results).encode())
    jsonfile.write_atomic(out / "summary.json",
                  json.dumps(summary(results), indent=1, allow_nan=False).encode())
    return out
