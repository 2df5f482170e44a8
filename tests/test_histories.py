"""Learning-history storage: round trip, lazy reads, episodes, resume, damage, disk check."""

from __future__ import annotations

import numpy as np
import pytest

from climit import histories
from climit.errors import ArtifactError, ClimitError

SPEC = {"name": "toy", "interface": "grid", "obs_shape": (2,), "obs_dtype": "uint8",
        "num_actions": 5, "action_mask": [True, True, True, True, False], "episode_len": 4,
        "task_dim": 2}
N, Q_PERIOD, A = 5, 3, 5


def _streams(n: int = N) -> list[histories.StreamInfo]:
    return [histories.StreamInfo(learner=i // 2, env=i % 2, task=(i, 7 - i), seed=100 + i,
                                 hparams={"lr": 1e-3 * (i + 1)}) for i in range(n)]


def _data(seed: int, steps: int, n: int = N) -> dict[str, np.ndarray]:
    """Random full-length arrays for n streams (episode ends roughly every 4 steps)."""
    rng = np.random.default_rng(seed)
    term = rng.random((n, steps)) < 0.15
    trunc = (rng.random((n, steps)) < 0.15) & ~term
    return {"obs": rng.integers(0, 9, (n, steps, 2), dtype=np.uint8),
            "action": rng.integers(0, 4, (n, steps), dtype=np.uint8),
            "reward": rng.normal(size=(n, steps)).astype(np.float32),
            "terminated": term, "truncated": trunc,
            "q_values": rng.normal(
                size=(n, histories.num_q_rows(steps, Q_PERIOD), A)).astype(np.float16)}


def _append(w: histories.HistoryWriter, d: dict, t0: int, t1: int) -> None:
    q0, q1 = histories.num_q_rows(t0, Q_PERIOD), histories.num_q_rows(t1, Q_PERIOD)
    w.append(d["obs"][:, t0:t1], d["action"][:, t0:t1], d["reward"][:, t0:t1],
             d["terminated"][:, t0:t1], d["truncated"][:, t0:t1], d["q_values"][:, q0:q1])


def _write(path, d, cuts, spc=2) -> histories.HistoryWriter:
    w = histories.create(path, spec=SPEC, streams=_streams(), config={"teacher": {"lr": 0.001}},
                         q_period=Q_PERIOD, streams_per_chunk=spc, total_steps=cuts[-1])
    for t0, t1 in zip(cuts[:-1], cuts[1:]):
        _append(w, d, t0, t1)
    return w


CUTS = [0, 7, 10, 20, 23]  # uneven chunk lengths, some not multiples of q_period


def test_round_trip_and_metadata(tmp_path):
    d = _data(0, CUTS[-1])
    _write(tmp_path / "h", d, CUTS)
    h = histories.open(tmp_path / "h")
    assert (h.num_streams, h.num_steps, h.num_q, h.q_period) == (N, 23, 8, 3)
    assert h.complete
    assert h.env["obs_dtype"] == "uint8" and h.env["action_mask"] == SPEC["action_mask"]
    assert h.config == {"teacher": {"lr": 0.001}}
    assert h.stream_info(3) == histories.StreamInfo(1, 1, (3, 4), 103, {"lr": pytest.approx(0.004)})
    for s in range(N):
        for f in histories.STEP_FIELDS:
            got = h.read(f, s)
            assert got.dtype == d[f].dtype and np.array_equal(got, d[f][s]), (f, s)
        assert np.array_equal(h.read("q_values", s), d["q_values"][s])
    assert list(h.q_steps()) == [0, 3, 6, 9, 12, 15, 18, 21]
    # 3 blocks of <= 2 streams x 4 time chunks
    assert h.verify() == 12


def test_lazy_read_across_chunk_boundaries_loads_only_needed_chunks(tmp_path):
    d = _data(1, CUTS[-1])
    _write(tmp_path / "h", d, CUTS)
    h = histories.open(tmp_path / "h")
    for t0, t1 in [(5, 12), (0, 23), (7, 10), (9, 21), (22, 23), (4, 4)]:
        assert np.array_equal(h.read("obs", 4, t0, t1), d["obs"][4, t0:t1])
        assert np.array_equal(h.read("reward", 1, t0, t1), d["reward"][1, t0:t1])
    assert np.array_equal(h.read("q_values", 2, 2, 7), d["q_values"][2, 2:7])
    tiny = histories.open(tmp_path / "h", cache_bytes=1)  # evicts all but the last decoded file
    for s in (0, 3, 0, 4):
        assert np.array_equal(tiny.read("obs", s, 3, 21), d["obs"][s, 3:21])
    assert len(tiny._cache) == 1
    # A read inside the second chunk of stream 0 touches exactly one file: deleting every other
    # file does not disturb it.
    h2 = histories.open(tmp_path / "h")
    keep = h2.manifest["chunks"][1]["files"][0]["name"]
    for f in (tmp_path / "h" / "chunks").iterdir():
        if f.name != keep:
            f.unlink()
    assert np.array_equal(h2.read("action", 1, 8, 10), d["action"][1, 8:10])
    with pytest.raises(ArtifactError, match="missing"):
        h2.read("action", 1, 8, 11)
    with pytest.raises(IndexError):
        h2.read("action", 1, 0, 24)


def test_reading_several_fields_reads_and_verifies_each_file_once(tmp_path, monkeypatch):
    """episodes() reads rewards, terminations and truncations of the same steps: each chunk
    file it touches is read and checksummed once, not once per field."""
    d = _data(1, CUTS[-1])
    _write(tmp_path / "h", d, CUTS)
    h = histories.open(tmp_path / "h")
    reads = []
    verified = histories.History._verified_bytes
    monkeypatch.setattr(histories.History, "_verified_bytes",
                        lambda self, entry: reads.append(entry["name"]) or verified(self, entry))
    ep = h.episodes(2)
    assert ep.length.sum() == CUTS[-1]
    assert sorted(reads) == sorted(set(reads)) and len(reads) == len(h.manifest["chunks"])


def test_episodes_on_hand_made_stream(tmp_path):
    # 1 stream, steps 0..9, chunks [0,4) [4,10). Episodes: [0,3) terminated at 2,
    # [3,7) truncated at 6 (spans the chunk boundary), [7,10) unfinished.
    steps = 10
    term = np.zeros((1, steps), bool); term[0, 2] = True
    trunc = np.zeros((1, steps), bool); trunc[0, 6] = True
    reward = np.arange(steps, dtype=np.float32)[None]
    w = histories.create(tmp_path / "h", spec=SPEC, streams=_streams(1))
    for t0, t1 in [(0, 4), (4, 10)]:
        w.append(np.zeros((1, t1 - t0, 2)), np.zeros((1, t1 - t0)), reward[:, t0:t1],
                 term[:, t0:t1], trunc[:, t0:t1])
    ep = histories.open(tmp_path / "h").episodes(0)
    assert ep.start.tolist() == [0, 3, 7]
    assert ep.length.tolist() == [3, 4, 3]
    assert ep.ret.tolist() == [0 + 1 + 2, 3 + 4 + 5 + 6, 7 + 8 + 9]
    assert ep.finished.tolist() == [True, True, False]
    # Ending exactly on a boundary leaves no empty trailing episode.
    w.append(np.zeros((1, 1, 2)), np.zeros((1, 1)), np.ones((1, 1)), np.ones((1, 1), bool),
             np.zeros((1, 1), bool))
    ep = histories.open(tmp_path / "h").episodes(0)
    assert ep.length.tolist() == [3, 4, 4] and ep.finished.tolist() == [True, True, True]


def test_truncate_and_reappend_equals_uninterrupted(tmp_path):
    d = _data(2, CUTS[-1])
    _write(tmp_path / "a", d, CUTS)
    # Crash after writing up to step 20, having checkpointed at step 10; an orphan chunk file of
    # a half-finished append is lying around as well.
    w = _write(tmp_path / "b", d, CUTS[:4])
    (tmp_path / "b" / "chunks" / "b00000_t000000000020.npz").write_bytes(b"half")
    with pytest.raises(ArtifactError, match="chunk boundary"):
        histories.resume(tmp_path / "b", 11)
    w = histories.resume(tmp_path / "b", 10)
    assert w.num_steps == 10 and histories.open(tmp_path / "b").num_q == 4
    for t0, t1 in [(10, 20), (20, 23)]:
        _append(w, d, t0, t1)
    a, b = histories.open(tmp_path / "a"), histories.open(tmp_path / "b")
    assert a.manifest == b.manifest
    files_a = sorted(p.name for p in (tmp_path / "a" / "chunks").iterdir())
    assert files_a == sorted(p.name for p in (tmp_path / "b" / "chunks").iterdir())
    for name in files_a:
        assert (tmp_path / "a" / "chunks" / name).read_bytes() == \
            (tmp_path / "b" / "chunks" / name).read_bytes()


def test_damaged_chunks_are_reported_by_name(tmp_path):
    d = _data(3, CUTS[-1])
    _write(tmp_path / "h", d, CUTS)
    chunks = tmp_path / "h" / "chunks"
    flipped, cut = chunks / "b00001_t000000000007.npz", chunks / "b00002_t000000000020.npz"
    raw = bytearray(flipped.read_bytes()); raw[len(raw) // 2] ^= 0x01
    flipped.write_bytes(bytes(raw))
    cut.write_bytes(cut.read_bytes()[:-5])
    h = histories.open(tmp_path / "h")
    assert np.array_equal(h.read("obs", 2, 0, 7), d["obs"][2, :7])  # untouched chunk still reads
    with pytest.raises(ArtifactError, match=r"b00001_t000000000007\.npz is corrupt"):
        h.read("obs", 2, 5, 9)
    with pytest.raises(ArtifactError, match=r"b00002_t000000000020\.npz is truncated"):
        h.read("reward", 4, 20, 23)
    with pytest.raises(ArtifactError, match="b00001_t000000000007"):
        h.verify()


def test_missing_directory_or_metadata(tmp_path):
    with pytest.raises(ArtifactError, match="directory missing"):
        histories.open(tmp_path / "nope")
    _write(tmp_path / "h", _data(4, 10), [0, 10])
    (tmp_path / "h" / "manifest.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="manifest is damaged"):
        histories.open(tmp_path / "h")
    (tmp_path / "h" / "meta.json").unlink()
    with pytest.raises(ArtifactError, match="metadata is missing"):
        histories.open(tmp_path / "h")


def test_resuming_a_missing_history_says_what_to_do(tmp_path):
    # Only the teacher resumes histories, after restoring a checkpoint: "run climit teach
    # first" (what a reader is told) would send the user back to the command that failed.
    with pytest.raises(ArtifactError, match="cannot resume the learning history") as e:
        histories.resume(tmp_path / "runs" / "x" / "teacher" / "histories", 400)
    msg = str(e.value)
    assert str(tmp_path / "runs" / "x" / "teacher" / "histories") in msg
    assert "remove the run directory" in msg and "run.name" in msg and "first" not in msg


def test_create_refuses_existing_and_checks_shapes(tmp_path):
    w = _write(tmp_path / "h", _data(5, 10), [0, 10])
    with pytest.raises(ClimitError, match="already exists"):
        histories.create(tmp_path / "h", spec=SPEC, streams=_streams())
    d = _data(5, 3)
    with pytest.raises(ValueError, match="q_values"):  # 10..13 holds one Q row (step 12), not 0
        w.append(d["obs"], d["action"], d["reward"], d["terminated"], d["truncated"],
                 d["q_values"][:, :0])
    with pytest.raises(ValueError, match="obs has shape"):
        w.append(d["obs"][:, :, :1], d["action"], d["reward"], d["terminated"], d["truncated"],
                 d["q_values"][:, :1])


def test_estimate_and_disk_check(tmp_path, monkeypatch):
    # per step: obs 2 + action 1 + reward 4 + 2 flags = 9 bytes; Q rows ceil(10/3)=4 x 5 x 2 bytes
    assert histories.estimate_bytes(SPEC, 3, 10, q_period=3) == 3 * (10 * 9 + 4 * 5 * 2)
    monkeypatch.setattr(histories, "free_bytes", lambda path: 1000)
    histories.check_disk(tmp_path, 1000)
    with pytest.raises(ClimitError, match=r"need 1\.0 KB \(1001 bytes\).*1000 bytes\) free"):
        histories.check_disk(tmp_path / "runs" / "x", 1001)
    with pytest.raises(ClimitError, match="not enough disk space for histories at"):
        histories.create(tmp_path / "h", spec=SPEC, streams=_streams(), total_steps=10**6)
    with pytest.raises(ClimitError, match="not enough disk space for the run .histories 1 KB.* at"):
        histories.check_disk(tmp_path, 1001, what="the run (histories 1 KB, checkpoints 0 B)")
    assert not (tmp_path / "h").exists()  # checked before anything is written


def _edit_json(path, edit) -> None:
    import json
    raw = json.loads(path.read_text())
    path.write_text(json.dumps(edit(raw)))


def _manifest_edits():
    def more_steps(m):
        m["num_steps"] *= 2
        return m

    def drop_row(m):
        del m["chunks"][1]
        return m

    def reorder(m):
        m["chunks"][1], m["chunks"][2] = m["chunks"][2], m["chunks"][1]
        return m

    def drop_last_row(m):  # num_steps still says 23
        m["chunks"].pop()
        return m

    def more_q(m):
        m["num_q"] += 1
        return m
    return {"more_steps": (more_steps, "num_steps"), "drop_row": (drop_row, "row 1 "),
            "reorder": (reorder, "row 1 "), "drop_last_row": (drop_last_row, "num_steps"),
            "more_q": (more_q, "num_q"), "list": (lambda m: [], "JSON list")}


@pytest.mark.parametrize("edit", sorted(_manifest_edits()))
def test_an_edited_manifest_is_refused_at_open(tmp_path, edit):
    # Readers fill np.empty from the rows: a gap or a raised count would be uninitialised memory.
    fn, match = _manifest_edits()[edit]
    _write(tmp_path / "h", _data(6, CUTS[-1]), CUTS)
    _edit_json(tmp_path / "h" / "manifest.json", fn)
    with pytest.raises(ArtifactError, match=match) as e:
        histories.open(tmp_path / "h")
    assert str(tmp_path / "h" / "manifest.json") in str(e.value) and "climit teach" in str(e.value)


def test_read_never_returns_unwritten_memory(tmp_path):
    # A History built without open()'s check (a manifest with a gap) still refuses the read.
    _write(tmp_path / "h", _data(7, CUTS[-1]), CUTS)
    h = histories.open(tmp_path / "h")
    manifest = dict(h.manifest, chunks=[c for i, c in enumerate(h.manifest["chunks"]) if i != 1])
    gapped = histories.History(h.path, h.meta, manifest)
    with pytest.raises(ArtifactError, match="no chunk for reward at step 7"):
        gapped.read_streams("reward", [0, 1])
    assert gapped.read("reward", 0, 0, 7).shape == (7,)  # what is covered still reads


def test_edited_metadata_is_an_artifact_error_naming_it(tmp_path):
    d = _data(8, CUTS[-1])
    _write(tmp_path / "h", d, CUTS, spc=2)
    meta = tmp_path / "h" / "meta.json"
    original = meta.read_text()
    # Streams cut 5 -> 2: the manifest lists 3 files per row (blocks of 2), the metadata makes 1.
    _edit_json(meta, lambda m: dict(m, streams=m["streams"][:2]))
    with pytest.raises(ArtifactError, match="lists 3 files, not the 1"):
        histories.open(tmp_path / "h")
    meta.write_text(original)
    _edit_json(meta, lambda m: dict(m, env=dict(m["env"], obs_shape=[3])))
    h = histories.open(tmp_path / "h")
    with pytest.raises(ArtifactError, match=r"holds obs of shape \(2, 7, 2\).*meta\.json") as e:
        h.read_streams("obs", [0, 1])
    assert "climit teach" in str(e.value)
    meta.write_text(original)
    _edit_json(meta, lambda m: dict(m, env=dict(m["env"], obs_shape="x")))
    with pytest.raises(ArtifactError, match="meta.json is damaged or was edited"):
        histories.open(tmp_path / "h")


def test_edited_stream_count_is_caught_when_blocks_hide_it(tmp_path):
    # One block of 8 holds all 5 streams: cutting meta.json to 3 leaves one file per row, as
    # before; the chunk's own shape then shows the reader is not reading what it thinks.
    _write(tmp_path / "h", _data(9, CUTS[-1]), CUTS, spc=8)
    _edit_json(tmp_path / "h" / "meta.json", lambda m: dict(m, streams=m["streams"][:3]))
    h = histories.open(tmp_path / "h")
    with pytest.raises(ArtifactError, match=r"holds reward of shape \(5, 7\).*say \(3, 7\)"):
        h.read("reward", 0)


def test_resume_verifies_the_chunks_it_keeps(tmp_path):
    # A chunk damaged after it was written must not outlive a resume: the run would finish
    # "done" with a history no reader can use, and no later resume could redo those steps.
    d = _data(10, CUTS[-1])
    _write(tmp_path / "teacher" / "h", d, CUTS).close()
    chunks = tmp_path / "teacher" / "h" / "chunks"
    damaged = chunks / "b00001_t000000000007.npz"
    damaged.write_bytes(damaged.read_bytes()[:100])
    with pytest.raises(ArtifactError, match=r"b00001_t000000000007\.npz is truncated") as e:
        histories.resume(tmp_path / "teacher" / "h", 20)
    assert f"remove {tmp_path / 'teacher'} to start it over" in str(e.value)
    # nothing cut
    assert damaged.exists() and histories.open(tmp_path / "teacher" / "h").num_steps == 23
    histories.resume(tmp_path / "teacher" / "h", 7).close()  # before the damage: fine, and redone
    assert histories.open(tmp_path / "teacher" / "h").num_steps == 7 and not damaged.exists()


def test_resume_without_chunks_or_past_the_end_says_what_to_do(tmp_path):
    import shutil
    _write(tmp_path / "teacher" / "h", _data(11, CUTS[-1]), CUTS).close()
    with pytest.raises(ArtifactError, match="holds 23 steps per stream, fewer than the 30") as e:
        histories.resume(tmp_path / "teacher" / "h", 30)
    assert "remove" in str(e.value) and "not a chunk boundary" not in str(e.value)
    shutil.rmtree(tmp_path / "teacher" / "h" / "chunks")
    with pytest.raises(ArtifactError, match=r"b00000_t000000000000\.npz is missing.*remove"):
        histories.resume(tmp_path / "teacher" / "h", 10)
    histories.resume(tmp_path / "teacher" / "h", 0).close()  # nothing kept, nothing lost
    assert histories.open(tmp_path / "teacher" / "h").num_steps == 0


def test_resume_verifies_the_chunk_that_ends_at_its_step(tmp_path):
    # The last chunk a resume to step 20 keeps is [10, 20), ending exactly there: it is kept,
    # so it is checked too (a flipped last byte: same length, another checksum).
    _write(tmp_path / "teacher" / "h", _data(12, CUTS[-1]), CUTS).close()
    damaged = tmp_path / "teacher" / "h" / "chunks" / "b00002_t000000000010.npz"
    raw = bytearray(damaged.read_bytes()); raw[-1] ^= 0x01
    damaged.write_bytes(bytes(raw))
    with pytest.raises(ArtifactError, match=r"b00002_t000000000010\.npz is corrupt"):
        histories.resume(tmp_path / "teacher" / "h", 20)
    histories.resume(tmp_path / "teacher" / "h", 10).close()  # before it: dropped, and redone
    assert histories.open(tmp_path / "teacher" / "h").num_steps == 10 and not damaged.exists()


def test_append_refuses_actions_that_do_not_fit_uint8(tmp_path):
    # Stored as uint8: 256 would read back as action 0 and -1 as 255, without a word.
    w = histories.create(tmp_path / "h", spec=SPEC, streams=_streams(1))
    zeros = np.zeros((1, 2))
    for bad in (256, -1):
        with pytest.raises(ValueError, match="actions must fit in uint8"):
            w.append(np.zeros((1, 2, 2)), np.array([[0, bad]]), zeros, zeros, zeros)
    w.append(np.zeros((1, 2, 2)), np.array([[0, 255]]), zeros, zeros, zeros)
    assert histories.open(tmp_path / "h").read("action", 0).tolist() == [0, 255]


def test_a_grown_chunk_is_reported_as_resized_not_only_as_corrupt(tmp_path):
    # Its checksum fails too, but the size says more: the file is not the one written.
    _write(tmp_path / "h", _data(13, CUTS[-1]), CUTS)
    grown = tmp_path / "h" / "chunks" / "b00000_t000000000010.npz"
    grown.write_bytes(grown.read_bytes() + b"\0")
    h = histories.open(tmp_path / "h")
    with pytest.raises(ArtifactError, match=r"b00000_t000000000010\.npz is truncated or resized"):
        h.read("action", 1, 12, 14)


def test_range_errors_name_the_range_and_the_missing_step(tmp_path):
    _write(tmp_path / "h", _data(14, CUTS[-1]), CUTS)
    h = histories.open(tmp_path / "h")
    with pytest.raises(IndexError, match=r"range \[10, 5\) outside \[0, 23\)"):
        h.read("reward", 0, 10, 5)
    # A History built past open()'s check, without chunk [7, 10): a read from step 5 names
    # step 7 (the first one missing), not its position in the read.
    manifest = dict(h.manifest, chunks=[c for i, c in enumerate(h.manifest["chunks"]) if i != 1])
    gapped = histories.History(h.path, h.meta, manifest)
    with pytest.raises(ArtifactError, match="no chunk for reward at step 7 "):
        gapped.read("reward", 0, 5, 12)


def test_q_values_of_a_history_without_them_are_refused(tmp_path):
    w = histories.create(tmp_path / "h", spec=SPEC, streams=_streams(1))
    w.append(np.zeros((1, 3, 2)), np.zeros((1, 3)), np.zeros((1, 3)), np.zeros((1, 3)),
             np.zeros((1, 3)))
    h = histories.open(tmp_path / "h")
    assert h.q_period == 0 and h.num_q == 0
    with pytest.raises(ValueError, match="no Q-values"):
        h.read("q_values", 0)


def _replace_chunk(hdir, name: str, data: bytes) -> None:
    """Replace chunk file ``name`` with ``data`` and record its length and crc32 in the
    manifest, so that only decoding can tell."""
    import zlib

    (hdir / "chunks" / name).write_bytes(data)

    def fix(m):
        entry = next(f for c in m["chunks"] for f in c["files"] if f["name"] == name)
        entry.update(bytes=len(data), crc32=zlib.crc32(data))
        return m
    _edit_json(hdir / "manifest.json", fix)


def test_a_chunk_that_passes_its_checksum_but_does_not_decode_is_named(tmp_path):
    import io

    d = _data(15, CUTS[-1])
    _write(tmp_path / "h", d, CUTS)
    name = "b00001_t000000000007.npz"
    with np.load(tmp_path / "h" / "chunks" / name) as z:
        kept = {f: z[f] for f in z.files if f != "reward"}
    buf = io.BytesIO()
    np.savez(buf, **kept)
    _replace_chunk(tmp_path / "h", name, buf.getvalue())
    h = histories.open(tmp_path / "h")
    np.testing.assert_array_equal(h.read("action", 2, 7, 10), d["action"][2, 7:10])
    with pytest.raises(ArtifactError, match=rf"{name} has no field 'reward'"):
        h.read("reward", 2, 7, 10)
    _replace_chunk(tmp_path / "h", name, b"not a zip file")
    with pytest.raises(ArtifactError, match=rf"{name} cannot be decoded"):
        histories.open(tmp_path / "h").read("obs", 3, 8, 9)


def test_a_chunk_of_another_dtype_than_the_metadata_is_refused(tmp_path):
    # meta.json edited to uint16 observations (env and dtypes alike, so open() accepts it):
    # the uint8 chunks must not be copied into uint16 arrays as if they were.
    _write(tmp_path / "h", _data(16, CUTS[-1]), CUTS)
    _edit_json(tmp_path / "h" / "meta.json",
               lambda m: dict(m, env=dict(m["env"], obs_dtype="uint16"),
                              dtypes=dict(m["dtypes"], obs="uint16")))
    h = histories.open(tmp_path / "h")
    with pytest.raises(ArtifactError, match=r"holds obs of shape \(2, 7, 2\) \(uint8\).*uint16"):
        h.read("obs", 0, 0, 3)


def test_episode_returns_are_summed_in_float64(tmp_path):
    # 4096 rewards of 0.1 (float32) in one episode: summed in float32 the return drifts.
    w = histories.create(tmp_path / "h", spec=SPEC, streams=_streams(1))
    n = 4096
    w.append(np.zeros((1, n, 2)), np.zeros((1, n)), np.full((1, n), 0.1, np.float32),
             np.zeros((1, n), bool), np.zeros((1, n), bool))
    ep = histories.open(tmp_path / "h").episodes(0)
    assert ep.ret.dtype == np.float64
    assert ep.ret[0] == np.float32(0.1).astype(np.float64) * n


def test_append_refuses_no_steps_and_q_values_a_history_does_not_record(tmp_path):
    # An append of T = 0 would add an empty chunk; Q-values given to a history of q_period 0
    # would be dropped silently.
    w = _write(tmp_path / "h", _data(6, 6), [0, 6])
    d = _data(6, 3)
    with pytest.raises(ValueError, match="T >= 1"):
        w.append(d["obs"][:, :0], d["action"][:, :0], d["reward"][:, :0],
                 d["terminated"][:, :0], d["truncated"][:, :0], d["q_values"][:, :0])
    assert histories.open(tmp_path / "h").num_steps == 6
    plain = histories.create(tmp_path / "plain", spec=SPEC, streams=_streams())
    with pytest.raises(ValueError, match="q_values given but the history has q_period 0"):
        plain.append(d["obs"], d["action"], d["reward"], d["terminated"], d["truncated"],
                     d["q_values"])


def test_a_history_created_over_another_keeps_none_of_its_chunks(tmp_path):
    # overwrite=True starts empty: the old history's chunk files (more of them than the new
    # one writes) are deleted, not left as files no manifest names.
    _write(tmp_path / "h", _data(7, 23), CUTS)
    w = histories.create(tmp_path / "h", spec=SPEC, streams=_streams(), q_period=Q_PERIOD,
                         streams_per_chunk=2, overwrite=True)
    _append(w, _data(8, 7), 0, 7)
    named = {f["name"] for c in histories.open(tmp_path / "h").manifest["chunks"]
             for f in c["files"]}
    assert sorted(p.name for p in (tmp_path / "h" / "chunks").iterdir()) == sorted(named)
    assert len(named) == 3  # 3 blocks of <= 2 streams x 1 time chunk


def test_chunks_are_compressed_at_the_level_asked(tmp_path):
    # All-zero observations deflate to almost nothing at level 3 and not at all at level 0.
    spec = {**SPEC, "obs_shape": (64,)}
    sizes = {}
    for level in (0, 3):
        w = histories.create(tmp_path / f"l{level}", spec=spec, streams=_streams(1),
                             compression_level=level)
        w.append(np.zeros((1, 100, 64)), np.zeros((1, 100)), np.zeros((1, 100)),
                 np.zeros((1, 100)), np.zeros((1, 100)))
        sizes[level] = histories.open(tmp_path / f"l{level}").manifest["chunks"][0]["files"][0][
            "bytes"]
    assert sizes[0] > 100 * 64 and sizes[3] < sizes[0] / 4, sizes  # 8275 and 946 bytes


def test_the_same_data_written_at_another_time_gives_the_same_bytes(tmp_path, monkeypatch):
    # Chunk files carry fixed zip timestamps: two runs of one seed give identical histories,
    # checksums included, whatever the clock says.
    import time

    d = _data(9, 10)
    _write(tmp_path / "a", d, [0, 10])
    later = time.localtime(time.time() + 3 * 86400)
    monkeypatch.setattr(time, "localtime", lambda *a: later)
    _write(tmp_path / "b", d, [0, 10])
    for f in sorted((tmp_path / "a" / "chunks").iterdir()):
        assert f.read_bytes() == (tmp_path / "b" / "chunks" / f.name).read_bytes(), f.name
