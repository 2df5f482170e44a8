"""`climit inspect`: overview, --stats, --diff, --json and error messages on synthetic checkpoints."""

from __future__ import annotations

import json
import math

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from climit import checkpoint, cli, histories
from climit import inspect as inspect_lib

L = 4  # learners of the stacked teacher

# A failed orbax load leaves a pending coroutine reported at garbage collection: not ours.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def _teacher_params(scale: float) -> dict:
    """Stacked over L learners: learner l's kernel is all (l + 1) * scale."""
    kernel = jnp.stack([jnp.full((2, 3), (l + 1) * scale) for l in range(L)])
    return {"Dense_0": {"kernel": kernel, "bias": jnp.zeros((L, 3))},
            "Dense_1": {"kernel": jnp.ones((L, 3, 5)), "bias": jnp.zeros((L, 5))}}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs") / "tiny"
    with checkpoint.snapshots(root / "teacher" / "snapshots") as ck:
        ck.save(10_000, _teacher_params(1.0), config={"teacher": {"lr": 0.001}}, metrics={"return": 3.0})
        ck.save(20_000, _teacher_params(1.5), config={"teacher": {"lr": 0.001}}, metrics={"return": 7.5})
    params = {"embed": jnp.arange(12.0).reshape(3, 4), "head": {"w": jnp.ones((4, 5), jnp.bfloat16)}}
    with checkpoint.Checkpointer(root / "imitator" / "checkpoints", keep=2, best="heldout_loss") as ck:
        for step, loss in ((100, 2.0), (200, 1.0)):
            state = {"params": params, "opt": optax.adamw(1e-3).init(params), "step": jnp.int32(step)}
            ck.save(step, state, config={"imitator": {"d_model": 4}},
                    metrics={"heldout_loss": loss, "accuracy": 1 / loss})
            params = {**params, "embed": params["embed"] + 1.0}
    return root


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    rc = cli.main(["inspect", *map(str, argv)])
    out, err = capsys.readouterr()
    return rc, out, err


def test_overview_of_a_run_directory(run, capsys):
    view = inspect_lib.overview(run)
    names = [d["name"] for d in view["checkpoints"]]
    assert names == ["imitator/checkpoints", "teacher/snapshots"]
    imitator, teacher = view["checkpoints"]
    assert imitator["steps"] == [100, 200] and imitator["config"] == {"imitator": {"d_model": 4}}
    assert [c["metrics"]["heldout_loss"] for c in imitator["checkpoints"]] == [2.0, 1.0]
    assert imitator["tree"]["params/head/w"] == {"shape": [4, 5], "dtype": "bfloat16", "size": 20}
    assert imitator["groups"] == {"opt": 1 + 2 * 32, "params": 32, "step": 1}
    assert teacher["steps"] == [10_000, 20_000] and teacher["num_params"] == L * (6 + 3 + 15 + 5)
    assert teacher["tree"]["Dense_0/kernel"]["shape"] == [L, 2, 3]
    rc, out, err = _cli(capsys, run)
    assert rc == 0 and err == ""
    assert "teacher/snapshots" in out and "Dense_0/kernel  4x2x3  float32  24" in out
    assert "step   return" in out and "20000  7.5" in out and "lr: 0.001" in out
    rc, out, _ = _cli(capsys, run, "--json")
    assert rc == 0 and json.loads(out) == json.loads(inspect_lib.dumps(view))
    # A step directory shows that step.
    assert inspect_lib.overview(run / "teacher" / "snapshots" / "10000")["checkpoints"][0]["step"] == 10_000


def test_stats_of_stacked_teacher_and_imitator(run, capsys):
    snap = run / "teacher" / "snapshots"
    view = inspect_lib.stats(snap)  # latest: scale 1.5, kernel of learner l = 1.5 (l + 1)
    k = view["leaves"]["Dense_0/kernel"]
    norms = [1.5 * (l + 1) * math.sqrt(6) for l in range(L)]
    assert view["learners"] == L and view["step"] == 20_000
    assert k["norm_mean"] == pytest.approx(np.mean(norms)) and k["norm_min"] == pytest.approx(norms[0])
    assert k["norm_max"] == pytest.approx(norms[-1]) and k["mean_mean"] == pytest.approx(1.5 * 2.5)
    assert k["std_mean"] == pytest.approx(0.0)
    one = inspect_lib.stats(snap, step=10_000, learner=2)["leaves"]["Dense_0/kernel"]
    assert one == {"shape": [2, 3], "norm": pytest.approx(3 * math.sqrt(6)), "mean": 3.0,
                   "std": 0.0, "min": 3.0, "max": 3.0}
    imit = inspect_lib.stats(run / "imitator" / "checkpoints", step=100, prefix="params")
    assert imit["learners"] is None and set(imit["leaves"]) == {"params/embed", "params/head/w"}
    e = np.arange(12.0)
    assert imit["leaves"]["params/embed"]["mean"] == pytest.approx(e.mean())
    assert imit["leaves"]["params/embed"]["std"] == pytest.approx(e.std())
    rc, out, err = _cli(capsys, snap, "--stats", "--learner", 1)
    assert rc == 0 and "learner 1" in out and "Dense_0/kernel  2x3" in out
    rc, out, _ = _cli(capsys, snap, "--stats", "--json")
    assert json.loads(out)["leaves"]["Dense_1/kernel"]["norm_min"] == pytest.approx(math.sqrt(15))


def test_diff_steps_and_paths(run, capsys):
    snap = run / "teacher" / "snapshots"
    view = inspect_lib.diff(snap, "10000", "20000")
    assert (view["changed"], view["unchanged"]) == (1, 3)
    k = view["leaves"]["Dense_0/kernel"]
    # B - A = 0.5 (l + 1) everywhere; ||A|| = sqrt(6 * sum (l+1)^2)
    assert k["changed"] and k["max_abs_diff"] == pytest.approx(0.5 * L)
    assert k["rel_change"] == pytest.approx(0.5)
    assert view["leaves"]["Dense_1/kernel"] == {"shape": [L, 3, 5], "changed": False,
                                                "max_abs_diff": 0.0, "rel_change": 0.0}
    one = inspect_lib.diff(snap, "10000", "20000", learner=0)["leaves"]["Dense_0/kernel"]
    assert one["max_abs_diff"] == pytest.approx(0.5) and one["shape"] == [2, 3]
    # Two checkpoint paths with different trees: shared leaves compared, the rest listed.
    imit = run / "imitator" / "checkpoints"
    cross = inspect_lib.diff(snap, str(imit / "100"), str(imit / "200"), prefix="params")
    assert cross["leaves"]["params/embed"]["max_abs_diff"] == 1.0 and cross["changed"] == 1
    rc, out, _ = _cli(capsys, snap, "--diff", 10_000, 20_000)
    assert rc == 0 and "1 leaves changed, 3 unchanged" in out
    assert "Dense_0/kernel  4x2x3  yes" in out
    rc, out, _ = _cli(capsys, imit, "--diff", 100, str(snap), "--json")
    data = json.loads(out)
    assert data["only_a"][:1] == ["opt/0/count"] and "Dense_0/bias" in data["only_b"]


def _error(capsys, *argv) -> str:
    rc, out, err = _cli(capsys, *argv)
    assert rc == 1 and out == "" and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and err.startswith("climit: error: ")
    return err


def test_clear_errors_never_tracebacks(run, tmp_path, capsys):
    assert "no such file or directory" in _error(capsys, tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    assert "holds no checkpoints" in _error(capsys, tmp_path / "empty")
    h = histories.create(tmp_path / "hist", spec={"name": "t", "interface": "grid", "obs_shape": [2],
                                                  "obs_dtype": "uint8", "num_actions": 2},
                         streams=[histories.StreamInfo(0, 0, (1,), 0)])
    assert h.num_steps == 0
    assert "holds no checkpoints" in _error(capsys, tmp_path / "hist")
    assert "several checkpoint directories" in _error(capsys, run, "--stats")
    assert "out of range: 4 learners" in _error(capsys, run / "teacher" / "snapshots", "--stats",
                                                "--learner", 4)
    assert "not stacked" in _error(capsys, run / "imitator" / "checkpoints", "--stats", "--learner", 0)
    assert "no checkpoint at step 5" in _error(capsys, run / "teacher" / "snapshots", "--diff", 5, 10000)


def test_damaged_checkpoint_message(tmp_path, capsys):
    with checkpoint.Checkpointer(tmp_path / "ck") as ck:
        ck.save(7, {"w": jnp.arange(500.0)})
    data = max((p for p in (tmp_path / "ck" / "7").rglob("*") if p.is_file() and "/d/" in str(p)),
               key=lambda p: p.stat().st_size)
    raw = bytearray(data.read_bytes()); raw[-10] ^= 0xFF; data.write_bytes(bytes(raw))
    err = _error(capsys, tmp_path / "ck", "--stats")
    assert "is damaged" in err and data.name in err
    (tmp_path / "ck" / "7" / "_CHECKPOINT_METADATA").write_text("{broken")
    err = _error(capsys, tmp_path / "ck")
    assert "is damaged" in err and "_CHECKPOINT_METADATA" in err


# ---------------------------------------------------------------------------------------------
# --eval on a real tiny teacher run (CartPole: even an untrained greedy DQN earns ~9 per
# episode, so returns are informative) and a tiny imitator trained on its histories
# ---------------------------------------------------------------------------------------------

EVAL_RUN = ["env.name=CartPole-v1", "env.transfer=", "env.train_tasks=1",
            "teacher.seeds=3", "teacher.total_env_steps=400", "teacher.learning_starts=100",
            "teacher.buffer_size=400", "teacher.batch_size=16", "teacher.hidden=[16]",
            "teacher.chunk_steps=200", "teacher.snapshot_steps=[200]", "teacher.eval_episodes=1",
            "imitator.context_len=16", "imitator.d_model=16", "imitator.n_layers=1",
            "imitator.n_heads=2", "imitator.batch_size=4", "imitator.train_steps=4",
            "imitator.warmup_steps=1", "imitator.eval_every=2", "imitator.seeds=2",
            "imitator.eval_batches=1", "imitator.train_windows=2"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """`climit teach` (3 CartPole learners x 400 steps) then `climit imitate` (2 seeds x 4
    steps) in a tmp runs dir (~20 s on the 2-core CPU container)."""
    runs = tmp_path_factory.mktemp("evalruns")
    args = [*EVAL_RUN, f"run.runs_dir={runs}", "run.name=cp"]
    assert cli.main(["teach", "--no-progress", *args]) == 0
    assert cli.main(["imitate", "--no-progress", *args]) == 0
    return runs / "cp"


def test_eval_teacher_matches_greedy_evaluation(trained, capsys):
    from climit import config, envs
    from climit.teacher import train

    snap = trained / "teacher" / "snapshots"
    view = inspect_lib.evaluate(snap, 3)
    assert (view["kind"], view["env"], view["step"], view["episodes"]) == (
        "teacher_snapshot", "CartPole-v1", 400, 3)
    means = [r["mean_return"] for r in view["learners"]]
    assert [r["learner"] for r in view["learners"]] == [0, 1, 2] and min(means) > 0
    # Known answer: the same rollouts as the teacher's own greedy evaluation with the same key.
    cfg = config.load(None, EVAL_RUN)
    with checkpoint.snapshots(snap, readonly=True) as s:
        params_G = s.restore(400)["params"]
    expected = train.evaluate_greedy(cfg.teacher, envs.make("CartPole-v1"), params_G,
                                     train.plan(cfg).tasks_GxK, inspect_lib._eval_key(cfg.run.seed, 0), 3)
    assert means == pytest.approx(expected.tolist(), rel=1e-6)
    est = view["mean_return"]
    assert est["value"] == pytest.approx(np.mean(means)) and est["lo"] <= est["value"] <= est["hi"]
    # One learner alone gets the same rollout; the whole-state checkpoint at the same step too.
    one = inspect_lib.evaluate(snap, 3, learner=1)
    assert one["mean_return"]["value"] == means[1] and one["interval_over"] == "episodes"
    ckpt = inspect_lib.evaluate(trained / "teacher" / "checkpoints", 3)
    assert ckpt["kind"] == "teacher_checkpoint" and ckpt["learners"] == view["learners"]
    rc, out, err = _cli(capsys, snap, "--eval", 3, "--learner", 2, "--json")
    assert rc == 0 and json.loads(out)["learners"] == [view["learners"][2]]
    rc, out, _ = _cli(capsys, snap, "--eval", 3)
    assert rc == 0 and "3 learners, each on its own task: mean return" in out
    assert "95% bootstrap interval over learners x episodes" in out


def test_eval_imitator_seeds_from_an_empty_context(trained, capsys):
    ck = trained / "imitator" / "ad" / "checkpoints"
    view = inspect_lib.evaluate(ck, 2, tasks=2)
    assert (view["kind"], view["step"], len(view["tasks"])) == ("imitator", 4, 2)
    seeds = [r["mean_return"] for r in view["seeds"]]
    assert [r["seed"] for r in view["seeds"]] == [0, 1] and min(seeds) > 0
    assert view["mean_return"]["value"] == pytest.approx(np.mean(seeds))
    assert view["policy"] == "imitator (sample actions) from an empty context"
    assert inspect_lib.evaluate(ck, 2, tasks=2) == view  # deterministic
    other = inspect_lib.evaluate(ck, 2, tasks=2, seed=1)  # another evaluation key
    assert [r["mean_return"] for r in other["seeds"]] != seeds
    alone = inspect_lib.evaluate(ck, 2, tasks=2, learner=1)
    assert alone["seeds"] == [view["seeds"][1]]
    rc, out, err = _cli(capsys, ck, "--eval", 2, "--tasks", 2)
    assert rc == 0 and "2 seeds x 2 held-out tasks: mean return" in out and "in context:" in out
    rc, out, _ = _cli(capsys, ck, "--eval", 2, "--tasks", 2, "--json")
    assert json.loads(out) == json.loads(inspect_lib.dumps(view))


def test_eval_errors(trained, run, capsys):
    assert "neither a climit teacher" in _error(capsys, run / "teacher" / "snapshots", "--eval", 2)
    assert "out of range: 3 learners" in _error(capsys, trained / "teacher" / "snapshots", "--eval",
                                                2, "--learner", 3)
    assert "out of range: 2 imitator seeds" in _error(capsys, trained / "imitator" / "ad" /
                                                      "checkpoints", "--eval", 2, "--learner", 5)
    assert "choose one of" in _error(capsys, trained / "teacher" / "snapshots", "--eval", 2, "--stats")
    assert "at least one episode" in _error(capsys, trained / "teacher" / "snapshots", "--eval", 0)
