"""scripts/profile_teacher.py: its trace summary (known answer) and one tiny run end to end."""

from __future__ import annotations

import json

import pytest

import procs


@pytest.fixture(scope="module")
def tool():
    return procs.load_script("profile_teacher")


def test_summary_sums_complete_events_by_name_on_device_and_host(tool):
    meta = [{"ph": "M", "name": "process_name", "pid": 1, "args": {"name": "/device:GPU:0"}},
            {"ph": "M", "name": "process_name", "pid": 2, "args": {"name": "/host:CPU"}}]
    events = [{"ph": "X", "pid": 1, "name": "gemm", "ts": 0, "dur": 2.0},
              {"ph": "X", "pid": 1, "name": "gemm", "ts": 5, "dur": 3.0},
              {"ph": "X", "pid": 1, "name": "reduce", "ts": 9, "dur": 1.5},
              {"ph": "X", "pid": 2, "name": "launch", "ts": 0, "dur": 7.0},
              {"ph": "i", "pid": 1, "name": "instant", "ts": 3}]
    got = tool.summarize({"traceEvents": meta + events})
    assert got["device"] == {"events": 3, "busy_us": 6.5,
                             "top": [["gemm", 2, 5.0], ["reduce", 1, 1.5]]}
    assert got["host"] == {"events": 1, "busy_us": 7.0, "top": [["launch", 1, 7.0]]}


def test_a_tiny_profile_writes_rates_kernels_and_hlo_per_side(tool, tmp_path, capsys):
    tool.main([str(tmp_path), "--steps", "100", "--repeats", "1", "--variant",
               "huber=teacher.loss=huber", "teacher.hidden=[8]", "teacher.batch_size=8"])
    report = json.loads((tmp_path / "profile.json").read_text())
    assert report["learners"] == 1 and report["steps_per_call"] == 100
    for side in ("climit", "climit_huber"):
        assert report[side]["env_steps_per_s"] > 0
        assert report[side]["td_updates_per_s"] == pytest.approx(
            report[side]["env_steps_per_s"] / 2, rel=1e-4)
        assert report[side]["host"]["events"] > 0
        assert "HloModule" in (tmp_path / f"{side}.hlo.txt").read_text()
    assert len(capsys.readouterr().out.strip().splitlines()) == 2


class _Stop(Exception):
    pass


def test_each_variant_gets_the_common_overrides_then_its_own_so_its_own_win(tool, tmp_path,
                                                                            monkeypatch):
    seen = []

    def record(learners, steps, overrides):
        seen.append((learners, steps, overrides))
        if len(seen) == 2:
            raise _Stop

    monkeypatch.setattr(tool, "climit_side", record)
    with pytest.raises(_Stop):  # options and overrides intermixed, as the usage line allows
        tool.main([str(tmp_path), "teacher.loss=mse", "--variant",
                   "huber=teacher.loss=huber,teacher.double=false,",
                   "--steps", "100", "teacher.hidden=[8]", "--learners", "3"])
    common = ["teacher.loss=mse", "teacher.hidden=[8]"]
    assert seen == [(3, 100, common),
                    (3, 100, common + ["teacher.loss=huber", "teacher.double=false"])]
