"""Caching inside distributed generation (issue #17), with 2 processes on the CPU (gloo).

- The example, launched as its README says (``torchrun --nproc-per-node 2``), in both modes,
  with its ``--check`` against one process.
- ``tests/distributed_scenarios.py`` on a spawned group of 2: smoothcache adds no
  ``torch.distributed`` call (counted at the Python API and at the dispatcher), under context
  parallelism the cached run makes exactly the uncached run's collectives minus those of the
  skipped branches, the cached output equals a single process's, each rank caches its shard, and
  a rank whose sampler diverges gets a StepCountError rather than a hang, and accelerate's
  ``split_between_processes`` gives each rank its share, cached as in one process.

Skipped where this platform cannot run a gloo group of local processes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import smoothcache
from smoothcache.reference import load_reference_model, sample
from tests.distributed_scenarios import LABELS, ROW, STEPS, free_port, worker

ROOT = Path(__file__).resolve().parents[2]
WORLD = 2
TIMEOUT = 240  # seconds for a whole group; a hang fails the test instead of the suite


def _why_not() -> str | None:
    if not dist.is_available() or not dist.is_gloo_available():
        return "torch.distributed with the gloo backend is not available"
    try:
        free_port()
    except OSError as exc:
        return f"cannot open a local socket for the process group: {exc}"
    return None


pytestmark = pytest.mark.skipif(_why_not() is not None, reason=str(_why_not()))


def _torchrun(*args: str) -> str:
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        "--nproc-per-node", str(WORLD), str(ROOT / "examples" / "multi_gpu.py"), *args,
    ]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT, env=env)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    return done.stdout


def test_example_data_parallel_under_torchrun(tmp_path):
    png = tmp_path / "g.png"
    out = _torchrun("--check", "--samples", "6", "--steps", "10", "--output", str(png))
    assert "check: 2 ranks vs one process, same batches: bit-identical = True" in out
    for rank in range(WORLD):
        assert f"rank {rank}: " in out
    assert png.stat().st_size > 0


def test_example_context_parallel_under_torchrun():
    out = _torchrun("--mode", "context", "--check", "--steps", "8")
    check = next(line for line in out.splitlines() if line.startswith("check:"))
    assert "bit-identical = True" in check, check
    # each rank caches its shard of the tokens: half of what one process holds
    sizes = check.split("cache per rank ")[1].split(" bytes, one process ")
    per_rank, single = (int(size.replace(",", "")) for size in sizes)
    assert per_rank * WORLD == single


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    """What each rank of a spawned group measured (see tests/distributed_scenarios.py)."""
    folder = tmp_path_factory.mktemp("ranks")
    context = mp.start_processes(
        worker, args=(WORLD, str(folder)), nprocs=WORLD, join=False,
        start_method="spawn",
    )  # fmt: skip
    deadline = time.monotonic() + TIMEOUT
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"the process group did not finish in {TIMEOUT} s (a rank hung)")
    results = [torch.load(folder / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    for rank, result in enumerate(results):
        assert "failure" not in result, f"rank {rank}:\n{result['failure']}"
    return results


def test_data_parallel_adds_no_communication(ranks):
    """No call at all, cached or not; none inside a branch (benchmarks/distributed_counts.py's
    "in branches" column), counted while the hooks saw every branch call of every step."""
    for result in ranks:
        data = result["data"]
        assert data["reused"] > 0 and data["changed"]  # caching happened and mattered
        assert data["branch calls"] == data["branches"] * STEPS > 0  # attribution was on
        assert data["plain by branch"] == {}
        assert data["plain calls"] == 0
        assert data["cached calls"] == 0


@pytest.mark.parametrize("name", ["WanTransformer3DModel", "FluxTransformer2DModel"])
def test_context_parallel_makes_only_the_models_own_collectives(ranks, name):
    """The uncached run's collectives minus those of the skipped branch calls, exactly: the
    library adds none, and a skipped attention skips its all-to-alls on every rank alike."""
    skipped_steps = ROW.count(0)
    for result in ranks:
        run = result[name]
        by_branch = run["plain by branch"]
        assert by_branch, "the attention branches communicate under context parallelism"
        saved = 0
        for path, calls in by_branch.items():
            assert calls % STEPS == 0, (path, calls)
            saved += calls // STEPS * skipped_steps
        assert run["reused"] > 0
        assert run["cached calls"] == run["plain calls"] - saved
        assert run["cached calls"] < run["plain calls"]


@pytest.mark.parametrize("name", ["WanTransformer3DModel", "FluxTransformer2DModel"])
def test_context_parallel_output_equals_one_process(ranks, name):
    for result in ranks:
        run = result[name]
        cached, single, plain = run["cached"], run["single"], run["plain"]
        assert not torch.equal(cached, plain)  # the cache changed the output
        if name == "WanTransformer3DModel":
            assert torch.equal(cached, single)  # measured bit-identical
        else:  # FLUX: last-bit differences of the split matmuls (measured 2.4e-7)
            scale = single.abs().max().item()
            assert (cached - single).abs().max().item() <= 1e-5 * scale
        # each rank keeps its shard of the tokens: half of what one process holds
        assert run["bytes"] * WORLD == run["single bytes"]


def test_a_real_pipeline_over_a_context_parallel_transformer(ranks):
    """WanPipeline, guidance as two calls per step: two passes, reuse in both, and the
    gathered result of the 2 ranks equals one process's."""
    for result in ranks:
        run = result["pipeline"]
        # 2 blocks x 2 kinds x 2 passes at each skipped step
        assert run["passes"] == 2 and run["reused"] == 2 * 2 * 2 * ROW.count(0)
        scale = run["single"].abs().max().item()
        assert (run["cached"] - run["single"]).abs().max().item() <= 1e-5 * scale


def test_the_ranks_agree_on_what_they_skip(ranks):
    for name in ("WanTransformer3DModel", "FluxTransformer2DModel"):
        assert len({result[name]["cached calls"] for result in ranks}) == 1
        assert len({result[name]["reused"] for result in ranks}) == 1


def test_a_rank_that_runs_more_steps_fails_before_communicating(ranks):
    on_time, late = ranks[0]["more steps"], ranks[1]["more steps"]
    assert on_time["error"] is None
    assert "ran more steps than the schedule" in late["error"]
    # the extra step raised in the step clock's pre-hook, before the model's first
    # collective of that step: rank 1 communicated exactly as much as rank 0
    assert late["calls"] == on_time["calls"] > 0


def test_a_rank_that_runs_fewer_steps_gets_a_step_count_error(ranks):
    assert ranks[0]["fewer steps"]["error"] is None
    assert "ran fewer steps than the schedule" in ranks[1]["fewer steps"]["error"]


def test_accelerate_splits_the_labels_and_each_share_is_cached_as_in_one_process(ranks):
    """docs/distributed.md's accelerate recipe, run: ``PartialState().split_between_processes``
    over the group gives rank 0 the first 3 labels and rank 1 the last 2, and each rank's cached
    samples of its share are bit-identical to one process's (same share, seed and schedule)."""
    shares = [result["accelerate"]["share"] for result in ranks]
    assert shares == [LABELS[:3], LABELS[3:]]
    model = load_reference_model()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the ranks: the same matmul blocking
    try:
        for rank, result in enumerate(ranks):
            run = result["accelerate"]
            assert run["processes"] == WORLD and run["index"] == rank
            assert run["reused"] > 0
            with smoothcache.enabled(model, {"attn1": ROW, "ff": ROW}):
                alone = sample(model, run["share"], num_steps=STEPS, seed=rank)
            assert torch.equal(run["images"], alone)
    finally:
        torch.set_num_threads(threads)


def test_no_communication_thread_outlives_the_shutdown(ranks):
    """The root of issue #24's abort at exit: under context parallelism the model's hooks keep
    the device mesh and its process groups alive past ``destroy_process_group()``, and their
    gloo threads were torn down during interpreter finalization (SIGABRT now and then). The
    example's ``shutdown()`` collects them first: no gloo thread is left for exit."""
    for rank, result in enumerate(ranks):
        threads = result["threads after shutdown"]
        if threads is None:
            pytest.skip("native thread names are read from /proc (Linux only)")
        assert threads == [], f"rank {rank}: {threads}"
