"""A tiny, structurally faithful stand-in for the original DiT (facebookresearch/DiT ``models.py``).

Written from scratch in plain torch (no timm). What matters for smoothcache's adapter is kept
identical to the original: class names, attribute names, forward signatures, the adaLN-Zero
residual math of :class:`DiTBlock`, the zero initialisation of every modulation/output layer,
and ``forward_with_cfg`` calling ``self.forward`` directly (so hooks on the root module do not
fire during guided sampling). Defaults are tiny so tests run in milliseconds on a CPU.

Like the original, :meth:`DiT.initialize_weights` zeroes every ``adaLN_modulation[-1]`` and the
final linear layer, so an untouched model outputs zeros and every block is the identity; tests
must re-randomise it with :func:`smoothcache.testing.models.random_init.randomize_`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN modulation of tokens (N, T, D) by per-sample ``shift`` and ``scale`` (N, D)."""
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


# ---------------------------------------------------------------------------------------------
# Embedders
# ---------------------------------------------------------------------------------------------


class PatchEmbed(nn.Module):
    """Image (N, C, H, W) to patch tokens (N, T, D) with one strided convolution ``proj``."""

    def __init__(
        self, img_size: int, patch_size: int, in_chans: int, embed_dim: int, bias: bool = True
    ):
        super().__init__()
        self.img_size = (img_size, img_size)
        self.patch_size = (patch_size, patch_size)
        self.grid_size = (img_size // patch_size, img_size // patch_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.proj = nn.Conv2d(
            in_chans, embed_dim, kernel_size=patch_size, stride=patch_size, bias=bias
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Project patches and flatten the spatial grid into a token axis."""
        return self.proj(x).flatten(2).transpose(1, 2)


class TimestepEmbedder(nn.Module):
    """Scalar timesteps to vectors: sinusoidal features followed by a two-layer MLP."""

    def __init__(self, hidden_size: int, frequency_embedding_size: int = 256):
        super().__init__()
        self.frequency_embedding_size = frequency_embedding_size
        self.mlp = nn.Sequential(
            nn.Linear(frequency_embedding_size, hidden_size, bias=True),
            nn.SiLU(),
            nn.Linear(hidden_size, hidden_size, bias=True),
        )

    @staticmethod
    def timestep_embedding(t: torch.Tensor, dim: int, max_period: int = 10000) -> torch.Tensor:
        """Sinusoidal features (N, dim) of timesteps ``t`` (N,): cosines first, then sines."""
        half = dim // 2
        exponents = torch.arange(half, dtype=torch.float32, device=t.device) / half
        freqs = torch.exp(-math.log(max_period) * exponents)
        angles = t.float()[:, None] * freqs[None, :]
        features = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)
        if dim % 2:
            features = torch.cat([features, torch.zeros_like(features[:, :1])], dim=-1)
        return features

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """Embed timesteps of shape (N,) into (N, hidden_size)."""
        features = self.timestep_embedding(t, self.frequency_embedding_size)
        return self.mlp(features.to(self.mlp[0].weight.dtype))


class LabelEmbedder(nn.Module):
    """Class labels to vectors; row ``num_classes`` is the "null" label used for guidance."""

    def __init__(self, num_classes: int, hidden_size: int, dropout_prob: float):
        super().__init__()
        has_null_row = dropout_prob > 0
        self.embedding_table = nn.Embedding(num_classes + int(has_null_row), hidden_size)
        self.num_classes = num_classes
        self.dropout_prob = dropout_prob

    def token_drop(
        self, labels: torch.Tensor, force_drop_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Replace some labels by the null label: at random, or where ``force_drop_ids == 1``."""
        if force_drop_ids is None:
            dropped = torch.rand(labels.shape[0], device=labels.device) < self.dropout_prob
        else:
            dropped = force_drop_ids == 1
        return torch.where(dropped, torch.full_like(labels, self.num_classes), labels)

    def forward(
        self, labels: torch.Tensor, train: bool, force_drop_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Embed labels (N,), dropping some to the null label while training."""
        if (train and self.dropout_prob > 0) or force_drop_ids is not None:
            labels = self.token_drop(labels, force_drop_ids)
        return self.embedding_table(labels)


# ---------------------------------------------------------------------------------------------
# Transformer pieces
# ---------------------------------------------------------------------------------------------


class Attention(nn.Module):
    """Multi-head self-attention with a fused ``qkv`` projection and an output ``proj``."""

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Attend over the token axis of ``x`` (N, T, D)."""
        n, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(n, tokens, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (N, heads, T, head_dim)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(n, tokens, dim))


class Mlp(nn.Module):
    """Two-layer feed-forward network ``fc1 -> act -> fc2``."""

    def __init__(
        self,
        in_features: int,
        hidden_features: int,
        act_layer: Callable[[], nn.Module] | None = None,
    ):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = act_layer() if act_layer is not None else nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(hidden_features, in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the feed-forward network token-wise."""
        return self.fc2(self.act(self.fc1(x)))


class DiTBlock(nn.Module):
    """adaLN-Zero transformer block: two gated residual branches, ``attn`` and ``mlp``."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden_size, num_heads=num_heads, qkv_bias=True)
        self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(
            hidden_size, int(hidden_size * mlp_ratio), act_layer=lambda: nn.GELU(approximate="tanh")
        )
        self.adaLN_modulation = nn.Sequential(
            nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size, bias=True)
        )

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """Update tokens ``x`` (N, T, D) under conditioning ``c`` (N, D)."""
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(
            c
        ).chunk(6, dim=1)
        x = x + gate_msa.unsqueeze(1) * self.attn(modulate(self.norm1(x), shift_msa, scale_msa))
        x = x + gate_mlp.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))
        return x


class FinalLayer(nn.Module):
    """adaLN-modulated LayerNorm followed by the linear projection to patch pixels."""

    def __init__(self, hidden_size: int, patch_size: int, out_channels: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden_size, patch_size * patch_size * out_channels, bias=True)
        self.adaLN_modulation = nn.Sequential(
            nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size, bias=True)
        )

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """Map tokens (N, T, D) to per-patch outputs (N, T, p*p*out_channels)."""
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


# ---------------------------------------------------------------------------------------------
# Fixed 2-D sin-cos position embedding
# ---------------------------------------------------------------------------------------------


def sincos_1d(embed_dim: int, positions: torch.Tensor) -> torch.Tensor:
    """Sin-cos features (M, embed_dim) of positions (M,): sines first, then cosines."""
    if embed_dim % 2:
        raise ValueError(f"embed_dim must be even, got {embed_dim}")
    omega = torch.arange(embed_dim // 2, dtype=torch.float64) / (embed_dim / 2.0)
    omega = 1.0 / 10000**omega
    angles = positions.to(torch.float64)[:, None] * omega[None, :]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


def sincos_2d(embed_dim: int, grid_size: int) -> torch.Tensor:
    """Sin-cos position table (grid_size**2, embed_dim), row-major over the patch grid.

    Half of the channels encode the column index and half the row index, in that order.
    """
    if embed_dim % 4:
        raise ValueError(f"embed_dim must be a multiple of 4, got {embed_dim}")
    rows, cols = torch.meshgrid(torch.arange(grid_size), torch.arange(grid_size), indexing="ij")
    first = sincos_1d(embed_dim // 2, cols.reshape(-1))
    second = sincos_1d(embed_dim // 2, rows.reshape(-1))
    return torch.cat([first, second], dim=1)


# ---------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------


class DiT(nn.Module):
    """Class-conditional Diffusion Transformer (adaLN-Zero), tiny by default."""

    def __init__(
        self,
        input_size: int = 8,
        patch_size: int = 2,
        in_channels: int = 4,
        hidden_size: int = 64,
        depth: int = 2,
        num_heads: int = 4,
        mlp_ratio: float = 4.0,
        class_dropout_prob: float = 0.1,
        num_classes: int = 10,
        learn_sigma: bool = True,
    ):
        super().__init__()
        self.learn_sigma = learn_sigma
        self.in_channels = in_channels
        self.out_channels = in_channels * 2 if learn_sigma else in_channels
        self.patch_size = patch_size
        self.num_heads = num_heads

        self.x_embedder = PatchEmbed(input_size, patch_size, in_channels, hidden_size, bias=True)
        self.t_embedder = TimestepEmbedder(hidden_size)
        self.y_embedder = LabelEmbedder(num_classes, hidden_size, class_dropout_prob)
        num_patches = self.x_embedder.num_patches
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches, hidden_size), requires_grad=False)
        self.blocks = nn.ModuleList(
            [DiTBlock(hidden_size, num_heads, mlp_ratio=mlp_ratio) for _ in range(depth)]
        )
        self.final_layer = FinalLayer(hidden_size, patch_size, self.out_channels)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """Original DiT init: xavier linears, sin-cos ``pos_embed``, zeroed adaLN/output layers."""

        def xavier_linear(module: nn.Module) -> None:
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

        self.apply(xavier_linear)

        grid = int(self.x_embedder.num_patches**0.5)
        table = sincos_2d(self.pos_embed.shape[-1], grid)
        self.pos_embed.data.copy_(table.float().unsqueeze(0))

        # The patch convolution is initialised like a linear layer over its flattened kernel.
        weight = self.x_embedder.proj.weight.data
        nn.init.xavier_uniform_(weight.view(weight.shape[0], -1))
        nn.init.zeros_(self.x_embedder.proj.bias)

        nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)

        # adaLN-Zero: every block starts as the identity and the model outputs zeros.
        for block in self.blocks:
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].weight)
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """Per-patch outputs (N, T, p*p*C) back to images (N, C, H, W)."""
        c = self.out_channels
        p = self.x_embedder.patch_size[0]
        side = int(x.shape[1] ** 0.5)
        if side * side != x.shape[1]:
            raise ValueError(f"token count {x.shape[1]} is not a square")
        x = x.reshape(x.shape[0], side, side, p, p, c)
        x = torch.einsum("nhwpqc->nchpwq", x)
        return x.reshape(x.shape[0], c, side * p, side * p)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Predict (N, out_channels, H, W) from ``x`` (N, C, H, W), ``t`` (N,) and ``y`` (N,)."""
        x = self.x_embedder(x) + self.pos_embed
        t = self.t_embedder(t)
        y = self.y_embedder(y, self.training)
        c = t + y
        for block in self.blocks:
            x = block(x, c)
        x = self.final_layer(x, c)
        return self.unpatchify(x)

    def forward_with_cfg(
        self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, cfg_scale: float
    ) -> torch.Tensor:
        """Classifier-free guided forward over a [cond, uncond] batch.

        Only the first half of ``x`` is used (duplicated); ``self.forward`` is called directly,
        so forward hooks on this root module do not fire. Guidance mixes the first
        ``in_channels`` output channels; the rest (learned sigma) pass through unguided.
        """
        half = x[: len(x) // 2]
        combined = torch.cat([half, half], dim=0)
        model_out = self.forward(combined, t, y)
        eps, rest = model_out[:, : self.in_channels], model_out[:, self.in_channels :]
        cond_eps, uncond_eps = torch.split(eps, len(eps) // 2, dim=0)
        half_eps = uncond_eps + cfg_scale * (cond_eps - uncond_eps)
        eps = torch.cat([half_eps, half_eps], dim=0)
        return torch.cat([eps, rest], dim=1)


# ---------------------------------------------------------------------------------------------
# Sampler
# ---------------------------------------------------------------------------------------------


def ddim_timesteps(num_steps: int, num_train_timesteps: int = 1000) -> list[int]:
    """``num_steps`` distinct int timesteps, evenly spaced from ``num_train_timesteps - 1`` to 0."""
    if not 1 <= num_steps <= num_train_timesteps:
        raise ValueError(f"num_steps must be in [1, {num_train_timesteps}], got {num_steps}")
    if num_steps == 1:
        return [num_train_timesteps - 1]
    last = num_train_timesteps - 1
    return [round(last - i * last / (num_steps - 1)) for i in range(num_steps)]


@torch.no_grad()
def sample_original_dit(
    model: DiT,
    *,
    num_steps: int = 10,
    batch: int = 2,
    cfg_scale: float | None = None,
    seed: int = 0,
    num_train_timesteps: int = 1000,
) -> torch.Tensor:
    """Deterministic DDIM (eta=0) sampling from an original-style DiT.

    Linear beta schedule 1e-4..0.02 over ``num_train_timesteps``. Labels are
    ``arange(batch) % num_classes``. With ``cfg_scale`` each step calls
    ``model.forward_with_cfg(cat([x, x]), t, cat([y, null]), cfg_scale)`` (null label =
    ``num_classes``, batch order [cond, uncond]); without it, ``model(x, t, y)``. The first
    ``in_channels`` output channels are the noise prediction. Returns the final latents
    (batch, in_channels, H, W).
    """
    param = next(model.parameters())
    device, dtype = param.device, param.dtype
    side = int(model.x_embedder.num_patches**0.5) * model.patch_size
    channels = model.in_channels
    num_classes = model.y_embedder.num_classes

    betas = torch.linspace(1e-4, 0.02, num_train_timesteps, dtype=torch.float64)
    alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)

    generator = torch.Generator(device="cpu").manual_seed(seed)
    x = torch.randn(batch, channels, side, side, generator=generator, dtype=torch.float32)
    x = x.to(device=device, dtype=dtype)
    y = torch.arange(batch, device=device) % num_classes
    null_y = torch.full_like(y, num_classes)

    steps = ddim_timesteps(num_steps, num_train_timesteps)
    for i, step in enumerate(steps):
        if cfg_scale is not None:
            t_in = torch.full((2 * batch,), step, dtype=torch.long, device=device)
            out = model.forward_with_cfg(torch.cat([x, x]), t_in, torch.cat([y, null_y]), cfg_scale)
            eps = out[:batch, :channels]
        else:
            t_in = torch.full((batch,), step, dtype=torch.long, device=device)
            eps = model(x, t_in, y)[:, :channels]

        a_t = alphas_cumprod[step].item()
        a_prev = alphas_cumprod[steps[i + 1]].item() if i + 1 < len(steps) else 1.0
        x0 = (x - math.sqrt(1.0 - a_t) * eps) / math.sqrt(a_t)
        x = math.sqrt(a_prev) * x0 + math.sqrt(1.0 - a_prev) * eps
    return x
