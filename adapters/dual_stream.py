"""Adapters for dual-stream MMDiTs with fused single-stream blocks: FLUX.1, Chroma and the
HunyuanVideo family (HunyuanVideo, its Framepack variant, HunyuanImage).

Both models run two block lists:

- ``transformer_blocks`` (double stream): joint attention ``attn`` over image and text tokens,
  returning ``(image, text)`` outputs with separate gates, then ``ff`` (image) and
  ``ff_context`` (text): kinds ``attn``, ``ff``, ``ff_context``;
- ``single_transformer_blocks`` (single stream, image and text tokens concatenated): attention
  (``attn``, without an output projection; a tuple in HunyuanVideo) and an MLP (``proj_mlp``,
  then the parameter-free ``act_mlp``) run side by side on one normalised input, and
  ``proj_out`` projects their concatenation before the gated residual add. That is one branch
  made of three modules: a *group* (see :class:`smoothcache.Branch`) led by ``proj_out``, with
  ``attn`` and ``proj_mlp`` as members, kind ``single``. At a skipped step none of the three
  runs; caching ``attn`` and ``proj_mlp`` apart would still run ``proj_out``, the largest Linear
  of the block, at every step.

The timestep source is the model itself (``timestep=``): the pipelines call it once per
evaluation. ``time_text_embed.time_proj`` is not a source: it embeds the timestep and, in the
guidance-distilled FLUX.1 [dev], the guidance too (twice per evaluation). Guidance: FLUX.1 [dev]
is guidance-distilled (one call per step); true CFG (``true_cfg_scale``) makes two calls per
step, each a pass with its own cache.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from smoothcache.adapter import Adapter, Branch, TimestepSource, argument, block_branches
from smoothcache.adapters.families import adaln_modulation
from smoothcache.engine import reused_output
from smoothcache.hookspecs import hookimpl

DOUBLE, SINGLE = "transformer_blocks", "single_transformer_blocks"


class DualStreamAdapter(Adapter):
    """Shared by FLUX.1 and HunyuanVideo; subclasses name the class and the timestep position."""

    kinds = ("attn", "ff", "ff_context", "single")
    timestep_position = 0

    def matches(self, model: nn.Module) -> bool:
        double, single = getattr(model, DOUBLE, None), getattr(model, SINGLE, None)
        return (
            super().matches(model)
            and isinstance(double, nn.ModuleList)
            and isinstance(single, nn.ModuleList)
            and all(hasattr(b, "proj_out") and hasattr(b, "proj_mlp") for b in single)
        )

    def branches(self, model: nn.Module) -> list[Branch]:
        found = block_branches(model, DOUBLE, ("attn", "ff", "ff_context"))
        for i in range(len(getattr(model, SINGLE))):
            leader = f"{SINGLE}.{i}.proj_out"
            found += [
                Branch(f"{SINGLE}.{i}.attn", "single", i, leader=leader),
                Branch(f"{SINGLE}.{i}.proj_mlp", "single", i, leader=leader),
                Branch(leader, "single", i),
            ]
        return found

    def timestep_source(self, model: nn.Module) -> TimestepSource:
        return TimestepSource("", argument("timestep", self.timestep_position))


class FluxAdapter(DualStreamAdapter):
    """FLUX.1 [dev] / [schnell] / Kontext (``FluxTransformer2DModel``).

    Fast path: a single-stream block whose group is skipped computes only its gate (one Linear
    on the time embedding) and the residual add: no LayerNorm, modulation, MLP input, stand-ins
    for the members or concatenation (:func:`flux_single_forward`).
    """

    name = "flux"
    model_classes = ("FluxTransformer2DModel",)
    timestep_position = 3  # hidden_states, encoder_hidden_states, pooled_projections, timestep

    def fast_forwards(self, model: nn.Module) -> dict[str, Callable[..., Any]]:
        return {
            f"{SINGLE}.{i}": flux_single_forward
            for i, block in enumerate(getattr(model, SINGLE))
            if type(block).__name__ == "FluxSingleTransformerBlock"
            and type(getattr(block, "norm", None)).__name__ == "AdaLayerNormZeroSingle"
        }


def flux_single_forward(
    block: nn.Module,
    hidden_states: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    temb: torch.Tensor,
    image_rotary_emb: Any = None,
    joint_attention_kwargs: dict[str, Any] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``FluxSingleTransformerBlock.forward`` that asks for the group's output first."""
    text_seq_len = encoder_hidden_states.shape[1]
    hidden_states = torch.cat([encoder_hidden_states, hidden_states], dim=1)
    residual = hidden_states
    projected = reused_output(
        block.proj_out, torch.Size((*residual.shape[:-1], block.proj_out.in_features))
    )
    if projected is None:
        norm_hidden_states, gate = block.norm(hidden_states, emb=temb)
        mlp_hidden_states = block.act_mlp(block.proj_mlp(norm_hidden_states))
        attn_output = block.attn(
            hidden_states=norm_hidden_states,
            image_rotary_emb=image_rotary_emb,
            **(joint_attention_kwargs or {}),
        )
        projected = block.proj_out(torch.cat([attn_output, mlp_hidden_states], dim=2))
    else:  # the gate is the third chunk of the norm's modulation (AdaLayerNormZeroSingle)
        gate = adaln_modulation(block.norm, temb, 3)[2]
    hidden_states = residual + gate.unsqueeze(1) * projected
    if hidden_states.dtype == torch.float16:
        hidden_states = hidden_states.clip(-65504, 65504)
    return hidden_states[:, :text_seq_len], hidden_states[:, text_seq_len:]


class ChromaAdapter(DualStreamAdapter):
    """Chroma (``ChromaTransformer2DModel``): FLUX.1 [schnell]'s blocks, pruned modulation."""

    name = "chroma"
    model_classes = ("ChromaTransformer2DModel",)
    timestep_position = 2  # hidden_states, encoder_hidden_states, timestep


class HunyuanVideoAdapter(DualStreamAdapter):
    """HunyuanVideo, HunyuanVideo Framepack and HunyuanImage: the same two block lists."""

    name = "hunyuan-video"
    model_classes = (
        "HunyuanVideoTransformer3DModel",
        "HunyuanVideoFramepackTransformer3DModel",
        "HunyuanImageTransformer2DModel",
    )
    timestep_position = 1  # hidden_states, timestep, ...


@hookimpl
def smoothcache_adapters() -> list[Adapter]:
    """The FLUX.1, Chroma and HunyuanVideo adapters."""
    return [FluxAdapter(), ChromaAdapter(), HunyuanVideoAdapter()]
