"""Timing and what a timing depends on: interleaved rounds, progress lines, the machine in words.

:func:`timed_rounds` runs every configuration once per round, the order reversed every other
round, so that what ran before a configuration does not bias it; :func:`timed` takes the
medians. :class:`Log` prints progress with the seconds since the start. :func:`device_line`
and :func:`device_threads` name the processor or GPU a figure was measured on.
"""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import torch


def timed(configs: dict[str, Callable[[], Any]], repeats: int, cuda: bool) -> dict[str, float]:
    """Median seconds per configuration over :func:`timed_rounds`."""
    rounds = timed_rounds(configs, repeats, cuda)
    return {k: statistics.median(v) for k, v in rounds.items()}


def timed_rounds(
    configs: dict[str, Callable[[], Any]], repeats: int, cuda: bool
) -> dict[str, list[float]]:
    """Seconds of every round per configuration; one warm-up each, then interleaved rounds.

    Every round runs each configuration once, in reversed order every other round, so that a
    configuration's position in the round (what ran before it) does not bias it. Entry ``i``
    of every list comes from round ``i``, so ratios of two lists pair runs made side by side.
    """
    for fn in configs.values():
        fn()
    samples: dict[str, list[float]] = {k: [] for k in configs}
    for repeat in range(repeats):
        order = list(configs.items())
        for label, fn in order[::-1] if repeat % 2 else order:
            if cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn()
            if cuda:
                torch.cuda.synchronize()
            samples[label].append(time.perf_counter() - start)
    return samples


class Log:
    """Progress lines with the seconds since the start, to ``file`` (standard output)."""

    def __init__(self, file: TextIO | None = None) -> None:
        self.started = time.perf_counter()
        self.file = file

    def __call__(self, text: str) -> None:
        """Print ``text`` after the elapsed seconds."""
        elapsed = time.perf_counter() - self.started
        print(f"[{elapsed:6.0f} s] {text}", file=self.file or sys.stdout, flush=True)


def processor_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's model name (``/proc/cpuinfo``, else ``platform``)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return name


def device_line(device: torch.device) -> str:
    """The machine in words: GPU name, or CPU model and the threads torch uses."""
    if device.type == "cuda":
        return processor_name(device)
    threads = torch.get_num_threads()
    return f"CPU ({processor_name(device)}), {threads} torch threads, {os.cpu_count()} cores"


def device_threads(device: torch.device) -> str:
    """The processor or GPU in words, with the thread count on a CPU."""
    if device.type == "cuda":
        return processor_name(device)
    threads = torch.get_num_threads()
    return f"{processor_name(device)}, {threads} thread{'s' if threads > 1 else ''}"
