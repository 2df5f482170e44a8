"""metrics.jsonl: append, resume drops records past the restored step, torn lines are skipped."""

import json
import math
import sys
import types

import pytest

from climit.errors import ArtifactError
from climit.metrics import MetricsLogger, read_jsonl


def test_append_and_resume(tmp_path):
    path = tmp_path / "m" / "metrics.jsonl"
    with MetricsLogger(path) as log:
        for step in (10, 20, 30):
            log.log({"step": step, "loss": step / 10, "nan": float("nan")})
    assert [r["step"] for r in read_jsonl(path)] == [10, 20, 30]
    assert read_jsonl(path)[0]["nan"] == "nan"
    # Resume from a checkpoint at step 20: the record at 30 is redone, not duplicated.
    with MetricsLogger(path, resume_step=20) as log:
        log.log({"step": 30, "loss": 3.0})
    assert [r["step"] for r in read_jsonl(path)] == [10, 20, 30]
    # A fresh (non-resumed) run starts empty.
    MetricsLogger(path).close()
    assert read_jsonl(path) == []


def test_torn_last_line_is_skipped(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps({"step": 1, "x": 1.0}) + "\n" + '{"step": 2, "x"')
    assert read_jsonl(path) == [{"step": 1, "x": 1.0}]
    assert not math.isnan(read_jsonl(path)[0]["x"])


def test_undecodable_tail_is_dropped_like_a_nul_tail(tmp_path):
    path = tmp_path / "metrics.jsonl"
    good = json.dumps({"step": 1}) + "\n" + json.dumps({"step": 2}) + "\n"
    path.write_bytes(good.encode() + b"\xff\xfe\x80garbage\n\x00\x00\x00")
    assert [r["step"] for r in read_jsonl(path)] == [1, 2]
    # ... and a resume (which rewrites the kept records first) goes on from there.
    with MetricsLogger(path, resume_step=2) as log:
        log.log({"step": 3})
    assert [r["step"] for r in read_jsonl(path)] == [1, 2, 3]


def test_undecodable_line_mid_file_is_a_clear_error(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b'{"step": 1}\n\xff\xfe\n{"step": 2}\n')
    with pytest.raises(ArtifactError, match="line 2 is not a JSON record") as e:
        read_jsonl(path)
    assert str(path) in str(e.value) and "delete" in str(e.value)


@pytest.mark.parametrize("line", [b"garbage", b"[1, 2]", b"7", b'{"step": 2'])
def test_a_line_that_is_not_a_record_mid_file_is_a_clear_error(tmp_path, line):
    # Valid UTF-8 that is not a JSON object used to be skipped silently, losing the record.
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b'{"step": 1}\n' + line + b'\n{"step": 3}\n')
    with pytest.raises(ArtifactError, match="line 2 is not a JSON record"):
        read_jsonl(path)


def test_blank_lines_and_a_non_object_tail_are_not_records(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b'{"step": 1}\n\n{"step": 2}\n[3]\n')
    assert [r["step"] for r in read_jsonl(path)] == [1, 2]


def fake_wandb(monkeypatch):
    """A stand-in wandb module; returns the lists its ``init`` kwargs and ``log`` calls go to."""
    inits, logged = [], []
    fake = types.SimpleNamespace(
        init=lambda **kw: inits.append(kw) or types.SimpleNamespace(
            log=lambda data, step: logged.append((step, data)), finish=lambda: None))
    monkeypatch.setitem(sys.modules, "wandb", fake)
    return inits, logged


def test_wandb_resumes_the_same_run_for_the_same_metrics_file(tmp_path, monkeypatch):
    # A resumed stage gives W&B the same run id (W&B resumes only a run whose id it is given),
    # another stage or run directory another id; records reach it.
    inits, logged = fake_wandb(monkeypatch)
    paths = [tmp_path / "a" / "teacher" / "metrics.jsonl",
             tmp_path / "a" / "teacher" / "metrics.jsonl",
             tmp_path / "a" / "imitator" / "metrics.jsonl",
             tmp_path / "b" / "teacher" / "metrics.jsonl"]
    for i, path in enumerate(paths):
        with MetricsLogger(path, resume_step=None if i == 0 else 10, wandb_project="p",
                           run_name="a") as log:
            log.log({"step": 20, "loss": 0.5, "note": "text"})
    ids = [kw["id"] for kw in inits]
    assert ids[0] == ids[1] and len(set(ids)) == 3
    assert all(kw["resume"] == "allow" and kw["project"] == "p" for kw in inits)
    assert logged[0] == (20, {"loss": 0.5})  # numbers only


def test_wandb_run_id_names_the_file_not_how_its_path_is_spelled(tmp_path, monkeypatch):
    # runs_dir given relative once and absolute once: one W&B run. The same relative path
    # from another working directory is another run's file: another W&B run, not a merge.
    inits, _ = fake_wandb(monkeypatch)
    relative = "runs/a/teacher/metrics.jsonl"
    for cwd, path in ((tmp_path / "x", relative), (tmp_path / "x", tmp_path / "x" / relative),
                      (tmp_path / "y", relative)):
        cwd.mkdir(exist_ok=True)
        monkeypatch.chdir(cwd)
        MetricsLogger(path, wandb_project="p").close()
    ids = [kw["id"] for kw in inits]
    assert ids[0] == ids[1] != ids[2]


def test_tensorboard_hides_the_events_a_resumed_run_logs_again(tmp_path, monkeypatch):
    # A stand-in tensorboardX. TensorBoard hides earlier events from purge_step on: all of them
    # for a fresh start (0); after a resume from step 20, those after it (21), as metrics.jsonl
    # keeps step 20's record. Only numbers are written, at the record's step.
    writers = []

    class Writer:
        def __init__(self, logdir, purge_step):
            self.logdir, self.purge_step, self.scalars = logdir, purge_step, []
            writers.append(self)

        def add_scalar(self, tag, value, step):
            self.scalars.append((tag, value, step))

        def close(self):
            pass

    monkeypatch.setitem(sys.modules, "tensorboardX", types.SimpleNamespace(SummaryWriter=Writer))
    path = tmp_path / "teacher" / "metrics.jsonl"
    for resume_step in (None, 20):
        with MetricsLogger(path, resume_step=resume_step, tensorboard=True) as log:
            log.log({"step": 30, "loss": 0.5, "note": "text"})
    assert [w.purge_step for w in writers] == [0, 21]
    assert writers[0].logdir == str(tmp_path / "teacher" / "tensorboard")
    assert writers[1].scalars == [("loss", 0.5, 30)]


def test_a_damaged_stretch_mid_file_is_named_by_its_first_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b'{"step": 1}\ngarbage\n[2]\n{"step": 4}\n')
    with pytest.raises(ArtifactError, match=r"line 2 is not a JSON record, and records follow it "
                                            r"\(line 4\)"):
        read_jsonl(path)


def test_a_logged_record_is_in_the_file_before_the_logger_closes(tmp_path):
    # A process killed mid-stage (no close) keeps every record it logged.
    path = tmp_path / "metrics.jsonl"
    log = MetricsLogger(path)
    log.log({"step": 1, "loss": 0.5})
    assert read_jsonl(path) == [{"step": 1, "loss": 0.5}]
    log.close()


def test_scalars_become_plain_json_and_a_record_needs_a_step(tmp_path):
    import jax.numpy as jnp
    import numpy as np

    path = tmp_path / "metrics.jsonl"
    with MetricsLogger(path) as log:
        log.log({"step": jnp.int32(3), "loss": jnp.float32(0.5), "acc": np.array(0.25),
                 "n": np.int64(7), "up": float("inf"), "down": -float("inf")})
        with pytest.raises(ValueError, match="needs a 'step'"):
            log.log({"loss": 1.0})
    # strict JSON (no Infinity/NaN tokens): infinities are kept as strings
    text = path.read_text()
    record = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON token {c}"))
    assert record == {"step": 3, "loss": 0.5, "acc": 0.25, "n": 7, "up": "inf", "down": "-inf"}
    assert text.count("\n") == 1  # the refused record wrote nothing


def test_a_line_of_spaces_mid_file_is_blank_not_damage(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b'{"step": 1}\n   \t\n{"step": 2}\n')
    assert [r["step"] for r in read_jsonl(path)] == [1, 2]
