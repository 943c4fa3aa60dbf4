"""Run every code block of the README as a newcomer would, in order, and report each.

``bash`` blocks run line by line (a line joined with ``&&`` is timed command by command, so the
demo's own wall time shows); ``python`` blocks run in one Python process that stays alive, as
if pasted one after another into one session (a block may use what an earlier one defined).
A block preceded by ``<!-- newcomer: skip: REASON -->`` is not run and is reported with its
reason (a download, a GPU, an hour of benchmarking). Only the standard library is used, so the
runner works in a fresh virtualenv before anything is installed.

    python benchmarks/readme_blocks.py README.md       # run (benchmarks/newcomer.sh does this)
    python benchmarks/readme_blocks.py README.md --list
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

SKIP = re.compile(r"<!--\s*newcomer:\s*skip:\s*(?P<reason>.+?)\s*-->")
FENCE = re.compile(r"^```(?P<lang>[a-z]*)\s*$")

_STATUS = "@@status@@ "
# The Python side: reads one JSON-encoded block per line, runs it in a shared namespace, and
# answers one JSON line: ok, or the error. Started only once the set-up blocks installed things.
_CHILD = """
import json, sys, time, traceback
namespace = {"__name__": "__main__"}
for line in sys.stdin:
    code = json.loads(line)
    start = time.perf_counter()
    try:
        exec(compile(code, "<README block>", "exec"), namespace)
        status = {"ok": True}
    except BaseException:
        status = {"ok": False, "error": traceback.format_exc(limit=3)}
    status["seconds"] = time.perf_counter() - start
    sys.stdout.flush()
    print("\\n@@status@@ " + json.dumps(status), flush=True)
"""


@dataclass(frozen=True)
class Block:
    """One fenced code block: its language, its code, its first line number, why it is skipped."""

    lang: str
    code: str
    line: int
    skip: str | None


def blocks(text: str) -> list[Block]:
    """The fenced code blocks of a Markdown text, with the skip reason of the line above each."""
    found: list[Block] = []
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        match = FENCE.match(lines[index])
        if match is None:
            index += 1
            continue
        start = index
        index += 1
        body = []
        while index < len(lines) and lines[index].strip() != "```":
            body.append(lines[index])
            index += 1
        above = lines[start - 1] if start > 0 else ""
        reason = SKIP.search(above)
        found.append(
            Block(match["lang"], "\n".join(body), start + 1, reason["reason"] if reason else None)
        )
        index += 1
    return found


def _first(code: str) -> str:
    line = next((x for x in code.splitlines() if x.strip() and not x.startswith("#")), "")
    return line if len(line) <= 70 else line[:67] + "..."


class _Python:
    """The long-lived Python process that runs the python blocks."""

    def __init__(self) -> None:
        self.process: subprocess.Popen[str] | None = None

    def run(self, code: str) -> dict[str, object]:
        if self.process is None:
            self.process = subprocess.Popen(
                [sys.executable, "-c", _CHILD],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps(code) + "\n")
        self.process.stdin.flush()
        while True:
            line = self.process.stdout.readline()
            if not line:
                return {"ok": False, "error": "the Python process died", "seconds": 0.0}
            if line.startswith(_STATUS):
                return json.loads(line[len(_STATUS) :])
            if line.strip():
                sys.stdout.write("    | " + line)  # what the block printed

    def close(self) -> None:
        if self.process is not None and self.process.stdin is not None:
            self.process.stdin.close()
            self.process.wait()


def _run_bash(block: Block) -> tuple[bool, list[str]]:
    """Run a bash block line by line; each ``&&`` part of a line timed on its own."""
    notes: list[str] = []
    for line in block.code.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        for command in line.split(" && "):
            start = time.perf_counter()
            result = subprocess.run(
                ["bash", "-c", command], capture_output=True, text=True, check=False
            )
            seconds = time.perf_counter() - start
            shown = command.split("#")[0].strip()
            notes.append(f"{shown}: {seconds:.1f} s")
            if result.returncode != 0:
                tail = (result.stdout + result.stderr).strip().splitlines()[-15:]
                notes.append(f"exit status {result.returncode}:\n      " + "\n      ".join(tail))
                return False, notes
    return True, notes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("readme", type=Path)
    parser.add_argument("--list", action="store_true", help="list the blocks, run nothing")
    args = parser.parse_args()
    found = blocks(args.readme.read_text(encoding="utf-8"))
    python = _Python()
    failed = 0
    try:
        for number, block in enumerate(found, 1):
            head = f"block {number:2} (line {block.line:3}, {block.lang or 'text'}): "
            head += _first(block.code)
            if block.skip is not None or args.list:
                print(f"skip  {head}  [{block.skip or 'listed'}]", flush=True)
                continue
            if block.lang == "python":
                status = python.run(block.code)
                ok = bool(status["ok"])
                notes = [f"{float(status['seconds']):.1f} s"]  # type: ignore[arg-type]
                if not ok:
                    notes.append(str(status["error"]))
            elif block.lang == "bash":
                ok, notes = _run_bash(block)
            else:
                print(f"skip  {head}  [not code: {block.lang or 'text'}]", flush=True)
                continue
            failed += not ok
            print(f"{'ok  ' if ok else 'FAIL'}  {head}  ({'; '.join(notes)})", flush=True)
    finally:
        python.close()
    print(f"{len(found)} blocks, {failed} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
