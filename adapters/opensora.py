"""Adapters for Open-Sora's spatial-temporal DiTs: STDiT3 (Open-Sora 1.2) and STDiT2 (1.1).

Open-Sora is not a package on the index and needs xformers, so both adapters recognise the real
classes by name and structure only.

**STDiT3** has two block lists of ``STDiT3Block``, ``spatial_blocks`` and ``temporal_blocks``
(absent when a 1.3 config sets ``skip_temporal``), run interleaved: spatial 0, temporal 0,
spatial 1, ... Each block has the residual branches ``attn``, ``cross_attn`` and ``mlp``;
``attn`` and ``mlp`` are gated by adaLN after the branch (per frame, through ``t_mask_select``,
when conditioning frames are given as ``x_mask``). The kinds name the block family
(``spatial.attn``, ``temporal.mlp``) and the block index counts within its own list, so
``spatial.cross_attn-7`` is ``spatial_blocks.7.cross_attn``.

The timestep source of STDiT3 is the root, reading ``timestep``: the rectified-flow sampler of
1.2 calls ``model(z_in, t, **model_args)`` through ``__call__`` once per step, guidance batched
as [cond, uncond]. ``t_embedder`` is *not* a valid source: with ``x_mask`` (which 1.2's inference
script always passes) ``forward`` calls it a second time for the conditioning frames' timestep 0.

**STDiT2** has one list ``blocks`` of ``STDiT2Block``, each with ``attn`` (spatial),
``attn_temp`` (temporal), ``cross_attn`` and ``mlp``. 1.1 samples with IDDPM (or DPM-solver),
whose ``forward_with_cfg`` calls ``model.forward`` directly, so hooks on the root never fire;
the timestep source is ``t_embedder``, called once per evaluation with the timestep first. That
holds without ``x_mask``; with it (reference-frame conditioning) ``t_embedder`` runs twice, no
module receives the timestep exactly once, and the engine refuses with an adapter error.

Not supported: Open-Sora 1.3's ``mask_index`` path (i2v/v2v) calls ``cross_attn`` twice per block.
"""

from __future__ import annotations

from torch import nn

from smoothcache.adapter import Adapter, Branch, TimestepSource, argument, has_children
from smoothcache.hookspecs import hookimpl

_STDIT3_BRANCHES = ("attn", "cross_attn", "mlp")
_STDIT2_BRANCHES = ("attn", "attn_temp", "cross_attn", "mlp")


def _blocks_with(model: nn.Module, name: str, branches: tuple[str, ...]) -> bool:
    """True when ``model.<name>`` is a non-empty ModuleList whose blocks all hold ``branches``."""
    blocks = getattr(model, name, None)
    return (
        isinstance(blocks, nn.ModuleList)
        and len(blocks) > 0
        and all(has_children(b, *branches) for b in blocks)
    )


class STDiT3Adapter(Adapter):
    """Open-Sora 1.2 STDiT3: kinds ``spatial.*`` and ``temporal.*`` of attn, cross_attn, mlp."""

    name = "opensora-stdit3"
    model_classes = ("STDiT3",)
    kinds = tuple(f"{family}.{b}" for family in ("spatial", "temporal") for b in _STDIT3_BRANCHES)

    def matches(self, model: nn.Module) -> bool:
        if not super().matches(model) or not has_children(model, "t_embedder"):
            return False
        if not _blocks_with(model, "spatial_blocks", _STDIT3_BRANCHES):
            return False
        temporal = getattr(model, "temporal_blocks", None)
        return temporal is None or (
            _blocks_with(model, "temporal_blocks", _STDIT3_BRANCHES)
            and len(temporal) == len(model.spatial_blocks)
        )

    def branches(self, model: nn.Module) -> list[Branch]:
        families = [("spatial", "spatial_blocks")]
        if getattr(model, "temporal_blocks", None) is not None:
            families.append(("temporal", "temporal_blocks"))
        return [
            Branch(path=f"{attr}.{i}.{branch}", kind=f"{family}.{branch}", block=i)
            for i in range(len(model.spatial_blocks))
            for family, attr in families
            for branch in _STDIT3_BRANCHES
        ]

    def timestep_source(self, model: nn.Module) -> TimestepSource:
        return TimestepSource(path="", read=argument("timestep", 1))


class STDiT2Adapter(Adapter):
    """Open-Sora 1.1 STDiT2: kinds ``attn``, ``attn_temp``, ``cross_attn`` and ``mlp``."""

    name = "opensora-stdit2"
    kinds = _STDIT2_BRANCHES
    model_classes = ("STDiT2",)

    def matches(self, model: nn.Module) -> bool:
        return (
            super().matches(model)
            and has_children(model, "t_embedder")
            and _blocks_with(model, "blocks", _STDIT2_BRANCHES)
        )

    def branches(self, model: nn.Module) -> list[Branch]:
        return [
            Branch(path=f"blocks.{i}.{kind}", kind=kind, block=i)
            for i in range(len(model.blocks))
            for kind in self.kinds
        ]

    def timestep_source(self, model: nn.Module) -> TimestepSource:
        return TimestepSource(path="t_embedder", read=argument("t", 0))


@hookimpl
def smoothcache_adapters() -> list[Adapter]:
    """The Open-Sora STDiT3 and STDiT2 adapters."""
    return [STDiT3Adapter(), STDiT2Adapter()]
