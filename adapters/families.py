"""Specific adapters for the diffusers DiT families whose blocks need nothing but naming.

Each family is a row of :data:`FAMILIES`: the transformer class, its block lists, the branch
children of each list with the schedule kind each gets, and the position of ``timestep`` in the
model's forward (the pipelines call the model once per evaluation with it). Compared with the
structural ``diffusers-generic`` adapter, a family adapter matches by class (so it wins
detection), checks the structure it expects, and names kinds for the model rather than for the
heuristic (FLUX.2's fused single-stream attention is ``single``; Lumina2's text and noise
refiners are kinds of their own).

Fast paths (a reused branch skips its LayerNorm and modulation; the gates, which the residual
adds need, are still computed): Wan (:mod:`smoothcache.adapters.wan`), CogVideoX, SD3 / SD3.5
and Lumina2 (every block list), counted in ``benchmarks/fast_path_ops.py`` (docs/performance.md:
2.6-9.1% of a tiny run's aten ops). Not for the others: in their blocks a branch's input
preparation is fused into the adaLN module whose other outputs a reuse step needs too, and the
counted upper bound of what a fast path could skip is 1-5% of the ops (FLUX.2, Sana, Qwen-Image,
LTX-Video, HunyuanDiT). A block called with feed-forward chunking on calls ``ff`` once per chunk,
which the engine refuses (one cached output cannot stand for several calls).

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


@dataclass(frozen=True, kw_only=True)
class Family:
    """One DiT family: ``lists`` maps each block list to {branch child: schedule kind}."""

    name: str
    model_class: str
    lists: Mapping[str, Mapping[str, str]]
    timestep_position: int
    priority: int = 0
    #: (block class name, block forward) for the blocks of that class in any of the lists
    fast: tuple[str, Callable[..., Any]] | None = None


def adaln_modulation(norm: nn.Module, temb: torch.Tensor, chunks: int) -> tuple[torch.Tensor, ...]:
    """An adaLN module's shifts, scales and gates (``linear(silu(temb))`` in ``chunks``), as it
    computes them, without its normalisation of the tokens: what a reuse step still needs."""
    return norm.linear(norm.silu(temb)).chunk(chunks, dim=1)


def _gates(norm: nn.Module, temb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The image and text gates of a ``CogVideoXLayerNormZero``, without its LayerNorms."""
    _, _, gate, _, _, enc_gate = adaln_modulation(norm, temb, 6)
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


def _modulated(normed: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    return normed * (1 + scale[:, None]) + shift[:, None]


def sd3_block_forward(
    block: nn.Module,
    hidden_states: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    temb: torch.Tensor,
    joint_attention_kwargs: dict[str, Any] | None = None,
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """``JointTransformerBlock.forward`` (SD3 / SD3.5) that asks for each branch's output first:
    a reused branch skips its LayerNorm and modulation (the gates are still computed: the
    residual adds need them). The joint attention's LayerNorms of image and text are skipped
    together; SD3.5's ``attn2`` shares the image LayerNorm with ``attn``."""
    kwargs = joint_attention_kwargs or {}
    dual = block.use_dual_attention
    image = adaln_modulation(block.norm1, temb, 9 if dual else 6)
    shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = image[:6]
    if not block.context_pre_only:
        text = adaln_modulation(block.norm1_context, temb, 6)
        c_shift_msa, c_scale_msa, c_gate_msa, c_shift_mlp, c_scale_mlp, c_gate_mlp = text
    attention = reused_output(block.attn, hidden_states.shape)
    second = reused_output(block.attn2, hidden_states.shape) if dual else None
    if attention is None or (dual and second is None):
        normed = block.norm1.norm(hidden_states)
    if attention is None:
        if block.context_pre_only:
            normed_text = block.norm1_context(encoder_hidden_states, temb)
        else:
            normed_text = block.norm1_context.norm(encoder_hidden_states)
            normed_text = _modulated(normed_text, c_scale_msa, c_shift_msa)
        attention = block.attn(
            hidden_states=_modulated(normed, scale_msa, shift_msa),
            encoder_hidden_states=normed_text,
            **kwargs,
        )
    hidden_states = hidden_states + gate_msa.unsqueeze(1) * attention[0]
    if dual:
        if second is None:
            shift_msa2, scale_msa2 = image[6:8]
            second = block.attn2(hidden_states=_modulated(normed, scale_msa2, shift_msa2), **kwargs)
        hidden_states = hidden_states + image[8].unsqueeze(1) * second

    ff_output = reused_output(block.ff, hidden_states.shape)
    if ff_output is None:
        normed = _modulated(block.norm2(hidden_states), scale_mlp, shift_mlp)
        ff_output = block.ff(normed)
    hidden_states = hidden_states + gate_mlp.unsqueeze(1) * ff_output
    if block.context_pre_only:
        return None, hidden_states

    encoder_hidden_states = encoder_hidden_states + c_gate_msa.unsqueeze(1) * attention[1]
    text_ff = reused_output(block.ff_context, encoder_hidden_states.shape)
    if text_ff is None:
        normed = _modulated(block.norm2_context(encoder_hidden_states), c_scale_mlp, c_shift_mlp)
        text_ff = block.ff_context(normed)
    encoder_hidden_states = encoder_hidden_states + c_gate_mlp.unsqueeze(1) * text_ff
    return encoder_hidden_states, hidden_states


def lumina2_block_forward(
    block: nn.Module,
    hidden_states: torch.Tensor,
    attention_mask: torch.Tensor,
    image_rotary_emb: torch.Tensor,
    temb: torch.Tensor | None = None,
) -> torch.Tensor:
    """``Lumina2TransformerBlock.forward`` that asks for each branch's output first: a reused
    branch skips its RMSNorm and modulation (the gates are still computed). The post-norms of the
    branch outputs (``norm2``, ``ffn_norm2``) run as in the block: they sit outside the branch."""
    modulation = block.modulation
    if modulation:
        scale_msa, gate_msa, scale_mlp, gate_mlp = adaln_modulation(block.norm1, temb, 4)
    attention = reused_output(block.attn, hidden_states.shape)
    if attention is None:
        if modulation:
            normed = block.norm1.norm(hidden_states) * (1 + scale_msa[:, None])
        else:
            normed = block.norm1(hidden_states)
        attention = block.attn(
            hidden_states=normed,
            encoder_hidden_states=normed,
            attention_mask=attention_mask,
            image_rotary_emb=image_rotary_emb,
        )
    attention = block.norm2(attention)
    if modulation:
        attention = gate_msa.unsqueeze(1).tanh() * attention
    hidden_states = hidden_states + attention

    mlp = reused_output(block.feed_forward, hidden_states.shape)
    if mlp is None:
        normed = block.ffn_norm1(hidden_states)
        if modulation:
            normed = normed * (1 + scale_mlp.unsqueeze(1))
        mlp = block.feed_forward(normed)
    mlp = block.ffn_norm2(mlp)
    if modulation:
        mlp = gate_mlp.unsqueeze(1).tanh() * mlp
    return hidden_states + mlp


def _same(*children: str) -> dict[str, str]:
    return {child: child for child in children}


FAMILIES = (
    Family(
        name="sd3",
        model_class="SD3Transformer2DModel",
        lists={"transformer_blocks": _same("attn", "attn2", "ff", "ff_context")},
        timestep_position=3,
        fast=("JointTransformerBlock", sd3_block_forward),
    ),
    Family(
        name="flux2",
        model_class="Flux2Transformer2DModel",
        lists={
            "transformer_blocks": _same("attn", "ff", "ff_context"),
            "single_transformer_blocks": {"attn": "single"},
        },
        timestep_position=2,
    ),
    Family(
        name="hunyuan-video-1.5",
        model_class="HunyuanVideo15Transformer3DModel",
        lists={"transformer_blocks": _same("attn", "ff", "ff_context")},
        timestep_position=1,
    ),
    Family(
        name="wan",
        model_class="WanTransformer3DModel",
        lists={"blocks": _same("attn1", "attn2", "ffn")},
        timestep_position=1,
        fast=("WanTransformerBlock", wan_block_forward),
    ),
    Family(
        name="cogview4",
        model_class="CogView4Transformer2DModel",
        lists={"transformer_blocks": _same("attn1")},
        timestep_position=2,
    ),
    Family(
        name="glm-image",
        model_class="GlmImageTransformer2DModel",
        lists={"transformer_blocks": _same("attn1")},
        timestep_position=4,
    ),
    Family(
        name="cogvideox",
        model_class="CogVideoXTransformer3DModel",
        lists={"transformer_blocks": _same("attn1", "ff")},
        timestep_position=2,
        fast=("CogVideoXBlock", cogvideox_block_forward),
    ),
    Family(
        name="ltx-video",
        model_class="LTXVideoTransformer3DModel",
        lists={"transformer_blocks": _same("attn1", "attn2", "ff")},
        timestep_position=2,
    ),
    Family(
        name="ltx2",
        model_class="LTX2VideoTransformer3DModel",
        lists={
            "transformer_blocks": _same(
                "attn1", "audio_attn1", "attn2", "audio_attn2", "audio_to_video_attn",
                "video_to_audio_attn", "ff", "audio_ff",
            )
        },
        timestep_position=4,
    ),
    Family(
        name="qwen-image",
        model_class="QwenImageTransformer2DModel",
        lists={"transformer_blocks": _same("attn", "img_mlp", "txt_mlp")},
        timestep_position=3,
    ),
    Family(
        name="sana",
        model_class="SanaTransformer2DModel",
        lists={"transformer_blocks": _same("attn1", "attn2", "ff")},
        timestep_position=2,
    ),
    Family(
        name="lumina2",
        model_class="Lumina2Transformer2DModel",
        lists={
            "noise_refiner": {
                "attn": "noise_refiner.attn",
                "feed_forward": "noise_refiner.feed_forward",
            },
            "context_refiner": {
                "attn": "context_refiner.attn",
                "feed_forward": "context_refiner.feed_forward",
            },
            "layers": _same("attn", "feed_forward"),
        },
        timestep_position=1,
        fast=("Lumina2TransformerBlock", lumina2_block_forward),
    ),
    # priority -1: the example HunyuanDiT plugin (examples/third_party_adapter), when installed,
    # names the same class at priority 0 and wins; without it, this one serves
    Family(
        name="hunyuandit",
        model_class="HunyuanDiT2DModel",
        lists={"blocks": _same("attn1", "attn2", "ff")},
        timestep_position=1,
        priority=-1,
    ),
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
        return {
            f"{list_name}.{i}": forward
            for list_name in self.family.lists
            for i, block in enumerate(getattr(model, list_name))
            if type(block).__name__ == block_class
        }


@hookimpl
def smoothcache_adapters() -> list[Adapter]:
    """One adapter per row of :data:`FAMILIES`."""
    return [FamilyAdapter(family) for family in FAMILIES]
