"""What a forecast costs, counted (not timed): aten ops per skipped branch step, and cache memory.

For orders 1, 2 and 3 this runs the same sampling loop twice on one diffusers DiT with random
weights: with smoothcache forecasting every skipped step at a FORA-like interval, and with
diffusers' TaylorSeer cache (``TaylorSeerCacheConfig(max_order=k)``) at the same interval.
A ``TorchDispatchMode`` counts every aten op issued while each method answers a skipped
branch (smoothcache's ``forecast.combine``, with the Lagrange weights and with weights of the
schedule's own as fitted forecasts carry; TaylorSeer's ``TaylorSeerState.predict``) and while
it updates its state at a computed step (nothing for smoothcache, which only keeps a
reference; TaylorSeer's divided differences). Memory: the session's peak cache bytes against
``(k + 1)`` branch outputs per forecasting branch.

    python -m benchmarks.forecast_cost            # prints the table
    python -m benchmarks.forecast_cost --markdown # the table for docs/forecast.md
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import platform
from collections.abc import Iterator
from typing import Any

import torch

import smoothcache
import smoothcache.engine.forecast as technique
from smoothcache import Schedule
from smoothcache.forecast import lagrange_weights, plan_reads
from smoothcache.testing.op_counts import OpCounter

STEPS = 20
INTERVAL = 4
KINDS = ("attn1", "ff")


@contextlib.contextmanager
def counting(owner: Any, name: str, tally: list[int]) -> Iterator[None]:
    """Replace ``owner.name`` by a wrapper that adds the ops of each call to ``tally``."""
    original = getattr(owner, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with OpCounter() as counter:
            result = original(*args, **kwargs)
        tally[0] += counter.ops
        tally[1] += 1
        return result

    setattr(owner, name, wrapper)
    try:
        yield
    finally:
        setattr(owner, name, original)


@contextlib.contextmanager
def counting_by_order(tally: dict[int, list[int]]) -> Iterator[None]:
    """Count the ops of smoothcache's forecasts, per order (the number of outputs read - 1)."""
    original = technique.combine

    def wrapper(values: Any, weights: Any) -> Any:
        with OpCounter() as counter:
            result = original(values, weights)
        entry = tally.setdefault(len(values) - 1, [0, 0])
        entry[0] += counter.ops
        entry[1] += 1
        return result

    technique.combine = wrapper
    try:
        yield
    finally:
        technique.combine = original


def build(dtype: torch.dtype) -> torch.nn.Module:
    """A small diffusers DiT (4 blocks, hidden 128) with random weights, gates re-randomised."""
    from diffusers import DiTTransformer2DModel
    from diffusers.models.cache_utils import CacheMixin

    class CachingDiT(CacheMixin, DiTTransformer2DModel):
        """DiTTransformer2DModel with diffusers' ``enable_cache``."""

    torch.manual_seed(0)
    model = CachingDiT(
        num_attention_heads=4,
        attention_head_dim=32,
        in_channels=4,
        out_channels=4,
        num_layers=4,
        sample_size=8,
        patch_size=2,
        num_embeds_ada_norm=10,
    )
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("weight") and param.abs().max() == 0:
                param.normal_(0, 0.02)
    return model.to(dtype).eval()


@torch.no_grad()
def run(model: torch.nn.Module, dtype: torch.dtype) -> torch.Tensor:
    """A simple loop of ``STEPS`` calls, guidance as one doubled batch of 4."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 4, 8, 8, generator=gen).to(dtype)
    labels = torch.tensor([1, 2, 10, 10])
    for t in torch.linspace(999, 0, STEPS).long():
        x = x - 0.05 * model(x, timestep=t.expand(4), class_labels=labels).sample
    return x


def with_weights(schedule: Schedule) -> Schedule:
    """``schedule`` with weights of its own at every forecast (Lagrange's times 0.97), as a
    fitted schedule carries them."""
    weights = {}
    for key, orders in schedule.orders.items():
        reads = plan_reads(schedule.rows[key], orders)
        weights[key] = tuple(
            tuple(0.97 * w for w in lagrange_weights(read, step)) if len(read) > 1 else None
            for step, (_, read, _) in enumerate(reads)
        )
    return Schedule(schedule.rows, schedule.metadata, schedule.orders, weights=weights)


def one_output_bytes(model: torch.nn.Module, dtype: torch.dtype) -> int:
    """Bytes of one branch output: batch 4 x 16 tokens x hidden size."""
    hidden = model.config.num_attention_heads * model.config.attention_head_dim
    return 4 * 16 * hidden * torch.finfo(dtype).bits // 8


def measure(order: int, dtype: torch.dtype) -> dict[str, Any]:
    """Ops per skipped-step answer and per computed-step update, and memory, for one order."""
    model = build(dtype)
    schedule = Schedule.uniform(STEPS, INTERVAL, KINDS, order=order)
    ours: dict[int, list[int]] = {}  # order -> [ops, calls]
    with smoothcache.enabled(model, schedule) as session:
        run(model, dtype)  # the first generation also makes the weight tensors, once
        with counting_by_order(ours), OpCounter() as whole:
            run(model, dtype)
        stats = session.stats
    fitted: dict[int, list[int]] = {}
    with smoothcache.enabled(model, with_weights(schedule)):
        run(model, dtype)
        with counting_by_order(fitted):
            run(model, dtype)
    reuse = Schedule.uniform(STEPS, INTERVAL, KINDS)  # the same computed steps, order 0
    with smoothcache.enabled(model, reuse):
        run(model, dtype)  # as above: count the second generation (step 0 checks fast paths)
        with OpCounter() as reusing:
            run(model, dtype)
    # every op the forecasting run issues beyond plain reuse, outside the answers themselves:
    # nothing at computed steps (outputs are kept by reference) and nothing per evaluation
    ours_update = whole.ops - reusing.ops - sum(ops for ops, _ in ours.values())
    branches = len(stats.computed)
    from diffusers.hooks import TaylorSeerCacheConfig
    from diffusers.hooks.taylorseer_cache import TaylorSeerState

    theirs, theirs_update = [0, 0], [0, 0]
    config = TaylorSeerCacheConfig(
        cache_interval=INTERVAL,
        max_order=order,
        taylor_factors_dtype=dtype,
        cache_identifiers=[r"transformer_blocks\.\d+\.(attn1|ff)"],
    )
    model.enable_cache(config)
    with (
        counting(TaylorSeerState, "predict", theirs),
        counting(TaylorSeerState, "update", theirs_update),
        model.cache_context("cond_uncond"),
    ):
        run(model, dtype)
    return {
        "order": order,
        "ours_ops": ours[order][0] / ours[order][1],  # the forecasts of the full order
        "fitted_ops": fitted[order][0] / fitted[order][1],
        "ours_update": ours_update,
        "theirs_ops": theirs[0] / max(theirs[1], 1),
        "theirs_update": theirs_update[0] / max(theirs_update[1], 1),
        "forecast_steps": sum(stats.forecast.values()) // 2,  # per generation
        "peak_bytes": stats.peak_cache_bytes,
        "bound_bytes": (order + 1) * one_output_bytes(model, dtype) * branches,
    }


def table(rows: list[dict[str, Any]], dtype: torch.dtype) -> list[str]:
    """The results as a Markdown table."""
    lines = [
        f"Counted on {platform.machine()} CPU, {dtype}, torch {torch.__version__}; a diffusers "
        f"DiT with 4 blocks ({2 * 4} branches), guidance as one batch of 4, {STEPS} steps, "
        f"computing every {INTERVAL}th step.",
        "",
        "| order | aten ops per forecast (smoothcache; fitted weights) "
        "| aten ops per prediction (TaylorSeer) "
        "| extra aten ops at computed steps (smoothcache, whole run / TaylorSeer, per update) "
        "| forecast branch-steps "
        "| peak cache bytes | bound: (k+1) outputs x branches |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['order']} | {row['ours_ops']:.0f}; {row['fitted_ops']:.0f} "
            f"| {row['theirs_ops']:.0f} | "
            f"{row['ours_update']} / {row['theirs_update']:.0f} | {row['forecast_steps']} | "
            f"{row['peak_bytes']:,} | {row['bound_bytes']:,} |"
        )
    return lines


def main() -> None:
    """Count every order and print the table; fail if a bound does not hold."""
    logging.getLogger("diffusers").setLevel(logging.ERROR)  # its dtype-cast advice
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--markdown", action="store_true", help="print only the table")
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    torch.set_num_threads(1)
    rows = [measure(order, dtype) for order in (1, 2, 3)]
    print("\n".join(table(rows, dtype)))
    broken: list[str] = []
    for row in rows:
        if row["fitted_ops"] != row["ours_ops"]:
            broken.append(f"order {row['order']}: fitted weights cost other ops than Lagrange's")
        if row["ours_ops"] > row["theirs_ops"]:
            broken.append(f"order {row['order']}: more ops than TaylorSeer")
        if row["peak_bytes"] > row["bound_bytes"]:
            broken.append(f"order {row['order']}: peak cache above (k+1) outputs per branch")
        if row["ours_update"]:
            broken.append(f"order {row['order']}: ops at computed steps")
    if broken:
        raise SystemExit("; ".join(broken))
    if not args.markdown:
        exact = all(row["ours_ops"] == row["order"] + 1 for row in rows)
        print("ops per forecast = order + 1:", exact)


if __name__ == "__main__":
    main()
