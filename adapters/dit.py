"""Adapter for the original DiT (facebookresearch/DiT ``models.py``).

Structure: ``DiT`` with ``blocks`` of ``DiTBlock``, each with residual branches ``attn`` and
``mlp`` gated by adaLN. Sampling calls ``forward_with_cfg``, which calls ``self.forward``
directly, so hooks on the root never fire: the timestep source is ``t_embedder``, which
``forward`` calls exactly once with the timesteps as its first argument.
"""

from __future__ import annotations

from collections.abc import Callable
from types import MappingProxyType
from typing import Any

import torch
from torch import nn

from smoothcache.adapter import Adapter, Branch, TimestepSource, argument, has_children
from smoothcache.engine import reused_output
from smoothcache.hookspecs import hookimpl


class OriginalDiTAdapter(Adapter):
    """The original DiT: branch kinds ``attn`` and ``mlp``."""

    name = "dit"
    kinds = ("attn", "mlp")
    model_classes = ("DiT",)
    kind_aliases = MappingProxyType({"attn1": "attn", "ff": "mlp"})  # diffusers' DiT kinds

    def matches(self, model: nn.Module) -> bool:
        if not super().matches(model):
            return False
        if not (
            has_children(model, "t_embedder", "final_layer")
            and isinstance(getattr(model, "blocks", None), nn.ModuleList)
        ):
            return False
        return all(has_children(b, "attn", "mlp", "adaLN_modulation") for b in model.blocks)

    def branches(self, model: nn.Module) -> list[Branch]:
        return [
            Branch(path=f"blocks.{i}.{kind}", kind=kind, block=i)
            for i in range(len(model.blocks))
            for kind in self.kinds
        ]

    def timestep_source(self, model: nn.Module) -> TimestepSource:
        return TimestepSource(path="t_embedder", read=argument("t", 0))

    def fast_forwards(self, model: nn.Module) -> dict[str, Callable[..., Any]]:
        return {
            f"blocks.{i}": _block_forward
            for i, block in enumerate(model.blocks)
            if type(block).__name__ == "DiTBlock" and has_children(block, "norm1", "norm2")
        }


def _modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


def _block_forward(block: nn.Module, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """adaLN-Zero block: a reused branch skips its LayerNorm and modulation too."""
    shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = block.adaLN_modulation(
        c
    ).chunk(6, dim=1)
    out = reused_output(block.attn, x.shape)
    if out is None:
        out = block.attn(_modulate(block.norm1(x), shift_msa, scale_msa))
    x = x + gate_msa.unsqueeze(1) * out
    out = reused_output(block.mlp, x.shape)
    if out is None:
        out = block.mlp(_modulate(block.norm2(x), shift_mlp, scale_mlp))
    return x + gate_mlp.unsqueeze(1) * out


@hookimpl
def smoothcache_adapters() -> list[Adapter]:
    """The original-DiT adapter."""
    return [OriginalDiTAdapter()]
