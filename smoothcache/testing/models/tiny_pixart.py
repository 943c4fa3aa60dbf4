"""Tiny PixArt-alpha and PixArt-Sigma models and pipelines for tests, built from configs.

Facts about diffusers (0.42.1) that the tests rely on:

* ``PixArtAlphaPipeline`` and ``PixArtSigmaPipeline`` call ``self.transformer(latents,
  encoder_hidden_states=..., encoder_attention_mask=..., timestep=t, added_cond_kwargs=...)``
  once per step through ``__call__``; under guidance the batch is [uncond, cond] and ``t`` is
  the scheduler's step expanded to the batch (int64 for DDIM and DPM-Solver).
* ``PixArtTransformer2DModel.forward`` calls ``adaln_single(timestep, ...)`` exactly once and
  passes its output, the adaLN modulation, to every block as ``timestep``.
* ``tokenizer`` and ``text_encoder`` are optional components: with ``prompt_embeds``,
  ``prompt_attention_mask``, ``negative_prompt_embeds`` and ``negative_prompt_attention_mask``
  passed directly (and ``negative_prompt=None``; its default ``""`` is refused beside the
  embeddings) the pipelines never tokenize. The pipeline classes need ``transformers`` installed.
* ``use_resolution_binning`` (on by default) only accepts the real sample sizes; tiny
  transformers need ``use_resolution_binning=False``. ``output_type="latent"`` returns the final
  latents without decoding, the most direct view of the transformer's effect.
* ``sample_size == 128`` turns on the resolution/aspect-ratio micro-conditions; tiny models are
  far smaller, so ``added_cond_kwargs`` carries ``None`` values.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    PixArtAlphaPipeline,
    PixArtSigmaPipeline,
    PixArtTransformer2DModel,
)

from smoothcache.testing.models.random_init import randomize_
from smoothcache.testing.models.tiny_diffusers import tiny_vae

CAPTION_CHANNELS = 12
CAPTION_TOKENS = 5
#: Standard deviation of the random weights. With the default 0.05 the projected text is tiny,
#: attention over it is uniform and ``attn2`` returns the same output at every step, so reusing
#: it changes the latents only at float-rounding level (~1e-7 relative); with 0.2 every branch's
#: output changes between steps and each reuse moves the latents by ~1e-2 relative.
WEIGHT_STD = 0.2


def tiny_pixart_transformer(seed: int = 0, num_layers: int = 2) -> PixArtTransformer2DModel:
    """A tiny ``PixArtTransformer2DModel`` (2 heads x 8 dims, patch 2, 8x8x4 latents), eval mode.

    Learned sigma (8 output channels), captions of ``CAPTION_CHANNELS`` features projected to
    the hidden size. Every parameter is re-randomised with :func:`randomize_` at
    :data:`WEIGHT_STD`.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = PixArtTransformer2DModel(
            num_attention_heads=2,
            attention_head_dim=8,
            in_channels=4,
            out_channels=8,
            num_layers=num_layers,
            cross_attention_dim=16,
            sample_size=8,
            patch_size=2,
            caption_channels=CAPTION_CHANNELS,
            norm_type="ada_norm_single",
            num_embeds_ada_norm=1000,
        )
    randomize_(model, seed=seed, std=WEIGHT_STD)
    return model.eval()


def tiny_pixart_pipeline(
    version: Literal["alpha", "sigma"] = "alpha", seed: int = 0
) -> PixArtAlphaPipeline | PixArtSigmaPipeline:
    """A PixArt-alpha (DDIM) or PixArt-Sigma (DPM-Solver++) pipeline of tiny parts, no text encoder.

    Both schedulers use 1000 training steps and a linear beta schedule; DDIM does not clip.
    The progress bar is disabled.
    """
    transformer = tiny_pixart_transformer(seed=seed)
    betas = {"beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear"}
    if version == "alpha":
        scheduler: Any = DDIMScheduler(num_train_timesteps=1000, clip_sample=False, **betas)
        cls: Any = PixArtAlphaPipeline
    else:
        scheduler = DPMSolverMultistepScheduler(num_train_timesteps=1000, **betas)
        cls = PixArtSigmaPipeline
    pipe = cls(
        tokenizer=None,
        text_encoder=None,
        vae=tiny_vae(seed=seed),
        transformer=transformer,
        scheduler=scheduler,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def pixart_prompt(batch: int = 1, seed: int = 0) -> dict[str, torch.Tensor | None]:
    """Random caption embeddings and masks for a PixArt pipeline call (cond and negative).

    The conditional mask hides the last token, so the masked cross-attention path runs;
    ``negative_prompt`` is ``None`` because the pipeline refuses it beside the embeddings.
    """
    gen = torch.Generator().manual_seed(seed)
    shape = (batch, CAPTION_TOKENS, CAPTION_CHANNELS)
    mask = torch.ones(batch, CAPTION_TOKENS, dtype=torch.long)
    mask[:, -1] = 0
    return {
        "negative_prompt": None,
        "prompt_embeds": torch.randn(shape, generator=gen),
        "prompt_attention_mask": mask,
        "negative_prompt_embeds": torch.randn(shape, generator=gen),
        "negative_prompt_attention_mask": torch.ones(batch, CAPTION_TOKENS, dtype=torch.long),
    }


def pixart_latents(
    pipe: PixArtAlphaPipeline | PixArtSigmaPipeline,
    num_steps: int,
    guidance_scale: float = 4.5,
    batch: int = 1,
    seed: int = 0,
) -> torch.Tensor:
    """Run ``pipe`` on :func:`pixart_prompt` embeddings and return its final latents."""
    return pipe(
        **pixart_prompt(batch=batch, seed=seed),
        num_inference_steps=num_steps,
        guidance_scale=guidance_scale,
        generator=torch.Generator().manual_seed(seed),
        use_resolution_binning=False,
        output_type="latent",
    ).images
