"""scripts/imitator_breakdown.py end to end at a tiny size: every part of the train step is
timed and printed, so a renamed library piece it uses fails here, not on the next GPU session."""

from __future__ import annotations

import json
import sys

from climit.imitator import bench

import procs

TINY = dict(d_model=16, n_layers=1, n_heads=2, context_len=8, train_windows=1)


def test_every_part_of_the_step_is_timed(monkeypatch, capsys):
    tool = procs.load_script("imitator_breakdown")
    monkeypatch.setattr(bench, "REDUCED", {"documented": TINY})
    monkeypatch.setattr(sys, "argv", ["imitator_breakdown.py", "--small"])
    tool.main()
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    parts = {r["part"]: r for r in records}
    assert list(parts) == ["dense", "gemm", "attention", "forward", "forward_backward", "adamw",
                           "train_step"]
    assert all(r.get("ms", r.get("forward_ms")) > 0 for r in records)
    assert parts["attention"]["impl"] == "xla" and parts["train_step"]["mfu"] is None
