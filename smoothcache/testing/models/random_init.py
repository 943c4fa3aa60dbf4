"""Seeded re-initialisation of a module's parameters, so no zero-initialised gate stays zero."""

from __future__ import annotations

import torch
from torch import nn


def randomize_(module: nn.Module, seed: int = 0, std: float = 0.05) -> nn.Module:
    """Overwrite every floating-point parameter of ``module`` with ``normal(0, std)`` draws.

    Weights and biases alike (frozen parameters such as a fixed ``pos_embed`` included) are
    drawn from one CPU ``torch.Generator`` seeded with ``seed``, in ``named_parameters``
    order, so the result depends only on the architecture, ``seed`` and ``std``. Buffers are
    left alone. Returns ``module`` for chaining.
    """
    generator = torch.Generator(device="cpu").manual_seed(seed)
    with torch.no_grad():
        for _, param in module.named_parameters():
            if not param.is_floating_point():
                continue
            values = torch.randn(param.shape, generator=generator, dtype=torch.float32) * std
            param.copy_(values.to(device=param.device, dtype=param.dtype))
    return module
