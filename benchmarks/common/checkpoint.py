"""Results of a long quality run saved as they are measured, so that a rerun resumes.

A page on test seeds takes hours of a CPU (three calibrations, every row on 1000 samples, the
held-out choices). With ``--checkpoint DIR`` every measurement is written to a folder of its
own run (the model, the split and the batch sizes name it) the moment it is made: each seed's
calibration (error curves and sensitivity), MagCache's ratios, each chosen forecast schedule,
and every row's held-out score, evaluation samples and timed runs. The same command run again
reads what is there and measures the rest. Everything measured is deterministic for a fixed
command (seeded noise, one thread) except latency, whose runs may then come from several
sittings; the page says how many runs each median has.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch

from smoothcache import ErrorCurves, Schedule

logger = logging.getLogger(__name__)
T = TypeVar("T")


class Checkpoint:
    """A folder of saved measurements (``folder=None``: nothing is saved or read)."""

    def __init__(self, folder: Path | None, run: str) -> None:
        self.folder = None if folder is None else folder / run
        self._started = time.perf_counter()
        self._earlier = 0.0  # minutes of earlier sittings
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
            path = self.folder / "minutes.txt"
            self._earlier = float(path.read_text()) if path.exists() else 0.0
        self.read = 0

    def _record_minutes(self) -> None:
        """Write the minutes of every sitting so far, this one's up to now: a sitting that is
        interrupted still counts up to its last measurement."""
        if self.folder is not None:
            minutes = self._earlier + (time.perf_counter() - self._started) / 60
            (self.folder / "minutes.txt").write_text(f"{minutes:.3f}\n")

    def _path(self, name: str, suffix: str) -> Path | None:
        if self.folder is None:
            return None
        digest = hashlib.sha256(name.encode()).hexdigest()[:20]
        return self.folder / f"{digest}{suffix}"

    def value(self, name: str, measure: Callable[[], T]) -> T:
        """``measure()``, or what an earlier run saved under ``name`` (tensors, numbers, lists,
        dicts of them)."""
        path = self._path(name, ".pt")
        if path is not None and path.exists():
            self.read += 1
            return torch.load(path, weights_only=False)
        result = measure()
        if path is not None:
            torch.save(result, path.with_suffix(".tmp"))
            path.with_suffix(".tmp").replace(path)
            self._record_minutes()
        return result

    def total_minutes(self) -> float:
        """The minutes of every sitting of the run, this one's included (recorded as they go)."""
        self._record_minutes()
        return self._earlier + (time.perf_counter() - self._started) / 60

    def _saved(
        self,
        name: str,
        suffix: str,
        measure: Callable[[], T],
        load: Callable[[Path], T],
        save: Callable[[T, Path], None],
    ) -> T:
        """``measure()``, or what an earlier run saved under ``name`` in its own format."""
        path = self._path(name, suffix)
        if path is not None and path.exists():
            self.read += 1
            return load(path)
        result = measure()
        if path is not None:
            save(result, path)
            self._record_minutes()
        return result

    def curves(self, name: str, measure: Callable[[], ErrorCurves]) -> ErrorCurves:
        """Error curves (with their sensitivity), measured or read back."""
        return self._saved(name, ".safetensors", measure, ErrorCurves.load, ErrorCurves.save)

    def schedule(self, name: str, choose: Callable[[], Schedule]) -> Schedule:
        """A chosen schedule (its metadata too), chosen or read back."""
        return self._saved(name, ".json", choose, Schedule.load, Schedule.save)


def row_key(family: str, setting: str, seed: int | None) -> str:
    """The name of a row's measurements: its method, setting and calibration seed."""
    return f"{family}|{setting}|{seed}"
