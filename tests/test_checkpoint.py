"""Checkpoints: exact round trips, retention, metadata-only describe, damage, device counts."""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from climit import checkpoint
from climit.errors import ArtifactError, ClimitError

import procs

REPO = Path(__file__).resolve().parents[1]

# When an orbax load fails (the damage and mismatch tests) its async internals leave a pending
# coroutine that is reported at garbage collection, possibly during a later test: not ours.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def _state(seed: int = 0) -> dict:
    k1, k2 = jax.random.split(jax.random.key(seed))
    params = {"dense": {"kernel": jax.random.normal(k1, (4, 3)),
                        "bias": jnp.arange(3, dtype=jnp.bfloat16)},
              "head": jax.random.normal(k2, (3, 2), jnp.float32)}
    opt = optax.adam(1e-3).init(params)
    return {"params": params, "opt": opt, "updates": jnp.int32(17 + seed),
            "env_steps": jnp.uint32(4_000_000_000 + seed),
            "key": jax.random.key(seed + 1), "raw_key": jax.random.PRNGKey(seed + 2),
            "mask": np.array([True, False, True]),
            "obs": np.arange(6, dtype=np.uint8).reshape(2, 3)}


def _assert_same(a, b) -> None:
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert type(x) is type(y) or (isinstance(x, jax.Array) and isinstance(y, jax.Array))
        assert x.dtype == y.dtype and x.shape == y.shape
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        assert np.array_equal(np.asarray(x), np.asarray(y))


def test_save_restore_exact(tmp_path):
    state = _state()
    with checkpoint.Checkpointer(tmp_path / "ck", keep=3) as ck:
        ck.save(10, state, config={"teacher": {"lr": 1e-3}}, metrics={"return": np.float32(1.5)})
        ck.save(20, _state(1))
        assert ck.steps() == [10, 20] and ck.latest_step() == 20
        _assert_same(ck.restore(10, target=state), state)           # concrete target
        _assert_same(ck.restore(target=state), _state(1))            # latest
        # abstract target: all jax arrays
        abstract = jax.eval_shape(lambda: _state(1))
        restored = ck.restore(target=abstract)
        assert isinstance(restored["opt"][0], optax.ScaleByAdamState)
        assert jax.dtypes.issubdtype(restored["key"].dtype, jax.dtypes.prng_key)
        np.testing.assert_array_equal(restored["obs"], _state(1)["obs"])
        raw = ck.restore(10)                                         # no target: dicts/lists
        np.testing.assert_array_equal(raw["opt"][0]["mu"]["head"],
                                      np.asarray(state["opt"][0].mu["head"]))
        assert raw["params"]["dense"]["bias"].dtype == jnp.bfloat16
        assert (jax.random.key_data(raw["key"]).tolist()
                == jax.random.key_data(state["key"]).tolist())
        meta = ck.metadata(10)
        assert meta["config"] == {"teacher": {"lr": 1e-3}} and meta["metrics"] == {"return": 1.5}
        assert meta["tree"]["params/dense/kernel"] == {"shape": [4, 3], "dtype": "float32",
                                                       "size": 12}
    # Same values from a fresh process-level object (nothing cached in the first one).
    with checkpoint.Checkpointer(tmp_path / "ck", readonly=True) as ck:
        _assert_same(ck.restore(10, target=state), state)


def test_restore_onto_a_mismatched_target_is_a_clear_error(tmp_path):
    state = _state()
    with checkpoint.Checkpointer(tmp_path / "ck") as ck:
        ck.save(10, state)
        with pytest.raises(ClimitError, match=r"ck/10 does not match the requested tree"):
            ck.restore(10,
                       target={**state, "params": {**state["params"], "head": jnp.zeros((5, 2))}})


@pytest.mark.parametrize("change, names", [
    ("dtype", r"params/dense/kernel is saved as float32 \[4, 3\], wanted bfloat16 \[4, 3\]"),
    ("shape", r"params/dense/kernel is saved as float32 \[4, 3\], wanted float32 \[5, 3\]"),
    ("key", r"key is saved as uint32 \[2\], wanted uint32 \[3, 2\]"),
    ("extra", r"1 leaves wanted are not saved \(params/extra\), 0 saved are not wanted"),
    ("missing", r"0 leaves wanted are not saved \(-\), 1 saved are not wanted \(raw_key\)"),
])
def test_restore_names_the_leaf_that_does_not_fit_and_converts_nothing(tmp_path, change, names):
    # orbax alone casts a float32 leaf onto a bfloat16 target without a word (a resumed state
    # of another dtype would train on, rounded) and refuses the other cases naming no leaf.
    state = _state()
    params = state["params"]
    target = {
        "dtype": {**state, "params": {**params,
                                      "dense": {**params["dense"],
                                                "kernel": jnp.zeros((4, 3), jnp.bfloat16)}}},
        "shape": {**state, "params": {**params, "dense": {**params["dense"],
                                                         "kernel": jnp.zeros((5, 3))}}},
        "key": {**state, "key": jax.random.split(jax.random.key(0), 3)},
        "extra": {**state, "params": {**params, "extra": jnp.zeros(2)}},
        "missing": {k: v for k, v in state.items() if k != "raw_key"},
    }[change]
    with checkpoint.Checkpointer(tmp_path / "ck") as ck:
        ck.save(10, state)
        with pytest.raises(ClimitError, match=r"ck/10 does not match the requested tree: " + names):
            ck.restore(10, target=target)


def test_retention_latest_and_best(tmp_path):
    small = {"w": jnp.ones(2)}
    losses = [0.5, 0.1, 0.4, 0.6, 0.9]  # the newest step is the worst
    with checkpoint.Checkpointer(tmp_path / "best", keep=2, best="loss") as ck:
        for step, loss in enumerate(losses, 1):
            ck.save(step, small, metrics={"loss": loss})
        assert ck.steps() == [2, 4, 5]
    with pytest.raises(ValueError, match="keep=1: at least 2"):  # see the next test
        checkpoint.Checkpointer(tmp_path / "best1", keep=1, best="loss", keep_best=1)
    # Steps without the metric count as worst: only the latest ones keep them.
    with checkpoint.Checkpointer(tmp_path / "unmeasured", keep=2, best="loss") as ck:
        ck.save(1, small, metrics={"loss": 0.1})
        for step in (2, 3, 4):
            ck.save(step, small)
        assert ck.steps() == [1, 3, 4]
    with checkpoint.Checkpointer(tmp_path / "latest", keep=2) as ck:
        for step in range(1, 6):
            ck.save(step * 100, small)
        assert ck.steps() == [400, 500]
    with checkpoint.snapshots(tmp_path / "snap") as ck:
        for step in (10, 20, 50, 100, 200):
            ck.save(step, small)
        assert ck.steps() == [10, 20, 50, 100, 200]
        ck.save(50, {"w": jnp.zeros(2)})  # a resumed run re-saves a step: replaced, not an error
        assert ck.restore(50, target=small)["w"].tolist() == [0.0, 0.0]


def test_a_save_killed_before_its_checksums_leaves_the_previous_step(tmp_path, monkeypatch):
    # orbax applies retention inside its save, before climit's checksums make the new step
    # count: with keep=2 the step before survives that window, and a reopened directory
    # restores it (with keep=1, which Checkpointer refuses, nothing would be left).
    small = {"w": jnp.arange(3.0)}
    with checkpoint.Checkpointer(tmp_path / "ck", keep=2) as ck:
        ck.save(100, small)
        ck.save(200, {"w": jnp.arange(3.0) + 1})

        def killed(step_dir):
            raise KeyboardInterrupt(f"killed while checksumming {step_dir}")
        monkeypatch.setattr(checkpoint, "_write_checksums", killed)
        with pytest.raises(KeyboardInterrupt):
            ck.save(300, {"w": jnp.zeros(3)})
    monkeypatch.undo()
    with checkpoint.Checkpointer(tmp_path / "ck", keep=2) as ck:
        assert ck.steps() == [200]
        np.testing.assert_array_equal(ck.restore(target=small)["w"], [1.0, 2.0, 3.0])


def test_a_step_whose_metrics_do_not_parse_is_set_aside_not_a_traceback(tmp_path):
    # orbax reads every step's metrics while it opens a directory and used to fail there with a
    # bare JSONDecodeError: a reader names the step, a writer sets it aside and goes on.
    small = {"w": jnp.ones(2)}
    ckpt_dir = tmp_path / "run" / "checkpoints"
    with checkpoint.Checkpointer(ckpt_dir, keep=3, best="loss") as ck:
        for step, loss in ((1, 0.5), (2, 0.4)):
            ck.save(step, {"w": jnp.full(2, float(step))}, metrics={"loss": loss})
    metrics = ckpt_dir / "2" / "metrics" / "metrics"
    metrics.write_bytes(metrics.read_bytes()[:7])
    with pytest.raises(ArtifactError,
                       match=r"checkpoint .*/2 is damaged: its metrics file is not JSON"):
        checkpoint.Checkpointer(ckpt_dir, readonly=True)
    logs = []
    with checkpoint.Checkpointer(ckpt_dir, keep=3, best="loss") as ck:
        step, tree = ck.restore_newest(lambda s: ck.restore(s, target=small), logs.append,
                                       "imitator")
        assert step == 1 and tree["w"].tolist() == [1.0, 1.0] and ck.steps() == [1]
        ck.save(2, small, metrics={"loss": 0.4})  # the resumed run saves step 2 again
    assert "its metrics file is not JSON" in logs[0] and "older checkpoint at step 1" in logs[1]
    assert (tmp_path / "run" / checkpoint.DAMAGED_DIR / "2").is_dir()


def test_checkpoints_and_snapshots_set_damaged_steps_aside_apart(tmp_path):
    # A run's checkpoints/ and snapshots/ share step numbers: each has its own damaged_ folder,
    # so one damaged step 400 does not replace the other.
    run = tmp_path / "teacher"
    for name in ("checkpoints", "snapshots"):
        with checkpoint.Checkpointer(run / name, keep=2) as ck:
            ck.save(400, {"w": jnp.full(2, float(len(name)))}, metrics={"loss": 1.0})
        metrics = run / name / "400" / "metrics" / "metrics"
        metrics.write_bytes(metrics.read_bytes()[:7])
    with (checkpoint.Checkpointer(run / "checkpoints", keep=2) as ck,
          checkpoint.snapshots(run / "snapshots") as sn):
        assert (ck.set_aside_on_open, sn.set_aside_on_open) == ([400], [400])
        assert ck.steps() == sn.steps() == []
        assert (sn.damaged_dir == run / "damaged_snapshots"
                and ck.damaged_dir == run / checkpoint.DAMAGED_DIR)
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints", "damaged_checkpoints",
                                                      "damaged_snapshots", "snapshots"]
    assert ((run / "damaged_checkpoints" / "400").is_dir()
            and (run / "damaged_snapshots" / "400").is_dir())


def _flip(step_dir: Path) -> None:
    """Flip one bit in the middle of the step's largest array data file."""
    target = max(_data_files(step_dir), key=lambda p: p.stat().st_size)
    raw = bytearray(target.read_bytes())
    raw[len(raw) // 2] ^= 0x10
    target.write_bytes(bytes(raw))


def test_restore_newest_sets_damaged_steps_aside_and_saves_them_again(tmp_path):
    # Newest first; a damaged step goes to damaged_checkpoints/ and the run saves that step
    # again (orbax must forget the moved step, or it refuses the save as an existing step);
    # damaged a second time, the newer damaged copy replaces the older one there.
    ckpt_dir, logs = tmp_path / "run" / "checkpoints", []
    aside = tmp_path / "run" / checkpoint.DAMAGED_DIR
    small = {"w": jnp.zeros(2)}
    with checkpoint.Checkpointer(ckpt_dir, keep=2) as ck:
        def newest():
            step, tree = ck.restore_newest(lambda s: ck.restore(s, target=small), logs.append, "x")
            return step, tree["w"].tolist()
        for step in (1, 2, 3):
            ck.save(step, {"w": jnp.full(2, float(step))})
        assert newest() == (3, [3.0, 3.0]) and logs == []
        for copy in (30.0, 31.0):
            _flip(ckpt_dir / "3")
            assert newest() == (2, [2.0, 2.0]) and ck.steps() == [2]
            with checkpoint.Checkpointer(aside, readonly=True) as moved:
                assert moved.steps() == [3]
                with pytest.raises(ArtifactError, match="corrupt"):
                    moved.restore(3)
            ck.save(3, {"w": jnp.full(2, copy)})
            assert ck.steps() == [2, 3] and newest() == (3, [copy, copy])
    # The copy kept aside is the last one damaged (30, not the first, 3): its bit flipped back,
    # it restores.
    _flip(aside / "3")
    with checkpoint.Checkpointer(aside, readonly=True) as moved:
        assert moved.restore(3)["w"].tolist() == [30.0, 30.0]


def _data_files(step_dir: Path) -> list[Path]:
    return sorted(p for p in step_dir.rglob("*") if p.is_file() and "/d/" in str(p))


def test_describe_reads_metadata_only(tmp_path, monkeypatch):
    stacked = {"params": {"w": jnp.zeros((8, 5, 3)), "b": jnp.zeros((8, 3), jnp.bfloat16)}}
    with checkpoint.Checkpointer(tmp_path / "ck", keep=None) as ck:
        ck.save(1000, stacked, config={"run": {"name": "x"}}, metrics={"loss": 2.0})
        ck.save(2000, stacked, config={"run": {"name": "x"}}, metrics={"loss": 1.0})

    def no_loading(*args, **kwargs):
        raise AssertionError("describe loaded arrays")

    from orbax.checkpoint import v1 as ocp
    from orbax.checkpoint.experimental.v1._src.loading import loading
    monkeypatch.setattr(loading, "load_checkpointables", no_loading)
    monkeypatch.setattr(ocp.training.Checkpointer, "load", no_loading)
    monkeypatch.setattr(checkpoint.Checkpointer, "restore", no_loading)
    d = checkpoint.describe(tmp_path / "ck")
    assert d["steps"] == [1000, 2000] and d["step"] == 2000
    assert d["config"] == {"run": {"name": "x"}}
    assert d["checkpoints"] == [{"step": 1000, "metrics": {"loss": 2.0}},
                                {"step": 2000, "metrics": {"loss": 1.0}}]
    assert d["tree"] == {"params/b": {"shape": [8, 3], "dtype": "bfloat16", "size": 24},
                         "params/w": {"shape": [8, 5, 3], "dtype": "float32", "size": 120}}
    assert d["num_params"] == 144
    assert checkpoint.describe(tmp_path / "ck" / "1000")["step"] == 1000  # a step directory
    monkeypatch.undo()
    for f in _data_files(tmp_path / "ck" / "2000"):  # damaged OCDBT store: a clear error
        f.write_bytes(b"\0" * f.stat().st_size)
    with pytest.raises(ArtifactError, match="2000 is damaged"):
        checkpoint.describe(tmp_path / "ck")


def test_metadata_and_describe_verify_the_metadata_files_they_read(tmp_path):
    # Small files edited in place (still JSON, same size) fail their checksums: metadata()
    # refuses the step, describe lists it as damaged; a step saved without metrics lists {}.
    with checkpoint.Checkpointer(tmp_path / "ck", keep=4) as ck:
        for step, metrics in ((1, None), (2, {"loss": 1.0}), (3, None), (4, {"loss": 2.0})):
            ck.save(step, {"w": jnp.ones(2)}, metrics=metrics)
    metrics = tmp_path / "ck" / "2" / "metrics" / "metrics"
    metrics.write_text(metrics.read_text().replace("1.0", "9.0"))
    described = tmp_path / "ck" / "3" / "_CHECKPOINT_METADATA"
    described.write_text(re.sub(r'("init_timestamp_nsecs": )1', r"\g<1>2", described.read_text()))
    with checkpoint.Checkpointer(tmp_path / "ck", readonly=True) as ck:
        with pytest.raises(ArtifactError, match=r"ck/2 is damaged: metrics/metrics is corrupt"):
            ck.metadata(2)
        assert ck.metadata(4)["metrics"] == {"loss": 2.0}
    listed = checkpoint.describe(tmp_path / "ck")["checkpoints"]
    assert [c["step"] for c in listed] == [1, 2, 3, 4]
    assert listed[0] == {"step": 1, "metrics": {}}
    assert listed[3] == {"step": 4, "metrics": {"loss": 2.0}}
    assert listed[1]["metrics"] == {} and "metrics/metrics is corrupt" in listed[1]["damaged"]
    assert listed[2]["metrics"] == {} and "_CHECKPOINT_METADATA is corrupt" in listed[2]["damaged"]


def test_a_reader_saves_nothing_and_saved_values_are_plain_json(tmp_path):
    with checkpoint.Checkpointer(tmp_path / "ck") as ck:
        # numpy scalars inside tuples too (a config's hidden sizes, say) become JSON numbers
        ck.save(1, {"w": jnp.ones(2)}, config={"hidden": (np.int64(16), 32)},
                metrics={"pair": (np.float32(1.5), jnp.int32(2))})
    with checkpoint.Checkpointer(tmp_path / "ck", readonly=True) as ck:
        meta = ck.metadata(1)
        assert (meta["config"], meta["metrics"]) == ({"hidden": [16, 32]}, {"pair": [1.5, 2]})
        with pytest.raises(ClimitError, match="opened read-only"):
            ck.save(2, {"w": jnp.ones(2)})
    assert checkpoint.complete_steps(tmp_path / "ck") == [1]
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["1"]


def test_an_error_in_flight_is_not_replaced_by_a_failing_close(tmp_path, monkeypatch):
    # Leaving with an error, a close that fails too is logged, and the first error goes out;
    # leaving normally, the close's own error is raised.
    close = checkpoint.Checkpointer.close

    def failing_close(self):
        close(self)
        raise ValueError("close failed")
    monkeypatch.setattr(checkpoint.Checkpointer, "close", failing_close)
    with pytest.raises(KeyError, match="first"):
        with checkpoint.Checkpointer(tmp_path / "a"):
            raise KeyError("first")
    with pytest.raises(ValueError, match="close failed"):
        with checkpoint.Checkpointer(tmp_path / "b"):
            pass


def test_not_a_checkpoint_and_missing_step(tmp_path):
    with pytest.raises(ArtifactError, match="no checkpoint directory at"):
        checkpoint.describe(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ArtifactError, match="not a checkpoint directory"):
        checkpoint.describe(tmp_path / "empty")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(ArtifactError, match="it is a file"):
        checkpoint.describe(tmp_path / "file.txt")
    assert not (tmp_path / "nope").exists()  # reading never creates
    with checkpoint.Checkpointer(tmp_path / "ck") as ck:
        ck.save(3, {"w": jnp.ones(2)})
        with pytest.raises(ArtifactError, match=r"no checkpoint at step 7 .*saved steps: \[3\]"):
            ck.restore(7)


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete_data", "delete_metadata"])
def test_damaged_files_are_named(tmp_path, damage):
    with checkpoint.Checkpointer(tmp_path / "ck") as ck:
        ck.save(1, {"w": jnp.arange(1000.0), "v": jnp.ones((7, 7))})
    step_dir = tmp_path / "ck" / "1"
    target = max(_data_files(step_dir), key=lambda p: p.stat().st_size)
    if damage == "flip":
        raw = bytearray(target.read_bytes()); raw[len(raw) // 2] ^= 0x10
        target.write_bytes(bytes(raw))
        pattern = "corrupt"
    elif damage == "truncate":
        target.write_bytes(target.read_bytes()[:-3]); pattern = "truncated"
    elif damage == "delete_data":
        target.unlink(); pattern = "missing"
    else:
        target = step_dir / "state" / "_METADATA"; target.unlink(); pattern = "missing"
    rel = str(target.relative_to(step_dir))
    with checkpoint.Checkpointer(tmp_path / "ck", readonly=True) as ck:
        with pytest.raises(ArtifactError, match=f"{pattern}") as e:
            ck.restore(1)
        assert rel in str(e.value) and str(step_dir) in str(e.value)


@pytest.mark.parametrize("files", [[], {"state/x": 3}, {"state/x": [1, 2, 3]},
                                   {"state/x": ["1", 2]}, {"state/x": [True, 2]}, None])
def test_a_checksum_file_of_the_wrong_shape_is_damage(tmp_path, files):
    # JSON that parses but is not {path: [size, crc]}: the same ArtifactError as unparsable
    # JSON (so a resume falls back to an earlier step), not an AttributeError.
    with checkpoint.Checkpointer(tmp_path / "ck") as ck:
        ck.save(1, {"w": jnp.ones(2)})
    step_dir = tmp_path / "ck" / "1"
    (step_dir / checkpoint.CHECKSUM_FILE).write_text(json.dumps({"format_version": 1,
                                                                 "files": files}))
    with pytest.raises(ArtifactError, match=f"{step_dir} is damaged: .* is unreadable"):
        checkpoint.verify_step(step_dir)


def test_interrupted_save_is_never_restored(tmp_path):
    with checkpoint.Checkpointer(tmp_path / "ck", keep=3) as ck:
        ck.save(1, {"w": jnp.ones(2)})
        ck.save(2, {"w": jnp.full(2, 2.0)})
    # Killed after orbax committed step 2 but before its checksums: step 2 does not exist.
    (tmp_path / "ck" / "2" / checkpoint.CHECKSUM_FILE).unlink()
    # Killed in the middle of orbax's own write: a temporary directory.
    (tmp_path / "ck" / "3.orbax-checkpoint-tmp-1234").mkdir()
    with checkpoint.Checkpointer(tmp_path / "ck", readonly=True) as ck:
        assert ck.steps() == [1] and ck.restore()["w"].tolist() == [1.0, 1.0]
    assert checkpoint.describe(tmp_path / "ck")["incomplete_steps"] == [2]
    with checkpoint.Checkpointer(tmp_path / "ck", keep=3) as ck:  # a writer cleans up
        # the interrupted step at once (orbax removes its own temporaries in the background)
        assert ck.steps() == [1] and not (tmp_path / "ck" / "2").exists()
        ck.save(2, {"w": jnp.full(2, 5.0)})
        assert ck.restore()["w"].tolist() == [5.0, 5.0]
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["1", "2"]


_KILL_SCRIPT = """
import sys, jax.numpy as jnp
from climit import checkpoint
with checkpoint.Checkpointer(sys.argv[1], keep=2) as ck:
    for step in range(1, 1000):
        ck.save(step, {"w": jnp.full((256, 1024), float(step)), "step": jnp.int32(step)})
        print(step, flush=True)
"""


def test_killed_process_leaves_a_restorable_checkpoint(tmp_path):
    """SIGKILL a saving process at arbitrary moments; the latest step always restores intact."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    for delay in (0.0, 0.05, 0.13):
        d = tmp_path / f"ck{delay}"
        p = subprocess.Popen([sys.executable, "-c", _KILL_SCRIPT, str(d)], stdout=subprocess.PIPE,
                             text=True, env=env)
        while int(p.stdout.readline() or 0) < 2:
            assert p.poll() is None
        time.sleep(delay)
        p.send_signal(signal.SIGKILL)
        p.wait()
        p.stdout.close()
        with checkpoint.Checkpointer(d, keep=2) as ck:
            step = ck.latest_step()
            assert step >= 2
            state = ck.restore()
            assert int(state["step"]) == step and np.all(np.asarray(state["w"]) == step)


_DEVICES_SCRIPT = """
import sys, numpy as np, jax, jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P, AxisType
from climit import checkpoint
assert jax.device_count() == 8
mesh = jax.make_mesh((8,), ("learners",), axis_types=(AxisType.Auto,))
shard = NamedSharding(mesh, P("learners"))
target = {"w": jax.ShapeDtypeStruct((8, 4, 3), jnp.float32, sharding=shard),
          "key": jax.ShapeDtypeStruct((8,), jax.random.key(0).dtype, sharding=shard)}
with checkpoint.Checkpointer(sys.argv[1], readonly=True) as ck:   # saved on 1 device
    got = ck.restore(target=target)
assert got["w"].sharding == shard and len(got["w"].addressable_shards) == 8
np.testing.assert_array_equal(np.asarray(got["w"]), np.arange(96.0).reshape(8, 4, 3))
np.testing.assert_array_equal(
    np.asarray(jax.random.key_data(got["key"])),
    np.asarray(jax.random.key_data(jax.random.split(jax.random.key(5), 8))))
w8 = jax.device_put(jnp.arange(96.0).reshape(8, 4, 3) * 2, shard)
with checkpoint.Checkpointer(sys.argv[2]) as ck:                  # save sharded over 8
    ck.save(1, {"w": w8, "key": jax.device_put(jax.random.split(jax.random.key(6), 8), shard)})
print("ok")
"""


def test_restore_onto_different_device_count(tmp_path):
    with checkpoint.Checkpointer(tmp_path / "one") as ck:
        ck.save(1, {"w": jnp.arange(96.0).reshape(8, 4, 3),
                    "key": jax.random.split(jax.random.key(5), 8)})
    env = procs.cpu_env(8)
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(_DEVICES_SCRIPT),
                        str(tmp_path / "one"),
                        str(tmp_path / "eight")], capture_output=True, text=True, env=env, cwd=REPO)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-3000:]
    with checkpoint.Checkpointer(tmp_path / "eight", readonly=True) as ck:  # back on 1 device
        got = ck.restore()
        np.testing.assert_array_equal(np.asarray(got["w"]), np.arange(96.0).reshape(8, 4, 3) * 2)
        assert got["w"].sharding.device_set == {jax.local_devices()[0]}
        keys = ck.restore(target={"w": jnp.zeros((8, 4, 3)),
                                  "key": jax.random.split(jax.random.key(0), 8)})
        np.testing.assert_array_equal(
            np.asarray(jax.random.key_data(keys["key"])),
            np.asarray(jax.random.key_data(jax.random.split(jax.random.key(6), 8))))


def test_a_full_disk_is_this_runs_only_under_its_directory(tmp_path, monkeypatch):
    # Python's OSError (with a file name) and tensorstore's ValueError (the path in its text):
    # under the run directory, it is the run's full disk; in a sibling whose name merely starts
    # like it (runs/a, runs/ab), or elsewhere, it is not.
    run = tmp_path / "a"
    nospace = os.strerror(errno.ENOSPC)
    ours = [OSError(errno.ENOSPC, nospace, str(run / "teacher" / "x.npz")),
            ValueError(f'RESOURCE_EXHAUSTED: Failed writing: "{run}/teacher/checkpoints/8/d/0": '
                       f"{nospace} [os_error_code='28']")]
    theirs = [OSError(errno.ENOSPC, nospace, str(tmp_path / "ab" / "x.npz")),
              ValueError(f'RESOURCE_EXHAUSTED: Failed writing: "{tmp_path}/ab/d/0": {nospace}'),
              OSError(errno.ENOSPC, nospace, "/elsewhere/cache.bin"),
              OSError(errno.EACCES, "Permission denied", str(run / "x"))]
    for exc in ours:
        assert checkpoint.disk_full(exc, run) is exc, exc
    for exc in theirs:
        assert checkpoint.disk_full(exc, run) is None, exc
    # A run directory given relative to the working directory (run.runs_dir=../runs): orbax's
    # message and the Checkpointer's own writes carry absolute paths, which do not contain the
    # relative one.
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    assert checkpoint.disk_full(ours[1], Path("../a")) is ours[1]
    checksums = OSError(errno.ENOSPC, nospace, str(run / "teacher" / "checkpoints" / "8" / "c"))
    assert checkpoint.disk_full(checksums, Path("../a")) is checksums
    assert checkpoint.disk_full(theirs[1], Path("../a")) is None
    # Python's own write that names no file (os.write on a descriptor) is taken for the run's.
    unnamed = OSError(errno.ENOSPC, nospace)
    assert checkpoint.disk_full(unnamed, run) is unnamed
    try:  # raised `from None` while handling it: the full disk is not this error's story
        try:
            raise ours[0]
        except OSError:
            raise RuntimeError("something else") from None
    except RuntimeError as outer:
        assert checkpoint.disk_full(outer, run) is None
    try:  # found along the chain: raised while handling the full disk
        try:
            raise ours[0]
        except OSError as inner:
            raise RuntimeError("close failed") from inner
    except RuntimeError as outer:
        assert checkpoint.disk_full(outer, run) is ours[0]


def test_a_reader_leaves_a_save_in_progress_alone(tmp_path):
    # `climit inspect` on a running job: orbax's temporary directory of the step being written
    # belongs to the writer; a reader that removed it would fail that save.
    with checkpoint.Checkpointer(tmp_path / "ck") as ck:
        ck.save(1, {"w": jnp.ones(2)})
    in_progress = tmp_path / "ck" / "2.orbax-checkpoint-tmp-1234"
    (in_progress / "state").mkdir(parents=True)
    with checkpoint.Checkpointer(tmp_path / "ck", readonly=True) as ck:
        assert ck.steps() == [1]
    # orbax removes temporaries in a background thread, which closing does not wait for
    deadline = time.monotonic() + 1.0
    while in_progress.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (in_progress / "state").is_dir()


def test_a_full_disk_says_the_run_resumes_from_its_latest_checkpoint(tmp_path):
    # Complete steps 100 and 200 (and an interrupted 300, which a resume deletes): the run
    # resumes from 200, and the message says so.
    ckpt_dir = tmp_path / "run" / "teacher" / "checkpoints"
    for step, complete in ((100, True), (200, True), (300, False)):
        (ckpt_dir / str(step)).mkdir(parents=True)
        if complete:
            (ckpt_dir / str(step) / checkpoint.CHECKSUM_FILE).write_text("{}")
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(ckpt_dir / "300" / "x"))
    with pytest.raises(ClimitError, match=r"resumes from its last checkpoint \(env step 200\)"):
        with checkpoint.full_disk_is_a_clear_error(tmp_path / "run", ckpt_dir, "the teacher run",
                                                   "env step"):
            raise full


def test_steps_without_the_metric_count_as_worst_in_a_reopened_directory_too(tmp_path):
    # A resumed run opens the directory again, and orbax reads the steps saved without the
    # metric from disk, where they have no metrics at all: they still count as worst, and go
    # once they are no longer among the latest two.
    small = {"w": jnp.ones(2)}
    with checkpoint.Checkpointer(tmp_path / "ck", keep=2, best="loss") as ck:
        ck.save(1, small, metrics={"loss": 0.1})
        ck.save(2, small)
    with checkpoint.Checkpointer(tmp_path / "ck", keep=2, best="loss") as ck:
        for step in (3, 4):
            ck.save(step, small)
        assert ck.steps() == [1, 3, 4]


def test_python_scalars_restore_onto_array_targets_and_back(tmp_path):
    # A Python scalar has no dtype to compare: saved as one and wanted as an array (or the
    # other way round), orbax gives the value in the target's type.
    with checkpoint.Checkpointer(tmp_path / "ck") as ck:
        ck.save(1, {"n": 3, "x": jnp.float32(2.5)})
        got = ck.restore(1, target={"n": jnp.int32(0), "x": 0.0})
    assert got["n"].dtype == jnp.int32 and int(got["n"]) == 3
    assert type(got["x"]) is float and got["x"] == 2.5
