"""climit.cli's own contract, without running any stage: the exit code and the one line printed
for each kind of error a command raises, the usage without a command, ``climit envs``' two
output forms, ``--window`` and ``--time-limit`` parsing, ``inspect --eval``'s options. Stand-ins
(``envs.table``, ``inspect.evaluate``) play the commands, so nothing is built or compiled."""

import argparse
import errno
import io
import json
import math
import sys

import pytest

from climit import cli, envs, stopping
from climit.config import ConfigError
from climit.errors import ClimitError


def test_no_command_prints_the_usage_and_exits_2(capsys):
    # As argparse's own usage errors: a command line that names no command is a usage error.
    assert cli.main([]) == 2
    out, err = capsys.readouterr()
    assert out.startswith("usage: climit ") and err == ""


@pytest.mark.parametrize("exc, code, line", [
    (ClimitError("no such run"), 1, "climit: error: no such run"),
    (ConfigError("teacher.lr", "must be > 0"), 2, "climit: config error: teacher.lr: must be > 0"),
    # Stopped is a ClimitError too, but a clean stop: 75, so a scheduler requeues the command.
    (stopping.Stopped("teacher", "SIGTERM"), stopping.EXIT_CODE,
     "climit: stopped (SIGTERM): teacher; run the same command again to resume"),
    (PermissionError(errno.EACCES, "Permission denied", "/runs/x"), 1,
     "climit: error: [Errno 13] Permission denied: '/runs/x'"),
    (OSError(errno.ENOSPC, "No space left on device", "/runs/x.npz"), 1,
     "climit: error: the disk is full (/runs/x.npz); free space, then run the same command "
     "again to resume from the last checkpoint"),
    (KeyboardInterrupt(), 130, "climit: interrupted; run the same command again to resume"),
])
def test_an_error_a_command_raises_is_one_line_and_an_exit_code(exc, code, line, monkeypatch,
                                                                capsys):
    def table():
        raise exc

    monkeypatch.setattr(envs, "table", table)
    assert cli.main(["envs"]) == code
    out, err = capsys.readouterr()
    assert out == "" and err == line + "\n"  # one line, no traceback


def test_a_reader_that_leaves_is_not_an_error(monkeypatch):
    # `climit envs | head -1`: the pipe closes under the printing; exit 0, and stderr is closed
    # so that Python's own flush at exit prints nothing about it either.
    def table():
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")

    monkeypatch.setattr(envs, "table", table)
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    stderr = sys.stderr
    assert cli.main(["envs"]) == 0
    assert stderr.closed


ROWS = [{"name": "a", "interface": "grid", "episode_len": 20, "description": "first one"},
        {"name": "bb", "interface": "control", "episode_len": 500, "description": "second"}]


def test_envs_prints_a_table_or_one_json_object_per_line(monkeypatch, capsys):
    monkeypatch.setattr(envs, "table", lambda: ROWS)
    assert cli.main(["envs", "--json"]) == 0
    assert [json.loads(line) for line in capsys.readouterr().out.splitlines()] == ROWS
    assert cli.main(["envs"]) == 0
    # Columns as wide as their widest entry, two spaces apart; the description last, unpadded.
    assert capsys.readouterr().out.splitlines() == [
        "name  interface  episode_len  description",
        "a     grid       20           first one",
        "bb    control    500          second"]


@pytest.mark.parametrize("text, window", [
    ("0:30000", (0.0, 30000.0)), (":400", (-math.inf, 400.0)), ("9000:", (9000.0, math.inf)),
    (" : ", (-math.inf, math.inf)), ("1e3:2e3", (1000.0, 2000.0))])
def test_report_window_reads_start_end_with_open_sides(text, window):
    # An empty side is unbounded: ':400' includes every step up to 400, '9000:' every one after.
    assert cli._window(text) == window


@pytest.mark.parametrize("text, why", [
    ("400:400", "is empty"), ("400:0", "is empty"), ("-5:10", "START counts env steps"),
    ("400", "expected START:END"), ("a:b", "expected START:END")])
def test_report_window_refuses_empty_negative_and_malformed_windows(text, why, capsys):
    with pytest.raises(argparse.ArgumentTypeError, match=why):
        cli._window(text)
    with pytest.raises(SystemExit) as e:  # on the command line: argparse's usage error, 2
        cli.main(["report", "run", f"--window={text}"])  # "-5:10" after a space: an option
    assert e.value.code == 2 and why in capsys.readouterr().err


def test_the_stages_and_the_sweep_take_a_time_limit_and_nothing_else_does():
    # A scheduler's job running `climit sweep --time-limit 1h` must stop cleanly (75) like the
    # stages it runs; commands that save nothing to resume have no time limit to take.
    parser = cli.build_parser()
    stoppable = {"teach": [], "imitate": [], "evaluate": [], "run": [],
                 "sweep": ["--grid", "teacher.lr=1e-3,3e-4"]}
    for name, rest in stoppable.items():
        assert parser.parse_args([name, *rest, "--time-limit", "1.5h"]).time_limit == 5400.0
    for rest in (["config"], ["envs"], ["report", "run"], ["inspect", "run"]):
        with pytest.raises(SystemExit) as e:
            parser.parse_args([*rest, "--time-limit", "1h"])
        assert e.value.code == 2


@pytest.mark.parametrize("flags, seed", [([], 0), (["--seed", "7"], 7)])
def test_inspect_eval_hands_its_options_to_the_evaluation(flags, seed, monkeypatch, capsys):
    # --eval N with --seed, --tasks, --learner and --step reach climit.inspect.evaluate as given
    # (a stand-in here: the evaluation itself is tests/test_inspect.py's); no --seed is key 0.
    from climit import inspect as inspect_lib

    calls = []
    monkeypatch.setattr(inspect_lib, "evaluate", lambda *a, **kw: calls.append((a, kw)) or {})
    monkeypatch.setattr(inspect_lib, "format_eval", lambda view: "evaluated\n")
    argv = ["inspect", "runs/x", "--eval", "3", "--step", "best", "--tasks", "4", "--learner", "1"]
    assert cli.main([*argv, *flags]) == 0
    assert capsys.readouterr().out == "evaluated\n"
    assert calls == [(("runs/x", 3, "best"), {"learner": 1, "tasks": 4, "seed": seed})]


@pytest.mark.parametrize("text, why", [("2.5", "expected a whole number, got '2.5'"),
                                       ("1e3", "expected a whole number, got '1e3'"),
                                       ("0", "must be at least 1, got 0")])
def test_sizes_and_counts_are_whole_numbers_from_1(text, why, capsys):
    # --steps 2.5 is a mistake to point out, not 2 steps to measure.
    assert cli._positive("3") == 3
    with pytest.raises(argparse.ArgumentTypeError, match=why):
        cli._positive(text)
    with pytest.raises(SystemExit) as e:
        cli.main(["bench", "imitator", "--steps", text])
    assert e.value.code == 2 and why in capsys.readouterr().err


def test_bench_teacher_and_imitator_pass_their_flags_and_print_each_record(monkeypatch, capsys):
    # The teacher's defaults are the peer's CartPole run (100k env steps per learner) at 1, 8
    # and 64 learners; every flag and override reaches the benchmark as given.
    from climit.imitator import bench as imitator_bench
    from climit.teacher import bench as teacher_bench

    calls = []

    def fake_run(*args, **kwargs):
        calls.append((args, kwargs))
        return iter([{"n": 1}, {"n": 2}])

    monkeypatch.setattr(teacher_bench, "run", fake_run)
    monkeypatch.setattr(imitator_bench, "run", fake_run)
    assert cli.main(["bench", "teacher"]) == 0
    assert cli.main(["bench", "teacher", "--learners", "2", "--steps", "7000", "--histories",
                     "on", "--peer", "both", "--peer-script", "p.py", "teacher.lr=0.01"]) == 0
    assert cli.main(["bench", "imitator", "--sizes", "default", "--batch", "4", "--steps", "3",
                     "--repeats", "2", "--reduced", "--seeds", "5"]) == 0
    assert calls == [
        (([1, 8, 64], 100_000), {"histories": "both", "peer": "uniform", "peer_script": None,
                                 "overrides": []}),
        (([2], 7000), {"histories": "on", "peer": "both", "peer_script": "p.py",
                       "overrides": ["teacher.lr=0.01"]}),
        ((["default"],), {"batch": 4, "steps": 3, "reduced": True, "repeats": 2, "seeds": 5})]
    assert capsys.readouterr().out == '{"n": 1}\n{"n": 2}\n' * 3


def test_report_compare_writes_to_compare_unless_told_otherwise(tmp_path, monkeypatch, capsys):
    from climit import compare

    calls = []

    def build(runs, out):
        calls.append((runs, out))
        (tmp_path / "compare.md").write_text("| table |\n")
        return tmp_path

    monkeypatch.setattr(compare, "build", build)
    assert cli.main(["report", "--compare", "a", "b"]) == 0
    assert cli.main(["report", "--compare", "a", "b", "--out", "elsewhere"]) == 0
    assert calls == [(["a", "b"], "compare"), (["a", "b"], "elsewhere")]
    assert capsys.readouterr().out.splitlines()[:2] == [
        "| table |", f"comparison -> {tmp_path / 'compare.md'}"]
