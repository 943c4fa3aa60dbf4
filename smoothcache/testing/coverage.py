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

"Changes the output" means by more than :data:`NOISE_FACTOR` times the float32 noise floor of
the class's own run (:func:`noise_floor`): a change that rounding alone could make proves
nothing about reuse.

``python -m benchmarks.coverage_matrix`` prints the matrix (and writes it into
docs/coverage.md); the test suite holds the same rows to the targets.
"""

from __future__ import annotations

import copy
import dataclasses
import warnings
from dataclasses import dataclass
from typing import Any

import torch

from smoothcache.errors import AdapterError
from smoothcache.registry import REGISTRY
from smoothcache.testing import check_adapter
from smoothcache.testing.harness import relative_change
from smoothcache.testing.models.diffusers_zoo import (
    NOT_IMPORTED,
    UNAVAILABLE,
    ZOO,
    Entry,
    run,
    transformer_classes,
)

#: The checks a class must pass to count as covered.
REQUIRED = (
    "detection", "exact", "branches_residual", "calibration", "calibration_path", "tune",
    "restore",
)  # fmt: skip
#: Denoising steps of every class's run.
STEPS = 4
#: Reusing a branch kind must change a class's output (relative: largest difference over largest
#: value) by more than this many times the float32 noise floor ``N`` of the class's own run
#: (:func:`noise_floor`, measured per class, not assumed). Why 4: two float32 runs that differ
#: only in rounding are each within about ``N`` of the exact result, so they differ by up to
#: ``2N``; more than ``4N`` is twice that. Measured on the 62 classes built (docs/coverage.md):
#: ``N`` is one or two units in the last place of the output's largest value (6e-8 to 2.3e-7
#: relative) in all but two (MiniMaxMusic3 7.8e-7 and StableAudioDiT 1.6e-6, whose float32 runs
#: are that far from float64). 175 of the 197 branch kinds move the output by 1e2 to 1e5 N; the
#: weakest are text paths of the tiny instances (joint-attention text streams 2 to 90 N,
#: cross-attentions 15 to 50 N) and AuraFlow's attention (4 to 6 N): AuraFlow's text stream
#: (2.0 N) fails, and a bar of 10 N would fail HiDream (4.1 N), FLUX.2 (5.5 N), Ovis (6.2 N) and
#: FLUX (7.2 N) too.
#: The former fixed 1e-7 was ``N`` itself; the kit's default 1e-5 would fail most text streams.
#: A branch whose input is the same at every step passes with no change (reuse is then exact).
NOISE_FACTOR = 4.0
#: The least noise floor assumed (float32's unit roundoff, 2**-24): a guard for a run that a
#: nudge leaves unchanged, not a value the measured classes reach.
UNIT_ROUNDOFF = 2.0**-24


@dataclass(frozen=True)
class ClassCoverage:
    """One transformer class: its pipeline, adapter, check outcomes, and why it fails if so."""

    name: str
    pipeline: str | None
    adapter: str | None
    kind: str  # specific, generic or none
    checks: dict[str, str]  # check -> passed / failed / skipped
    reason: str
    noise: float | None = None  # the run's float32 noise floor (relative), when built

    @property
    def passed(self) -> bool:
        """Whether every check of :data:`REQUIRED` passed."""
        return all(self.checks.get(c) == "passed" for c in REQUIRED)


def noise_floor(entry: Entry) -> float:
    """How far float32 rounding alone moves the output of ``entry``'s run, relative
    (:func:`~smoothcache.testing.harness.relative_change`): the larger of

    - the change when the initial latent is nudged by one unit in the last place (each element
      up or down at random): how far a last-bit difference carries to the output, and
    - the run's distance from the same run in float64 (its accumulated rounding error), where
      the model runs in float64 (some cast inner tensors to float32 and refuse; then the nudge
      alone);

    at least :data:`UNIT_ROUNDOFF`.
    """
    with torch.no_grad():
        model = entry.factory()
        base = run(entry, model, num_steps=STEPS)
        nudged = run(dataclasses.replace(entry, latent=_nudged(entry.latent)), model, STEPS)
        floor = max(UNIT_ROUNDOFF, relative_change(nudged, base))
        wide = copy.deepcopy(model).double()
        hook = wide.register_forward_pre_hook(_to_float64, with_kwargs=True)
        try:
            exact = run(entry, wide, num_steps=STEPS)
        except (RuntimeError, TypeError, ValueError):  # a float32 tensor inside: no reference
            return floor
        finally:
            hook.remove()
    if exact.dtype != torch.float64:  # the model cast its output: not a float64 reference
        return floor
    return max(floor, relative_change(base, exact))


def _nudged(latent: Any) -> Any:
    """``latent`` with every element moved one float32 ulp up or down (seeded signs)."""

    def nudged(batch: int, seed: int = 0) -> torch.Tensor:
        x = latent(batch, seed=seed)
        generator = torch.Generator().manual_seed(seed + 1)
        signs = torch.randint(0, 2, x.shape, generator=generator).to(x.dtype) * 2 - 1
        return torch.nextafter(x, x + signs * torch.finfo(x.dtype).max)

    return nudged


def _to_float64(_module: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """A forward pre-hook giving the model float64 where its caller gives float32."""

    def wide(value: Any) -> Any:
        if isinstance(value, torch.Tensor) and value.dtype == torch.float32:
            return value.double()
        return value

    return tuple(wide(a) for a in args), {k: wide(v) for k, v in kwargs.items()}


def check_class(name: str) -> ClassCoverage:
    """Build ``name``'s tiny instance, detect its adapter and run the kit on it."""
    entry = ZOO.get(name)
    if entry is None:
        return ClassCoverage(
            name, None, None, "none", {}, UNAVAILABLE.get(name, "no tiny instance")
        )
    return check_entry(name, entry)


def check_entry(name: str, entry: Entry) -> ClassCoverage:
    """Detect ``entry``'s adapter and run the kit on it, reuse required to move the output by
    more than :data:`NOISE_FACTOR` times the run's :func:`noise_floor`."""
    try:
        adapter = REGISTRY.detect(entry.factory())
    except AdapterError as exc:
        return ClassCoverage(name, entry.pipeline, None, "none", {}, str(exc).split(". ")[0])
    kind = "generic" if adapter.name == "diffusers-generic" else "specific"
    with warnings.catch_warnings(record=True) as caught, torch.no_grad():
        warnings.simplefilter("always")
        try:
            noise: float | None = noise_floor(entry)
        except Exception:  # the run itself fails: the kit's checks below say how
            noise = None
        report = check_adapter(
            entry.factory,
            # gradients only where tune's sensitivity estimate turns them on
            lambda model: run(entry, model, STEPS, keep_gradients=torch.is_grad_enabled()),
            num_steps=STEPS,
            min_change=NOISE_FACTOR * (UNIT_ROUNDOFF if noise is None else noise),
        )
    checks = {r.check: r.status for r in report.results}
    failed = [f"{r.check}: {r.message}" for r in report.results if r.status == "failed"]
    if failed and noise is not None:  # the bar first: a long reason is cut in the matrix
        failed.insert(0, f"(bar: {NOISE_FACTOR:g} x the run's noise floor {noise:.2g})")
    # tune passes without the sensitivity where it cannot be estimated: say so
    failed += sorted(
        {str(w.message) for w in caught if "without the sensitivity" in str(w.message)}
    )
    return ClassCoverage(name, entry.pipeline, adapter.name, kind, checks, "; ".join(failed), noise)


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
