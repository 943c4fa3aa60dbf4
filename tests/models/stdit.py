"""Tiny, structurally faithful stand-ins for Open-Sora's STDiT3 (1.2) and STDiT2 (1.1).

Open-Sora is not on the package index and its cross-attention needs xformers, so these are
written from scratch in plain torch, after ``opensora/models/stdit/stdit3.py`` (1.2),
``stdit2.py`` and ``opensora/models/layers/blocks.py``. Kept as in the originals, because
smoothcache's adapters depend on it: class and attribute names, the forward signatures of the
models and blocks, the residual math of the blocks (adaLN shift/scale before and gate after
``attn``, ``attn_temp`` and ``mlp``, per frame through ``t_mask_select`` when ``x_mask`` marks
conditioning frames; un-gated ``cross_attn``), ``t_embedder`` being called a second time
(timestep 0) when ``x_mask`` is given, and the zero initialisation (STDiT3's temporal
``attn.proj``, ``cross_attn.proj`` and ``mlp.fc2``; STDiT2's ``attn_temp.proj``,
``cross_attn.proj`` and final layer), which :func:`tiny_stdit3` and :func:`tiny_stdit2` undo.

Left out: xformers (cross-attention is ``scaled_dot_product_attention`` with the same
block-diagonal mask over the packed text tokens), flash attention, fused layer norms, sequence
parallelism, drop path, gradient checkpointing, training-time caption dropout and the
transformers ``PreTrainedModel`` base. The rotary embedding is a small interleaved RoPE like
``rotary_embedding_torch``'s.

The samplers reproduce how Open-Sora calls each model: :func:`rflow_sample` like 1.2's
``RFLOW.sample`` (``model(z_in, t, **model_args)`` through ``__call__``, guidance batched as
[cond, uncond], float timesteps in [0, 1000]) and :func:`iddpm_sample` like 1.1's IDDPM
``forward_with_cfg`` (``model.forward(...)`` called directly, so root hooks never fire).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tests.models.random_init import randomize_

#: Standard deviation of the random weights of :func:`tiny_stdit3` and :func:`tiny_stdit2`. With
#: the default 0.05 attention over the text is uniform and reusing ``cross_attn`` changes the
#: output only at float-rounding level; with 0.2 every branch's reuse moves it by ~1e-2 relative.
WEIGHT_STD = 0.2

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


# ---------------------------------------------------------------------------------------------
# Layers (opensora/models/layers/blocks.py)
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Blocks
# ---------------------------------------------------------------------------------------------


class STDiT3Block(nn.Module):
    """A spatial or temporal block: gated ``attn``, un-gated ``cross_attn``, gated ``mlp``."""

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        rope: Rope | None = None,
        qk_norm: bool = False,
        temporal: bool = False,
    ):
        super().__init__()
        self.temporal = temporal
        self.norm1 = nn.LayerNorm(hidden_size, eps=1e-6, elementwise_affine=False)
        self.attn = Attention(hidden_size, num_heads, qkv_bias=True, qk_norm=qk_norm, rope=rope)
        self.cross_attn = MultiHeadCrossAttention(hidden_size, num_heads)
        self.norm2 = nn.LayerNorm(hidden_size, eps=1e-6, elementwise_affine=False)
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio))
        self.drop_path = nn.Identity()
        self.scale_shift_table = nn.Parameter(torch.randn(6, hidden_size) / hidden_size**0.5)

    def t_mask_select(
        self, x_mask: torch.Tensor, x: torch.Tensor, masked_x: torch.Tensor, T: int, S: int
    ) -> torch.Tensor:
        """Frames where ``x_mask`` is False take ``masked_x`` (their timestep-0 version)."""
        return t_mask_select(x_mask, x, masked_x, T, S)

    def forward(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        t: torch.Tensor,
        mask: list[int] | None = None,
        x_mask: torch.Tensor | None = None,
        t0: torch.Tensor | None = None,
        T: int | None = None,
        S: int | None = None,
    ) -> torch.Tensor:
        assert T is not None and S is not None
        B = x.shape[0]
        mod = _modulation(self.scale_shift_table, t, B)
        mod0 = _modulation(self.scale_shift_table, t0, B) if x_mask is not None else None
        assert mod is not None
        attend = "temporal" if self.temporal else "spatial"
        msa0, mlp0 = (mod0[:3], mod0[3:]) if mod0 is not None else (None, None)
        x = x + self.drop_path(
            gated_branch(self.attn, x, self.norm1, mod[:3], msa0, x_mask, T, S, attend)
        )
        x = x + self.cross_attn(x, y, mask)
        return x + self.drop_path(
            gated_branch(self.mlp, x, self.norm2, mod[3:], mlp0, x_mask, T, S)
        )


class STDiT2Block(nn.Module):
    """Gated spatial ``attn`` and temporal ``attn_temp``, un-gated ``cross_attn``, gated ``mlp``."""

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        rope: Rope | None = None,
        qk_norm: bool = False,
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size, eps=1e-6, elementwise_affine=False)
        self.attn = Attention(hidden_size, num_heads, qkv_bias=True, qk_norm=qk_norm)
        self.scale_shift_table = nn.Parameter(torch.randn(6, hidden_size) / hidden_size**0.5)
        self.cross_attn = MultiHeadCrossAttention(hidden_size, num_heads)
        self.norm2 = nn.LayerNorm(hidden_size, eps=1e-6, elementwise_affine=False)
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio))
        self.drop_path = nn.Identity()
        self.norm_temp = nn.LayerNorm(hidden_size, eps=1e-6, elementwise_affine=False)
        self.attn_temp = Attention(
            hidden_size, num_heads, qkv_bias=True, qk_norm=qk_norm, rope=rope
        )
        self.scale_shift_table_temporal = nn.Parameter(
            torch.randn(3, hidden_size) / hidden_size**0.5
        )

    def t_mask_select(
        self, x_mask: torch.Tensor, x: torch.Tensor, masked_x: torch.Tensor, T: int, S: int
    ) -> torch.Tensor:
        """Frames where ``x_mask`` is False take ``masked_x`` (their timestep-0 version)."""
        return t_mask_select(x_mask, x, masked_x, T, S)

    def forward(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        t: torch.Tensor,
        t_tmp: torch.Tensor,
        mask: list[int] | None = None,
        x_mask: torch.Tensor | None = None,
        t0: torch.Tensor | None = None,
        t0_tmp: torch.Tensor | None = None,
        T: int | None = None,
        S: int | None = None,
    ) -> torch.Tensor:
        assert T is not None and S is not None
        B = x.shape[0]
        mod = _modulation(self.scale_shift_table, t, B)
        tmp = _modulation(self.scale_shift_table_temporal, t_tmp, B)
        assert mod is not None and tmp is not None
        mod0 = tmp0 = None
        if x_mask is not None:
            mod0 = _modulation(self.scale_shift_table, t0, B)
            tmp0 = _modulation(self.scale_shift_table_temporal, t0_tmp, B)
        msa0, mlp0 = (mod0[:3], mod0[3:]) if mod0 is not None else (None, None)
        x = x + self.drop_path(
            gated_branch(self.attn, x, self.norm1, mod[:3], msa0, x_mask, T, S, "spatial")
        )
        x = x + self.drop_path(
            gated_branch(self.attn_temp, x, self.norm_temp, tmp, tmp0, x_mask, T, S, "temporal")
        )
        x = x + self.cross_attn(x, y, mask)
        return x + self.drop_path(
            gated_branch(self.mlp, x, self.norm2, mod[3:], mlp0, x_mask, T, S)
        )


# ---------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------


@dataclass
class STDiTConfig:
    """The fields of Open-Sora's ``STDiT3Config`` / ``STDiT2Config`` used here (tiny defaults)."""

    input_sq_size: int = 512
    in_channels: int = 4
    patch_size: tuple[int, int, int] = (1, 2, 2)
    hidden_size: int = 24
    depth: int = 2
    num_heads: int = 2
    mlp_ratio: float = 4.0
    class_dropout_prob: float = 0.1
    pred_sigma: bool = True
    caption_channels: int = 16
    model_max_length: int = 6
    qk_norm: bool = True


class _Embedders(nn.Module):
    """The parts STDiT3 and STDiT2 share: config attributes, embedders, rope and final layer."""

    def __init__(self, config: STDiTConfig):
        super().__init__()
        self.config = config
        self.pred_sigma = config.pred_sigma
        self.in_channels = config.in_channels
        self.out_channels = config.in_channels * 2 if config.pred_sigma else config.in_channels
        self.depth = config.depth
        self.hidden_size = config.hidden_size
        self.num_heads = config.num_heads
        self.patch_size = config.patch_size
        self.input_sq_size = config.input_sq_size
        self.pos_embed = PositionEmbedding2D(config.hidden_size)
        self.rope = RotaryEmbedding(dim=self.hidden_size // self.num_heads)
        self.x_embedder = PatchEmbed3D(config.patch_size, config.in_channels, config.hidden_size)
        self.t_embedder = TimestepEmbedder(config.hidden_size)
        self.y_embedder = CaptionEmbedder(
            config.caption_channels,
            config.hidden_size,
            config.class_dropout_prob,
            token_num=config.model_max_length,
        )
        num_patch = math.prod(config.patch_size)
        self.final_layer = T2IFinalLayer(config.hidden_size, num_patch, self.out_channels)

    def _xavier_linears(self) -> None:
        """The originals' base init: xavier-uniform Linear weights, zero biases."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def get_dynamic_size(self, x: torch.Tensor) -> tuple[int, int, int]:
        """Token grid (T, H, W) of a (B, C, T, H, W) video padded to whole patches."""
        return tuple(-(-s // p) for s, p in zip(x.shape[2:], self.patch_size))  # type: ignore[return-value]

    def _video_tokens(self, x: torch.Tensor, rs: float) -> tuple[torch.Tensor, int, int, int]:
        """Patch tokens with 2-D position embedding, (B, T*S, C), and the grid (T, H, W)."""
        T, H, W = self.get_dynamic_size(x)
        S = H * W
        pos_emb = self.pos_embed(x, H, W, scale=rs / self.input_sq_size, base_size=round(S**0.5))
        tokens = self.x_embedder(x)
        return (tokens.view(x.shape[0], T, S, -1) + pos_emb).flatten(1, 2), T, H, W

    def encode_text(
        self, y: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, list[int]]:
        """Captions (B, 1, N, C_cap) to packed tokens (1, sum(lens), C) and per-sample lengths."""
        y = self.y_embedder(y, self.training)
        if mask is None:
            return y.squeeze(1).reshape(1, -1, self.hidden_size), [y.shape[2]] * y.shape[0]
        if mask.shape[0] != y.shape[0]:
            mask = mask.repeat(y.shape[0] // mask.shape[0], 1)
        packed = y.squeeze(1).masked_select(mask.unsqueeze(-1) != 0).view(1, -1, self.hidden_size)
        return packed, mask.sum(dim=1).tolist()

    def unpatchify(
        self, x: torch.Tensor, N_t: int, N_h: int, N_w: int, R_t: int, R_h: int, R_w: int
    ) -> torch.Tensor:
        """(B, N, prod(patch) * C_out) tokens to (B, C_out, T, H, W), cropped to (R_t, R_h, R_w)."""
        T_p, H_p, W_p = self.patch_size
        x = x.view(x.shape[0], N_t, N_h, N_w, T_p, H_p, W_p, self.out_channels)
        x = x.permute(0, 7, 1, 4, 2, 5, 3, 6).reshape(
            x.shape[0], self.out_channels, N_t * T_p, N_h * H_p, N_w * W_p
        )
        return x[:, :, :R_t, :R_h, :R_w]


class STDiT3(_Embedders):
    """Open-Sora 1.2's DiT: ``spatial_blocks`` and ``temporal_blocks``, run interleaved."""

    def __init__(self, config: STDiTConfig | None = None):
        config = config or STDiTConfig()
        super().__init__(config)
        self.fps_embedder = SizeEmbedder(self.hidden_size)
        self.t_block = nn.Sequential(
            nn.SiLU(), nn.Linear(config.hidden_size, 6 * config.hidden_size)
        )
        self.spatial_blocks = nn.ModuleList(
            STDiT3Block(
                config.hidden_size, config.num_heads, config.mlp_ratio, qk_norm=config.qk_norm
            )
            for _ in range(config.depth)
        )
        rope = self.rope.rotate_queries_or_keys
        self.temporal_blocks = nn.ModuleList(
            STDiT3Block(
                config.hidden_size,
                config.num_heads,
                config.mlp_ratio,
                rope,
                config.qk_norm,
                temporal=True,
            )
            for _ in range(config.depth)
        )
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """Xavier linears; zero fps embedder output; zero temporal branch output weights."""
        self._xavier_linears()
        nn.init.normal_(self.fps_embedder.mlp[0].weight, std=0.02)
        nn.init.zeros_(self.fps_embedder.mlp[2].weight)
        for block in self.temporal_blocks:
            for layer in (block.attn.proj, block.cross_attn.proj, block.mlp.fc2):
                nn.init.zeros_(layer.weight)

    def forward(
        self,
        x: torch.Tensor,
        timestep: torch.Tensor,
        y: torch.Tensor,
        mask: torch.Tensor | None = None,
        x_mask: torch.Tensor | None = None,
        fps: torch.Tensor | None = None,
        height: torch.Tensor | None = None,
        width: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        """Predict (B, C_out, T, H, W) from latents, float timesteps and captions.

        ``x_mask`` (B, T) marks the frames being generated (True); conditioning frames (False)
        are modulated with the embedding of timestep 0, computed by a second ``t_embedder`` call.
        """
        assert fps is not None and height is not None and width is not None
        dtype = self.x_embedder.proj.weight.dtype
        B = x.size(0)
        x, timestep, y = x.to(dtype), timestep.to(dtype), y.to(dtype)
        size = x.shape[2:]
        rs = (height[0].item() * width[0].item()) ** 0.5

        fps_emb = self.fps_embedder(fps.unsqueeze(1), B)
        t = self.t_embedder(timestep, dtype=x.dtype) + fps_emb
        t_mlp = self.t_block(t)
        t0 = t0_mlp = None
        if x_mask is not None:
            t0 = self.t_embedder(torch.zeros_like(timestep), dtype=x.dtype) + fps_emb
            t0_mlp = self.t_block(t0)
        y, y_lens = self.encode_text(y, mask)

        x, T, H, W = self._video_tokens(x, rs)
        S = H * W
        for spatial_block, temporal_block in zip(self.spatial_blocks, self.temporal_blocks):
            x = spatial_block(x, y, t_mlp, y_lens, x_mask, t0_mlp, T, S)
            x = temporal_block(x, y, t_mlp, y_lens, x_mask, t0_mlp, T, S)
        x = self.final_layer(x, t, x_mask, t0, T, S)
        return self.unpatchify(x, T, H, W, *size).to(torch.float32)


class STDiT2(_Embedders):
    """Open-Sora 1.1's DiT: one ``blocks`` list, spatial then temporal attention in each block."""

    def __init__(self, config: STDiTConfig | None = None):
        config = config or STDiTConfig(input_sq_size=32, qk_norm=False)
        assert config.hidden_size % 3 == 0, "hidden_size must be divisible by 3"
        super().__init__(config)
        hidden = config.hidden_size
        self.t_block = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 6 * hidden))
        self.t_block_temp = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 3 * hidden))
        rope = self.rope.rotate_queries_or_keys
        self.blocks = nn.ModuleList(
            STDiT2Block(hidden, config.num_heads, config.mlp_ratio, rope, config.qk_norm)
            for _ in range(config.depth)
        )
        self.csize_embedder = SizeEmbedder(hidden // 3)
        self.ar_embedder = SizeEmbedder(hidden // 3)
        self.fl_embedder = SizeEmbedder(hidden)
        self.fps_embedder = SizeEmbedder(hidden)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """Xavier linears; zero ``cross_attn.proj``, ``attn_temp.proj`` and final linear."""
        self._xavier_linears()
        layers = [self.final_layer.linear]
        layers += [layer for b in self.blocks for layer in (b.cross_attn.proj, b.attn_temp.proj)]
        for layer in layers:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(
        self,
        x: torch.Tensor,
        timestep: torch.Tensor,
        y: torch.Tensor,
        mask: torch.Tensor | None = None,
        x_mask: torch.Tensor | None = None,
        num_frames: torch.Tensor | None = None,
        height: torch.Tensor | None = None,
        width: torch.Tensor | None = None,
        ar: torch.Tensor | None = None,
        fps: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predict (B, C_out, T, H, W) from latents, timesteps, captions and size information."""
        assert all(v is not None for v in (num_frames, height, width, ar, fps))
        B = x.shape[0]
        dtype = self.x_embedder.proj.weight.dtype
        x, timestep, y = x.to(dtype), timestep.to(dtype), y.to(dtype)
        size = x.shape[2:]
        rs = (height[0].item() * width[0].item()) ** 0.5
        hw = torch.stack([height, width], dim=1)
        data_info = torch.cat([self.csize_embedder(hw, B), self.ar_embedder(ar.unsqueeze(1), B)], 1)
        fl = self.fl_embedder(num_frames.unsqueeze(1), B) + self.fps_embedder(fps.unsqueeze(1), B)
        x, T, H, W = self._video_tokens(x, rs)
        S = H * W

        t = self.t_embedder(timestep, dtype=x.dtype)
        t_spc_mlp, t_tmp_mlp = self.t_block(t + data_info), self.t_block_temp(t + fl)
        t0_spc = t0_spc_mlp = t0_tmp_mlp = None
        if x_mask is not None:
            t0 = self.t_embedder(torch.zeros_like(timestep), dtype=x.dtype)
            t0_spc = t0 + data_info
            t0_spc_mlp, t0_tmp_mlp = self.t_block(t0_spc), self.t_block_temp(t0 + fl)

        y, y_lens = self.encode_text(y, mask)
        for block in self.blocks:
            x = block(x, y, t_spc_mlp, t_tmp_mlp, y_lens, x_mask, t0_spc_mlp, t0_tmp_mlp, T, S)
        x = self.final_layer(x, t, x_mask, t0_spc, T, S)  # as in the original: t, not t_spc
        return self.unpatchify(x, T, H, W, *size).to(torch.float32)


def tiny_stdit3(seed: int = 0, **config: Any) -> STDiT3:
    """A tiny random :class:`STDiT3` in eval mode, re-randomised at :data:`WEIGHT_STD`."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = STDiT3(STDiTConfig(**config))
    return randomize_(model, seed=seed, std=WEIGHT_STD).eval()


def tiny_stdit2(seed: int = 0, **config: Any) -> STDiT2:
    """A tiny random :class:`STDiT2` in eval mode, re-randomised at :data:`WEIGHT_STD`."""
    config = {"input_sq_size": 32, "qk_norm": False, **config}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = STDiT2(STDiTConfig(**config))
    return randomize_(model, seed=seed, std=WEIGHT_STD).eval()


# ---------------------------------------------------------------------------------------------
# Samplers: Open-Sora's call patterns
# ---------------------------------------------------------------------------------------------


def _condition(model: STDiT3 | STDiT2, batch: int, gen: torch.Generator) -> dict[str, Any]:
    """Caption features (cond then null caption) and a text mask with one padding token."""
    cfg = model.config
    y = torch.randn(batch, 1, cfg.model_max_length, cfg.caption_channels, generator=gen)
    y_null = model.y_embedder.y_embedding[None].repeat(batch, 1, 1)[:, None]
    mask = torch.ones(batch, cfg.model_max_length, dtype=torch.long)
    mask[:, -1] = 0
    return {"y": torch.cat([y, y_null]), "mask": mask}


@torch.no_grad()
def rflow_sample(
    model: STDiT3,
    num_steps: int,
    cfg_scale: float = 7.0,
    batch: int = 1,
    frames: int = 3,
    size: int = 4,
    condition_frames: int = 0,
    seed: int = 0,
    num_timesteps: int = 1000,
) -> torch.Tensor:
    """Sample like Open-Sora 1.2's ``RFLOW.sample``: one ``model(...)`` call per step.

    The batch is [cond, uncond]; timesteps are floats ``(1 - i / n) * 1000``. With
    ``condition_frames`` > 0 the first frames are conditioning frames: they stay fixed and the
    model gets ``x_mask`` (False on them), as the 1.2 inference script passes for references.
    """
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(batch, model.in_channels, frames, size, size, generator=gen)
    model_args = _condition(model, batch, gen)
    model_args.update(
        fps=torch.full((batch,), 24.0),
        height=torch.full((batch,), size * 8.0),
        width=torch.full((batch,), size * 8.0),
    )
    timesteps = [
        torch.full((batch,), (1.0 - i / num_steps) * num_timesteps) for i in range(num_steps)
    ]
    mask = None
    if condition_frames:
        mask = torch.ones(batch, frames)
        mask[:, :condition_frames] = 0
        noise_added = mask == 1
    for i, t in enumerate(timesteps):
        if mask is not None:
            x0 = z.clone()
            keep = 1 - t[:, None, None, None, None] / num_timesteps
            x_noise = keep * x0 + (1 - keep) * torch.randn(x0.shape, generator=gen)
            mask_t_upper = mask * num_timesteps >= t[:, None]
            model_args["x_mask"] = mask_t_upper.repeat(2, 1)
            add_noise = (mask_t_upper & ~noise_added)[:, None, :, None, None]
            z = torch.where(add_noise, x_noise, x0)
            noise_added = mask_t_upper
        pred = model(torch.cat([z, z]), torch.cat([t, t]), **model_args).chunk(2, dim=1)[0]
        pred_cond, pred_uncond = pred.chunk(2, dim=0)
        v_pred = pred_uncond + cfg_scale * (pred_cond - pred_uncond)
        dt = timesteps[i] - timesteps[i + 1] if i < num_steps - 1 else timesteps[i]
        z = z + v_pred * (dt / num_timesteps)[:, None, None, None, None]
        if mask is not None:
            z = torch.where(mask_t_upper[:, None, :, None, None], z, x0)
    return z


def forward_with_cfg(
    model: nn.Module,
    x: torch.Tensor,
    timestep: torch.Tensor,
    y: torch.Tensor,
    cfg_scale: float,
    **kwargs: Any,
) -> torch.Tensor:
    """Open-Sora's IDDPM guidance: ``model.forward`` on [cond, uncond], called *directly*."""
    half = x[: len(x) // 2]
    out = model.forward(torch.cat([half, half]), timestep, y, **kwargs)
    channels = out.shape[1] // 2
    eps, rest = out[:, :channels], out[:, channels:]
    cond_eps, uncond_eps = eps.chunk(2, dim=0)
    half_eps = uncond_eps + cfg_scale * (cond_eps - uncond_eps)
    return torch.cat([torch.cat([half_eps, half_eps]), rest], dim=1)


@torch.no_grad()
def iddpm_sample(
    model: STDiT2,
    num_steps: int,
    cfg_scale: float = 7.0,
    batch: int = 1,
    frames: int = 3,
    size: int = 4,
    condition_frames: int = 0,
    seed: int = 0,
) -> torch.Tensor:
    """Sample like Open-Sora 1.1's IDDPM: ``forward_with_cfg`` once per step, int timesteps.

    The update is deterministic DDIM on a linear beta schedule (the call pattern is what
    matters). ``condition_frames`` > 0 keeps the first frames fixed and passes ``x_mask``.
    """
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(batch, model.in_channels, frames, size, size, generator=gen)
    z = torch.cat([z, z])
    model_args = _condition(model, batch, gen)
    model_args.update(
        num_frames=torch.full((batch,), float(frames)),
        height=torch.full((batch,), size * 8.0),
        width=torch.full((batch,), size * 8.0),
        ar=torch.ones(batch),
        fps=torch.full((batch,), 24.0),
    )
    if condition_frames:
        mask = torch.ones(2 * batch, frames)
        mask[:, :condition_frames] = 0
    alphas = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0).float()
    steps = torch.linspace(999, 0, num_steps).round().long().tolist()
    for i, step in enumerate(steps):
        t = torch.full((2 * batch,), step, dtype=torch.long)
        if condition_frames:
            model_args["x_mask"] = (mask * 1000).to(torch.int) > t[:, None]
        x0_kept = z.clone()
        eps = forward_with_cfg(model, z, t, cfg_scale=cfg_scale, **model_args)
        eps = eps[:, : model.in_channels]
        a_t = alphas[step]
        a_prev = alphas[steps[i + 1]] if i + 1 < num_steps else torch.tensor(1.0)
        x0 = (z - (1 - a_t).sqrt() * eps) / a_t.sqrt()
        z = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
        if condition_frames:
            z[:, :, :condition_frames] = x0_kept[:, :, :condition_frames]
    return z[:batch]
