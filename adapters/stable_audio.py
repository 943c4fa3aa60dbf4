"""Adapter for diffusers' ``StableAudioDiTModel`` (Stable Audio Open, ``StableAudioPipeline``).

Each ``StableAudioDiTBlock`` in ``transformer_blocks`` has three un-gated residual branches:
``attn1`` (self-attention), ``attn2`` (cross-attention to the text and duration embeddings) and
``ff``. ``StableAudioPipeline`` calls the transformer once per step through ``__call__``, with
guidance batched as [uncond, cond] and the timestep as the *positional* second argument: a float
tensor of shape (1,) (``t.unsqueeze(0)``), one value for the whole batch. The root is the
timestep source; its forward embeds the timestep once.
"""

from __future__ import annotations

from types import MappingProxyType

from torch import nn

from smoothcache.adapter import Adapter, Branch, TimestepSource, argument, has_children
from smoothcache.hookspecs import hookimpl


class DiffusersStableAudioAdapter(Adapter):
    """diffusers Stable Audio DiT: branch kinds ``attn1``, ``attn2`` and ``ff``."""

    name = "diffusers-stable-audio"
    kinds = ("attn1", "attn2", "ff")
    model_classes = ("StableAudioDiTModel",)
    # stable-audio-tools' kinds for the same network
    kind_aliases = MappingProxyType({"self_attn": "attn1", "cross_attn": "attn2"})

    def matches(self, model: nn.Module) -> bool:
        blocks = getattr(model, "transformer_blocks", None)
        return (
            super().matches(model)
            and isinstance(blocks, nn.ModuleList)
            and all(has_children(b, *self.kinds) for b in blocks)
        )

    def branches(self, model: nn.Module) -> list[Branch]:
        return [
            Branch(path=f"transformer_blocks.{i}.{kind}", kind=kind, block=i)
            for i in range(len(model.transformer_blocks))
            for kind in self.kinds
        ]

    def timestep_source(self, model: nn.Module) -> TimestepSource:
        return TimestepSource(path="", read=argument("timestep", 1))


@hookimpl
def smoothcache_adapters() -> list[Adapter]:
    """The diffusers Stable Audio adapter."""
    return [DiffusersStableAudioAdapter()]
