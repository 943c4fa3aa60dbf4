"""STDiT3's spatial/temporal block and STDiT2's block, with Open-Sora's residual math."""

from __future__ import annotations

import torch
from torch import nn

from smoothcache.testing.models.stdit.layers import (
    Attention,
    Mlp,
    MultiHeadCrossAttention,
    Rope,
    _modulation,
    gated_branch,
    t_mask_select,
)


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
