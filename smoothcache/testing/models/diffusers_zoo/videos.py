"""Zoo entries of video transformers (5-D latents), Wan to LTX-Video: each registers a tiny
instance and its pipeline's call convention in :data:`~.entry.ENTRIES`.
"""

from __future__ import annotations

import torch

from smoothcache.testing.models.diffusers_zoo.entry import (
    Entry,
    _builder,
    _inputs,
    _keep_channels,
    _latent,
    _masked_text,
    _pad_channels,
    _randn,
    _register,
    _text,
)

_WAN = dict(
    patch_size=(1, 2, 2),
    num_attention_heads=2,
    attention_head_dim=12,
    in_channels=4,
    out_channels=4,
    text_dim=16,
    freq_dim=32,
    ffn_dim=32,
    num_layers=2,
    cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
    rope_max_seq_len=32,
)


@_register("WanTransformer3DModel")
def _wan() -> Entry:
    return Entry(
        _builder("WanTransformer3DModel", _WAN),
        _text(16, return_dict=False),
        _latent(4, 2, 8, 8),
        pipeline="WanPipeline",
        notes="attn1 self, attn2 cross, ffn; adaLN from a shared scale_shift_table + root time "
        "embedding",
    )


@_register("SkyReelsV2Transformer3DModel")
def _skyreels() -> Entry:
    return Entry(
        _builder("SkyReelsV2Transformer3DModel", _WAN),
        _text(16, return_dict=False),
        _latent(4, 2, 8, 8),
        pipeline="SkyReelsV2Pipeline",
    )


@_register("ChronoEditTransformer3DModel")
def _chronoedit() -> Entry:
    cfg = dict(_WAN, in_channels=8, out_channels=4, rope_max_seq_len=64, rope_temporal_skip_len=8)
    return Entry(
        _builder("ChronoEditTransformer3DModel", cfg),
        _text(16, encoder_hidden_states_image=None, return_dict=False),
        _latent(8, 2, 8, 8),
        output=_pad_channels(8),
        pipeline="ChronoEditPipeline",
        notes="latent is cat([noisy latent, condition], channels); prediction updates the first "
        "half",
    )


@_register("WanVACETransformer3DModel")
def _wan_vace() -> Entry:
    cfg = dict(_WAN, num_layers=2, vace_layers=[0], vace_in_channels=8)

    def fn(m, b, g):
        return {
            "encoder_hidden_states": _randn(g, b, 8, 16),
            "control_hidden_states": _randn(g, b, 8, 2, 8, 8),
            "return_dict": False,
        }

    return Entry(
        _builder("WanVACETransformer3DModel", cfg),
        _inputs(fn),
        _latent(4, 2, 8, 8),
        pipeline="WanVACEPipeline",
        notes="vace_blocks add control hints after selected blocks",
    )


@_register("HeliosTransformer3DModel")
def _helios() -> Entry:
    cfg = dict(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=4,
        out_channels=4,
        text_dim=16,
        freq_dim=32,
        ffn_dim=32,
        num_layers=2,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_dim=(4, 4, 4),
        has_multi_term_memory_patch=True,
        guidance_cross_attn=True,
        zero_history_timestep=True,
        is_amplify_history=False,
    )

    def fn(m, b, g):
        return {
            "encoder_hidden_states": _randn(g, b, 8, 16),
            "indices_hidden_states": torch.arange(6, 8).float().unsqueeze(0).expand(b, -1),
            "indices_latents_history_short": torch.tensor([[5.0]] * b),
            "indices_latents_history_mid": torch.tensor([[4.0]] * b),
            "indices_latents_history_long": torch.arange(0, 4).float().unsqueeze(0).expand(b, -1),
            "latents_history_short": _randn(g, b, 4, 1, 8, 8),
            "latents_history_mid": _randn(g, b, 4, 1, 8, 8),
            "latents_history_long": _randn(g, b, 4, 4, 8, 8),
            "return_dict": False,
        }

    return Entry(
        _builder("HeliosTransformer3DModel", cfg),
        _inputs(fn),
        _latent(4, 2, 8, 8),
        pipeline="HeliosPipeline",
        notes="history latents concatenated as extra tokens",
    )


@_register("AnyFlowTransformer3DModel")
def _anyflow() -> Entry:
    cfg = dict(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=4,
        out_channels=4,
        text_dim=16,
        freq_dim=32,
        ffn_dim=32,
        num_layers=2,
        cross_attn_norm=True,
        rope_max_seq_len=32,
        gate_value=0.25,
        deltatime_type="r",
    )
    frames = 2

    return Entry(
        _builder("AnyFlowTransformer3DModel", cfg),
        _text(16, return_dict=False),
        _latent(frames, 4, 8, 8),
        timestep_layout=lambda ts: ts.unsqueeze(-1).repeat(1, frames),
        pipeline="AnyFlowPipeline",
        timestep_aliases=("r_timestep",),
        notes="latent (B, F, C, H, W); per-frame timestep (B, F); r_timestep = timestep (no "
        "mean velocity)",
    )


@_register("CogVideoXTransformer3DModel")
def _cogvideox() -> Entry:
    cfg = dict(
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=4,
        out_channels=4,
        time_embed_dim=2,
        text_embed_dim=8,
        num_layers=2,
        sample_width=8,
        sample_height=8,
        sample_frames=5,
        patch_size=2,
        patch_size_t=None,
        temporal_compression_ratio=4,
        max_text_seq_length=8,
    )
    return Entry(
        _builder("CogVideoXTransformer3DModel", cfg),
        _text(8, image_rotary_emb=None, return_dict=False),
        _latent(2, 4, 8, 8),
        timestep_dtype=torch.int64,
        pipeline="CogVideoXPipeline",
        notes="latent (B, F, C, H, W); attn1 is joint text+video attention returning a tuple",
    )


@_register("ConsisIDTransformer3DModel")
def _consisid() -> Entry:
    cfg = dict(
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=8,
        out_channels=4,
        time_embed_dim=2,
        text_embed_dim=8,
        num_layers=2,
        sample_width=8,
        sample_height=8,
        sample_frames=5,
        patch_size=2,
        temporal_compression_ratio=4,
        max_text_seq_length=8,
        cross_attn_interval=1,
        is_kps=False,
        is_train_face=True,
        cross_attn_dim_head=4,
        cross_attn_num_heads=1,
        LFE_id_dim=2,
        LFE_vit_dim=2,
        LFE_depth=1,
        LFE_dim_head=8,
        LFE_num_heads=2,
        LFE_num_id_token=1,
        LFE_num_querie=1,
        LFE_output_dim=10,
        LFE_ff_mult=1,
        LFE_num_scale=1,
    )

    def fn(m, b, g):
        return {
            "encoder_hidden_states": _randn(g, b, 8, 8),
            "id_vit_hidden": [_randn(g, b, 2, 2)],
            "id_cond": _randn(g, b, 2),
            "image_rotary_emb": None,
            "return_dict": False,
        }

    return Entry(
        _builder("ConsisIDTransformer3DModel", cfg),
        _inputs(fn),
        _latent(2, 8, 8, 8),
        timestep_dtype=torch.int64,
        output=_pad_channels(8, dim=2),
        pipeline="ConsisIDPipeline",
        notes="latent = cat([noisy, image latent], dim=2); face cross-attention (perceiver) "
        "every block",
    )


@_register("LatteTransformer3DModel")
def _latte() -> Entry:
    cfg = dict(
        sample_size=8,
        num_layers=1,
        patch_size=2,
        attention_head_dim=4,
        num_attention_heads=2,
        caption_channels=8,
        in_channels=4,
        cross_attention_dim=8,
        out_channels=8,
        attention_bias=True,
        activation_fn="gelu-approximate",
        num_embeds_ada_norm=1000,
        norm_type="ada_norm_single",
        norm_elementwise_affine=False,
        norm_eps=1e-6,
        video_length=2,
    )
    return Entry(
        _builder("LatteTransformer3DModel", cfg),
        _text(8, enable_temporal_attentions=True, return_dict=False),
        _latent(4, 2, 8, 8),
        timestep_dtype=torch.int64,
        output=_keep_channels(4),
        pipeline="LattePipeline",
        notes="two block lists: transformer_blocks (spatial) and temporal_transformer_blocks; "
        "learned sigma",
    )


@_register("AllegroTransformer3DModel")
def _allegro() -> Entry:
    cfg = dict(
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=4,
        out_channels=4,
        num_layers=2,
        cross_attention_dim=16,
        sample_width=8,
        sample_height=8,
        sample_frames=8,
        caption_channels=8,
    )

    return Entry(
        _builder("AllegroTransformer3DModel", cfg),
        _masked_text(8),
        _latent(4, 2, 8, 8),
        timestep_dtype=torch.int64,
        pipeline="AllegroPipeline",
    )


@_register("MochiTransformer3DModel")
def _mochi() -> Entry:
    cfg = dict(
        patch_size=2,
        num_attention_heads=2,
        attention_head_dim=8,
        num_layers=2,
        pooled_projection_dim=16,
        in_channels=4,
        out_channels=None,
        qk_norm="rms_norm",
        text_embed_dim=16,
        time_embed_dim=4,
        activation_fn="swiglu",
        max_sequence_length=8,
    )

    def fn(m, b, g):
        return {
            "encoder_hidden_states": _randn(g, b, 8, 16),
            "encoder_attention_mask": torch.ones(b, 8, dtype=torch.bool),
            "return_dict": False,
        }

    return Entry(
        _builder("MochiTransformer3DModel", cfg),
        _inputs(fn),
        _latent(4, 2, 8, 8),
        pipeline="MochiPipeline",
        notes="last block is context_pre_only",
    )


@_register("LTXVideoTransformer3DModel")
def _ltx() -> Entry:
    cfg = dict(
        in_channels=4,
        out_channels=4,
        num_attention_heads=2,
        attention_head_dim=8,
        cross_attention_dim=16,
        num_layers=2,
        qk_norm="rms_norm_across_heads",
        caption_channels=16,
    )

    def fn(m, b, g):
        return {
            "encoder_hidden_states": _randn(g, b, 8, 16),
            "encoder_attention_mask": torch.ones(b, 8, dtype=torch.bool),
            "num_frames": 2,
            "height": 4,
            "width": 4,
            "rope_interpolation_scale": (1 / 25 * 8, 32.0, 32.0),
            "return_dict": False,
        }

    return Entry(
        _builder("LTXVideoTransformer3DModel", cfg),
        _inputs(fn),
        _latent(32, 4),
        pipeline="LTXPipeline",
        notes="packed tokens (B, F*H*W, C)",
    )
