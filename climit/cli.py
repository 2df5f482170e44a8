"""The ``climit`` command line: ``climit COMMAND [--config FILE] [section.key=value ...]``.

Each command is a small function registered with :func:`command`; the work lives in the
library modules so that everything here is argument parsing and printing. Errors the user can
fix (bad config, missing or damaged artifacts) print one line and exit non-zero.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import logging
import math
import sys
from pathlib import Path
from typing import Any, Callable

from climit import config as config_lib
from climit import stopping
from climit.errors import ClimitError

Command = Callable[[argparse.Namespace], int | None]
_COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Command, bool]] = {}


def command(name: str, help: str, *, args: Callable[[argparse.ArgumentParser], None] | None = None,
            takes_config: bool = True):
    """Register ``fn(args)`` as ``climit NAME``; ``args(parser)`` adds its own flags."""
    def wrap(fn: Command) -> Command:
        _COMMANDS[name] = (help, args or (lambda p: None), fn, takes_config)
        return fn
    return wrap


def config_help() -> str:
    lines = ["configuration keys (set with section.key=value; presets hold only what differs):"]
    for key, tp, default, doc in config_lib.reference():
        lines.append(f"  {key:<32} {doc} [{tp}; default {default}]")
    return "\n".join(lines)


def load_config(args: argparse.Namespace) -> config_lib.ExperimentConfig:
    return config_lib.load(args.config, args.overrides)


def run_dir(cfg: config_lib.ExperimentConfig) -> Path:
    return Path(cfg.run.runs_dir) / cfg.run.name


def print_json_or_table(rows: list[dict], as_json: bool) -> None:
    if as_json:
        for r in rows:
            print(json.dumps(r))
        return
    cols = list(rows[0])
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols if c != "description"}
    print("  ".join(c.ljust(widths[c]) for c in widths) + "  description")
    for r in rows:
        print("  ".join(str(r[c]).ljust(widths[c]) for c in widths) + "  " + str(r["description"]))


# ---------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------

def _progress_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _envs_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="one JSON object per line")


@command("envs", "list every environment with its spec", args=_envs_args,
         takes_config=False)
def cmd_envs(args: argparse.Namespace) -> int:
    from climit import envs

    print_json_or_table(envs.table(), args.json)
    return 0


@command("config", "print the fully resolved config (defaults + preset + overrides) as YAML")
def cmd_config(args: argparse.Namespace) -> int:
    print(config_lib.dump_yaml(load_config(args)), end="")
    return 0


# ---------------------------------------------------------------------------------------------
# inspect (io block)
# ---------------------------------------------------------------------------------------------

def _inspect_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", metavar="PATH",
                   help="checkpoint directory, one step inside it, a learning history "
                   "(teacher/histories: its streams and returns), a run directory, or a runs "
                   "root (searched five levels deep)")
    p.add_argument("--step", metavar="STEP",
                   help="step to show or load: a number, latest or best (lowest held-out loss; "
                   "imitators). Default: latest, but best for an imitator's --eval")
    p.add_argument("--stats", action="store_true",
                   help="load the chosen leaves: per-leaf norm/mean/std, per learner (imitator: "
                   "per seed) where the leaf is stacked")
    p.add_argument("--learner", type=int, metavar="I",
                   help="with --stats/--diff: only teacher learner I or imitator seed I "
                   "(default: summary over them); with --eval: only learner or seed I")
    p.add_argument("--diff", nargs=2, metavar=("A", "B"),
                   help="compare two steps of PATH (numbers, latest, best), or two checkpoint "
                   "paths (a teacher snapshot aligns with a teacher checkpoint's learners/params)")
    p.add_argument("--eval", type=int, metavar="N",
                   help="roll the teacher (greedy, each learner on its own task) or imitator (each "
                   "seed from an empty context on held-out tasks) for N episodes: mean return "
                   "and its bootstrap interval (the run's eval.confidence and eval.bootstrap)")
    p.add_argument("--tasks", type=int, metavar="K",
                   help="with --eval on an imitator: held-out tasks, or rollouts of a single-task "
                   "env (default: the run's eval.tasks)")
    p.add_argument("--seed", type=int, help="with --eval: evaluation key, 0 to 2^32-1 (default: 0)")
    p.add_argument("--prefix", help="with --stats/--diff: only leaves whose path starts with this "
                   "(e.g. params; only those are loaded)")
    p.add_argument("--json", action="store_true", help="print the view as JSON")


@command("inspect", "show a checkpoint's steps, metrics, config and parameter tree, or a learning "
         "history's streams; --stats, --diff, --eval", args=_inspect_args, takes_config=False)
def cmd_inspect(args: argparse.Namespace) -> int:
    from climit import inspect as inspect_lib

    modes = [m for m, on in (("stats", args.stats), ("diff", args.diff),
                             ("eval", args.eval is not None)) if on]
    if len(modes) > 1:
        raise ClimitError("choose one of --stats, --diff and --eval")
    mode = modes[0] if modes else "history" if inspect_lib.is_history(args.path) else "overview"
    inspect_lib.check_options(mode, {"step": args.step, "learner": args.learner,
                                     "tasks": args.tasks, "seed": args.seed, "prefix": args.prefix})
    prefix, seed = args.prefix or "", args.seed or 0
    views = {
        "eval": lambda: inspect_lib.evaluate(args.path, args.eval, args.step, learner=args.learner,
                                             tasks=args.tasks, seed=seed),
        "diff": lambda: inspect_lib.diff(args.path, *args.diff, learner=args.learner,
                                         prefix=prefix),
        "stats": lambda: inspect_lib.stats(args.path, args.step, learner=args.learner,
                                           prefix=prefix),
        "history": lambda: inspect_lib.history_overview(args.path),
        "overview": lambda: inspect_lib.overview(args.path, args.step),
    }
    formats = {"eval": inspect_lib.format_eval, "diff": inspect_lib.format_diff,
               "stats": inspect_lib.format_stats, "history": inspect_lib.format_history,
               "overview": inspect_lib.format_overview}
    view = views[mode]()
    print(inspect_lib.dumps(view) if args.json else formats[mode](view).rstrip("\n"))
    return 0


# ---------------------------------------------------------------------------------------------
# teach, bench (teacher block)
# ---------------------------------------------------------------------------------------------


@command("teach", "train the DQN teacher: learning histories, checkpoints, snapshots, summary.json "
         "(run again to resume)", args=_progress_args)
def cmd_teach(args: argparse.Namespace) -> int:
    from climit.teacher import train

    cfg = load_config(args)
    train.teach(cfg, run_dir(cfg), progress=not args.no_progress)
    return 0


# ``climit bench TARGET``: one entry per target; others add theirs with @bench_target.
BENCH_TARGETS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Command]] = {}


def bench_target(name: str, help: str, *,
                 args: Callable[[argparse.ArgumentParser], None] | None = None):
    """Register ``fn(args)`` as ``climit bench NAME``; ``args(parser)`` adds its flags."""
    def wrap(fn: Command) -> Command:
        BENCH_TARGETS[name] = (help, args or (lambda p: None), fn)
        return fn
    return wrap


def _bench_args(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="target", metavar="TARGET", required=True)
    for name, (help_, add, _) in BENCH_TARGETS.items():
        add(sub.add_parser(name, help=help_, description=help_))


@command("bench",
         "throughput benchmarks printing JSON lines: climit bench teacher, imitator or rollout",
         args=_bench_args, takes_config=False)
def cmd_bench(args: argparse.Namespace) -> int:
    return int(BENCH_TARGETS[args.target][2](args) or 0)


def _bench_teacher_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--learners", type=_positive, nargs="+", default=[1, 8, 64], metavar="S",
                   help="learner counts to measure (default: 1 8 64)")
    p.add_argument("--steps", type=_positive, default=100_000,
                   help="env steps per learner (default: 100000, the peer's CartPole run); "
                   "with the peer's config at least 6000 (above its teacher.learning_starts 5000, "
                   "a multiple of 1000)")
    p.add_argument("--histories", choices=["both", "off", "on"], default="both",
                   help="measure without and/or with writing learning histories (default: both)")
    p.add_argument("--peer", choices=["none", "uniform", "rejax", "both"], default="uniform",
                   help="the rejax peer to run in this command too: its uniform sampler "
                   "(default), its shipped one (rejax), both, or none")
    p.add_argument("--peer-script", default=None,
                   help="path of rejax_dqn_bench.py (default: ../shared/anchors/ beside the repo)")
    p.add_argument("overrides", nargs="*", metavar="teacher.key=value",
                   help="changes to the default case (rejax's CartPole config)")


@bench_target("teacher", "DQN teacher env steps/s and TD updates/s for S learners, against the "
              "rejax peer", args=_bench_teacher_args)
def bench_teacher(args: argparse.Namespace) -> int:
    from climit.teacher import bench

    for record in bench.run(args.learners, args.steps, histories=args.histories, peer=args.peer,
                            peer_script=args.peer_script, overrides=args.overrides):
        print(json.dumps(record), flush=True)
    return 0


# ---------------------------------------------------------------------------------------------
# imitate, bench imitator (imitator block)
# ---------------------------------------------------------------------------------------------


@command("imitate", "train the transformer imitator on the teacher's histories: "
         "runs/NAME/imitator/<variant>[_h<H>]/, one variant per call (run again to resume)",
         args=_progress_args)
def cmd_imitate(args: argparse.Namespace) -> int:
    from climit import parallel
    from climit.imitator import data, train

    parallel.initialize()  # before the config check touches a device (multi-host start-up)
    cfg = load_config(args)
    icfg = cfg.imitator
    expected = data.control_subsample(icfg.variant, icfg.subsample)
    if expected != icfg.subsample and parallel.is_primary():
        print(f"climit: note: the evaluation's {icfg.variant} imitator has imitator.subsample="
              f"{expected} (see climit.imitator.data.control_subsample); this one (subsample "
              f"{icfg.subsample}) is not the one `climit evaluate` expects", file=sys.stderr)
    summary = train.train(cfg, progress=not args.no_progress)
    print(f"imitator {summary['tag']}: heldout_loss {summary['heldout_loss']:.4f}, "
          f"heldout_action_accuracy {summary['heldout_action_accuracy']:.3f} "
          f"(chance {summary['chance_accuracy']:.3f}), {summary['params']} params x "
          f"{summary['seeds']} seeds -> {train.output_dir(cfg)}")
    if "heldout_accuracy_by_position" in summary:
        profile = " ".join(f"{a:.3f}" for a in summary["heldout_accuracy_by_position"])
        print(f"imitator {summary['tag']}: held-out accuracy by sequence position "
              f"{summary['position_bins']}: {profile}")
    return 0


def _bench_imitator_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sizes", nargs="+", choices=["documented", "default"],
                   default=["documented", "default"], help="model sizes to measure")
    p.add_argument("--batch", type=_positive, default=None,
                   help="sequences per step (default: 16 documented, 64 default, 8 reduced)")
    p.add_argument("--steps", type=_positive, default=10, help="timed train steps per repeat")
    p.add_argument("--repeats", type=_positive, default=3, help="timed repeats (median reported)")
    p.add_argument("--reduced", action="store_true",
                   help="shrink the documented size (d 128, 2 layers, context 256) for CPU runs")
    p.add_argument("--seeds", type=_positive, default=1,
                   help="imitators trained at once per step (vmapped, as the presets' "
                        "imitator.seeds)")


@bench_target("imitator", "imitator train-step tokens/s and MFU (documented and default size), "
              "cuDNN vs XLA attention", args=_bench_imitator_args)
def bench_imitator(args: argparse.Namespace) -> int:
    from climit.imitator import bench

    for record in bench.run(args.sizes, batch=args.batch, steps=args.steps, reduced=args.reduced,
                            repeats=args.repeats, seeds=args.seeds):
        print(json.dumps(record), flush=True)
    return 0


# ---------------------------------------------------------------------------------------------
# evaluate, report, run, bench rollout (evaluation block)
# ---------------------------------------------------------------------------------------------


@command("evaluate", "the three claim tests on held-out tasks (frozen imitators vs fresh DQNs): "
         "runs/NAME/eval/{results.json, curves.npz}", args=_progress_args)
def cmd_evaluate(args: argparse.Namespace) -> int:
    from climit import evaluate, parallel, pipeline

    cfg = load_config(args)
    evaluate.evaluate(cfg, run_dir(cfg), progress=not args.no_progress)
    print(f"evaluation -> {run_dir(cfg) / 'eval'}")
    if parallel.is_primary():
        pipeline.after_evaluate(cfg)
    if not (run_dir(cfg) / "report").is_dir():
        print(f"build the report with `climit report {run_dir(cfg)}`")
    return 0


def _report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", metavar="RUN_DIR", nargs="?",
                   help="a run directory holding eval/results.json")
    # --compare (issue-6 block): one table and one plot across runs
    p.add_argument("--compare", nargs="+", metavar="RUN",
                   help="instead of one report: compare these runs' reports (the config keys that "
                   "differ against the imitator/DQN ratios of the three tests)")
    p.add_argument("--out", metavar="DIR",
                   help="with --compare: output directory (default: ./compare; a run's own "
                   "report goes to RUN_DIR/report)")
    p.add_argument("--window", metavar="START:END", type=_window,
                   help="print every test's table over env steps (START, END] only (e.g. 0:30000; "
                   "an empty side is open) instead of building the report")


def _positive(text: str) -> int:
    """An argparse type: a whole number >= 1 (sizes, counts, steps)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _window(text: str) -> tuple[float, float]:
    """'START:END' in env steps -> (start, end); an empty side is unbounded."""
    start, sep, end = text.partition(":")
    try:
        if not sep:
            raise ValueError
        lo = float(start) if start.strip() else -math.inf
        hi = float(end) if end.strip() else math.inf
    except ValueError:
        raise argparse.ArgumentTypeError("expected START:END in env steps (e.g. 0:30000), got "
                                         f"{text!r}") from None
    if not lo < hi:
        raise argparse.ArgumentTypeError(f"window {text!r} is empty: START must be below END")
    if lo < 0 and math.isfinite(lo):  # steps to 80% count from START: a negative one shifts them
        raise argparse.ArgumentTypeError(f"window {text!r}: START counts env steps, 0 or more")
    return lo, hi


@command("report", "report.md, plots and summary.json from a run's evaluation (needs no JAX); "
         "--compare RUN RUN ...: one table and plot across runs", args=_report_args,
         takes_config=False)
def cmd_report(args: argparse.Namespace) -> int:
    from climit import report

    if args.compare:
        if args.run_dir:
            raise ClimitError("give either RUN_DIR or --compare RUN [RUN ...], not both")
        if args.window:
            raise ClimitError("--window goes with RUN_DIR, not with --compare")
        from climit import compare

        out = compare.build(args.compare, args.out or "compare")
        print((out / "compare.md").read_text().rstrip("\n"))
        print(f"comparison -> {out / 'compare.md'}")
        return 0
    if not args.run_dir:
        raise ClimitError("give a run directory (climit report RUN_DIR) or --compare RUN [RUN ...]")
    if args.out is not None:
        raise ClimitError(f"--out goes with --compare; the report of {args.run_dir} is written to "
                          f"{Path(args.run_dir) / 'report'}")
    if args.window:
        text = report.window_markdown(*report.load_eval(args.run_dir), args.window)
        if "## (" not in text:
            raise ClimitError(f"no test of {args.run_dir} has a curve point in env steps "
                              f"({args.window[0]:g}, {args.window[1]:g}]")
        print(text.rstrip("\n"))
        return 0
    out = report.build(args.run_dir)
    for line in report.headline(json.loads((out / "summary.json").read_text())):
        print(line)
    print(f"report -> {out / 'report.md'}")
    return 0


@command("run", "the whole experiment: teach -> imitate -> evaluate -> report (skips finished "
         "stages, resumes an interrupted one); no arguments = the default Dark Room run",
         args=_progress_args)
def cmd_run(args: argparse.Namespace) -> int:
    from climit import pipeline, report

    cfg = load_config(args)
    out = pipeline.run(cfg, progress=not args.no_progress)
    for line in report.headline(out.get("summary") or {}):
        print(line)
    print(f"report -> {run_dir(cfg) / 'report' / 'report.md'}")
    return 0


def _bench_rollout_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--env", default="CartPole-v1", help="environment (default: CartPole-v1, as "
                   "the reference icrl_rollout_bench.py)")
    p.add_argument("--batch", type=_positive, nargs="+", default=[1, 16], metavar="B",
                   help="environments acting at once (default: 1 16; GPU: 4096)")
    p.add_argument("--context", type=_positive, nargs="+", default=[64, 256], metavar="L",
                   help="context lengths (default: 64 256; GPU: 1024)")
    p.add_argument("--steps", type=_positive, default=300,
                   help="env steps per env with the KV cache")
    p.add_argument("--recompute-steps", type=_positive, default=50,
                   help="env steps per env when recomputing the window (slower)")
    p.add_argument("--d-model", type=_positive, default=64, help="model width (GPU reference: 256)")
    p.add_argument("--layers", type=_positive, default=2,
                   help="transformer blocks (GPU reference: 4)")
    p.add_argument("--heads", type=_positive, default=4, help="attention heads")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"],
                   help="compute dtype (auto: bf16 on GPU, fp32 on CPU)")
    p.add_argument("--repeats", type=_positive, default=3, help="timed repeats (median reported)")
    p.add_argument("--mode", choices=["both", "kv_cache", "recompute"], default="both",
                   help="acting with the KV cache, recomputing the whole window each step, or "
                   "both (then a kv_cache / recompute ratio line too)")
    p.add_argument("--peer", action="store_true",
                   help="also run ../shared/anchors/icrl_rollout_bench.py at the same sizes")
    p.add_argument("--peer-script", default=None, help="path of icrl_rollout_bench.py")


@bench_target("rollout", "in-context acting env steps/s for B envs x context L: KV cache vs "
              "recomputing the window (and the reference peer)", args=_bench_rollout_args)
def bench_rollout(args: argparse.Namespace) -> int:
    from climit import envs, evaluate

    if args.env not in envs.names():
        raise ClimitError(f"unknown environment {args.env!r}"
                          f"{config_lib.did_you_mean(args.env, envs.names())}; `climit envs` "
                          f"lists them")
    if args.d_model % args.heads:
        raise ClimitError(f"--d-model {args.d_model} is not divisible by --heads {args.heads}")
    modes = ("kv_cache", "recompute") if args.mode == "both" else (args.mode,)
    script = Path(args.peer_script) if args.peer_script else \
        Path(__file__).resolve().parents[2] / "shared" / "anchors" / "icrl_rollout_bench.py"
    if args.peer and not script.is_file():  # asked for: said before any measuring, not after
        raise ClimitError(f"peer benchmark not found at {script.resolve()}; pass --peer-script")
    kv_cache = {}  # (context, batch) -> env steps/s, for the ratio to the peer
    for record in evaluate.bench_rollout(
            args.env, args.batch, args.context, steps=args.steps,
            recompute_steps=args.recompute_steps, d_model=args.d_model, n_layers=args.layers,
            n_heads=args.heads, compute_dtype=args.dtype, repeats=args.repeats, modes=modes):
        print(json.dumps(record), flush=True)
        if record.get("mode") == "kv_cache":
            kv_cache[(record["context"], record["batch_envs"])] = record["env_steps_per_s"]
    if args.peer:
        _print_rollout_peer(args, script, kv_cache)
    return 0


def _print_rollout_peer(args: argparse.Namespace, script: Path, kv_cache: dict) -> None:
    """The reference rollout's lines at the same sizes, each followed by climit's ratio to it."""
    from climit import evaluate
    from climit.imitator import model

    for record in evaluate.bench_peer(script, args.env, args.batch, args.context,
                                      steps=args.steps, d_model=args.d_model,
                                      n_layers=args.layers, n_heads=args.heads,
                                      dtype=model.resolve_compute_dtype(args.dtype),
                                      repeats=args.repeats):
        print(json.dumps(record), flush=True)
        ratio = evaluate.peer_ratio(kv_cache, record)
        if ratio is not None:
            print(json.dumps(ratio), flush=True)


# --- sweep (lead) -------------------------------------------------------------------------------

def _sweep_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--grid", nargs="+", required=True, metavar="section.key=v1,v2",
                   help="values per key; the sweep runs their cartesian product. A key "
                   "with one value (section.key=value, here or before --grid) is a plain "
                   "override for every point and does not name runs")
    p.add_argument("--emit", action="store_true",
                   help="print one `climit run` command per point instead of running them "
                   "(with --no-progress and --time-limit, each command carries them)")
    _progress_args(p)


@command("sweep", "run a grid of settings that change shapes as separate runs (or --emit a launch "
         "list); finished runs are skipped", args=_sweep_args)
def cmd_sweep(args: argparse.Namespace) -> int:
    from climit import sweep

    points = sweep.points(args.config, args.overrides, args.grid)
    if args.emit:
        for p in points:
            print(sweep.command_line(args.config, p, progress=not args.no_progress,
                                     time_limit=args.time_limit))
        return 0
    for r in sweep.run_all(points, progress=not args.no_progress):
        print(json.dumps({"run": r["run"], **{k: v for k, v in r.items() if k in STAGE_KEYS}}))
    return 0


STAGE_KEYS = ("teach", "imitate", "evaluate", "report")


# ---------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------

_DEVICE_COMMANDS = ("teach", "imitate", "evaluate", "run", "sweep", "bench")
# Commands that stop cleanly on SIGTERM/SIGUSR1 or --time-limit and resume (climit.stopping).
_STOPPABLE = ("teach", "imitate", "evaluate", "run", "sweep")


def _duration(text: str) -> float:
    try:
        return stopping.parse_duration(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="climit", description="Can a frozen imitator of a continual learner learn in context?")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_, add, _, takes_config) in _COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_,
                           epilog=config_help() if takes_config else None,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        if takes_config:
            p.add_argument("--config", metavar="FILE",
                           help="YAML preset (only what differs from defaults)")
            p.add_argument("overrides", nargs="*", metavar="section.key=value",
                           help="dotted overrides applied after the preset")
        if name in _STOPPABLE:
            p.add_argument("--time-limit", type=_duration, metavar="DURATION",
                           help="stop cleanly after this long (90s, 45m, 1.5h, 2d), as on SIGTERM "
                                "or SIGUSR1: work is saved, the exit code is "
                                f"{stopping.EXIT_CODE}, and the same command resumes")
        add(p)
    return parser


def _quiet_closed_loop(unraisable: Any) -> None:
    """Drop "Event loop is closed" from I/O callbacks that finish after orbax closed the event
    loop of a restore that failed (tensorstore reads of a damaged checkpoint; up to a hundred
    tracebacks, each after climit's own message or before it); print anything else as usual."""
    exc = unraisable.exc_value
    if isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed":
        return
    sys.__unraisablehook__(unraisable)


def _quiet_metadata_parse(record: logging.LogRecord) -> bool:
    """A logging filter: drop orbax's "Failed to json parse Metadata file" (see main)."""
    return not str(record.msg).startswith("Failed to json parse Metadata file")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    _, _, fn, _ = _COMMANDS[args.command]
    # orbax logs the tensorstore details of a damaged or interrupted checkpoint at WARNING
    # through absl (kilobytes per file), and its background asyncio tasks log the same failure
    # again ("Task exception was never retrieved", "Event loop is closed") after climit has
    # raised; climit reports those cases in its own one-line messages.
    logging.getLogger("absl").setLevel(logging.ERROR)
    # ... and a step's damaged _CHECKPOINT_METADATA at ERROR, once per look at the step, before
    # climit's checksums name the damage (or set the step aside and resume from another).
    logging.getLogger("absl").addFilter(_quiet_metadata_parse)
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    sys.unraisablehook = _quiet_closed_loop
    # No tqdm monitor thread: a Ctrl-C during exit could land in its atexit hook and print a
    # traceback after "interrupted" (its only job, slowing bars on stalled loops, is not needed).
    import tqdm

    tqdm.tqdm.monitor_interval = 0
    if args.command in _DEVICE_COMMANDS:
        from climit import parallel

        parallel.initialize()  # multi-host start-up, before anything touches a device
    watch = (stopping.watch(args.time_limit) if args.command in _STOPPABLE
             else contextlib.nullcontext())
    try:
        with watch:
            return int(fn(args) or 0)
    except stopping.Stopped as e:
        print(f"climit: {e}", file=sys.stderr)
        return stopping.EXIT_CODE
    except config_lib.ConfigError as e:
        print(f"climit: config error: {e}", file=sys.stderr)
        return 2
    except ClimitError as e:
        print(f"climit: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        if e.errno == errno.ENOSPC:
            print(f"climit: error: the disk is full ({e.filename or e}); free space, then run the "
                  f"same command again to resume from the last checkpoint", file=sys.stderr)
            return 1
        if isinstance(e, BrokenPipeError):  # `climit envs | head`: the reader left
            sys.stderr.close()
            return 0
        print(f"climit: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("climit: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
