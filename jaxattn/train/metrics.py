"""Metrics to ``metrics.jsonl`` and TensorBoard, written by process 0 only.

On resume from step ``s`` the records after ``s`` (written before the interruption and about to
be recomputed) are dropped from the JSONL file and purged from TensorBoard, so a resumed run's
logs read as if it had never stopped.

See docs/architecture.md#training-and-checkpointing.
"""

import json
import os
from typing import Mapping, Optional

import jax
import numpy as np


class MetricsWriter:
    """Appends ``{"step": s, "split": name, **metrics}`` records."""

    def __init__(self, workdir: str, *, resume_step: Optional[int] = None):
        self._active = jax.process_index() == 0
        self._path = os.path.join(workdir, "metrics.jsonl")
        self._tensorboard = None
        if not self._active:
            return
        if resume_step is not None:
            self._truncate_after(resume_step)
        from tensorboardX import SummaryWriter  # Imported here: only process 0 writes events.

        purge_step = None if resume_step is None else resume_step + 1
        self._tensorboard = SummaryWriter(os.path.join(workdir, "tensorboard"), purge_step=purge_step)

    def _truncate_after(self, step: int) -> None:
        if not os.path.exists(self._path):
            return
        with open(self._path) as f:
            records = [line for line in f if line.strip() and json.loads(line)["step"] <= step]
        with open(self._path, "w") as f:
            f.writelines(records)

    def write(self, step: int, split: str, metrics: Mapping[str, float]) -> None:
        if not self._active:
            return
        values = {key: float(np.asarray(value)) for key, value in metrics.items()}
        with open(self._path, "a") as f:
            f.write(json.dumps({"step": int(step), "split": split, **values}) + "\n")
        for key, value in values.items():
            self._tensorboard.add_scalar(f"{split}/{key}", value, global_step=int(step))

    def close(self) -> None:
        if self._tensorboard is not None:
            self._tensorboard.close()


def read_metrics(workdir: str) -> list[dict]:
    """All records of ``workdir/metrics.jsonl``."""
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]
