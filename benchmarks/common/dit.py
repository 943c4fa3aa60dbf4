"""Random DiTs for timing, and the DDIM loop that samples them.

:func:`build` makes a diffusers ``DiTTransformer2DModel`` or the original DiT's structure
(``smoothcache.testing.models.original_dit``) with random weights at one of :data:`SIZES`;
:func:`make_sampler` samples it with DDIM, guidance as one doubled batch, the way DiTPipeline
calls the model. :data:`SCHEDULES` are the paper's DiT-XL/2 schedules the speed benchmarks use.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

SIZES = {  # layers, heads, head_dim, latent side: DiT-XL/2 at 256px is (28, 16, 72, 32)
    "tiny": (2, 2, 16, 8),
    "small": (6, 6, 64, 16),
    "xl": (28, 16, 72, 32),
}
#: The paper's shipped DiT-XL/2 schedules (``dit-xl-2-256/...``) by number of DDIM steps.
SCHEDULES = {30: "ddim-30/alpha-0.35", 50: "ddim-50/alpha-0.18", 70: "ddim-70/alpha-0.08"}


def build(kind: str, size: str, device: str, dtype: torch.dtype) -> nn.Module:
    """A random model of the given family and size."""
    layers, heads, head_dim, side = SIZES[size]
    torch.manual_seed(0)
    if kind == "diffusers":
        from diffusers import DiTTransformer2DModel

        model = DiTTransformer2DModel(
            num_attention_heads=heads,
            attention_head_dim=head_dim,
            in_channels=4,
            out_channels=8,
            num_layers=layers,
            sample_size=side,
            num_embeds_ada_norm=1000,
        )
    else:
        from smoothcache.testing.models.original_dit import DiT

        model = DiT(
            input_size=side,
            hidden_size=heads * head_dim,
            depth=layers,
            num_heads=heads,
            num_classes=1000,
        )
    return model.to(device=device, dtype=dtype).eval()


def make_sampler(
    model: nn.Module, kind: str, steps: int, batch: int, side: int
) -> Callable[[Callable[[int], None] | None], torch.Tensor]:
    """DDIM with guidance as one doubled batch; ``on_step(i)`` runs before each model call."""
    from diffusers import DDIMScheduler

    param = next(model.parameters())
    scheduler = DDIMScheduler(num_train_timesteps=1000, clip_sample=False)
    scheduler.set_timesteps(steps)
    gen = torch.Generator().manual_seed(0)
    noise = torch.randn(batch, 4, side, side, generator=gen).to(param.device, param.dtype)
    labels = torch.cat([torch.arange(batch) % 1000, torch.full((batch,), 1000)]).to(param.device)
    stamps = [t.to(param.device).expand(2 * batch).contiguous() for t in scheduler.timesteps]

    def call(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if kind == "diffusers":
            return model(x, timestep=t, class_labels=labels).sample
        return model(x, t, labels)

    @torch.no_grad()
    def run(on_step: Callable[[int], None] | None = None) -> torch.Tensor:
        x = noise
        for i, (t, tt) in enumerate(zip(scheduler.timesteps, stamps)):
            if on_step is not None:
                on_step(i)
            out = call(torch.cat([x, x]), tt)
            cond, uncond = out[:, :4].chunk(2)
            x = scheduler.step(uncond + 4.0 * (cond - uncond), t, x).prev_sample
        return x

    return run
