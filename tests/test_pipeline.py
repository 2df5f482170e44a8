"""`climit run`: stage skipping and resuming (fast, with recording fakes) and a real tiny run."""

import json
import shutil
import sys
from pathlib import Path

import pytest

from climit import cli, config, evaluate, pipeline

sys.path.insert(0, str(Path(__file__).parent))
from test_report import SUMMARY_KEYS, synthetic_eval  # noqa: E402

import procs  # noqa: E402

TINY = """
env: {train_tasks: 4}
teacher: {total_env_steps: 400, learning_starts: 100, buffer_size: 400, batch_size: 16,
          chunk_steps: 200, eps_decay_steps: 200, snapshot_steps: [200], eval_episodes: 1}
imitator: {train_steps: 20, warmup_steps: 5, eval_every: 10, context_len: 20, ed_fraction: 0.25,
           d_model: 16, n_layers: 1, n_heads: 2, batch_size: 8}
eval: {tasks: 2, env_steps: 400, transfer_env_steps: 200, horizon_factor: 2, dqn_seeds: 1,
       random_seeds: 1, bootstrap: 50, chunk_steps: 400, horizon_controls: false}
"""


def tiny_config(tmp_path, *overrides):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    return path, config.load(path, [f"run.runs_dir={tmp_path / 'runs'}", "run.name=tiny",
                                    *overrides])


@pytest.fixture
def fake_stages(fake_training, monkeypatch):
    """The three heavy stages replaced by fakes that write fingerprinted artifacts and record
    their calls (the pipeline's own skip/resume logic is what is under test)."""
    calls = fake_training

    def evaluate_(cfg, rd, progress=True, log=print):
        calls["evaluate"].append(cfg.run.name)
        results, _ = synthetic_eval(Path(rd))
        results["fingerprint"] = evaluate.fingerprint(cfg)
        (Path(rd) / "eval" / "results.json").write_text(json.dumps({"format": 1, **results}))

    monkeypatch.setattr(evaluate, "evaluate", evaluate_)
    return calls


def test_interrupted_run_does_not_redo_finished_stages(tmp_path, fake_stages):
    _, cfg = tiny_config(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        pipeline.run(cfg, progress=False, log=lambda m: None, stop_after="imitate")
    assert len(fake_stages["teach"]) == 1
    assert fake_stages["imitate"] == ["ad", "ed", "single_episode", "ad_h200"]
    assert len(fake_stages["evaluate"]) == 0
    assert not (tmp_path / "runs" / "tiny" / "config.yaml").exists()  # only once all stages ran

    lines = []
    out = pipeline.run(cfg, progress=False, log=lines.append)
    assert len(fake_stages["teach"]) == 1 and len(fake_stages["imitate"]) == 4
    assert len(fake_stages["evaluate"]) == 1
    assert {k: out[k] for k in pipeline.STAGES} == {
        "teach": "skipped", "imitate": "skipped", "evaluate": "done", "report": "done"}
    assert any(line.startswith("[1/4] teach: skipped") for line in lines)
    assert SUMMARY_KEYS <= set(out["summary"]["tests"]["a"])

    # Every stage done, as by `climit teach`, `imitate`, `evaluate` and `report` run one by one:
    # a `climit run` that skips them all still writes config.yaml.
    (tmp_path / "runs" / "tiny" / "config.yaml").unlink()
    out = pipeline.run(cfg, progress=False, log=lambda m: None)
    assert set(out[k] for k in pipeline.STAGES) == {"skipped"}
    assert len(fake_stages["evaluate"]) == 1
    assert config.load(tmp_path / "runs" / "tiny" / "config.yaml") == cfg  # resolved config


def test_a_stop_asked_during_a_stage_stops_before_the_next(tmp_path, fake_stages, monkeypatch):
    """SIGTERM during the teacher's last moments (its greedy evaluation polls nothing): the
    run stops before the imitators start, and the same command goes on from there."""
    import os
    import signal

    from climit import stopping
    from climit.teacher import train as teacher_train

    fake_teach = teacher_train.teach

    def teach_then_sigterm(*args, **kwargs):
        fake_teach(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(teacher_train, "teach", teach_then_sigterm)
    _, cfg = tiny_config(tmp_path)
    with stopping.watch(), pytest.raises(stopping.Stopped, match="before its imitate stage"):
        pipeline.run(cfg, progress=False, log=lambda m: None)
    assert len(fake_stages["teach"]) == 1 and fake_stages["imitate"] == []
    monkeypatch.setattr(teacher_train, "teach", fake_teach)
    with stopping.watch():
        out = pipeline.run(cfg, progress=False, log=lambda m: None)
    assert {k: out[k] for k in pipeline.STAGES} == {
        "teach": "skipped", "imitate": "done", "evaluate": "done", "report": "done"}


def test_a_batch_the_devices_cannot_split_is_refused_before_the_teacher(tmp_path, fake_stages,
                                                                       monkeypatch):
    import jax

    from climit.errors import ClimitError

    _, cfg = tiny_config(tmp_path)  # imitator.batch_size 8
    monkeypatch.setattr(jax, "device_count", lambda *a: 3)
    with pytest.raises(ClimitError,
                       match="imitator.batch_size = 8 is not divisible by the 3 devices"):
        pipeline.run(cfg, progress=False, log=lambda m: None)
    assert fake_stages["teach"] == [] and fake_stages["imitate"] == []


def test_a_stage_that_runs_reruns_every_later_stage(tmp_path, fake_stages, monkeypatch):
    """New imitators (here: a model code revision) mean a new evaluation and report, and the
    agents an interrupted evaluation had finished on the old imitators are not reused."""
    from climit.imitator import model

    _, cfg = tiny_config(tmp_path)
    pipeline.run(cfg, progress=False, log=lambda m: None)
    parts = tmp_path / "runs" / "tiny" / "eval" / "parts"
    parts.mkdir()
    (parts / "imitator_on_darkroom.npz").write_bytes(b"from the old imitators")
    monkeypatch.setattr(model, "REVISION", model.REVISION + 1)
    out = pipeline.run(cfg, progress=False, log=lambda m: None)
    assert {k: out[k] for k in pipeline.STAGES} == {
        "teach": "skipped", "imitate": "done", "evaluate": "done", "report": "done"}
    assert len(fake_stages["imitate"]) == 8 and len(fake_stages["evaluate"]) == 2
    assert not parts.exists()
    # Evaluation done: parts left behind by a kill just after results.json are cleared too.
    parts.mkdir()
    (parts / "imitator_on_darkroom.npz").write_bytes(b"leftover")
    out = pipeline.run(cfg, progress=False, log=lambda m: None)
    assert set(out[k] for k in pipeline.STAGES) == {"skipped"} and not parts.exists()


def test_a_damaged_evaluation_is_evaluated_again_not_skipped(tmp_path, fake_stages):
    # results.json matches the config but curves.npz is cut short: skipping the stage would
    # fail in the report on every retry.
    _, cfg = tiny_config(tmp_path)
    pipeline.run(cfg, progress=False, log=lambda m: None)
    curves = tmp_path / "runs" / "tiny" / "eval" / "curves.npz"
    curves.write_bytes(curves.read_bytes()[:500])
    assert pipeline.stage_status(cfg)["evaluate"] is False
    out = pipeline.run(cfg, progress=False, log=lambda m: None)
    assert (out["teach"], out["imitate"], out["evaluate"], out["report"]) == (
        "skipped", "skipped", "done", "done")
    assert len(fake_stages["evaluate"]) == 2 and pipeline.stage_status(cfg)["evaluate"] is True


@pytest.mark.parametrize("damage", [b"[]", b"[1]", b"\xff\xfe", b'{"fingerprint": '])
def test_a_damaged_summary_or_results_file_reruns_its_stage(tmp_path, fake_stages, damage):
    # JSON of the wrong kind or bytes that are not UTF-8: the stage counts as not done (and
    # runs again), never a traceback.
    _, cfg = tiny_config(tmp_path)
    pipeline.run(cfg, progress=False, log=lambda m: None)
    rd = tmp_path / "runs" / "tiny"
    (rd / "teacher" / "summary.json").write_bytes(damage)
    (rd / "eval" / "results.json").write_bytes(damage)
    assert pipeline.stage_status(cfg) == {"teach": False, "imitate": True, "evaluate": False,
                                          "report": True}
    out = pipeline.run(cfg, progress=False, log=lambda m: None)
    assert {k: out[k] for k in pipeline.STAGES} == {
        "teach": "done", "imitate": "done", "evaluate": "done", "report": "done"}


def test_a_kill_between_a_new_evaluation_and_its_report_rebuilds_the_report(tmp_path,
                                                                            fake_stages):
    # A finished run, then one with another eval setting killed right after its evaluation:
    # the report beside the new results still describes the old evaluation. The resume skips
    # the evaluation and must not skip the report because a summary.json exists.
    _, cfg = tiny_config(tmp_path)
    pipeline.run(cfg, progress=False, log=lambda m: None)
    _, cfg2 = tiny_config(tmp_path, "eval.bootstrap=60")
    with pytest.raises(KeyboardInterrupt):
        pipeline.run(cfg2, progress=False, log=lambda m: None, stop_after="evaluate")
    assert pipeline.stage_status(cfg2) == {"teach": True, "imitate": True, "evaluate": True,
                                           "report": False}
    out = pipeline.run(cfg2, progress=False, log=lambda m: None)
    assert {k: out[k] for k in pipeline.STAGES} == {
        "teach": "skipped", "imitate": "skipped", "evaluate": "skipped", "report": "done"}
    assert out["summary"]["fingerprint"] == evaluate.fingerprint(cfg2)
    assert len(fake_stages["evaluate"]) == 2


def test_climit_evaluate_alone_keeps_the_report_and_config_yaml_current(tmp_path, fake_stages):
    # A finished `climit run`, then the evaluation alone with another eval setting: the report
    # and config.yaml beside it describe the new evaluation, and the replacement is said.
    _, cfg = tiny_config(tmp_path)
    pipeline.run(cfg, progress=False, log=lambda m: None)
    rd = tmp_path / "runs" / "tiny"
    old_fp = json.loads((rd / "report" / "summary.json").read_text())["fingerprint"]
    _, cfg2 = tiny_config(tmp_path, "eval.random_seeds=2")
    results = json.loads((rd / "eval" / "results.json").read_text())
    results["config"] = config.to_dict(cfg)
    (rd / "eval" / "results.json").write_text(json.dumps(results))
    lines = []
    evaluate._log_replaced(cfg2, rd, lines.append)
    assert lines == [f"evaluate: replacing the evaluation in {rd / 'eval'}, made with "
                     f"eval.random_seeds: 1 -> 2"]
    evaluate.evaluate(cfg2, rd)  # the fake: results.json with cfg2's fingerprint
    pipeline.after_evaluate(cfg2, log=lines.append)
    new_fp = json.loads((rd / "report" / "summary.json").read_text())["fingerprint"]
    assert new_fp == evaluate.fingerprint(cfg2) != old_fp
    assert config.load(rd / "config.yaml") == cfg2 and lines[-1].startswith("report rebuilt")
    # Where `climit run` wrote neither, nothing is created.
    shutil.rmtree(rd / "report")
    (rd / "config.yaml").unlink()
    pipeline.after_evaluate(cfg2, log=lines.append)
    assert not (rd / "report").exists() and not (rd / "config.yaml").exists()


def test_climit_evaluate_command_rebuilds_the_report_beside_it(tmp_path, fake_stages, capsys):
    # The command, not only pipeline.after_evaluate: after `climit run`, `climit evaluate` with
    # another eval setting leaves no report or config.yaml of the previous evaluation.
    path, cfg = tiny_config(tmp_path)
    pipeline.run(cfg, progress=False, log=lambda m: None)
    rd = tmp_path / "runs" / "tiny"
    argv = ["evaluate", "--config", str(path), "--no-progress", f"run.runs_dir={tmp_path / 'runs'}",
            "run.name=tiny", "eval.random_seeds=2"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    _, cfg2 = tiny_config(tmp_path, "eval.random_seeds=2")
    assert json.loads((rd / "report" / "summary.json").read_text())["fingerprint"] == \
        evaluate.fingerprint(cfg2) != evaluate.fingerprint(cfg)
    assert config.load(rd / "config.yaml") == cfg2
    assert f"report rebuilt -> {rd / 'report'}" in out and "climit report" not in out
    # Without a report there, none is built: the command says how to build one.
    shutil.rmtree(rd / "report")
    assert cli.main(argv) == 0
    assert f"build the report with `climit report {rd}`" in capsys.readouterr().out
    assert not (rd / "report").exists() and len(fake_stages["evaluate"]) == 3


def test_climit_run_stopped_or_interrupted_says_so_and_the_same_command_finishes(
        tmp_path, fake_stages, monkeypatch, capsys):
    """--time-limit stops `climit run` cleanly (exit 75) and Ctrl-C exits 130, each with one
    line saying to run the same command again; it then finishes."""
    from climit import stopping
    from climit.teacher import train as teacher_train

    path, _ = tiny_config(tmp_path)
    argv = ["run", "--config", str(path), "--no-progress", f"run.runs_dir={tmp_path / 'runs'}",
            "run.name=tiny"]
    assert cli.main([*argv, "--time-limit", "0.001s"]) == stopping.EXIT_CODE
    assert capsys.readouterr().err == ("climit: stopped (time limit): climit run before its teach "
                                       "stage; run the same command again to resume\n")
    fake_teach = teacher_train.teach

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(teacher_train, "teach", ctrl_c)
    assert cli.main(argv) == 130
    assert capsys.readouterr().err == "climit: interrupted; run the same command again to resume\n"
    monkeypatch.setattr(teacher_train, "teach", fake_teach)
    assert cli.main(argv) == 0
    assert "[4/4] report: done" in capsys.readouterr().out and len(fake_stages["teach"]) == 1


def test_changed_sections_rerun_only_what_depends_on_them(tmp_path, fake_stages):
    _, cfg = tiny_config(tmp_path)
    pipeline.run(cfg, progress=False, log=lambda m: None)
    _, cfg2 = tiny_config(tmp_path, "eval.bootstrap=60")
    out = pipeline.run(cfg2, progress=False, log=lambda m: None)
    assert (out["teach"], out["imitate"], out["evaluate"]) == ("skipped", "skipped", "done")
    _, cfg3 = tiny_config(tmp_path, "eval.bootstrap=60", "eval.horizon_controls=true")
    out = pipeline.run(cfg3, progress=False, log=lambda m: None)
    assert out["imitate"] == "done"  # only the two new horizon controls are trained
    assert fake_stages["imitate"][-2:] == ["ed_h200", "single_episode_h200"]
    assert len(fake_stages["imitate"]) == 6


def test_an_imitator_whose_best_checkpoint_is_lost_is_not_skipped(tmp_path, fake_stages):
    """A summary with a matching fingerprint is not enough: if the best (or final) checkpoint
    it names is missing or fails its checksums, the imitate stage trains that imitator again
    (the evaluation would otherwise load another checkpoint as the best, or fail)."""
    import numpy as np

    from climit import checkpoint
    from climit.imitator import train as imitator_train

    _, cfg = tiny_config(tmp_path)
    pipeline.run(cfg, progress=False, log=lambda m: None)
    ad = imitator_train.output_dir(evaluate.plan(cfg).imitators["imitator"])
    summary = json.loads((ad / "summary.json").read_text())
    for lose in ("missing", "damaged"):
        # the fake trainer writes no checkpoint: give the summary one, as a real run has
        (ad / "summary.json").write_text(json.dumps({**summary, "best_step": 20, "final_step": 20}))
        with checkpoint.Checkpointer(ad / "checkpoints", keep=2) as ckpt:
            ckpt.save(20, {"w": np.arange(1000.0)}, metrics={"heldout_loss": 1.0})
        assert pipeline.stage_status(cfg)["imitate"]
        if lose == "missing":
            (ad / "checkpoints" / "20" / "climit_checksums.json").unlink()  # an unfinished save
        else:
            data = max((p for p in (ad / "checkpoints" / "20").rglob("*") if p.is_file()),
                       key=lambda p: p.stat().st_size)
            data.write_bytes(data.read_bytes()[:50])
        assert not pipeline.stage_status(cfg)["imitate"], lose
        trained = len(fake_stages["imitate"])
        out = pipeline.run(cfg, progress=False, log=lambda m: None)
        assert fake_stages["imitate"][trained:] == ["ad"]  # the others stay skipped
        assert {k: out[k] for k in pipeline.STAGES} == {
            "teach": "skipped", "imitate": "done", "evaluate": "done", "report": "done"}
        shutil.rmtree(ad / "checkpoints")


def test_a_stop_asked_during_an_imitator_stops_before_the_next_one(tmp_path, fake_stages,
                                                                    monkeypatch):
    """SIGTERM while the first imitator finishes: the run stops before the second one starts
    (its data, compile and first checkpoint could outlast a scheduler's grace period)."""
    import os
    import signal

    from climit import stopping
    from climit.imitator import train as imitator_train

    fake_train = imitator_train.train

    def train_then_sigterm(*args, **kwargs):
        out = fake_train(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)
        return out

    monkeypatch.setattr(imitator_train, "train", train_then_sigterm)
    _, cfg = tiny_config(tmp_path)
    with stopping.watch(), pytest.raises(stopping.Stopped, match="before imitator ed"):
        pipeline.run(cfg, progress=False, log=lambda m: None)
    assert fake_stages["imitate"] == ["ad"]


def test_config_error_stops_before_any_work(tmp_path, fake_stages, capsys):
    path, _ = tiny_config(tmp_path)
    for bad, key in (("eval.horizon=10", "eval.horizon"),  # shorter than one episode
                     ("eval.horizon=300", "eval.horizon"),  # 2 x 300 > 400 eval steps
                     ("eval.tasks=18", "eval.tasks"),  # Dark Room holds out 17 goals
                     ("eval.transfer_env_steps=100", "teacher.learning_starts")):  # fresh DQN
        rc = cli.main(["run", "--config", str(path), f"run.runs_dir={tmp_path / 'runs'}", bad])
        assert rc == 2 and key in capsys.readouterr().err, bad
    assert not (tmp_path / "runs").exists() and len(fake_stages["teach"]) == 0


@pytest.mark.slow
def test_climit_run_tiny_end_to_end(tmp_path):
    """Real stages at tiny size (~75 s on the 2-core CPU container): interrupted after the
    teacher, then `climit run` finishes without redoing it; the report has every key."""
    path, cfg = tiny_config(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        pipeline.run(cfg, progress=False, log=lambda m: None, stop_after="teach")
    teacher_summary = tmp_path / "runs" / "tiny" / "teacher" / "summary.json"
    stamp = teacher_summary.stat().st_mtime_ns
    rc = cli.main(["run", "--config", str(path), "--no-progress",
                   f"run.runs_dir={tmp_path / 'runs'}", "run.name=tiny"])
    assert rc == 0
    assert teacher_summary.stat().st_mtime_ns == stamp  # not redone
    rd = tmp_path / "runs" / "tiny"
    summary = json.loads((rd / "report" / "summary.json").read_text())
    for key in ("a", "b", "c"):
        assert summary["tests"][key]["ran"] and SUMMARY_KEYS <= set(summary["tests"][key])
    with open(rd / "eval" / "results.json") as f:
        results = json.load(f)
    assert results["tests"]["a"]["seeds"] == {"imitator": 1, "ed": 1, "ablated": 1, "random": 1,
                                              "dqn": 1}
    assert results["tests"]["b"]["window"] == [220, 400]  # (H, 2H] with H = 200
    before = results["tests"]["b"]["before_h"]  # the same comparison over steps up to H
    assert before["window"] == [20, 200] and set(before["agents"]) == {"imitator", "dqn"}
    assert summary["tests"]["b"]["imitator_dqn_auc_ratio_before_h"] == \
        before["vs_dqn"]["imitator"]["auc_ratio"]["value"]
    assert not (rd / "eval" / "parts").exists()
    for name in ("report.md", "test_a.png", "test_b.png", "test_c.png"):
        assert (rd / "report" / name).is_file()
    # the imitators' offline facts travel from their summaries into the results and the report
    facts = results["imitators"]
    assert set(facts) == {"imitator", "ed", "ablated", "imitator_h"}
    ad = json.loads((rd / "imitator" / "ad" / "summary.json").read_text())
    assert facts["imitator"]["heldout_accuracy_by_position"] == ad["heldout_accuracy_by_position"]
    assert facts["imitator_h"]["tag"] == "ad_h200"
    md = (rd / "report" / "report.md").read_text()
    assert facts["ed"]["data"] == "the last 25% of all 400 env steps, every episode"
    assert facts["ed"]["subsample"] == 1
    assert "## The imitators offline" in md
    assert "| imitator (AD, first H steps) | the first 200 env steps, every episode |" in md
    # A history damaged after the run: the teach stage is not done (`climit teach` then reports
    # or repairs it), where the summary's fingerprint alone skipped it to fail in imitate.
    chunk = sorted((rd / "teacher" / "histories" / "chunks").glob("*.npz"))[0]
    saved = chunk.read_bytes()
    chunk.write_bytes(saved[:100] + bytes([saved[100] ^ 1]) + saved[101:])
    assert pipeline.stage_status(cfg)["teach"] is False
    chunk.write_bytes(saved)
    assert pipeline.stage_status(cfg)["teach"] is True


def test_climit_run_on_two_processes(tmp_path):
    """`climit run` as a 2-host job (2 local processes x 2 CPU devices; ~2 min on 2 cores): the
    teacher and imitators shard over all 4 devices, process 0 alone writes and logs, and the
    stages meet at barriers, so the report comes out whole."""
    path, _ = tiny_config(tmp_path)
    code = ("import sys, jax; from climit import cli, parallel; assert parallel.initialize(); "
            "assert jax.device_count() == 4; sys.exit(cli.main(sys.argv[1:]))")
    (rc0, out0), (rc1, out1) = procs.run_job(
        [sys.executable, "-c", code, "run", "--config", str(path), "--no-progress",
         f"run.runs_dir={tmp_path / 'runs'}", "run.name=hosts"], 600)
    assert [rc0, rc1] == [0, 0], out0[-3000:] + out1[-3000:]
    assert "[4/4] report: done" in out0 and "[1/4]" not in out1
    rd = tmp_path / "runs" / "hosts"
    summary = json.loads((rd / "report" / "summary.json").read_text())
    for key in ("a", "b", "c"):
        assert summary["tests"][key]["ran"] and SUMMARY_KEYS <= set(summary["tests"][key])
    assert not (rd / "eval" / "parts").exists()
    teacher = json.loads((rd / "teacher" / "summary.json").read_text())
    assert teacher["num_learners"] == 4 and len(teacher["final_return_per_learner"]) == 4
