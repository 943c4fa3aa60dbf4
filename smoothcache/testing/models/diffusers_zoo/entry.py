"""The zoo's plumbing: enumerating diffusers' transformer classes, the :class:`Entry` of one
tiny model, the toy sampler :func:`run`, and the helpers and the registry
(:data:`ENTRIES`, filled by the section modules) that the entries are written with.
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

# --------------------------------------------------------------------------------------------
# Enumeration

#: diffusers transformer modules that failed to import, by name, with the error: filled by
#: :func:`transformer_classes`, whose enumeration lacks their classes; the coverage matrix lists
#: each as a row that says why, so nothing drops out unsaid.
NOT_IMPORTED: dict[str, str] = {}


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
    NOT_IMPORTED.clear()
    for info in pkgutil.iter_modules(package.__path__):
        module_name = f"{package.__name__}.{info.name}"
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:  # an optional dependency missing: said, not dropped
            NOT_IMPORTED[module_name] = f"{type(exc).__name__}: {exc}"
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
    entry: Entry,
    model: nn.Module,
    num_steps: int = 4,
    batch: int = 1,
    seed: int = 0,
    keep_gradients: bool = False,
) -> torch.Tensor:
    """Deterministic toy sampler: ``x <- x - 0.1 * prediction`` at ``linspace(999, 1, steps)``;
    without gradients unless ``keep_gradients`` (for ``smoothcache.estimate_sensitivity``)."""
    with torch.set_grad_enabled(keep_gradients):
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
