"""Sanity checks of the tiny test models themselves (not of smoothcache)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from smoothcache.testing.models.original_dit import DiT, ddim_timesteps, sample_original_dit
from smoothcache.testing.models.random_init import randomize_


def _zeroed_modulations(model: DiT) -> list[str]:
    """Names of the adaLN output layers (and final linear) whose weight and bias are all zero."""
    layers = {
        f"blocks.{i}.adaLN_modulation.-1": block.adaLN_modulation[-1]
        for i, block in enumerate(model.blocks)
    }
    layers["final_layer.adaLN_modulation.-1"] = model.final_layer.adaLN_modulation[-1]
    layers["final_layer.linear"] = model.final_layer.linear
    return [
        name
        for name, layer in layers.items()
        if not layer.weight.detach().any() and not layer.bias.detach().any()
    ]


def _tiny_dit(seed: int = 0) -> DiT:
    return randomize_(DiT().eval(), seed=seed)


# ---------------------------------------------------------------------------------------------
# Original-DiT clone
# ---------------------------------------------------------------------------------------------


def test_original_dit_zero_init_then_randomized() -> None:
    model = DiT().eval()
    assert len(_zeroed_modulations(model)) == len(model.blocks) + 2
    x, t, y = torch.randn(2, 4, 8, 8), torch.tensor([3, 700]), torch.tensor([0, 5])
    with torch.no_grad():
        assert not model(x, t, y).any()  # adaLN-Zero: the untouched model outputs zeros
    randomize_(model)
    assert _zeroed_modulations(model) == []
    for block in model.blocks:
        assert block.adaLN_modulation[-1].weight.abs().min() > 0


def test_randomize_is_seeded() -> None:
    a, b, c = _tiny_dit(seed=1), _tiny_dit(seed=1), _tiny_dit(seed=2)
    for (name, pa), pb, pc in zip(
        a.named_parameters(), b.parameters(), c.parameters(), strict=True
    ):
        assert torch.equal(pa, pb), name
        assert not torch.equal(pa, pc), name


def test_original_dit_structure() -> None:
    model = DiT(depth=3)
    assert type(model).__name__ == "DiT"
    assert [type(b).__name__ for b in model.blocks] == ["DiTBlock"] * 3
    assert type(model.t_embedder).__name__ == "TimestepEmbedder"
    assert type(model.y_embedder).__name__ == "LabelEmbedder"
    assert type(model.final_layer).__name__ == "FinalLayer"
    assert model.y_embedder.embedding_table.num_embeddings == 11  # 10 classes + null
    assert model.x_embedder.num_patches == 16
    assert not model.pos_embed.requires_grad
    assert (model.out_channels, model.patch_size, model.num_heads) == (8, 2, 4)
    block = model.blocks[0]
    assert type(block.attn).__name__ == "Attention" and block.attn.num_heads == 4
    assert type(block.mlp).__name__ == "Mlp"
    assert isinstance(block.mlp.act, torch.nn.GELU) and block.mlp.act.approximate == "tanh"
    assert block.adaLN_modulation[-1].out_features == 6 * 64
    assert DiT(learn_sigma=False).out_channels == 4


def test_original_dit_forward_shape_and_branch_calls() -> None:
    model = _tiny_dit()
    seen: list[tuple[str, tuple[int, ...]]] = []
    for i, block in enumerate(model.blocks):
        for kind in ("attn", "mlp"):
            getattr(block, kind).register_forward_pre_hook(
                lambda _m, args, name=f"{i}.{kind}": seen.append((name, tuple(args[0].shape)))
            )
    x = torch.randn(3, 4, 8, 8)
    with torch.no_grad():
        out = model(x, torch.tensor([0, 10, 999]), torch.tensor([1, 2, 3]))
    assert out.shape == (3, 8, 8, 8)
    assert torch.isfinite(out).all() and out.abs().max() > 0
    assert seen == [(n, (3, 16, 64)) for n in ("0.attn", "0.mlp", "1.attn", "1.mlp")]


def test_forward_with_cfg_bypasses_root_call() -> None:
    model = _tiny_dit()
    root_calls: list[int] = []
    t_calls: list[tuple[int, ...]] = []
    model.register_forward_pre_hook(lambda _m, _a: root_calls.append(1))
    model.t_embedder.register_forward_pre_hook(
        lambda _m, args: t_calls.append(tuple(args[0].shape))
    )

    x = torch.randn(2, 4, 8, 8)
    t = torch.tensor([500, 500, 500, 500])
    y = torch.tensor([1, 2, 10, 10])
    with torch.no_grad():
        for expected in (1, 2):
            out = model.forward_with_cfg(torch.cat([x, x]), t, y, 4.0)
            assert root_calls == []
            assert len(t_calls) == expected
    assert t_calls == [(4,), (4,)]
    assert out.shape == (4, 8, 8, 8)

    with torch.no_grad():
        raw = model.forward(torch.cat([x, x]), t, y)
    cond, uncond = raw[:2, :4], raw[2:, :4]
    guided = uncond + 4.0 * (cond - uncond)
    assert torch.allclose(out[:2, :4], guided, rtol=1e-5, atol=1e-6)
    assert torch.allclose(out[2:, :4], guided, rtol=1e-5, atol=1e-6)
    assert torch.equal(out[:, 4:], raw[:, 4:])  # learned sigma is not guided

    with torch.no_grad():
        model(x, t[:2], y[:2])
    assert root_calls == [1]


def test_ddim_timesteps() -> None:
    steps = ddim_timesteps(10)
    assert steps[0] == 999 and steps[-1] == 0 and len(set(steps)) == 10
    assert steps == sorted(steps, reverse=True)
    assert ddim_timesteps(1000) == list(range(999, -1, -1))


@pytest.mark.parametrize("cfg_scale", [None, 4.0])
def test_sample_original_dit_deterministic(cfg_scale: float | None) -> None:
    model = _tiny_dit()
    calls: list[int] = []
    model.t_embedder.register_forward_pre_hook(lambda _m, args: calls.append(args[0].shape[0]))
    a = sample_original_dit(model, num_steps=4, cfg_scale=cfg_scale, seed=3)
    b = sample_original_dit(model, num_steps=4, cfg_scale=cfg_scale, seed=3)
    c = sample_original_dit(model, num_steps=4, cfg_scale=cfg_scale, seed=4)
    assert a.shape == (2, 4, 8, 8)
    assert torch.isfinite(a).all()
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert calls == [4 if cfg_scale is not None else 2] * 12


def test_sample_original_dit_guidance_changes_result() -> None:
    model = _tiny_dit()
    plain = sample_original_dit(model, num_steps=3)
    guided = sample_original_dit(model, num_steps=3, cfg_scale=4.0)
    assert not torch.allclose(plain, guided)


# ---------------------------------------------------------------------------------------------
# Tiny diffusers models
# ---------------------------------------------------------------------------------------------

CALL = {"class_labels": [1, 2], "num_inference_steps": 5, "guidance_scale": 4.0}


def test_tiny_dit_transformer_has_no_zero_gates() -> None:
    from smoothcache.testing.models.tiny_diffusers import tiny_dit_transformer

    model = tiny_dit_transformer(num_layers=3)
    assert not model.training
    assert len(model.transformer_blocks) == 3
    assert model.config.out_channels == 8 and model.config.num_embeds_ada_norm == 1000
    for block in model.transformer_blocks:
        assert block.norm1.linear.weight.abs().min() > 0
    assert model.proj_out_2.weight.abs().min() > 0
    x = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        t, labels = torch.tensor([10, 900]), torch.tensor([3, 1000])
        out = model(x, timestep=t, class_labels=labels).sample
    assert out.shape == (2, 8, 8, 8) and torch.isfinite(out).all()


def test_tiny_dit_pipeline_runs_and_is_finite() -> None:
    from smoothcache.testing.models.tiny_diffusers import tiny_dit_pipeline

    pipe = tiny_dit_pipeline()
    images = pipe(**CALL, generator=torch.manual_seed(0), output_type="np").images
    assert images.shape == (2, 8, 8, 3)
    assert np.isfinite(images).all()
    again = pipe(**CALL, generator=torch.manual_seed(0), output_type="np").images
    np.testing.assert_array_equal(images, again)
    # "latent" is not supported: it silently decodes like "np".
    latent_type = pipe(**CALL, generator=torch.manual_seed(0), output_type="latent").images
    np.testing.assert_array_equal(latent_type, images)


def test_tiny_dit_pipeline_calls_transformer_once_per_step() -> None:
    from smoothcache.testing.models.tiny_diffusers import tiny_dit_pipeline

    pipe = tiny_dit_pipeline()
    calls: list[tuple[tuple[int, ...], list[int], list[int]]] = []

    def record(_module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        timestep = kwargs["timestep"]
        calls.append((tuple(args[0].shape), timestep.tolist(), kwargs["class_labels"].tolist()))

    pipe.transformer.register_forward_pre_hook(record, with_kwargs=True)
    pipe(**CALL, generator=torch.manual_seed(0), output_type="np")
    assert len(calls) == 5
    assert [c[1] for c in calls] == [[t] * 4 for t in (800, 600, 400, 200, 0)]
    assert all(c[0] == (4, 4, 8, 8) and c[2] == [1, 2, 1000, 1000] for c in calls)


def test_dit_pipeline_latents_match_decoded_output() -> None:
    from smoothcache.testing.models.tiny_diffusers import dit_pipeline_latents, tiny_dit_pipeline

    pipe = tiny_dit_pipeline()
    latents = dit_pipeline_latents(pipe, **CALL, generator=torch.manual_seed(0), output_type="pt")
    assert latents.shape == (2, 4, 8, 8) and torch.isfinite(latents).all()
    assert "step" not in vars(pipe.scheduler)  # the recording wrapper was removed
    images = pipe(**CALL, generator=torch.manual_seed(0), output_type="pt").images
    with torch.no_grad():
        decoded = pipe.vae.decode(1 / pipe.vae.config.scaling_factor * latents).sample
    assert torch.equal((decoded / 2 + 0.5).clamp(0, 1), images)
