"""The quality harness: the model, the sample batches and the rows of the quality benchmarks.

A :class:`Row` is one method at one setting: ``row.run(timing)`` samples the whole evaluation
batch (``timing=False``) or the smaller timing batch (``timing=True``) and returns the samples.
:class:`Bench` loads the model (``--model reference`` or ``second``), samples its batches and
builds rows for the uncached model at any number of steps (:meth:`Bench.plain`), for a
SmoothCache schedule (:meth:`Bench.cached`) and for a diffusers cache config
(:meth:`Bench.diffusers`). The modules that add rows (:mod:`.peers`, :mod:`.forecast_rows`)
build theirs on these.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

import smoothcache
from smoothcache import Schedule
from smoothcache.reference import load_reference_model, make_scheduler, sample

if TYPE_CHECKING:
    from diffusers import DDIMScheduler

EVAL_SEED, CALIBRATION_SEED, HELD_OUT_SEED = 0, 1000, 2000
MODELS = ("reference", "second")
#: The branch kinds of the digits DiTs (every block has an ``attn1`` and an ``ff`` branch).
KINDS = ("attn1", "ff")
SECOND_MODEL = Path(__file__).resolve().parents[1] / "second_model" / "model.py"


class BranchCounter:
    """Counts branch computations: calls of every block's ``attn1.to_q`` and ``ff.net[0]``.

    Those layers run only when their branch computes, however a method skips it (a reused,
    predicted or block-skipped branch never reaches them), so one count serves every method. It
    must sit on the module that actually runs: a method that works on a copy of the model is
    counted on that copy.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        self.calls = 0
        self.branches = 0
        for block in model.transformer_blocks:
            for layer in (block.attn1.to_q, block.ff.net[0]):
                layer.register_forward_hook(self._hook)
                self.branches += 1

    def _hook(self, *_args: object) -> None:
        self.calls += 1


@dataclass
class Row:
    """One method at one setting; ``run(timing)`` samples the evaluation or the timing batch.

    ``budget`` is the compute fraction a row was asked for, where it was asked for one (the
    targets table finds the library's forecast rows by it). The rest is filled in by the
    benchmark: branch-steps computed on the evaluation batch (``computed``) and on the timing
    batch (``timing_computed``), the samples and each one's squared error against the uncached
    sample, and the timed runs.
    """

    family: str
    setting: str
    run: Callable[[bool], torch.Tensor]
    counter: BranchCounter
    budget: float | None = None
    computed: int = 0
    timing_computed: int | None = None
    images: torch.Tensor | None = None
    errors: np.ndarray | None = None
    quality_seconds: float = 0.0
    times: list[float] = field(default_factory=list)
    cpu_times: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class Loaded:
    """A model to benchmark, the scheduler factory to sample it with, and what to call it."""

    model: torch.nn.Module
    scheduler: Callable[[int], DDIMScheduler]
    description: str
    title: str


def load_model(name: str, device: torch.device) -> Loaded:
    """``reference``: the shipped digits DiT; ``second``: ``benchmarks/second_model/model.py``.

    The second model's module exposes ``load(device=...)`` and ``scheduler(num_steps=50)`` (a
    DDIM scheduler for ``sample(..., scheduler=...)``).
    """
    if name == "reference":
        return Loaded(
            load_reference_model(device=device),
            make_scheduler,
            "`smoothcache.reference` (digits-dit)",
            "Reference model",
        )
    if name != "second":
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    if not SECOND_MODEL.exists():
        raise SystemExit(f"--model second needs {SECOND_MODEL}, which is not there (yet)")
    from benchmarks.second_model import model as module

    try:
        model = module.load(device=device)
    except FileNotFoundError as error:
        raise SystemExit(f"--model second: {error} (is the second model trained yet?)") from None
    return Loaded(
        model,
        module.scheduler,
        "`benchmarks/second_model` (a second digits DiT, trained by its `train.py`)",
        "Second model",
    )


class Bench:
    """The model, the sample batches and the row builders shared by every method.

    Batches: ``samples`` evaluation samples (classes in turn, seed 0), the first
    ``timing_samples`` of them for latency, and ``calibration_samples`` others (seed 1000).
    """

    def __init__(
        self,
        model: str,
        *,
        samples: int,
        timing_samples: int,
        calibration_samples: int,
        steps: int,
        guidance: float,
        device: torch.device,
    ) -> None:
        self.device = device
        self.steps = steps
        self.guidance = guidance
        self.model_name = model
        self.loaded = load_model(model, device)
        self.model = self.loaded.model
        self.counter = BranchCounter(self.model)
        self.classes = int(self.model.config.num_embeds_ada_norm)
        self.samples = samples
        self.timing_samples = timing_samples
        self.calibration_samples = calibration_samples
        self.labels = torch.arange(samples) % self.classes

    def sample(
        self,
        model: torch.nn.Module,
        steps: int,
        calibration: bool = False,
        *,
        timing: bool = False,
        count: int | None = None,
        held_out: int = 0,
    ) -> torch.Tensor:
        """Samples of ``model`` at ``steps`` steps with the benchmark's scheduler and guidance.

        The evaluation batch; with ``timing`` its first ``timing_samples``, with ``count`` its
        first ``count``; with ``calibration`` the calibration batch (``count`` of its seed
        instead of ``calibration_samples``); with ``held_out`` that many
        samples of their own seed (:data:`HELD_OUT_SEED`), to choose among schedules on.
        """
        if calibration:
            size, seed = count or self.calibration_samples, CALIBRATION_SEED
        elif held_out:
            size, seed = held_out, HELD_OUT_SEED
        else:
            size = count or (self.timing_samples if timing else self.samples)
            seed = EVAL_SEED
        return sample(
            model,
            torch.arange(size) % self.classes,
            num_steps=steps,
            guidance_scale=self.guidance,
            seed=seed,
            scheduler=self.loaded.scheduler(steps),
        )

    def plain(self, steps: int) -> Row:
        """The uncached model at ``steps`` steps: "no cache" at the benchmark's, else "fewer"."""
        name = "no cache" if steps == self.steps else "fewer steps"

        def run(timing: bool) -> torch.Tensor:
            return self.sample(self.model, steps, timing=timing)

        return Row(name, f"DDIM {steps}", run, self.counter)

    def cached(
        self, family: str, setting: str, schedule: Schedule, budget: float | None = None
    ) -> Row:
        """A SmoothCache schedule on the model; ``budget``: the compute fraction it was made for."""

        def run(timing: bool) -> torch.Tensor:
            with smoothcache.enabled(self.model, schedule):
                return self.sample(self.model, self.steps, timing=timing)

        return Row(family, setting, run, self.counter, budget=budget)

    def _copy_as(self, cls: type) -> torch.nn.Module:
        """A ``cls`` built from the model's own config, holding the model's weights."""
        copy = cls.from_config(self.model.config)
        copy.load_state_dict(self.model.state_dict())
        for module in copy.modules():  # label dropout off, as the loaders do
            if hasattr(module, "dropout_prob") and hasattr(module, "embedding_table"):
                module.dropout_prob = 0.0
        return copy.to(self.device).eval().requires_grad_(False)

    def plain_copy(self) -> torch.nn.Module:
        """A copy of the model, of its own class (for libraries that patch the model they get)."""
        return self._copy_as(type(self.model))

    def cache_model(self) -> torch.nn.Module:
        """A copy of the model whose class adds diffusers' ``CacheMixin`` (``enable_cache``)."""
        from diffusers.models.cache_utils import CacheMixin

        base = type(self.model)
        with_mixin = type(f"{base.__name__}WithCacheMixin", (CacheMixin, base), {})
        return self._copy_as(with_mixin)

    def diffusers(
        self, family: str, setting: str, make_config: Callable[[torch.nn.Module], Any]
    ) -> Row:
        """A row for a diffusers cache config; ``make_config(model)`` builds it for the copy."""
        from diffusers.hooks import HookRegistry

        copy = self.cache_model()
        counter = BranchCounter(copy)
        copy.enable_cache(make_config(copy))
        registry = HookRegistry.check_if_exists_or_initialize(copy)

        def run(timing: bool) -> torch.Tensor:
            try:
                with copy.cache_context("cond_uncond"):
                    return self.sample(copy, self.steps, timing=timing)
            finally:
                registry.reset_stateful_hooks()  # what pipelines do after every generation

        return Row(family, setting, run, counter)

    def check_cache_model(self) -> None:
        """The CacheMixin copy must compute exactly what the plain model computes."""
        ours = self.sample(self.cache_model(), self.steps, count=4)
        if not torch.equal(ours, self.sample(self.model, self.steps, count=4)):
            raise SystemExit("the CacheMixin copy does not reproduce the plain model")
