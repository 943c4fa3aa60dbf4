"""The coverage matrix (issue #16): every transformer class of the installed diffusers.

Runs :func:`smoothcache.testing.coverage.matrix`, the matrix that
``python -m benchmarks.coverage_matrix`` prints (the conformance kit on a tiny instance of each
class, about 40 s), and holds it to the targets: at least 45 classes pass the six checks (the
whole calibration path among them), every family the issue names passes through its own
pipeline's call pattern, and each class that does not pass says why.
"""

from __future__ import annotations

import pytest

from smoothcache.testing.coverage import matrix

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


def test_specific_adapters_win_and_every_failure_says_why(rows):
    assert rows["FluxTransformer2DModel"].adapter == "flux"
    assert rows["HunyuanVideoTransformer3DModel"].adapter == "hunyuan-video"
    assert rows["DiTTransformer2DModel"].adapter == "diffusers-dit"
    assert rows["SD3Transformer2DModel"].adapter == "sd3"
    assert rows["MochiTransformer3DModel"].adapter == "diffusers-generic"
    for name, row in rows.items():
        assert row.passed or len(row.reason) > 10, name


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
