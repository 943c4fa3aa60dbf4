"""The split of seeds: development seeds for every choice, test seeds for the final tables only.

Every quality number of the project is sampled from seeded noise. Before issue #26 every table,
and every choice made while developing the method (forecast configurations, candidate families,
calibration sizes, hyper-parameters), used the same seeds: evaluation seed 0, calibration seed
1000, held-out seed 2000. Those are now the **development** seeds: use them, and only them, to
try and choose things. The **test** seeds were drawn once, after the protocol was fixed, and
appear nowhere else: they only regenerate the final tables (``--seeds test``), and nothing may be
changed in response to what they show. ``docs/evaluation.md`` is the protocol.

A batch of ``n`` samples of seed ``s`` is the labels ``arange(n) % 10`` with noise from a CPU
generator seeded with ``s``: two seeds give independent noise, and the first ``k`` samples of a
seed are the ``k``-sample batch of that seed.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Seeds:
    """The seeds of one side of the split.

    ``evaluation``: the samples every row is scored on. ``calibration``: one seed per
    calibration (the library and every peer that calibrates calibrate on the same samples; a
    row is repeated once per seed so that the spread over calibrations is measured).
    ``held_out``: the samples on which each method's setting is chosen (neither calibrated nor
    evaluated on).
    """

    name: str
    evaluation: int
    calibration: tuple[int, ...]
    held_out: int


DEVELOPMENT = Seeds("development", evaluation=0, calibration=(1000,), held_out=2000)
TEST = Seeds("test", evaluation=90_001, calibration=(90_101, 90_102, 90_103), held_out=90_201)
SPLITS = {seeds.name: seeds for seeds in (DEVELOPMENT, TEST)}
