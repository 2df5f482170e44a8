"""Test (b) with more histories before H: an H-imitator from another run, scored against an
evaluated run's DQN on the same held-out tasks, before and after H.

The H-imitator of a `climit run` sees only the first H steps of the run's own histories. To ask
whether test (b) fails for lack of data before H, train an imitator on a teacher run that *ends*
at H with more DQN seeds per task, then put it in the evaluated run's test (b):

    climit teach   --config configs/darkroom_cpu.yaml run.name=hb16 teacher.seeds=16 teacher.total_env_steps=8000
    climit imitate --config configs/darkroom_cpu.yaml run.name=hb16 teacher.seeds=16 teacher.total_env_steps=8000
    python scripts/horizon_more_data.py runs/darkroom_cpu runs/hb16/imitator/ad

It rolls the imitator out with the evaluation's own code (same tasks, environment keys and action
mode as the evaluated run's test (b)) and prints one JSON line per (imitator, window): the
evaluated run's own H-imitator and the new one, each over the steps up to H and after H, with
the AUC ratio against the run's DQN and its 95% interval (imitator seeds x tasks).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from climit import config as config_lib
from climit import report, stats
from climit import evaluate as ev
from climit.imitator import train as imitator_train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="an evaluated climit run (has eval/)")
    parser.add_argument("imitator_dir", type=Path, help="the imitator to test: runs/NAME/imitator/TAG")
    args = parser.parse_args()
    results, curves = report.load_eval(args.run_dir)
    cfg = config_lib.load(args.run_dir / "config.yaml", [])
    horizon, grid_P = results["horizon"], curves["b.grid"]

    _, env, tasks, env_key = ev.heldout_family(cfg)  # the evaluated run's tasks and env seeds
    if tasks.tolist() != results["tasks"]["a"]:
        raise SystemExit(f"{args.run_dir}'s tasks differ from its config's: was it re-evaluated?")
    loaded = imitator_train.load(args.imitator_dir, "best")
    signals = ev.imitator_steps(loaded, env, tasks, env_key, int(grid_P[-1]), cfg,
                                str(args.imitator_dir), progress=False)
    candidates = {"run's H-imitator": curves["b.imitator"],
                  str(args.imitator_dir): ev.curves_from_steps(*signals, grid_P)}
    for name, curve_SxKxP in candidates.items():
        for label, window in (("up to H", (-math.inf, horizon)), ("after H", (horizon, math.inf))):
            test = stats.summarize_test({"imitator": curve_SxKxP, "dqn": curves["b.dqn"]}, grid_P,
                                        window=window, n_boot=results["bootstrap"],
                                        confidence=results["confidence"], seed=cfg.run.seed + 1)
            ratio, agents = test["vs_dqn"]["imitator"]["auc_ratio"], test["agents"]
            print(json.dumps({
                "imitator": name, "window": label, "steps": test["window"],
                "imitator_auc": round(agents["imitator"]["auc"]["value"], 3),
                "imitator_final": round(agents["imitator"]["final"]["value"], 3),
                "dqn_auc": round(agents["dqn"]["auc"]["value"], 3),
                "auc_ratio": round(ratio["value"], 3),
                "auc_ratio_ci": [round(ratio["lo"], 3), round(ratio["hi"], 3)]}), flush=True)


if __name__ == "__main__":
    main()
