"""A smoothcache adapter for diffusers' ``HunyuanDiT2DModel`` (Hunyuan-DiT), shipped as a plugin.

Structure (diffusers 0.42): ``HunyuanDiT2DModel.blocks`` is a ``ModuleList`` of
``HunyuanDiTBlock``. Each block has three residual branches, none of them gated:

* ``attn1`` — self-attention on ``norm1(x, temb)`` (``AdaLayerNormShift``: the timestep enters
  as a shift of the normalised input), added to ``x``;
* ``attn2`` — cross-attention to the CLIP and T5 text tokens, on ``norm2(x)``, added to ``x``;
* ``ff`` — feed-forward on ``norm3(x)``, added to ``x``.

Blocks in the second half first merge a long skip connection (``skip_linear``) into ``x``; that
is not a branch and always runs. A reused ``attn1`` output keeps the time shift of the step it
was computed at, which is the approximation SmoothCache measures during calibration.

Timestep source: the root. ``HunyuanDiTPipeline`` (and its PAG and ControlNet variants) call
``self.transformer(latent_model_input, t_expand, ...)`` through ``__call__`` once per step, with
the timestep *positional*, a float tensor of shape (B,), and guidance batched as
[uncond, cond]. The root's forward embeds the timestep once (``time_extra_emb``).

Not a pitfall here: ``HunyuanDiTBlock`` stores a feed-forward chunk size
(``enable_forward_chunking``) but its forward never chunks, so ``ff`` runs once per call.
"""

from __future__ import annotations

from torch import nn

import smoothcache
from smoothcache.adapter import has_children

__version__ = "0.1.0"

KINDS = ("attn1", "attn2", "ff")


class HunyuanDiTAdapter(smoothcache.Adapter):
    """Hunyuan-DiT: branch kinds ``attn1``, ``attn2`` and ``ff`` in every block."""

    name = "hunyuan-dit"
    kinds = KINDS
    model_classes = ("HunyuanDiT2DModel",)

    def matches(self, model: nn.Module) -> bool:
        blocks = getattr(model, "blocks", None)
        return (
            super().matches(model)  # a class named in model_classes, found without importing it
            and has_children(model, "time_extra_emb")
            and isinstance(blocks, nn.ModuleList)
            and len(blocks) > 0
            and all(has_children(block, *KINDS) for block in blocks)
        )

    def branches(self, model: nn.Module) -> list[smoothcache.Branch]:
        return [
            smoothcache.Branch(path=f"blocks.{i}.{kind}", kind=kind, block=i)
            for i in range(len(model.blocks))
            for kind in KINDS
        ]

    def timestep_source(self, model: nn.Module) -> smoothcache.TimestepSource:
        return smoothcache.TimestepSource(path="", read=smoothcache.argument("timestep", 1))


@smoothcache.hookimpl
def smoothcache_adapters() -> list[smoothcache.Adapter]:
    """The plugin hook: the adapters this package adds to smoothcache."""
    return [HunyuanDiTAdapter()]
