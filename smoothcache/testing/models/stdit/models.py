"""The STDiT3 and STDiT2 models, their config, and the tiny random instances the tests use."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from smoothcache.testing.models.random_init import randomize_
from smoothcache.testing.models.stdit.blocks import (
    STDiT2Block,
    STDiT3Block,
)
from smoothcache.testing.models.stdit.layers import (
    CaptionEmbedder,
    PatchEmbed3D,
    PositionEmbedding2D,
    RotaryEmbedding,
    SizeEmbedder,
    T2IFinalLayer,
    TimestepEmbedder,
)

#: Standard deviation of the random weights of :func:`tiny_stdit3` and :func:`tiny_stdit2`. With
#: the default 0.05 attention over the text is uniform and reusing ``cross_attn`` changes the
#: output only at float-rounding level; with 0.2 every branch's reuse moves it by ~1e-2 relative.
WEIGHT_STD = 0.2


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
