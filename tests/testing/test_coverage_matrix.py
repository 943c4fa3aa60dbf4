"""The coverage matrix (issue #16): every transformer class of the installed diffusers.

Runs :func:`smoothcache.testing.coverage.matrix`, the matrix that
``python -m benchmarks.coverage_matrix`` prints (the conformance kit on a tiny instance of each
class, about 50 s), and holds it to the targets: at least 45 classes pass the seven checks (the
whole calibration path among them), every family the issue names passes through its own
pipeline's call pattern, each class that does not pass or could not be built says why (in
docs/coverage.md too), and reuse counts only when it moves the output by more than rounding can.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

import smoothcache
from smoothcache.testing.coverage import (
    REQUIRED,
    STEPS,
    UNIT_ROUNDOFF,
    check_entry,
    matrix,
    noise_floor,
)
from smoothcache.testing.harness import alternating_row, relative_change
from smoothcache.testing.models.diffusers_zoo import ZOO, run

DOC = Path(__file__).resolve().parents[2] / "docs" / "coverage.md"

#: The families the issue names, by class (their pipelines' call patterns are in the zoo).
FAMILIES = (
    "FluxTransformer2DModel", "Flux2Transformer2DModel", "SD3Transformer2DModel",
    "WanTransformer3DModel", "HunyuanVideoTransformer3DModel",
    "HunyuanVideo15Transformer3DModel", "CogVideoXTransformer3DModel",
    "LTXVideoTransformer3DModel", "LTX2VideoTransformer3DModel", "QwenImageTransformer2DModel",
    "SanaTransformer2DModel", "Lumina2Transformer2DModel", "HunyuanDiT2DModel",
)  # fmt: skip


@pytest.fixture(scope="module")
def rows():
    return {row.name: row for row in matrix()}


def test_at_least_45_classes_pass(rows):
    passed = [name for name, row in rows.items() if row.passed]
    assert len(passed) >= 45, sorted(set(rows) - set(passed))


def test_every_named_family_passes(rows):
    failing = {name: rows[name].reason for name in FAMILIES if not rows[name].passed}
    assert not failing


def test_tune_estimates_the_sensitivity_on_every_named_family_and_says_where_not(rows):
    """tune's sensitivity estimate runs through every named family's own call pattern (the
    coverage runner keeps gradients for it); a class whose output has no tensor to probe
    passes without it, and its row says so."""
    assert not [name for name in FAMILIES if "without the sensitivity" in rows[name].reason]
    zimage = rows["ZImageTransformer2DModel"]  # returns a tuple of a list of tensors
    assert zimage.passed and "tune goes on without the sensitivity" in zimage.reason


def test_specific_adapters_win_and_every_failure_says_why(rows):
    assert rows["FluxTransformer2DModel"].adapter == "flux"
    assert rows["HunyuanVideoTransformer3DModel"].adapter == "hunyuan-video"
    assert rows["DiTTransformer2DModel"].adapter == "diffusers-dit"
    assert rows["SD3Transformer2DModel"].adapter == "sd3"
    assert rows["MochiTransformer3DModel"].adapter == "diffusers-generic"
    for name, row in rows.items():
        assert row.passed or len(row.reason) > 10, name


def test_every_class_that_could_not_be_built_says_why_here_and_in_the_docs(rows):
    """A class with no tiny instance (nothing was checked) has a reason written for it, not the
    fallback, and docs/coverage.md lists it with that reason."""
    unbuilt = {name: row.reason for name, row in rows.items() if not row.checks}
    assert unbuilt
    doc = DOC.read_text(encoding="utf-8")
    for name, reason in unbuilt.items():
        assert reason != "no tiny instance", f"{name}: say why in diffusers_zoo's UNAVAILABLE"
        line = next((line for line in doc.splitlines() if line.startswith(f"| `{name}` |")), "")
        assert reason.replace("|", "/")[:300] in line, f"{name}: regenerate docs/coverage.md"


def test_every_built_class_has_its_noise_floor_measured(rows):
    """The bar each built class is held to comes from a measurement at rounding level."""
    for name, row in rows.items():
        if row.checks:
            assert row.noise is not None and UNIT_ROUNDOFF <= row.noise < 2e-6, name


def test_a_change_that_rounding_could_make_does_not_count():
    """The tiny DiT with its feed-forward scaled by 2e-4: reusing it still changes the output,
    but by less than 3 noise floors of the run, as rounding alone could; the matrix's row says
    that reuse does not move the output enough (a bar at the noise floor, or the former fixed
    1e-7, would pass it)."""
    plain = ZOO["DiTTransformer2DModel"]

    def factory() -> torch.nn.Module:
        model = plain.factory()
        with torch.no_grad():
            for block in model.transformer_blocks:
                block.ff.net[-1].weight.mul_(2e-4)
                block.ff.net[-1].bias.mul_(2e-4)
        return model

    entry = dataclasses.replace(plain, factory=factory)
    noise = noise_floor(entry)
    assert noise > UNIT_ROUNDOFF  # measured, not the guard
    model = factory()
    base = run(entry, model, num_steps=STEPS)
    with smoothcache.enabled(model, {"ff": alternating_row(STEPS)}):
        change = relative_change(run(entry, model, num_steps=STEPS), base)
    assert 1e-7 < change < 3 * noise  # a change, of the size rounding could make
    row = check_entry("DiT, feed-forward at rounding level", entry)
    assert not row.passed and row.noise == noise
    assert row.checks["branches_residual"] == "failed" and "reusing kind 'ff'" in row.reason
    assert {row.checks[c] for c in REQUIRED if c != "branches_residual"} == {"passed"}


def test_a_module_that_fails_to_import_is_a_row_that_says_why(monkeypatch):
    """A diffusers transformer module whose import fails (an optional dependency missing) is not
    dropped in silence: its classes are absent from the enumeration and the matrix says so."""
    import importlib

    from smoothcache.testing.coverage import unimported
    from smoothcache.testing.models.diffusers_zoo import entry

    broken = "diffusers.models.transformers.transformer_flux"
    real = importlib.import_module

    def import_module(name, *args, **kwargs):
        if name == broken:
            raise ImportError("needs a package that is not installed")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(entry.importlib, "import_module", import_module)
    try:
        names = entry.transformer_classes()
        assert "FluxTransformer2DModel" not in names and "WanTransformer3DModel" in names
        rows = unimported()
        assert [row.name for row in rows] == [broken]
        assert not rows[0].passed and "needs a package that is not installed" in rows[0].reason
    finally:
        monkeypatch.undo()
        entry.transformer_classes()
    assert not entry.NOT_IMPORTED
