"""Tests of the Hunyuan-DiT plugin: smoothcache's conformance kit on a tiny random pipeline,
plus discovery through the entry point once the package is installed.

The pipeline is diffusers' own ``HunyuanDiTPipeline`` with tiny random parts and no text
encoders (prompt embeddings are passed directly), so the transformer is called exactly as in
real use. No weights are downloaded.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch
from smoothcache_hunyuandit import HunyuanDiTAdapter

import smoothcache
from smoothcache.testing import AdapterConformance, alternating_row

pytest.importorskip("transformers", reason="diffusers' HunyuanDiTPipeline needs transformers")

STEPS = 4
LAYERS = 4  # blocks 0-1 plain, block 3 merges the long skip connection of block 0
CLIP_TOKENS, T5_TOKENS, TEXT_DIM = 3, 4, 16


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Tiny models gain nothing from intra-op threads, which only contend on busy cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_pipeline(seed: int = 0) -> Any:
    """A ``HunyuanDiTPipeline``: 4-block transformer (2 heads x 8 dims), 1-level VAE, DDIM.

    Every transformer parameter is redrawn from N(0, 0.2) so each branch matters.
    """
    from diffusers import AutoencoderKL, DDIMScheduler, HunyuanDiT2DModel, HunyuanDiTPipeline

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer = HunyuanDiT2DModel(
            num_attention_heads=2,
            attention_head_dim=8,
            in_channels=4,
            patch_size=2,
            sample_size=8,
            hidden_size=16,
            num_layers=LAYERS,
            mlp_ratio=2.0,
            cross_attention_dim=TEXT_DIM,
            cross_attention_dim_t5=TEXT_DIM,
            pooled_projection_dim=16,
            text_len=CLIP_TOKENS,
            text_len_t5=T5_TOKENS,
        )
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",),
            up_block_types=("UpDecoderBlock2D",),
            block_out_channels=(8,),
            layers_per_block=1,
            latent_channels=4,
            norm_num_groups=4,
        )
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in transformer.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.2)
    pipe = HunyuanDiTPipeline(
        vae=vae.eval(),
        text_encoder=None,
        tokenizer=None,
        transformer=transformer.eval(),
        scheduler=DDIMScheduler(beta_schedule="scaled_linear", clip_sample=False),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def sample(pipe: Any, seed: int = 0) -> torch.Tensor:
    """Guided 16x16 generation from random text embeddings; returns the final latents."""
    gen = torch.Generator().manual_seed(seed)
    clip = {"dtype": torch.long, "size": (1, CLIP_TOKENS)}
    t5 = {"dtype": torch.long, "size": (1, T5_TOKENS)}
    return pipe(
        prompt_embeds=torch.randn(1, CLIP_TOKENS, TEXT_DIM, generator=gen),
        negative_prompt_embeds=torch.randn(1, CLIP_TOKENS, TEXT_DIM, generator=gen),
        prompt_embeds_2=torch.randn(1, T5_TOKENS, TEXT_DIM, generator=gen),
        negative_prompt_embeds_2=torch.randn(1, T5_TOKENS, TEXT_DIM, generator=gen),
        prompt_attention_mask=torch.ones(**clip),
        negative_prompt_attention_mask=torch.ones(**clip),
        prompt_attention_mask_2=torch.ones(**t5),
        negative_prompt_attention_mask_2=torch.ones(**t5),
        height=16,
        width=16,
        num_inference_steps=STEPS,
        guidance_scale=5.0,
        use_resolution_binning=False,
        output_type="latent",
        generator=torch.Generator().manual_seed(seed),
    ).images


class TestHunyuanDiTConformance(AdapterConformance):
    """smoothcache's conformance kit: one test per check.

    The adapter is passed as an instance, so the kit checks it whether or not this package is
    installed (detection is then judged as if the adapter were registered).
    """

    adapter = HunyuanDiTAdapter()
    num_steps = STEPS

    def make_model(self) -> Any:
        return tiny_pipeline()

    def run(self, model: Any) -> torch.Tensor:
        return sample(model)


def test_every_block_declares_three_branches() -> None:
    branches = HunyuanDiTAdapter().branches(tiny_pipeline().transformer)
    assert [(b.path, b.kind, b.block) for b in branches[:3]] == [
        ("blocks.0.attn1", "attn1", 0),
        ("blocks.0.attn2", "attn2", 0),
        ("blocks.0.ff", "ff", 0),
    ]
    assert len(branches) == 3 * LAYERS


def test_installed_plugin_is_discovered_and_caches() -> None:
    """Needs the package installed (``pip install -e .``): smoothcache finds its entry point."""
    origins = {i.adapter.name: i.source for i in smoothcache.registry.REGISTRY.infos()}
    if "hunyuan-dit" not in origins:
        pytest.fail("smoothcache-hunyuandit is not installed: run `pip install -e .` here first")
    assert origins["hunyuan-dit"].startswith("smoothcache-hunyuandit ")
    pipe = tiny_pipeline()
    assert smoothcache.detect(pipe).name == "hunyuan-dit"
    base = sample(pipe)
    row = alternating_row(STEPS)
    with smoothcache.enabled(pipe, {"attn1": row, "ff": row}) as session:
        out = sample(pipe)
    assert session.stats.total_reused == 2 * LAYERS * row.count(0)
    assert not torch.equal(out, base)
