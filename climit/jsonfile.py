"""JSON objects on disk (summaries, results, metadata): the one way climit reads them, and
:func:`write_atomic`, the one way climit replaces a file.

Two readings. :func:`read` is for a file that must be there: a missing, undecodable or
non-object file is an ArtifactError naming it. :func:`read_or_empty` is for a file whose
absence or damage only means "not done yet" (a summary torn by a kill: the stage runs again):
it gives ``{}`` then. Either way the caller gets a dict, never a list, a number or a traceback.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

from climit.errors import ArtifactError


def read(path: str | Path, what: str = "") -> dict[str, Any]:
    """The JSON object in ``path``; ``what`` names it in errors ("the report summary").

    Raises:
        ArtifactError: the file is missing or unreadable, is not UTF-8 JSON, or holds a JSON
            value other than an object.
    """
    path = Path(path)
    what = what or "the file"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ArtifactError(f"{what} is missing: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{what} is damaged: {path} is not valid JSON ({e})") from None
    except OSError as e:
        raise ArtifactError(f"{what} cannot be read: {path}: {e}") from None
    if not isinstance(data, dict):
        raise ArtifactError(f"{what} is damaged: {path} holds a JSON {type(data).__name__}, not "
                            f"an object; is it a climit file?")
    return data


def read_or_empty(path: str | Path) -> dict[str, Any]:
    """The JSON object in ``path``, or ``{}`` when it is missing or damaged in any way."""
    try:
        return read(path)
    except ArtifactError:
        return {}


_swept: set[str] = set()  # directories this process has cleared of dead writers' temporaries
_sweep_lock = threading.Lock()  # held through a sweep: no write of ours starts there meanwhile


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # OverflowError: no pid is that large
        return False
    except OSError:  # another user's process, say: there, so its temporary may be in use
        return True
    return True


def _remove_dead_temporaries(directory: Path) -> None:
    """Delete the temporaries of :func:`write_atomic` that processes no longer running left in
    ``directory``: a SIGKILL (or an OOM kill) between a temporary's creation and its rename
    runs no cleanup. Once per directory and process, before its first write there; a live
    process's temporary is left alone. One under this process's own pid goes too: none of its
    writes has started there yet (the lock holds them back), so a process before it that had
    the same pid left it, as a restarted container's entrypoint does."""
    name = os.path.abspath(directory)
    if name in _swept:  # every later write there (a history's every chunk file): no lock, no
        return          # realpath's stat of every path component
    key = os.path.realpath(directory)  # one directory by two names is still swept once
    with _sweep_lock:
        if key not in _swept:
            _sweep(directory)
        _swept.update((key, name))


def _sweep(directory: Path) -> None:
    for tmp in directory.glob(".*.tmp-*"):
        pid = tmp.name.rpartition(".tmp-")[2]
        if pid.isdigit() and (int(pid) == os.getpid() or not _alive(int(pid))):
            tmp.unlink(missing_ok=True)


def write_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to a temporary name in the same directory, then rename it over ``path``.

    Synced before and after the rename: the rename alone survives a killed process, not a
    machine that goes down, which could leave a history chunk empty behind a durable checkpoint
    that counts it (a resume then stops at the truncated chunk). The first write into a
    directory removes the temporaries that killed processes left there
    (:func:`_remove_dead_temporaries`), so a resumed run ends with the files of an
    uninterrupted one.
    """
    path = Path(path)
    _remove_dead_temporaries(path.parent)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # a full disk, a signal: the old file stays whole, no temporary left
        tmp.unlink(missing_ok=True)
        raise
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
