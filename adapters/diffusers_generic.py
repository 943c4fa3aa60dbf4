"""The generic adapter for diffusers transformers: found by structure, lowest priority.

For a diffusers transformer without a specific adapter, it establishes from the model itself,
and refuses with an :class:`~smoothcache.AdapterError` saying what it could not establish:

- **blocks**: every ``nn.ModuleList`` child of the model (``transformer_blocks``,
  ``single_transformer_blocks``, ``blocks``, ``layers`` ...) whose items hold branches;
- **branches**: in each block, the direct children that are attention modules (a class named
  ``Attention`` or deriving from diffusers' ``AttentionModuleMixin``: ``attn``, ``attn1``,
  ``attn2``, joint attention returning (image, text) tuples) or feed-forward modules (a class
  deriving from diffusers' ``FeedForward``, or a child named ``ff``, ``ffn``, ``ff_context``,
  ``mlp``, ``img_mlp``, ``txt_mlp``, ``feed_forward``, ``ff_i`` or ``ff_t``); a block that only
  wraps one module (HiDream's ``blocks.N.block``) is looked into. The kind is the child's name,
  prefixed with the block list's name when the model has several lists
  (``single_transformer_blocks.attn``);
- **timestep source**: the model itself, whose ``forward`` takes a ``timestep`` (or ``timesteps``,
  ``t``) argument: every diffusers pipeline calls the transformer once per evaluation, through
  ``__call__``, with the timestep. Embedders inside are not used: several are called twice per
  evaluation (Flux's ``time_proj`` embeds the timestep and the guidance).
- **guidance**: nothing to establish: one doubled batch is one pass, two calls per step (true
  CFG, ``cache_context("cond"/"uncond")``) are two passes, told apart by the timestep value.

What it cannot know statically, the engine checks at run time: a branch called twice per
evaluation (an ``AdapterError``), a pass that appears only at some steps (its stale outputs are
dropped). It matches only classes defined in ``diffusers.models.transformers`` or named
``*Transformer*``; any specific adapter for a class wins over it (detection ranks a structural
match last).
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from smoothcache.adapter import Adapter, Branch, TimestepSource, argument, class_names
from smoothcache.errors import AdapterError
from smoothcache.hookspecs import hookimpl

#: Child names taken as feed-forward branches whatever their class.
FEED_FORWARD_NAMES = (
    "ff", "ffn", "ff_context", "mlp", "img_mlp", "txt_mlp", "feed_forward", "ff_i", "ff_t",
)  # fmt: skip
#: Forward argument names taken as the timestep, in order of preference.
TIMESTEP_NAMES = ("timestep", "timesteps", "t")


def is_branch(name: str, module: nn.Module) -> bool:
    """Whether the child ``name`` of a block is a residual branch by diffusers' conventions."""
    names = class_names(module)
    if "Attention" in names or "AttentionModuleMixin" in names:
        return True
    return "FeedForward" in names or name in FEED_FORWARD_NAMES


def inner_block(block: nn.Module) -> tuple[str, nn.Module]:
    """The module holding a block's branches, and its path below the block: the block itself,
    or its only child when the block merely wraps one (HiDream's ``blocks.N.block``)."""
    if not any(is_branch(n, m) for n, m in block.named_children()):
        children = list(block.named_children())
        if len(children) == 1:
            return f"{children[0][0]}.", children[0][1]
    return "", block


def block_lists(model: nn.Module) -> list[tuple[str, nn.ModuleList]]:
    """The model's ``ModuleList`` children whose blocks hold at least one branch."""
    found = []
    for name, child in model.named_children():
        if isinstance(child, nn.ModuleList) and any(
            is_branch(n, m) for block in child for n, m in inner_block(block)[1].named_children()
        ):
            found.append((name, child))
    return found


def timestep_argument(model: nn.Module) -> tuple[str, int]:
    """The name and position of the timestep in ``model.forward``, or an AdapterError."""
    parameters = list(inspect.signature(model.forward).parameters)
    for name in TIMESTEP_NAMES:
        if name in parameters:
            return name, parameters.index(name)
    raise AdapterError(
        f"adapter 'diffusers-generic': {type(model).__name__}.forward takes no timestep argument "
        f"(looked for {', '.join(TIMESTEP_NAMES)} in {parameters}); write a specific adapter "
        "that names the timestep source (docs/adapters.md)"
    )


class GenericDiffusersAdapter(Adapter):
    """Any diffusers transformer with branches in block lists (see the module docstring)."""

    name = "diffusers-generic"
    priority = -100

    def matches(self, model: nn.Module) -> bool:
        cls = type(model)
        transformer = cls.__module__.startswith("diffusers.models.transformers") or (
            "Transformer" in cls.__name__ and "ModelMixin" in class_names(model)
        )
        if not transformer or not block_lists(model):
            return False
        parameters = inspect.signature(model.forward).parameters
        return any(name in parameters for name in TIMESTEP_NAMES)

    def branches(self, model: nn.Module) -> list[Branch]:
        lists = block_lists(model)
        if not lists:
            raise AdapterError(
                f"adapter 'diffusers-generic' found no block list with attention or feed-forward "
                f"children in a {type(model).__name__}; write a specific adapter (docs/adapters.md)"
            )
        found = []
        for list_name, blocks in lists:
            prefix = f"{list_name}." if len(lists) > 1 else ""
            for index, block in enumerate(blocks):
                below, inner = inner_block(block)
                for name, child in inner.named_children():
                    if is_branch(name, child):
                        path = f"{list_name}.{index}.{below}{name}"
                        found.append(Branch(path, prefix + name, index))
        return found

    def timestep_source(self, model: nn.Module) -> TimestepSource:
        name, position = timestep_argument(model)
        return TimestepSource(path="", read=argument(name, position))

    def describe(self, model: nn.Module) -> dict[str, Any]:
        """What the adapter established on ``model`` (for ``smoothcache adapters --check``)."""
        name, position = timestep_argument(model)
        return {
            "block lists": [f"{n} ({len(b)} blocks)" for n, b in block_lists(model)],
            "timestep": f"argument {name!r} (position {position}) of the model's forward",
        }


@hookimpl
def smoothcache_adapters() -> list[Adapter]:
    """The generic diffusers adapter."""
    return [GenericDiffusersAdapter()]
