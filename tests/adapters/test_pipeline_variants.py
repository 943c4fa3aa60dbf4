"""The pipeline variants users of caches report broken most: FLUX image-to-image and inpainting
at ``strength < 1`` (a run of the last steps only), ControlNet (residuals added to the blocks),
Kontext (reference-image tokens appended to the sequence) and Fill (masked-image latents and the
mask concatenated to the transformer's input channels), and Wan image-to-video (the encoded first
frame and its mask concatenated to the input channels, guidance as two calls per step); each
through its real diffusers pipeline with a tiny transformer and a tiny VAE; and a PEFT LoRA
inside the branches.

Each must compute everything bit-identically to no caching, really skip the branch (its original
forward not called) and change the output; a partial run must be a clear error without
``remap=True`` and use the schedule mapped to its own steps with it. ``tune`` must run end to end
on Fill and Wan image-to-video, whose conditioning passes through the VAE's encoder, and give a
schedule that skips.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from diffusers import (
    AutoencoderKL,
    AutoencoderKLWan,
    FlowMatchEulerDiscreteScheduler,
    FluxControlNetModel,
    FluxControlNetPipeline,
    FluxFillPipeline,
    FluxImg2ImgPipeline,
    FluxInpaintPipeline,
    FluxKontextPipeline,
    FluxTransformer2DModel,
    UniPCMultistepScheduler,
    WanImageToVideoPipeline,
    WanTransformer3DModel,
)

import smoothcache
from smoothcache import Schedule, StepCountError
from smoothcache.testing.models.diffusers_zoo import ZOO, randomize_zeros_
from tests.conftest import count_original_calls, tiny_flux_pipeline, tiny_module

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
    """FLUX's prompt embeddings (no text encoders) and a 16 x 16 latent output."""
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


def _mask() -> torch.Tensor:
    """An inpainting mask: the centre 8 x 8 of the 16 x 16 image is repainted."""
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., 4:12, 4:12] = 1
    return mask


def _runner(pipe: Any, call: dict[str, Any], field: str = "images") -> Callable[..., torch.Tensor]:
    """``run(steps)``: one seeded run of ``pipe`` with ``call`` (the variant's own arguments,
    without ``num_inference_steps`` and ``generator``); ``field`` names the output
    (``images``, or ``frames`` for a video pipeline)."""
    pipe.set_progress_bar_config(disable=True)

    def run(steps: int = STEPS) -> torch.Tensor:
        generator = torch.Generator().manual_seed(0)
        return getattr(pipe(**call, num_inference_steps=steps, generator=generator), field)

    return run


def _transformer() -> Any:
    return ZOO["FluxTransformer2DModel"].factory()


def _zoo_config(name: str, **changes: Any) -> dict[str, Any]:
    """The config of the zoo's tiny ``name`` transformer with ``changes``: the zoo's sizes,
    with the input and output channels a variant's pipeline concatenates and predicts."""
    config = {k: v for k, v in ZOO[name].factory().config.items() if not k.startswith("_")}
    return {**config, **changes}


def img2img() -> tuple[Any, dict[str, Any]]:
    pipe = FluxImg2ImgPipeline(
        transformer=_transformer(),
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=_vae(),
        **NO_TEXT,
    )
    return pipe, {**_inputs(), "image": _image(), "strength": 0.6}


def inpaint() -> tuple[Any, dict[str, Any]]:
    pipe = FluxInpaintPipeline(
        transformer=_transformer(),
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=_vae(),
        **NO_TEXT,
    )
    return pipe, {**_inputs(), "image": _image(), "mask_image": _mask(), "strength": 0.6}


def controlnet() -> tuple[Any, dict[str, Any]]:
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
    return pipe, {**_inputs(), "control_image": _image()}


def kontext() -> tuple[Any, dict[str, Any]]:
    pipe = FluxKontextPipeline(
        transformer=_transformer(),
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=_vae(),
        image_encoder=None,
        feature_extractor=None,
        **NO_TEXT,
    )
    # the reference image's tokens join the sequence; no resize to Kontext's 1 MP resolutions
    return pipe, {**_inputs(), "image": _image(), "max_area": 256, "_auto_resize": False}


def fill() -> tuple[Any, dict[str, Any]]:
    """FLUX Fill: the transformer sees cat(noisy latents, masked-image latents, mask) packed
    2 x 2 along the channels. With :func:`_vae` (1 latent channel, ``vae_scale_factor`` 1) that
    is 1 x 4 + 1 x 4 + (1 x 1 mask pixels per latent pixel) x 4 = 12 input channels, predicting
    the 4 of the noisy latents (FLUX.1 Fill: 64 + 64 + 256 = 384 in, 64 out)."""
    config = _zoo_config("FluxTransformer2DModel", in_channels=12, out_channels=4)
    pipe = FluxFillPipeline(
        transformer=tiny_module(FluxTransformer2DModel, **config),
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=_vae(),
        **NO_TEXT,
    )
    # no strength: Fill runs every step
    return pipe, {**_inputs(), "image": _image(), "mask_image": _mask()}


#: the tiny Wan VAE's latent channels
WAN_Z = 4


def _wan_vae() -> AutoencoderKLWan:
    """A tiny Wan VAE: 4 latent channels, two downsamplings in space and time, so its scale
    factors are 4 and 4 (``scale_factor_*`` are config values the pipeline reads, not derived
    from the layers: they must match them). Identity latent statistics."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        vae = AutoencoderKLWan(
            base_dim=8,
            z_dim=WAN_Z,
            dim_mult=[1, 1, 1],
            num_res_blocks=1,
            temperal_downsample=[True, True],
            latents_mean=[0.0] * WAN_Z,
            latents_std=[1.0] * WAN_Z,
            scale_factor_temporal=4,
            scale_factor_spatial=4,
        )
    return vae.eval()


def wan_i2v() -> tuple[Any, dict[str, Any]]:
    """Wan image-to-video, 2.2 style (no CLIP image encoder: the transformer has no
    ``image_dim``). Its input is cat(noisy latents, mask, encoded video condition): the first
    frame's mask is repeated ``vae_scale_factor_temporal`` times and folded into that many
    channels, so ``WAN_Z + 4 + WAN_Z`` = 12 channels in, ``WAN_Z`` out (Wan 2.1 I2V:
    16 + 4 + 16 = 36). Guidance as two calls per step."""
    vae = _wan_vae()
    mask_channels = vae.config.scale_factor_temporal
    config = _zoo_config(
        "WanTransformer3DModel", in_channels=WAN_Z + mask_channels + WAN_Z, out_channels=WAN_Z
    )
    scheduler = UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0
    )
    pipe = WanImageToVideoPipeline(
        transformer=tiny_module(WanTransformer3DModel, **config),
        scheduler=scheduler,
        vae=vae,
        text_encoder=None,
        tokenizer=None,
        image_encoder=None,
        image_processor=None,
    )
    prompt = torch.randn(1, 8, config["text_dim"], generator=torch.Generator().manual_seed(0))
    # 16 x 16 x 5 frames -> latents 4 x 4 x 2 -> 2 x 2 x 2 tokens
    return pipe, {
        "image": _image(),
        "prompt_embeds": prompt,
        "negative_prompt_embeds": 0.3 * prompt,
        "height": 16,
        "width": 16,
        "num_frames": 5,
        "output_type": "latent",
    }


@dataclass(frozen=True)
class Variant:
    """A pipeline variant and what its runs look like to a schedule."""

    build: Callable[[], tuple[Any, dict[str, Any]]]  #: the pipeline and its call arguments
    steps: int = STEPS  #: the steps a run makes of STEPS
    path: str = PATH  #: the branch whose original forward is counted
    kinds: tuple[str, str] = ("attn", "ff")  #: the path's kind (reuses by ROW), one computed
    passes: int = 1  #: transformer calls per step
    field: str = "images"  #: the output's field


VARIANTS = {
    "img2img": Variant(img2img, steps=6),
    "inpaint": Variant(inpaint, steps=6),
    "controlnet": Variant(controlnet),
    "kontext": Variant(kontext),
    "fill": Variant(fill),
    "wan-i2v": Variant(
        wan_i2v, path="blocks.0.attn1", kinds=("attn1", "ffn"), passes=2, field="frames"
    ),
}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_a_variant_caches_exactly_and_skips(name):
    variant = VARIANTS[name]
    steps, path, (kind, other), passes = variant.steps, variant.path, variant.kinds, variant.passes
    pipe, call = variant.build()
    run = _runner(pipe, call, variant.field)
    base = run()
    schedule = Schedule({kind: ROW, other: [1] * STEPS})
    if steps != STEPS:  # a partial run: never remapped silently
        with pytest.raises(StepCountError, match="remap=True"):
            with smoothcache.enabled(pipe, schedule):
                run()
    everything = {kind: [1] * STEPS, other: [1] * STEPS}
    with smoothcache.enabled(pipe, everything, remap=True):
        assert torch.equal(run(), base)
    with count_original_calls(pipe.transformer, [path]) as calls:
        with smoothcache.enabled(pipe, schedule, remap=True) as session:
            out = run()
    applied = session.schedule.rows[kind]
    assert len(applied) == steps and session.stats.passes == passes
    assert calls[path] == passes * sum(applied)
    assert session.stats.reused[path] == passes * applied.count(0) > 0
    assert not torch.equal(out, base)
    if steps != STEPS:  # the tail of the schedule's steps, as the pipeline ran them
        assert session.schedule.metadata["remapped_from"]["num_steps"] == STEPS
        assert applied == tuple(ROW[STEPS - steps :])


@pytest.mark.parametrize("name", ["fill", "wan-i2v"])
def test_tune_runs_through_a_pipeline_that_encodes_its_conditioning(name):
    """``tune`` with the pipeline's own call arguments, on pipelines whose conditioning image
    passes through the VAE's encoder inside the call (also in the sensitivity's run with
    gradients): its schedule skips the branch, and computing everything stays exact."""
    variant = VARIANTS[name]
    pipe, call = variant.build()
    run = _runner(pipe, call, variant.field)
    base = run()
    tuned = smoothcache.tune(
        pipe, call={**call, "num_inference_steps": STEPS}, compute_fraction=0.5
    )
    assert tuned.sensitivity.startswith("estimated in one run with gradients")
    assert tuned.candidates[tuned.chosen].compute_fraction <= 0.5 + 1e-12
    everything = {kind: [1] * STEPS for kind in tuned.schedule.rows}
    with smoothcache.enabled(pipe, everything):
        assert torch.equal(run(), base)
    path = variant.path
    with count_original_calls(pipe.transformer, [path]) as calls:
        with smoothcache.enabled(pipe, tuned.schedule) as session:
            out = run()
    assert session.stats.reused[path] > 0
    assert calls[path] + session.stats.reused[path] == variant.passes * STEPS
    assert not torch.equal(out, base)


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
