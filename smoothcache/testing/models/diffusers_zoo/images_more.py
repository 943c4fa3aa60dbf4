"""Zoo entries of image transformers (2-D latents), Sana to Z-Image: each registers a tiny
instance and its pipeline's call convention in :data:`~.entry.ENTRIES`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from smoothcache.testing.models.diffusers_zoo.entry import (
    Entry,
    _builder,
    _gen,
    _inputs,
    _keep_channels,
    _latent,
    _masked_text,
    _randn,
    _register,
    _text,
)


@_register("SanaTransformer2DModel")
def _sana() -> Entry:
    cfg = dict(
        patch_size=1,
        in_channels=4,
        out_channels=4,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=2,
        num_cross_attention_heads=2,
        cross_attention_head_dim=8,
        cross_attention_dim=16,
        caption_channels=8,
        sample_size=8,
    )

    return Entry(
        _builder("SanaTransformer2DModel", cfg),
        _masked_text(8),
        _latent(4, 8, 8),
        pipeline="SanaPipeline",
        notes="timestep multiplied by config.timestep_scale (1.0)",
    )


@_register("Lumina2Transformer2DModel")
def _lumina2() -> Entry:
    cfg = dict(
        sample_size=8,
        patch_size=2,
        in_channels=4,
        hidden_size=24,
        num_layers=2,
        num_refiner_layers=1,
        num_attention_heads=3,
        num_kv_heads=1,
        multiple_of=2,
        ffn_dim_multiplier=None,
        norm_eps=1e-5,
        scaling_factor=1.0,
        axes_dim_rope=(4, 2, 2),
        axes_lens=(128, 128, 128),
        cap_feat_dim=32,
    )

    def fn(m, b, g):
        return {
            "encoder_hidden_states": _randn(g, b, 8, 32),
            "encoder_attention_mask": torch.ones(b, 8, dtype=torch.bool),
            "return_dict": False,
        }

    return Entry(
        _builder("Lumina2Transformer2DModel", cfg),
        _inputs(fn),
        _latent(4, 8, 8),
        timestep_scale=-1 / 1000,
        timestep_offset=1.0,
        pipeline="Lumina2Pipeline",
        notes="timestep reversed: 1 - t/1000; noise and context refiners run before the main "
        "layers",
    )


@_register("LuminaNextDiT2DModel")
def _lumina_next() -> Entry:
    cfg = dict(
        sample_size=8,
        patch_size=2,
        in_channels=4,
        hidden_size=24,
        num_layers=2,
        num_attention_heads=3,
        num_kv_heads=1,
        multiple_of=16,
        ffn_dim_multiplier=None,
        norm_eps=1e-5,
        learn_sigma=True,
        qk_norm=True,
        cross_attention_dim=32,
        scaling_factor=1.0,
    )

    def fn(m, b, g):
        from diffusers.models.embeddings import get_2d_rotary_pos_embed_lumina

        rope = get_2d_rotary_pos_embed_lumina(8, 384, 384, linear_factor=1.0, ntk_factor=1.0)
        return {
            "encoder_hidden_states": _randn(g, b, 8, 32),
            "encoder_mask": torch.ones(b, 8),
            "image_rotary_emb": rope,
            "cross_attention_kwargs": {},
            "return_dict": False,
        }

    return Entry(
        _builder("LuminaNextDiT2DModel", cfg),
        _inputs(fn),
        _latent(4, 8, 8),
        timestep_scale=-1 / 1000,
        timestep_offset=1.0,
        output=_keep_channels(4),
        pipeline="LuminaPipeline",
        notes="timestep reversed: 1 - t/1000; learned sigma",
    )


def _cogview_inputs() -> Callable[[nn.Module, int], dict]:
    """CogView 3 / 4: text (B, 8, 8) and SDXL-style size conditioning of 64 x 64 pixels."""

    def fn(model, b, g):
        size = torch.tensor([[64, 64]] * b, dtype=torch.float32)
        return {
            "encoder_hidden_states": _randn(g, b, 8, 8),
            "original_size": size,
            "target_size": size,
            "crop_coords": torch.zeros(b, 2),
            "return_dict": False,
        }

    return _inputs(fn)


@_register("CogView3PlusTransformer2DModel")
def _cogview3() -> Entry:
    cfg = dict(
        patch_size=2,
        in_channels=4,
        num_layers=2,
        attention_head_dim=4,
        num_attention_heads=2,
        out_channels=4,
        text_embed_dim=8,
        time_embed_dim=8,
        condition_dim=2,
        pos_embed_max_size=8,
        sample_size=8,
    )

    return Entry(
        _builder("CogView3PlusTransformer2DModel", cfg),
        _cogview_inputs(),
        _latent(4, 8, 8),
        timestep_dtype=torch.int64,
        pipeline="CogView3PlusPipeline",
    )


@_register("CogView4Transformer2DModel")
def _cogview4() -> Entry:
    cfg = dict(
        patch_size=2,
        in_channels=4,
        num_layers=2,
        attention_head_dim=4,
        num_attention_heads=4,
        out_channels=4,
        text_embed_dim=8,
        time_embed_dim=8,
        condition_dim=4,
    )

    return Entry(
        _builder("CogView4Transformer2DModel", cfg),
        _cogview_inputs(),
        _latent(4, 8, 8),
        pipeline="CogView4Pipeline",
    )


@_register("QwenImageTransformer2DModel")
def _qwen() -> Entry:
    cfg = dict(
        patch_size=2,
        in_channels=16,
        out_channels=4,
        num_layers=2,
        attention_head_dim=16,
        num_attention_heads=4,
        joint_attention_dim=16,
        guidance_embeds=False,
        axes_dims_rope=(8, 4, 4),
    )

    def fn(m, b, g):
        return {
            "encoder_hidden_states": _randn(g, b, 8, 16),
            "encoder_hidden_states_mask": torch.ones(b, 8, dtype=torch.long),
            "img_shapes": [[(1, 4, 4)]] * b,
            "guidance": None,
            "return_dict": False,
        }

    return Entry(
        _builder("QwenImageTransformer2DModel", cfg),
        _inputs(fn),
        _latent(16, 16),
        timestep_scale=1 / 1000,
        pipeline="QwenImagePipeline",
        notes="packed 2x2 tokens (B, H*W/4, 4C); dual-stream blocks call attn once for both "
        "streams",
    )


@_register("NucleusMoEImageTransformer2DModel")
def _nucleus() -> Entry:
    cfg = dict(
        patch_size=2,
        in_channels=16,
        out_channels=4,
        num_layers=2,
        attention_head_dim=16,
        num_attention_heads=4,
        joint_attention_dim=16,
        axes_dims_rope=(8, 4, 4),
        moe_enabled=False,
        capacity_factors=[8.0, 8.0],
    )

    def fn(m, b, g):
        return {
            "encoder_hidden_states": _randn(g, b, 8, 16),
            "encoder_hidden_states_mask": torch.ones(b, 8, dtype=torch.long),
            "img_shapes": [(1, 4, 4)] * b,
            "return_dict": False,
        }

    return Entry(
        _builder("NucleusMoEImageTransformer2DModel", cfg),
        _inputs(fn),
        _latent(16, 16),
        pipeline="NucleusMoEImagePipeline",
    )


@_register("OmniGenTransformer2DModel")
def _omnigen() -> Entry:
    cfg = dict(
        hidden_size=16,
        num_attention_heads=4,
        num_key_value_heads=4,
        intermediate_size=32,
        num_layers=2,
        pad_token_id=0,
        vocab_size=1000,
        in_channels=4,
        time_step_dim=4,
        rope_scaling={"long_factor": [1, 2], "short_factor": [1, 2]},
    )
    seq_text = 8
    n_img = 16  # 8x8 latent, patch 2
    total = seq_text + 1 + n_img

    def fn(m, b, g):
        return {
            "input_ids": torch.randint(1, 1000, (b, seq_text), generator=g),
            "input_img_latents": [],
            "input_image_sizes": {},
            "attention_mask": torch.ones(b, total, total),
            "position_ids": torch.arange(total).unsqueeze(0).expand(b, -1),
            "return_dict": False,
        }

    return Entry(
        _builder("OmniGenTransformer2DModel", cfg),
        _inputs(fn),
        _latent(4, 8, 8),
        pipeline="OmniGenPipeline",
        timestep_scale=1 / 1000,
        notes="one LLM-style decoder over [text, time token, image]; timestep in [0,1]",
    )


@_register("GlmImageTransformer2DModel")
def _glm() -> Entry:
    cfg = dict(
        patch_size=2,
        in_channels=4,
        out_channels=4,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=2,
        text_embed_dim=32,
        time_embed_dim=16,
        condition_dim=8,
        prior_vq_quantizer_codebook_size=64,
    )

    def fn(m, b, g):
        return {
            "encoder_hidden_states": _randn(g, b, 8, 32),
            "prior_token_id": torch.randint(0, 64, (b, 16), generator=g),
            "prior_token_drop": torch.zeros(b, 16, dtype=torch.bool),
            "target_size": torch.tensor([[64.0, 64.0]] * b),
            "crop_coords": torch.zeros(b, 2),
            "return_dict": False,
        }

    return Entry(
        _builder("GlmImageTransformer2DModel", cfg),
        _inputs(fn),
        _latent(4, 8, 8),
        pipeline="GlmImagePipeline",
    )


@_register("ErnieImageTransformer2DModel")
def _ernie() -> Entry:
    cfg = dict(
        hidden_size=16,
        num_attention_heads=1,
        num_layers=2,
        ffn_hidden_size=16,
        in_channels=16,
        out_channels=16,
        patch_size=1,
        text_in_dim=16,
        rope_theta=256,
        rope_axes_dim=(8, 4, 4),
        eps=1e-6,
        qk_layernorm=True,
    )

    def fn(m, b, g):
        return {
            "text_bth": _randn(g, b, 8, 16),
            "text_lens": torch.full((b,), 8, dtype=torch.long),
            "return_dict": False,
        }

    return Entry(
        _builder("ErnieImageTransformer2DModel", cfg),
        _inputs(fn),
        _latent(16, 4, 4),
        pipeline="ErnieImagePipeline",
    )


@_register("PRXTransformer2DModel")
def _prx() -> Entry:
    cfg = dict(
        in_channels=16,
        patch_size=2,
        context_in_dim=16,
        hidden_size=32,
        mlp_ratio=2.0,
        num_heads=2,
        depth=2,
        axes_dim=[8, 8],
        theta=10000,
    )

    return Entry(
        _builder("PRXTransformer2DModel", cfg),
        _text(16, return_dict=False),
        _latent(16, 8, 8),
        timestep_scale=1 / 1000,
        pipeline="PRXPipeline",
    )


@_register("ZImageTransformer2DModel")
def _zimage() -> Entry:
    cfg = dict(
        all_patch_size=(2,),
        all_f_patch_size=(1,),
        in_channels=16,
        dim=16,
        n_layers=2,
        n_refiner_layers=1,
        n_heads=1,
        n_kv_heads=2,
        qk_norm=True,
        cap_feat_dim=16,
        rope_theta=256.0,
        t_scale=1000.0,
        axes_dims=[8, 4, 4],
        axes_lens=[256, 32, 32],
    )

    def latent(batch: int, seed: int = 0) -> torch.Tensor:
        return torch.randn(batch, 16, 1, 8, 8, generator=_gen(seed))

    def fn(m, b, g):
        return {"cap_feats": [_randn(g, 8, 16) for _ in range(b)], "return_dict": False}

    return Entry(
        _builder("ZImageTransformer2DModel", cfg),
        _inputs(fn),
        latent,
        latent_arg="x",
        timestep_arg="t",
        timestep_scale=-1 / 1000,
        timestep_offset=1.0,
        output=lambda ret: torch.stack(list(ret[0])),
        pipeline="ZImagePipeline",
        notes="latents passed as a list of (C,1,H,W) (here a 5-D tensor, unbound by the model); "
        "timestep (1000 - t)/1000; returns a list; pipeline negates the prediction",
    )
