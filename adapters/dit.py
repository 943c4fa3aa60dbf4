"""Adapter for the original DiT (facebookresearch/DiT ``models.py``).

Structure: ``DiT`` with ``blocks`` of ``DiTBlock``, each with residual branches ``attn`` and
``mlp`` gated by adaLN. Sampling calls ``forward_with_cfg``, which calls ``self.forward``
directly, so hooks on the root never fire: the timestep source is ``t_embedder``, which
``forward`` calls exactly once with the timesteps as its first argument.
"""

from __future__ import annotations

from torch import nn

from smoothcache.adapter import Adapter, Branch, TimestepSource, argument, class_names, has_children
from smoothcache.hookspecs import hookimpl


class OriginalDiTAdapter(Adapter):
    """The original DiT: branch kinds ``attn`` and ``mlp``."""

    name = "dit"
    kinds = ("attn", "mlp")

    def matches(self, model: nn.Module) -> bool:
        if "DiT" not in class_names(model):
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


@hookimpl
def smoothcache_adapters() -> list[Adapter]:
    """The original-DiT adapter."""
    return [OriginalDiTAdapter()]
