"""Load the second digits DiT and the DDIM scheduler it is sampled with.

The weights and ``config.json`` beside this file are in the reference model's format, so
``smoothcache.reference.load_reference_model(path=...)`` loads them; what differs is the
scheduler (betas and prediction type come from this ``config.json``), so sample with
:func:`scheduler`, not the reference model's default::

    from smoothcache.reference import sample
    from benchmarks.second_model.model import load, scheduler   # from the repository root

    model = load()
    images = sample(model, labels, num_steps=50, guidance_scale=1.5, seed=0,
                    scheduler=scheduler(50))
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from smoothcache.reference import load_reference_model
from smoothcache.reference import make_scheduler as reference_make_scheduler

if TYPE_CHECKING:
    from diffusers import DDIMScheduler, DiTTransformer2DModel

FOLDER = Path(__file__).resolve().parent


def load(device: str | torch.device = "cpu", folder: str | Path = FOLDER) -> DiTTransformer2DModel:
    """The model in ``folder`` (default: the weights beside this file), eval mode, frozen."""
    return load_reference_model(path=folder, device=device)


def make_scheduler(folder: str | Path = FOLDER, num_steps: int = 50) -> DDIMScheduler:
    """The DDIM scheduler for the model in ``folder``, set to ``num_steps`` steps.

    ``smoothcache.reference.make_scheduler`` with the folder's ``config.json`` (its betas and
    prediction type). ``smoothcache.reference.sample`` hands the guided model output to the
    scheduler's ``step`` under the name ``eps``; the scheduler reads it according to
    ``prediction_type``, so a ``v_prediction`` or ``sample`` model is sampled correctly too
    (guidance is a linear combination, valid for any of the three).
    """
    return reference_make_scheduler(num_steps, path=folder)


def scheduler(num_steps: int = 50) -> DDIMScheduler:
    """The DDIM scheduler for the weights beside this file, set to ``num_steps`` steps."""
    return make_scheduler(FOLDER, num_steps)
