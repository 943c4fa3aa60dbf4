"""Branch outputs as values: their tensors, shapes, sizes and bit-identity.

A branch returns a tensor or a tuple, list or dict of them. The engine stores such outputs,
counts their bytes, remembers their shapes for stand-ins, and the fast-path check and the
conformance kit compare them bit for bit; these functions walk that structure once, for all.
"""

from __future__ import annotations

from typing import Any

import torch


def like(output: Any) -> Any:
    """The shapes, dtypes and devices of a branch output's tensors, in its structure."""
    if isinstance(output, torch.Tensor):
        return (output.shape, output.dtype, output.device)
    if isinstance(output, (tuple, list)):
        return type(output)(like(o) for o in output)
    return output


def stand_in(like: Any) -> Any:
    """NaN-filled tensors in the structure :func:`like` recorded."""
    if isinstance(like, tuple) and len(like) == 3 and isinstance(like[1], torch.dtype):
        shape, dtype, device = like
        if dtype.is_floating_point or dtype.is_complex:
            return torch.full(shape, float("nan"), dtype=dtype, device=device)
        return torch.zeros(shape, dtype=dtype, device=device)
    if isinstance(like, (tuple, list)):
        return type(like)(stand_in(x) for x in like)
    return like


def input_shape(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Shape of a branch call's first tensor argument: the guard against reusing across shapes."""
    if args:
        return getattr(args[0], "shape", None)
    for value in kwargs.values():
        if isinstance(value, torch.Tensor):
            return value.shape
    return None


def nbytes(obj: Any) -> int:
    """Bytes held by the tensors in a branch output (a tensor, or a tuple/list/dict of them)."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, (tuple, list)):
        return sum(nbytes(o) for o in obj)
    if isinstance(obj, dict):
        return sum(nbytes(o) for o in obj.values())
    return 0


def identical(a: Any, b: Any) -> bool:
    """Bit-identical tensors, or tuples/lists of them; other values compare with ``==``."""
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(identical(x, y) for x, y in zip(a, b))
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return False
    return a == b
