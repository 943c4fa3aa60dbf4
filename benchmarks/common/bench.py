"""The quality harness: the model, the sample batches and the rows of the quality benchmarks.

A :class:`Row` is one method at one setting: ``row.run(batch)`` samples the whole evaluation
batch (``"evaluation"``), the smaller timing batch (``"timing"``) or the held-out batch its
setting is chosen on (``"held_out"``) and returns the samples. :class:`Bench` loads the model
(``--model reference``, ``second`` or ``flow``), samples its batches with the seeds of one side
of the split (:mod:`benchmarks.common.seeds`) and
builds rows for the uncached model at any number of steps (:meth:`Bench.plain`), for a
SmoothCache schedule (:meth:`Bench.cached`) and for a diffusers cache config
(:meth:`Bench.diffusers`). The modules that add rows (:mod:`.peers`, :mod:`.forecast_rows`)
build theirs on these.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

import smoothcache
from benchmarks.common.checkpoint import Checkpoint
from benchmarks.common.seeds import DEVELOPMENT, Seeds
from smoothcache import Schedule
from smoothcache.reference import load_reference_model, make_scheduler, sample

if TYPE_CHECKING:
    from diffusers import DDIMScheduler

#: The development seeds (:mod:`benchmarks.common.seeds`), by their old names.
EVAL_SEED, CALIBRATION_SEED, HELD_OUT_SEED = (
    DEVELOPMENT.evaluation,
    DEVELOPMENT.calibration[0],
    DEVELOPMENT.held_out,
)
MODELS = ("reference", "second", "flow")
#: The batches a :class:`Row` samples (``row.run(batch)``).
BATCHES = ("evaluation", "timing", "held_out")
#: The branch kinds of the digits DiTs (every block has an ``attn1`` and an ``ff`` branch).
KINDS = ("attn1", "ff")
SECOND_MODEL = Path(__file__).resolve().parents[1] / "second_model" / "model.py"


def dit_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """Every block's ``attn1.to_q`` and ``ff.net[0]``: one layer per branch of a digits DiT."""
    return [layer for b in model.transformer_blocks for layer in (b.attn1.to_q, b.ff.net[0])]


class BranchCounter:
    """Counts branch computations: calls of one layer per branch (``layers(model)``; by default
    every block's ``attn1.to_q`` and ``ff.net[0]``).

    Those layers run only when their branch computes, however a method skips it (a reused,
    predicted or block-skipped branch never reaches them), so one count serves every method. It
    must sit on the module that actually runs: a method that works on a copy of the model is
    counted on that copy.

    The count wraps each layer's ``forward`` on the instance rather than registering a forward
    hook: the library gives a block its adapter's fast forward only when no forward hook sits
    inside it (hooks would fire at other moments on the fast path), so a hook would make every
    library row run the slower generic path and misstate its latency. (The pages before issue
    #26 were measured with hooks, that is without the fast path.)
    """

    def __init__(
        self,
        model: torch.nn.Module,
        layers: Callable[[torch.nn.Module], list[torch.nn.Module]] = dit_layers,
    ) -> None:
        self.calls = 0
        self.branches = 0
        for layer in layers(model):
            layer.forward = self._counted(layer.forward)
            self.branches += 1

    def _counted(self, forward: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return forward(*args, **kwargs)

        return counted


@dataclass
class Row:
    """One method at one setting; ``run(batch)`` samples one of :data:`BATCHES`.

    ``budget`` is the compute fraction a row was asked for, where it was asked for one (the
    targets table finds the library's forecast rows by it); ``calibration_seed`` is the seed of
    the samples the row was calibrated on (``None``: it calibrates nothing). ``held_out_mse``
    and ``held_out_computed`` are its batch mean squared error and branch count on the held-out
    batch, where its setting was chosen on it (:mod:`.selection`). The rest is filled in by the
    benchmark: branch-steps computed on the evaluation batch (``computed``) and on the timing
    batch (``timing_computed``), the samples and each one's squared error against the uncached
    sample, and the timed runs.
    """

    family: str
    setting: str
    run: Callable[[str], torch.Tensor]
    counter: BranchCounter
    budget: float | None = None
    calibration_seed: int | None = None
    held_out_mse: float | None = None
    held_out_computed: int | None = None
    computed: int = 0
    timing_computed: int | None = None
    images: torch.Tensor | None = None
    errors: np.ndarray | None = None
    quality_seconds: float = 0.0
    times: list[float] = field(default_factory=list)
    cpu_times: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class Loaded:
    """A model to benchmark and how it is sampled.

    ``draw(model, labels, steps, guidance, seed)`` samples ``labels`` with ``model`` standing
    for the denoiser (a copy that another library patched, or the model itself) and returns
    images in [-1, 1]; ``layers`` lists one layer per branch for :class:`BranchCounter`;
    ``kinds`` are the library's branch kinds; ``scheduler`` is the DDIM factory of a digits DiT
    (``None`` for the flow model, whose pipeline owns its scheduler); ``steps`` and ``guidance``
    are the model's sampling recipe.
    """

    model: torch.nn.Module
    draw: Callable[[torch.nn.Module, torch.Tensor, int, float, int], torch.Tensor]
    description: str
    title: str
    kinds: tuple[str, ...] = KINDS
    layers: Callable[[torch.nn.Module], list[torch.nn.Module]] = dit_layers
    scheduler: Callable[[int], DDIMScheduler] | None = None
    steps: int = 50
    guidance: float = 1.5
    classes: int = 10
    sampler: str = "DDIM"
    separate_guidance: bool = False
    #: diffusers TaylorSeer's ``cache_identifiers``: the modules the library caches
    taylor_identifiers: tuple[str, ...] = (r"transformer_blocks\.\d+\.(attn1|ff)",)
    #: what turns the model's ``timestep`` argument into diffusers' 0-1000 range (for PAB)
    timestep_scale: float = 1.0
    #: the diffusers pipeline ``draw`` samples a denoiser with (``None``: a loop of our own)
    pipeline: Callable[[torch.nn.Module], Any] | None = None


def _dit(
    model: torch.nn.Module, scheduler: Callable[[int], DDIMScheduler], description: str, title: str
) -> Loaded:
    """A digits DiT, sampled by ``smoothcache.reference.sample`` with ``scheduler``."""

    def draw(m: torch.nn.Module, labels: torch.Tensor, steps: int, guidance: float, seed: int):
        return sample(
            m,
            labels,
            num_steps=steps,
            guidance_scale=guidance,
            seed=seed,
            scheduler=scheduler(steps),
        )

    return Loaded(model, draw, description, title, scheduler=scheduler)


def load_model(name: str, device: torch.device) -> Loaded:
    """``reference``: the shipped digits DiT; ``second``: ``benchmarks/second_model``;
    ``flow``: the flow-matching FLUX.1-class model of ``benchmarks/flow_model``.

    The second model's module exposes ``load(device=...)`` and ``scheduler(num_steps=50)`` (a
    DDIM scheduler for ``sample(..., scheduler=...)``).
    """
    if name == "reference":
        return _dit(
            load_reference_model(device=device),
            make_scheduler,
            "`smoothcache.reference` (digits-dit)",
            "Reference model",
        )
    if name == "flow":
        return _flow(device)
    if name != "second":
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    if not SECOND_MODEL.exists():
        raise SystemExit(f"--model second needs {SECOND_MODEL}, which is not there (yet)")
    from benchmarks.second_model import model as module

    try:
        model = module.load(device=device)
    except FileNotFoundError as error:
        raise SystemExit(f"--model second: {error} (is the second model trained yet?)") from None
    return _dit(
        model,
        module.scheduler,
        "`benchmarks/second_model` (a second digits DiT, trained by its `train.py`)",
        "Second model",
    )


def _flow(device: torch.device) -> Loaded:
    """The flow-matching model, sampled through ``FluxPipeline`` (one pipeline per denoiser)."""
    from benchmarks.flow_model import model as module

    pipe = module.load(device=device)
    pipes = {id(pipe.transformer): pipe}

    def pipeline(m: torch.nn.Module) -> Any:
        if id(m) not in pipes:
            pipes[id(m)] = module.with_transformer(pipe, m)
        return pipes[id(m)]

    def draw(m: torch.nn.Module, labels: torch.Tensor, steps: int, guidance: float, seed: int):
        options = {"num_steps": steps, "guidance_scale": guidance}
        return module.sample(pipeline(m), labels, seed=seed, **options)

    return Loaded(
        pipe.transformer,
        draw,
        "`benchmarks/flow_model` (diffusers `FluxTransformer2DModel` in `FluxPipeline`, "
        "trained by its `train.py`)",
        "Flow-matching model",
        kinds=module.KINDS,
        layers=module.branch_layers,
        steps=module.STEPS,
        guidance=module.GUIDANCE,
        sampler="Euler",
        separate_guidance=True,
        taylor_identifiers=module.TAYLOR_IDENTIFIERS,
        timestep_scale=1000.0,
        pipeline=pipeline,
    )


class Bench:
    """The model, the sample batches and the row builders shared by every method.

    Batches (seeds from ``seeds``, :mod:`benchmarks.common.seeds`): ``samples`` evaluation
    samples (classes in turn), the first ``timing_samples`` of them for latency,
    ``calibration_samples`` of a calibration seed, and held-out samples to choose settings on.
    ``steps`` and ``guidance`` default to the model's own recipe.
    """

    def __init__(
        self,
        model: str,
        *,
        samples: int,
        timing_samples: int,
        calibration_samples: int,
        device: torch.device,
        steps: int | None = None,
        guidance: float | None = None,
        seeds: Seeds = DEVELOPMENT,
        held_out_samples: int = 200,
    ) -> None:
        self.device = device
        self.model_name = model
        self.loaded = load_model(model, device)
        self.steps = steps or self.loaded.steps
        self.guidance = self.loaded.guidance if guidance is None else guidance
        self.seeds = seeds
        self.model = self.loaded.model
        self.counter = BranchCounter(self.model, self.loaded.layers)
        self.classes = self.loaded.classes
        self.samples = samples
        self.timing_samples = timing_samples
        self.calibration_samples = calibration_samples
        self.labels = torch.arange(samples) % self.classes
        self.held_out_samples = held_out_samples
        #: where measurements are saved as they are made (``--checkpoint``; none by default)
        self.checkpoint = Checkpoint(None, "")

    @property
    def cells(self) -> int:
        """Branch-steps of one evaluation batch: branches x steps x model calls per step (two
        for the flow model's guidance, one doubled batch for the digits DiTs)."""
        passes = 2 if self.loaded.separate_guidance and self.guidance != 1.0 else 1
        return self.counter.branches * self.steps * passes

    def sample(
        self,
        model: torch.nn.Module,
        steps: int,
        calibration: bool = False,
        *,
        timing: bool = False,
        count: int | None = None,
        held_out: int = 0,
        calibration_seed: int | None = None,
        batch: str = "evaluation",
    ) -> torch.Tensor:
        """Samples of ``model`` at ``steps`` steps with the model's sampler and guidance.

        The evaluation batch; with ``timing`` its first ``timing_samples``, with ``count`` its
        first ``count``; with ``calibration`` the calibration batch (``count`` samples instead
        of ``calibration_samples``, of ``calibration_seed``, by default the split's first); with
        ``held_out`` that many samples of the split's held-out seed, to choose among settings on.
        ``batch`` names one of the batches a :class:`Row` runs: ``"evaluation"``, ``"timing"``
        or ``"held_out"`` (``held_out_samples`` of them).
        """
        if batch not in BATCHES:
            raise ValueError(f"batch must be one of {', '.join(BATCHES)}, found {batch!r}")
        timing = timing or batch == "timing"
        held_out = held_out or (self.held_out_samples if batch == "held_out" else 0)
        if calibration:
            size = count or self.calibration_samples
            seed = self.seeds.calibration[0] if calibration_seed is None else calibration_seed
        elif held_out:
            size, seed = held_out, self.seeds.held_out
        else:
            size = count or (self.timing_samples if timing else self.samples)
            seed = self.seeds.evaluation
        labels = torch.arange(size) % self.classes
        return self.loaded.draw(model, labels, steps, self.guidance, seed)

    def plain(self, steps: int) -> Row:
        """The uncached model at ``steps`` steps: "no cache" at the benchmark's, else "fewer"."""
        name = "no cache" if steps == self.steps else "fewer steps"

        def run(batch: str) -> torch.Tensor:
            return self.sample(self.model, steps, batch=batch)

        return Row(name, f"{self.loaded.sampler} {steps}", run, self.counter)

    def cached(
        self, family: str, setting: str, schedule: Schedule, budget: float | None = None
    ) -> Row:
        """A SmoothCache schedule on the model; ``budget``: the compute fraction it was made for."""

        def run(batch: str) -> torch.Tensor:
            with smoothcache.enabled(self.model, schedule):
                return self.sample(self.model, self.steps, batch=batch)

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
        if issubclass(base, CacheMixin):
            return self._copy_as(base)
        with_mixin = type(f"{base.__name__}WithCacheMixin", (CacheMixin, base), {})
        return self._copy_as(with_mixin)

    def diffusers(
        self, family: str, setting: str, make_config: Callable[[torch.nn.Module], Any]
    ) -> Row:
        """A row for a diffusers cache config; ``make_config(model)`` builds it for the copy."""
        from diffusers.hooks import HookRegistry

        copy = self.cache_model()
        counter = BranchCounter(copy, self.loaded.layers)
        copy.enable_cache(make_config(copy))
        registry = HookRegistry.check_if_exists_or_initialize(copy)

        def run(batch: str) -> torch.Tensor:
            try:
                with self.generation_context(copy):
                    return self.sample(copy, self.steps, batch=batch)
            finally:
                registry.reset_stateful_hooks()  # what pipelines do after every generation

        return Row(family, setting, run, counter)

    def generation_context(self, copy: torch.nn.Module) -> contextlib.AbstractContextManager:
        """The diffusers cache context one generation runs in: ``cond_uncond`` for a digits DiT
        (one call per step carries both halves of the guidance batch); none for the flow model,
        whose pipeline enters ``cond`` and ``uncond`` around its two calls itself."""
        if self.loaded.separate_guidance:
            return contextlib.nullcontext()
        return copy.cache_context("cond_uncond")

    def check_cache_model(self) -> None:
        """The CacheMixin copy must compute exactly what the plain model computes."""
        ours = self.sample(self.cache_model(), self.steps, count=4)
        if not torch.equal(ours, self.sample(self.model, self.steps, count=4)):
            raise SystemExit("the CacheMixin copy does not reproduce the plain model")
