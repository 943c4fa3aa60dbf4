"""Zoo entries of audio and other 1-D transformers: each registers a tiny instance and its
pipeline's call convention in :data:`~.entry.ENTRIES`.
"""

from __future__ import annotations

import torch

from smoothcache.testing.models.diffusers_zoo.entry import (
    Entry,
    _builder,
    _inputs,
    _latent,
    _randn,
    _register,
    _text,
)


@_register("StableAudioDiTModel")
def _stable_audio() -> Entry:
    cfg = dict(
        sample_size=8,
        in_channels=4,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=2,
        num_key_value_attention_heads=1,
        out_channels=4,
        cross_attention_dim=16,
        time_proj_dim=16,
        global_states_input_dim=32,
        cross_attention_input_dim=16,
    )

    def fn(m, b, g):
        from diffusers.models.embeddings import get_1d_rotary_pos_embed

        rope = get_1d_rotary_pos_embed(4, 8 + 1, use_real=True, repeat_interleave_real=False)
        return {
            "encoder_hidden_states": _randn(g, b, 9, 16),
            "global_hidden_states": _randn(g, b, 1, 32),
            "rotary_embedding": rope,
            "return_dict": False,
        }

    return Entry(
        _builder("StableAudioDiTModel", cfg),
        _inputs(fn),
        _latent(4, 8),
        timestep_layout=lambda ts: ts[:1],
        pipeline="StableAudioPipeline",
        notes="timestep is (1,) for the whole batch (positional in the pipeline); latent (B, C, L)",
    )


@_register("AceStepTransformer1DModel")
def _ace() -> Entry:
    cfg = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        in_channels=24,
        audio_acoustic_hidden_dim=8,
        patch_size=2,
        rope_theta=10000.0,
        rms_norm_eps=1e-6,
        sliding_window=16,
    )

    def fn(m, b, g):
        return {
            "encoder_hidden_states": _randn(g, b, 10, 32),
            "context_latents": _randn(g, b, 8, 16),
            "return_dict": False,
        }

    return Entry(
        _builder("AceStepTransformer1DModel", cfg),
        _inputs(fn),
        _latent(8, 8),
        timestep_scale=1 / 1000,
        pipeline="AceStepPipeline",
        timestep_aliases=("timestep_r",),
        notes="pipeline passes timestep_r = timestep, both in [0, 1]",
    )


@_register("LongCatAudioDiTTransformer")
def _longcat_audio() -> Entry:
    cfg = dict(dit_dim=32, dit_depth=2, dit_heads=2, dit_text_dim=16, latent_dim=8, text_conv=False)

    def fn(m, b, g):
        return {
            "encoder_hidden_states": _randn(g, b, 8, 16),
            "encoder_attention_mask": torch.ones(b, 8, dtype=torch.bool),
            "attention_mask": torch.ones(b, 16, dtype=torch.bool),
            "return_dict": False,
        }

    return Entry(
        _builder("LongCatAudioDiTTransformer", cfg),
        _inputs(fn),
        _latent(16, 8),
        timestep_scale=1 / 1000,
        pipeline="LongCatAudioDiTPipeline",
    )


@_register("MiniMaxMusic3Transformer1DModel")
def _minimax_music() -> Entry:
    cfg = dict(
        in_channels=8,
        condition_dim=16,
        num_layers=2,
        num_attention_heads=2,
        attention_head_dim=8,
        ff_inner_dim=32,
        rotary_dim=4,
        fourier_embedding_dim=8,
    )
    return Entry(
        _builder("MiniMaxMusic3Transformer1DModel", cfg),
        _text(16, seq=16, return_dict=False),
        _latent(8, 16),
        pipeline="MiniMaxMusic3Pipeline",
    )


@_register("TransformerTemporalModel")
def _temporal() -> Entry:
    cfg = dict(
        num_attention_heads=2, attention_head_dim=4, in_channels=4, num_layers=1, norm_num_groups=1
    )
    return Entry(
        _builder("TransformerTemporalModel", cfg),
        _inputs(lambda m, b, g: {"num_frames": 1, "return_dict": False}),
        _latent(4, 8, 8),
        timestep_dtype=torch.int64,
        pipeline=None,
        notes="a UNet building block (temporal attention over frames), not a standalone denoiser",
    )
