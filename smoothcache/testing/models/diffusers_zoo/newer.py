"""Zoo entries of newer models (no diffusers model test config for some; configs shrunk from
the defaults): each registers a tiny instance and its pipeline's call convention in
:data:`~.entry.ENTRIES`.
"""

from __future__ import annotations

from typing import Any

import torch

from smoothcache.testing.models.diffusers_zoo.entry import (
    Entry,
    _builder,
    _default_output,
    _flux2_ids,
    _gen,
    _inputs,
    _latent,
    _masked_text,
    _pad_channels,
    _randn,
    _register,
)


@_register("Ideogram4Transformer2DModel")
def _ideogram4() -> Entry:
    from diffusers.models.transformers.transformer_ideogram4 import (
        IMAGE_POSITION_OFFSET,
        LLM_TOKEN_INDICATOR,
        OUTPUT_IMAGE_INDICATOR,
    )

    cfg = dict(
        in_channels=16,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=4,
        intermediate_size=32,
        adaln_dim=16,
        llm_features_dim=24,
        rope_theta=10000,
        mrope_section=(2, 1, 1),
        norm_eps=1e-5,
    )
    n_text, side = 4, 4
    n_img = side * side
    seq = n_text + n_img

    def fn(m, b, g):
        enc = torch.zeros(b, seq, 24)
        enc[:, :n_text] = _randn(g, b, n_text, 24)
        pos = torch.zeros(b, seq, 3, dtype=torch.long)
        pos[:, :n_text] = torch.arange(n_text)[:, None]
        hh = torch.arange(side).repeat_interleave(side)
        ww = torch.arange(side).repeat(side)
        pos[:, n_text:, 0] = IMAGE_POSITION_OFFSET
        pos[:, n_text:, 1] = hh + IMAGE_POSITION_OFFSET
        pos[:, n_text:, 2] = ww + IMAGE_POSITION_OFFSET
        indicator = torch.full((b, seq), OUTPUT_IMAGE_INDICATOR, dtype=torch.long)
        indicator[:, :n_text] = LLM_TOKEN_INDICATOR
        return {
            "encoder_hidden_states": enc,
            "position_ids": pos,
            "segment_ids": torch.ones(b, seq, dtype=torch.long),
            "indicator": indicator,
            "return_dict": False,
        }

    def latent(batch: int, seed: int = 0) -> torch.Tensor:
        x = torch.zeros(batch, seq, 16)
        x[:, n_text:] = torch.randn(batch, n_img, 16, generator=_gen(seed))
        return x

    def output(ret: Any) -> torch.Tensor:
        out = _default_output(ret).clone()
        out[:, :n_text] = 0
        return out

    return Entry(
        _builder("Ideogram4Transformer2DModel", cfg),
        _inputs(fn),
        latent,
        output=output,
        timestep_scale=-1 / 1000,
        timestep_offset=1.0,
        pipeline="Ideogram4Pipeline",
        notes="single sequence [text padding, image tokens]; only image rows are the prediction; "
        "timestep 1 - t/1000",
    )


@_register("Krea2Transformer2DModel")
def _krea2() -> Entry:
    cfg = dict(
        in_channels=16,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=32,
        timestep_embed_dim=8,
        text_hidden_dim=16,
        num_text_layers=3,
        text_num_attention_heads=2,
        text_num_key_value_heads=1,
        text_intermediate_size=16,
        num_layerwise_text_blocks=1,
        num_refiner_text_blocks=1,
        axes_dims_rope=(4, 2, 2),
        rope_theta=1000.0,
        norm_eps=1e-5,
    )
    n_text, side = 4, 4

    def fn(m, b, g):
        pos = torch.zeros(n_text + side * side, 3)
        pos[n_text:, 1] = torch.arange(side).repeat_interleave(side).float()
        pos[n_text:, 2] = torch.arange(side).repeat(side).float()
        return {
            "encoder_hidden_states": _randn(g, b, n_text, 3, 16),
            "position_ids": pos,
            "encoder_attention_mask": torch.ones(b, n_text, dtype=torch.bool),
            "return_dict": False,
        }

    return Entry(
        _builder("Krea2Transformer2DModel", cfg),
        _inputs(fn),
        _latent(side * side, 16),
        timestep_scale=1 / 1000,
        pipeline="Krea2Pipeline",
        notes="text features from several LLM layers (B, L, layers, D), mixed by layerwise text "
        "blocks",
    )


@_register("JoyImageEditPlusTransformer3DModel")
def _joy_plus() -> Entry:
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

    def fn(m, b, g):
        return {
            "encoder_hidden_states": _randn(g, b, 8, 16),
            "shape_list": [[(1, 2, 2), (1, 2, 2)]] * b,
            "return_dict": False,
        }

    return Entry(
        _builder("JoyImageEditPlusTransformer3DModel", cfg),
        _inputs(fn),
        _latent(8, 16, 1, 2, 2),
        pipeline="JoyImageEditPlusPipeline",
        notes="latent pre-patchified (B, patches, C, pt, ph, pw), patches of the components in "
        "shape_list (reference then target)",
    )


@_register("MiniMaxH3Transformer3DModel")
def _minimax_h3() -> Entry:
    cfg = dict(
        num_attention_heads=2,
        attention_head_dim=16,
        hidden_size=24,
        num_layers=2,
        num_refiner_layers=1,
        ffn_dim=32,
        in_channels=4,
        audio_in_channels=6,
        patch_size=(1, 2, 2),
        text_dim=8,
        freq_dim=8,
        time_embed_hidden_dim=24,
        time_embed_dim=16,
        rope_freq_dim=2,
    )
    n_text, n_audio, n_video = 4, 6, 8
    seq = n_text + n_audio + n_video

    def fn(m, b, g):
        text = torch.arange(n_text)
        audio = torch.arange(n_text, n_text + n_audio)
        video = torch.arange(n_text + n_audio, seq)
        tags = torch.empty(seq, dtype=torch.long)
        tags[text], tags[audio], tags[video] = 1, 2, 0
        pos = torch.zeros(seq, 3)
        pos[:, 0] = torch.arange(seq).float()
        pos[video, 1] = (torch.arange(n_video) % 4).float()
        pos[video, 2] = (torch.arange(n_video) % 2).float()
        return {
            "audio_hidden_states": _randn(g, b, n_audio, 6),
            "encoder_hidden_states": _randn(g, b, n_text, 8),
            "timestep_indices": torch.zeros(seq, dtype=torch.long),
            "token_tags": tags,
            "position_ids": pos,
            "video_indices": video,
            "audio_indices": audio,
            "text_indices": text,
            "return_dict": False,
        }

    return Entry(
        _builder("MiniMaxH3Transformer3DModel", cfg),
        _inputs(fn),
        _latent(n_video, 16),
        timestep_scale=1 / 1000,
        timestep_layout=lambda ts: ts[:1],
        pipeline=None,
        notes="no pipeline in this diffusers; `timestep` is a table of distinct noise levels "
        "indexed by timestep_indices (here one level for all rows); audio stream fixed; "
        "returns (video, audio)",
    )


@_register("WanAnimateTransformer3DModel")
def _wan_animate() -> Entry:
    cfg = dict(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=12,
        latent_channels=4,
        out_channels=4,
        text_dim=16,
        freq_dim=32,
        ffn_dim=32,
        num_layers=2,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        image_dim=16,
        rope_max_seq_len=32,
        motion_encoder_channel_sizes={"4": 16, "8": 16, "16": 16},
        motion_encoder_size=16,
        motion_style_dim=8,
        motion_dim=4,
        motion_encoder_dim=16,
        face_encoder_hidden_dim=16,
        face_encoder_num_heads=2,
        inject_face_latents_blocks=2,
    )
    # 1 reference frame + 2; face frames 4*(frames-1)-3 so that motion frames divide the tokens
    frames = 3

    def fn(m, b, g):
        return {
            "encoder_hidden_states": _randn(g, b, 8, 16),
            "encoder_hidden_states_image": _randn(g, b, 4, 16),
            "pose_hidden_states": _randn(g, b, 4, frames - 1, 8, 8),
            "face_pixel_values": _randn(g, b, 3, 4 * (frames - 1) - 3, 16, 16),
            "return_dict": False,
        }

    return Entry(
        _builder("WanAnimateTransformer3DModel", cfg),
        _inputs(fn),
        _latent(12, frames, 8, 8),
        output=_pad_channels(12),
        pipeline="WanAnimatePipeline",
        notes="latent = cat([noisy (4), reference/condition (8)]); face adapter injected every "
        "inject_face_latents_blocks blocks",
    )


@_register("HunyuanImageTransformer2DModel")
def _hunyuan_image() -> Entry:
    cfg = dict(
        in_channels=4,
        out_channels=4,
        num_attention_heads=2,
        attention_head_dim=8,
        num_layers=1,
        num_single_layers=1,
        num_refiner_layers=1,
        mlp_ratio=2.0,
        patch_size=(1, 1),
        qk_norm="rms_norm",
        guidance_embeds=False,
        text_embed_dim=16,
        text_embed_2_dim=None,
        rope_axes_dim=(4, 4),
    )

    return Entry(
        _builder("HunyuanImageTransformer2DModel", cfg),
        _masked_text(16),
        _latent(4, 8, 8),
        pipeline="HunyuanImagePipeline",
        notes="double + single stream blocks, token refiner on text",
    )


@_register("Flux3Transformer2DModel")
def _flux3() -> Entry:
    cfg = dict(
        in_channels=4,
        cond_in_channels=4,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        timestep_channels=32,
        mlp_ratio=2.0,
        axes_dims_rope=(4, 4, 4, 4),
    )

    def fn(m, b, g):
        img, txt = _flux2_ids(b, 4, 4, 8)
        return {
            "encoder_hidden_states": _randn(g, b, 8, 32),
            "img_ids": img[0],
            "txt_ids": txt[0],
            "return_dict": False,
        }

    return Entry(
        _builder("Flux3Transformer2DModel", cfg),
        _inputs(fn),
        _latent(16, 4),
        timestep_scale=1 / 1000,
        pipeline=None,
        notes="no pipeline in this diffusers; called like Flux2 (t/1000, 4-axis ids) by assumption",
    )


@_register("QwenImage21Transformer2DModel")
def _qwen21() -> Entry:
    cfg = dict(
        patch_size=1,
        in_channels=16,
        out_channels=16,
        num_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        context_in_dim=16,
        mlp_ratio=2,
        axes_dims_rope=(8, 4, 4),
    )

    def fn(m, b, g):
        return {
            "encoder_hidden_states": _randn(g, b, 8, 16),
            "encoder_hidden_states_mask": torch.ones(b, 8, dtype=torch.long),
            "img_shapes": [[(1, 4, 4)]] * b,
            # VLM sequence: 8 text slots, then 16/4 image slots (each stands for 2x2 latent tokens)
            "img_mask": torch.cat([torch.zeros(b, 8), torch.ones(b, 4)], 1).bool(),
            "return_dict": False,
        }

    return Entry(
        _builder("QwenImage21Transformer2DModel", cfg),
        _inputs(fn),
        _latent(16, 16),
        timestep_scale=1 / 1000,
        pipeline="QwenImage21Pipeline",
        output=lambda ret: _default_output(ret)[:, -16:],
        notes="returns the whole joint (text + image) sequence; the pipeline keeps the last "
        "latent-length rows",
    )


@_register("StableAudio3DiTModel")
def _stable_audio3() -> Entry:
    cfg = dict(
        io_channels=4,
        patch_size=1,
        embed_dim=32,
        depth=2,
        num_heads=2,
        cond_token_dim=16,
        global_cond_dim=16,
        local_add_cond_dim=8,
        timestep_features_dim=16,
        ff_mult=2.0,
        num_memory_tokens=4,
        use_differential_attention=True,
    )

    def fn(m, b, g):
        return {
            "encoder_hidden_states": _randn(g, b, 8, 16),
            "global_hidden_states": _randn(g, b, 16),
            "encoder_attention_mask": torch.ones(b, 8, dtype=torch.bool),
            "return_dict": False,
        }

    return Entry(
        _builder("StableAudio3DiTModel", cfg),
        _inputs(fn),
        _latent(4, 16),
        timestep_scale=1 / 1000,
        pipeline="StableAudio3Pipeline",
        notes="velocity prediction; latent (B, C, L); memory tokens prepended",
    )


@_register("BriaFibo2Transformer2DModel")
def _bria_fibo2() -> Entry:
    cfg = dict(
        in_channels=4,
        patch_size=2,
        dim=32,
        n_layers=2,
        n_refiner_layers=1,
        n_heads=2,
        cap_feat_dim=16,
        injection_layer_ids=(1,),
        perceiver_num_layers=1,
        min_num_gist_tokens=4,
        max_num_gist_tokens=8,
        gist_step=4,
        gist_min_text_len=4,
        gist_max_text_len=16,
        axes_dims=(4, 6, 6),
        axes_lens=(64, 32, 32),
    )

    def fn(m, b, g):
        # (B, 1 + len(injection_layer_ids), L, D): final text features plus one injected layer
        return {
            "encoder_hidden_states": _randn(g, b, 2, 8, 16),
            "encoder_attention_mask": torch.ones(b, 8, dtype=torch.bool),
            "return_dict": False,
        }

    return Entry(
        _builder("BriaFibo2Transformer2DModel", cfg),
        _inputs(fn),
        _latent(4, 8, 8),
        timestep_scale=1 / 1000,
        pipeline="BriaFibo2Pipeline",
        notes="text features of several LLM layers injected at injection_layer_ids",
    )
