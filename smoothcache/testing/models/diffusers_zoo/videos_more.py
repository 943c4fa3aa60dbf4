"""Zoo entries of video transformers (5-D latents), LTX-2 to Kandinsky 5: each registers a
tiny instance and its pipeline's call convention in :data:`~.entry.ENTRIES`.
"""

from __future__ import annotations

import torch

from smoothcache.testing.models.diffusers_zoo.entry import (
    Entry,
    _builder,
    _inputs,
    _latent,
    _masked_text,
    _pad_channels,
    _randn,
    _register,
    _text,
)


@_register("LTX2VideoTransformer3DModel")
def _ltx2() -> Entry:
    cfg = dict(
        in_channels=4,
        out_channels=4,
        patch_size=1,
        patch_size_t=1,
        num_attention_heads=2,
        attention_head_dim=8,
        cross_attention_dim=16,
        audio_in_channels=4,
        audio_out_channels=4,
        audio_num_attention_heads=2,
        audio_attention_head_dim=4,
        audio_cross_attention_dim=8,
        num_layers=2,
        qk_norm="rms_norm_across_heads",
        caption_channels=16,
        rope_double_precision=False,
    )

    def fn(m, b, g):
        return {
            "audio_hidden_states": _randn(g, b, 9, 4),
            "encoder_hidden_states": _randn(g, b, 8, 16),
            "audio_encoder_hidden_states": _randn(g, b, 8, 16),
            "encoder_attention_mask": torch.ones(b, 8, dtype=torch.bool),
            "audio_encoder_attention_mask": torch.ones(b, 8, dtype=torch.bool),
            "num_frames": 2,
            "height": 4,
            "width": 4,
            "audio_num_frames": 9,
            "fps": 25.0,
            "return_dict": False,
        }

    return Entry(
        _builder("LTX2VideoTransformer3DModel", cfg),
        _inputs(fn),
        _latent(32, 4),
        pipeline="LTX2Pipeline",
        timestep_aliases=("sigma",),
        notes="audio+video: returns (video, audio) predictions; audio stream is part of the "
        "inputs here "
        "and stays fixed; pipeline also passes sigma=timestep",
    )


@_register("HunyuanVideoTransformer3DModel")
def _hunyuan_video() -> Entry:
    cfg = dict(
        in_channels=4,
        out_channels=4,
        num_attention_heads=2,
        attention_head_dim=10,
        num_layers=1,
        num_single_layers=1,
        num_refiner_layers=1,
        patch_size=1,
        patch_size_t=1,
        guidance_embeds=True,
        text_embed_dim=16,
        pooled_projection_dim=8,
        rope_axes_dim=(2, 4, 4),
        image_condition_type=None,
    )

    def fn(m, b, g):
        return {
            "encoder_hidden_states": _randn(g, b, 8, 16),
            "encoder_attention_mask": torch.ones(b, 8),
            "pooled_projections": _randn(g, b, 8),
            "guidance": torch.full((b,), 6000.0),
            "return_dict": False,
        }

    return Entry(
        _builder("HunyuanVideoTransformer3DModel", cfg),
        _inputs(fn),
        _latent(4, 2, 4, 4),
        pipeline="HunyuanVideoPipeline",
        notes="double (transformer_blocks) + single (single_transformer_blocks) + token refiner; "
        "guidance passed as guidance_scale*1000",
    )


@_register("HunyuanVideoFramepackTransformer3DModel")
def _framepack() -> Entry:
    cfg = dict(
        in_channels=4,
        out_channels=4,
        num_attention_heads=2,
        attention_head_dim=10,
        num_layers=1,
        num_single_layers=1,
        num_refiner_layers=1,
        patch_size=2,
        patch_size_t=1,
        guidance_embeds=True,
        text_embed_dim=16,
        pooled_projection_dim=8,
        rope_axes_dim=(2, 4, 4),
        image_condition_type=None,
        has_image_proj=True,
        image_proj_dim=16,
        has_clean_x_embedder=True,
    )

    def fn(m, b, g):
        return {
            "encoder_hidden_states": _randn(g, b, 8, 16),
            "encoder_attention_mask": torch.ones(b, 8),
            "pooled_projections": _randn(g, b, 8),
            "guidance": torch.full((b,), 10000.0),
            "image_embeds": _randn(g, b, 4, 16),
            "indices_latents": torch.arange(3, 5).float(),
            "latents_clean": _randn(g, b, 4, 2, 4, 4),
            "indices_latents_clean": torch.tensor([0.0, 5.0]),
            "latents_history_2x": _randn(g, b, 4, 2, 4, 4),
            "indices_latents_history_2x": torch.tensor([6.0, 7.0]),
            "latents_history_4x": _randn(g, b, 4, 8, 4, 4),
            "indices_latents_history_4x": torch.arange(8, 16).float(),
            "return_dict": False,
        }

    return Entry(
        _builder("HunyuanVideoFramepackTransformer3DModel", cfg),
        _inputs(fn),
        _latent(4, 2, 4, 4),
        pipeline="HunyuanVideoFramepackPipeline",
        notes="history latents enter as extra tokens",
    )


@_register("HunyuanVideo15Transformer3DModel")
def _hunyuan15() -> Entry:
    cfg = dict(
        in_channels=4,
        out_channels=4,
        num_attention_heads=2,
        attention_head_dim=8,
        num_layers=2,
        num_refiner_layers=1,
        mlp_ratio=2.0,
        patch_size=1,
        patch_size_t=1,
        text_embed_dim=16,
        text_embed_2_dim=8,
        image_embed_dim=12,
        rope_axes_dim=(2, 2, 4),
        target_size=16,
        task_type="t2v",
    )

    def fn(m, b, g):
        return {
            "encoder_hidden_states": _randn(g, b, 6, 16),
            "encoder_hidden_states_2": _randn(g, b, 4, 8),
            "encoder_attention_mask": torch.ones(b, 6),
            "encoder_attention_mask_2": torch.ones(b, 4),
            "image_embeds": torch.zeros(b, 3, 12),
            "return_dict": False,
        }

    return Entry(
        _builder("HunyuanVideo15Transformer3DModel", cfg),
        _inputs(fn),
        _latent(4, 1, 8, 8),
        pipeline="HunyuanVideo15Pipeline",
    )


@_register("EasyAnimateTransformer3DModel")
def _easyanimate() -> Entry:
    cfg = dict(
        attention_head_dim=16,
        num_attention_heads=2,
        in_channels=4,
        mmdit_layers=2,
        num_layers=2,
        out_channels=4,
        patch_size=2,
        sample_height=16,
        sample_width=16,
        text_embed_dim=16,
        time_embed_dim=8,
        time_position_encoding_type="3d_rope",
        timestep_activation_fn="silu",
    )
    return Entry(
        _builder("EasyAnimateTransformer3DModel", cfg),
        _text(16, return_dict=False),
        _latent(4, 2, 8, 8),
        pipeline="EasyAnimatePipeline",
    )


@_register("CosmosTransformer3DModel")
def _cosmos() -> Entry:
    cfg = dict(
        in_channels=4,
        out_channels=4,
        num_attention_heads=2,
        attention_head_dim=12,
        num_layers=2,
        mlp_ratio=2,
        text_embed_dim=16,
        adaln_lora_dim=4,
        max_size=(4, 32, 32),
        patch_size=(1, 2, 2),
        rope_scale=(2.0, 1.0, 1.0),
        concat_padding_mask=False,
        extra_pos_embed_type="learnable",
    )

    def fn(m, b, g):
        return {"encoder_hidden_states": _randn(g, b, 8, 16), "fps": 30, "return_dict": False}

    return Entry(
        _builder("CosmosTransformer3DModel", cfg),
        _inputs(fn),
        _latent(4, 2, 8, 8),
        timestep_scale=1 / 1000,
        pipeline="Cosmos2TextToImagePipeline",
        notes="concat_padding_mask=False (True needs torchvision, not installed); "
        "Cosmos2 pipelines pass sigma/(sigma+1) in [0,1]; Cosmos1 passes EDM timesteps",
    )


@_register("SanaVideoTransformer3DModel")
def _sana_video() -> Entry:
    cfg = dict(
        in_channels=4,
        out_channels=4,
        num_attention_heads=2,
        attention_head_dim=12,
        num_layers=2,
        num_cross_attention_heads=2,
        cross_attention_head_dim=12,
        cross_attention_dim=24,
        caption_channels=16,
        mlp_ratio=2.5,
        dropout=0.0,
        attention_bias=False,
        sample_size=8,
        patch_size=(1, 2, 2),
        norm_elementwise_affine=False,
        norm_eps=1e-6,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
    )

    return Entry(
        _builder("SanaVideoTransformer3DModel", cfg),
        _masked_text(16),
        _latent(4, 2, 8, 8),
        pipeline="SanaVideoPipeline",
    )


@_register("MotifVideoTransformer3DModel")
def _motif() -> Entry:
    cfg = dict(
        in_channels=9,
        out_channels=4,
        num_attention_heads=2,
        attention_head_dim=12,
        num_layers=1,
        num_single_layers=1,
        num_decoder_layers=0,
        mlp_ratio=2.0,
        patch_size=1,
        patch_size_t=1,
        qk_norm="rms_norm",
        norm_type="layer_norm",
        text_embed_dim=32,
        image_embed_dim=4,
        rope_theta=256.0,
        rope_axes_dim=(4, 4, 4),
        enable_text_cross_attention_dual=False,
        enable_text_cross_attention_single=False,
    )
    return Entry(
        _builder("MotifVideoTransformer3DModel", cfg),
        _text(32, return_dict=False),
        _latent(9, 2, 4, 4),
        output=_pad_channels(9),
        pipeline="MotifVideoPipeline",
        notes="latent = cat([noisy (C), condition (C), mask (1)]); prediction updates the first C",
    )


@_register("JoyImageEditTransformer3DModel")
def _joy() -> Entry:
    cfg = dict(
        patch_size=[1, 2, 2],
        in_channels=16,
        hidden_size=32,
        num_attention_heads=2,
        text_dim=16,
        num_layers=2,
        rope_dim_list=[4, 6, 6],
        theta=256,
    )
    return Entry(
        _builder("JoyImageEditTransformer3DModel", cfg),
        _text(16, return_dict=False),
        _latent(16, 1, 4, 4),
        pipeline="JoyImageEditPipeline",
    )


@_register("Kandinsky5Transformer3DModel")
def _kandinsky5() -> Entry:
    cfg = dict(
        in_visual_dim=4,
        in_text_dim=16,
        in_text_dim2=8,
        time_dim=16,
        out_visual_dim=4,
        patch_size=(1, 2, 2),
        model_dim=32,
        ff_dim=64,
        num_text_blocks=1,
        num_visual_blocks=2,
        axes_dims=(4, 6, 6),
        visual_cond=False,
    )

    def fn(m, b, g):
        return {
            "encoder_hidden_states": _randn(g, b, 8, 16),
            "pooled_projections": _randn(g, b, 8),
            "visual_rope_pos": [torch.arange(2), torch.arange(4), torch.arange(4)],
            "text_rope_pos": torch.arange(8),
            "scale_factor": (1.0, 1.0, 1.0),
            "sparse_params": None,
            "return_dict": True,
        }

    return Entry(
        _builder("Kandinsky5Transformer3DModel", cfg),
        _inputs(fn),
        _latent(2, 8, 8, 4),
        pipeline="Kandinsky5T2VPipeline",
        notes="channels-last latent (B, F, H, W, C)",
    )
