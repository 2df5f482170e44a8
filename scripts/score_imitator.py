"""Score an imitator trained outside an evaluated run in that run's test (a) or (b): same
held-out tasks, environment keys, action mode, DQN curve and bootstrap as the run's own.

Two uses, both documented in the README ("In-context learning on 2 CPU cores"):

- Test (b) with more histories before H. The H-imitator of a `climit run` sees only the first
  H steps of the run's own histories; to ask whether test (b) fails for lack of data before H,
  train an imitator on a teacher run that *ends* at H with more DQN seeds per task:

    climit teach   --config configs/darkroom_cpu.yaml run.name=hb16 \\
        teacher.seeds=16 teacher.total_env_steps=8000
    climit imitate --config configs/darkroom_cpu.yaml run.name=hb16 \\
        teacher.seeds=16 teacher.total_env_steps=8000
    python scripts/score_imitator.py runs/darkroom_cpu runs/hb16/imitator/ad --test b

- Test (a) with more imitator seeds, trained on the run's own histories (a run directory whose
  teacher/ is the evaluated run's, e.g. a symbolic link, so the histories are not made again):

    mkdir -p runs/dcpu_s3 && ln -s ../darkroom_cpu/teacher runs/dcpu_s3/teacher
    climit imitate --config configs/darkroom_cpu.yaml run.name=dcpu_s3 imitator.seeds=3
    python scripts/score_imitator.py runs/darkroom_cpu runs/dcpu_s3/imitator/ad --test a

It rolls the imitator out with the evaluation's own code and prints one JSON line per
(imitator, window): the run's own imitator of that test and the given one, with the AUC and
final ratios against the run's DQN and their intervals (imitator seeds x tasks; the DQN's
learners are averaged within each task).
Test (a) has one window (all its env steps), test (b) two (up to H and after H).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from climit import config as config_lib
from climit import evaluate as ev
from climit import report
from climit.imitator import train as imitator_train


def windows(test: str, horizon: int) -> list[tuple[str, tuple[float, float]]]:
    if test == "a":
        return [("all", (-math.inf, math.inf))]
    return [("up to H", (-math.inf, horizon)), ("after H", (horizon, math.inf))]


def _r(x: float | str | None) -> float | str | None:
    """A number of results.json's kind rounded for the JSON line: null (undefined, the report's
    n/a: too few tasks, too many undefined replicates, a ratio of two returns at or below zero)
    and "inf"/"-inf" (a positive return against one at or below zero) stay as they are."""
    return x if x is None or isinstance(x, str) else round(x, 3)


def line(name: str, label: str, test: dict) -> dict:
    """One JSON line: the imitator's AUC and final return, the DQN's, and the ratios."""
    agents, vs = test["agents"], test["vs_dqn"]["imitator"]
    out = {"imitator": name, "window": label, "steps": test["window"],
           "imitator_seeds": test["seeds"]["imitator"], "tasks": test["tasks"]}
    for m in ("auc", "final"):
        out[f"imitator_{m}"] = _r(agents["imitator"][m]["value"])
        out[f"dqn_{m}"] = _r(agents["dqn"][m]["value"])
        out[f"{m}_ratio"] = _r(vs[f"{m}_ratio"]["value"])
        out[f"{m}_ratio_ci"] = [_r(vs[f"{m}_ratio"]["lo"]), _r(vs[f"{m}_ratio"]["hi"])]
    return out


def score(results: dict, curves: dict, test: str, candidates: dict) -> list[dict]:
    """One :func:`line` per (candidate, window) of ``test``: each candidate's curves [S, K, P]
    in place of the run's imitator, with the report's own statistics (bootstrap seed and
    resamples, confidence, final fraction), so the run's own imitator scores as in its report."""
    out = []
    for name, curve_SxKxP in candidates.items():
        with_curve = {**curves, f"{test}.imitator": curve_SxKxP}
        for label, window in windows(test, results["horizon"]):
            summary = report.summarize(results, with_curve, test, window, ("imitator", "dqn"))
            out.append(line(name, label, summary))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="an evaluated climit run (has eval/)")
    parser.add_argument("imitator_dir", type=Path,
                        help="the imitator to score: runs/NAME/imitator/TAG")
    parser.add_argument("--test", choices=("a", "b"), default="b",
                        help="the run's test to score it in (default: b, as the script first did)")
    args = parser.parse_args()
    results, curves = report.load_eval(args.run_dir)
    cfg = config_lib.from_dict(results["config"])  # the config the evaluation ran with
    grid_P = curves[f"{args.test}.grid"]

    env, tasks, ks = ev.heldout_family(cfg)  # the evaluated run's tasks and env seeds
    if tasks.tolist() != results["tasks"]["a"]:
        raise SystemExit(f"{args.run_dir}'s tasks differ from its config's: was it re-evaluated?")
    loaded = imitator_train.load(args.imitator_dir, "best")
    signals = ev.imitator_steps(loaded, env, tasks, ks.env, int(grid_P[-1]), cfg,
                                str(args.imitator_dir), progress=False)
    candidates = {f"run's imitator of test ({args.test})": curves[f"{args.test}.imitator"],
                  str(args.imitator_dir): ev.curves_from_steps(*signals, grid_P)}
    for out in score(results, curves, args.test, candidates):
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
