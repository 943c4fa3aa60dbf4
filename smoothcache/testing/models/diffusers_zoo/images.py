"""Zoo entries of image transformers (2-D latents), DiT to HunyuanDiT: each registers a tiny
instance and its pipeline's call convention in :data:`~.entry.ENTRIES`.
"""

from __future__ import annotations

import torch

from smoothcache.testing.models.diffusers_zoo.entry import (
    Entry,
    _builder,
    _flux2_ids,
    _flux_like,
    _gen,
    _inputs,
    _keep_channels,
    _latent,
    _randn,
    _register,
    _text,
)


@_register("DiTTransformer2DModel")
def _dit() -> Entry:
    cfg = dict(
        in_channels=4,
        out_channels=8,
        activation_fn="gelu-approximate",
        num_attention_heads=2,
        attention_head_dim=8,
        attention_bias=True,
        num_layers=2,
        norm_type="ada_norm_zero",
        num_embeds_ada_norm=1000,
        patch_size=2,
        sample_size=8,
    )
    return Entry(
        factory=_builder("DiTTransformer2DModel", cfg),
        inputs=_inputs(lambda m, b, g: {"class_labels": torch.randint(0, 1000, (b,), generator=g)}),
        latent=_latent(4, 8, 8),
        timestep_dtype=torch.int64,
        output=_keep_channels(4),
        pipeline="DiTPipeline",
        notes="learned sigma (8 of 4 channels); block 0's timestep embedder runs twice per call",
    )


@_register("PixArtTransformer2DModel")
def _pixart() -> Entry:
    cfg = dict(
        sample_size=8,
        num_layers=2,
        patch_size=2,
        attention_head_dim=8,
        num_attention_heads=2,
        in_channels=4,
        cross_attention_dim=16,
        out_channels=8,
        attention_bias=True,
        activation_fn="gelu-approximate",
        num_embeds_ada_norm=1000,
        norm_type="ada_norm_single",
        norm_elementwise_affine=False,
        norm_eps=1e-6,
        use_additional_conditions=False,
        caption_channels=12,
    )

    def fn(m, b, g):
        return {
            "encoder_hidden_states": _randn(g, b, 8, 12),
            "encoder_attention_mask": torch.ones(b, 8),
            "added_cond_kwargs": {"resolution": None, "aspect_ratio": None},
            "return_dict": False,
        }

    return Entry(
        _builder("PixArtTransformer2DModel", cfg),
        _inputs(fn),
        _latent(4, 8, 8),
        timestep_dtype=torch.int64,
        output=_keep_channels(4),
        pipeline="PixArtSigmaPipeline",
        notes="learned sigma; block `timestep` argument is the adaLN modulation",
    )


@_register("FluxTransformer2DModel")
def _flux() -> Entry:
    cfg = dict(
        patch_size=1,
        in_channels=4,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        axes_dims_rope=[4, 4, 8],
    )
    return Entry(
        _builder("FluxTransformer2DModel", cfg),
        _flux_like(32, pooled=32, guidance=None),
        _latent(16, 4),
        timestep_scale=1 / 1000,
        pipeline="FluxPipeline",
        notes="packed tokens (B, H*W, C); single blocks fuse attn+MLP into proj_out",
    )


@_register("Flux2Transformer2DModel")
def _flux2() -> Entry:
    cfg = dict(
        patch_size=1,
        in_channels=4,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        timestep_guidance_channels=32,
        axes_dims_rope=[4, 4, 4, 4],
    )

    def fn(m, b, g):
        img, txt = _flux2_ids(b, 4, 4, 8)
        return {
            "encoder_hidden_states": _randn(g, b, 8, 32),
            "img_ids": img,
            "txt_ids": txt,
            "guidance": torch.full((b,), 4.0),
            "return_dict": False,
        }

    return Entry(
        _builder("Flux2Transformer2DModel", cfg),
        _inputs(fn),
        _latent(16, 4),
        timestep_scale=1 / 1000,
        pipeline="Flux2Pipeline",
        notes="packed tokens; modulation computed once at the root and shared by all blocks",
    )


@_register("ChromaTransformer2DModel")
def _chroma() -> Entry:
    cfg = dict(
        patch_size=1,
        in_channels=4,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        axes_dims_rope=[4, 4, 8],
        approximator_num_channels=8,
        approximator_hidden_dim=16,
        approximator_layers=1,
    )

    def fn(m, b):
        d = _flux_like(32)(m, b)
        d["attention_mask"] = torch.ones(b, 8 + 16, dtype=torch.bool)
        return d

    return Entry(
        _builder("ChromaTransformer2DModel", cfg),
        fn,
        _latent(16, 4),
        timestep_scale=1 / 1000,
        pipeline="ChromaPipeline",
    )


@_register("BriaTransformer2DModel")
def _bria() -> Entry:
    cfg = dict(
        patch_size=1,
        in_channels=4,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=None,
        axes_dims_rope=[0, 4, 4],
    )
    return Entry(
        _builder("BriaTransformer2DModel", cfg),
        _flux_like(32),
        _latent(16, 4),
        pipeline="BriaPipeline",
        notes="pipeline passes t in [0,1000] unscaled",
    )


@_register("BriaFiboTransformer2DModel")
def _bria_fibo() -> Entry:
    cfg = dict(
        patch_size=1,
        in_channels=16,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=64,
        text_encoder_dim=32,
        pooled_projection_dim=None,
        axes_dims_rope=[0, 4, 4],
    )

    def fn(m, b):
        g = _gen(4321)
        d = _flux_like(64)(m, b)
        d["text_encoder_layers"] = [_randn(g, b, 8, 32) for _ in range(2)]
        return d

    return Entry(
        _builder("BriaFiboTransformer2DModel", cfg),
        fn,
        _latent(16, 16),
        pipeline="BriaFiboPipeline",
    )


@_register("OvisImageTransformer2DModel")
def _ovis() -> Entry:
    cfg = dict(
        patch_size=1,
        in_channels=4,
        out_channels=4,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        axes_dims_rope=(4, 4, 8),
    )
    return Entry(
        _builder("OvisImageTransformer2DModel", cfg),
        _flux_like(32),
        _latent(16, 4),
        timestep_scale=1 / 1000,
        pipeline="OvisImagePipeline",
    )


@_register("LongCatImageTransformer2DModel")
def _longcat_image() -> Entry:
    cfg = dict(
        patch_size=1,
        in_channels=4,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        axes_dims_rope=[4, 4, 8],
    )
    return Entry(
        _builder("LongCatImageTransformer2DModel", cfg),
        _flux_like(32, guidance=None),
        _latent(16, 4),
        timestep_scale=1 / 1000,
        pipeline="LongCatImagePipeline",
    )


@_register("SD3Transformer2DModel")
def _sd3() -> Entry:
    cfg = dict(
        sample_size=8,
        patch_size=2,
        in_channels=4,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=4,
        caption_projection_dim=32,
        joint_attention_dim=32,
        pooled_projection_dim=64,
        out_channels=4,
        pos_embed_max_size=16,
        dual_attention_layers=(0,),
        qk_norm="rms_norm",
    )

    def fn(m, b, g):
        return {
            "encoder_hidden_states": _randn(g, b, 8, 32),
            "pooled_projections": _randn(g, b, 64),
            "return_dict": False,
        }

    return Entry(
        _builder("SD3Transformer2DModel", cfg),
        _inputs(fn),
        _latent(4, 8, 8),
        pipeline="StableDiffusion3Pipeline",
        notes="SD3.5-style config: block 0 has a second self-attention attn2 (dual attention); "
        "last block is context_pre_only",
    )


@_register("AuraFlowTransformer2DModel")
def _auraflow() -> Entry:
    cfg = dict(
        sample_size=8,
        patch_size=2,
        in_channels=4,
        num_mmdit_layers=1,
        num_single_dit_layers=1,
        attention_head_dim=8,
        num_attention_heads=4,
        caption_projection_dim=32,
        joint_attention_dim=32,
        out_channels=4,
        pos_embed_max_size=64,
    )
    return Entry(
        _builder("AuraFlowTransformer2DModel", cfg),
        _text(32, return_dict=False),
        _latent(4, 8, 8),
        timestep_scale=1 / 1000,
        pipeline="AuraFlowPipeline",
    )


@_register("HiDreamImageTransformer2DModel")
def _hidream() -> Entry:
    cfg = dict(
        patch_size=2,
        in_channels=4,
        out_channels=4,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=8,
        num_attention_heads=4,
        caption_channels=[8, 4],
        text_emb_dim=8,
        num_routed_experts=2,
        num_activated_experts=2,
        axes_dims_rope=(4, 2, 2),
        max_resolution=(16, 16),
        llama_layers=(0, 1),
        force_inference_output=True,
    )

    def fn(m, b, g):
        return {
            "encoder_hidden_states_t5": _randn(g, b, 8, 8),
            "encoder_hidden_states_llama3": _randn(g, 2, b, 8, 4),
            "pooled_embeds": _randn(g, b, 8),
            "return_dict": False,
        }

    return Entry(
        _builder("HiDreamImageTransformer2DModel", cfg),
        _inputs(fn),
        _latent(4, 16, 16),
        timestep_arg="timesteps",
        pipeline="HiDreamImagePipeline",
        notes="MoE feed-forward; forward argument is `timesteps`",
    )


@_register("HunyuanDiT2DModel")
def _hunyuandit() -> Entry:
    cfg = dict(
        sample_size=8,
        patch_size=2,
        in_channels=4,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=2,
        cross_attention_dim=8,
        cross_attention_dim_t5=8,
        pooled_projection_dim=4,
        hidden_size=16,
        text_len=4,
        text_len_t5=4,
        activation_fn="gelu-approximate",
    )

    def fn(m, b, g):
        from diffusers.models.embeddings import get_2d_rotary_pos_embed
        from diffusers.pipelines.hunyuandit.pipeline_hunyuandit import (
            get_resize_crop_region_for_grid,
        )

        grid = 4  # 8x8 latent, patch 2
        crops = get_resize_crop_region_for_grid((grid, grid), 512 // 8 // 2)
        rope = get_2d_rotary_pos_embed(8, crops, (grid, grid), output_type="pt")
        return {
            "encoder_hidden_states": _randn(g, b, 4, 8),
            "text_embedding_mask": torch.ones(b, 4),
            "encoder_hidden_states_t5": _randn(g, b, 4, 8),
            "text_embedding_mask_t5": torch.ones(b, 4),
            "image_meta_size": torch.tensor([[64.0, 64.0, 64.0, 64.0, 0.0, 0.0]] * b),
            "style": torch.zeros(b, dtype=torch.long),
            "image_rotary_emb": rope,
            "return_dict": False,
        }

    return Entry(
        _builder("HunyuanDiT2DModel", cfg),
        _inputs(fn),
        _latent(4, 8, 8),
        output=_keep_channels(4),
        pipeline="HunyuanDiTPipeline",
        notes="learned sigma; long skip connections between first and second half of blocks",
    )
