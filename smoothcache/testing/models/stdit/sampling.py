"""Open-Sora's call patterns: 1.2's ``RFLOW.sample`` and 1.1's IDDPM ``forward_with_cfg``."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from smoothcache.testing.models.stdit.models import (
    STDiT2,
    STDiT3,
)


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
