"""Check the flow-matching model: the independent digits classifier must recognise its samples.

Samples ``--samples`` digits (labels ``arange(n) % 10``, development evaluation seed 0) through
``FluxPipeline`` at the model's recipe (28 steps, true CFG 1.5) without any cache, and prints the
accuracy of ``smoothcache.reference.digits_classifier`` (a scikit-learn MLP trained on the real
digits, never on model samples), per class and overall, and the seconds it took::

    python -m benchmarks.flow_model.check --threads 1
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from benchmarks.common.seeds import DEVELOPMENT
from benchmarks.flow_model.model import GUIDANCE, NUM_CLASSES, STEPS, config, load, sample
from smoothcache.reference import digits_classifier

TARGET = 0.95


def main() -> int:
    """Sample, classify, print; exit 1 when the accuracy is below :data:`TARGET`."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    pipe = load()
    labels = torch.arange(args.samples) % NUM_CLASSES
    start = time.perf_counter()
    images = sample(pipe, labels, seed=DEVELOPMENT.evaluation)
    seconds = time.perf_counter() - start
    classifier = digits_classifier()
    predicted = torch.as_tensor(classifier.predict(images))
    right = predicted == labels
    training = config()["training"]
    print(
        f"flow model ({training['parameters']:,} parameters, {training['steps']} training steps), "
        f"FluxPipeline, {STEPS} steps, true CFG {GUIDANCE:g}; {args.samples} samples (seed "
        f"{DEVELOPMENT.evaluation}) in {seconds:.1f} s on {torch.get_num_threads()} thread(s), "
        f"torch {torch.__version__}"
    )
    per_class = ", ".join(
        f"{c}: {right[labels == c].float().mean().item():.0%}" for c in range(NUM_CLASSES)
    )
    accuracy = right.float().mean().item()
    print(
        f"digits classifier accuracy {accuracy:.1%} (target >= {TARGET:.0%}); per class {per_class}"
    )
    return 0 if accuracy >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
