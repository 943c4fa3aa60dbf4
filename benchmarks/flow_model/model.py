"""The flow-matching digits model: diffusers' ``FluxTransformer2DModel`` in ``FluxPipeline``.

A benchmark fixture, not part of the installed package (``README.md`` beside this file has the
recipe and why FLUX.1's class). The model is FLUX.1's transformer at a digits scale: 4
double-stream and 8 single-stream blocks, 4 heads x 24, no guidance embedding (classifier-free
guidance runs as FLUX's "true CFG", a second transformer call per step with the null prompt). A
class is a prompt: two learned prompt tokens and a pooled embedding per class, row 10 the null
prompt, all trained with the model and shipped beside it. An 8x8 digit is the "latent": one
channel, packed 2x2 by the pipeline into 16 tokens of 4 channels.

Sampling goes through the real ``FluxPipeline`` (no VAE, no text encoders: prompt embeddings are
passed, ``output_type="latent"``) with ``FlowMatchEulerDiscreteScheduler`` and FLUX.1-dev's
resolution-dependent shift, mapped so that this model's full resolution (16 tokens) gets the
shift FLUX.1-dev uses at its full resolution (4,096 tokens at 1024 x 1024): ``mu = 1.15``,
``shift = e^1.15 = 3.16``::

    from benchmarks.flow_model.model import load, sample   # from the repository root

    pipe = load()
    images = sample(pipe, labels, seed=0)                  # (N, 1, 8, 8) in [-1, 1]
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from diffusers import FluxPipeline, FluxTransformer2DModel

FOLDER = Path(__file__).resolve().parent
WEIGHTS = "transformer.safetensors"
EMBEDS = "class_embeds.safetensors"
NUM_CLASSES = 10
NULL_CLASS = 10
SIDE = 8  # pixels; the pipeline's height and width are SIDE x VAE_SCALE (8, its no-VAE default)
STEPS = 28
GUIDANCE = 1.5
#: FLUX.1-dev's scheduler config, with the sequence lengths scaled to this model: FLUX.1-dev
#: shifts by mu = 0.5 at 256 tokens (512 x 512) and 1.15 at 4,096 (1024 x 1024, its full
#: resolution); here 16 tokens are the full resolution and 1 token is 1/16 of it, as 256 tokens
#: are of 4,096.
SCHEDULER: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "shift": 3.0,
    "use_dynamic_shifting": True,
    "base_shift": 0.5,
    "max_shift": 1.15,
    "base_image_seq_len": 1,
    "max_image_seq_len": 16,
}
MODEL: dict[str, Any] = {
    "patch_size": 1,
    "in_channels": 4,
    "num_layers": 4,
    "num_single_layers": 8,
    "attention_head_dim": 24,
    "num_attention_heads": 4,
    "joint_attention_dim": 64,
    "pooled_projection_dim": 64,
    "guidance_embeds": False,
    "axes_dims_rope": [8, 8, 8],
}
PROMPT_TOKENS = 2
#: The library's branch kinds of FLUX.1's transformer (``adapters/dual_stream.py``).
KINDS = ("attn", "ff", "ff_context", "single")
#: The same branches for diffusers' TaylorSeer: a single-stream block is one group for the
#: library (attention, MLP and output projection skip together), so it is cached whole.
TAYLOR_IDENTIFIERS = (
    r"transformer_blocks\.\d+\.(attn|ff|ff_context)",
    r"single_transformer_blocks\.\d+",
)


def config(folder: str | Path = FOLDER) -> dict[str, Any]:
    """The ``config.json`` in ``folder``: model, scheduler, sampling and the training record."""
    return json.loads((Path(folder) / "config.json").read_text())


def build_transformer() -> FluxTransformer2DModel:
    """A fresh (random) transformer of this model's architecture."""
    from diffusers import FluxTransformer2DModel

    return FluxTransformer2DModel(**MODEL)


def make_scheduler() -> Any:
    """A ``FlowMatchEulerDiscreteScheduler`` with the (scaled) FLUX.1-dev config above."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(**SCHEDULER)


@functools.cache
def _undecorated_call() -> Any:
    """``FluxPipeline.__call__`` without its ``torch.no_grad`` decorator, read once, at the
    first :func:`load` (before other libraries' caches may wrap the class's method)."""
    from diffusers import FluxPipeline

    return FluxPipeline.__call__.__wrapped__


def load(folder: str | Path = FOLDER, device: str | torch.device = "cpu") -> FluxPipeline:
    """The trained model as a ``FluxPipeline``; the class embeddings ride on it as ``class_embeds``.

    No VAE, tokenizers or text encoders: the pipeline is called with prompt embeddings and
    returns latents. The transformer is in eval mode with its weights frozen.
    """
    from safetensors.torch import load_file

    folder = Path(folder)
    transformer = build_transformer()
    transformer.load_state_dict(load_file(str(folder / WEIGHTS)), strict=True)
    transformer = transformer.to(device).eval().requires_grad_(False)
    embeds = {k: v.to(device) for k, v in load_file(str(folder / EMBEDS)).items()}
    _undecorated_call()
    return _pipeline(transformer, embeds)


def _pipeline(transformer: torch.nn.Module, embeds: dict[str, torch.Tensor]) -> FluxPipeline:
    """A ``FluxPipeline`` of ``transformer`` alone, with the class prompts as ``class_embeds``."""
    from diffusers import FluxPipeline

    pipe = FluxPipeline(
        scheduler=make_scheduler(),
        vae=None,
        text_encoder=None,
        tokenizer=None,
        text_encoder_2=None,
        tokenizer_2=None,
        transformer=transformer,
    )
    pipe.set_progress_bar_config(disable=True)
    pipe.class_embeds = embeds
    return pipe


def with_transformer(pipe: FluxPipeline, transformer: torch.nn.Module) -> FluxPipeline:
    """A pipeline like ``pipe`` (same scheduler config and class prompts) around ``transformer``:
    a copy of the model that another library patched."""
    return _pipeline(transformer, pipe.class_embeds)


def branch_layers(transformer: torch.nn.Module) -> list[torch.nn.Module]:
    """One layer per branch, run only when that branch computes (for branch counting):
    each double-stream block's ``attn.to_q``, ``ff.net[0]`` and ``ff_context.net[0]``, and each
    single-stream block's ``attn.to_q``, for the block's one ``single`` group (attention, MLP
    and output projection, which the library skips together). A method that skips a single
    block's attention but runs its MLP (pyramid attention broadcast) is counted as skipping the
    whole group: in its favour."""
    layers = []
    for block in transformer.transformer_blocks:
        layers += [block.attn.to_q, block.ff.net[0], block.ff_context.net[0]]
    layers += [block.attn.to_q for block in transformer.single_transformer_blocks]
    return layers


def prompt_embeddings(
    pipe: FluxPipeline, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(prompt_embeds, pooled_prompt_embeds)`` for class ``labels`` (10 is the null prompt)."""
    return pipe.class_embeds["prompt_embeds"][labels], pipe.class_embeds["pooled_prompt_embeds"][
        labels
    ]


def initial_noise(count: int, seed: int) -> torch.Tensor:
    """The packed noise ``(count, 16, 4)`` that :func:`sample` starts from (CPU generator)."""
    from diffusers import FluxPipeline

    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(count, 1, SIDE, SIDE, generator=gen)
    return FluxPipeline._pack_latents(noise, count, 1, SIDE, SIDE)


def unpack(latents: torch.Tensor) -> torch.Tensor:
    """Packed ``(N, 16, 4)`` latents as ``(N, 1, 8, 8)`` images."""
    n = latents.shape[0]
    x = latents.view(n, SIDE // 2, SIDE // 2, 1, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(n, 1, SIDE, SIDE)


def sample(
    pipe: FluxPipeline,
    labels: Sequence[int] | torch.Tensor,
    *,
    seed: int = 0,
    num_steps: int = STEPS,
    guidance_scale: float = GUIDANCE,
    noise: torch.Tensor | None = None,
    keep_gradients: bool = False,
) -> torch.Tensor:
    """One digit per label through ``pipe(...)``, ``(N, 1, 8, 8)`` in [-1, 1].

    Classifier-free guidance is the pipeline's ``true_cfg_scale`` with the null prompt as the
    negative prompt (two transformer calls per step); a scale of 1 makes one call per step. The
    noise is drawn on the CPU from ``seed`` (or given, packed as :func:`initial_noise` makes it),
    so a seed gives the same samples on any device; sample ``i`` depends only on its own noise
    and label. ``keep_gradients`` runs the pipeline's undecorated ``__call__`` (the pipeline
    turns gradients off), for ``smoothcache.estimate_sensitivity``.
    """
    with torch.set_grad_enabled(keep_gradients):
        labels = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
        device = pipe.transformer.device
        n = len(labels)
        if noise is None:
            noise = initial_noise(n, seed)
        embeds, pooled = prompt_embeddings(pipe, labels.to(device))
        null = torch.full_like(labels, NULL_CLASS).to(device)
        neg, neg_pooled = prompt_embeddings(pipe, null)
        call = functools.partial(_undecorated_call(), pipe) if keep_gradients else pipe
        latents = call(
            prompt_embeds=embeds,
            pooled_prompt_embeds=pooled,
            negative_prompt_embeds=neg,
            negative_pooled_prompt_embeds=neg_pooled,
            true_cfg_scale=guidance_scale,
            height=SIDE * pipe.vae_scale_factor,
            width=SIDE * pipe.vae_scale_factor,
            num_inference_steps=num_steps,
            latents=noise.to(device),
            output_type="latent",
        ).images
        return unpack(latents).clamp(-1.0, 1.0)
