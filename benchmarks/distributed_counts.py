"""Communication and memory of cached generation on 2 CPU processes (gloo), counted.

Runs the scenarios of ``tests/distributed_scenarios.py`` on a spawned group of 2, in a process of
their own (``python -m tests.distributed_scenarios FOLDER``), and prints from the files its ranks
leave, per model and rank: the ``torch.distributed`` calls of an uncached and a cached 6-step run
(Python API and dispatcher, see ``CollectiveCounter``), the cache bytes per rank against one
process, and the largest difference of the cached output from a single process's cached run.
Counts do not depend on the machine's speed.

    python -m benchmarks.distributed_counts
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

WORLD = 2
ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    """Run the scenarios, then print the table (or the rank that failed)."""
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args()
    with tempfile.TemporaryDirectory() as folder:
        command = [sys.executable, "-m", "tests.distributed_scenarios", folder]
        subprocess.run(command, check=True, cwd=ROOT)
        scenario = torch.load(Path(folder) / "scenario.pt")
        ranks = [torch.load(Path(folder) / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    for rank, result in enumerate(ranks):
        if "failure" in result:
            print(f"rank {rank} failed:\n{result['failure']}")
            return 1
    steps, row = scenario["steps"], scenario["row"]
    print(
        f"{WORLD} processes, gloo, CPU, float32, batch 1, torch {torch.__version__}; "
        f"{steps} steps, every kind computing at steps {[i for i, c in enumerate(row) if c]}"
    )
    print("| run | rank | collectives uncached | cached | of them in branches, uncached | "
          "cache bytes per rank | one process | largest difference from one process |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for rank, result in enumerate(ranks):
        data = result["data"]
        print(f"| data parallel, tiny DiT | {rank} | {data['plain calls']} | "
              f"{data['cached calls']} | {sum(data['plain by branch'].values())} | "
              "- | - | - |")  # fmt: skip
    for name in ("WanTransformer3DModel", "FluxTransformer2DModel"):
        for rank, result in enumerate(ranks):
            run = result[name]
            difference = (run["cached"] - run["single"]).abs().max().item()
            print(
                f"| Ulysses context parallel, tiny {name} | {rank} | {run['plain calls']} | "
                f"{run['cached calls']} | {sum(run['plain by branch'].values())} | "
                f"{run['bytes']:,} | {run['single bytes']:,} | {difference:.2g} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
