"""Devices, meshes and multi-host start-up, in one place.

Both trainers shard one leading axis over every device of every host: the teacher its flat learner
axis G, the imitator its batch axis B. Everything else is replicated. With a single device this is a
no-op, so the same code runs on a laptop CPU, one GPU, a multi-GPU host and a TPU pod slice.

Multi-host: ``initialize()`` calls ``jax.distributed.initialize`` when the environment says this is
one process of several: ``CLIMIT_COORDINATOR`` / ``CLIMIT_NUM_PROCESSES`` / ``CLIMIT_PROCESS_ID``
(explicit: the tests, or any launcher that knows the three), or ``CLIMIT_DISTRIBUTED=auto`` to let
JAX detect the cluster (TPU pods, SLURM). It must run before anything touches a device.
"""

from __future__ import annotations

import os
from typing import Any, Callable, TypeVar

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from climit.errors import ClimitError

T = TypeVar("T")

AXIS = "data"
_initialized = False


def initialize() -> bool:
    """Start multi-host JAX if the environment asks for it; returns True if it did."""
    global _initialized
    if _initialized:
        return True
    coordinator = os.environ.get("CLIMIT_COORDINATOR")
    if coordinator or os.environ.get("CLIMIT_DISTRIBUTED") == "auto":
        # CPU processes need a collectives backend to talk to each other (tests, CPU clusters).
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if coordinator:
        jax.distributed.initialize(
            coordinator_address=coordinator,
            num_processes=int(os.environ["CLIMIT_NUM_PROCESSES"]),
            process_id=int(os.environ["CLIMIT_PROCESS_ID"]),
        )
    elif os.environ.get("CLIMIT_DISTRIBUTED") == "auto":
        jax.distributed.initialize()
    else:
        return False
    _initialized = True
    return True


def mesh() -> Mesh:
    """A 1-D mesh over all devices of all processes, axis ``'data'``.

    Auto axis types: jax >= 0.10 defaults ``make_mesh`` to Explicit axes, under which a vmapped
    scan with an unbatched initial carry fails to trace.
    """
    return jax.make_mesh((jax.device_count(),), (AXIS,), axis_types=(AxisType.Auto,))


def leading_sharding(m: Mesh) -> NamedSharding:
    """Shard the leading axis over the mesh; other axes replicated."""
    return NamedSharding(m, PartitionSpec(AXIS))


def replicated(m: Mesh) -> NamedSharding:
    return NamedSharding(m, PartitionSpec())


def check_divisible(n: int, what: str) -> None:
    """The sharded axis must split evenly over devices; say so clearly if it doesn't."""
    from climit.errors import ClimitError

    d = jax.device_count()
    if n % d:
        raise ClimitError(f"{what} = {n} is not divisible by the {d} devices; "
                          f"choose a multiple of {d}")


def _put(x: Any, sharding: NamedSharding) -> jax.Array:
    """One host-global array (the same full value on every process) onto ``sharding``.

    With several processes each one builds only the shards its own devices hold, from its
    full host copy (``device_put`` cannot address another host's devices)."""
    if jax.process_count() == 1:
        return jax.device_put(x, sharding)
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def shard_leading(tree: Any, m: Mesh) -> Any:
    """Place a host-global pytree (every process holds the full arrays) sharded on axis 0."""
    sharding = leading_sharding(m)
    return jax.tree.map(lambda x: _put(x, sharding), tree)


def replicate(tree: Any, m: Mesh) -> Any:
    """Place a host-global pytree (the same on every process) on every device."""
    sharding = replicated(m)
    return jax.tree.map(lambda x: _put(x, sharding), tree)


def process_slice(n: int) -> slice:
    """The rows of a global leading axis of size ``n`` that this process feeds (multi-host data):
    equal contiguous shares.

    Raises:
        ValueError: ``n`` does not split evenly over the processes (a floor division would drop
            the last ``n % process_count`` rows without a word).
    """
    count = jax.process_count()
    if n % count:
        raise ValueError(f"a leading axis of {n} rows does not split evenly over {count} "
                         f"processes; choose a multiple of {count}")
    per = n // count
    i = jax.process_index()
    return slice(i * per, (i + 1) * per)


def from_process_local(local: Any, m: Mesh, global_leading: int) -> Any:
    """Assemble a global array sharded on axis 0 from each process's local rows."""
    sharding = leading_sharding(m)
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(
            sharding, np.asarray(x), (global_leading,) + np.shape(x)[1:]), local)


def device_memory() -> tuple[int | None, str]:
    """Bytes that one local device's arrays can take (None: unknown), and where they live.

    CPU devices share the host's memory (all local devices together); an accelerator reports
    its allocator's limit.
    """
    device = jax.local_devices()[0]
    if device.platform != "cpu":
        stats = device.memory_stats() or {}
        limit = stats.get("bytes_limit")
        return ((None if limit is None else int(limit)),
                f"{device.platform.upper()} memory per device")
    try:
        host = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return None, "host memory"
    return host // jax.local_device_count(), "host memory (CPU devices share it)"


def is_primary() -> bool:
    """Process 0: the one that writes shared files and logs when several processes run."""
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Every process waits here until all arrive (no-op with one process): e.g. before reading
    files that process 0 has just written."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def everywhere(flag: bool) -> bool:
    """Whether ``flag`` holds on every process (a collective with several processes: all must
    call it, in the same order). Turns a decision each process takes from what it sees into
    one they all take alike."""
    if jax.process_count() == 1:
        return bool(flag)
    from jax.experimental import multihost_utils

    return bool(np.asarray(multihost_utils.process_allgather(np.int32(bool(flag)))).all())


def _primary_int32(value: int) -> int:
    """Process 0's ``value`` (an int32) on every process: a collective all must call."""
    if jax.process_count() == 1:
        return int(value)
    from jax.experimental import multihost_utils

    return int(multihost_utils.broadcast_one_to_all(np.int32(value)))  # int32: no x64 needed


def primary_bytes(value_bytes: int) -> int:
    """Process 0's ``value_bytes`` (0 .. 2**62) on every process, exactly (a collective with
    several processes: all must call it). Lets every process take the same decision from a
    measurement only one should make, e.g. free disk space, so that none runs on into a
    collective that a stopped process 0 never joins. Sent as two 31-bit halves (int32: no x64
    needed); rounded to whole MiB, a disk with less than 1 MiB free refused a run that fit."""
    value = min(max(int(value_bytes), 0), (1 << 62) - 1)
    high, low = _primary_int32(value >> 31), _primary_int32(value & ((1 << 31) - 1))
    return (high << 31) | low


def on_primary(fn: Callable[[], T], what: str) -> T | None:
    """``fn()`` on process 0 alone (``None`` elsewhere), its failure raised on every process.

    Work only process 0 does (opening the files it writes) can fail there alone; the others
    would run on into their next collective and die in it with the distributed runtime's
    traceback. This is a collective with several processes: all must call it.

    Raises:
        ClimitError: on every other process, when ``fn`` raised on process 0 (which raises
            its own error).
    """
    result, error = None, None
    if is_primary():
        try:
            result = fn()
        except Exception as e:  # noqa: BLE001 -- raised again below, after the others know
            error = e
    failed = _primary_int32(error is not None)
    if error is not None:
        raise error
    if failed:
        raise ClimitError(f"{what} failed on process 0 (its output says why); this process "
                          f"stops with it")
    return result


def to_host(tree: Any) -> Any:
    """Gather a (possibly multi-host sharded) pytree to numpy on every process.

    With several processes this is a collective: every process must call it, in the same order.
    Arrays that live on one process's devices alone (computed whole on each process) are copied
    as they are.
    """
    from jax.experimental import multihost_utils

    if jax.process_count() == 1:
        return jax.device_get(tree)  # starts every leaf's copy before waiting on any

    def one(x: Any) -> np.ndarray:  # only arrays spread over several hosts need the gather
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        return np.asarray(x)

    return jax.tree.map(one, tree)
