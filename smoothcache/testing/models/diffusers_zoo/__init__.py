"""Tiny, randomly initialised diffusers transformers, each called the way its pipeline calls it.

Used by the coverage matrix: for every denoiser transformer class that the installed
``diffusers`` exports, :data:`ZOO` holds an :class:`Entry` that builds a tiny instance (1-2
blocks per block list, hidden sizes 16-64, a few dozen tokens, float32 on CPU, eval mode) and
says how to call it: the latent layout, the argument names, the conditioning inputs and how the
pipeline scales the timestep. :func:`run` is a deterministic toy sampler over an entry.
:data:`UNAVAILABLE` names every class that is not in the zoo and why. The entries are
written one section of model families per module (importing a section registers its
entries); :mod:`.entry` holds the plumbing they share.

Sources: constructor configs follow the tiny configs of diffusers' own model tests
(``tests/models/transformers``), shrunk where they were large; call conventions follow each
pipeline's ``__call__`` in the installed diffusers (0.42.x).

Initialisation: many diffusers models zero-initialise adaLN gates, output projections or
learnable position tables. After construction (``torch.manual_seed(0)`` first) every floating
parameter that is entirely zero is re-drawn (:func:`randomize_zeros_`; weight matrices with the
usual ``1/sqrt(fan_in)`` scale, vectors with std 0.1), so that no branch is a no-op. This is
deliberately *not* :func:`smoothcache.testing.models.random_init.randomize_`, which overwrites
every parameter (norm scales included) with N(0, 0.05) draws; keeping the default init of
non-zero parameters keeps activations at a healthy scale.

Timesteps: :func:`run` walks ``linspace(999, 1, num_steps)`` (values on the usual [0, 1000]
scale) and hands the model ``timestep_offset + timestep_scale * t`` with dtype
``timestep_dtype``, shaped ``(batch,)`` unless ``timestep_layout`` says otherwise. E.g. Flux and
Qwen-Image pipelines pass ``t / 1000``; Lumina2, Z-Image and Ideogram4 pass ``1 - t / 1000``;
DiT and PixArt pass int64 ``t``.
"""

from __future__ import annotations

from smoothcache.testing.models.diffusers_zoo import (  # noqa: F401 (importing registers)
    audio,
    images,
    images_more,
    newer,
    videos,
    videos_more,
)
from smoothcache.testing.models.diffusers_zoo.entry import (
    ENTRIES,
    NOT_IMPORTED,
    Entry,
    randomize_zeros_,
    run,
    timestep_tensor,
    transformer_classes,
)

__all__ = [
    "NOT_IMPORTED",
    "UNAVAILABLE",
    "ZOO",
    "Entry",
    "randomize_zeros_",
    "run",
    "timestep_tensor",
    "transformer_classes",
]


# --------------------------------------------------------------------------------------------
# Public tables


def _build_zoo() -> dict[str, Entry]:
    return {name: make() for name, make in sorted(ENTRIES.items())}


ZOO: dict[str, Entry] = _build_zoo()

_REASONS: dict[str, str] = {
    "PriorTransformer": "not a DiT denoiser: the unCLIP prior maps text embeddings to CLIP "
    "image embeddings",
    "T5FilmDecoder": "not a DiT denoiser: spectrogram decoder of the music (spectrogram "
    "diffusion) pipeline",
    "MiniMaxMusic3RVQDepthDecoder": "not a denoiser: autoregressive RVQ depth decoder of "
    "MiniMax Music 3",
    "Transformer2DModel": "generic UNet/VQ-diffusion building block (discrete VQ latents), no "
    "DiT pipeline",
    "DreamLiteTransformer2DModel": "UNet building block of DreamLite (spatial transformer "
    "inside a UNet)",
    "Cosmos3OmniTransformer": "omni-modal token model: forward takes packed token/vision index "
    "lists, not a latent",
    "RFD4ProteinaTransformer": "protein structure model (atom coordinates), not an "
    "image/video/audio latent",
    "AnyFlowFARTransformer3DModel": "not done yet: chunked autoregressive video with a KV cache "
    "(build_attention_mask, chunk_partition, forward returns (out, kv_cache))",
    "WanAnimate2Transformer3DModel": "not done yet: list-of-samples inputs with condition "
    "latents, a KV cache "
    "(kv_cache_mode) and 1280-dim CLIP image features",
    "Kandinsky6Transformer3DModel": "not done yet: joint audio+video model needing visual/audio "
    "rope positions "
    "and token type ids",
    "Kandinsky6SRTransformer3DModel": "not done yet: super-resolution model with NABLA sparse "
    "attention over "
    "tiles (tile_sizes); no tiny config worked out",
    "SanaWMTransformer3DModel": "not done yet: world model needing camera conditions / Plucker "
    "rays and chunked "
    "causal attention",
    "SanaWMLTX2RefinerTransformer3DModel": "not done yet: refiner needing precomputed "
    "video_rotary_emb and a KV cache",
}


def _unavailable() -> dict[str, str]:
    out = {}
    for name in transformer_classes():
        if name not in ZOO:
            out[name] = _REASONS.get(name, "not done yet")
    return out


UNAVAILABLE: dict[str, str] = _unavailable()
