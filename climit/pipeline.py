"""``climit run``: teach -> imitate -> evaluate -> report, one progress line per stage.

Each stage writes named artifacts under ``runs/NAME/`` and records the fingerprint of the config
sections it depends on (``config.fingerprint``). A stage whose artifacts exist with a matching
fingerprint is skipped, unless an earlier stage ran in this call: then the evaluation and the
report run again, since they would read new artifacts (like make); an imitator whose own
fingerprint matches is kept, as the same teacher config reproduces the same histories. An
interrupted stage resumes (the teacher and the imitators from their latest checkpoints, the
evaluation from the agents it already finished, see :mod:`climit.evaluate`); the teacher and the
imitators refuse artifacts of a *different* config with a message instead of overwriting them.
``runs/NAME/config.yaml`` is written once every stage has finished, so it always describes the
artifacts beside it.

    stage      depends on                                   done when
    teach      run.seed, env, teacher, histories            teacher/summary.json fingerprint,
                                                            and the history is complete and
                                                            every chunk verifies
                                                            (teacher.train.finished_summary)
    imitate    + imitator (one per role, see evaluate.plan) imitator/<tag>/summary.json fingerprint,
                                                            and the best and final checkpoints it
                                                            names verify (imitator.train.finished)
    evaluate   + eval, the imitators' fingerprints          eval/results.json fingerprint, and
                                                            results and curves.npz load
    report     the evaluation                               report/summary.json eval fingerprint
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable

from climit import config as config_lib
from climit import jsonfile, stopping
from climit.config import ExperimentConfig
from climit.errors import ClimitError

STAGES = ("teach", "imitate", "evaluate", "report")


def run_dir(cfg: ExperimentConfig) -> Path:
    return Path(cfg.run.runs_dir) / cfg.run.name


def _fingerprint_matches(path: Path, fingerprint: str) -> bool:
    return jsonfile.read_or_empty(path).get("fingerprint") == fingerprint


def _evaluation_readable(rd: Path) -> bool:
    """The evaluation's results and curves load (a damaged curves.npz: evaluate again, rather
    than skip the stage and fail in the report on every retry)."""
    from climit import report
    from climit.errors import ArtifactError

    try:
        report.load_eval(rd)
    except ArtifactError:
        return False
    return True


def stage_status(cfg: ExperimentConfig) -> dict[str, bool]:
    """Which stages' artifacts exist and match ``cfg`` (True: would be skipped)."""
    from climit import evaluate
    from climit.imitator import train as imitator_train
    from climit.teacher import train as teacher_train

    rd = run_dir(cfg)
    plan = evaluate.plan(cfg)
    eval_fp = evaluate.fingerprint(cfg)
    return {
        # not just the summary: a damaged history would pass it and fail in imitate on every retry
        "teach": teacher_train.finished_summary(cfg, rd / "teacher") is not None,
        # not just the summary: a lost best checkpoint would make the evaluation load another
        "imitate": all(imitator_train.finished(r) for r in plan.imitators.values()),
        "evaluate": _fingerprint_matches(rd / "eval" / "results.json", eval_fp)
        and _evaluation_readable(rd),
        "report": _fingerprint_matches(rd / "report" / "summary.json", eval_fp),
    }


def after_evaluate(cfg: ExperimentConfig, log: Callable[[str], None] = print) -> None:
    """``climit evaluate`` alone, in a directory ``climit run`` made: the report and
    ``config.yaml`` beside the new evaluation are brought up to date (a report of the previous
    evaluation, or a config.yaml with its eval section, would describe results no longer
    there). Nothing is written where they do not exist."""
    from climit import report

    rd = run_dir(cfg)
    if (rd / "report").is_dir():
        report.build(rd)
        log(f"report rebuilt -> {rd / 'report'}")
    if (rd / "config.yaml").is_file():
        jsonfile.write_atomic(rd / "config.yaml", config_lib.dump_yaml(cfg).encode())


def _check_teacher_link(teacher: Path) -> None:
    """A ``teacher/`` that ``climit sweep`` linked to another point's teacher must still lead
    somewhere: a link whose target was moved or deleted is a clear error, not a bare
    FileExistsError from the first write."""
    if teacher.is_symlink() and not teacher.exists():
        raise ClimitError(f"{teacher} links to {os.readlink(teacher)} (the teacher of the sweep "
                          f"point it shares), which no longer exists; restore that run or "
                          f"remove the link to train this run's own teacher")


def run(cfg: ExperimentConfig, *, progress: bool = True, log: Callable[[str], None] = print,
        stop_after: str | None = None) -> dict[str, Any]:
    """Run every stage that is not done yet; returns ``{stage: "done" | "skipped"}`` and the
    report's summary under ``"summary"``.

    ``stop_after``: test hook; raise KeyboardInterrupt after that stage (a kill between stages).
    """
    from climit import evaluate, parallel, report
    from climit.imitator import train as imitator_train
    from climit.teacher import train as teacher_train

    plan = evaluate.plan(cfg)  # every ConfigError before any work
    parallel.initialize()  # several processes (pods, SLURM): process 0 writes, all compute
    # The imitators' batch splits over every device: found out here, not after the teacher.
    parallel.check_divisible(cfg.imitator.batch_size, "imitator.batch_size")
    primary = parallel.is_primary()
    log = log if primary else (lambda msg: None)
    rd = run_dir(cfg)
    rd.mkdir(parents=True, exist_ok=True)
    _check_teacher_link(rd / "teacher")
    done = stage_status(cfg)
    parallel.barrier("climit stages planned")  # every process saw the same artifacts
    outcome: dict[str, Any] = {}

    def upstream_ran() -> bool:
        return "done" in outcome.values()

    def stage(i: int, name: str, detail: str, fn: Callable[[], Any]) -> None:
        head = f"[{i}/{len(STAGES)}] {name}"
        if done[name] and not upstream_ran():
            log(f"{head}: skipped ({detail}: artifacts match the config)")
            outcome[name] = "skipped"
        else:
            # A request made during the stage before (or anywhere that polled nothing) stops here.
            stopping.stop_here(f"climit run before its {name} stage")
            log(f"{head}: {detail} ...")
            t0 = time.perf_counter()
            fn()
            parallel.barrier(f"climit stage {name}")  # the next stage reads what process 0 wrote
            log(f"{head}: done in {time.perf_counter() - t0:.1f} s")
            outcome[name] = "done"
        if stop_after == name:
            raise KeyboardInterrupt

    def imitate() -> None:
        for role, rcfg in plan.imitators.items():
            tag = imitator_train.tag(rcfg.imitator)
            # A finished imitator is kept even after a teacher rerun: the same config
            # reproduces the same histories.
            if imitator_train.finished(rcfg):
                log(f"      imitator {tag} ({role}): skipped")
                continue
            # A stop that came while the one before finished must not wait for this one's
            # data, compilation and first checkpoint (a scheduler's grace period may not).
            stopping.stop_here(f"climit run before imitator {tag}, the imitators before it "
                               "finished")
            t0 = time.perf_counter()
            s = imitator_train.train(rcfg, progress=progress)
            log(f"      imitator {tag} ({role}): held-out loss "
                f"{s.get('heldout_loss', float('nan')):.3f}, accuracy "
                f"{s.get('heldout_action_accuracy', float('nan')):.3f} "
                f"({time.perf_counter() - t0:.1f} s)")

    stage(1, "teach", f"{cfg.env.name} DQN histories", lambda: teacher_train.teach(
        cfg, rd, progress=progress, log=lambda m: log("      " + m)))
    stage(2, "imitate", f"{len(plan.imitators)} imitators ({', '.join(plan.imitators)})", imitate)
    if upstream_ran() or done["evaluate"]:
        # Agents an interrupted evaluation finished ran on imitators that have since been
        # retrained (or, evaluation done, they are leftovers of a kill just after results.json).
        evaluate.discard_parts(rd)  # process 0 deletes; the others wait for it before reading
        parallel.barrier("climit stale evaluation parts discarded")
    stage(3, "evaluate", "tests (a), (b)" + (", (c)" if cfg.env.transfer else ""),
          lambda: evaluate.evaluate(cfg, rd, progress=progress, log=lambda m: log("      " + m)))
    stage(4, "report", f"{rd / 'report'}", lambda: report.build(rd) if primary else None)
    if primary:
        jsonfile.write_atomic(rd / "config.yaml", config_lib.dump_yaml(cfg).encode())
    outcome["summary"] = jsonfile.read_or_empty(rd / "report" / "summary.json")
    return outcome
