"""climit.jsonfile: a JSON object from disk, or a clear error (or {} where damage means "redo")."""

import os

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
