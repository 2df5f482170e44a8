"""One metrics logger fanning out to backends: ``metrics.jsonl`` always; TensorBoard and Weights &
Biases when asked for (``run.tensorboard``, ``run.wandb_project``) and installed, never required.

Records are flat dicts of JSON-serialisable scalars with an integer ``step``. On resume, records
past the restored step are dropped first, so a resumed run's ``metrics.jsonl`` equals an
uninterrupted one's (apart from wall-clock fields).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from climit import jsonfile
from climit.errors import ArtifactError


def _plain(v: Any) -> Any:
    if isinstance(v, (np.generic,)):
        v = v.item()
    if hasattr(v, "item") and getattr(v, "shape", None) == ():
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)  # JSON has no NaN/Inf; keep them visible as strings
    return v


def _decode(line: bytes) -> str | None:
    """One line as text, or None if it is not UTF-8 (garbage a crash or a disk left behind)."""
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _record(line: str | None) -> dict | None:
    """One line as a metrics record, or None if it is not text holding a JSON object."""
    try:
        record = json.loads(line) if line is not None else None
    except json.JSONDecodeError:
        return None
    return record if isinstance(record, dict) else None


def read_jsonl(path: str | Path) -> list[dict]:
    """All complete records of a metrics file.

    A torn last line from a kill, or a damaged tail (NUL bytes, bytes that are not UTF-8, text
    that is not a JSON object: what a crash can leave after the last flushed record), is skipped.
    Such a line *before* a good record is not a crash's tail but damage to the records
    themselves (a logger rewrites the file without its tail whenever it opens it).

    Raises:
        ArtifactError: a line that is not a JSON object has good records after it.
    """
    path = Path(path)
    if not path.exists():
        return []
    records, bad = [], None
    for number, raw in enumerate(path.read_bytes().splitlines(), 1):
        record = _record(_decode(raw))
        if record is None and not raw.strip():
            continue  # a blank line holds nothing to lose
        if record is None:
            bad = number if bad is None else bad
            continue
        if bad is not None:
            raise ArtifactError(f"{path} is damaged: line {bad} is not a JSON record, and "
                                f"records follow it (line {number}); delete the damaged lines, "
                                f"or the whole file (only these metrics records are lost: "
                                f"histories and checkpoints do not depend on it)")
        records.append(record)
    return records


class MetricsLogger:
    """Append-only metrics for one stage (``runs/NAME/teacher/metrics.jsonl``,
    ``runs/NAME/imitator/<tag>/metrics.jsonl``)."""

    def __init__(self, path: str | Path, *, resume_step: int | None = None,
                 tensorboard: bool = False, wandb_project: str = "", run_name: str = "",
                 config: dict | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept = [r for r in read_jsonl(self.path)
                if resume_step is not None and r.get("step", 0) <= resume_step]
        jsonfile.write_atomic(self.path, "".join(json.dumps(r) + "\n" for r in kept).encode())
        self._file = self.path.open("a")
        self._tb = self._open_tensorboard(resume_step) if tensorboard else None
        self._wandb = self._open_wandb(wandb_project, run_name, config) if wandb_project else None

    def _open_tensorboard(self, resume_step: int | None) -> Any:
        try:
            from tensorboardX import SummaryWriter  # type: ignore[import-not-found]
        except ImportError:
            print("climit: tensorboard requested but tensorboardX is not installed; skipping")
            return None
        # As metrics.jsonl is cut back: TensorBoard hides the earlier events from this step on
        # (all of them for a fresh start), so a resumed run's steps are not shown twice.
        purge = 0 if resume_step is None else resume_step + 1
        return SummaryWriter(str(self.path.parent / "tensorboard"), purge_step=purge)

    def _open_wandb(self, project: str, name: str, config: dict | None) -> Any:
        try:
            import wandb  # type: ignore[import-not-found]
        except ImportError:
            print("climit: wandb requested but not installed; skipping")
            return None
        # One W&B run per metrics file, resumed when the stage resumes: W&B resumes only a run
        # whose id it is given. Records it already holds (steps up to its last) it drops.
        run_id = hashlib.sha1(str(self.path.resolve()).encode()).hexdigest()[:16]
        return wandb.init(project=project, name=name or None, config=config, id=run_id,
                          resume="allow")

    def log(self, record: dict[str, Any]) -> None:
        """Write one record; ``record['step']`` (int) is required."""
        rec = {k: _plain(v) for k, v in record.items()}
        if "step" not in rec:
            raise ValueError("a metrics record needs a 'step'")
        self._file.write(json.dumps(rec) + "\n")
        self._file.flush()
        numeric = {k: v for k, v in rec.items() if isinstance(v, (int, float)) and k != "step"}
        if self._tb is not None:
            for k, v in numeric.items():
                self._tb.add_scalar(k, v, rec["step"])
        if self._wandb is not None:
            self._wandb.log(numeric, step=rec["step"])

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()

    def __enter__(self) -> "MetricsLogger":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
