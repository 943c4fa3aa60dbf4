"""Tiny diffusers DiT models for tests: a ``DiTTransformer2DModel`` and a ``DiTPipeline``.

Facts about diffusers (0.42.1) that tests rely on:

* ``DiTPipeline.__call__`` calls ``self.transformer(latents, timestep=t, class_labels=labels)``
  exactly once per denoising step (through ``__call__``, so module hooks fire), with a 1-D
  int64 ``timestep`` of the batch's length (the scheduler's 0-d step expanded). With
  ``guidance_scale > 1`` the batch is [cond, uncond] (2 x len(class_labels)) and the null
  label is hard-coded to 1000, whatever ``num_embeds_ada_norm`` is, so the transformer needs
  ``num_embeds_ada_norm=1000`` (1001 embedding rows). ``guidance_scale <= 1`` disables CFG.
* The latent size is ``transformer.config.sample_size`` and its channel count
  ``transformer.config.in_channels``; the pipeline has no ``vae_scale_factor`` and never
  encodes, the VAE only decodes the final latents.
* Unlike the original DiT, every ``BasicTransformerBlock`` owns its own timestep/label
  embedder (``transformer_blocks[i].norm1.emb``), and the output head calls
  ``transformer_blocks[0].norm1.emb(...)`` a second time, so block 0's timestep embedder runs
  twice per transformer call. Nothing to do about it; just do not count its calls as steps.
* There is no ``output_type="latent"``: every output type decodes with the VAE, and any value
  other than ``"pt"`` (``"latent"`` included) silently goes down the numpy path, returning
  decoded images exactly like ``"np"``. Decoded images are ``clamp((x / 2 + 0.5), 0, 1)``,
  which can hide differences. For the most direct comparison of the transformer's effect use
  :func:`dit_pipeline_latents` (the final latents handed to the VAE); otherwise prefer
  ``output_type="pt"`` (a float tensor, no numpy round trip).
* ``DDIMScheduler`` defaults to ``clip_sample=True``, which clamps the predicted x0 to [-1, 1]
  and would mask the transformer's effect; the tiny pipeline sets ``clip_sample=False``.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import AutoencoderKL, DDIMScheduler, DiTPipeline, DiTTransformer2DModel

from smoothcache.testing.models.random_init import randomize_


def tiny_dit_transformer(
    seed: int = 0,
    num_layers: int = 2,
    sample_size: int = 8,
    in_channels: int = 4,
    num_embeds_ada_norm: int = 1000,
) -> DiTTransformer2DModel:
    """A tiny ``DiTTransformer2DModel`` (2 heads x 8 dims, patch 2, learned sigma), eval mode.

    Every parameter is re-randomised with :func:`randomize_` (seeded by ``seed``), so no
    adaLN-Zero gate or output projection is zero.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DiTTransformer2DModel(
            num_attention_heads=2,
            attention_head_dim=8,
            in_channels=in_channels,
            out_channels=in_channels * 2,
            num_layers=num_layers,
            sample_size=sample_size,
            patch_size=2,
            num_embeds_ada_norm=num_embeds_ada_norm,
            norm_type="ada_norm_zero",
        )
    randomize_(model, seed=seed)
    return model.eval()


def tiny_vae(seed: int = 0) -> AutoencoderKL:
    """A tiny ``AutoencoderKL``: 4 latent channels, no downsampling (8x8 latent -> 8x8 image)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",),
            up_block_types=("UpDecoderBlock2D",),
            block_out_channels=(8,),
            layers_per_block=1,
            latent_channels=4,
            norm_num_groups=4,
            sample_size=8,
        )
    return vae.eval()


def tiny_dit_pipeline(seed: int = 0, num_layers: int = 2) -> DiTPipeline:
    """A ``DiTPipeline`` of a tiny transformer (8x8x4 latents), a tiny VAE and a DDIM scheduler.

    The scheduler has 1000 training steps, a linear beta schedule and ``clip_sample=False``;
    the progress bar is disabled.
    """
    transformer = tiny_dit_transformer(seed=seed, num_layers=num_layers)
    scheduler = DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.0001,
        beta_end=0.02,
        beta_schedule="linear",
        clip_sample=False,
    )
    pipe = DiTPipeline(transformer=transformer, vae=tiny_vae(seed=seed), scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def dit_pipeline_latents(pipe: DiTPipeline, **call_kwargs: Any) -> torch.Tensor:
    """Run ``pipe(**call_kwargs)`` and return its final latents, bit-exact, before VAE decoding.

    Records the last ``scheduler.step(...).prev_sample`` and keeps its first
    ``len(class_labels)`` rows (the conditional half under guidance), exactly the tensor the
    pipeline rescales and decodes. ``class_labels`` must be passed as a keyword.
    """
    batch = len(call_kwargs["class_labels"])
    scheduler = pipe.scheduler
    original_step = scheduler.step
    last: list[torch.Tensor] = []

    def recording_step(*args: Any, **kwargs: Any) -> Any:
        out = original_step(*args, **kwargs)
        last[:] = [out.prev_sample if hasattr(out, "prev_sample") else out[0]]
        return out

    scheduler.step = recording_step
    try:
        pipe(**call_kwargs)
    finally:
        del scheduler.step  # drop the instance attribute; the class method shows through again
    if not last:
        raise RuntimeError("the pipeline never called scheduler.step")
    return last[0][:batch]
