"""metrics.jsonl: append, resume drops records past the restored step, torn lines are skipped."""

import json
import math

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


def test_wandb_resumes_the_same_run_for_the_same_metrics_file(tmp_path, monkeypatch):
    # A stand-in wandb module: a resumed stage gives W&B the same run id (W&B resumes only a run
    # whose id it is given), another stage or run directory another id; records reach it.
    import sys
    import types

    inits, logged = [], []
    fake = types.SimpleNamespace(
        init=lambda **kw: inits.append(kw) or types.SimpleNamespace(
            log=lambda data, step: logged.append((step, data)), finish=lambda: None))
    monkeypatch.setitem(sys.modules, "wandb", fake)
    paths = [tmp_path / "a" / "teacher" / "metrics.jsonl", tmp_path / "a" / "teacher" / "metrics.jsonl",
             tmp_path / "a" / "imitator" / "metrics.jsonl", tmp_path / "b" / "teacher" / "metrics.jsonl"]
    for i, path in enumerate(paths):
        with MetricsLogger(path, resume_step=None if i == 0 else 10, wandb_project="p",
                           run_name="a") as log:
            log.log({"step": 20, "loss": 0.5, "note": "text"})
    ids = [kw["id"] for kw in inits]
    assert ids[0] == ids[1] and len(set(ids)) == 3
    assert all(kw["resume"] == "allow" and kw["project"] == "p" for kw in inits)
    assert logged[0] == (20, {"loss": 0.5})  # numbers only
