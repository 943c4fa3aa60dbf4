"""Adapter for stable-audio-tools' ``DiffusionTransformer`` (Stable Audio Open, original code).

Structure: ``DiffusionTransformer.transformer`` is a ``ContinuousTransformer`` whose ``layers``
are ``TransformerBlock`` modules with the residual branches ``self_attn``, ``cross_attn`` (on
layers that cross-attend) and ``ff``; with adaLN global conditioning the ``self_attn`` and ``ff``
outputs are gated after the branch, so a reused output still gets the current step's gate.

Samplers call the model through its wrappers: ``ConditionedDiffusionModelWrapper.forward`` calls
``self.model(...)`` (a ``DiTWrapper``), whose forward calls ``self.model(x, t, ...)`` (the
``DiffusionTransformer``), both through ``__call__``; the unconditional ``DiffusionModelWrapper``
and ``DiTUncondWrapper`` do the same. :meth:`StableAudioToolsAdapter.root` unwraps them by
class name.

``DiffusionTransformer.forward`` runs guidance itself: inside ``cfg_interval`` it doubles the
batch to [cond, uncond] and calls the plain method ``_forward`` once; outside it calls
``_forward`` once on the plain batch. So the batch size of the branches changes between steps,
which the engine's input-shape guard handles (those reuse steps compute instead).

The timestep source is the root: one call per sampler step with ``t`` (shape (B,), floats in
[0, 1]) as its second argument, read before guidance doubles it. ``timestep_features`` is also
called once per evaluation today, but only because ``_forward`` runs once; the root is the entry
point the samplers use.

Inference only: ``ContinuousTransformer`` runs each layer through ``torch.utils.checkpoint``,
which under autograd recomputes the branches during backward.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

from torch import nn

from smoothcache.adapter import (
    Adapter,
    Branch,
    TimestepSource,
    argument,
    block_branches,
    class_names,
    has_children,
)
from smoothcache.hookspecs import hookimpl

#: Wrapper classes that hold the next module down as ``.model`` and call it through ``__call__``.
WRAPPERS = frozenset(
    {"ConditionedDiffusionModelWrapper", "DiffusionModelWrapper", "DiTWrapper", "DiTUncondWrapper"}
)


class StableAudioToolsAdapter(Adapter):
    """stable-audio-tools DiT: branch kinds ``self_attn``, ``cross_attn`` and ``ff``."""

    name = "stable-audio-tools"
    kinds = ("self_attn", "cross_attn", "ff")
    # diffusers' kinds for the same network (Stable Audio Open's DiT)
    kind_aliases = MappingProxyType({"attn1": "self_attn", "attn2": "cross_attn"})
    model_classes = ("DiffusionTransformer",)

    def root(self, obj: Any) -> nn.Module | None:
        """Unwrap the (conditioned or unconditional) model and DiT wrappers down to the DiT."""
        module = super().root(obj)
        while module is not None and class_names(module) & WRAPPERS:
            inner = getattr(module, "model", None)
            module = inner if isinstance(inner, nn.Module) else None
        return module

    def matches(self, model: nn.Module) -> bool:
        layers = getattr(getattr(model, "transformer", None), "layers", None)
        return (
            super().matches(model)
            and isinstance(layers, nn.ModuleList)
            and all(has_children(layer, "self_attn", "ff") for layer in layers)
        )

    def branches(self, model: nn.Module) -> list[Branch]:
        return block_branches(model, "transformer.layers", self.kinds)

    def timestep_source(self, model: nn.Module) -> TimestepSource:
        return TimestepSource(path="", read=argument("t", 1))


@hookimpl
def smoothcache_adapters() -> list[Adapter]:
    """The stable-audio-tools adapter."""
    return [StableAudioToolsAdapter()]
