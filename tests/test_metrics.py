"""metrics.jsonl: append, resume drops records past the restored step, torn lines are skipped."""

import json
import math

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
