"""Forecast positions under a shifted sigma schedule: step indices against sigmas (issue #26).

A forecast extrapolates a branch's output from its last computed outputs with Lagrange weights
of their *positions*. The library uses step indices, which are the sampler's time only when the
steps are evenly spaced in it. The flow-matching model (``benchmarks/flow_model``) is sampled
with ``FlowMatchEulerDiscreteScheduler`` at FLUX.1-dev's shift (``e^1.15``), whose sigmas are
not evenly spaced: the gap between steps grows from 0.012 at the start to 0.10 at the end. This
measures, on development seeds only, what each coordinate costs:

1. **Per branch and step** (one uncached run of the calibration batch, every branch's output of
   every call recorded): the relative L2 error of forecasting step ``s`` from ``order + 1``
   outputs ``gap`` steps apart, with weights from step indices and from sigmas, averaged over
   branches, steps and both guidance passes; and how often sigma is the better one.
2. **End to end**: schedules sampled on the evaluation batch with the step-index forecast and
   with the same schedule answered by sigma weights (a technique registered here: the
   extension point of ``smoothcache.engine.technique``): FORA-style uniform forecasts at every
   2nd to 4th step, orders 1 and 2, and the library's ``method="forecast"`` search at 30% and
   20% of the branch-steps (calibrated with step-index errors, lookahead 7). Batch PSNR against
   the uncached samples.

    python -m benchmarks.forecast_positions --threads 1
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
import torch

import smoothcache
from benchmarks.common.seeds import DEVELOPMENT
from benchmarks.common.stats import psnr_db
from benchmarks.flow_model.model import NUM_CLASSES, STEPS, load, sample
from smoothcache import Schedule
from smoothcache.engine.forecast import Forecast
from smoothcache.engine.technique import TECHNIQUES, register_technique

KINDS = ("attn", "ff", "ff_context", "single")
SIGMA = "forecast-sigma"


def float_lagrange(positions: list[float], at: float) -> tuple[float, ...]:
    """Lagrange basis weights at ``at`` for real-valued ``positions`` (float64)."""
    weights = []
    for i, xi in enumerate(positions):
        w = 1.0
        for j, xj in enumerate(positions):
            if j != i:
                w *= (at - xj) / (xi - xj)
        weights.append(w)
    return tuple(weights)


class SigmaForecast(Forecast):
    """The library's forecast with Lagrange weights of the steps' sigmas, not their indices."""

    name = SIGMA

    def __init__(self, sigmas: list[float]) -> None:
        self.sigmas = sigmas

    def constants(self, positions: tuple[int, ...], at: int) -> tuple[float, ...]:
        return float_lagrange([self.sigmas[p] for p in positions], self.sigmas[at])


def branch_modules(transformer: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """The scheduled branches of FLUX.1's transformer, by a readable name."""
    found = {}
    for i, block in enumerate(transformer.transformer_blocks):
        for kind in ("attn", "ff", "ff_context"):
            found[f"{kind}-{i}"] = getattr(block, kind)
    for i, block in enumerate(transformer.single_transformer_blocks):
        found[f"single-{i}"] = block.proj_out
    return found


def flat(output: Any) -> torch.Tensor:
    """A branch output (a tensor, or FLUX's ``(image, text)`` attention pair) as one vector per
    sample."""
    parts = output if isinstance(output, tuple) else (output,)
    return torch.cat([p.detach().flatten(1).double() for p in parts], dim=1)


def record(pipe: Any, labels: torch.Tensor, seed: int) -> tuple[dict[str, list], list[float]]:
    """Every branch's output of every call of one uncached run, and the sigma of every step."""
    outputs: dict[str, list[torch.Tensor]] = {}
    sigmas: list[float] = []
    handles = []
    for name, module in branch_modules(pipe.transformer).items():
        outputs[name] = []

        def keep(_module: torch.nn.Module, _args: tuple, out: Any, name: str = name) -> None:
            outputs[name].append(flat(out))

        handles.append(module.register_forward_hook(keep))

    def stamp(_module: torch.nn.Module, _args: tuple, kwargs: dict) -> None:
        sigmas.append(float(kwargs["timestep"][0]))

    handles.append(pipe.transformer.register_forward_pre_hook(stamp, with_kwargs=True))
    try:
        sample(pipe, labels, seed=seed)
    finally:
        for handle in handles:
            handle.remove()
    passes = len(sigmas) // STEPS
    return outputs, sigmas[::passes]


def offline_table(outputs: dict[str, list], sigmas: list[float]) -> list[str]:
    """Mean relative error of step-index and sigma forecasts by order and anchor gap."""
    passes = len(next(iter(outputs.values()))) // STEPS
    lines = [
        "| order | gap (steps) | cases | rel. error, step index | rel. error, sigma | sigma / step "
        "| sigma better in |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for order in (1, 2):
        for gap in (1, 2, 3, 4):
            by_step, by_sigma = [], []
            for calls in outputs.values():
                for p in range(passes):
                    series = calls[p::passes]
                    for s in range(order * gap + gap, STEPS):
                        anchors = [s - gap * (order + 1 - j) for j in range(order + 1)]
                        actual = series[s]
                        norm = actual.norm(dim=1).clamp_min(1e-12)
                        for coords, out in ((list(range(STEPS)), by_step), (sigmas, by_sigma)):
                            w = float_lagrange([coords[a] for a in anchors], coords[s])
                            pred = sum(wi * series[a] for wi, a in zip(w, anchors))
                            out.append(((pred - actual).norm(dim=1) / norm).mean().item())
            step_err, sigma_err = np.array(by_step), np.array(by_sigma)
            lines.append(
                f"| {order} | {gap} | {len(step_err):,} | {step_err.mean():.4f} | "
                f"{sigma_err.mean():.4f} | {sigma_err.mean() / step_err.mean():.3f} | "
                f"{(sigma_err < step_err).mean():.0%} |"
            )
    return lines


def sampled(pipe: Any, schedule: Schedule | None, labels: torch.Tensor, seed: int) -> torch.Tensor:
    """The evaluation batch under ``schedule`` (uncached when ``None``)."""
    if schedule is None:
        return sample(pipe, labels, seed=seed)
    with smoothcache.enabled(pipe, schedule):
        return sample(pipe, labels, seed=seed)


def as_sigma(schedule: Schedule) -> Schedule:
    """The same schedule, its skipped steps answered by the sigma-weighted forecast."""
    return Schedule(
        schedule.rows,
        metadata=schedule.metadata,
        orders=schedule.orders,
        techniques={key: SIGMA for key in schedule.rows},
    )


def main() -> None:
    """Record, tabulate, sample, print."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--calibration-samples", type=int, default=32)
    parser.add_argument("--samples", type=int, default=200, help="evaluation samples (200)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    pipe = load()
    cal_labels = torch.arange(args.calibration_samples) % NUM_CLASSES
    seed = DEVELOPMENT.calibration[0]
    outputs, sigmas = record(pipe, cal_labels, seed)
    gaps = np.diff(sigmas)
    print(
        f"flow model, FluxPipeline, {STEPS} steps, sigmas {sigmas[0]:.3f} to {sigmas[-1]:.3f}, "
        f"step gaps {-gaps[0]:.3f} (first) to {-gaps[-1]:.3f} (last); development seeds; "
        f"torch {torch.__version__}, CPU float32"
    )
    print(f"\nOffline: {args.calibration_samples} calibration samples (seed {seed}), both passes\n")
    print("\n".join(offline_table(outputs, sigmas)))

    if SIGMA not in TECHNIQUES:
        register_technique(SigmaForecast(sigmas))
    labels = torch.arange(args.samples) % NUM_CLASSES
    eval_seed = DEVELOPMENT.evaluation
    reference = sampled(pipe, None, labels, eval_seed)
    with smoothcache.calibrating(pipe, lookahead=7) as recorder:
        sample(pipe, cal_labels, seed=seed)
    curves = recorder.curves()
    schedules = {
        f"every {every}, order {order}": Schedule.uniform(STEPS, every, KINDS, order=order)
        for order in (1, 2)
        for every in (2, 3, 4)
    }
    for budget in (0.3, 0.2):
        schedules[f"forecast search, compute <= {budget:g}"] = curves.schedule(
            method="forecast", compute_fraction=budget
        )
    print(f"\nEnd to end: {args.samples} evaluation samples (seed {eval_seed}), batch PSNR (dB)\n")
    print("| schedule | compute | step index | sigma | sigma - step |")
    print("|---|---:|---:|---:|---:|")
    for name, schedule in schedules.items():
        scores = []
        for chosen in (schedule, as_sigma(schedule)):
            images = sampled(pipe, chosen, labels, eval_seed)
            scores.append(float(psnr_db(((images - reference).double() ** 2).mean().item())))
        print(
            f"| {name} | {schedule.compute_fraction:.0%} | {scores[0]:.2f} | {scores[1]:.2f} | "
            f"{scores[1] - scores[0]:+.2f} |"
        )
    print(f"\n{(time.perf_counter() - start) / 60:.1f} minutes")


if __name__ == "__main__":
    main()
