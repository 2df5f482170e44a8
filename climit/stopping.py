"""Stopping a long stage cleanly: on SIGTERM or SIGUSR1, or at a time limit.

Schedulers warn before they stop a job: SLURM sends SIGTERM at the time limit (or the signal
of ``sbatch --signal``, e.g. SIGUSR1 some minutes before), a preemptible cloud VM sends SIGTERM,
and so does ``timeout``. ``--time-limit`` sets the same kind of deadline from the command line.
Instead of dying with up to a checkpoint period of work lost, a stage that polls
:func:`requested` at its natural boundaries saves what it has and raises :class:`Stopped`:

- the teacher after any chunk (a checkpoint at that env step; histories are already written),
- an imitator at its next checkpoint step (``imitator.eval_every``: a checkpoint off that
  schedule would change which checkpoint is best, so it waits for one on it),
- the evaluation after any agent's rollouts (saved as a part, as always),
- ``climit run`` before each stage (a request during a stretch that polls nothing, such as the
  teacher's final greedy evaluation, stops there).

The command line prints where it stopped and exits with :data:`EXIT_CODE` (75, EX_TEMPFAIL:
"try again"); the same command resumes, to the result an uninterrupted run gives. A second
signal while a stop is pending stops at once, as Ctrl-C does (KeyboardInterrupt), except inside
:func:`held_interrupts` (a checkpoint save), where both wait for the save to end: interrupted
inside an orbax save, orbax's background threads can wait forever and the process never exits.

With several processes (``jax.process_count() > 1``) a signal may reach them at different
moments, and they must stop at the same step: a poll that passes ``collective=True`` (all
processes poll there, in the same order) stops every process if any of them was asked to; a
poll without it never stops a multi-process run, so multi-process stops happen at checkpoints.

    with stopping.watch(time_limit_s=3600):
        ...
        save()
        stopping.stop_here(f"imitator at step {step}, its checkpoint saved")
"""

from __future__ import annotations

import contextlib
import re
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from climit.errors import ClimitError

EXIT_CODE = 75  # EX_TEMPFAIL (sysexits.h): the same command, run again, resumes
SIGNALS = tuple(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGUSR1", None))
                if s is not None)


class Stopped(ClimitError):
    """A stage stopped on request after saving its work; the same command resumes it."""

    def __init__(self, where: str, why: str):
        super().__init__(f"stopped ({why}): {where}; run the same command again to resume")
        self.where, self.why = where, why


@dataclass
class _Watch:
    signal_name: str | None = None  # the first stop signal received
    deadline: float | None = None  # time.monotonic() at which to stop


_watch = _Watch()


@dataclass
class _Hold:
    depth: int = 0  # nested held_interrupts() blocks open
    pending: bool = False  # an interrupt came inside one


_hold = _Hold()


def _interrupt() -> None:
    """Stop now (KeyboardInterrupt), or at the end of the held block under way."""
    if _hold.depth:
        _hold.pending = True
        return
    raise KeyboardInterrupt


def _on_signal(signum: int, frame: object) -> None:
    if _watch.signal_name is not None:  # asked twice: stop now, as Ctrl-C does
        _interrupt()
        return
    _watch.signal_name = signal.Signals(signum).name


def _on_sigint(signum: int, frame: object) -> None:
    _interrupt()


@contextlib.contextmanager
def held_interrupts() -> Iterator[None]:
    """Within the block, Ctrl-C (where it would raise KeyboardInterrupt) and a second stop
    signal are held, and raise KeyboardInterrupt when the block ends. For checkpoint saves: a
    KeyboardInterrupt inside one can leave orbax's background threads waiting forever, so the
    process would print that it was interrupted and never exit. Only the main thread handles
    signals; elsewhere the block holds nothing."""
    main = threading.current_thread() is threading.main_thread()
    takes_sigint = (main and _hold.depth == 0
                    and signal.getsignal(signal.SIGINT) is signal.default_int_handler)
    if takes_sigint:
        signal.signal(signal.SIGINT, _on_sigint)
    _hold.depth += main
    try:
        yield
    finally:
        _hold.depth -= main
        if takes_sigint:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        pending = _hold.pending and _hold.depth == 0
        if pending:
            _hold.pending = False
    if pending:  # the block ended normally: the interrupt it held, now
        raise KeyboardInterrupt


@contextlib.contextmanager
def watch(time_limit_s: float | None = None) -> Iterator[None]:
    """Within the block, SIGTERM and SIGUSR1 request a stop instead of killing the process, and
    so does reaching ``time_limit_s`` seconds from now. The previous handlers come back after
    it. Handlers can only be set from the main thread; elsewhere only the time limit applies."""
    global _watch
    previous_watch, _watch = _watch, _Watch(
        deadline=None if time_limit_s is None else time.monotonic() + time_limit_s)
    previous = {}
    with contextlib.suppress(ValueError):  # not the main thread: no handlers
        for s in SIGNALS:
            previous[s] = signal.signal(s, _on_signal)
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        _watch = previous_watch


def _local_reason() -> str | None:
    if _watch.signal_name is not None:
        return _watch.signal_name
    if _watch.deadline is not None and time.monotonic() >= _watch.deadline:
        return "time limit"
    return None


def requested(*, collective: bool = False) -> str | None:
    """Why this run should stop here (a signal's name or 'time limit'), or None.

    ``collective``: every process polls at this point, in the same order; then a request that
    reached any process stops them all. Without it a multi-process run is never stopped here.
    """
    import jax

    if jax.process_count() == 1:
        return _local_reason()
    if not collective:
        return None
    from jax.experimental import multihost_utils

    local = _local_reason()
    flags = np.asarray(multihost_utils.process_allgather(np.int32(local is not None)))
    if not flags.any():
        return None
    return local or f"a stop request to process {int(np.argmax(flags))}"


def stop_here(where: str) -> None:
    """Raise :class:`Stopped` (``where``: what has been saved) if a stop was requested. Every
    process must reach this point, in the same order (a collective poll)."""
    why = requested(collective=True)
    if why is not None:
        raise Stopped(where, why)


_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """Seconds in '90', '90s', '45m', '1.5h' or '2d' (for ``--time-limit``).

    Raises:
        ValueError: anything else, or a duration that is not positive.
    """
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([smhd]?)\s*", text)
    if match is None or float(match.group(1)) <= 0:
        raise ValueError(f"not a positive duration: {text!r} (e.g. 90s, 45m, 1.5h, 2d)")
    return float(match.group(1)) * _UNITS[match.group(2)]
