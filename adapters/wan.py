"""Wan 2.1 / 2.2's block fast path (the ``wan`` row of :mod:`smoothcache.adapters.families`).

Each ``WanTransformerBlock`` in ``blocks`` runs self-attention ``attn1`` (gated), cross-attention
``attn2`` over the text (no gate) and the feed-forward ``ffn`` (gated): kinds ``attn1``,
``attn2`` and ``ffn``. The timestep source is the model (``timestep=``); the pipeline runs
guidance as two calls per step (two passes). Wan 2.2 A14B's second expert (``transformer_2``)
is cached under the same schedule and clock by the engine; Wan 2.2 TI2V's per-token timesteps
(``temb`` of rank 4) are handled by the block forward below like the original.

Fast path: a reused branch skips its LayerNorm (computed in float32) and modulation.
"""

from __future__ import annotations

import torch
from torch import nn

from smoothcache.engine import reused_output


def _modulation(block: nn.Module, temb: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Shift, scale and gate of attention and feed-forward, as the block computes them."""
    if temb.ndim == 4:  # per-token timesteps (Wan 2.2 TI2V): (batch, tokens, 6, dim)
        chunks = (block.scale_shift_table.unsqueeze(0) + temb.float()).chunk(6, dim=2)
        return tuple(c.squeeze(2) for c in chunks)
    return (block.scale_shift_table + temb.float()).chunk(6, dim=1)


def wan_block_forward(
    block: nn.Module,
    hidden_states: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    temb: torch.Tensor,
    rotary_emb: torch.Tensor,
) -> torch.Tensor:
    """``WanTransformerBlock.forward`` that asks for each branch's output first."""
    shift_msa, scale_msa, gate_msa, c_shift_msa, c_scale_msa, c_gate_msa = _modulation(block, temb)
    attn_output = reused_output(block.attn1, hidden_states.shape)
    if attn_output is None:
        normed = block.norm1(hidden_states.float()) * (1 + scale_msa) + shift_msa
        attn_output = block.attn1(normed.type_as(hidden_states), None, None, rotary_emb)
    hidden_states = (hidden_states.float() + attn_output * gate_msa).type_as(hidden_states)

    attn_output = reused_output(block.attn2, hidden_states.shape)
    if attn_output is None:
        normed = block.norm2(hidden_states.float()).type_as(hidden_states)
        attn_output = block.attn2(normed, encoder_hidden_states, None, None)
    hidden_states = hidden_states + attn_output

    ff_output = reused_output(block.ffn, hidden_states.shape)
    if ff_output is None:
        normed = block.norm3(hidden_states.float()) * (1 + c_scale_msa) + c_shift_msa
        ff_output = block.ffn(normed.type_as(hidden_states))
    return (hidden_states.float() + ff_output.float() * c_gate_msa).type_as(hidden_states)
