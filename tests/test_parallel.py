"""Meshes and multi-host start-up: two local CPU processes form one 4-device job."""

import sys
import textwrap

import numpy as np

import procs

WORKER = textwrap.dedent("""
    import os
    import jax
    import jax.numpy as jnp
    import numpy as np
    from climit import parallel
    assert parallel.initialize()
    m = parallel.mesh()
    n = 8
    local = np.arange(n, dtype=np.float32)[parallel.process_slice(n)]
    x = parallel.from_process_local(local, m, n)
    total = jax.jit(lambda v: jnp.sum(v * 2))(x)
    free = parallel.primary_bytes(2**40 + 7 if jax.process_index() == 0 else 5)  # process 0's
    print("RESULT", jax.process_index(), jax.device_count(), float(total), free,
          parallel.to_host(x).tolist(), flush=True)
""")


def test_two_process_cpu_job_sees_all_devices_and_reduces_globally(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    for pid, (rc, out) in enumerate(procs.run_job([sys.executable, str(script)], 180)):
        assert rc == 0, out
        line = next(l for l in out.splitlines() if l.startswith("RESULT"))
        _, index, devices, total, free, gathered = line.split(" ", 5)
        assert (int(index), int(devices), float(total), int(free)) == (pid, 4, 56.0, 2**40 + 7)
        assert eval(gathered) == list(np.arange(8.0))


def test_single_process_is_a_no_op(monkeypatch):
    from climit import parallel

    for var in ("CLIMIT_COORDINATOR", "CLIMIT_DISTRIBUTED"):
        monkeypatch.delenv(var, raising=False)
    assert parallel.initialize() is False
    m = parallel.mesh()
    assert m.devices.size >= 1 and m.axis_names == ("data",)


def test_process_slice_gives_equal_shares_and_refuses_an_uneven_split(monkeypatch):
    # A floor division would give 3 processes 2 of 8 rows each and silently drop the last 2.
    import jax
    import pytest

    from climit import parallel

    monkeypatch.setattr(jax, "process_count", lambda: 3)
    monkeypatch.setattr(jax, "process_index", lambda: 2)
    assert parallel.process_slice(9) == slice(6, 9)
    with pytest.raises(ValueError, match="8 rows does not split evenly over 3 processes"):
        parallel.process_slice(8)


def test_primary_bytes_is_exact_in_int32_halves(monkeypatch):
    from climit import parallel
    # Free disk space goes from process 0 to all as two int32 halves: exact to the byte (it was
    # rounded down to MiB, so 400 KB free read as 0 and refused a run that fit).
    sent = []

    def broadcast(value):
        assert 0 <= value < 2**31  # what an int32 broadcast carries
        sent.append(value)
        return value

    monkeypatch.setattr(parallel, "_primary_int32", broadcast)
    for value in (0, 400 * 1024, (1 << 31) - 1, 1 << 31, 2**40 + 12_345, (1 << 62) - 1):
        assert parallel.primary_bytes(value) == value
    assert len(sent) == 12
    assert parallel.primary_bytes(1 << 70) == (1 << 62) - 1  # clipped, not wrapped


PLACE = textwrap.dedent("""
    import json
    import jax
    import numpy as np
    from climit.teacher import dqn, train
    g = 8
    state = dqn.TrainState(learners={"w": np.zeros((g, 3), np.float32)}, t=np.int32(5),
                           updates=np.int32(2))
    hp = dqn.HParams(*[np.full(g, i, np.float32) for i in range(len(dqn.HParams._fields))])
    state, hp, tasks = train.place(state, hp, np.zeros((g, 2), np.int32))
    placed = {"w": state.learners["w"], "t": state.t, "updates": state.updates, "tasks": tasks,
              **hp._asdict()}
    print("RESULT", json.dumps({k: [jax.device_count(), len(x.sharding.device_set),
                                    list(x.sharding.shard_shape(x.shape))]
                                for k, x in placed.items()}))
""")


def test_teacher_learners_are_split_over_the_devices_not_copied(tmp_path):
    # 8 learners on 4 CPU devices: each device holds 2 learners' state, hyperparameters and
    # tasks; the lockstep counters are on every device whole. (Replicating the learners would
    # compute the same results, each device running all 8: the runs compared with one device
    # cannot tell.)
    import json
    import subprocess

    script = tmp_path / "place.py"
    script.write_text(PLACE)
    proc = subprocess.run([sys.executable, str(script)], env=procs.cpu_env(4), capture_output=True,
                          text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(next(l for l in proc.stdout.splitlines() if l.startswith("RESULT"))[7:])
    want = {"w": [4, 4, [2, 3]], "t": [4, 4, []], "updates": [4, 4, []], "tasks": [4, 4, [2, 2]],
            **{f: [4, 4, [2]] for f in ("lr", "gamma", "eps_end", "eps_decay_steps", "tau")}}
    assert got == want


def test_single_process_collectives_are_the_local_answer(monkeypatch):
    # One process: on_primary runs fn and raises its own error, everywhere is the flag itself,
    # primary_bytes clips a negative measurement to 0.
    import pytest

    from climit import parallel

    assert parallel.on_primary(lambda: "opened", "opening the logger") == "opened"

    def full():
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        parallel.on_primary(full, "opening the logger")
    assert parallel.everywhere(True) is True and parallel.everywhere(False) is False
    monkeypatch.setattr(parallel, "_primary_int32", int)
    assert parallel.primary_bytes(-5) == 0


def test_check_divisible_and_cpu_memory_per_device(monkeypatch):
    import jax
    import pytest

    from climit import parallel
    from climit.errors import ClimitError

    monkeypatch.setattr(jax, "device_count", lambda *a: 4)
    parallel.check_divisible(8, "imitator.batch_size")
    with pytest.raises(ClimitError, match="imitator.batch_size = 6 is not divisible by the 4 "
                                          "devices; choose a multiple of 4"):
        parallel.check_divisible(6, "imitator.batch_size")
    # CPU devices share the host's memory: 4 local devices of a 4096 x 1000-byte host.
    assert jax.local_devices()[0].platform == "cpu"
    monkeypatch.setattr(jax, "local_device_count", lambda *a: 4)
    monkeypatch.setattr(parallel.os, "sysconf",
                        {"SC_PAGE_SIZE": 4096, "SC_PHYS_PAGES": 1000}.__getitem__)
    assert parallel.device_memory() == (1_024_000, "host memory (CPU devices share it)")


def test_an_accelerators_memory_is_its_allocators_limit(monkeypatch):
    # On a GPU or TPU, the bytes one device's arrays can take are the allocator's limit
    # (bytes_limit), not what is in use; without that figure the limit is unknown.
    import jax

    from climit import parallel

    class Device:
        platform = "gpu"

        def __init__(self, stats):
            self.stats = stats

        def memory_stats(self):
            return self.stats

    stats = {"bytes_limit": 80 * 2**30, "bytes_in_use": 2**30, "peak_bytes_in_use": 2**31}
    monkeypatch.setattr(jax, "local_devices", lambda *a, **k: [Device(stats)])
    assert parallel.device_memory() == (80 * 2**30, "GPU memory per device")
    monkeypatch.setattr(jax, "local_devices", lambda *a, **k: [Device(None)])
    assert parallel.device_memory() == (None, "GPU memory per device")
