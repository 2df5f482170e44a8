"""climit.jsonfile: a JSON object from disk, or a clear error (or {} where damage means "redo")."""

import os
import signal
import stat
import subprocess
import sys

import pytest

from climit import jsonfile
from climit.errors import ArtifactError


@pytest.mark.parametrize("content, message", [
    (None, "the summary is missing: "),
    (b"{torn", "the summary is damaged: .* is not valid JSON"),
    (b"\xff\xfe{}", "the summary is damaged: .* is not valid JSON"),
    (b"[1, 2]", "the summary is damaged: .* holds a JSON list, not an object"),
    (b"3", "holds a JSON int, not an object"),
])
def test_anything_but_an_object_is_a_named_error_or_empty(tmp_path, content, message):
    path = tmp_path / "summary.json"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ArtifactError, match=message):
        jsonfile.read(path, "the summary")
    assert jsonfile.read_or_empty(path) == {}


def test_an_object_reads_back(tmp_path):
    (tmp_path / "s.json").write_text('{"fingerprint": "abc", "n": [1, 2]}')
    assert jsonfile.read(tmp_path / "s.json") == {"fingerprint": "abc", "n": [1, 2]}
    assert jsonfile.read_or_empty(tmp_path / "s.json") == {"fingerprint": "abc", "n": [1, 2]}
    with pytest.raises(ArtifactError, match="the file cannot be read"):  # a directory
        jsonfile.read(tmp_path)
    assert jsonfile.read_or_empty(tmp_path) == {}


def test_a_write_that_fails_before_its_rename_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "summary.json"
    path.write_bytes(b'{"old": 1}')

    def full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match="No space left"):
        jsonfile.write_atomic(path, b'{"new": 2}')
    monkeypatch.undo()
    assert path.read_bytes() == b'{"old": 1}'
    # and no temporary is left: a later process (another pid) would never remove it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]


def test_a_write_killed_before_its_rename_leaves_no_temporary_once_resumed(tmp_path):
    """SIGKILL between the temporary and its rename runs no cleanup (here in a child whose
    rename kills it; `climit run` killed so left .manifest.json.tmp-PID in teacher/histories/,
    .config.yaml.tmp-PID in imitator/ed/, .test_a.png.tmp-PID in report/). The process that
    resumes writes there again: the dead one's temporary goes, a live writer's stays."""
    path = tmp_path / "summary.json"
    path.write_bytes(b'{"old": 1}')
    code = ("import os, signal, sys; from climit import jsonfile; "
            "os.replace = lambda *a: os.kill(os.getpid(), signal.SIGKILL); "
            "jsonfile.write_atomic(sys.argv[1], b'{\"new\": 2}')")
    killed = subprocess.run([sys.executable, "-c", code, str(path)], timeout=60)
    assert killed.returncode == -signal.SIGKILL
    assert path.read_bytes() == b'{"old": 1}'
    assert len(list(tmp_path.glob(".summary.json.tmp-*"))) == 1  # what the kill left
    writer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = tmp_path / f".other.json.tmp-{writer.pid}"  # a writer still at work
        live.write_bytes(b"{")
        jsonfile.write_atomic(path, b'{"new": 3}')
    finally:
        writer.kill()
        writer.wait()
    assert jsonfile.read(path) == {"new": 3}
    assert sorted(p.name for p in tmp_path.iterdir()) == [live.name, "summary.json"]


def test_a_temporary_under_this_process_pid_before_its_first_write_there_goes(tmp_path):
    # A restarted container's entrypoint gets the pid its killed predecessor had: what that
    # one left under the pid is no write of this process, which has not written here yet.
    left = tmp_path / f".manifest.json.tmp-{os.getpid()}"
    left.write_bytes(b"{")
    jsonfile.write_atomic(tmp_path / "summary.json", b'{"new": 1}')
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]



def test_a_temporary_under_a_number_no_pid_can_be_goes(tmp_path):
    # os.kill refuses such a pid with OverflowError: no process has it, so none writes there.
    (tmp_path / f".summary.json.tmp-{2**70}").write_bytes(b"{")
    jsonfile.write_atomic(tmp_path / "summary.json", b'{"new": 1}')
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]


def test_no_write_into_a_directory_starts_while_it_is_swept(tmp_path, monkeypatch):
    # The sweep removes this process's own pid's temporaries: a thread writing there meanwhile
    # (the histories' background writer beside the main thread) would lose its own.
    import threading
    import time

    started, release, sweep = threading.Event(), threading.Event(), jsonfile._sweep
    monkeypatch.setattr(jsonfile, "_sweep", lambda d: (started.set(), release.wait(10), sweep(d)))
    first = threading.Thread(target=jsonfile.write_atomic, args=(tmp_path / "a.json", b"{}"))
    second = threading.Thread(target=jsonfile.write_atomic, args=(tmp_path / "b.json", b"{}"))
    first.start()
    assert started.wait(10)
    second.start()
    time.sleep(0.3)
    assert not (tmp_path / "b.json").exists()  # held back until the sweep ends
    release.set()
    first.join(10), second.join(10)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.json"]

def _is_dir(fd):
    return stat.S_ISDIR(os.fstat(fd).st_mode)


def test_a_write_replaces_the_file_synced_before_and_after_its_rename(tmp_path, monkeypatch):
    # The data is on disk (flushed, then synced) before the rename makes it the file, and the
    # directory is synced after it: a machine that goes down keeps the old file or the new one.
    path = tmp_path / "summary.json"
    path.write_bytes(b'{"old": 1}')
    events, real_fsync, real_replace = [], os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", _is_dir(fd) or os.fstat(fd).st_size))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", os.path.basename(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    jsonfile.write_atomic(path, b'{"new": 22}')
    monkeypatch.undo()
    assert events == [("fsync", 11), ("replace", "summary.json"), ("fsync", True)]
    assert jsonfile.read(path) == {"new": 22}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]  # no temporary left


def test_two_writers_at_once_each_rename_their_own_whole_file(tmp_path, monkeypatch):
    # Two processes replacing one file at the same moment: each writes its own temporary, so
    # neither truncates the other's or renames it away; the file is one of the two, whole.
    path = tmp_path / "results.json"
    real_fsync, pids, inner = os.fsync, iter([1001, 1002]), []

    def fsync(fd):
        if not inner and not _is_dir(fd):  # the first writer's sync
            inner.append(1)
            jsonfile.write_atomic(path, b'{"writer": 2}')  # the second writes meanwhile
        real_fsync(fd)

    monkeypatch.setattr(os, "getpid", lambda: next(pids, 1001))
    monkeypatch.setattr(os, "fsync", fsync)
    jsonfile.write_atomic(path, b'{"writer": 1}')
    monkeypatch.undo()
    assert jsonfile.read(path) == {"writer": 1}  # renamed last
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


def test_the_library_replaces_files_only_through_write_atomic():
    # A file written in place (Path.write_text, savefig to its path) is torn by a full disk,
    # the previous one lost: config.yaml, a summary or a plot. docs.py alone edits the README
    # of a checkout (a developer's command, not a run's artifact).
    import re
    from pathlib import Path

    root = Path(jsonfile.__file__).parent
    in_place = re.compile(r"\.write_(text|bytes)\(|savefig\((?!buf\b)")
    found = [f"{p.relative_to(root)}:{i}" for p in sorted(root.rglob("*.py")) if p.name != "docs.py"
             for i, line in enumerate(p.read_text().splitlines(), 1) if in_place.search(line)]
    assert found == []


def test_config_yaml_is_replaced_whole_or_not_at_all(tmp_path, monkeypatch):
    # `climit evaluate` refreshes config.yaml beside a run: a disk that fills up meanwhile
    # leaves the previous one whole (it was written in place before, and torn).
    from climit import config, pipeline

    cfg = config.load(None, [f"run.runs_dir={tmp_path}", "run.name=r"])
    rd = pipeline.run_dir(cfg)
    rd.mkdir(parents=True)
    (rd / "config.yaml").write_text("old: 1\n")

    def full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match="No space left"):
        pipeline.after_evaluate(cfg, log=lambda m: None)
    monkeypatch.undo()
    assert (rd / "config.yaml").read_text() == "old: 1\n"
    assert sorted(p.name for p in rd.iterdir()) == ["config.yaml"]
    pipeline.after_evaluate(cfg, log=lambda m: None)
    assert config.load(rd / "config.yaml") == cfg
