"""Adapter for diffusers' ``DiTTransformer2DModel`` (directly or through ``DiTPipeline``).

Each ``BasicTransformerBlock`` in ``transformer_blocks`` has the residual branches ``attn1``,
``ff`` and, when the model has cross-attention, ``attn2``. The timestep source is the root:
pipelines call it through ``__call__`` with ``timestep=`` once per evaluation. The timestep
embedder inside block 0 is *not* a valid source: the output head calls it a second time.
"""

from __future__ import annotations

from torch import nn

from smoothcache.adapter import Adapter, Branch, TimestepSource, argument, class_names
from smoothcache.hookspecs import hookimpl


class DiffusersDiTAdapter(Adapter):
    """diffusers DiT: branch kinds ``attn1``, ``attn2`` (when present) and ``ff``."""

    name = "diffusers-dit"
    kinds = ("attn1", "attn2", "ff")

    def matches(self, model: nn.Module) -> bool:
        blocks = getattr(model, "transformer_blocks", None)
        return (
            "DiTTransformer2DModel" in class_names(model)
            and isinstance(blocks, nn.ModuleList)
            and all(isinstance(getattr(b, "attn1", None), nn.Module) for b in blocks)
        )

    def branches(self, model: nn.Module) -> list[Branch]:
        found = []
        for i, block in enumerate(model.transformer_blocks):
            for kind in self.kinds:
                if isinstance(getattr(block, kind, None), nn.Module):
                    found.append(Branch(path=f"transformer_blocks.{i}.{kind}", kind=kind, block=i))
        return found

    def timestep_source(self, model: nn.Module) -> TimestepSource:
        return TimestepSource(path="", read=argument("timestep", 1))


@hookimpl
def smoothcache_adapters() -> list[Adapter]:
    """The diffusers DiT adapter."""
    return [DiffusersDiTAdapter()]
