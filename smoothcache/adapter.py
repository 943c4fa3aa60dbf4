"""The adapter contract: what smoothcache needs to know about one architecture family.

An adapter names the family, recognises its models by class and structure, lists the cacheable
residual branches, and says which module receives the timestep once per model evaluation and
how to read the timestep from that module's inputs. Everything model-specific lives here; the
engine and calibration are generic.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from torch import nn

#: Reads the timestep from a module call's ``(args, kwargs)``.
TimestepReader = Callable[[tuple[Any, ...], dict[str, Any]], Any]


@dataclass(frozen=True)
class Branch:
    """One cacheable residual branch of a model.

    ``path`` is the dotted module path from the denoiser root (``transformer_blocks.3.attn1``),
    ``kind`` the schedule key shared by all blocks (``attn1``), ``block`` the block index used by
    per-block keys (``attn1-3``).

    ``leader`` makes the branch a *member of a group* (fused or parallel branches whose outputs
    meet in one module before the residual add, as FLUX's single-stream block feeds attention
    and MLP into one ``proj_out``): it names the path of the group's leader, the module whose
    output meets the residual and is cached. A member has the leader's kind and block, so it
    computes exactly when the leader computes; at the leader's skipped steps it does not run
    and answers a NaN-filled stand-in of its last output's shape (its value must reach the
    block's output only through the leader, which is skipped too; the conformance kit checks
    that the output stays finite). Members are not calibrated and never forecast.
    """

    path: str
    kind: str
    block: int
    leader: str | None = None

    @property
    def key(self) -> str:
        """The per-block schedule key of this branch, e.g. ``attn1-3``."""
        return f"{self.kind}-{self.block}"


@dataclass(frozen=True)
class TimestepSource:
    """Where the timestep enters the model: a module called exactly once per evaluation.

    ``path`` is the dotted module path from the root (``""`` for the root itself); ``read`` takes
    the ``(args, kwargs)`` of that module's call and returns the timestep (tensor or number).
    """

    path: str
    read: TimestepReader


def argument(name: str, position: int) -> TimestepReader:
    """A reader that takes the keyword ``name`` if given, else the positional ``position``."""

    def read(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if name in kwargs:
            return kwargs[name]
        if len(args) > position:
            return args[position]
        raise TypeError(f"the model was called without its timestep argument {name!r}")

    read.__qualname__ = f"argument({name!r}, {position})"
    return read


def class_names(obj: object) -> set[str]:
    """Names of every class in ``obj``'s MRO: detection by name needs no import of the library."""
    return {cls.__name__ for cls in type(obj).__mro__}


def has_children(module: nn.Module, *names: str) -> bool:
    """True when ``module`` has every named attribute and each is a module (or a ModuleList)."""
    return all(isinstance(getattr(module, name, None), nn.Module) for name in names)


def block_branches(model: nn.Module, path: str, kinds: Sequence[str]) -> list[Branch]:
    """Branches ``{path}.{i}.{kind}`` for every block of the list at ``path`` and every kind the
    block has as a module (an optional branch, such as a missing ``attn2``, is left out)."""
    return [
        Branch(path=f"{path}.{i}.{kind}", kind=kind, block=i)
        for i, block in enumerate(model.get_submodule(path))
        for kind in kinds
        if isinstance(getattr(block, kind, None), nn.Module)
    ]


class Adapter:
    """Base class of adapters. Subclasses set ``name`` and implement the three methods.

    ``kinds`` lists the branch kinds the adapter may declare (for listings and documentation);
    ``model_classes`` names the classes the adapter targets and ``priority`` settles the rest.

    **Detection rule.** When several adapters match one model (each on the module its
    :meth:`root` unwraps), :func:`smoothcache.detect` ranks them:

    1. *Most specific first*: an adapter is as specific as the first class in the model's MRO
       whose ``__name__`` it lists in ``model_classes``. A match on the model's own class beats
       a match on a base class; an adapter that matches without listing any class of the
       model's MRO is the least specific.
    2. *Then the higher* ``priority`` (default 0).
    3. Still tied: an :class:`~smoothcache.AdapterError` that names the tied adapters and asks
       for ``adapter="name"``.

    ``enabled(..., adapter="name")`` skips detection altogether. So a third-party adapter can
    take over a class a built-in adapter handles by listing the same class with a higher
    ``priority``, or by listing a subclass.

    ``kind_aliases`` lets schedules travel between adapters of one network: a schedule key
    whose kind the model does not have but the adapter lists as an alias is read as the kind
    it maps to.
    """

    name: str = ""
    priority: int = 0
    kinds: Sequence[str] = ()
    model_classes: Sequence[str] = ()
    #: The names other adapters of the same network give this adapter's kinds, mapped to this
    #: adapter's (the original DiT's ``attn`` and ``mlp`` are diffusers' ``attn1`` and ``ff``):
    #: a schedule made with one adapter then applies to a model seen through the other.
    kind_aliases: Mapping[str, str] = MappingProxyType({})

    def root(self, obj: Any) -> nn.Module | None:
        """Unwrap ``obj`` (a pipeline, a compiled module, a module) to the denoiser module.

        The default takes ``obj.transformer`` from a diffusers pipeline and ``_orig_mod`` from a
        ``torch.compile`` wrapper; return ``None`` when ``obj`` holds no candidate module.
        """
        module = obj
        if not isinstance(module, nn.Module):
            module = getattr(obj, "transformer", None)
        if isinstance(getattr(module, "_orig_mod", None), nn.Module):
            module = module._orig_mod
        return module if isinstance(module, nn.Module) else None

    def matches(self, model: nn.Module) -> bool:
        """True when ``model`` (already unwrapped by :meth:`root`) belongs to this family.

        The default accepts a model with a class named in ``model_classes`` anywhere in its MRO,
        which spares importing the library that defines it; overrides usually add structural
        checks (``super().matches(model) and ...``). Never load or run anything here.
        """
        if not self.model_classes:
            raise NotImplementedError(
                f"adapter {self.name!r} declares no model_classes; override matches()"
            )
        return not class_names(model).isdisjoint(self.model_classes)

    def branches(self, model: nn.Module) -> list[Branch]:
        """Every cacheable residual branch of ``model``, in execution order."""
        raise NotImplementedError

    def timestep_source(self, model: nn.Module) -> TimestepSource:
        """The module that receives the timestep exactly once per model evaluation."""
        raise NotImplementedError

    def fast_forwards(self, model: nn.Module) -> dict[str, Callable[..., Any]]:
        """Optional block forwards that skip a reused branch's input preparation.

        Maps a block's path to a function ``forward(block, *args, **kwargs)`` that the engine
        binds to that block while caching. Before preparing a branch's input, the function asks
        :func:`smoothcache.engine.reused_output` for the output to reuse and prepares the input
        only when it gets ``None``. It must compute exactly what the block's own forward does
        (a compute-everything schedule stays bit-identical); return no entry for a block whose
        configuration the function does not reproduce. The default declares none.
        """
        return {}

    def __repr__(self) -> str:
        return f"<adapter {self.name!r}>"
