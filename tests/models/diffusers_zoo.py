"""Tiny, randomly initialised diffusers transformers, each called the way its pipeline calls it.

Used by the coverage matrix: for every denoiser transformer class that the installed
``diffusers`` exports, :data:`ZOO` holds an :class:`Entry` that builds a tiny instance (1-2
blocks per block list, hidden sizes 16-64, a few dozen tokens, float32 on CPU, eval mode) and
says how to call it: the latent layout, the argument names, the conditioning inputs and how the
pipeline scales the timestep. :func:`run` is a deterministic toy sampler over an entry.
:data:`UNAVAILABLE` names every class that is not in the zoo and why.

Sources: constructor configs follow the tiny configs of diffusers' own model tests
(``tests/models/transformers``), shrunk where they were large; call conventions follow each
pipeline's ``__call__`` in the installed diffusers (0.42.x).

Initialisation: many diffusers models zero-initialise adaLN gates, output projections or
learnable position tables. After construction (``torch.manual_seed(0)`` first) every floating
parameter that is entirely zero is re-drawn (:func:`randomize_zeros_`; weight matrices with the
usual ``1/sqrt(fan_in)`` scale, vectors with std 0.1), so that no branch is a no-op. This is
deliberately *not* :func:`tests.models.random_init.randomize_`, which overwrites every parameter
(norm scales included) with N(0, 0.05) draws; keeping the default init of non-zero parameters
keeps activations at a healthy scale.

Timesteps: :func:`run` walks ``linspace(999, 1, num_steps)`` (values on the usual [0, 1000]
scale) and hands the model ``timestep_offset + timestep_scale * t`` with dtype
``timestep_dtype``, shaped ``(batch,)`` unless ``timestep_layout`` says otherwise. E.g. Flux and
Qwen-Image pipelines pass ``t / 1000``; Lumina2, Z-Image and Ideogram4 pass ``1 - t / 1000``;
DiT and PixArt pass int64 ``t``.
"""

from __future__ import annotations

import importlib
import inspect
import math
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = ["UNAVAILABLE", "ZOO", "Entry", "randomize_zeros_", "run", "transformer_classes"]


# --------------------------------------------------------------------------------------------
# Enumeration


def transformer_classes() -> list[str]:
    """Names of every transformer model class the installed diffusers exports, sorted.

    Walks the submodules of ``diffusers.models.transformers`` (``pkgutil.iter_modules``),
    imports each, and collects the classes *defined in* that submodule (``__module__`` equal to
    the submodule's name) that subclass ``diffusers.ModelMixin`` and are exported at the
    ``diffusers`` top level. Helper ``nn.Module``s (blocks, attention processors, embedders)
    are not ``ModelMixin`` subclasses and drop out; so does ``DualTransformer2DModel`` (a plain
    ``nn.Module``). Non-denoisers that live in that package (``PriorTransformer``,
    ``T5FilmDecoder``, the MiniMax RVQ depth decoder) are listed too and explained in
    :data:`UNAVAILABLE`.
    """
    import diffusers
    import diffusers.models.transformers as package
    from diffusers import ModelMixin

    names: set[str] = set()
    for info in pkgutil.iter_modules(package.__path__):
        module_name = f"{package.__name__}.{info.name}"
        try:
            module = importlib.import_module(module_name)
        except Exception:  # pragma: no cover - optional dependency missing
            continue
        for name, obj in vars(module).items():
            if (
                inspect.isclass(obj)
                and obj.__module__ == module_name
                and issubclass(obj, ModelMixin)
                and getattr(diffusers, name, None) is obj
            ):
                names.add(name)
    return sorted(names)


# --------------------------------------------------------------------------------------------
# Entry and sampler


def _default_output(ret: Any) -> torch.Tensor:
    if hasattr(ret, "sample"):
        return ret.sample
    if isinstance(ret, (tuple, list)):
        return ret[0]
    return ret


@dataclass(frozen=True)
class Entry:
    """How to build one tiny model and call it like its pipeline does.

    ``factory()`` builds the model; ``inputs(model, batch)`` the forward's keyword arguments
    other than the latent and the timestep (deterministic: the same tensors at every call);
    ``latent(batch, seed=0)`` the initial latent, in the layout the pipeline passes it as
    ``latent_arg``. The timestep (argument ``timestep_arg``) is ``timestep_offset +
    timestep_scale * t`` for ``t`` in [0, 1000], as ``timestep_dtype``; ``timestep_layout``
    maps the ``(batch,)`` tensor to the pipeline's shape (``None``: keep ``(batch,)``);
    ``timestep_aliases`` names further arguments that the pipeline passes the same tensor
    (e.g. AnyFlow's ``r_timestep``, ACE-Step's ``timestep_r``).
    ``output(ret)`` extracts the prediction with the latent's shape (learned-sigma channels
    dropped). ``notes`` collects facts that matter for caching.
    """

    factory: Callable[[], nn.Module]
    inputs: Callable[[nn.Module, int], dict]
    latent: Callable[..., torch.Tensor]
    latent_arg: str = "hidden_states"
    timestep_arg: str = "timestep"
    timestep_scale: float = 1.0
    timestep_dtype: torch.dtype = torch.float32
    output: Callable[[Any], torch.Tensor] = _default_output
    pipeline: str | None = None
    timestep_offset: float = 0.0
    timestep_layout: Callable[[torch.Tensor], torch.Tensor] | None = None
    timestep_aliases: tuple[str, ...] = ()
    notes: str = ""


def timestep_tensor(entry: Entry, t: float, batch: int) -> torch.Tensor:
    """The timestep argument for the value ``t`` (on the [0, 1000] scale) and a batch size."""
    value = entry.timestep_offset + entry.timestep_scale * float(t)
    if entry.timestep_dtype in (torch.int64, torch.int32, torch.long):
        ts = torch.full((batch,), round(value), dtype=entry.timestep_dtype)
    else:
        ts = torch.full((batch,), value, dtype=entry.timestep_dtype)
    if entry.timestep_layout is not None:
        ts = entry.timestep_layout(ts)
    return ts


def run(
    entry: Entry, model: nn.Module, num_steps: int = 4, batch: int = 1, seed: int = 0
) -> torch.Tensor:
    """Deterministic toy sampler: ``x <- x - 0.1 * prediction`` at ``linspace(999, 1, steps)``."""
    with torch.no_grad():
        x = entry.latent(batch, seed=seed)
        for t in torch.linspace(999, 1, num_steps).tolist():
            ts = timestep_tensor(entry, t, batch)
            kwargs = {entry.latent_arg: x, entry.timestep_arg: ts}
            kwargs.update({alias: ts for alias in entry.timestep_aliases})
            out = entry.output(model(**kwargs, **entry.inputs(model, batch)))
            if out.shape != x.shape:
                raise RuntimeError(
                    f"prediction shape {tuple(out.shape)} != latent shape {tuple(x.shape)}"
                )
            x = x - 0.1 * out
    return x


# --------------------------------------------------------------------------------------------
# Helpers


def randomize_zeros_(module: nn.Module, seed: int = 0) -> nn.Module:
    """Re-draw every floating parameter that is all zeros (seeded, ``named_parameters`` order).

    Matrices (``ndim >= 2``) get N(0, 1/fan_in), vectors and scalars N(0, 0.1^2). Parameters
    that are not all zero are left as constructed.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, param in module.named_parameters():
            if not param.is_floating_point() or param.numel() == 0 or bool(param.any()):
                continue
            if param.ndim >= 2:
                std = 1.0 / math.sqrt(max(1, param[0].numel()))
            else:
                std = 0.1
            values = torch.randn(param.shape, generator=generator, dtype=torch.float32) * std
            param.copy_(values.to(param.dtype))
    return module


def _builder(
    cls_name: str, config: dict, post: Callable[[nn.Module], None] | None = None
) -> Callable[[], nn.Module]:
    def factory() -> nn.Module:
        import diffusers

        cls = getattr(diffusers, cls_name)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = cls(**config)
        randomize_zeros_(model, seed=0)
        if post is not None:
            post(model)
        return model.float().eval()

    return factory


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(g: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=g)


def _latent(*shape_after_batch: int) -> Callable[..., torch.Tensor]:
    def latent(batch: int, seed: int = 0) -> torch.Tensor:
        return torch.randn(batch, *shape_after_batch, generator=_gen(seed))

    return latent


def _inputs(
    fn: Callable[[nn.Module, int, torch.Generator], dict], seed: int = 1234
) -> Callable[[nn.Module, int], dict]:
    def inputs(model: nn.Module, batch: int) -> dict:
        return fn(model, batch, _gen(seed))

    return inputs


def _text(dim: int, seq: int = 8, **extra: Any) -> Callable[[nn.Module, int], dict]:
    """Only ``encoder_hidden_states`` (B, seq, dim), plus constant keyword arguments."""

    def fn(model, b, g):
        return {"encoder_hidden_states": _randn(g, b, seq, dim), **extra}

    return _inputs(fn)


def _masked_text(dim: int, seq: int = 8) -> Callable[[nn.Module, int], dict]:
    """``encoder_hidden_states`` (B, seq, dim) with an all-ones ``encoder_attention_mask``."""

    def fn(model, b, g):
        return {
            "encoder_hidden_states": _randn(g, b, seq, dim),
            "encoder_attention_mask": torch.ones(b, seq),
            "return_dict": False,
        }

    return _inputs(fn)


def _keep_channels(channels: int, dim: int = 1) -> Callable[[Any], torch.Tensor]:
    """Output extractor that keeps the first ``channels`` channels (learned sigma dropped)."""

    def output(ret: Any) -> torch.Tensor:
        return _default_output(ret).narrow(dim, 0, channels)

    return output


def _pad_channels(total: int, dim: int = 1) -> Callable[[Any], torch.Tensor]:
    """Output extractor for models whose input concatenates fixed conditioning channels to the
    noisy latent: the prediction updates the latent channels, the conditioning stays as is."""

    def output(ret: Any) -> torch.Tensor:
        out = _default_output(ret)
        pad_shape = list(out.shape)
        pad_shape[dim] = total - out.shape[dim]
        return torch.cat([out, out.new_zeros(pad_shape)], dim=dim)

    return output


def _flux_img_ids(h: int, w: int) -> torch.Tensor:
    ids = torch.zeros(h, w, 3)
    ids[..., 1] = ids[..., 1] + torch.arange(h)[:, None]
    ids[..., 2] = ids[..., 2] + torch.arange(w)[None, :]
    return ids.reshape(h * w, 3)


def _flux_like(
    joint_dim: int, h: int = 4, w: int = 4, seq: int = 8, pooled: int | None = None, **extra
):
    """Flux-style inputs: text embeddings, ``txt_ids`` zeros, ``img_ids`` (row, col) positions."""

    def fn(model, b, g):
        d = {
            "encoder_hidden_states": _randn(g, b, seq, joint_dim),
            "txt_ids": torch.zeros(seq, 3),
            "img_ids": _flux_img_ids(h, w),
            "return_dict": False,
        }
        if pooled is not None:
            d["pooled_projections"] = _randn(g, b, pooled)
        d.update(extra)
        return d

    return _inputs(fn)


def _flux2_ids(b: int, h: int, w: int, seq: int) -> tuple[torch.Tensor, torch.Tensor]:
    img = torch.cartesian_prod(torch.arange(1), torch.arange(h), torch.arange(w), torch.arange(1))
    txt = torch.cartesian_prod(torch.arange(1), torch.arange(1), torch.arange(1), torch.arange(seq))
    return img.unsqueeze(0).expand(b, -1, -1), txt.unsqueeze(0).expand(b, -1, -1)


ENTRIES: dict[str, Callable[[], Entry]] = {}


def _register(name: str):
    def deco(fn: Callable[[], Entry]) -> Callable[[], Entry]:
        ENTRIES[name] = fn
        return fn

    return deco


# --------------------------------------------------------------------------------------------
# Image models (2-D latents)


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


# --------------------------------------------------------------------------------------------
# Video models (5-D latents)

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


# --------------------------------------------------------------------------------------------
# Audio and 1-D models


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


# --------------------------------------------------------------------------------------------
# Newer models (no diffusers model test config for some; configs shrunk from the defaults)


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


# --------------------------------------------------------------------------------------------
# Public tables


def _build_zoo() -> dict[str, Entry]:
    return {name: make() for name, make in sorted(ENTRIES.items())}


ZOO: dict[str, Entry] = _build_zoo()

_REASONS: dict[str, str] = {
    "PriorTransformer": "not a DiT denoiser: the unCLIP prior maps text embeddings to CLIP "
    "image embeddings",
    "T5FilmDecoder": "not a DiT denoiser: spectrogram decoder of the music (spectrogram "
    "diffusion) pipeline",
    "MiniMaxMusic3RVQDepthDecoder": "not a denoiser: autoregressive RVQ depth decoder of "
    "MiniMax Music 3",
    "Transformer2DModel": "generic UNet/VQ-diffusion building block (discrete VQ latents), no "
    "DiT pipeline",
    "DreamLiteTransformer2DModel": "UNet building block of DreamLite (spatial transformer "
    "inside a UNet)",
    "Cosmos3OmniTransformer": "omni-modal token model: forward takes packed token/vision index "
    "lists, not a latent",
    "RFD4ProteinaTransformer": "protein structure model (atom coordinates), not an "
    "image/video/audio latent",
    "AnyFlowFARTransformer3DModel": "not done yet: chunked autoregressive video with a KV cache "
    "(build_attention_mask, chunk_partition, forward returns (out, kv_cache))",
    "WanAnimate2Transformer3DModel": "not done yet: list-of-samples inputs with condition "
    "latents, a KV cache "
    "(kv_cache_mode) and 1280-dim CLIP image features",
    "Kandinsky6Transformer3DModel": "not done yet: joint audio+video model needing visual/audio "
    "rope positions "
    "and token type ids",
    "Kandinsky6SRTransformer3DModel": "not done yet: super-resolution model with NABLA sparse "
    "attention over "
    "tiles (tile_sizes); no tiny config worked out",
    "SanaWMTransformer3DModel": "not done yet: world model needing camera conditions / Plucker "
    "rays and chunked "
    "causal attention",
    "SanaWMLTX2RefinerTransformer3DModel": "not done yet: refiner needing precomputed "
    "video_rotary_emb and a KV cache",
}


def _unavailable() -> dict[str, str]:
    out = {}
    for name in transformer_classes():
        if name not in ZOO:
            out[name] = _REASONS.get(name, "not done yet")
    return out


UNAVAILABLE: dict[str, str] = _unavailable()
