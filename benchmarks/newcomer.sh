#!/usr/bin/env bash
# The first hour, scripted: what a newcomer does with nothing but the README.
#
# A clean checkout of the committed tree (git archive HEAD) in a temporary folder, a fresh
# virtualenv, then every code block of the README in order, exactly as written: the two set-up
# commands (install + demo; install + the whole test suite, as CI runs it), the examples, the
# command-line lines. Blocks that need a network download or a GPU are marked in the README and
# reported as skipped with the reason. One line per block; the demo's wall time is on its line.
#
#     bash benchmarks/newcomer.sh   # set-up and tests about 10 minutes on 2 cores, then the
#                                   # best-path block runs the sampler about 160 times, as written
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir "$work/src"
git -C "$repo" archive HEAD | tar -x -C "$work/src"
python3 -m venv "$work/venv"
# shellcheck disable=SC1091
source "$work/venv/bin/activate"
cd "$work/src"
echo "newcomer check: $(git -C "$repo" rev-parse --short HEAD), $(python --version), $(nproc) cores, $(uname -m)"
python tests/doc_blocks.py README.md
