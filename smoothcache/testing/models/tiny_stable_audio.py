"""Tiny Stable Audio models for tests: diffusers' pipeline parts and stable-audio-tools' DiT.

Facts about diffusers (0.42.1) that the tests rely on:

* ``StableAudioPipeline`` calls ``self.transformer(latents, t.unsqueeze(0),
  encoder_hidden_states=..., global_hidden_states=..., rotary_embedding=...)`` once per step
  through ``__call__``: the timestep is positional, a float tensor of shape (1,) for the whole
  batch, and under guidance the batch is [uncond, cond].
* With ``prompt_embeds`` (and ``negative_prompt_embeds``) given, no tokenizer or text encoder is
  touched; the projection model still maps text features and the start/end seconds to the
  conditioning width. The pipeline class needs ``transformers`` installed (its type hints).
* ``output_type="latent"`` returns the final latents without decoding.
* The transformer's ``global_states_input_dim`` must be twice the projection's
  ``conditioning_dim`` (start and end seconds are concatenated), ``cross_attention_input_dim``
  equal to it, and the VAE's ``decoder_input_channels`` equal to the transformer's channels.

Facts about stable-audio-tools (0.0.19) that the tests rely on:

* ``DiffusionTransformer.forward(x, t, cross_attn_cond=..., cfg_scale=..., cfg_interval=(lo, hi),
  ...)`` runs guidance itself: when ``cfg_scale != 1`` and ``lo <= sigma[0] <= hi`` it calls
  ``_forward`` once on the doubled batch [cond, uncond]; otherwise once on the plain batch.
  ``sigma`` is ``t`` for ``diffusion_objective="rectified_flow"`` and ``sin(t * pi / 2)`` for
  ``"v"``.
* Its samplers call the model as ``model(x, t * ones(B), **conditioning)``; the rectified-flow
  Euler sampler walks ``t`` from 1 down to 0 in ``steps`` equal steps.
* ``zero_init_branch_outputs=True`` (the default) zeroes every branch's output layer, and the
  DiT zeroes its pre/post 1x1 convolutions; tests re-randomise them.
* Rotary embeddings use ``max(dim_heads // 2, 32)`` features, so a head needs at least 32 dims.
* Importing ``stable_audio_tools.models.dit`` needs only ``einops`` beyond torch, numpy,
  ``packaging``, ``safetensors`` and ``huggingface_hub`` (see requirements-sat.txt); it prints
  a notice when ``flash_attn`` is missing.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
from diffusers import (
    AutoencoderOobleck,
    EDMDPMSolverMultistepScheduler,
    StableAudioDiTModel,
    StableAudioPipeline,
    StableAudioProjectionModel,
)
from torch import nn

from smoothcache.testing.models.random_init import randomize_

TEXT_DIM = 12
TEXT_TOKENS = 4
CONDITIONING_DIM = 8
#: Standard deviation of the random weights. With the default 0.05 each tiny layer shrinks its
#: input, the branch outputs barely depend on the latents and reusing a cross-attention output
#: changes the result only at float-rounding level; these make every branch's reuse move the
#: output by 1e-2 relative or more.
DIFFUSERS_WEIGHT_STD = 0.3
SAT_WEIGHT_STD = 0.2


def tiny_stable_audio_transformer(seed: int = 0, num_layers: int = 2) -> StableAudioDiTModel:
    """A tiny ``StableAudioDiTModel`` (2 heads x 8 dims, 4 channels x 8 latent frames), eval mode.

    Every parameter is re-randomised with :func:`randomize_` at :data:`DIFFUSERS_WEIGHT_STD`.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = StableAudioDiTModel(
            sample_size=8,
            in_channels=4,
            num_layers=num_layers,
            attention_head_dim=8,
            num_attention_heads=2,
            num_key_value_attention_heads=1,
            out_channels=4,
            cross_attention_dim=16,
            time_proj_dim=16,
            global_states_input_dim=2 * CONDITIONING_DIM,
            cross_attention_input_dim=CONDITIONING_DIM,
        )
    randomize_(model, seed=seed, std=DIFFUSERS_WEIGHT_STD)
    return model.eval()


def tiny_stable_audio_pipeline(seed: int = 0) -> StableAudioPipeline:
    """A ``StableAudioPipeline`` of tiny parts and no text encoder or tokenizer.

    The scheduler is ``EDMDPMSolverMultistepScheduler`` (the type the pipeline declares) with
    Stable Audio Open's settings (v-prediction, sigma_data 1, exponential sigmas from 0.3 to
    500, order 2): the ``CosineDPMSolverMultistepScheduler`` of the released model needs
    ``torchsde``, and either gives one float timestep per step. The progress bar is disabled.
    """
    transformer = tiny_stable_audio_transformer(seed=seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = AutoencoderOobleck(
            encoder_hidden_size=6,
            downsampling_ratios=[1, 2],
            decoder_channels=3,
            decoder_input_channels=4,
            audio_channels=2,
            channel_multiples=[2, 4],
            sampling_rate=4,
        )
        projection = StableAudioProjectionModel(
            text_encoder_dim=TEXT_DIM, conditioning_dim=CONDITIONING_DIM, min_value=0, max_value=32
        )
    scheduler = EDMDPMSolverMultistepScheduler(
        sigma_min=0.3,
        sigma_max=500.0,
        sigma_data=1.0,
        sigma_schedule="exponential",
        prediction_type="v_prediction",
        solver_order=2,
    )
    pipe = StableAudioPipeline(
        vae=vae.eval(),
        text_encoder=None,
        projection_model=randomize_(projection, seed=seed, std=DIFFUSERS_WEIGHT_STD).eval(),
        tokenizer=None,
        transformer=transformer,
        scheduler=scheduler,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def stable_audio_latents(
    pipe: StableAudioPipeline,
    num_steps: int,
    guidance_scale: float = 7.0,
    batch: int = 1,
    seed: int = 0,
) -> torch.Tensor:
    """Run ``pipe`` on random text features (cond and negative) and return its final latents."""
    gen = torch.Generator().manual_seed(seed)
    shape = (batch, TEXT_TOKENS, TEXT_DIM)
    return pipe(
        prompt_embeds=torch.randn(shape, generator=gen),
        negative_prompt_embeds=torch.randn(shape, generator=gen),
        audio_end_in_s=3.0,
        num_inference_steps=num_steps,
        guidance_scale=guidance_scale,
        generator=torch.Generator().manual_seed(seed),
        output_type="latent",
    ).audios


# ---------------------------------------------------------------------------------------------
# stable-audio-tools
# ---------------------------------------------------------------------------------------------


def tiny_sat_dit(seed: int = 0, depth: int = 2) -> nn.Module:
    """A tiny stable-audio-tools ``DiffusionTransformer`` (rectified flow, 2 heads x 32 dims).

    4 I/O channels, cross-attention to 8-dim condition tokens, continuous transformer. Every
    parameter (the zero-initialised branch outputs and 1x1 convolutions included) is
    re-randomised with :func:`randomize_` at :data:`SAT_WEIGHT_STD`. Needs stable-audio-tools
    (requirements-sat.txt).
    """
    from stable_audio_tools.models.dit import DiffusionTransformer

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DiffusionTransformer(
            io_channels=4,
            embed_dim=64,
            depth=depth,
            num_heads=2,
            cond_token_dim=8,
            transformer_type="continuous_transformer",
            diffusion_objective="rectified_flow",
        )
    randomize_(model, seed=seed, std=SAT_WEIGHT_STD)
    return model.eval()


@torch.no_grad()
def sat_euler_sample(
    model: nn.Module,
    num_steps: int,
    cfg_scale: float = 6.0,
    cfg_interval: tuple[float, float] = (0.0, 1.0),
    batch: int = 1,
    length: int = 8,
    seed: int = 0,
    **kwargs: Any,
) -> torch.Tensor:
    """Sample like stable-audio-tools' ``sample_discrete_euler`` (rectified flow).

    One ``model(x, t * ones(B), cross_attn_cond=..., cfg_scale=..., cfg_interval=...)`` call per
    step with ``t`` going from 1 to 0; guidance happens inside the model. ``model`` may be the
    ``DiffusionTransformer`` or a wrapper with the same call signature.
    """
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 4, length, generator=gen)
    cond = torch.randn(batch, 3, 8, generator=gen)
    t = torch.linspace(1, 0, num_steps + 1)
    for t_curr, t_prev in itertools.pairwise(t):
        v = model(
            x,
            t_curr * torch.ones(batch),
            cross_attn_cond=cond,
            cfg_scale=cfg_scale,
            cfg_interval=cfg_interval,
            **kwargs,
        )
        x = x + (t_prev - t_curr) * v
    return x


def guided_steps(num_steps: int, cfg_interval: tuple[float, float]) -> list[bool]:
    """Which steps of :func:`sat_euler_sample` run guidance (a doubled batch) in the model."""
    t = torch.linspace(1, 0, num_steps + 1)[:-1]
    return [bool(cfg_interval[0] <= float(s) <= cfg_interval[1]) for s in t]
