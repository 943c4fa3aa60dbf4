"""Quality against speed of caching methods on the shipped reference model (SmoothCache Table 1).

One process, one model (``smoothcache.reference``, the digits DiT), one sampler (DDIM, 50 steps,
guidance 1.5 as one doubled batch) and the same evaluation seeds for every row:

- no cache at 50 steps (the reference every error is measured against), and DDIM at ``k`` steps
  for ``k = round(50 x compute)`` of each caching row ("just use fewer steps");
- FORA, every 2nd, 3rd and 4th step (``Schedule.uniform``);
- SmoothCache's rule at several alphas and compute budgets, per kind and per block, and this
  library's schedule search (``method="sensitivity"``) at 50%, 35% and 25% of the branch-steps,
  calibrated here on a separate set of samples;
- the caching methods built into diffusers, applied to the same weights: first-block cache,
  TaylorSeer, MagCache (its ratios calibrated here with its own calibration mode, on the same
  calibration samples) and pyramid attention broadcast.

Columns: branch-steps computed (counted the same way for every method, as calls of the attention
and feed-forward branches' first layers), latency (median of ``--repeats`` runs of the whole
evaluation batch, rows interleaved) and speedup, PSNR and relative L2 against the uncached
samples, the accuracy of a digits classifier trained here on the real data, and the Fréchet
distance between its hidden-layer features of the samples and of the real digits. Writes
``docs/quality_speed.md`` and ``docs/quality_speed.png``::

    python benchmarks/quality_speed.py            # the table in the docs
    python benchmarks/quality_speed.py --quick    # a small smoke run, written to /tmp
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import io
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from schedule_search import (  # benchmarks/ is on sys.path as the script's folder
    add_curves_option,
    calibrate,
    shown_arguments,
)

import smoothcache
from smoothcache import Schedule
from smoothcache.reference import (
    digits_classifier,
    load_reference_model,
    psnr,
    reference_config,
    relative_l2,
    sample,
)

KINDS = ("attn1", "ff")
EVAL_SEED, CALIBRATION_SEED = 0, 1000
FAMILIES = {  # family: (marker, colour) in the plot, in table order
    "fewer steps": ("o", "0.45"),
    "FORA": ("s", "tab:orange"),
    "SmoothCache (per kind)": ("*", "tab:blue"),
    "SmoothCache (per block)": ("P", "tab:cyan"),
    "schedule search": ("h", "tab:olive"),
    "first-block cache": ("^", "tab:green"),
    "TaylorSeer": ("D", "tab:purple"),
    "MagCache": ("v", "tab:red"),
    "pyramid attention broadcast": ("X", "tab:brown"),
}

CLOCKS = {
    "wall": "Measured as wall-clock time; other work on the machine adds noise.",
    "cpu": "Measured as the process's CPU time (`time.process_time`) of a single-threaded\n  "
    "run: on an idle core that is its latency. Other processes on a shared machine inflate it\n  "
    "much less than wall-clock time, but still (shared caches and cores): a row measured at\n  "
    "busy moments can read 10-20% slow.",
}

NOTES = """
![PSNR against speedup and against compute](quality_speed.png)

## How the diffusers methods were applied

`DiTTransformer2DModel` does not inherit diffusers' `CacheMixin`, so each method runs on a
subclass that adds it (`class DiTWithCacheMixin(CacheMixin, DiTTransformer2DModel)`) holding the
same weights (checked bit-identical to the plain model without a cache) and is switched on with
`model.enable_cache(config)`. `BasicTransformerBlock` is in diffusers' transformer-block
registry, so the block-level hooks work unchanged. Every generation runs inside
`model.cache_context("cond_uncond")` (one call per step carries both halves of the guidance
batch) and the hooks' state is reset after it, as diffusers' pipelines do.

- **first-block cache** (`FirstBlockCacheConfig(threshold)`): block 0 always runs; the other
  blocks are skipped, as a whole, when block 0's residual changed by less than the threshold.
- **TaylorSeer** (`TaylorSeerCacheConfig`): its default module patterns
  (`^transformer_blocks.*attn`, full match) match nothing in a DiT, whose branches are `attn1`
  and `ff`, so `cache_identifiers=[r"transformer_blocks\\.\\d+\\.(attn1|ff)"]`, and
  `taylor_factors_dtype=torch.float32` (the default bfloat16 adds rounding of its own). Skipped
  branches are *predicted* by a first-order Taylor extrapolation from the last two computed
  outputs, not reused.
- **MagCache** (`MagCacheConfig`): its magnitude ratios are checkpoint-specific; they were
  measured with its own `calibrate=True` mode on the calibration samples (it prints them; the
  benchmark reads that output). Otherwise its defaults (`max_skip_steps=3`,
  `retention_ratio=0.2`). Skipping is per model call: all blocks or none.
- **pyramid attention broadcast** (`PyramidAttentionBroadcastConfig`): needs a
  `current_timestep_callback`; a forward pre-hook on the model records each call's timestep. It
  broadcasts self-attention (`attn1`) only, inside its timestep window (a DiT has no cross or
  temporal attention); the feed-forward branches always compute.
- Not benchmarked: FasterCache, SeaCache and TextKVCache, which the issue did not ask for.
"""


class BranchCounter:
    """Counts branch computations: calls of every block's ``attn1.to_q`` and ``ff.net[0]``.

    Those layers run only when their branch computes, however a method skips it (a reused,
    predicted or block-skipped branch never reaches them), so one count serves every method.
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
    """One method at one setting; ``run()`` samples the whole evaluation batch."""

    family: str
    setting: str
    run: Callable[[], torch.Tensor]
    counter: BranchCounter
    times: list[float] = field(default_factory=list)
    cpu_times: list[float] = field(default_factory=list)
    images: torch.Tensor | None = None
    computed: int = 0


class Bench:
    """The model, the evaluation batch and the row builders shared by every method."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.device = torch.device(args.device)
        self.steps = args.steps
        self.guidance = args.guidance
        self.model = load_reference_model(device=self.device)
        self.counter = BranchCounter(self.model)
        self.labels = torch.arange(args.samples) % 10
        self.calibration_labels = torch.arange(args.calibration_samples) % 10

    def sample(self, model: torch.nn.Module, steps: int, calibration: bool = False) -> torch.Tensor:
        labels, seed = (
            (self.calibration_labels, CALIBRATION_SEED) if calibration else (self.labels, EVAL_SEED)
        )
        return sample(model, labels, num_steps=steps, guidance_scale=self.guidance, seed=seed)

    def plain(self, steps: int) -> Row:
        name = "no cache" if steps == self.steps else "fewer steps"
        return Row(name, f"DDIM {steps}", lambda: self.sample(self.model, steps), self.counter)

    def cached(self, family: str, setting: str, schedule: Schedule) -> Row:
        def run() -> torch.Tensor:
            with smoothcache.enabled(self.model, schedule):
                return self.sample(self.model, self.steps)

        return Row(family, setting, run, self.counter)

    def cache_model(self) -> torch.nn.Module:
        """A copy of the model whose class adds diffusers' ``CacheMixin`` (``enable_cache``)."""
        from diffusers import DiTTransformer2DModel
        from diffusers.models.cache_utils import CacheMixin

        class DiTWithCacheMixin(CacheMixin, DiTTransformer2DModel):
            """DiTTransformer2DModel with the caching interface of diffusers' newer models."""

        copy = DiTWithCacheMixin(**reference_config()["model"])
        copy.load_state_dict(self.model.state_dict())
        for module in copy.modules():
            if hasattr(module, "dropout_prob") and hasattr(module, "embedding_table"):
                module.dropout_prob = 0.0
        return copy.to(self.device).eval().requires_grad_(False)

    def diffusers(
        self, family: str, setting: str, make_config: Callable[[torch.nn.Module], Any]
    ) -> Row:
        """A row for a diffusers cache config; ``make_config(model)`` builds it for the copy."""
        from diffusers.hooks import HookRegistry

        copy = self.cache_model()
        counter = BranchCounter(copy)
        copy.enable_cache(make_config(copy))
        registry = HookRegistry.check_if_exists_or_initialize(copy)

        def run() -> torch.Tensor:
            try:
                with copy.cache_context("cond_uncond"):
                    return self.sample(copy, self.steps)
            finally:
                registry.reset_stateful_hooks()  # what pipelines do after every generation

        return Row(family, setting, run, counter)

    def check_cache_model(self) -> None:
        """The CacheMixin copy must compute exactly what the plain model computes."""
        copy = self.cache_model()
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(4, 1, 8, 8, generator=gen).to(self.device)
        t = torch.full((4,), 500, device=self.device)
        y = torch.arange(4, device=self.device)
        with torch.no_grad():
            ours = copy(x, timestep=t, class_labels=y).sample
            if not torch.equal(ours, self.model(x, timestep=t, class_labels=y).sample):
                raise SystemExit("the CacheMixin copy does not reproduce the plain model")


def smoothcache_rows(
    bench: Bench, log: Callable[[str], None], curves_path: Path | None
) -> list[Row]:
    """FORA every 2nd to 4th step, and SmoothCache schedules from one calibration.

    The paper's rule at several alphas and budgets, and the schedule search
    (``method="sensitivity"``) at 50%, 35% and 25% of the branch-steps, from one calibration
    (``schedule_search.calibrate``; ``curves_path`` may be the file that
    ``benchmarks/schedule_search.py --curves`` wrote from the same calibration samples).
    """
    rows = [
        bench.cached("FORA", f"every {every}", Schedule.uniform(bench.steps, every, KINDS))
        for every in (2, 3, 4)
    ]
    curves = calibrate(
        bench.model,
        lambda: bench.sample(bench.model, bench.steps, calibration=True),
        curves_path,
        False,
        log,
    )
    for alpha in (0.05, 0.08, 0.2):
        schedule = curves.schedule(alpha=alpha)
        rows.append(bench.cached("SmoothCache (per kind)", f"alpha={alpha:g}", schedule))
    for per_block in (False, True):
        family = f"SmoothCache (per {'block' if per_block else 'kind'})"
        for budget in (0.5, 0.35):
            schedule = curves.schedule(compute_fraction=budget, per_block=per_block)
            setting = f"compute <= {budget:g} (alpha={schedule.metadata['alpha']:.3f})"
            rows.append(bench.cached(family, setting, schedule))
    for budget in (0.5, 0.35, 0.25):
        schedule = curves.schedule(compute_fraction=budget, method="sensitivity")
        setting = f"sensitivity, compute <= {budget:g}"
        rows.append(bench.cached("schedule search", setting, schedule))
    return rows


def diffusers_rows(bench: Bench, log: Callable[[str], None]) -> list[Row]:
    """First-block cache, TaylorSeer, MagCache and PAB, each at two or three settings."""
    from diffusers.hooks import (
        FirstBlockCacheConfig,
        MagCacheConfig,
        PyramidAttentionBroadcastConfig,
        TaylorSeerCacheConfig,
    )

    bench.check_cache_model()
    rows = []
    for threshold in (0.05, 0.1, 0.2):
        config = FirstBlockCacheConfig(threshold=threshold)
        rows.append(
            bench.diffusers("first-block cache", f"threshold {threshold:g}", lambda _m, c=config: c)
        )
    for interval in (2, 4):
        config = TaylorSeerCacheConfig(
            cache_interval=interval,
            max_order=1,
            taylor_factors_dtype=torch.float32,
            cache_identifiers=[r"transformer_blocks\.\d+\.(attn1|ff)"],
        )
        setting = f"interval {interval}, order 1"
        rows.append(bench.diffusers("TaylorSeer", setting, lambda _m, c=config: c))

    log("calibrating MagCache with its own calibrate=True mode on the calibration samples")
    probe = bench.cache_model()
    probe.enable_cache(MagCacheConfig(calibrate=True, num_inference_steps=bench.steps))
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), probe.cache_context("cond_uncond"):
        bench.sample(probe, bench.steps, calibration=True)
    ratios = ast.literal_eval(printed.getvalue().strip().splitlines()[-1])
    for threshold in (0.02, 0.12):
        config = MagCacheConfig(
            threshold=threshold, num_inference_steps=bench.steps, mag_ratios=ratios
        )
        rows.append(bench.diffusers("MagCache", f"threshold {threshold:g}", lambda _m, c=config: c))

    def pab(skip: int, window: tuple[int, int]) -> Callable[[torch.nn.Module], Any]:
        def make(copy: torch.nn.Module) -> Any:
            now = [0]

            def record(_module: torch.nn.Module, _args: tuple, kwargs: dict) -> None:
                now[0] = int(kwargs["timestep"][0])

            copy.register_forward_pre_hook(record, with_kwargs=True)
            return PyramidAttentionBroadcastConfig(
                spatial_attention_block_skip_range=skip,
                spatial_attention_timestep_skip_range=window,
                current_timestep_callback=lambda: now[0],
            )

        return make

    for skip, window in ((2, (100, 800)), (3, (0, 1000))):
        setting = f"every {skip}, {window[0]} < t < {window[1]}"
        rows.append(bench.diffusers("pyramid attention broadcast", setting, pab(skip, window)))
    return rows


def measure(row: Row, device: torch.device, first: bool) -> None:
    """Time one run of ``row``; the first run also keeps the samples and the branch count."""
    row.counter.calls = 0
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start, cpu_start = time.perf_counter(), time.process_time()
    images = row.run()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    row.times.append(time.perf_counter() - start)
    row.cpu_times.append(time.process_time() - cpu_start)
    if first:
        row.images = images.detach().cpu()
        row.computed = row.counter.calls
    elif row.counter.calls != row.computed:
        raise SystemExit(f"{row.family}, {row.setting}: the branch count changed between runs")


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (rows are samples)."""
    from scipy import linalg

    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    with warnings.catch_warnings():  # dead ReLU units make the covariances singular
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        root = linalg.sqrtm(cov_a @ cov_b)
    if not np.isfinite(root).all():  # near-singular product: regularise, as pytorch-fid does
        eps = np.eye(len(cov_a)) * 1e-6
        root = linalg.sqrtm((cov_a + eps) @ (cov_b + eps))
    trace = np.trace(cov_a) + np.trace(cov_b) - 2.0 * np.trace(root.real)
    return float(((mu_a - mu_b) ** 2).sum() + trace)


def score(rows: list[Row], labels: torch.Tensor, cells: int, clock: str) -> list[dict[str, Any]]:
    """The table's numbers: compute share, latency, speedup and quality of every row.

    ``clock`` picks the latency: ``wall`` time, or the process's ``cpu`` time.
    """

    def latency_of(row: Row) -> float:
        return statistics.median(row.cpu_times if clock == "cpu" else row.times)

    classifier = digits_classifier()
    real = classifier.features(classifier.real_images)
    reference, base = rows[0].images, latency_of(rows[0])
    assert reference is not None
    table = []
    for row in rows:
        assert row.images is not None
        latency = latency_of(row)
        is_reference = row is rows[0]
        table.append(
            {
                "family": row.family,
                "setting": row.setting,
                "computed": row.computed / cells,
                "latency": latency,
                "speedup": base / latency,
                "wall_speedup": statistics.median(rows[0].times) / statistics.median(row.times),
                "psnr": None if is_reference else psnr(row.images, reference),
                "rel_l2": 0.0 if is_reference else relative_l2(row.images, reference),
                "accuracy": classifier.accuracy(row.images, labels),
                "fd": frechet_distance(classifier.features(row.images), real),
            }
        )
    return table


def device_line(device: torch.device) -> str:
    """The processor or GPU in words, with the thread count on a CPU."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    threads = torch.get_num_threads()
    return f"{name}, {threads} thread{'s' if threads > 1 else ''}"


def markdown_table(table: list[dict[str, Any]], clock: str) -> list[str]:
    """The rows as a Markdown table; with CPU-time latency, the wall-clock speedup beside it."""
    wall = clock == "cpu"
    lines = [
        "| method | setting | branch-steps computed | latency (s) | speedup | "
        + ("wall-clock speedup | " if wall else "")
        + "PSNR (dB) | rel L2 | accuracy | FD |",
        "|---|---|---:|---:|---:|" + ("---:|" if wall else "") + "---:|---:|---:|---:|",
    ]
    for r in table:
        quality = "(reference)" if r["psnr"] is None else f"{r['psnr']:.1f}"
        extra = f"{r['wall_speedup']:.2f}x | " if wall else ""
        lines.append(
            f"| {r['family']} | {r['setting']} | {r['computed']:.0%} | {r['latency']:.2f} | "
            f"{r['speedup']:.2f}x | {extra}{quality} | {r['rel_l2']:.4f} | {r['accuracy']:.1%} | "
            f"{r['fd']:.2f} |"
        )
    return lines


def report(
    args: argparse.Namespace,
    bench: Bench,
    table: list[dict[str, Any]],
    minutes: float,
    loads: tuple[float, float],
    path: Path,
) -> list[str]:
    """Write the Markdown page; return the table's lines."""
    import diffusers

    classifier = digits_classifier()
    real = classifier.real_images
    real_fd = frechet_distance(
        classifier.features(real[: len(real) // 2]), classifier.features(real[len(real) // 2 :])
    )
    params = sum(p.numel() for p in bench.model.parameters())
    command = " ".join(["python benchmarks/quality_speed.py", *shown_arguments(sys.argv[1:])])
    cells = bench.counter.branches * bench.steps
    header = f"""# Quality against speed on the reference model

The shape of the SmoothCache paper's Table 1, reproduced on the model this project ships.
Regenerate the table and the plot (about {minutes:.0f} minutes here) with:

```bash
{command}
```

- **Model**: `smoothcache.reference` (digits-dit, {params:,} parameters, 6 blocks with an
  `attn1` and an `ff` branch each), float32.
- **Sampler**: DDIM {bench.steps} steps (`trailing`), guidance {bench.guidance:g} as one doubled
  batch. The same {args.samples} evaluation samples (classes 0-9 in turn, seed {EVAL_SEED}) for
  every row; SmoothCache (the error curves, and the sensitivity for the schedule search) and
  MagCache calibrated on {args.calibration_samples} other samples (seed {CALIBRATION_SEED}).
- **Device**: {device_line(bench.device)}; torch {torch.__version__}, diffusers
  {diffusers.__version__}; all {args.samples} samples ({2 * args.samples} rows with guidance)
  in every model call.
- **Latency**: median of {args.repeats} runs of the whole batch, every row once per round (the
  order reversed every other round), all in one process; speedup against the uncached median.
  {CLOCKS[args.clock]} Load average at the start and the end: {loads[0]:.1f} and
  {loads[1]:.1f}.
- **Branch-steps computed**: attention and feed-forward branch calls, counted the same way for
  every method, out of {cells} (12 branches x {bench.steps} steps).
- **PSNR and rel L2**: against the uncached samples of the same seeds, pixels in [-1, 1].
- **Accuracy**: a scikit-learn MLP trained here on 75% of the real digits (test accuracy on the
  other 25%: {classifier.test_accuracy:.1%}). **FD**: Fréchet distance between its 64
  hidden-layer features of the samples and of all 1,797 real digits (the two halves of the real
  digits are {real_fd:.2f} apart).

"""
    lines = markdown_table(table, args.clock)
    notes = NOTES.replace("quality_speed.png", path.with_suffix(".png").name)
    path.write_text(header + "\n".join(lines) + "\n" + notes)
    return lines


def plot(table: list[dict[str, Any]], path: Path, clock: str, steps: int) -> None:
    """PSNR against measured speedup (left) and against branch-steps computed (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4), sharey=True)
    for family, (marker, colour) in FAMILIES.items():
        # The reference row has no PSNR; a schedule that skips nothing has an infinite one.
        rows = [
            r
            for r in table
            if r["family"] == family and r["psnr"] is not None and np.isfinite(r["psnr"])
        ]
        for ax, key in zip(axes, ("speedup", "computed")):
            if rows:
                rows = sorted(rows, key=lambda r: r[key])
                xs, ys = [r[key] for r in rows], [r["psnr"] for r in rows]
                line = "-" if family == "fewer steps" else "none"
                ax.plot(xs, ys, ls=line, marker=marker, color=colour, label=family, ms=8, lw=1)
    axes[0].set_xlabel(f"measured speedup, {'CPU time' if clock == 'cpu' else 'wall clock'} (x)")
    axes[1].set_xlabel("branch-steps computed (fraction)")
    axes[1].invert_xaxis()
    axes[0].set_ylabel("PSNR against the uncached samples (dB)")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8, loc="lower left")
    fig.suptitle(
        f"Reference model, DDIM {steps} steps: fidelity against speed (up and right is better)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=200, help="evaluation samples (200)")
    parser.add_argument("--calibration-samples", type=int, default=10, help="(default 10)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per row (3)")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--guidance", type=float, default=1.5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument(
        "--clock",
        choices=tuple(CLOCKS),
        default="wall",
        help="latency as wall-clock time, or as process CPU time (with --threads 1 on a busy "
        "machine)",
    )
    parser.add_argument("--out-dir", type=Path, help="default docs/, or /tmp with --quick")
    parser.add_argument("--name", default="quality_speed", help="file name of the .md and .png")
    add_curves_option(parser)
    parser.add_argument(
        "--quick", action="store_true", help="40 samples, 5 calibration samples, 1 run per row"
    )
    args = parser.parse_args()
    if args.quick:
        args.samples, args.calibration_samples, args.repeats = 40, 5, 1
    out_dir = args.out_dir or (Path("/tmp") if args.quick else Path("docs"))
    if args.threads:
        torch.set_num_threads(args.threads)
    started, load_start = time.perf_counter(), os.getloadavg()[0]

    def log(text: str) -> None:
        print(f"[{time.perf_counter() - started:6.0f} s] {text}", flush=True)

    bench = Bench(args)
    digits_classifier()
    rows = [bench.plain(bench.steps)]
    rows += smoothcache_rows(bench, log, args.curves)
    rows += diffusers_rows(bench, log)

    bench.sample(bench.model, 5)  # warm-up
    log(f"round 1 of {args.repeats}: {args.samples} samples per row")
    for row in rows:
        measure(row, bench.device, first=True)
        log(f"  {row.family}, {row.setting}: {row.times[-1]:.1f} s, cpu {row.cpu_times[-1]:.1f} s")
    cells = bench.counter.branches * bench.steps
    fewer = {round(bench.steps * row.computed / cells) for row in rows[1:]}
    fewer_rows = [bench.plain(k) for k in sorted(fewer, reverse=True) if 1 < k < bench.steps]
    for row in fewer_rows:
        measure(row, bench.device, first=True)
        log(f"  {row.family}, {row.setting}: {row.times[-1]:.1f} s, cpu {row.cpu_times[-1]:.1f} s")
    rows[1:1] = fewer_rows
    for repeat in range(1, args.repeats):
        log(f"round {repeat + 1} of {args.repeats}")
        for row in rows[::-1] if repeat % 2 else rows:  # alternate the order against drift
            measure(row, bench.device, first=False)

    table = score(rows, bench.labels, cells, args.clock)
    minutes = (time.perf_counter() - started) / 60
    out_dir.mkdir(parents=True, exist_ok=True)
    md_path, png_path = out_dir / f"{args.name}.md", out_dir / f"{args.name}.png"
    loads = (load_start, os.getloadavg()[0])
    lines = report(args, bench, table, minutes, loads, md_path)
    plot(table, png_path, args.clock, bench.steps)
    print("\n".join(lines))
    log(f"wrote {md_path} and {png_path} after {minutes:.1f} minutes")


if __name__ == "__main__":
    main()
