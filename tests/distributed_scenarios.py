"""What each rank of ``tests/engine/test_distributed.py``'s process group runs (issue #17).

One spawned process per rank (gloo, CPU) runs every scenario below in turn and saves what it
measured to ``<folder>/rank<r>.pt``; the tests read those files. Scenarios:

- ``data``: data parallel, each rank its own samples of a tiny diffusers DiT: collectives
  counted around an uncached and a cached generation, those of the uncached one attributed to
  the branch modules (forward hooks), as under context parallelism.
- ``context``: diffusers' own context parallelism (Ulysses, native attention) on tiny Wan and
  FLUX transformers, smoothcache applied after the split: collectives of an uncached run
  attributed to the branch modules (forward hooks), collectives of a cached run, the cached
  output beside a single-process cached run of the same model, and the cache bytes.
- ``pipeline``: a real ``WanPipeline`` (two calls per step) around a context-parallel
  transformer, cached, against the same pipeline in one process.
- ``more steps``: under context parallelism rank 1's sampler runs one step more than the
  schedule while rank 0's stops on time; rank 1 must get a StepCountError before its model
  issues a collective of the extra step (else it would wait forever for rank 0).
- ``fewer steps``: data parallel, rank 1 stops one step early: a StepCountError when its
  session ends, rank 0 unaffected.
- ``accelerate``: data parallel through accelerate, as docs/distributed.md describes it: a
  ``PartialState`` over the same group (with the environment ``accelerate launch`` sets) splits
  the labels with ``split_between_processes``, and each rank samples its share of the shipped
  reference model under a schedule; the test compares each share with one process's.

Every scenario ends with a barrier of the test's own: a rank stuck in a collective would make
the parent's join time out.

``python -m tests.distributed_scenarios FOLDER`` runs them on a spawned group of 2 and leaves the
rank files in ``FOLDER``, with ``scenario.pt`` (the steps and the schedule row):
``python -m benchmarks.distributed_counts`` prints its table from them, in a process of its own.
"""

from __future__ import annotations

import collections
import os
import socket
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

import torch
import torch.distributed as dist
import torch.distributed._functional_collectives as funcol
import torch.multiprocessing as mp
from accelerate import PartialState  # imported here, before any group: see smoothcache's note
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

# Imported before any rank joins its group: importing smoothcache imports torch._dynamo, which
# imports torch.distributed.nn.functional, whose functions take ``group=group.WORLD`` as a
# default argument evaluated at import. Imported after init_process_group, that default would
# hold the world group (and its gloo threads) until interpreter exit (docs/distributed.md).
import smoothcache
from smoothcache.reference import load_reference_model, sample
from smoothcache.testing.models.diffusers_zoo import ZOO, randomize_zeros_, run

STEPS = 6
ROW = [1, 0, 1, 0, 1, 1]
#: the labels the ``accelerate`` scenario splits between the ranks (uneven: 3 and 2)
LABELS = [0, 1, 2, 3, 4]
#: every collective and point-to-point function of torch.distributed (those this torch has)
DIST_FUNCTIONS = (
    "all_reduce", "all_reduce_coalesced", "all_gather", "all_gather_into_tensor",
    "all_gather_coalesced", "all_gather_object", "all_to_all", "all_to_all_single",
    "broadcast", "broadcast_object_list", "reduce", "reduce_scatter", "reduce_scatter_tensor",
    "gather", "gather_object", "scatter", "scatter_object_list", "send", "recv", "isend",
    "irecv", "batch_isend_irecv", "send_object_list", "recv_object_list", "barrier",
    "monitored_barrier",
)  # fmt: skip
#: the functional collectives (what diffusers' context parallelism calls)
FUNCOL_FUNCTIONS = (
    "all_reduce", "all_reduce_coalesced", "all_gather_tensor", "all_gather_tensor_autograd",
    "all_gather_into_tensor_coalesced", "all_to_all_single", "all_to_all_single_autograd",
    "broadcast", "reduce_scatter_tensor", "reduce_scatter_tensor_autograd",
    "reduce_scatter_tensor_coalesced", "permute_tensor",
)  # fmt: skip


class _Ops(TorchDispatchMode):
    """Every c10d op that reaches the dispatcher (``c10d::*``, ``_c10d_functional::*``)."""

    def __init__(self, record: Callable[[str], None]) -> None:
        super().__init__()
        self._record = record

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if "c10d" in func.namespace:
            self._record(f"op {func}")
        return func(*args, **(kwargs or {}))


class CollectiveCounter:
    """Counts torch.distributed communication at two levels: the Python functions of
    ``torch.distributed`` and of its functional collectives (wrapped), and the c10d ops that
    reach the dispatcher (a dispatch mode), which also sees calls that skip the Python API.

    ``where`` names the branch module running when a call was made (set by hooks of the
    caller), so an uncached run's communication can be attributed to branches.
    """

    def __init__(self) -> None:
        self.calls: collections.Counter[tuple[str, str | None]] = collections.Counter()
        self.where: str | None = None
        self.branch_calls = 0  # branch forwards the hooks saw: attribution was on

    def _record(self, name: str) -> None:
        self.calls[(name, self.where)] += 1

    def _wrap(self, module: Any, name: str) -> Callable[..., Any]:
        original = getattr(module, name)

        def counted(*args: Any, **kwargs: Any) -> Any:
            self._record(f"{module.__name__}.{name}")
            return original(*args, **kwargs)

        return counted

    @contextmanager
    def counting(self) -> Iterator[CollectiveCounter]:
        with ExitStack() as stack:
            for module, names in ((dist, DIST_FUNCTIONS), (funcol, FUNCOL_FUNCTIONS)):
                for name in names:
                    if hasattr(module, name):
                        wrapped = self._wrap(module, name)
                        stack.enter_context(mock.patch.object(module, name, wrapped))
            stack.enter_context(_Ops(self._record))
            yield self

    def total(self, where: str | None = None, *, anywhere: bool = True) -> int:
        return sum(n for (_, w), n in self.calls.items() if anywhere or w == where)

    def by_branch(self) -> dict[str, int]:
        tally: collections.Counter[str] = collections.Counter()
        for (_, where), n in self.calls.items():
            if where is not None:
                tally[where] += n
        return dict(tally)


def _attribute(counter: CollectiveCounter, model: nn.Module, paths: list[str]) -> list[Any]:
    """Hooks that name the branch running while ``counter`` counts (uncached runs only)."""
    handles = []
    for path in paths:
        module = model.get_submodule(path)

        def enter(_module: nn.Module, _args: Any, path: str = path) -> None:
            counter.where = path
            counter.branch_calls += 1

        def leave(_module: nn.Module, _args: Any, _output: Any) -> None:
            counter.where = None

        handles += [module.register_forward_pre_hook(enter), module.register_forward_hook(leave)]
    return handles


def _parallel(model: nn.Module, world: int) -> None:
    """diffusers' Ulysses context parallelism, as ``examples/multi_gpu.py`` enables it."""
    from tests.conftest import load_script

    load_script("examples/multi_gpu.py").enable_context_parallel(model, world)


def free_port() -> int:
    """A local TCP port nobody listens on now, for the group's rendezvous."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _data(rank: int, out: dict[str, Any]) -> None:
    entry = ZOO["DiTTransformer2DModel"]
    model = randomize_zeros_(entry.factory())
    schedule = {"attn1": ROW, "ff": ROW}
    paths = [branch.path for branch in smoothcache.detect(model).branches(model)]
    plain, cached = CollectiveCounter(), CollectiveCounter()
    handles = _attribute(plain, model, paths)
    try:
        with plain.counting():
            reference = run(entry, model, num_steps=STEPS, seed=rank)
    finally:
        for handle in handles:
            handle.remove()
    with cached.counting(), smoothcache.enabled(model, schedule) as session:
        output = run(entry, model, num_steps=STEPS, seed=rank)
    out["data"] = {
        "plain calls": plain.total(),
        "plain by branch": plain.by_branch(),
        "branches": len(paths),
        "branch calls": plain.branch_calls,
        "cached calls": cached.total(),
        "reused": session.stats.total_reused,
        "changed": not torch.equal(output, reference),
    }


def _context(name: str, kinds: list[str], world: int, out: dict[str, Any]) -> None:
    entry = ZOO[name]
    schedule = {kind: ROW for kind in kinds}
    single = randomize_zeros_(entry.factory())
    with smoothcache.enabled(single, schedule) as session:
        single_out = run(entry, single, num_steps=STEPS)
    single_bytes = session.stats.peak_cache_bytes

    model = randomize_zeros_(entry.factory())
    _parallel(model, world)
    paths = [branch.path for branch in smoothcache.detect(model).branches(model)]
    plain = CollectiveCounter()
    handles = _attribute(plain, model, paths)
    try:
        with plain.counting():
            plain_out = run(entry, model, num_steps=STEPS)
    finally:
        for handle in handles:
            handle.remove()
    cached = CollectiveCounter()
    with cached.counting(), smoothcache.enabled(model, schedule) as session:
        cached_out = run(entry, model, num_steps=STEPS)
    out[name] = {
        "kinds": kinds,
        "plain calls": plain.total(),
        "plain by branch": plain.by_branch(),
        "branch kinds": {b.path: b.kind for b in smoothcache.detect(model).branches(model)},
        "cached calls": cached.total(),
        "reused": session.stats.total_reused,
        "cached": cached_out,
        "single": single_out,
        "plain": plain_out,
        "bytes": session.stats.peak_cache_bytes,
        "single bytes": single_bytes,
    }


def _pipeline(world: int, out: dict[str, Any]) -> None:
    """A real ``WanPipeline`` (guidance as two calls per step) around a context-parallel
    transformer, cached, beside the same pipeline in one process."""
    from tests.adapters.test_pipelines import wan

    schedule = {"attn1": ROW, "ffn": ROW}
    results = {}
    for parallel in (False, True):
        pipe, run = wan()
        pipe.set_progress_bar_config(disable=True)
        if parallel:
            _parallel(pipe.transformer, world)
        with smoothcache.enabled(pipe, schedule) as session:
            results[parallel] = run()
    out["pipeline"] = {
        "cached": results[True],
        "single": results[False],
        "passes": session.stats.passes,
        "reused": session.stats.total_reused,
    }


def _more_steps(rank: int, world: int, out: dict[str, Any]) -> None:
    entry = ZOO["WanTransformer3DModel"]
    model = randomize_zeros_(entry.factory())
    _parallel(model, world)
    schedule = {kind: ROW for kind in ("attn1", "attn2", "ffn")}
    counter = CollectiveCounter()
    steps = STEPS + 1 if rank == 1 else STEPS
    result: dict[str, Any] = {"steps": steps, "error": None}
    try:
        with counter.counting(), smoothcache.enabled(model, schedule):
            run(entry, model, num_steps=steps)
    except smoothcache.StepCountError as exc:
        result["error"] = str(exc)
    result["calls"] = counter.total()
    out["more steps"] = result


def _fewer_steps(rank: int, out: dict[str, Any]) -> None:
    entry = ZOO["DiTTransformer2DModel"]
    model = randomize_zeros_(entry.factory())
    result: dict[str, Any] = {"error": None}
    try:
        with smoothcache.enabled(model, {"attn1": ROW, "ff": ROW}):
            run(entry, model, num_steps=STEPS - 1 if rank == 1 else STEPS)
    except smoothcache.StepCountError as exc:
        result["error"] = str(exc)
    out["fewer steps"] = result


def _accelerate(rank: int, world: int, out: dict[str, Any]) -> None:
    """accelerate's share of :data:`LABELS` for this rank, sampled under a schedule.

    ``PartialState`` reads the rank and world size from the environment that ``accelerate
    launch`` (or torchrun) sets, and joins the process group already started instead of
    starting one.
    """
    launched = {
        "RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
        "LOCAL_WORLD_SIZE": str(world), "OMP_NUM_THREADS": "1",
    }  # fmt: skip
    with mock.patch.dict(os.environ, launched):
        state = PartialState(cpu=True)
    model = load_reference_model()
    with state.split_between_processes(LABELS) as share:
        with smoothcache.enabled(model, {"attn1": ROW, "ff": ROW}) as session:
            images = sample(model, share, num_steps=STEPS, seed=rank)
    out["accelerate"] = {
        "processes": state.num_processes,
        "index": state.process_index,
        "share": list(share),
        "images": images,
        "reused": session.stats.total_reused,
    }


def worker(rank: int, world: int, folder: str) -> None:
    """One rank: join the gloo group, run every scenario, save what was measured.

    The ranks meet through a file in ``folder``, not a TCP port chosen in advance (another
    process could take such a port between its choice and the group's start)."""
    store = dist.FileStore(str(Path(folder) / "rendezvous"), world)
    dist.init_process_group("gloo", store=store, rank=rank, world_size=world)
    torch.set_num_threads(1)
    out: dict[str, Any] = {}
    try:
        _data(rank, out)
        dist.barrier()
        _context("WanTransformer3DModel", ["attn1", "attn2", "ffn"], world, out)
        dist.barrier()
        _context("FluxTransformer2DModel", ["attn", "ff", "ff_context", "single"], world, out)
        dist.barrier()
        _pipeline(world, out)
        dist.barrier()
        _more_steps(rank, world, out)
        dist.barrier()
        _fewer_steps(rank, out)
        dist.barrier()
        _accelerate(rank, world, out)
        dist.barrier()
    except Exception:
        out["failure"] = traceback.format_exc()
    finally:
        try:
            from tests.conftest import load_script

            load_script("examples/multi_gpu.py").shutdown()
            out["threads after shutdown"] = communication_threads()
        except Exception:
            out["failure"] = out.get("failure", "") + traceback.format_exc()
        torch.save(out, Path(folder) / f"rank{rank}.pt")


def communication_threads() -> list[str] | None:
    """Names of this process's native threads that belong to gloo (Linux; else ``None``)."""
    tasks = Path("/proc/self/task")
    if not tasks.is_dir():
        return None
    names = []
    for task in tasks.iterdir():
        try:
            names.append((task / "comm").read_text().strip())
        except OSError:  # the thread ended meanwhile
            continue
    return sorted(name for name in names if "gloo" in name)


if __name__ == "__main__":
    torch.save({"steps": STEPS, "row": ROW}, Path(sys.argv[1]) / "scenario.pt")
    mp.start_processes(worker, args=(2, sys.argv[1]), nprocs=2, start_method="spawn")
