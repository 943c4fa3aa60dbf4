"""Specific adapters for the diffusers DiT families whose blocks need nothing but naming.

Each family is a row of :data:`FAMILIES`: the transformer class, its block lists, the branch
children of each list with the schedule kind each gets, and the position of ``timestep`` in the
model's forward (the pipelines call the model once per evaluation with it). Compared with the
structural ``diffusers-generic`` adapter, a family adapter matches by class (so it wins
detection), checks the structure it expects, and names kinds for the model rather than for the
heuristic (FLUX.2's fused single-stream attention is ``single``; Lumina2's text and noise
refiners are kinds of their own).

Fast paths: Wan (:mod:`smoothcache.adapters.wan`) and CogVideoX (their blocks' LayerNorms and
modulations skipped for a reused branch).
Not yet for the others: in these blocks a branch's input preparation is fused into the adaLN
normalisation module, whose other outputs (the gates, the MLP's shift and scale) are needed at
reuse steps too, so a fast path saves only the LayerNorm and modulation. The upper bound of that
is counted in ``benchmarks/fast_path_ops.py`` (docs/performance.md): 1-2% of the ops for FLUX.2,
Sana and Qwen-Image, 14-35% for SD3, Lumina2 and CogVideoX (mostly the gates' Linear), where a
measured fast path is the next step.

Facts per family (diffusers 0.42.1):

- **Wan 2.1 / 2.2** (``WanTransformer3DModel``): ``attn1`` (gated), ``attn2`` over the text (no
  gate), ``ffn`` (gated); guidance as two calls per step; Wan 2.2 A14B's second expert
  (``transformer_2``) is cached under the same schedule and clock by the engine.
- **CogView4**, **GLM-Image**: joint attention ``attn1``, then the *same* ``ff`` module called
  twice, on the image and on the text tokens. One cached output cannot stand for two calls, so
  only the attention is a branch (the structural adapter, which takes ``ff``, is refused there
  by the engine).
- **SD3 / SD3.5** (``SD3Transformer2DModel``): joint attention ``attn`` returns (image, text);
  ``attn2`` only in SD3.5's dual-attention blocks; the last block is ``context_pre_only`` (no
  ``ff_context``). Skip-layer guidance is a third call at some steps that skips chosen blocks.
- **FLUX.2** (``Flux2Transformer2DModel``): its single-stream block fuses attention and MLP inside
  one ``attn`` module, so that module is the whole branch (kind ``single``); modulation is
  computed once at the model level.
- **HunyuanVideo 1.5**, **CogVideoX**, **LTX-Video**, **Sana**, **HunyuanDiT**: one block list;
  Sana's ``ff`` is convolutional, LTX's and Sana's ``attn2`` has no gate, HunyuanDiT has no gates
  and long skip connections (caching is still per branch output).
- **Qwen-Image**: image and text MLPs ``img_mlp`` / ``txt_mlp`` around joint attention ``attn``.
- **Lumina2**: ``layers`` (kinds ``attn``, ``feed_forward``), ``noise_refiner`` and
  ``context_refiner`` (text only, no timestep: the same output at every step, so caching it is
  exact). CFG truncation drops the second call after a ratio of the steps.
- **LTX-2** (``LTX2VideoTransformer3DModel``): video and audio streams with cross-modal attention.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from smoothcache.adapter import Adapter, Branch, TimestepSource, argument
from smoothcache.adapters.wan import wan_block_forward
from smoothcache.engine import reused_output
from smoothcache.hookspecs import hookimpl


@dataclass(frozen=True)
class Family:
    """One DiT family: ``lists`` maps each block list to {branch child: schedule kind}."""

    name: str
    model_class: str
    lists: Mapping[str, Mapping[str, str]]
    timestep_position: int
    priority: int = 0
    #: (block class name, block forward) for the blocks of the first list that have one
    fast: tuple[str, Callable[..., Any]] | None = None


def _gates(norm: nn.Module, temb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The image and text gates of a ``CogVideoXLayerNormZero``, without its LayerNorms."""
    _, _, gate, _, _, enc_gate = norm.linear(norm.silu(temb)).chunk(6, dim=1)
    return gate[:, None, :], enc_gate[:, None, :]


def cogvideox_block_forward(
    block: nn.Module,
    hidden_states: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    temb: torch.Tensor,
    image_rotary_emb: Any = None,
    attention_kwargs: dict[str, Any] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``CogVideoXBlock.forward`` that asks for each branch's output first: a reused branch
    skips its two LayerNorms and modulations (and, for ``ff``, the concatenation)."""
    text_seq_length = encoder_hidden_states.size(1)
    attention = reused_output(block.attn1, hidden_states.shape)
    if attention is None:
        norm_hidden, norm_text, gate, text_gate = block.norm1(
            hidden_states, encoder_hidden_states, temb
        )
        attention = block.attn1(
            hidden_states=norm_hidden,
            encoder_hidden_states=norm_text,
            image_rotary_emb=image_rotary_emb,
            **(attention_kwargs or {}),
        )
    else:
        gate, text_gate = _gates(block.norm1, temb)
    hidden_states = hidden_states + gate * attention[0]
    encoder_hidden_states = encoder_hidden_states + text_gate * attention[1]

    batch, tokens, width = hidden_states.shape
    ff_output = reused_output(block.ff, torch.Size((batch, text_seq_length + tokens, width)))
    if ff_output is None:
        norm_hidden, norm_text, gate, text_gate = block.norm2(
            hidden_states, encoder_hidden_states, temb
        )
        ff_output = block.ff(torch.cat([norm_text, norm_hidden], dim=1))
    else:
        gate, text_gate = _gates(block.norm2, temb)
    hidden_states = hidden_states + gate * ff_output[:, text_seq_length:]
    encoder_hidden_states = encoder_hidden_states + text_gate * ff_output[:, :text_seq_length]
    return hidden_states, encoder_hidden_states


def _same(*children: str) -> dict[str, str]:
    return {child: child for child in children}


FAMILIES = (
    Family("sd3", "SD3Transformer2DModel",
           {"transformer_blocks": _same("attn", "attn2", "ff", "ff_context")}, 3),
    Family("flux2", "Flux2Transformer2DModel",
           {"transformer_blocks": _same("attn", "ff", "ff_context"),
            "single_transformer_blocks": {"attn": "single"}}, 2),
    Family("hunyuan-video-1.5", "HunyuanVideo15Transformer3DModel",
           {"transformer_blocks": _same("attn", "ff", "ff_context")}, 1),
    Family("wan", "WanTransformer3DModel", {"blocks": _same("attn1", "attn2", "ffn")}, 1,
           fast=("WanTransformerBlock", wan_block_forward)),
    Family("cogview4", "CogView4Transformer2DModel", {"transformer_blocks": _same("attn1")}, 2),
    Family("glm-image", "GlmImageTransformer2DModel", {"transformer_blocks": _same("attn1")}, 4),
    Family("cogvideox", "CogVideoXTransformer3DModel",
           {"transformer_blocks": _same("attn1", "ff")}, 2,
           fast=("CogVideoXBlock", cogvideox_block_forward)),
    Family("ltx-video", "LTXVideoTransformer3DModel",
           {"transformer_blocks": _same("attn1", "attn2", "ff")}, 2),
    Family("ltx2", "LTX2VideoTransformer3DModel",
           {"transformer_blocks": _same(
               "attn1", "audio_attn1", "attn2", "audio_attn2", "audio_to_video_attn",
               "video_to_audio_attn", "ff", "audio_ff")}, 4),
    Family("qwen-image", "QwenImageTransformer2DModel",
           {"transformer_blocks": _same("attn", "img_mlp", "txt_mlp")}, 3),
    Family("sana", "SanaTransformer2DModel",
           {"transformer_blocks": _same("attn1", "attn2", "ff")}, 2),
    Family("lumina2", "Lumina2Transformer2DModel",
           {"noise_refiner": {"attn": "noise_refiner.attn",
                              "feed_forward": "noise_refiner.feed_forward"},
            "context_refiner": {"attn": "context_refiner.attn",
                                "feed_forward": "context_refiner.feed_forward"},
            "layers": _same("attn", "feed_forward")}, 1),
    # priority -1: the example HunyuanDiT plugin (examples/third_party_adapter), when installed,
    # names the same class at priority 0 and wins; without it, this one serves
    Family("hunyuandit", "HunyuanDiT2DModel", {"blocks": _same("attn1", "attn2", "ff")}, 1, -1),
)  # fmt: skip


class FamilyAdapter(Adapter):
    """The adapter of one :class:`Family`."""

    def __init__(self, family: Family) -> None:
        self.family = family
        self.name = family.name
        self.model_classes = (family.model_class,)
        self.priority = family.priority
        self.kinds = tuple(
            dict.fromkeys(k for kids in family.lists.values() for k in kids.values())
        )

    def matches(self, model: nn.Module) -> bool:
        return super().matches(model) and all(
            isinstance(getattr(model, name, None), nn.ModuleList) for name in self.family.lists
        )

    def branches(self, model: nn.Module) -> list[Branch]:
        found = []
        for list_name, children in self.family.lists.items():
            for index, block in enumerate(getattr(model, list_name)):
                for child, kind in children.items():
                    if isinstance(getattr(block, child, None), nn.Module):
                        found.append(Branch(f"{list_name}.{index}.{child}", kind, index))
        return found

    def timestep_source(self, model: nn.Module) -> TimestepSource:
        return TimestepSource("", argument("timestep", self.family.timestep_position))

    def fast_forwards(self, model: nn.Module) -> dict[str, Callable[..., Any]]:
        if self.family.fast is None:
            return {}
        block_class, forward = self.family.fast
        list_name = next(iter(self.family.lists))
        return {
            f"{list_name}.{i}": forward
            for i, block in enumerate(getattr(model, list_name))
            if type(block).__name__ == block_class
        }


@hookimpl
def smoothcache_adapters() -> list[Adapter]:
    """One adapter per row of :data:`FAMILIES`."""
    return [FamilyAdapter(family) for family in FAMILIES]
