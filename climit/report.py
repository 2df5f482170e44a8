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
"horizon_factor", "mode", "confidence", "bootstrap", "final_frac", "config", "tests": {KEY:
stats.summarize_test(...) + {"env", "markers": {"context", "horizon"}}}, "imitators": {ROLE:
what its training measured offline}}``, and ``curves.npz``
holds ``KEY.grid`` [P] (env steps) and ``KEY.AGENT`` [S, K, P] for each test KEY and agent.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from climit import stats
from climit.errors import ArtifactError

RESULTS_FORMAT = 1
TESTS: dict[str, tuple[str, str]] = {
    "a": ("skill match", "From an empty context on held-out tasks, does the frozen imitator's "
          "return track the DQN's learning curve, env step for env step?"),
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
COLORS = {"imitator": "tab:blue", "ed": "tab:orange", "ablated": "tab:purple",
          "random": "tab:gray", "dqn": "tab:green"}
MATCH_LEVEL = 0.8  # "tracks the DQN": ratio interval at or above 0.8
CHECK_MARKS = {True: "yes", False: "no", None: "unclear"}
PLANNED_SEEDS, PLANNED_TASKS = 5, 20  # the scale the claim calls for (issue 5)


# ---------------------------------------------------------------------------------------------
# Artifacts
# ---------------------------------------------------------------------------------------------

def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_eval(eval_dir: str | Path, results: dict[str, Any], curves: dict[str, np.ndarray]) -> None:
    """Write ``curves.npz`` then ``results.json`` (the latter last: its presence marks completion)."""
    eval_dir = Path(eval_dir)
    eval_dir.mkdir(parents=True, exist_ok=True)
    tmp = eval_dir / "curves.tmp.npz"
    np.savez_compressed(tmp, **{k: np.asarray(v) for k, v in curves.items()})
    os.replace(tmp, eval_dir / "curves.npz")
    results = {"format": RESULTS_FORMAT, **results}
    _atomic_write(eval_dir / "results.json",
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
    except json.JSONDecodeError as e:
        raise ArtifactError(f"{res_path} is not valid JSON: {e}") from None
    if results.get("format") != RESULTS_FORMAT or "tests" not in results:
        raise ArtifactError(f"{res_path} is not a climit results file of format {RESULTS_FORMAT}")
    try:
        with np.load(curves_path) as z:
            curves = {k: z[k] for k in z.files}
    except Exception as e:  # zipfile/zlib/ValueError: any damage is reported the same way
        raise ArtifactError(f"{curves_path} is damaged: {e}") from None
    for key in results["tests"]:
        if f"{key}.grid" not in curves:
            raise ArtifactError(f"{curves_path} lacks the curves of test {key}")
    return results, curves


# ---------------------------------------------------------------------------------------------
# Verdicts
# ---------------------------------------------------------------------------------------------

def _est(d: dict[str, Any]) -> stats.Estimate:
    return stats.estimate_from_dict(d)


def _above(a: stats.Estimate, b: stats.Estimate) -> bool | None:
    """True: a's interval lies above b's; False: a's point is not above b's; None: unclear."""
    if a.lo > b.hi:
        return True
    if a.value <= b.value:
        return False
    return None


def _matches(*ratios: stats.Estimate) -> bool | None:
    """Imitator/DQN ratios at MATCH_LEVEL or above: True if every interval lies there; False if
    every interval lies below it or the first ratio's point does; else None (unclear)."""
    if min(r.lo for r in ratios) >= MATCH_LEVEL:
        return True
    if max(r.hi for r in ratios) < MATCH_LEVEL or ratios[0].value < MATCH_LEVEL:
        return False
    return None


def criteria(key: str, test: dict[str, Any]) -> list[tuple[str, bool | None, str]]:
    """The checks behind a verdict: ``(name, passed True/False/None=unclear, evidence)``."""
    agents, vs = test["agents"], test["vs_dqn"]
    out = []
    auc_r, fin_r = _est(vs["imitator"]["auc_ratio"]), _est(vs["imitator"]["final_ratio"])
    out.append((f"matches the DQN (AUC and final ratios >= {MATCH_LEVEL})", _matches(auc_r, fin_r),
                f"AUC ratio {auc_r}, final ratio {fin_r} (upper ends up to "
                f"{stats.fmt(max(auc_r.hi, fin_r.hi))})"))
    imi_init, imi_fin = _est(agents["imitator"]["initial"]), _est(agents["imitator"]["final"])
    dqn_init, dqn_fin = _est(agents["dqn"]["initial"]), _est(agents["dqn"]["final"])
    name = "improves in context (final above initial return)"
    if key == "b" and _above(dqn_fin, dqn_init) is not True:
        out.append((name, None, f"not testable here: the DQN itself does not clearly improve "
                    f"in this window (initial {dqn_init}, final {dqn_fin}); choose a smaller H"))
    else:
        out.append((name, _above(imi_fin, imi_init), f"initial {imi_init} -> final {imi_fin}"))
    imi_auc = _est(agents["imitator"]["auc"])
    for ctrl in ("ablated", "random"):
        if ctrl in agents:
            c_auc = _est(agents[ctrl]["auc"])
            out.append((f"beats the {AGENTS[ctrl]} (AUC)", _above(imi_auc, c_auc),
                        f"imitator {imi_auc} vs {c_auc}"))
    return out


def preconditions(key: str, test: dict[str, Any]) -> list[tuple[str, bool | None, str]]:
    """What a failed criterion needs to mean what it says, as ``(name, passed, evidence)``.

    Test (b), over the steps up to H, which the H-imitator's histories covered (``before_h``):
    the DQN must learn there (else those histories hold no learning to extrapolate), and the
    H-imitator must match it there (else a shortfall after H measures how well it imitated the
    first H steps, not whether it extrapolates beyond them).
    """
    before = test.get("before_h") if key == "b" else None
    if not before:
        return []
    agents = before["agents"]
    dqn_init, dqn_fin = _est(agents["dqn"]["initial"]), _est(agents["dqn"]["final"])
    ratio = _est(before["vs_dqn"]["imitator"]["auc_ratio"])
    imi, dqn = _est(agents["imitator"]["auc"]), _est(agents["dqn"]["auc"])
    lo_step, hi_step = before["window"]
    # Learning must be clear (intervals apart): without it test (b) has nothing to extrapolate.
    return [(f"the DQN clearly learns before H (env steps {lo_step}-{hi_step}: final above initial "
             f"return), so the H-imitator's histories hold learning",
             _above(dqn_fin, dqn_init) is True, f"DQN initial {dqn_init} -> final {dqn_fin}"),
            (f"matches the DQN before H, where its histories reached (AUC ratio over env steps "
             f"{lo_step}-{hi_step} >= {MATCH_LEVEL})", _matches(ratio),
             f"AUC ratio {ratio}: imitator {imi} vs DQN {dqn}")]


def verdict(key: str, test: dict[str, Any]) -> str:
    """'supported' if every criterion holds; 'not supported' if one fails and no precondition
    does (one that is unclear does not void a failure); else 'inconclusive'."""
    results = [c[1] for c in criteria(key, test)]
    if any(r is False for r in results):
        voided = any(p[1] is False for p in preconditions(key, test))
        return "inconclusive" if voided else "not supported"
    return "supported" if all(r is True for r in results) else "inconclusive"


# ---------------------------------------------------------------------------------------------
# summary.json
# ---------------------------------------------------------------------------------------------

SUMMARY_RATIOS = ("auc_ratio", "final_ratio", "steps_to_80_ratio")


def _ci(d: dict[str, Any]) -> list[Any]:
    return [d["lo"], d["hi"]]


def summary(results: dict[str, Any]) -> dict[str, Any]:
    """Headline numbers under stable keys. For each test KEY in a, b, c: ``tests.KEY`` holds
    ``ran``, ``verdict``, ``imitator_dqn_{auc,final,steps_to_80}_ratio`` (point) and ``..._ci``
    ([lo, hi]), ``imitator_auc``, ``imitator_final``, ``dqn_auc``, ``dqn_final`` and
    ``controls.{ed,ablated,random}`` each with ``auc``, ``final``, ``dqn_auc_ratio``(+``_ci``),
    ``dqn_final_ratio``(+``_ci``), and ``imitator_dqn_auc_ratio_before_h``(+``_ci``): test (b)'s
    AUC ratio over the steps up to H (null for a and c). A test that did not run has every
    number null. Values: float, null (undefined) or "inf" (never reached)."""
    out: dict[str, Any] = {"format": 1, "fingerprint": results.get("fingerprint"),
                           "env": results.get("env"),
                           "transfer": results.get("transfer"),
                           "confidence": results.get("confidence"), "tests": {}}
    for key in TESTS:
        test = results["tests"].get(key)
        entry: dict[str, Any] = {"ran": test is not None,
                                 "verdict": verdict(key, test) if test else None}
        vs = test["vs_dqn"] if test else {}
        agents = test["agents"] if test else {}
        for r in SUMMARY_RATIOS:
            d = vs.get("imitator", {}).get(r)
            entry[f"imitator_dqn_{r}"] = d["value"] if d else None
            entry[f"imitator_dqn_{r}_ci"] = _ci(d) if d else [None, None]
        for who in ("imitator", "dqn"):
            for m in ("auc", "final"):
                d = agents.get(who, {}).get(m)
                entry[f"{who}_{m}"] = d["value"] if d else None
        controls = {}
        for ctrl in ("ed", "ablated", "random"):
            a, v = agents.get(ctrl), vs.get(ctrl)
            controls[ctrl] = {
                "auc": a["auc"]["value"] if a else None,
                "final": a["final"]["value"] if a else None,
                "dqn_auc_ratio": v["auc_ratio"]["value"] if v else None,
                "dqn_auc_ratio_ci": _ci(v["auc_ratio"]) if v else [None, None],
                "dqn_final_ratio": v["final_ratio"]["value"] if v else None,
                "dqn_final_ratio_ci": _ci(v["final_ratio"]) if v else [None, None],
            }
        entry["controls"] = controls
        before = (test or {}).get("before_h")
        d = before["vs_dqn"]["imitator"]["auc_ratio"] if before else None
        entry["imitator_dqn_auc_ratio_before_h"] = d["value"] if d else None
        entry["imitator_dqn_auc_ratio_before_h_ci"] = _ci(d) if d else [None, None]
        out["tests"][key] = entry
    return out


# ---------------------------------------------------------------------------------------------
# Plots
# ---------------------------------------------------------------------------------------------

def plot_test(key: str, test: dict[str, Any], curves: dict[str, np.ndarray], path: Path, *,
              confidence: float, n_boot: int) -> None:
    """Return vs env steps for every agent of one test, with shaded intervals and markers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = curves[f"{key}.grid"]
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    for agent, label in AGENTS.items():
        c = curves.get(f"{key}.{agent}")
        if c is None:
            continue
        mean, lo, hi = stats.curve_band(c, n_boot=n_boot, confidence=confidence)
        size = f"{_count(c.shape[0], 'seed')} x {_count(c.shape[1], 'task')}"
        ax.plot(grid, mean, color=COLORS[agent], label=f"{label} ({size})",
                lw=2 if agent in ("imitator", "dqn") else 1.3)
        ax.fill_between(grid, lo, hi, color=COLORS[agent], alpha=0.18, lw=0)
    markers = test.get("markers", {})
    if test["window"][0] > grid[0]:  # test (b): shade the steps the metrics use
        ax.axvspan(test["window"][0], test["window"][1], color="tab:red", alpha=0.05, lw=0)
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
    fig.savefig(path)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------
# Markdown
# ---------------------------------------------------------------------------------------------

def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


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


def reading(key: str, test: dict[str, Any], results: dict[str, Any]) -> list[str]:
    """Plain-language sentences: what the numbers show, then what they do not."""
    agents, vs = test["agents"], test["vs_dqn"]
    conf = int(round(100 * results.get("confidence", 0.95)))
    lo_step, hi_step = test["window"]
    auc_r, fin_r = _est(vs["imitator"]["auc_ratio"]), _est(vs["imitator"]["final_ratio"])
    steps_r = _est(vs["imitator"]["steps_to_80_ratio"])
    imi, dqn = agents["imitator"], agents["dqn"]
    seeds, tasks = test["seeds"], test["tasks"]
    says = [
        f"Between env steps {lo_step} and {hi_step} on {tasks} held-out task(s) of "
        f"{test.get('env', '?')}, the imitator's mean return was {stats.fmt(imi['auc']['value'])} "
        f"against the DQN's {stats.fmt(dqn['auc']['value'])}: an area ratio of {auc_r} "
        f"({conf}% interval over imitator seeds and tasks).",
        f"At the end of the window it returned {stats.fmt(imi['final']['value'])} against the "
        f"DQN's {stats.fmt(dqn['final']['value'])} (final ratio {fin_r}); it started at "
        f"{stats.fmt(imi['initial']['value'])}.",
    ]
    if math.isinf(steps_r.value):
        says.append("It never reached 80% of the DQN's final return within the window.")
    elif not math.isnan(steps_r.value):
        says.append(f"It took {stats.fmt(steps_r.value)}x the DQN's env steps to reach 80% of the "
                    f"DQN's final return (interval {_fmt_est(steps_r)}).")
    ctrl_bits = [f"{AGENTS[c]} {stats.fmt(agents[c]['auc']['value'])}" for c in ("ed", "ablated", "random")
                 if c in agents]
    if ctrl_bits:
        says.append("Mean returns of the controls over the same steps: " + ", ".join(ctrl_bits) + ".")
    if "ed" in agents and _above(_est(imi["auc"]), _est(agents["ed"]["auc"])):
        says.append("The imitator clearly beats expert distillation, so its return comes from "
                    "learning in context, not from replaying a final policy.")
    caveats = []
    n_seeds = seeds.get("imitator", 0)
    if n_seeds < PLANNED_SEEDS or tasks < PLANNED_TASKS:
        caveats.append(f"This is a small run ({n_seeds} imitator seed(s) x {tasks} task(s); the "
                       f"claim calls for at least {PLANNED_SEEDS} x {PLANNED_TASKS}): intervals from "
                       f"so few seeds and tasks are rough and the verdict is provisional.")
    if n_seeds == 1:
        caveats.append("With one imitator seed the interval covers task variation only, not "
                       "variation between imitator training runs.")
    caveats.append("The intervals do not cover variation between teacher runs (one set of DQN "
                   "histories trained every imitator here).")
    if key == "a":
        caveats.append("Matching the curve does not show that the imitator learns the way the DQN "
                       "does internally, only that its behaviour improves at a similar rate.")
    if key == "b":
        caveats.append(f"H = {test.get('markers', {}).get('horizon')} env steps; the result can "
                       "depend on where H falls on the DQN's learning curve.")
        caveats += _precondition_caveats(key, test)
    if key == "c":
        caveats.append("One target family only; transfer to other families is untested.")
    return ["**What the numbers show.** " + " ".join(says),
            "**What they do not show.** " + " ".join(caveats)]


def _precondition_caveats(key: str, test: dict[str, Any]) -> list[str]:
    """A sentence for each precondition of test (b) that does not clearly hold."""
    checks = preconditions(key, test)
    if not checks:
        return []
    (_, learns, learn_evidence), (_, matches, match_evidence) = checks
    out = []
    if not learns:
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


def markdown(results: dict[str, Any]) -> str:
    conf = int(round(100 * results.get("confidence", 0.95)))
    lines = [
        f"# climit report: {results.get('env')} (transfer: {results.get('transfer') or 'none'})",
        "",
        "Can a transformer trained by imitation on a DQN's learning histories, then frozen, "
        "reproduce the DQN's learning with its activations alone? Each test below runs on "
        "held-out tasks and environment seeds no training used. Intervals are "
        f"{conf}% bootstrap intervals resampling imitator (or DQN) training seeds and evaluation "
        "tasks (crossed); ratios are bootstrapped as ratios with tasks paired.",
        "",
        f"Imitator action mode: {results.get('mode')}; its context holds "
        f"{results.get('context_steps')} env steps and slides beyond that. "
        "AUC = mean return over the window's env steps; initial/final = mean over its first/last "
        f"{int(round(100 * results.get('final_frac', 0.1)))}%; steps-to-80% ratio > 1 means slower "
        "than the DQN ('never': not reached).",
        "",
    ]
    for key, (title, question) in TESTS.items():
        test = results["tests"].get(key)
        lines += [f"## ({key}) {title}", "", question, ""]
        if test is None:
            reason = results.get("skipped", {}).get(key, "not run")
            lines += [f"Not run: {reason}.", ""]
            continue
        v = verdict(key, test)
        lines += [f"**Verdict: {v}.** Metrics over env steps {test['window'][0]}-{test['window'][1]}.",
                  "", "| agent | AUC | initial | final | AUC / DQN | final / DQN | steps-to-80% / DQN |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for agent, label in AGENTS.items():
            if agent in test["agents"]:
                n = test["seeds"].get(agent, 0)
                lines.append(_row(f"{label} ({_count(n, 'seed')})",
                                  test["agents"][agent], test["vs_dqn"].get(agent)))
        lines += _check_lines(key, test)
        lines += ["", *[p + "\n" for p in reading(key, test, results)],
                  f"![test {key}](test_{key}.png)", ""]
    lines += imitator_section(results.get("imitators", {}))
    return "\n".join(lines)


ROLE_LABELS = {**AGENTS, "imitator_h": "imitator (AD, first H steps)",
               "ed_h": "ED (first H steps)", "ablated_h": "context-ablated (first H steps)"}


def imitator_section(imitators: dict[str, dict]) -> list[str]:
    """The imitators' offline facts: held-out next-action loss and accuracy, and accuracy
    against the position in the training sequence (how much the context helps)."""
    if not imitators:
        return []
    lines = ["## The imitators offline", "",
             "Next-action prediction on histories of tasks of the training family that were held "
             "out of training, measured while training. A token at sequence position p sees min(p + 1, context) steps of its "
             "learner's history, so accuracy that climbs along the positions is what the context "
             "buys (inferring the task from earlier rewards); a flat profile means predictions "
             "from the current step alone. Predicting the teacher well offline is necessary for "
             "in-context learning, not sufficient: the rollouts above test the imitator on its "
             "own trajectories.", "",
             "| imitator | tag | seeds | steps | held-out loss | accuracy (chance) | "
             "accuracy by position |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for role, f in imitators.items():
        profile = f.get("heldout_accuracy_by_position")
        bins = f.get("position_bins")
        shape = (f"{stats.fmt(profile[0])} (positions {bins[0]}-{bins[1] - 1}) → "
                 f"{stats.fmt(profile[-1])} ({bins[-2]}-{bins[-1] - 1})" if profile and bins
                 else "n/a")
        lines.append(f"| {ROLE_LABELS.get(role, role)} | {f.get('tag', '?')} | {f.get('seeds', '?')} "
                     f"| {f.get('final_step', '?')} | {_num(f.get('heldout_loss'))} | "
                     f"{_num(f.get('heldout_action_accuracy'))} "
                     f"({_num(f.get('chance_accuracy'))}) | {shape} |")
    return lines + [""]


def _num(v: Any) -> str:
    """A summary.json number for a terminal line (null -> n/a, "inf" -> never)."""
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
        lines.append(f"test ({key}) {TESTS[key][0]}: {t['verdict']}; imitator/DQN " + ", ".join(parts))
    return lines


def build(run_dir: str | Path) -> Path:
    """Write ``RUN_DIR/report/{report.md, test_*.png, summary.json}``; returns the report dir."""
    run_dir = Path(run_dir)
    results, curves = load_eval(run_dir)
    out = run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    n_boot = int(results.get("bootstrap", 1000))
    conf = float(results.get("confidence", 0.95))
    for key, test in results["tests"].items():
        if test is not None:
            plot_test(key, test, curves, out / f"test_{key}.png", confidence=conf, n_boot=n_boot)
    _atomic_write(out / "report.md", markdown(results).encode())
    _atomic_write(out / "summary.json",
                  json.dumps(summary(results), indent=1, allow_nan=False).encode())
    return out
