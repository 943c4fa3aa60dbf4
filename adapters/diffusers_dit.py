"""Adapter for diffusers' ``DiTTransformer2DModel`` (directly or through ``DiTPipeline``).

Each ``BasicTransformerBlock`` in ``transformer_blocks`` has the residual branches ``attn1``,
``ff`` and, when the model has cross-attention, ``attn2``. The timestep source is the root:
pipelines call it through ``__call__`` with ``timestep=`` once per evaluation. The timestep
embedder inside block 0 is *not* a valid source: the output head calls it a second time.
"""

from __future__ import annotations

from collections.abc import Callable
from types import MappingProxyType
from typing import Any

import torch
from torch import nn

from smoothcache.adapter import Adapter, Branch, TimestepSource, argument, block_branches
from smoothcache.engine import reused_output
from smoothcache.hookspecs import hookimpl


class DiffusersDiTAdapter(Adapter):
    """diffusers DiT: branch kinds ``attn1``, ``attn2`` (when present) and ``ff``."""

    name = "diffusers-dit"
    kinds = ("attn1", "attn2", "ff")
    model_classes = ("DiTTransformer2DModel",)
    kind_aliases = MappingProxyType({"attn": "attn1", "mlp": "ff"})  # the original DiT's kinds

    def matches(self, model: nn.Module) -> bool:
        blocks = getattr(model, "transformer_blocks", None)
        return (
            super().matches(model)
            and isinstance(blocks, nn.ModuleList)
            and all(isinstance(getattr(b, "attn1", None), nn.Module) for b in blocks)
        )

    def branches(self, model: nn.Module) -> list[Branch]:
        return block_branches(model, "transformer_blocks", self.kinds)

    def timestep_source(self, model: nn.Module) -> TimestepSource:
        return TimestepSource(path="", read=argument("timestep", 1))

    def fast_forwards(self, model: nn.Module) -> dict[str, Callable[..., Any]]:
        return {
            f"transformer_blocks.{i}": _block_forward
            for i, block in enumerate(model.transformer_blocks)
            if _plain_ada_norm_zero(block)
        }


def _plain_ada_norm_zero(block: nn.Module) -> bool:
    """The BasicTransformerBlock configuration DiT uses, which :func:`_block_forward` mirrors."""
    norm1 = getattr(block, "norm1", None)
    return (
        type(block).__name__ == "BasicTransformerBlock"
        and getattr(block, "norm_type", None) == "ada_norm_zero"
        and getattr(block, "attn2", True) is None
        and getattr(block, "pos_embed", True) is None
        and getattr(block, "_chunk_size", True) is None
        and not getattr(block, "only_cross_attention", True)
        and type(norm1).__name__ == "AdaLayerNormZero"
        and getattr(norm1, "emb", None) is not None
    )


def _block_forward(
    block: nn.Module,
    hidden_states: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    encoder_hidden_states: torch.Tensor | None = None,
    encoder_attention_mask: torch.Tensor | None = None,
    timestep: torch.Tensor | None = None,
    cross_attention_kwargs: dict[str, Any] | None = None,
    class_labels: torch.Tensor | None = None,
    added_cond_kwargs: dict[str, Any] | None = None,
) -> torch.Tensor:
    """DiT's ada_norm_zero block: a reused branch skips its LayerNorm and modulation too.

    Calls with masks or attention kwargs take the block's own forward unchanged.
    """
    if attention_mask is not None or cross_attention_kwargs or added_cond_kwargs:
        return block._sc_block_original(
            hidden_states,
            attention_mask=attention_mask,
            encoder_hidden_states=encoder_hidden_states,
            encoder_attention_mask=encoder_attention_mask,
            timestep=timestep,
            cross_attention_kwargs=cross_attention_kwargs,
            class_labels=class_labels,
            added_cond_kwargs=added_cond_kwargs,
        )
    norm1 = block.norm1
    emb = norm1.linear(
        norm1.silu(norm1.emb(timestep, class_labels, hidden_dtype=hidden_states.dtype))
    )
    shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = emb.chunk(6, dim=1)
    out = reused_output(block.attn1, hidden_states.shape)
    if out is None:
        normed = norm1.norm(hidden_states) * (1 + scale_msa[:, None]) + shift_msa[:, None]
        out = block.attn1(normed, encoder_hidden_states=None, attention_mask=None)
    hidden_states = gate_msa.unsqueeze(1) * out + hidden_states
    if hidden_states.ndim == 4:
        hidden_states = hidden_states.squeeze(1)
    out = reused_output(block.ff, hidden_states.shape)
    if out is None:
        normed = block.norm3(hidden_states) * (1 + scale_mlp[:, None]) + shift_mlp[:, None]
        out = block.ff(normed)
    hidden_states = gate_mlp.unsqueeze(1) * out + hidden_states
    if hidden_states.ndim == 4:
        hidden_states = hidden_states.squeeze(1)
    return hidden_states


@hookimpl
def smoothcache_adapters() -> list[Adapter]:
    """The diffusers DiT adapter."""
    return [DiffusersDiTAdapter()]
