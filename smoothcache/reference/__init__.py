"""The reference model: a small class-conditional DiT trained on scikit-learn's digits.

No pretrained DiT can be downloaded everywhere this library is tested, so it ships its own:
``digits-dit``, a diffusers ``DiTTransformer2DModel`` (2.1M parameters, 8x8 pixels, 10 classes
plus a null class for classifier-free guidance, epsilon prediction), trained by
``examples/train_reference.py``; ``MODEL_CARD.md`` beside this file says how. The demo and the
quality-versus-speed benchmark run on it, with:

- :func:`load_reference_model` -- the shipped weights, in eval mode;
- :func:`sample` -- a DDIM sampling loop with guidance as one doubled batch per step, and
  :func:`initial_noise`, the noise it starts from (to re-sample part of a seeded batch);
- :func:`digits_classifier` -- a scikit-learn MLP trained on the real digits, which scores
  samples (accuracy) and gives the features for a Fréchet distance;
- :func:`image_grid` and :func:`save_grid` -- samples as a PNG.

diffusers and scikit-learn are optional dependencies (the ``demo`` extra); they are imported
when a function needs them.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from diffusers import DDIMScheduler, DiTTransformer2DModel

WEIGHTS = "digits-dit.safetensors"
CONFIG = "config.json"


def _folder(path: str | Path | None) -> Path:
    if path is not None:
        return Path(path)
    return Path(str(resources.files(__name__)))


def reference_config(path: str | Path | None = None) -> dict[str, Any]:
    """The JSON config shipped beside the weights: model, scheduler and training record.

    ``path`` is a folder holding ``config.json`` (default: the one inside this package).
    """
    return json.loads((_folder(path) / CONFIG).read_text())


def load_reference_model(
    path: str | Path | None = None, device: str | torch.device = "cpu"
) -> DiTTransformer2DModel:
    """The shipped ``digits-dit`` model, in eval mode, with its weights frozen.

    ``path`` is a folder holding ``digits-dit.safetensors`` and ``config.json`` (default: the
    ones inside this package). The built-in label dropout of every embedder is switched off:
    it would otherwise drop labels independently per block whenever the model is in train mode.
    """
    from diffusers import DiTTransformer2DModel
    from safetensors.torch import load_file

    folder = _folder(path)
    config = reference_config(folder)
    model = DiTTransformer2DModel(**config["model"])
    model.load_state_dict(load_file(str(folder / WEIGHTS)), strict=True)
    for module in model.modules():
        if hasattr(module, "dropout_prob") and hasattr(module, "embedding_table"):
            module.dropout_prob = 0.0
    return model.to(device).eval().requires_grad_(False)


def make_scheduler(num_steps: int = 50, path: str | Path | None = None) -> DDIMScheduler:
    """The DDIM scheduler the reference model is sampled with, set to ``num_steps`` steps.

    Betas and prediction type are the training ones from ``config.json`` (1,000 steps,
    ``squaredcos_cap_v2``, epsilon; ``path`` is another model folder in the same format, whose
    ``config.json`` gives them instead); ``trailing`` spacing starts at the noisiest timestep.
    ``clip_sample=True`` keeps the predicted clean image in [-1, 1]; the sampler pairs it with
    ``use_clipped_model_output=True`` (see :func:`sample`).
    """
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler(
        **reference_config(path)["scheduler"],
        clip_sample=True,
        set_alpha_to_one=True,
        timestep_spacing="trailing",
    )
    scheduler.set_timesteps(num_steps)
    return scheduler


def _labels(labels: Sequence[int] | torch.Tensor, num_classes: int) -> torch.Tensor:
    tensor = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
    if tensor.numel() == 0 or tensor.min() < 0 or tensor.max() >= num_classes:
        raise ValueError(
            f"labels must be a non-empty list of classes 0..{num_classes - 1}, found "
            f"{tensor.tolist()!r:.80}"
        )
    return tensor


@torch.no_grad()
def initial_noise(
    model: DiTTransformer2DModel,
    count: int,
    seed: int = 0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The standard normal noise :func:`sample` starts ``count`` samples from, unscaled.

    Drawn from ``generator`` if given (on its device), else from a CPU generator seeded with
    ``seed``; shaped ``(count, in_channels, sample_size, sample_size)``.
    """
    if generator is None:
        generator = torch.Generator().manual_seed(seed)
    return torch.randn(_noise_shape(model, count), generator=generator, device=generator.device)


def _noise_shape(model: DiTTransformer2DModel, count: int) -> tuple[int, int, int, int]:
    """``(count, in_channels, sample_size, sample_size)`` of ``model``'s config."""
    size = int(model.config.sample_size)
    return (count, int(model.config.in_channels), size, size)


def sample(
    model: DiTTransformer2DModel,
    labels: Sequence[int] | torch.Tensor,
    *,
    num_steps: int = 50,
    guidance_scale: float = 1.5,
    seed: int = 0,
    generator: torch.Generator | None = None,
    noise: torch.Tensor | None = None,
    scheduler: DDIMScheduler | None = None,
    on_step: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Sample one digit per label with DDIM and classifier-free guidance; ``(N, 1, 8, 8)``.

    Guidance runs as one doubled batch ``[cond, uncond]`` per step, one model call per step, the
    unconditional half labelled with the null class ``num_embeds_ada_norm``; a guidance scale of
    1 runs the conditional half alone. The timestep is expanded to a 1-D tensor, one entry per
    row. The initial noise comes from ``generator`` if given, else from a CPU generator seeded
    with ``seed``, so the same seed gives the same samples on any device. ``noise`` gives it
    directly instead (``seed`` is then unused; with ``generator`` too it is an error), shaped
    :func:`initial_noise`'s way: sampling ``labels[i]`` with ``initial_noise(model,
    len(labels), seed)[i]`` reproduces sample ``i`` of a seeded batch up to the rounding of
    batched arithmetic (a sample's trajectory depends only on its own noise and label).

    diffusers' ``DiTPipeline`` cannot guide this model (it hard-codes the null class 1000), hence
    this loop. DDIM's ``step`` is told to use the clipped model output: with guidance, keeping
    the unclipped guided epsilon lets the overshoot accumulate until samples collapse.
    ``scheduler`` replaces the default :func:`make_scheduler` (its timesteps are set to
    ``num_steps``); ``on_step`` is called with the step index after every step.
    Returns images in [-1, 1] on the model's device.
    """
    num_classes = int(model.config.num_embeds_ada_norm)
    cond = _labels(labels, num_classes)
    n = len(cond)
    param = next(model.parameters())
    device, dtype = param.device, param.dtype
    if scheduler is None:
        scheduler = make_scheduler(num_steps)
    else:
        scheduler.set_timesteps(num_steps)
    if noise is None:
        noise = initial_noise(model, n, seed, generator)
    elif generator is not None:
        raise ValueError(
            "sample() takes the initial noise from noise or from generator, not both; pass one"
        )
    elif tuple(noise.shape) != _noise_shape(model, n):
        raise ValueError(
            f"noise must be shaped {_noise_shape(model, n)} for {n} labels, found "
            f"{tuple(noise.shape)}; make it with initial_noise(model, len(labels), seed)"
        )
    x = noise.to(device=device, dtype=dtype) * scheduler.init_noise_sigma
    guided = guidance_scale != 1.0
    if guided:
        class_labels = torch.cat([cond, torch.full_like(cond, num_classes)]).to(device)
    else:
        class_labels = cond.to(device)
    batch = len(class_labels)
    for index, t in enumerate(scheduler.timesteps):
        model_in = torch.cat([x, x]) if guided else x
        timestep = t.to(device).expand(batch)
        eps = model(model_in, timestep=timestep, class_labels=class_labels).sample
        if guided:
            eps_cond, eps_uncond = eps.chunk(2)
            eps = eps_uncond + guidance_scale * (eps_cond - eps_uncond)
        x = scheduler.step(eps, t, x, eta=0.0, use_clipped_model_output=True).prev_sample
        if on_step is not None:
            on_step(index)
    return x.clamp(-1.0, 1.0)


# -- comparisons ---------------------------------------------------------------------------------


def psnr(images: torch.Tensor, reference: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB of ``images`` against ``reference``, both in [-1, 1].

    One number over the whole batch (from the mean squared error of every pixel), so it stays
    finite while any sample differs; ``inf`` when all are identical.
    """
    mse = torch.mean((images.double() - reference.double()) ** 2).item()
    return float("inf") if mse == 0 else 10.0 * float(np.log10(4.0 / mse))


def relative_l2(images: torch.Tensor, reference: torch.Tensor) -> float:
    """``||images - reference||_2 / ||reference||_2`` over the whole batch."""
    diff = torch.linalg.vector_norm((images.double() - reference.double()).flatten())
    return float(diff / torch.linalg.vector_norm(reference.double().flatten()).clamp_min(1e-12))


# -- classifier ----------------------------------------------------------------------------------


def _to_features(images: torch.Tensor | np.ndarray) -> np.ndarray:
    """Images in [-1, 1], any shape ``(N, ...)`` with 64 pixels, as ``(N, 64)`` floats in [0, 1]."""
    if isinstance(images, torch.Tensor):
        images = images.detach().to("cpu", torch.float64).numpy()
    array = np.asarray(images, dtype=np.float64).reshape(len(images), -1)
    return np.clip((array + 1.0) / 2.0, 0.0, 1.0)


@dataclass(frozen=True)
class DigitsClassifier:
    """An MLP trained on the real digits; scores samples in [-1, 1] shaped ``(N, 1, 8, 8)``.

    ``test_accuracy`` is its accuracy on the held-out quarter of the real digits, the ceiling
    that sample accuracies should be read against. ``real_images`` (in [-1, 1]) and
    ``real_labels`` are all 1,797 real digits, for Fréchet distances.
    """

    model: Any
    test_accuracy: float
    real_images: np.ndarray
    real_labels: np.ndarray

    def predict(self, images: torch.Tensor | np.ndarray) -> np.ndarray:
        """The predicted class of each image."""
        return self.model.predict(_to_features(images))

    def accuracy(
        self, images: torch.Tensor | np.ndarray, labels: Sequence[int] | torch.Tensor
    ) -> float:
        """The fraction of images classified as the label they were sampled for."""
        expected = np.asarray(torch.as_tensor(labels).reshape(-1).cpu())
        return float((self.predict(images) == expected).mean())

    def features(self, images: torch.Tensor | np.ndarray) -> np.ndarray:
        """The hidden layer's activations (ReLU), computed with numpy: Fréchet-distance features."""
        hidden = _to_features(images) @ self.model.coefs_[0] + self.model.intercepts_[0]
        return np.maximum(hidden, 0.0)


@functools.lru_cache(maxsize=1)
def digits_classifier() -> DigitsClassifier:
    """A deterministic MLP digits classifier, trained on 75% of ``load_digits`` (cached).

    One hidden layer of 64 ReLU units fitted to convergence with L-BFGS, a fixed seed and a
    stratified split: the same weights on every call, trained in under a second.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier
    from threadpoolctl import threadpool_limits

    data = load_digits()
    images = data.images / 16.0 * 2.0 - 1.0
    x = _to_features(images)
    x_train, x_test, y_train, y_test = train_test_split(
        x, data.target, test_size=0.25, random_state=0, stratify=data.target
    )
    mlp = MLPClassifier(
        hidden_layer_sizes=(64,), solver="lbfgs", alpha=1e-3, max_iter=500, random_state=0
    )
    with threadpool_limits(limits=1):  # a problem this small only loses time to more threads
        mlp.fit(x_train, y_train)
    accuracy = float(mlp.score(x_test, y_test))
    return DigitsClassifier(mlp, accuracy, images[:, None].astype(np.float32), data.target)


# -- pictures ------------------------------------------------------------------------------------


def image_grid(
    images: torch.Tensor | np.ndarray, nrow: int = 10, scale: int = 4, pad: int = 1
) -> np.ndarray:
    """Images in [-1, 1] shaped ``(N, 1, H, W)`` tiled ``nrow`` per row: a uint8 grey array.

    Each pixel is enlarged to ``scale`` x ``scale``; tiles are separated by ``pad`` pixels of
    mid grey. Empty tiles of an incomplete last row stay grey.
    """
    if isinstance(images, torch.Tensor):
        images = images.detach().to("cpu", torch.float32).numpy()
    array = np.asarray(images, dtype=np.float32)
    n, height, width = len(array), array.shape[-2], array.shape[-1]
    pixels = np.clip((array.reshape(n, height, width) + 1.0) * 127.5, 0, 255).astype(np.uint8)
    pixels = pixels.repeat(scale, axis=1).repeat(scale, axis=2)
    cols = min(nrow, n)
    rows = -(-n // cols)
    th, tw = height * scale, width * scale
    grid = np.full((rows * (th + pad) + pad, cols * (tw + pad) + pad), 128, dtype=np.uint8)
    for i in range(n):
        r, c = divmod(i, cols)
        top, left = pad + r * (th + pad), pad + c * (tw + pad)
        grid[top : top + th, left : left + tw] = pixels[i]
    return grid


def save_grid(
    images: torch.Tensor | np.ndarray, path: str | Path, nrow: int = 10, scale: int = 4
) -> Path:
    """Write :func:`image_grid` of ``images`` to a PNG at ``path`` (Pillow); return the path."""
    from PIL import Image

    path = Path(path)
    Image.fromarray(image_grid(images, nrow=nrow, scale=scale)).save(path)
    return path


__all__ = [
    "DigitsClassifier",
    "digits_classifier",
    "image_grid",
    "initial_noise",
    "load_reference_model",
    "make_scheduler",
    "psnr",
    "reference_config",
    "relative_l2",
    "sample",
    "save_grid",
]
