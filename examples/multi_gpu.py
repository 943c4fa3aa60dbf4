"""Generate on several processes or GPUs with one smoothcache schedule, adding no communication.

Launch it with torchrun, one process per GPU (or per CPU worker):

    torchrun --nproc-per-node 2 examples/multi_gpu.py --check
    torchrun --nproc-per-node 2 examples/multi_gpu.py --mode context --check

``--mode data`` (default): data parallel. Every rank loads the shipped reference model (no
download) and samples its share of the labels under one ``with smoothcache.enabled(...)``;
rank 0 gathers the images and writes a PNG.

``--mode context``: context (sequence) parallel. diffusers' own Ulysses attention
(``enable_parallelism`` with ``ContextParallelConfig``) splits every sample's tokens across the
ranks; smoothcache wraps the per-rank branch modules after the split, so each rank caches its
own shard. A small random Wan transformer built from a config stands in for a real one (the
same classes and code paths; a real checkpoint loads with ``from_pretrained`` instead).

Every rank applies the same static schedule, so the ranks skip the same branches at the same
steps without telling each other: smoothcache makes no ``torch.distributed`` call. The
schedule comes from a file (``--schedule``, e.g. written once by ``smoothcache schedule ...
-o schedule.json``; do not calibrate on every rank, whose floating-point results may differ on
GPUs) or is FORA's fixed interval (``--every``).

The backend is NCCL when CUDA is available (one GPU per rank, ``LOCAL_RANK``), else gloo on the
CPU. ``--check`` makes rank 0 repeat the generation in one process and compare: bit-identical
for data parallel (each rank's share is the same batch as in one process), and for context
parallel the largest difference is printed and held to ``--tolerance``.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from unittest import mock

import torch
import torch.distributed as dist
from torch import nn

import smoothcache

#: the branch kinds of each mode's model (diffusers DiT, Wan)
KINDS = {"data": ("attn1", "ff"), "context": ("attn1", "attn2", "ffn")}


def setup() -> tuple[int, int, torch.device]:
    """Join the process group torchrun describes; return rank, world size and device."""
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend)
    rank, world = dist.get_rank(), dist.get_world_size()
    if backend == "nccl":
        local = int(os.environ.get("LOCAL_RANK", rank))
        torch.cuda.set_device(local)
        return rank, world, torch.device("cuda", local)
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    return rank, world, torch.device("cpu")


def make_schedule(mode: str, path: str | None, steps: int, every: int) -> smoothcache.Schedule:
    """The schedule every rank applies: a file (or shipped name), else compute every ``every``."""
    if path is not None:
        return smoothcache.Schedule.load(path)
    return smoothcache.Schedule.uniform(steps, every, KINDS[mode])


def check_same_schedule(schedule: smoothcache.Schedule, world: int) -> None:
    """Refuse to start unless every rank applies the same schedule.

    smoothcache never communicates, so it cannot see a rank that loaded another file: under
    context parallelism that rank would skip a different attention call and leave the others
    waiting in its all-to-all. One small collective of the example's own, before generating,
    turns that hang into an error.
    """
    prints: list[str | None] = [None] * world
    dist.all_gather_object(prints, schedule.fingerprint())
    if len(set(prints)) != 1:
        raise RuntimeError(
            f"the ranks apply different schedules (fingerprints {prints}): give every rank the "
            "same --schedule file"
        )


def describe(rank: int, stats: smoothcache.CacheStats) -> str:
    """One line per rank: what its session skipped and how much cache it held."""
    return (
        f"rank {rank}: {stats.total_reused} of {stats.total_computed + stats.total_reused} "
        f"branch calls answered from the cache, peak cache {stats.peak_cache_bytes:,} bytes"
    )


# -- data parallel ----------------------------------------------------------------------------


def shares(count: int, world: int) -> list[torch.Tensor]:
    """The sample indices of each rank: contiguous, sizes differing by at most one."""
    return list(torch.tensor_split(torch.arange(count), world))


def sample_share(
    model: nn.Module,
    schedule: smoothcache.Schedule,
    labels: torch.Tensor,
    noise: torch.Tensor,
    steps: int,
) -> tuple[torch.Tensor, smoothcache.CacheStats]:
    """The reference model's samples of ``labels`` from ``noise``, cached with ``schedule``."""
    from smoothcache.reference import sample

    with smoothcache.enabled(model, schedule) as session:
        images = sample(model, labels, noise=noise, num_steps=steps)
    return images, session.stats


def data_parallel(args: argparse.Namespace, rank: int, world: int, device: torch.device) -> int:
    from smoothcache.reference import initial_noise, load_reference_model, save_grid

    model = load_reference_model(device=device)
    schedule = make_schedule("data", args.schedule, args.steps, args.every)
    check_same_schedule(schedule, world)
    labels = torch.arange(args.samples) % 10
    noise = initial_noise(model, args.samples, seed=args.seed)  # a CPU draw: equal on every rank
    mine = shares(args.samples, world)[rank]
    images, stats = sample_share(model, schedule, labels[mine], noise[mine], args.steps)
    print(describe(rank, stats), flush=True)

    # The example's own communication, after the cached generation: collect the images.
    parts: list[torch.Tensor | None] = [None] * world
    dist.all_gather_object(parts, images.cpu())
    if rank != 0:
        return 0
    gathered = torch.cat([p for p in parts if p is not None])
    out = Path(args.output or Path(tempfile.gettempdir()) / "smoothcache_multi_gpu.png")
    try:
        print(f"{len(gathered)} samples from {world} ranks: {save_grid(gathered, out)}")
    except ImportError:
        print(f"{len(gathered)} samples from {world} ranks (install Pillow for a PNG)")
    if not args.check:
        return 0
    single = torch.cat(
        [
            sample_share(model, schedule, labels[s], noise[s], args.steps)[0].cpu()
            for s in shares(args.samples, world)
        ]
    )
    same = torch.equal(gathered, single)
    print(f"check: {world} ranks vs one process, same batches: bit-identical = {same}")
    return 0 if same else 1


# -- context parallel -------------------------------------------------------------------------


def tiny_wan(heads: int, seed: int = 0) -> nn.Module:
    """A small random ``WanTransformer3DModel`` (``heads`` attention heads), the same on every
    rank; parameters left at zero by diffusers' init (gates, output layer) are re-drawn so
    that every branch moves the output."""
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed)
    model = WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=heads,
        attention_head_dim=8,
        in_channels=4,
        out_channels=4,
        text_dim=16,
        freq_dim=32,
        ffn_dim=32,
        num_layers=2,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
    )
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if not parameter.any():
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)
    return model.eval()


def context_inputs(seed: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Latent ``(1, 4, 2, 8, 8)`` (32 tokens after patching) and text ``(1, 8, 16)``."""
    generator = torch.Generator().manual_seed(seed)
    latent = torch.randn(1, 4, 2, 8, 8, generator=generator)
    text = torch.randn(1, 8, 16, generator=generator)
    return latent.to(device), text.to(device)


def flow_sample(
    model: nn.Module, latent: torch.Tensor, text: torch.Tensor, steps: int
) -> torch.Tensor:
    """Euler steps of a flow-matching sampler, ``x <- x - v / steps``, from t = 1000 down."""
    x = latent
    with torch.no_grad():
        for t in torch.linspace(1000, 1000 / steps, steps):
            timestep = t.expand(len(x)).to(x.device)
            velocity = model(
                hidden_states=x, timestep=timestep, encoder_hidden_states=text, return_dict=False
            )[0]
            x = x - velocity / steps
    return x


def enable_context_parallel(model: nn.Module, world: int) -> None:
    """diffusers' Ulysses context parallelism over ``world`` ranks (native attention)."""
    from diffusers import ContextParallelConfig

    config = ContextParallelConfig(ulysses_degree=world)
    if torch.cuda.is_available():
        model.enable_parallelism(config=config)
        return
    # diffusers 0.42 places rank r on device r % torch.accelerator.device_count(), which is a
    # division by zero without an accelerator; on the CPU every process has its one device.
    with mock.patch.object(torch.accelerator, "device_count", return_value=1):
        model.enable_parallelism(config=config)


def context_parallel(args: argparse.Namespace, rank: int, world: int, device: torch.device) -> int:
    heads = 2 * world  # Ulysses gives every rank heads / world heads
    schedule = make_schedule("context", args.schedule, args.steps, args.every)
    check_same_schedule(schedule, world)
    latent, text = context_inputs(args.seed, device)
    model = tiny_wan(heads).to(device)
    enable_context_parallel(model, world)  # first the split, then the cache on its shards
    with smoothcache.enabled(model, schedule) as session:
        out = flow_sample(model, latent, text, args.steps)
    print(describe(rank, session.stats), flush=True)
    if rank != 0 or not args.check:
        return 0
    single_model = tiny_wan(heads).to(device)
    with smoothcache.enabled(single_model, schedule) as single_session:
        single = flow_sample(single_model, latent, text, args.steps)
    plain = flow_sample(single_model, latent, text, args.steps)
    difference = (out - single).abs().max().item()
    scale = single.abs().max().item()
    print(
        f"check: {world} ranks vs one process: largest difference {difference:.3g} "
        f"(output scale {scale:.3g}; caching itself moved the output by "
        f"{(single - plain).abs().max().item():.3g}); bit-identical = {torch.equal(out, single)}; "
        f"cache per rank {session.stats.peak_cache_bytes:,} bytes, one process "
        f"{single_session.stats.peak_cache_bytes:,}"
    )
    return 0 if difference <= args.tolerance * scale else 1


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=("data", "context"), default="data")
    parser.add_argument("--samples", type=int, default=20, help="data mode: images (default 20)")
    parser.add_argument("--steps", type=int, default=50, help="sampler steps (default 50)")
    parser.add_argument(
        "--every", type=int, default=3, help="without --schedule: compute every N-th step (3)"
    )
    parser.add_argument("--schedule", help="a schedule file or shipped name for every rank")
    parser.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    parser.add_argument("--output", help="data mode: PNG path (default: the temp folder)")
    parser.add_argument("--check", action="store_true", help="rank 0 compares with one process")
    parser.add_argument(
        "--tolerance",
        type=float,
        default=1e-5,
        help="context --check: largest difference allowed, relative to the output (1e-5)",
    )
    return parser.parse_args(argv)


def shutdown() -> None:
    """Leave the process group so that none of its threads outlives the interpreter.

    ``destroy_process_group()`` drops torch's own references to the groups, but a model under
    diffusers' context parallelism still holds its device mesh, and so its groups, through a
    reference cycle of its hooks. Left to the garbage collector of interpreter exit, the
    groups' C++ threads (gloo's run loops, NCCL's watchdog) would be torn down while Python
    finalizes, which now and then aborts the process ("terminate called without an active
    exception"). Collecting that garbage here, while Python is fully alive, joins them.
    """
    dist.destroy_process_group()
    gc.collect()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    rank, world, device = setup()
    try:
        run = data_parallel if args.mode == "data" else context_parallel
        return run(args, rank, world, device)
    finally:
        shutdown()


if __name__ == "__main__":
    sys.exit(main())
