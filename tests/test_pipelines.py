"""Families of issue #16 through their real diffusers pipeline classes, with tiny transformers.

The pipelines get the zoo's tiny transformer, no VAE and no text encoders (prompt embeddings
are passed directly; ``output_type="latent"``). Each test checks what a user relies on: the
adapter detection picks, a compute-everything schedule bit-identical to no caching, reuse that
skips the branch's forward and changes the output, and the call pattern (passes) of the
pipeline's guidance.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from diffusers import (
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    StableDiffusion3Pipeline,
    UniPCMultistepScheduler,
    WanPipeline,
)

import smoothcache
from tests.conftest import count_original_calls
from tests.models.diffusers_zoo import ZOO

STEPS = 6
ROW = [1, 0, 1, 0, 1, 1]


def _embeds(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(len(shape)))


def flux() -> tuple[Any, Callable[[], torch.Tensor]]:
    transformer = ZOO["FluxTransformer2DModel"].factory()
    pipe = FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(), vae=None, text_encoder=None,
        tokenizer=None, text_encoder_2=None, tokenizer_2=None, transformer=transformer,
    )  # fmt: skip
    prompt = _embeds(1, 8, transformer.config.joint_attention_dim)
    pooled = _embeds(1, transformer.config.pooled_projection_dim)

    def run() -> torch.Tensor:  # true CFG: two calls per step
        return pipe(
            prompt_embeds=prompt, pooled_prompt_embeds=pooled,
            negative_prompt_embeds=0.5 * prompt, negative_pooled_prompt_embeds=0.5 * pooled,
            true_cfg_scale=3.0, num_inference_steps=STEPS, height=32, width=32,
            output_type="latent", generator=torch.Generator().manual_seed(0),
        ).images  # fmt: skip

    return pipe, run


def sd3() -> tuple[Any, Callable[[], torch.Tensor]]:
    transformer = ZOO["SD3Transformer2DModel"].factory()
    pipe = StableDiffusion3Pipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(), vae=None, text_encoder=None,
        tokenizer=None, text_encoder_2=None, tokenizer_2=None, text_encoder_3=None,
        tokenizer_3=None, transformer=transformer,
    )  # fmt: skip
    prompt = _embeds(1, 8, transformer.config.joint_attention_dim)
    pooled = _embeds(1, transformer.config.pooled_projection_dim)

    def run() -> torch.Tensor:  # CFG as one doubled batch
        return pipe(
            prompt_embeds=prompt, pooled_prompt_embeds=pooled,
            negative_prompt_embeds=0.3 * prompt, negative_pooled_prompt_embeds=0.3 * pooled,
            num_inference_steps=STEPS, height=32, width=32, output_type="latent",
            generator=torch.Generator().manual_seed(0),
        ).images  # fmt: skip

    return pipe, run


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
    pipe = WanPipeline(
        tokenizer=None, text_encoder=None, vae=None, scheduler=scheduler,
        transformer=transformer, **extra,
    )  # fmt: skip
    prompt = _embeds(1, 8, transformer.config.text_dim)

    def run() -> torch.Tensor:  # guidance as two calls per step
        return pipe(
            prompt_embeds=prompt, negative_prompt_embeds=0.3 * prompt,
            num_inference_steps=STEPS, height=16, width=16, num_frames=5,
            output_type="latent", generator=torch.Generator().manual_seed(0),
        ).frames  # fmt: skip

    return pipe, run


CASES = {
    "flux": (flux, "flux", {"attn": ROW, "single": ROW}, "transformer_blocks.0.attn", 2),
    "sd3": (sd3, "diffusers-generic", {"attn": ROW}, "transformer_blocks.0.attn", 1),
    "wan": (wan, "diffusers-generic", {"attn1": ROW}, "blocks.0.attn1", 2),
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
