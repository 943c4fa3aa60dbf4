"""Families of issue #16 through their real diffusers pipeline classes, with tiny transformers.

The pipelines get the zoo's tiny transformer, no VAE and no text encoders (prompt embeddings
are passed directly; ``output_type="latent"``). Where a pipeline needs more even for latent
output (LTX-2's text connectors and VAE statistics, HunyuanVideo 1.5's VAE config and its
9-channel transformer input), it gets tiny real diffusers modules built from small configs.

Each test checks what a user relies on: the adapter detection picks, a compute-everything
schedule bit-identical to no caching, reuse that skips the branch's forward and changes the
output, and the call pattern (passes) of the pipeline's guidance.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from diffusers import (
    AutoencoderKLHunyuanVideo15,
    AutoencoderKLLTX2Audio,
    AutoencoderKLLTX2Video,
    CogVideoXDDIMScheduler,
    CogVideoXPipeline,
    DDPMScheduler,
    FlowMatchEulerDiscreteScheduler,
    Flux2Pipeline,
    FluxPipeline,
    HunyuanDiTPipeline,
    HunyuanVideo15Pipeline,
    HunyuanVideo15Transformer3DModel,
    HunyuanVideoPipeline,
    LTX2Pipeline,
    LTXPipeline,
    Lumina2Pipeline,
    QwenImagePipeline,
    SanaPipeline,
    StableDiffusion3Pipeline,
    UniPCMultistepScheduler,
    WanPipeline,
)
from diffusers.guiders import ClassifierFreeGuidance
from diffusers.pipelines.ltx2 import LTX2TextConnectors

import smoothcache
from smoothcache.testing.models.diffusers_zoo import ZOO
from tests.conftest import count_original_calls, tiny_module

STEPS = 6
ROW = [1, 0, 1, 0, 1, 1]


def _embeds(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(len(shape) + seed))


def _mask(length: int, dtype: torch.dtype = torch.long) -> torch.Tensor:
    return torch.ones(1, length, dtype=dtype)


def _seed() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def _pipe(cls: type, transformer: Any, *absent: str, scheduler: Any = None, **parts: Any) -> Any:
    """``cls`` around the tiny ``transformer``: ``None`` for each ``absent`` component (text
    encoders, tokenizers, VAE), flow-matching Euler unless another ``scheduler`` is given."""
    scheduler = scheduler or FlowMatchEulerDiscreteScheduler()
    return cls(transformer=transformer, scheduler=scheduler, **dict.fromkeys(absent), **parts)


def _prompts(
    prompt: torch.Tensor,
    mask: torch.Tensor | None = None,
    mask_key: str = "prompt_attention_mask",
    suffix: str = "",
    pooled: torch.Tensor | None = None,
) -> dict[str, Any]:
    """Prompt embeddings and a negative prompt (0.3 x them), with masks and pooled embeddings
    under the pipeline's names (``suffix`` ``"_2"`` for a second text encoder)."""
    call = {f"prompt_embeds{suffix}": prompt, f"negative_prompt_embeds{suffix}": 0.3 * prompt}
    if mask is not None:
        call.update({f"{mask_key}{suffix}": mask, f"negative_{mask_key}{suffix}": mask})
    if pooled is not None:
        call.update(pooled_prompt_embeds=pooled, negative_pooled_prompt_embeds=0.3 * pooled)
    return call


def _runner(pipe: Any, field: str = "images", **call: Any) -> Callable[[], torch.Tensor]:
    """One seeded run of ``pipe`` at :data:`STEPS` steps with latent output: ``call`` holds the
    family's own arguments; ``field`` names the output (``images`` or ``frames``)."""

    def run() -> torch.Tensor:
        out = pipe(num_inference_steps=STEPS, output_type="latent", generator=_seed(), **call)
        return getattr(out, field)

    return run


_ENCODERS = ("text_encoder", "tokenizer")
_TWO_ENCODERS = (*_ENCODERS, "text_encoder_2", "tokenizer_2")


def flux() -> tuple[Any, Callable[[], torch.Tensor]]:
    transformer = ZOO["FluxTransformer2DModel"].factory()
    pipe = _pipe(FluxPipeline, transformer, "vae", *_TWO_ENCODERS)
    prompt = _embeds(1, 8, transformer.config.joint_attention_dim)
    pooled = _embeds(1, transformer.config.pooled_projection_dim)
    # true CFG: two calls per step
    call = _prompts(prompt, pooled=pooled)
    return pipe, _runner(pipe, true_cfg_scale=3.0, height=32, width=32, **call)


def sd3(**extra: Any) -> tuple[Any, Callable[[], torch.Tensor]]:
    transformer = ZOO["SD3Transformer2DModel"].factory()
    absent = ("vae", *_TWO_ENCODERS, "text_encoder_3", "tokenizer_3")
    pipe = _pipe(StableDiffusion3Pipeline, transformer, *absent)
    prompt = _embeds(1, 8, transformer.config.joint_attention_dim)
    pooled = _embeds(1, transformer.config.pooled_projection_dim)
    # CFG as one doubled batch
    return pipe, _runner(pipe, height=32, width=32, **_prompts(prompt, pooled=pooled), **extra)


def wan(two_experts: bool = False) -> tuple[Any, Callable[[], torch.Tensor]]:
    transformer = ZOO["WanTransformer3DModel"].factory()
    extra: dict[str, Any] = {}
    if two_experts:  # Wan 2.2 A14B: a low-noise expert takes over at the boundary
        second = ZOO["WanTransformer3DModel"].factory()
        with torch.no_grad():
            for param in second.parameters():
                param.add_(0.05 * torch.randn_like(param))
        extra = {"transformer_2": second, "boundary_ratio": 0.8}  # steps 3-5: expert 2
    scheduler = UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0
    )
    pipe = _pipe(WanPipeline, transformer, "vae", *_ENCODERS, scheduler=scheduler, **extra)
    prompt = _embeds(1, 8, transformer.config.text_dim)
    # guidance as two calls per step
    call = _prompts(prompt)
    return pipe, _runner(pipe, "frames", height=16, width=16, num_frames=5, **call)


def cogvideox() -> tuple[Any, Callable[[], torch.Tensor]]:
    transformer = ZOO["CogVideoXTransformer3DModel"].factory()
    scheduler = CogVideoXDDIMScheduler()
    pipe = _pipe(CogVideoXPipeline, transformer, "vae", *_ENCODERS, scheduler=scheduler)
    prompt = _embeds(1, 8, transformer.config.text_embed_dim)
    # CFG as one doubled batch; 64 px / 8 = 8x8, 5 frames -> 2 latent
    call = _prompts(prompt)
    return pipe, _runner(pipe, "frames", height=64, width=64, num_frames=5, **call)


def ltx() -> tuple[Any, Callable[[], torch.Tensor]]:
    transformer = ZOO["LTXVideoTransformer3DModel"].factory()
    pipe = _pipe(LTXPipeline, transformer, "vae", *_ENCODERS)
    prompt = _embeds(1, 8, transformer.config.caption_channels)
    # CFG as one doubled batch; 128 px / 32 = 4x4, 9 frames -> 2
    call = _prompts(prompt, _mask(8))
    return pipe, _runner(pipe, "frames", height=128, width=128, num_frames=9, **call)


def sana() -> tuple[Any, Callable[[], torch.Tensor]]:
    transformer = ZOO["SanaTransformer2DModel"].factory()
    pipe = _pipe(SanaPipeline, transformer, "vae", *_ENCODERS)
    prompt = _embeds(1, 8, transformer.config.caption_channels)
    # CFG as one doubled batch; 256 px / 32 = 8x8; no resolution binning: it only knows sample
    # sizes 16-128
    call = _prompts(prompt, _mask(8))
    return pipe, _runner(
        pipe, negative_prompt=None, height=256, width=256, use_resolution_binning=False, **call
    )


def qwen_image() -> tuple[Any, Callable[[], torch.Tensor]]:
    transformer = ZOO["QwenImageTransformer2DModel"].factory()
    pipe = _pipe(QwenImagePipeline, transformer, "vae", *_ENCODERS)
    prompt = _embeds(1, 8, transformer.config.joint_attention_dim)
    # true CFG: two calls per step; 64 px / 8 = 8x8 -> 4x4 packed
    call = _prompts(prompt, _mask(8), "prompt_embeds_mask")
    return pipe, _runner(pipe, true_cfg_scale=4.0, guidance_scale=None, height=64, width=64, **call)


def lumina2(**extra: Any) -> tuple[Any, Callable[[], torch.Tensor]]:
    transformer = ZOO["Lumina2Transformer2DModel"].factory()
    pipe = _pipe(Lumina2Pipeline, transformer, "vae", *_ENCODERS)
    prompt = _embeds(1, 8, transformer.config.cap_feat_dim)
    # guidance as two calls per step (cond, then uncond); 64 px / 8
    call = _prompts(prompt, _mask(8, torch.bool))
    return pipe, _runner(pipe, height=64, width=64, **call, **extra)


def hunyuan_dit() -> tuple[Any, Callable[[], torch.Tensor]]:
    transformer = ZOO["HunyuanDiT2DModel"].factory()
    absent = ("vae", *_TWO_ENCODERS, "safety_checker", "feature_extractor")
    scheduler = DDPMScheduler()
    pipe = _pipe(
        HunyuanDiTPipeline, transformer, *absent, scheduler=scheduler,
        requires_safety_checker=False,
    )  # fmt: skip
    clip = _embeds(1, 4, transformer.config.cross_attention_dim)  # BERT-like encoder
    t5 = _embeds(1, 4, transformer.config.cross_attention_dim_t5, seed=1)
    # CFG as one doubled batch; 64 px / 8 = 8x8; no resolution binning: it maps every size
    # onto its 1024-px shapes
    call = {**_prompts(clip, _mask(4)), **_prompts(t5, _mask(4), suffix="_2")}
    return pipe, _runner(pipe, height=64, width=64, use_resolution_binning=False, **call)


def hunyuan_video() -> tuple[Any, Callable[[], torch.Tensor]]:
    transformer = ZOO["HunyuanVideoTransformer3DModel"].factory()
    pipe = _pipe(HunyuanVideoPipeline, transformer, "vae", *_TWO_ENCODERS)
    prompt = _embeds(1, 8, transformer.config.text_embed_dim)
    pooled = _embeds(1, transformer.config.pooled_projection_dim)
    # true CFG: two calls per step; 32 px / 8 = 4x4, 5 frames -> 2
    call = _prompts(prompt, _mask(8), pooled=pooled)
    return pipe, _runner(
        pipe, "frames", true_cfg_scale=3.0, height=32, width=32, num_frames=5, **call
    )


def flux2() -> tuple[Any, Callable[[], torch.Tensor]]:
    transformer = ZOO["Flux2Transformer2DModel"].factory()
    pipe = _pipe(Flux2Pipeline, transformer, "vae", *_ENCODERS)
    prompt = _embeds(1, 8, transformer.config.joint_attention_dim)
    # guidance-distilled, no CFG: one call per step; 64 px -> 4x4
    return pipe, _runner(pipe, prompt_embeds=prompt, guidance_scale=4.0, height=64, width=64)


def ltx2() -> tuple[Any, Callable[[], torch.Tensor]]:
    # The pipeline always runs the text connectors and reads both VAEs' latent statistics and
    # compression ratios, so it gets tiny real ones. Video VAE: patch 4 and three 2x
    # spatio-temporal stages, i.e. 32x spatial and 8x temporal as in LTX-2; 4 latent channels
    # (the zoo transformer's in_channels). Audio VAE: 2 latent channels x 8 / 4 mel bins = 4,
    # the zoo transformer's audio_in_channels, and its statistics have that many entries.
    transformer = ZOO["LTX2VideoTransformer3DModel"].factory()
    vae = tiny_module(
        AutoencoderKLLTX2Video, latent_channels=4, block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8), layers_per_block=(1, 1, 1, 1, 1),
        decoder_layers_per_block=(1, 1, 1, 1), spatio_temporal_scaling=(True, True, True, False),
    )  # fmt: skip
    audio_vae = tiny_module(
        AutoencoderKLLTX2Audio, base_channels=4, ch_mult=(1, 2), num_res_blocks=1,
        latent_channels=2, mel_bins=8,
    )  # fmt: skip
    caption = transformer.config.caption_channels  # the connectors' width: 2 heads x 8
    connectors = tiny_module(
        LTX2TextConnectors, caption_channels=caption, text_proj_in_factor=2,
        video_connector_num_attention_heads=2, video_connector_attention_head_dim=caption // 2,
        video_connector_num_layers=1, video_connector_num_learnable_registers=8,
        audio_connector_num_attention_heads=2, audio_connector_attention_head_dim=caption // 2,
        audio_connector_num_layers=1, audio_connector_num_learnable_registers=8,
        rope_double_precision=False,
    )  # fmt: skip
    pipe = _pipe(
        LTX2Pipeline, transformer, *_ENCODERS, "vocoder", vae=vae, audio_vae=audio_vae,
        connectors=connectors,
    )  # fmt: skip
    prompt = _embeds(1, 8, 2 * caption)  # stacked text-encoder layers: caption x proj_in_factor
    # 128 px / 32 = 4x4, 9 frames -> 2 latent, 9 audio latents; default guidance, three calls
    # per step: CFG as one doubled batch, then the spatio-temporal-guidance call and the
    # modality-isolation call at batch 1
    call = _prompts(prompt, _mask(8))
    return pipe, _runner(pipe, "frames", height=128, width=128, num_frames=9, **call)


def hunyuan_video_1_5() -> tuple[Any, Callable[[], torch.Tensor]]:
    # The pipeline reads the VAE's latent channels and compression ratios in __init__ and feeds
    # the transformer cat([latents, cond_latents, mask]): 2 * 4 + 1 = 9 channels in, 4 out.
    # (default ratios: 16x spatial, 4x temporal)
    vae = tiny_module(
        AutoencoderKLHunyuanVideo15, latent_channels=4, block_out_channels=(8,) * 5,
        layers_per_block=1,
    )  # fmt: skip
    transformer = tiny_module(
        HunyuanVideo15Transformer3DModel, in_channels=9, out_channels=4, num_attention_heads=2,
        attention_head_dim=8, num_layers=2, num_refiner_layers=1, mlp_ratio=2.0,
        text_embed_dim=16, text_embed_2_dim=8, image_embed_dim=12, rope_axes_dim=(2, 2, 4),
        target_size=16, task_type="t2v",
    )  # fmt: skip
    pipe = _pipe(
        HunyuanVideo15Pipeline, transformer, *_TWO_ENCODERS, vae=vae,
        guider=ClassifierFreeGuidance(guidance_scale=6.0),
    )  # fmt: skip
    prompt = _embeds(1, 6, transformer.config.text_embed_dim)
    glyphs = _embeds(1, 4, transformer.config.text_embed_2_dim)
    # guider CFG: two calls per step; 128 px / 16 = 8x8, 5 frames -> 2
    call = {
        **_prompts(prompt, _mask(6), "prompt_embeds_mask"),
        **_prompts(glyphs, _mask(4), "prompt_embeds_mask", "_2"),
    }
    return pipe, _runner(pipe, "frames", height=128, width=128, num_frames=5, **call)


CASES = {
    "flux": (flux, "flux", {"attn": ROW, "single": ROW}, "transformer_blocks.0.attn", 2),
    "sd3": (sd3, "sd3", {"attn": ROW}, "transformer_blocks.0.attn", 1),
    "wan": (wan, "wan", {"attn1": ROW}, "blocks.0.attn1", 2),
    "cogvideox": (cogvideox, "cogvideox", {"attn1": ROW}, "transformer_blocks.0.attn1", 1),
    "ltx": (ltx, "ltx-video", {"attn1": ROW}, "transformer_blocks.0.attn1", 1),
    "sana": (sana, "sana", {"attn1": ROW}, "transformer_blocks.0.attn1", 1),
    "qwen-image": (qwen_image, "qwen-image", {"attn": ROW}, "transformer_blocks.0.attn", 2),
    "lumina2": (lumina2, "lumina2", {"attn": ROW}, "layers.0.attn", 2),
    "hunyuan-dit": (hunyuan_dit, "hunyuandit", {"attn1": ROW}, "blocks.0.attn1", 1),
    "hunyuan-video": (
        hunyuan_video,
        "hunyuan-video",
        {"attn": ROW, "single": ROW},
        "transformer_blocks.0.attn",
        2,
    ),
    "flux2": (
        flux2,
        "flux2",
        {"attn": ROW, "single": ROW},
        "transformer_blocks.0.attn",
        1,
    ),
    "ltx2": (ltx2, "ltx2", {"attn1": ROW}, "transformer_blocks.0.attn1", 3),
    "hunyuan-video-1.5": (
        hunyuan_video_1_5,
        "hunyuan-video-1.5",
        {"attn": ROW},
        "transformer_blocks.0.attn",
        2,
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_real_pipeline_caches_exactly_and_skips(case):
    build, adapter, schedule, path, passes = CASES[case]
    pipe, run = build()
    pipe.set_progress_bar_config(disable=True)
    base = run()
    everything = {key: [1] * STEPS for key in schedule}
    with smoothcache.enabled(pipe, everything) as session:
        assert torch.equal(run(), base)
    assert session.adapter.name == adapter
    with count_original_calls(pipe.transformer, [path]) as calls:
        with smoothcache.enabled(pipe, schedule) as session:
            out = run()
    assert session.stats.passes == passes
    assert calls[path] == passes * sum(ROW)
    assert session.stats.reused[path] == passes * ROW.count(0)
    assert not torch.equal(out, base)


def test_wan_2_2_hands_over_to_the_second_expert_under_one_schedule():
    pipe, run = wan(two_experts=True)
    pipe.set_progress_bar_config(disable=True)
    base = run()
    with smoothcache.enabled(pipe, {"attn1": [1] * STEPS}):
        assert torch.equal(run(), base)
    row = [1, 0, 1, 1, 0, 1]  # each expert reuses once: steps 1 and 4
    with smoothcache.enabled(pipe, {"attn1": row}) as session:
        out = run()
    reused = session.stats.reused  # two calls per step (guidance)
    assert reused["blocks.0.attn1"] == 2 and reused["transformer_2.blocks.0.attn1"] == 2
    assert session.stats.steps == STEPS and session.stats.generations == 1
    assert not torch.equal(out, base)


@pytest.mark.filterwarnings("error::RuntimeWarning")
def test_tune_runs_through_the_hand_over_to_the_second_expert():
    """tune on Wan 2.2's two experts: the sensitivity's run sees each expert's own previous
    outputs (none at the hand-over step, whose reuse falls back to computing: no contribution
    there, and no NaN from it in the search), the schedule applies to both experts, and no
    forecast of the second expert asks for outputs it has not made yet."""
    pipe, run = wan(two_experts=True)
    pipe.set_progress_bar_config(disable=True)
    prompt = _embeds(1, 8, pipe.transformer.config.text_dim)
    call = {**_prompts(prompt), "height": 16, "width": 16, "num_frames": 5}
    tuned = smoothcache.tune(
        pipe, call={**call, "num_inference_steps": STEPS}, compute_fraction=0.5
    )
    assert tuned.sensitivity.startswith("estimated in one run with gradients")
    gram = tuned.curves.sensitivity.gram[0]
    assert np.isfinite(gram).all() and gram[1, 1] > 0 and gram[4, 4] > 0
    assert not gram[3].any()  # the hand-over step: the second expert has nothing stored yet
    base = run()
    with smoothcache.enabled(pipe, tuned.schedule) as session:
        out = run()
    stats = session.stats
    first, second = "blocks.0.attn1", "transformer_2.blocks.0.attn1"
    assert stats.reused[first] > 0 and not torch.equal(out, base)
    # the search knows where the second expert takes over: it computes there and forecasts
    # only from the second expert's own outputs after it, so nothing falls back to computing
    skipped = 2 * tuned.schedule.rows["attn1"][3:].count(0)
    assert tuned.schedule.rows["attn1"][3] == 1
    assert stats.reused[second] == skipped > 0 and not any(stats.fallbacks.values())


def test_sd3_skip_layer_guidance_adds_a_pass_that_skips_blocks():
    """SD3.5's skip-layer guidance: a third call at some steps (a new pass) in which chosen
    blocks do not run. The counts say what ran: block 1 is not in the guidance pass."""
    pipe, run = sd3(
        skip_guidance_layers=[1], skip_layer_guidance_start=0.2, skip_layer_guidance_stop=0.8
    )
    pipe.set_progress_bar_config(disable=True)
    base = run()
    with smoothcache.enabled(pipe, {"attn": [1] * STEPS}):
        assert torch.equal(run(), base)
    with smoothcache.enabled(pipe, {"attn": ROW}) as session:  # guidance pass at steps 2-4
        out = run()
    assert session.stats.passes == 2
    reused = session.stats.reused  # reuse at steps 1 and 3; at 3 also in the guidance pass
    assert reused["transformer_blocks.0.attn"] == 3
    assert reused["transformer_blocks.1.attn"] == 2  # skipped in the guidance pass
    assert not torch.equal(out, base)


def test_lumina2_cfg_truncation_drops_the_second_call_partway():
    """Lumina2's CFG truncation: after ``cfg_trunc_ratio`` of the steps the unconditional call
    stops; the second pass simply stops running, and nothing is counted for it there."""
    pipe, run = lumina2(cfg_trunc_ratio=0.5)
    pipe.set_progress_bar_config(disable=True)
    base = run()
    with smoothcache.enabled(pipe, {"attn": [1] * STEPS}):
        assert torch.equal(run(), base)
    path = "layers.0.attn"
    with count_original_calls(pipe.transformer, [path]) as calls:
        with smoothcache.enabled(pipe, {"attn": ROW}) as session:
            out = run()
    # two calls at steps 0-2, one at 3-5; reuse at steps 1 (both passes) and 3 (one)
    assert session.stats.reused[path] == 3
    assert calls[path] == 2 * 2 + 2  # computed: steps 0 and 2 twice, 4 and 5 once
    assert not torch.equal(out, base)
