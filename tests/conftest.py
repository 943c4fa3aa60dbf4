"""Shared fixtures: tiny random models and helpers that prove what the engine did.

Every model here has its zero-initialised gates and output layers re-randomised, so a branch
that is reused with a stale output really changes the result.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import torch
from torch import nn

import smoothcache
from smoothcache.testing.models.original_dit import DiT, ddim_timesteps
from smoothcache.testing.models.random_init import randomize_

# The test models are tiny: handing each small op to a second thread costs more than the op,
# and many times more on a busy 2-core machine.
torch.set_num_threads(1)


@pytest.fixture
def original_dit() -> DiT:
    """A tiny original-DiT-structured model (2 blocks, hidden 64), random, eval mode."""
    torch.manual_seed(0)
    return randomize_(DiT(depth=2).eval(), seed=1)


@pytest.fixture
def diffusers_dit() -> nn.Module:
    """A tiny diffusers DiTTransformer2DModel (2 blocks), random, eval mode."""
    from smoothcache.testing.models.tiny_diffusers import tiny_dit_transformer

    return tiny_dit_transformer(seed=0)


def load_script(path: str) -> Any:
    """Import a script of the repository that is not in a package (``examples/x.py``)."""
    import importlib.util
    import sys
    from pathlib import Path

    file = Path(__file__).resolve().parents[1] / path
    spec = importlib.util.spec_from_file_location(file.stem, file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def curves_file(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A real curves file (reuse and forecast errors, 5 steps) of a tiny original DiT."""
    from smoothcache.testing.models.original_dit import sample_original_dit

    torch.manual_seed(0)
    model = randomize_(DiT(depth=1).eval(), seed=1)
    import smoothcache

    with smoothcache.calibrating(model, lookahead=2, orders=1) as recorder:
        sample_original_dit(model, num_steps=5)
    path = tmp_path_factory.mktemp("curves") / "c.safetensors"
    recorder.curves().save(path)
    return path


@contextmanager
def observing_original_forwards(
    model: nn.Module, paths: list[str], observe: Callable[[str, Any], None]
) -> Iterator[None]:
    """Call ``observe(path, output)`` for every output the *original* forward of each module at
    ``paths`` computes.

    Installs an observing instance ``forward`` before smoothcache patches the module, so the
    engine wraps it: a reused step never reaches it. Removed on exit.
    """
    modules = {path: model.get_submodule(path) for path in paths}
    for path, module in modules.items():
        original = module.forward

        def observing(*args: Any, _p: str = path, _f: Callable[..., Any] = original, **kw: Any):
            output = _f(*args, **kw)
            observe(_p, output)
            return output

        module.forward = observing
    try:
        yield
    finally:
        for module in modules.values():
            del module.forward


@contextmanager
def count_original_calls(model: nn.Module, paths: list[str]) -> Iterator[dict[str, int]]:
    """Count calls of the *original* forward of each module at ``paths`` (see
    :func:`observing_original_forwards`)."""
    counts: dict[str, int] = defaultdict(int)

    def count(path: str, _output: Any) -> None:
        counts[path] += 1

    with observing_original_forwards(model, paths, count):
        yield counts


def module_state(model: nn.Module) -> dict[str, Any]:
    """Everything smoothcache may touch on each module: forward attribute, hooks, tensors."""
    state: dict[str, Any] = {}
    for name, module in model.named_modules():
        state[name] = (
            sorted(module.__dict__),  # no attribute left behind
            module.__dict__.get("forward", None),
            dict(module._forward_hooks),
            dict(module._forward_pre_hooks),
            dict(module._forward_hooks_with_kwargs),
            dict(module._forward_pre_hooks_with_kwargs),
        )
    for name, tensor in model.state_dict().items():
        state[f"tensor:{name}"] = tensor.clone()
    return state


def tiny_module(cls: type, **config: Any) -> Any:
    """A real diffusers module from a tiny ``config``: seeded, all-zero weights (gates, output
    layers) re-drawn so every input reaches the output, float32, eval mode."""
    from smoothcache.testing.models.diffusers_zoo import randomize_zeros_

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        module = cls(**config)
    return randomize_zeros_(module).float().eval()


def tiny_flux_pipeline() -> Any:
    """A real ``FluxPipeline`` around the zoo's tiny FLUX transformer (zero-initialised layers
    re-randomised), without VAE or text encoders: pass prompt embeddings, take latent output."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline

    from smoothcache.testing.models.diffusers_zoo import ZOO

    absent = dict.fromkeys(["vae", "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2"])
    pipe = FluxPipeline(
        transformer=ZOO["FluxTransformer2DModel"].factory(),
        scheduler=FlowMatchEulerDiscreteScheduler(),
        **absent,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_flux_call(pipe: Any) -> dict[str, Any]:
    """Call arguments of :func:`tiny_flux_pipeline`: seeded prompt embeddings, the null prompt
    as negative with true guidance (two transformer calls per step), 8 steps at 32 x 32."""
    transformer = pipe.transformer
    gen = torch.Generator().manual_seed(0)
    dim = transformer.config.joint_attention_dim
    pooled_dim = transformer.config.pooled_projection_dim
    return {
        "prompt_embeds": torch.randn(2, 8, dim, generator=gen),
        "pooled_prompt_embeds": torch.randn(2, pooled_dim, generator=gen),
        "negative_prompt_embeds": torch.zeros(2, 8, dim),
        "negative_pooled_prompt_embeds": torch.zeros(2, pooled_dim),
        "true_cfg_scale": 2.0,
        "num_inference_steps": 8,
        "height": 32,
        "width": 32,
    }


def assert_same_state(before: dict[str, Any], after: dict[str, Any]) -> None:
    """Both snapshots from :func:`module_state` are identical (tensors bit-exact)."""
    assert before.keys() == after.keys()
    for key, value in before.items():
        if key.startswith("tensor:"):
            assert torch.equal(value, after[key]), key
        else:
            assert value == after[key], key


@torch.no_grad()
def sample_two_calls(
    model: DiT, num_steps: int, cfg_scale: float = 3.0, seed: int = 0, batch: int = 2
) -> torch.Tensor:
    """DDIM with guidance as two separate model calls per step (cond, then uncond).

    Written here so the engine sees the "same timestep twice = two passes" pattern that many
    diffusers pipelines use.
    """
    gen = torch.Generator().manual_seed(seed)
    side = int(model.x_embedder.num_patches**0.5) * model.patch_size
    x = torch.randn(batch, model.in_channels, side, side, generator=gen)
    y = torch.arange(batch) % model.y_embedder.num_classes
    null = torch.full_like(y, model.y_embedder.num_classes)
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    alphas = torch.cumprod(1 - betas, 0)
    steps = ddim_timesteps(num_steps)
    for i, t in enumerate(steps):
        tt = torch.full((batch,), t, dtype=torch.long)
        cond = model(x, tt, y)[:, : model.in_channels]
        uncond = model(x, tt, null)[:, : model.in_channels]
        eps = uncond + cfg_scale * (cond - uncond)
        a_t = alphas[t].float()
        a_prev = alphas[steps[i + 1]].float() if i + 1 < len(steps) else torch.tensor(1.0)
        x0 = (x - (1 - a_t).sqrt() * eps) / a_t.sqrt()
        x = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
    return x


def detected_only_as(obj: Any, name: str) -> None:
    """``obj`` is detected as adapter ``name`` and every other adapter rejects it."""
    assert smoothcache.detect(obj).name == name
    for adapter in smoothcache.adapters():
        if adapter.name not in (name, "diffusers-generic"):  # the fallback ranks last
            root = adapter.root(obj)
            assert root is None or not adapter.matches(root), adapter.name


def changed_by_far(out: torch.Tensor, base: torch.Tensor) -> bool:
    """``out`` differs from ``base`` by far more than float rounding."""
    return bool((out - base).abs().max() > 1e-3 * base.abs().max())
