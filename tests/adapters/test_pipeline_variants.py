"""The FLUX pipeline variants users of caches report broken most: image-to-image and inpainting
at ``strength < 1`` (a run of the last steps only), ControlNet (residuals added to the blocks)
and Kontext (reference-image tokens appended to the sequence), each through its real diffusers
pipeline with the zoo's tiny transformer and a tiny VAE; and a PEFT LoRA inside the branches.

Each must compute everything bit-identically to no caching, really skip the branch (its original
forward not called) and change the output; a partial run must be a clear error without
``remap=True`` and use the schedule mapped to its own steps with it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from diffusers import (
    AutoencoderKL,
    FlowMatchEulerDiscreteScheduler,
    FluxControlNetModel,
    FluxControlNetPipeline,
    FluxImg2ImgPipeline,
    FluxInpaintPipeline,
    FluxKontextPipeline,
)

import smoothcache
from smoothcache import Schedule, StepCountError
from smoothcache.testing.models.diffusers_zoo import ZOO, randomize_zeros_
from tests.conftest import count_original_calls, tiny_flux_pipeline

STEPS = 10
ROW = [1, 0, 1, 0, 1, 0, 1, 0, 1, 1]
PATH = "transformer_blocks.0.attn"
NO_TEXT = dict.fromkeys(["text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2"])


def _vae() -> AutoencoderKL:
    """A one-level VAE with one latent channel: the tiny transformer's 4 input channels are its
    latents packed 2 x 2."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        vae = AutoencoderKL(
            latent_channels=1,
            block_out_channels=(8,),
            down_block_types=("DownEncoderBlock2D",),
            up_block_types=("UpDecoderBlock2D",),
            norm_num_groups=4,
            layers_per_block=1,
            shift_factor=0.0,
            scaling_factor=1.0,
        )
    return vae.eval()


def _inputs() -> dict[str, Any]:
    gen = torch.Generator().manual_seed(0)
    return {
        "prompt_embeds": torch.randn(1, 8, 32, generator=gen),
        "pooled_prompt_embeds": torch.randn(1, 32, generator=gen),
        "height": 16,
        "width": 16,
        "output_type": "latent",
    }


def _image(seed: int = 1) -> torch.Tensor:
    return torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


def _runner(pipe: Any, **call: Any) -> Callable[[int], torch.Tensor]:
    pipe.set_progress_bar_config(disable=True)

    def run(steps: int = STEPS) -> torch.Tensor:
        generator = torch.Generator().manual_seed(0)
        return pipe(**_inputs(), **call, num_inference_steps=steps, generator=generator).images

    return run


def _transformer() -> Any:
    return ZOO["FluxTransformer2DModel"].factory()


def img2img() -> tuple[Any, Callable[[int], torch.Tensor]]:
    pipe = FluxImg2ImgPipeline(
        transformer=_transformer(),
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=_vae(),
        **NO_TEXT,
    )
    return pipe, _runner(pipe, image=_image(), strength=0.6)


def inpaint() -> tuple[Any, Callable[[int], torch.Tensor]]:
    pipe = FluxInpaintPipeline(
        transformer=_transformer(),
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=_vae(),
        **NO_TEXT,
    )
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., 4:12, 4:12] = 1
    return pipe, _runner(pipe, image=_image(), mask_image=mask, strength=0.6)


def controlnet() -> tuple[Any, Callable[[int], torch.Tensor]]:
    transformer = _transformer()
    config = {k: v for k, v in transformer.config.items() if not k.startswith("_")}
    config.pop("out_channels", None)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        net = randomize_zeros_(FluxControlNetModel(**config)).eval()
    pipe = FluxControlNetPipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=_vae(),
        controlnet=net,
        **NO_TEXT,
    )
    return pipe, _runner(pipe, control_image=_image())


def kontext() -> tuple[Any, Callable[[int], torch.Tensor]]:
    pipe = FluxKontextPipeline(
        transformer=_transformer(),
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=_vae(),
        image_encoder=None,
        feature_extractor=None,
        **NO_TEXT,
    )
    # the reference image's tokens join the sequence; no resize to Kontext's 1 MP resolutions
    return pipe, _runner(pipe, image=_image(), max_area=256, _auto_resize=False)


#: variant -> (builder, steps the run makes of STEPS)
VARIANTS = {
    "img2img": (img2img, 6),
    "inpaint": (inpaint, 6),
    "controlnet": (controlnet, STEPS),
    "kontext": (kontext, STEPS),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_a_variant_caches_exactly_and_skips(variant):
    build, steps = VARIANTS[variant]
    pipe, run = build()
    base = run()
    schedule = Schedule({"attn": ROW, "ff": [1] * STEPS})
    if steps != STEPS:  # a partial run: never remapped silently
        with pytest.raises(StepCountError, match="remap=True"):
            with smoothcache.enabled(pipe, schedule):
                run()
    everything = {"attn": [1] * STEPS, "ff": [1] * STEPS}
    with smoothcache.enabled(pipe, everything, remap=True):
        assert torch.equal(run(), base)
    with count_original_calls(pipe.transformer, [PATH]) as calls:
        with smoothcache.enabled(pipe, schedule, remap=True) as session:
            out = run()
    applied = session.schedule.rows["attn"]
    assert len(applied) == steps
    assert calls[PATH] == sum(applied) and session.stats.reused[PATH] == applied.count(0) > 0
    assert not torch.equal(out, base)
    if steps != STEPS:  # the tail of the schedule's steps, as the pipeline ran them
        assert session.schedule.metadata["remapped_from"]["num_steps"] == STEPS
        assert applied == tuple(ROW[STEPS - steps :])


def test_a_lora_inside_the_branches_is_cached_with_them_and_tune_sees_it():
    """PEFT's LoRA layers replace the attention's projections inside the branch: computing
    everything stays bit-identical with the LoRA on, a reused step skips the LoRA layers with
    their branch, and tune's sensitivity estimate runs through them."""
    from peft import LoraConfig

    pipe = tiny_flux_pipeline()
    call = {**_inputs(), "num_inference_steps": STEPS}

    def run() -> torch.Tensor:
        return pipe(**call, generator=torch.Generator().manual_seed(0)).images

    base = run()
    targets = ["to_q", "to_k", "to_v", "to_out.0"]
    config = LoraConfig(r=4, lora_alpha=4, target_modules=targets, init_lora_weights=False)
    pipe.transformer.add_adapter(config)  # random A and B: the LoRA changes the output
    with_lora = run()
    assert not torch.equal(with_lora, base)
    everything = {"attn": [1] * STEPS, "ff": [1] * STEPS}
    with smoothcache.enabled(pipe, everything):
        assert torch.equal(run(), with_lora)
    tuned = smoothcache.tune(pipe, call=call, compute_fraction=0.5)
    assert tuned.sensitivity.startswith("estimated in one run with gradients")
    lora = f"{PATH}.to_q"
    with count_original_calls(pipe.transformer, [PATH, lora]) as calls:
        with smoothcache.enabled(pipe, tuned.schedule) as session:
            out = run()
    assert type(pipe.transformer.get_submodule(lora)).__module__.startswith("peft")
    assert calls[lora] == calls[PATH] == sum(tuned.schedule.rows["attn"]) < STEPS
    assert session.stats.reused[PATH] > 0 and not torch.equal(out, with_lora)
