"""The conformance kit (``smoothcache.testing``): every built-in adapter passes it, and it catches
the adapter mistakes DESIGN.md warns about.

Each built-in adapter runs the whole kit on a tiny random model under the call pattern of its
real samplers (the original DiT through ``forward_with_cfg``, diffusers models through their
pipelines, Open-Sora through its rectified-flow and IDDPM loops).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import smoothcache
from smoothcache.adapter import TimestepSource, argument
from smoothcache.adapters.diffusers_dit import DiffusersDiTAdapter
from smoothcache.adapters.dit import OriginalDiTAdapter
from smoothcache.adapters.families import FAMILIES
from smoothcache.adapters.opensora import STDiT3Adapter
from smoothcache.testing import (
    CHECKS,
    AdapterConformance,
    ConformanceError,
    check_adapter,
    check_branches_exist,
    check_branches_residual,
    check_detection,
    check_exact,
    check_fast_path,
    check_restore,
    check_timestep_source_once,
)
from smoothcache.testing.models.diffusers_zoo import ZOO
from smoothcache.testing.models.diffusers_zoo import run as zoo_run
from smoothcache.testing.models.original_dit import DiT, sample_original_dit
from smoothcache.testing.models.random_init import randomize_
from smoothcache.testing.models.stdit import iddpm_sample, rflow_sample, tiny_stdit2, tiny_stdit3
from smoothcache.testing.models.tiny_diffusers import dit_pipeline_latents, tiny_dit_pipeline

STEPS = 4
#: The tiny DiTs' default weights (std 0.05) make each reuse move the output by only ~3e-5
#: relative; 0.2 gives ~1e-2, far clearer of float rounding.
DIT_STD = 0.2


# -- factories and runs of the built-in adapters -----------------------------------------------


def original_dit(zero_init: bool = False) -> DiT:
    """A tiny original DiT; ``zero_init`` keeps the zeroed adaLN gates of a fresh model."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = DiT(depth=2).eval()
    return model if zero_init else randomize_(model, seed=1, std=DIT_STD)


def run_original_dit(model: DiT) -> torch.Tensor:
    """Guided DDIM through ``forward_with_cfg``, which bypasses the root's hooks."""
    return sample_original_dit(model, num_steps=STEPS, cfg_scale=4.0)


def dit_pipeline() -> Any:
    pipe = tiny_dit_pipeline()
    randomize_(pipe.transformer, seed=0, std=DIT_STD)
    return pipe


def run_dit_pipeline(pipe: Any) -> torch.Tensor:
    return dit_pipeline_latents(
        pipe,
        class_labels=[1, 2],
        num_inference_steps=STEPS,
        guidance_scale=4.0,
        generator=torch.Generator().manual_seed(0),
    )


def pixart_pipeline() -> Any:
    from smoothcache.testing.models.tiny_pixart import tiny_pixart_pipeline

    return tiny_pixart_pipeline("alpha")


def run_pixart(pipe: Any) -> torch.Tensor:
    from smoothcache.testing.models.tiny_pixart import pixart_latents

    return pixart_latents(pipe, STEPS)


def stable_audio_pipeline() -> Any:
    from smoothcache.testing.models.tiny_stable_audio import tiny_stable_audio_pipeline

    return tiny_stable_audio_pipeline()


def run_stable_audio(pipe: Any) -> torch.Tensor:
    from smoothcache.testing.models.tiny_stable_audio import stable_audio_latents

    return stable_audio_latents(pipe, STEPS)


def sat_dit() -> nn.Module:
    """stable-audio-tools' DiT: the test set-up installs it (requirements-sat.txt), so a missing
    package fails here instead of skipping."""
    from smoothcache.testing.models.tiny_stable_audio import tiny_sat_dit

    return tiny_sat_dit()


def run_sat(model: nn.Module) -> torch.Tensor:
    from smoothcache.testing.models.tiny_stable_audio import sat_euler_sample

    return sat_euler_sample(model, STEPS)


Case = tuple[Callable[[], Any], Callable[[Any], torch.Tensor]]


def _zoo_case(name: str) -> Case:
    """The tiny instance of a diffusers class from the zoo, run for STEPS steps."""
    entry = ZOO[name]
    return entry.factory, lambda model: zoo_run(entry, model, num_steps=STEPS)


#: Adapter name -> (factory, run) for every built-in adapter.
BUILTIN_CASES: dict[str, Case] = {
    "dit": (original_dit, run_original_dit),
    "diffusers-dit": (dit_pipeline, run_dit_pipeline),
    "pixart": (pixart_pipeline, run_pixart),
    "diffusers-stable-audio": (stable_audio_pipeline, run_stable_audio),
    "stable-audio-tools": (sat_dit, run_sat),
    "opensora-stdit3": (
        lambda: tiny_stdit3(seed=1),
        lambda model: rflow_sample(model, STEPS, condition_frames=1),
    ),
    "opensora-stdit2": (lambda: tiny_stdit2(seed=1), lambda model: iddpm_sample(model, STEPS)),
    "diffusers-generic": _zoo_case("MochiTransformer3DModel"),  # no specific adapter
    "flux": _zoo_case("FluxTransformer2DModel"),
    "hunyuan-video": _zoo_case("HunyuanVideoTransformer3DModel"),
    "chroma": _zoo_case("ChromaTransformer2DModel"),
    **{
        family.name: _zoo_case(family.model_class)
        for family in FAMILIES
        if family.model_class in ZOO
    },
}
#: Tiny random text streams move the image output little: reusing a joint model's text
#: feed-forward (``ff_context``) changes it by about 1e-6 relative (see coverage_matrix.py).
#: Families whose reuse moves the output by more than the kit's default 1e-5.
STRICT = ("wan", "cogview4", "glm-image")
MIN_CHANGE = dict.fromkeys(
    ["flux", "hunyuan-video", "chroma", "diffusers-generic"]
    + [f.name for f in FAMILIES if f.name not in STRICT],
    1e-7,
)


def test_every_builtin_adapter_has_a_case() -> None:
    builtins = {i.adapter.name for i in smoothcache.REGISTRY.infos() if i.source == "built-in"}
    assert builtins == set(BUILTIN_CASES)


@pytest.mark.parametrize("name", list(BUILTIN_CASES))
def test_builtin_adapter_passes_the_kit(name: str) -> None:
    factory, run = BUILTIN_CASES[name]
    report = check_adapter(
        factory, run, adapter=name, num_steps=STEPS, min_change=MIN_CHANGE.get(name, 1e-5)
    )
    assert report.passed, str(report)
    statuses = {r.check: r.status for r in report.results}
    assert list(statuses) == list(CHECKS)
    fast = ("dit", "diffusers-dit", "flux", "wan", "cogvideox", "sd3", "lumina2")
    expected_fast = "passed" if name in fast else "skipped"
    assert statuses.pop("fast_path") == expected_fast
    assert set(statuses.values()) == {"passed"}


class TestDiffusersDiTThroughThePytestHelper(AdapterConformance):
    """The pytest idiom: one collected test per check (the fast path included)."""

    adapter = "diffusers-dit"
    num_steps = STEPS

    def make_model(self) -> Any:
        return dit_pipeline()

    def run(self, model: Any) -> torch.Tensor:
        return run_dit_pipeline(model)


def test_pytest_helper_skips_the_fast_path_of_an_adapter_without_one() -> None:
    class Helper(AdapterConformance):
        adapter = "opensora-stdit2"
        num_steps = STEPS

        def make_model(self) -> Any:
            return tiny_stdit2(seed=1)

    with pytest.raises(pytest.skip.Exception, match="declares no fast path"):
        Helper().test_fast_path()
    with pytest.raises(TypeError, match="set num_steps"):
        type("NoSteps", (Helper,), {"num_steps": None})().test_exact()


# -- the kit catches broken adapters -----------------------------------------------------------


class _BlockEmbedderSource(DiffusersDiTAdapter):
    """Wrong: block 0's timestep embedder also runs in the output head (twice per call)."""

    name = "diffusers-dit-block-embedder"

    def timestep_source(self, model: nn.Module) -> TimestepSource:
        return TimestepSource("transformer_blocks.0.norm1.emb", argument("timestep", 0))


def test_a_source_that_fires_twice_per_evaluation_fails() -> None:
    with pytest.raises(ConformanceError, match=r"\[timestep_source_once\].*more than once") as err:
        check_timestep_source_once(
            dit_pipeline, run_dit_pipeline, adapter=_BlockEmbedderSource(), num_steps=STEPS
        )
    assert err.value.check == "timestep_source_once"


class _RootSource(OriginalDiTAdapter):
    """Wrong for the original DiT: ``forward_with_cfg`` bypasses the root's ``__call__``."""

    name = "dit-root-source"
    priority = 1  # beats the built-in "dit" in detection, which the report checks

    def timestep_source(self, model: nn.Module) -> TimestepSource:
        return TimestepSource("", argument("t", 1))


def test_a_source_that_callers_bypass_fails() -> None:
    with pytest.raises(ConformanceError, match=r"\[timestep_source_once\].*before the timestep"):
        check_timestep_source_once(
            original_dit, run_original_dit, adapter=_RootSource(), num_steps=STEPS
        )


def test_zero_initialised_gates_fail_the_residual_check() -> None:
    with pytest.raises(ConformanceError, match=r"\[branches_residual\].*'attn'.*re-randomise"):
        check_branches_residual(
            lambda: original_dit(zero_init=True), run_original_dit, adapter="dit", num_steps=STEPS
        )


class _ExtraBranches(OriginalDiTAdapter):
    name = "dit-extra-branches"

    def __init__(self, extra: list[smoothcache.Branch]) -> None:
        self.extra = extra

    def branches(self, model: nn.Module) -> list[smoothcache.Branch]:
        return [*super().branches(model), *self.extra]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (smoothcache.Branch("blocks.9.attn", "attn", 9), r"'blocks\.9\.attn'.*does not have"),
        (smoothcache.Branch("blocks.0.attn.qkv", "qkv", 0), "not among the adapter's kinds"),
        (smoothcache.Branch("blocks.0.attn.qkv", "attn", 5), "lies inside branch 'blocks.0.attn'"),
        (smoothcache.Branch("final_layer", "attn", 0), "share the schedule key 'attn-0'"),
        (smoothcache.Branch("final_layer", "attn-2", 2), "not a valid schedule key"),
    ],
)
def test_malformed_branches_fail(extra: smoothcache.Branch, message: str) -> None:
    with pytest.raises(ConformanceError, match=r"\[branches_exist\].*" + message):
        check_branches_exist(
            original_dit, run_original_dit, adapter=_ExtraBranches([extra]), num_steps=STEPS
        )


class _WrongFastPath(OriginalDiTAdapter):
    """A fast path that applies the MLP's gate to the attention output."""

    name = "dit-wrong-fast-path"

    def fast_forwards(self, model: nn.Module) -> dict[str, Callable[..., Any]]:
        def forward(block: nn.Module, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
            shift_msa, scale_msa, _, shift_mlp, scale_mlp, gate_mlp = block.adaLN_modulation(
                c
            ).chunk(6, dim=1)
            normed = block.norm1(x) * (1 + scale_msa[:, None]) + shift_msa[:, None]
            x = x + gate_mlp[:, None] * block.attn(normed)
            normed = block.norm2(x) * (1 + scale_mlp[:, None]) + shift_mlp[:, None]
            return x + gate_mlp[:, None] * block.mlp(normed)

        return {f"blocks.{i}": forward for i in range(len(model.blocks))}


def test_a_fast_path_that_differs_fails() -> None:
    with pytest.raises(ConformanceError, match="does not reproduce this DiTBlock"):
        check_fast_path(original_dit, run_original_dit, adapter=_WrongFastPath(), num_steps=STEPS)
    # A schedule that computes everything has nothing to skip, so the block keeps its own
    # forward and the exact check passes without ever running the wrong fast path.
    check_exact(original_dit, run_original_dit, adapter=_WrongFastPath(), num_steps=STEPS)


class _HookLeavingAdapter(OriginalDiTAdapter):
    """Wrong: ``branches`` changes the model (a hook that nothing removes)."""

    name = "dit-leaves-hooks"

    def branches(self, model: nn.Module) -> list[smoothcache.Branch]:
        model.blocks[0].register_forward_hook(lambda *_: None)
        return super().branches(model)


def test_an_adapter_that_changes_the_model_fails_restore() -> None:
    with pytest.raises(ConformanceError, match=r"\[restore\].*module blocks\.0\b"):
        check_restore(
            original_dit, run_original_dit, adapter=_HookLeavingAdapter(), num_steps=STEPS
        )


def _dit_with_buffer(swaps: bool = False) -> nn.Module:
    """The tiny DiT with a buffer ``table``; with ``swaps``, the model itself assigns a new
    (equal) tensor to it on every call, as OmniGen's rotary embedding does with ``inv_freq``."""
    model = original_dit()
    model.register_buffer("table", torch.arange(3.0))
    if swaps:
        model.register_forward_pre_hook(
            lambda module, _args: setattr(module, "table", module.table.clone())
        )
    return model


class _BufferSwappingAdapter(OriginalDiTAdapter):
    """Wrong: ``branches`` replaces a buffer with an equal tensor (a new object)."""

    name = "dit-swaps-buffers"

    def branches(self, model: nn.Module) -> list[smoothcache.Branch]:
        model.table = model.table.clone()
        return super().branches(model)


def test_restore_tells_the_models_own_buffer_swaps_from_the_adapters() -> None:
    with pytest.raises(ConformanceError, match=r"\[restore\].*tensor table"):
        check_restore(
            _dit_with_buffer, run_original_dit, adapter=_BufferSwappingAdapter(), num_steps=STEPS
        )
    # the model swapping its own buffer on every call (values unchanged) is not a leftover
    check_restore(lambda: _dit_with_buffer(swaps=True), run_original_dit, num_steps=STEPS)


class _Rival(DiffusersDiTAdapter):
    name = "diffusers-dit-rival"


def test_detection_names_the_adapter_that_would_win() -> None:
    with pytest.raises(ConformanceError, match=r"\[detection\].*'diffusers-dit' \(class Di"):
        check_detection(dit_pipeline, run_dit_pipeline, adapter=_Rival(), num_steps=STEPS)
    preferred = type("Preferred", (_Rival,), {"priority": 1})()
    check_detection(dit_pipeline, run_dit_pipeline, adapter=preferred, num_steps=STEPS)


def test_an_adapter_that_matches_anything_fails_detection() -> None:
    greedy = type("Greedy", (STDiT3Adapter,), {"name": "greedy", "matches": lambda s, m: True})()
    with pytest.raises(ConformanceError, match=r"accepts an unrelated nn\.Sequential"):
        check_detection(
            lambda: tiny_stdit3(seed=1), lambda m: rflow_sample(m, STEPS), adapter=greedy,
            num_steps=STEPS,
        )  # fmt: skip


def test_an_unseeded_run_is_reported() -> None:
    def unseeded(model: DiT) -> torch.Tensor:
        return sample_original_dit(model, num_steps=STEPS, seed=int(torch.randint(99, ())))

    with pytest.raises(ConformanceError, match=r"\[exact\] two runs of the plain model differ"):
        check_exact(original_dit, unseeded, adapter="dit", num_steps=STEPS)


def test_report_lists_every_failure_and_keeps_going() -> None:
    report = check_adapter(original_dit, run_original_dit, adapter=_RootSource(), num_steps=STEPS)
    failed = {r.check for r in report.failures}
    assert "timestep_source_once" in failed and "detection" not in failed
    assert not report.passed and report.adapter == "dit-root-source"
    assert "PASSED  branches_exist" in str(report)
    with pytest.raises(ConformanceError, match=r"fails \d+ conformance check"):
        report.raise_for_failures()
    assert isinstance(ConformanceError("x", "y"), AssertionError)


def test_no_adapter_for_the_model_fails_detection_only() -> None:
    report = check_adapter(
        lambda: nn.Sequential(nn.Linear(2, 2)), lambda m: m(torch.ones(1, 2)), num_steps=STEPS
    )
    assert [r.check for r in report.failures] == ["detection"]
    assert "no adapter matches" in report.failures[0].message


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="at least 3"):
        check_exact(original_dit, run_original_dit, adapter="dit", num_steps=2)
    with pytest.raises(ConformanceError, match="must return a tensor"):
        check_exact(original_dit, lambda m: None, adapter="dit", num_steps=STEPS)  # type: ignore[arg-type, return-value]


def test_importing_the_kit_does_not_import_pytest() -> None:
    code = "import sys, smoothcache.testing; print('pytest' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_the_adapter_guide_runs_as_written() -> None:
    """Every Python block of docs/adapters.md, top to bottom, as one script."""
    guide = Path(__file__).resolve().parents[2] / "docs" / "adapters.md"
    blocks = re.findall(r"^```python\n(.*?)^```", guide.read_text(encoding="utf-8"), re.M | re.S)
    assert len(blocks) >= 6
    result = subprocess.run(
        [sys.executable, "-c", "\n".join(blocks)],
        env={**os.environ, "OMP_NUM_THREADS": "1"},  # tiny models: threads only contend
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "PASSED  branches_residual" in result.stdout


def test_the_forecast_check_catches_an_engine_that_reuses_instead(monkeypatch) -> None:
    """If skipped steps were answered by the newest output, the hand computation disagrees."""
    import smoothcache.engine.forecast

    monkeypatch.setattr(smoothcache.engine.forecast, "combine", lambda values, _weights: values[-1])
    with pytest.raises(ConformanceError, match="differs from the extrapolation"):
        CHECKS["forecast"](original_dit, run_original_dit, adapter="dit", num_steps=STEPS)
