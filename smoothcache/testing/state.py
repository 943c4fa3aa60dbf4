"""Snapshots of everything smoothcache may touch on a model, to prove it left the model as it was.

The ``restore`` and calibration checks take a :func:`module_state` before a session and compare
it with one taken after (:func:`state_differences`): an engine or adapter that leaves a hook, an
attribute or a changed weight behind fails them.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import torch
from torch import nn

from smoothcache.engine.outputs import identical


def module_state(model: nn.Module) -> dict[str, Any]:
    """Everything smoothcache may touch on each module of ``model``.

    Per module: the instance ``forward`` attribute (or ``None``), the names of its instance
    attributes, its forward hooks and pre-hooks; per parameter and buffer: the object and a
    copy of its values. Compare two snapshots with :func:`state_differences`.
    """
    state: dict[str, Any] = {}
    for name, module in model.named_modules():
        state[f"module {name or '<root>'}"] = (
            module.__dict__.get("forward"),
            frozenset(module.__dict__),
            dict(module._forward_hooks),
            dict(module._forward_pre_hooks),
            dict(module._forward_hooks_with_kwargs),
            dict(module._forward_pre_hooks_with_kwargs),
        )
    for key, tensor in tensor_objects(model).items():
        state[key] = (tensor, tensor.detach().clone())
    return state


def tensor_objects(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer, by the key :func:`module_state` gives it (objects, no copies)."""
    return {f"tensor {n}": t for n, t in [*model.named_parameters(), *model.named_buffers()]}


def state_differences(
    before: dict[str, Any], after: dict[str, Any], replaced: Collection[str] = ()
) -> list[str]:
    """The keys of two :func:`module_state` snapshots that differ (tensors compared bit-exact,
    and as objects, except the ``replaced`` ones that the model itself swaps for a new object
    on every call, whose values alone are compared)."""
    differences = sorted(before.keys() ^ after.keys())
    for key in before.keys() & after.keys():
        if key.startswith("tensor "):
            (obj, old), (new_obj, new) = before[key], after[key]
            swapped = obj is not new_obj and key not in replaced
            if swapped or not identical(old, new.detach()):
                differences.append(key)
        elif before[key] != after[key]:
            differences.append(key)
    return differences
