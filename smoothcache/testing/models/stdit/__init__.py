"""Tiny, structurally faithful stand-ins for Open-Sora's STDiT3 (1.2) and STDiT2 (1.1).

Open-Sora is not on the package index and its cross-attention needs xformers, so these are
written from scratch in plain torch, after ``opensora/models/stdit/stdit3.py`` (1.2),
``stdit2.py`` and ``opensora/models/layers/blocks.py``. Kept as in the originals, because
smoothcache's adapters depend on it: class and attribute names, the forward signatures of the
models and blocks, the residual math of the blocks (adaLN shift/scale before and gate after
``attn``, ``attn_temp`` and ``mlp``, per frame through ``t_mask_select`` when ``x_mask`` marks
conditioning frames; un-gated ``cross_attn``), ``t_embedder`` being called a second time
(timestep 0) when ``x_mask`` is given, and the zero initialisation (STDiT3's temporal
``attn.proj``, ``cross_attn.proj`` and ``mlp.fc2``; STDiT2's ``attn_temp.proj``,
``cross_attn.proj`` and final layer), which :func:`tiny_stdit3` and :func:`tiny_stdit2` undo.

Left out: xformers (cross-attention is ``scaled_dot_product_attention`` with the same
block-diagonal mask over the packed text tokens), flash attention, fused layer norms, sequence
parallelism, drop path, gradient checkpointing, training-time caption dropout and the
transformers ``PreTrainedModel`` base. The rotary embedding is a small interleaved RoPE like
``rotary_embedding_torch``'s.

The samplers reproduce how Open-Sora calls each model: :func:`rflow_sample` like 1.2's
``RFLOW.sample`` (``model(z_in, t, **model_args)`` through ``__call__``, guidance batched as
[cond, uncond], float timesteps in [0, 1000]) and :func:`iddpm_sample` like 1.1's IDDPM
``forward_with_cfg`` (``model.forward(...)`` called directly, so root hooks never fire).

Layers, blocks, models and samplers are one module each; the names tests use are here.
"""

from __future__ import annotations

from smoothcache.testing.models.stdit.blocks import STDiT2Block, STDiT3Block
from smoothcache.testing.models.stdit.models import (
    WEIGHT_STD,
    STDiT2,
    STDiT3,
    STDiTConfig,
    tiny_stdit2,
    tiny_stdit3,
)
from smoothcache.testing.models.stdit.sampling import forward_with_cfg, iddpm_sample, rflow_sample

__all__ = [
    "WEIGHT_STD",
    "STDiT2",
    "STDiT2Block",
    "STDiT3",
    "STDiT3Block",
    "STDiTConfig",
    "forward_with_cfg",
    "iddpm_sample",
    "rflow_sample",
    "tiny_stdit2",
    "tiny_stdit3",
]
