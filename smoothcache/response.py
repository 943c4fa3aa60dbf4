"""The sensitivity in one run: reverse-mode passes instead of one perturbed run per step.

:func:`~smoothcache.measure_sensitivity` finds how much reusing every branch at step ``t``
moves the final output by rerunning the whole sampler once per step: ``N - 2`` runs for ``N``
steps (146 for three kinds). :func:`estimate_sensitivity` gets the same gram from one run:

1. At every model evaluation of step ``t`` the model is called a second time, without
   gradients, with every branch answering its output of step ``t - 1``: the difference of the
   two outputs is ``delta[t]``, exactly the change of the model's output that one step of reuse
   makes (the branches' nonlinear interplay included).
2. How that change moves the final output is linearised: ``P[t] = J[t] delta[t]``, where
   ``J[t]`` is the Jacobian of the final output with respect to the model's output at step
   ``t``, through every later step computed in full. Reverse-mode passes from random
   projections ``v`` of the final output give ``v . P[t] = (J[t]^T v) . delta[t]`` for every
   ``t`` at once, and ``E[(v . P[t]) (v . P[u])] = P[t] . P[u]``: the gram.
3. Samples do not interact, so each sample's share of ``v . P[t]`` is an estimate of its own;
   with ``B`` samples and ``K`` projections the gram is a mean of ``B * K`` rank-one terms. The
   rows of the model's output that belong to each sample (a guided batch ``[cond, uncond]``
   holds sample ``i`` in rows ``i`` and ``i + B``) are found by one reverse pass from sample 0
   alone through the last step.

Each evaluation's forward is checkpointed (:func:`torch.utils.checkpoint.checkpoint`), so the
graph holds the model's inputs and outputs per evaluation, not its activations; every reverse
pass recomputes them once. Cost: one run with gradients, one replayed evaluation per step,
``projections + 1`` reverse passes (each about three evaluations of compute).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils import checkpoint
from torch.utils._pytree import tree_map

from smoothcache.adapter import Adapter
from smoothcache.binding import bind, model_branches
from smoothcache.clock import StepClock
from smoothcache.curves import ErrorCurves
from smoothcache.errors import CalibrationError
from smoothcache.measurements import ALL_BRANCHES, Sensitivity
from smoothcache.patching import Patches


class SensitivityUnavailable(CalibrationError):
    """The estimate cannot be made on this run: it kept no gradients, or the model's output has
    no tensor to probe. :func:`smoothcache.tune` goes on without it, with a warning."""


NO_GRAPH = (
    "run() returned an output that does not depend on the model's outputs through autograd: it "
    "ran without gradients (torch.no_grad or inference_mode, a diffusers pipeline's __call__, "
    "or a NumPy output); estimate_sensitivity needs a run() that keeps gradients on "
    "(measure_sensitivity needs none)"
)


def _detached(output: Any) -> Any:
    return tree_map(lambda x: x.detach() if isinstance(x, torch.Tensor) else x, output)


def _first_tensor(output: Any) -> torch.Tensor:
    """The model output's sample: a tensor, the first item of a tuple, or ``.sample``."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    sample = getattr(output, "sample", None)
    if isinstance(sample, torch.Tensor):
        return sample
    raise SensitivityUnavailable(
        f"the model returned {type(output).__name__} (first item "
        f"{type(output[0]).__name__ if isinstance(output, (tuple, list)) and output else '-'}); "
        "estimating the sensitivity needs a tensor, a tuple starting with one, or an output "
        "with .sample"
    )


def _with_sample(output: Any, sample: torch.Tensor) -> Any:
    """``output`` with its sample replaced (the same kind of object)."""
    if isinstance(output, torch.Tensor):
        return sample
    if isinstance(output, (tuple, list)):
        return type(output)([sample, *output[1:]])
    output.sample = sample  # diffusers' outputs keep the attribute and the key in step
    return output


class _Trace:
    """The hooks of one run with gradients: every evaluation's zero-valued probe ``z`` (added to
    the model's output, so its gradient is the output's), its pass, and its ``delta``."""

    def __init__(self, bound: Any, patches: Patches, num_steps: int) -> None:
        self.clock = StepClock(None)
        self.num_steps = num_steps
        self.recording = True
        self.replaying = False
        self.probes: list[tuple[int, int, torch.Tensor, torch.Tensor | None]] = []
        self._previous: dict[tuple[int, int], dict[int, Any]] = {}  # (root, pass) -> outputs
        self._current: dict[int, Any] = {}
        self._replay: dict[int, Any] = {}
        for r, (_, root) in enumerate(bound.roots):
            modules = [m for _, m in model_branches(root, bound.adapter)]
            patches.hold([root, *modules])
            source = dict(bound.sources)[root]
            module = root.get_submodule(source.path)
            patches.add_hook(
                module, module.register_forward_pre_hook(self._tick(source.read), with_kwargs=True)
            )
            for index, branch in enumerate(modules):
                patches.add_hook(branch, branch.register_forward_hook(self._branch(index)))
            patches.add_hook(
                root, root.register_forward_hook(self._root(r, modules), with_kwargs=True)
            )
            patches.replace_forward(root, self._checkpointed(root.forward))

    def _tick(self, read: Callable[..., Any]) -> Callable[..., None]:
        def hook(_module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            if self.recording and not self.replaying:
                self.clock.tick(read(args, kwargs))

        return hook

    def _branch(self, index: int) -> Callable[..., Any]:
        def hook(_module: nn.Module, _args: tuple[Any, ...], output: Any) -> Any:
            if not self.recording:
                return None  # a reverse pass recomputing the evaluation
            if self.replaying:
                return self._replay[index]
            self._current[index] = _detached(output)
            return None

        return hook

    def _root(self, r: int, modules: list[nn.Module]) -> Callable[..., Any]:
        def hook(module: nn.Module, args: Any, kwargs: dict[str, Any], output: Any) -> Any:
            if not self.recording or self.replaying:
                return None
            key = (r, self.clock.pass_idx)
            previous = self._previous.get(key)
            sample = _first_tensor(output)
            delta = None
            step = self.clock.step
            if previous is not None and len(previous) == len(modules) and step < self.num_steps - 1:
                self._replay, self.replaying = previous, True
                try:
                    with torch.no_grad():
                        delta = _first_tensor(module(*args, **kwargs)).detach() - sample.detach()
                finally:
                    self.replaying = False
            self._previous[key], self._current = self._current, {}
            probe = torch.zeros_like(sample, requires_grad=True)
            self.probes.append((step, self.clock.pass_idx, probe, delta))
            return _with_sample(output, sample + probe)

        return hook

    def _checkpointed(self, forward: Callable[..., Any]) -> Callable[..., Any]:
        def run(*args: Any, **kwargs: Any) -> Any:
            if not torch.is_grad_enabled():
                return forward(*args, **kwargs)
            return checkpoint.checkpoint(forward, *args, use_reentrant=False, **kwargs)

        return run


def _sample_rows(final: torch.Tensor, probes: list[torch.Tensor]) -> list[torch.Tensor] | None:
    """For each probe of the last step, the sample each of its rows belongs to (``None`` when
    the rows do not map to samples by a guided batch's or a sample-major layout)."""
    count = final.shape[0]
    v = torch.zeros_like(final)
    v[0] = torch.randn(final.shape[1:], generator=torch.Generator().manual_seed(1)).to(final)
    grads = torch.autograd.grad(final, probes, v, retain_graph=True, allow_unused=True)
    maps = []
    for probe, grad in zip(probes, grads):
        rows = probe.shape[0]
        if grad is None or rows % count:
            return None
        seen = torch.nonzero(grad.reshape(rows, -1).abs().sum(1)).flatten().tolist()
        copies = rows // count
        if seen == [j * count for j in range(copies)]:
            maps.append(torch.arange(rows) % count)  # [cond, uncond]: sample i at i, i + B
        elif seen == list(range(copies)):
            maps.append(torch.arange(rows) // copies)  # sample-major: i * c .. i * c + c - 1
        else:
            return None
    return maps


def estimate_sensitivity(
    model: Any,
    run: Callable[[], Any],
    curves: ErrorCurves,
    *,
    projections: int = 2,
    seed: int = 0,
    adapter: str | Adapter | None = None,
) -> ErrorCurves:
    """Estimate how one step of reuse of every branch changes the final output, from one run;
    returns ``curves`` carrying it (the group :data:`ALL_BRANCHES` only).

    ``run()`` samples the calibration batch deterministically, *with gradients enabled*, and
    returns the final output as a tensor; ``curves`` are the model's error curves for the same
    sampler. The module's text says how it works and what it costs; ``projections`` is the
    number of random reverse passes, ``seed`` seeds them. What it gives is what the weighted
    forecast candidates and ``method="sensitivity"`` read; the kind-by-kind groups that
    :func:`~smoothcache.measure_sensitivity` also measures are not estimated.
    """
    if not isinstance(projections, int) or projections < 1:
        raise CalibrationError(f"projections must be an integer >= 1, found {projections!r}")
    curves.check_model(model, adapter)
    started = time.perf_counter()
    patches = Patches(owner="a sensitivity estimate")
    try:
        trace = _Trace(bind(model, adapter), patches, curves.num_steps)
        with torch.enable_grad():
            try:
                final = run()
            except RuntimeError as exc:
                if "requires grad" not in str(exc):
                    raise
                # e.g. a pipeline that turns its output into NumPy, which a graph forbids
                raise SensitivityUnavailable(
                    f"run() fails with gradients on ({exc}); return a tensor (output_type="
                    "'latent' or 'pt' for a pipeline)"
                ) from exc
        trace.recording = False
        if not isinstance(final, torch.Tensor) or not final.requires_grad:
            raise SensitivityUnavailable(NO_GRAPH)
        n = curves.num_steps
        if trace.clock.step + 1 != n:
            raise CalibrationError(
                f"run() made {trace.clock.step + 1} steps but the curves were calibrated for {n}; "
                "estimate the sensitivity with the sampler the curves were made with"
            )
        gram = _gram(final, trace.probes, n, projections, seed)
    finally:
        patches.undo()
    metadata = {
        "method": "reverse-mode",
        "projections": projections,
        "seconds": round(time.perf_counter() - started, 3),
        "output_shape": list(final.shape),
        **gram[1],
    }
    return curves.with_sensitivity(
        Sensitivity((ALL_BRANCHES,), gram[0][None], gram[0][None], metadata)
    )


def _gram(
    final: torch.Tensor,
    probes: list[tuple[int, int, torch.Tensor, torch.Tensor | None]],
    n: int,
    projections: int,
    seed: int,
) -> tuple[Any, dict[str, Any]]:
    """The estimated gram ``(n, n)`` (zero at the first and last step) and how it was made."""
    maps = _sample_rows(final, [p for step, _, p, _ in probes if step == n - 1])
    used = [(step, pass_idx, p, d) for step, pass_idx, p, d in probes if 0 < step < n - 1]
    if maps is not None and any(
        pass_idx >= len(maps) or maps[pass_idx].shape[0] != p.shape[0] for _, pass_idx, p, _ in used
    ):
        maps = None  # a pass the last step does not make: every sample's share pooled
    count = final.shape[0] if maps is not None else 1
    generator = torch.Generator().manual_seed(seed)
    shares = torch.zeros(projections, n, count, dtype=torch.float64)
    for k in range(projections):
        v = torch.randn(final.shape, generator=generator, dtype=torch.float64).to(final)
        grads = torch.autograd.grad(
            final,
            [p for _, _, p, _ in used],
            v,
            retain_graph=k + 1 < projections,
            allow_unused=True,
        )
        for (step, pass_idx, probe, delta), grad in zip(used, grads):
            if grad is None or delta is None:
                continue  # no graph to this evaluation, or no previous outputs to reuse
            dots = (grad.double() * delta.double()).reshape(probe.shape[0], -1).sum(1)
            if maps is None:
                shares[k, step, 0] += dots.sum().cpu()
            else:
                shares[k, step].index_add_(0, maps[pass_idx], dots.cpu())
    size = final.numel() * projections
    gram = torch.einsum("ktb,kub->tu", shares, shares) / size
    return gram.numpy(), {"per_sample": maps is not None, "reverse_passes": projections + 1}
