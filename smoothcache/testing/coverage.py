"""The coverage matrix: every transformer class of the installed diffusers, checked by the kit.

For each class that diffusers exports (:func:`~smoothcache.testing.models.diffusers_zoo.
transformer_classes`; the zoo builds a tiny random instance of each from a small config, no
download), :func:`matrix` records the adapter detection picks (a specific one, the generic
``diffusers-generic``, or none, with the reason) and runs the conformance kit on it
(:func:`smoothcache.testing.check_adapter`: :data:`STEPS` denoising steps, the call pattern of
the class's pipeline). A class *passes* when the checks the coverage promise rests on
(:data:`REQUIRED`) pass: ``detection``, ``exact`` (compute-everything bit-identical),
``branches_residual`` (reuse skips each branch's forward and changes the output),
``calibration`` (calibrating runs and its schedule applies), ``calibration_path`` (the whole
recommended path: the curves fit the model they came from, the sensitivity is measured, every
schedule method and the held-out choice give schedules that apply) and ``restore`` (the model is
exactly as before). The kit's other checks are recorded beside them.

``python -m benchmarks.coverage_matrix`` prints the matrix (and writes it into
docs/coverage.md); the test suite holds the same rows to the targets.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from smoothcache.errors import AdapterError
from smoothcache.registry import REGISTRY
from smoothcache.testing import check_adapter
from smoothcache.testing.models.diffusers_zoo import (
    NOT_IMPORTED,
    UNAVAILABLE,
    ZOO,
    run,
    transformer_classes,
)

#: The checks a class must pass to count as covered.
REQUIRED = (
    "detection", "exact", "branches_residual", "calibration", "calibration_path", "restore",
)  # fmt: skip
#: Denoising steps of every class's run.
STEPS = 4
#: The smallest relative change of the output that reusing a branch kind must cause. Lower than
#: the kit's default (1e-5): in tiny random models the text stream of a joint-attention model
#: moves the image output by 1e-7 to 1e-5. A change is still required (a zero-initialised gate
#: gives exactly 0); a branch whose input is the same at every step passes with no change.
MIN_CHANGE = 1e-7


@dataclass(frozen=True)
class ClassCoverage:
    """One transformer class: its pipeline, adapter, check outcomes, and why it fails if so."""

    name: str
    pipeline: str | None
    adapter: str | None
    kind: str  # specific, generic or none
    checks: dict[str, str]  # check -> passed / failed / skipped
    reason: str

    @property
    def passed(self) -> bool:
        """Whether every check of :data:`REQUIRED` passed."""
        return all(self.checks.get(c) == "passed" for c in REQUIRED)


def check_class(name: str) -> ClassCoverage:
    """Build ``name``'s tiny instance, detect its adapter and run the kit on it."""
    entry = ZOO.get(name)
    if entry is None:
        return ClassCoverage(
            name, None, None, "none", {}, UNAVAILABLE.get(name, "no tiny instance")
        )
    try:
        adapter = REGISTRY.detect(entry.factory())
    except AdapterError as exc:
        return ClassCoverage(name, entry.pipeline, None, "none", {}, str(exc).split(". ")[0])
    kind = "generic" if adapter.name == "diffusers-generic" else "specific"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = check_adapter(
            entry.factory,
            lambda model: run(entry, model, num_steps=STEPS),
            num_steps=STEPS,
            min_change=MIN_CHANGE,
        )
    checks = {r.check: r.status for r in report.results}
    failed = [f"{r.check}: {r.message}" for r in report.results if r.status == "failed"]
    return ClassCoverage(name, entry.pipeline, adapter.name, kind, checks, "; ".join(failed))


def matrix() -> list[ClassCoverage]:
    """One row per transformer class of the installed diffusers, in name order, then one per
    module of them that failed to import (:func:`unimported`).

    Sets torch to one CPU thread first: the models are tiny, and handing their small ops to
    other threads costs more than the ops.
    """
    torch.set_num_threads(1)
    return [*(check_class(name) for name in transformer_classes()), *unimported()]


def unimported() -> list[ClassCoverage]:
    """A row for each diffusers transformer module that failed to import in the last
    enumeration: its classes could not be listed, let alone checked."""
    return [
        ClassCoverage(
            module,
            None,
            None,
            "none",
            {},
            f"the module failed to import ({error}): its "
            "classes are not listed or checked; install what it needs",
        )
        for module, error in sorted(NOT_IMPORTED.items())
    ]
