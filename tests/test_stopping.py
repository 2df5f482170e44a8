"""climit.stopping: stop requests (signals, time limit), agreement across processes, durations.
The stages' use of it (save, stop, resume to the same result) is tested with each stage."""

import os
import signal
import time

import numpy as np
import pytest

from climit import stopping


@pytest.fixture(autouse=True)
def default_sigint():
    """Ctrl-C raises KeyboardInterrupt here, as in any Python started from a terminal. A
    process started in the background by a shell without job control (`cmd &` in a script,
    nohup) inherits SIGINT ignored, and Python then leaves it ignored: these tests would send
    SIGINT into nothing."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_signals_and_time_limit_request_a_stop_only_inside_watch():
    before = signal.getsignal(signal.SIGUSR1)
    assert stopping.requested() is None
    with stopping.watch():
        assert stopping.requested() is None
        os.kill(os.getpid(), signal.SIGUSR1)  # SLURM's `sbatch --signal=USR1@...`
        assert stopping.requested() == "SIGUSR1"
        assert stopping.requested() == "SIGUSR1"  # it stays requested until the block ends
        with pytest.raises(KeyboardInterrupt):  # asked twice: stop now
            os.kill(os.getpid(), signal.SIGTERM)
    assert signal.getsignal(signal.SIGUSR1) == before and stopping.requested() is None
    with stopping.watch(time_limit_s=0.05):
        assert stopping.requested() is None
        time.sleep(0.06)
        assert stopping.requested() == "time limit"
    assert stopping.requested() is None


def test_interrupts_inside_a_held_block_wait_for_its_end():
    # Ctrl-C, and a second stop signal, raise KeyboardInterrupt only once the block (a
    # checkpoint save) is over; the block's own work is all done by then.
    done = []
    with pytest.raises(KeyboardInterrupt):
        with stopping.held_interrupts():
            os.kill(os.getpid(), signal.SIGINT)
            done.append("after Ctrl-C")
    assert (done == ["after Ctrl-C"]
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler)
    with stopping.watch():
        os.kill(os.getpid(), signal.SIGTERM)  # the first: a stop request, nothing raised
        with pytest.raises(KeyboardInterrupt):
            with stopping.held_interrupts(), stopping.held_interrupts():  # nested: the outer end
                os.kill(os.getpid(), signal.SIGTERM)
                done.append("after the second SIGTERM")
        assert stopping.requested() == "SIGTERM"
    assert done[-1] == "after the second SIGTERM"
    with stopping.held_interrupts():  # nothing held: nothing raised, nothing left pending
        pass
    with pytest.raises(ZeroDivisionError):  # the block's own error wins over a held interrupt
        with stopping.held_interrupts():
            os.kill(os.getpid(), signal.SIGINT)
            1 / 0
    with stopping.held_interrupts():
        pass  # the interrupt dropped with that error is not raised here


def test_nested_held_blocks_hold_an_interrupt_until_the_outermost_ends():
    # The inner block ends first: the rest of the outer one (e.g. a save that calls a held
    # helper) still runs before the interrupt.
    done = []
    with pytest.raises(KeyboardInterrupt), stopping.held_interrupts():
        with stopping.held_interrupts():
            os.kill(os.getpid(), signal.SIGINT)
        done.append("the rest of the outer block")
    assert done == ["the rest of the outer block"]


def test_a_held_block_leaves_a_programs_own_ctrl_c_handler_alone():
    # Only Python's default handler (KeyboardInterrupt) is held: a program that installed its
    # own keeps it, inside the block and after it.
    def handler(signum, frame):
        pass

    previous = signal.signal(signal.SIGINT, handler)
    try:
        with stopping.held_interrupts():
            assert signal.getsignal(signal.SIGINT) is handler
        assert signal.getsignal(signal.SIGINT) is handler
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_checkpoint_save_finishes_before_ctrl_c_stops_it(tmp_path, monkeypatch):
    import jax.numpy as jnp

    from climit import checkpoint

    with checkpoint.Checkpointer(tmp_path / "ck") as ck:
        orbax_save = ck._ckpt.save

        def interrupted_save(*args, **kwargs):  # Ctrl-C while orbax writes the step
            os.kill(os.getpid(), signal.SIGINT)
            return orbax_save(*args, **kwargs)

        monkeypatch.setattr(ck._ckpt, "save", interrupted_save)
        with pytest.raises(KeyboardInterrupt):
            ck.save(1, {"w": jnp.arange(3.0)})
    assert checkpoint.verify_step(tmp_path / "ck" / "1") > 0  # committed, checksums written
    with checkpoint.Checkpointer(tmp_path / "ck", readonly=True) as ck:
        assert ck.restore(1)["w"].tolist() == [0.0, 1.0, 2.0]


def test_every_process_stops_if_any_was_asked_and_only_where_all_poll(monkeypatch):
    import jax
    from jax.experimental import multihost_utils

    gathered = []

    def allgather(x):  # process 1 (of 3) was sent SIGTERM; this is process 0
        gathered.append(int(x))
        return np.array([int(x), 1, 0], np.int32)

    monkeypatch.setattr(jax, "process_count", lambda: 3)
    monkeypatch.setattr(multihost_utils, "process_allgather", allgather)
    with stopping.watch():
        # Not a point every process reaches: a multi-process run never stops there.
        assert stopping.requested() is None and gathered == []
        assert stopping.requested(collective=True) == "a stop request to process 1"
        assert gathered == [0]
        os.kill(os.getpid(), signal.SIGTERM)
        assert stopping.requested() is None and gathered == [0]  # its own too waits for one
        assert stopping.requested(collective=True) == "SIGTERM"  # its own reason first
        assert gathered == [0, 1]
    monkeypatch.setattr(multihost_utils, "process_allgather", lambda x: np.zeros(3, np.int32))
    with stopping.watch():
        assert stopping.requested(collective=True) is None


@pytest.mark.parametrize("text, seconds", [("90", 90), ("90s", 90), ("45m", 2700), ("1.5h", 5400),
                                           ("2d", 172800), (" 0.5s ", 0.5)])
def test_durations(text, seconds):
    assert stopping.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "-5m", "5 minutes", "1h30m", "m"])
def test_bad_durations_are_refused(text):
    with pytest.raises(ValueError, match="not a positive duration"):
        stopping.parse_duration(text)


def test_stop_here_raises_only_when_asked():
    with stopping.watch():
        stopping.stop_here("nothing asked")  # returns
        os.kill(os.getpid(), signal.SIGUSR1)
        with pytest.raises(stopping.Stopped, match=r"stopped \(SIGUSR1\): after part 3"):
            stopping.stop_here("after part 3")


def test_a_stop_is_a_clear_error_that_says_how_to_resume():
    err = stopping.Stopped("the teacher at env step 600 of 1200 per learner", "SIGTERM")
    assert str(err) == ("stopped (SIGTERM): the teacher at env step 600 of 1200 per learner; run "
                        "the same command again to resume")
    assert stopping.EXIT_CODE == 75


def test_the_time_limit_is_reached_at_its_deadline_not_after(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    with stopping.watch(time_limit_s=30):
        now[0] = 129.5
        assert stopping.requested() is None
        now[0] = 130.0
        assert stopping.requested() == "time limit"


def test_stop_here_is_the_collective_poll_that_stops_every_process(monkeypatch):
    # stop_here is where every process polls alike: with 3 processes, one asked (process 2)
    # stops them all there; requested() without collective would never stop a multi-process run.
    import jax
    from jax.experimental import multihost_utils

    monkeypatch.setattr(jax, "process_count", lambda: 3)
    monkeypatch.setattr(multihost_utils, "process_allgather",
                        lambda x: np.array([int(x), 0, 1], np.int32))
    with stopping.watch():
        with pytest.raises(stopping.Stopped, match=r"stopped \(a stop request to process 2\)"):
            stopping.stop_here("after chunk 4")


def test_a_held_block_off_the_main_thread_leaves_the_main_threads_interrupts_alone():
    # Only the main thread handles signals: a block held in another thread (a save made there)
    # holds nothing and counts nothing, so later a second stop signal still stops at once.
    import threading

    def save_in_a_thread():
        with stopping.held_interrupts():
            pass

    worker = threading.Thread(target=save_in_a_thread)
    worker.start()
    worker.join()
    with stopping.watch():
        os.kill(os.getpid(), signal.SIGTERM)
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)
