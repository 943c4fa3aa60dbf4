"""Adapter for diffusers' ``PixArtTransformer2DModel`` (PixArt-alpha and PixArt-Sigma).

Both PixArt generations use the same transformer class, directly or through
``PixArtAlphaPipeline`` / ``PixArtSigmaPipeline`` (one call per step, guidance batched as
[uncond, cond]). Each ``BasicTransformerBlock`` in ``transformer_blocks`` has the residual
branches ``attn1`` (self-attention), ``attn2`` (cross-attention to the text) and ``ff``.

The timestep source is ``adaln_single``: the model calls it exactly once per evaluation with the
raw timestep as its first argument, and it returns the adaLN modulation. That modulation is what
the blocks receive as their ``timestep`` argument, so the blocks' ``timestep`` is *not* the
timestep. Unlike the root, ``adaln_single`` also fires when a caller bypasses the root's
``__call__`` (a wrapper calling ``transformer.forward``).

Not supported: feed-forward chunking (``enable_forward_chunking``) calls ``ff`` once per chunk,
so one evaluation would store and reuse several different outputs in one slot.
"""

from __future__ import annotations

from torch import nn

from smoothcache.adapter import (
    Adapter,
    Branch,
    TimestepSource,
    argument,
    block_branches,
    has_children,
)
from smoothcache.hookspecs import hookimpl


class PixArtAdapter(Adapter):
    """PixArt-alpha / PixArt-Sigma: branch kinds ``attn1``, ``attn2`` (when present) and ``ff``."""

    name = "pixart"
    kinds = ("attn1", "attn2", "ff")
    model_classes = ("PixArtTransformer2DModel",)

    def matches(self, model: nn.Module) -> bool:
        blocks = getattr(model, "transformer_blocks", None)
        return (
            super().matches(model)
            and has_children(model, "adaln_single")
            and isinstance(blocks, nn.ModuleList)
            and all(has_children(b, "attn1", "ff") for b in blocks)
        )

    def branches(self, model: nn.Module) -> list[Branch]:
        return block_branches(model, "transformer_blocks", self.kinds)

    def timestep_source(self, model: nn.Module) -> TimestepSource:
        return TimestepSource(path="adaln_single", read=argument("timestep", 0))


@hookimpl
def smoothcache_adapters() -> list[Adapter]:
    """The PixArt adapter."""
    return [PixArtAdapter()]
