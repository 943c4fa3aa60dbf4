"""The layers of the STDiT stand-ins, after ``opensora/models/layers/blocks.py``: modulation
helpers, attention, cross-attention, MLP, embedders and the final layer.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

Rope = Callable[[torch.Tensor], torch.Tensor]


def t2i_modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """PixArt-style adaLN modulation with (B, 1, C) shift and scale."""
    return x * (1 + scale) + shift


def t_mask_select(
    x_mask: torch.Tensor, x: torch.Tensor, masked_x: torch.Tensor, T: int, S: int
) -> torch.Tensor:
    """Per frame: ``x`` where ``x_mask`` (B, T) is True, else ``masked_x``; tokens (B, T*S, C)."""
    B, _, C = x.shape
    out = torch.where(x_mask[:, :, None, None], x.view(B, T, S, C), masked_x.view(B, T, S, C))
    return out.reshape(B, T * S, C)


def approx_gelu() -> nn.Module:
    """Open-Sora's ``approx_gelu``: tanh-approximated GELU."""
    return nn.GELU(approximate="tanh")


def gated_branch(
    branch: nn.Module,
    x: torch.Tensor,
    norm: nn.Module,
    mod: tuple[torch.Tensor, ...],
    mod0: tuple[torch.Tensor, ...] | None,
    x_mask: torch.Tensor | None,
    T: int,
    S: int,
    attend: str | None = None,
) -> torch.Tensor:
    """``gate * branch(modulate(norm(x)))``, per frame with the timestep-0 ``mod0`` under x_mask.

    ``mod`` is (shift, scale, gate). ``attend`` is ``"spatial"`` (attention within each frame,
    (B*T, S, C)), ``"temporal"`` (across frames, (B*S, T, C)) or None (token-wise MLP).
    """
    B, _, C = x.shape
    x_m = t2i_modulate(norm(x), mod[0], mod[1])
    if x_mask is not None and mod0 is not None:
        x_m = t_mask_select(x_mask, x_m, t2i_modulate(norm(x), mod0[0], mod0[1]), T, S)
    if attend == "temporal":
        out = branch(x_m.view(B, T, S, C).transpose(1, 2).reshape(B * S, T, C))
        out = out.view(B, S, T, C).transpose(1, 2).reshape(B, T * S, C)
    elif attend == "spatial":
        out = branch(x_m.reshape(B * T, S, C)).reshape(B, T * S, C)
    else:
        out = branch(x_m)
    if x_mask is not None and mod0 is not None:
        return t_mask_select(x_mask, mod[2] * out, mod0[2] * out, T, S)
    return mod[2] * out


def _modulation(
    table: torch.Tensor, t: torch.Tensor | None, B: int
) -> tuple[torch.Tensor, ...] | None:
    """The block's table plus the timestep's (B, n*C) modulation, split into n (B, 1, C) parts."""
    if t is None:
        return None
    return (table[None] + t.reshape(B, table.shape[0], -1)).chunk(table.shape[0], dim=1)


class LlamaRMSNorm(nn.Module):
    """RMS norm over the last axis, used for q/k normalisation."""

    def __init__(self, hidden_size: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        h = hidden_states.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
        return self.weight * h.to(hidden_states.dtype)


class RotaryEmbedding(nn.Module):
    """Interleaved rotary position embedding over the sequence axis (-2) of (..., N, D)."""

    def __init__(self, dim: int, theta: float = 10000.0):
        super().__init__()
        freqs = 1.0 / theta ** (torch.arange(0, dim, 2)[: dim // 2].float() / dim)
        self.register_buffer("freqs", freqs, persistent=False)

    def rotate_queries_or_keys(self, t: torch.Tensor) -> torch.Tensor:
        """Rotate each feature pair of ``t`` by its position's angle."""
        positions = torch.arange(t.shape[-2], device=t.device, dtype=self.freqs.dtype)
        angles = torch.outer(positions, self.freqs).repeat_interleave(2, dim=-1).to(t.dtype)
        pairs = t.unflatten(-1, (-1, 2))
        rotated = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
        return t * angles.cos() + rotated * angles.sin()


class PatchEmbed3D(nn.Module):
    """Video (B, C, T, H, W) to patch tokens (B, N, D), padding to whole patches first."""

    def __init__(self, patch_size: tuple[int, int, int], in_chans: int, embed_dim: int):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv3d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads: list[int] = []
        for size, patch in zip(reversed(x.shape[2:]), reversed(self.patch_size)):
            pads += [0, (patch - size % patch) % patch]
        return self.proj(F.pad(x, pads)).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Self-attention over (B, N, C) with optional q/k RMS norm and rotary embedding."""

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = False,
        qk_norm: bool = False,
        rope: Rope | None = None,
    ):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.q_norm = LlamaRMSNorm(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm = LlamaRMSNorm(self.head_dim) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)
        self.rope = rope is not None
        if rope is not None:
            self.rotary_emb = rope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        qkv = self.qkv(x).view(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        if self.rope:
            q, k = self.rotary_emb(q), self.rotary_emb(k)
        attn = ((q * self.scale) @ k.transpose(-2, -1)).float().softmax(dim=-1).to(q.dtype)
        return self.proj((attn @ v).transpose(1, 2).reshape(B, N, C))


class MultiHeadCrossAttention(nn.Module):
    """Cross-attention from (B, N, C) tokens to text packed as (1, sum(lens), C).

    ``mask`` lists the text length of each sample; sample ``i``'s queries see only its own text
    tokens (xformers' ``BlockDiagonalMask`` in the original).
    """

    def __init__(self, d_model: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = d_model // num_heads
        self.q_linear = nn.Linear(d_model, d_model)
        self.kv_linear = nn.Linear(d_model, d_model * 2)
        self.proj = nn.Linear(d_model, d_model)

    def forward(
        self, x: torch.Tensor, cond: torch.Tensor, mask: list[int] | None = None
    ) -> torch.Tensor:
        B, N, C = x.shape
        lens = mask if mask is not None else [cond.shape[1]] * B
        q = self.q_linear(x).view(1, -1, self.num_heads, self.head_dim).transpose(1, 2)
        kv = self.kv_linear(cond).view(1, -1, 2, self.num_heads, self.head_dim)
        k, v = kv.transpose(1, 3).unbind(1)
        samples = torch.arange(B, device=x.device)
        of_key = torch.repeat_interleave(samples, torch.tensor(lens, device=x.device))
        allowed = samples.repeat_interleave(N)[:, None] == of_key[None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
        return self.proj(out.transpose(1, 2).reshape(B, N, C))


class Mlp(nn.Module):
    """timm's ``Mlp`` (fc1, act, fc2), without dropout."""

    def __init__(self, in_features: int, hidden_features: int, out_features: int | None = None):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = approx_gelu()
        self.fc2 = nn.Linear(hidden_features, out_features or in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class TimestepEmbedder(nn.Module):
    """Sinusoidal timestep features followed by a two-layer MLP."""

    def __init__(self, hidden_size: int, frequency_embedding_size: int = 256):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(frequency_embedding_size, hidden_size),
            nn.SiLU(),
            nn.Linear(hidden_size, hidden_size),
        )
        self.frequency_embedding_size = frequency_embedding_size

    @staticmethod
    def timestep_embedding(t: torch.Tensor, dim: int, max_period: int = 10000) -> torch.Tensor:
        """(N,) timesteps (fractional allowed) to (N, dim) [cos, sin] features."""
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
        args = t[:, None].float() * freqs.to(t.device)[None]
        return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)

    def forward(self, t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return self.mlp(self.timestep_embedding(t, self.frequency_embedding_size).to(dtype))


class SizeEmbedder(TimestepEmbedder):
    """Embeds (B, dims) scalars (sizes, fps, frame counts) to (B, dims * hidden_size)."""

    def forward(self, s: torch.Tensor, bs: int) -> torch.Tensor:  # type: ignore[override]
        s = s[:, None] if s.ndim == 1 else s
        if s.shape[0] != bs:
            s = s.repeat(bs // s.shape[0], 1)
        freq = self.timestep_embedding(s.reshape(-1), self.frequency_embedding_size)
        return self.mlp(freq.to(self.mlp[0].weight.dtype)).reshape(s.shape[0], -1)


class CaptionEmbedder(nn.Module):
    """Projects caption features (B, 1, N, C_cap) to the hidden size; holds the null caption."""

    def __init__(self, in_channels: int, hidden_size: int, uncond_prob: float, token_num: int):
        super().__init__()
        self.y_proj = Mlp(in_channels, hidden_size, hidden_size)
        self.register_buffer("y_embedding", torch.randn(token_num, in_channels) / in_channels**0.5)
        self.uncond_prob = uncond_prob

    def forward(self, caption: torch.Tensor, train: bool) -> torch.Tensor:
        return self.y_proj(caption)


class PositionEmbedding2D(nn.Module):
    """2-D sin-cos position embedding (1, H*W, dim) of a resolution-scaled grid."""

    def __init__(self, dim: int):
        super().__init__()
        half_dim = dim // 2
        inv_freq = 1.0 / (10000 ** (torch.arange(0, half_dim, 2).float() / half_dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def _sin_cos(self, positions: torch.Tensor) -> torch.Tensor:
        angles = positions.reshape(-1)[:, None] * self.inv_freq[None]
        return torch.cat([angles.sin(), angles.cos()], dim=-1)

    def forward(
        self, x: torch.Tensor, h: int, w: int, scale: float = 1.0, base_size: int | None = None
    ) -> torch.Tensor:
        grid_h = torch.arange(h, device=x.device) / scale * (base_size / h if base_size else 1)
        grid_w = torch.arange(w, device=x.device) / scale * (base_size / w if base_size else 1)
        rows, cols = torch.meshgrid(grid_h, grid_w, indexing="ij")
        # the original embeds the column coordinate first, then the row coordinate
        emb = torch.cat([self._sin_cos(cols), self._sin_cos(rows)], dim=-1)
        return emb.unsqueeze(0).to(x.dtype)


class T2IFinalLayer(nn.Module):
    """PixArt's final layer: adaLN shift/scale from the timestep embedding, then a linear."""

    def __init__(self, hidden_size: int, num_patch: int, out_channels: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden_size, num_patch * out_channels)
        self.scale_shift_table = nn.Parameter(torch.randn(2, hidden_size) / hidden_size**0.5)
        self.out_channels = out_channels

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        x_mask: torch.Tensor | None = None,
        t0: torch.Tensor | None = None,
        T: int | None = None,
        S: int | None = None,
    ) -> torch.Tensor:
        shift, scale = (self.scale_shift_table[None] + t[:, None]).chunk(2, dim=1)
        x = t2i_modulate(self.norm_final(x), shift, scale)
        if x_mask is not None:
            assert t0 is not None and T is not None and S is not None
            shift0, scale0 = (self.scale_shift_table[None] + t0[:, None]).chunk(2, dim=1)
            # as in the original, the timestep-0 path re-normalises the already modulated x
            x = t_mask_select(x_mask, x, t2i_modulate(self.norm_final(x), shift0, scale0), T, S)
        return self.linear(x)
