"""Shared fixtures, and how the whole suite compiles."""

import json
import os
import tempfile
from pathlib import Path

# Compiling, not running, is most of this suite's time: its programs are tiny. Set before any
# test module imports jax; subprocesses inherit both (tests/procs.py keeps XLA_FLAGS' flags).
# - LLVM's optimisation of the CPU code is about 40% of each compile and buys nothing at these
#   sizes (the tiny `climit run`: 98 s -> 64 s). It can change float results in the last bit
#   (contracted multiply-adds), so every process of the suite compiles alike, and tests compare
#   runs with runs, never with numbers recorded from an optimised build.
# - A persistent cache shared by tests, xdist workers and subprocesses, several of which compile
#   the same programs (JAX keys its entries by program, options and version: nothing stale is
#   read; a rerun of the suite on the same machine mostly loads).
if "--xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_backend_optimization_level=0").strip()
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(tempfile.gettempdir(), "climit-tests-xla-cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import pytest


@pytest.fixture
def fake_training(monkeypatch):
    """Replace the teacher and imitator stages with fakes that write fingerprinted summaries and
    record their calls (``teach``: run names; ``imitate``: imitator tags), for tests of the
    stage logic around them (pipeline skipping/resuming, sweeps). Tests add their own evaluation
    fake to the returned dict's ``evaluate`` list."""
    from climit import jsonfile
    from climit.imitator import train as imitator_train
    from climit.teacher import train as teacher_train

    calls = {"teach": [], "imitate": [], "evaluate": []}

    def teach(cfg, rd, progress=True, log=print):
        calls["teach"].append(cfg.run.name)
        (Path(rd) / "teacher").mkdir(parents=True, exist_ok=True)
        (Path(rd) / "teacher" / "summary.json").write_text(
            json.dumps({"fingerprint": teacher_train.fingerprint(cfg)}))

    def imitate(cfg, progress=True):
        calls["imitate"].append(imitator_train.tag(cfg.imitator))
        out = imitator_train.output_dir(cfg)
        out.mkdir(parents=True, exist_ok=True)
        summary = {"fingerprint": imitator_train.fingerprint(cfg), "heldout_loss": 1.0,
                   "heldout_action_accuracy": 0.5}
        (out / "summary.json").write_text(json.dumps(summary))
        return summary

    def finished_summary(cfg, out_dir):  # the fake writes no history: its summary is the run
        summary = jsonfile.read_or_empty(Path(out_dir) / "summary.json")
        return summary if summary.get("fingerprint") == teacher_train.fingerprint(cfg) else None

    monkeypatch.setattr(teacher_train, "teach", teach)
    monkeypatch.setattr(teacher_train, "finished_summary", finished_summary)
    monkeypatch.setattr(imitator_train, "train", imitate)
    return calls


@pytest.fixture
def fake_gpu_attention(monkeypatch):
    """``install(refuse)``: from then on attention 'auto' picks cuDNN (as on a GPU), and the
    cuDNN kernel is faked by XLA attention, or raises at trace time like a real one refusing
    its shapes when ``refuse``. Returns the list of implementations asked for."""
    import jax

    from climit.imitator import model

    calls = []
    real = jax.nn.dot_product_attention

    def install(refuse: bool) -> list:
        def fake(*args, implementation=None, **kw):
            calls.append(implementation)
            if implementation == "cudnn" and refuse:
                raise NotImplementedError("fake cuDNN: these shapes are not supported")
            return real(*args, implementation="xla", **kw)

        monkeypatch.setattr(jax.nn, "dot_product_attention", fake)
        monkeypatch.setattr(model, "attention_impl", lambda cfg, backend=None: "cudnn"
                            if cfg.attention == "auto" else cfg.attention)
        model.attention_used.cache_clear()  # decisions are cached per shape: forget the real ones
        return calls

    yield install
    model.attention_used.cache_clear()
