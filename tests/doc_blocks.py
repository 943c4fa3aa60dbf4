"""The fenced code blocks of the Markdown pages, and a runner that runs them as a newcomer would.

The convention every page follows (``README.md``, ``docs/*.md``):

- a block tagged ``python`` or ``bash`` claims to run: ``tests/test_readme.py`` runs it, in
  order with the page's other blocks (the python ones in one namespace, as if pasted into one
  session; all in one temporary folder);
- the line right above a block may mark it instead, with a reason of its own:
  ``<!-- not run: REASON -->`` where it needs what CI has not (a download, a GPU, several
  processes, an hour of benchmarking), or ``<!-- set-up: REASON -->`` where it installs
  packages (run by ``benchmarks/newcomer.sh`` in a fresh virtualenv, not by the test, which runs
  inside an installed one);
- a block tagged otherwise (``text``, ``toml``, ``json``) shows data and claims nothing.

The test counts each page's blocks of each sort, so marking a block changes a count that someone
has to change with it. A mark that stands above no block is an error here, not a silent no-op.

Run as a script (standard library only, so it works in a fresh virtualenv before anything is
installed), it runs a page's set-up and runnable blocks exactly as written and reports each:
``bash`` blocks line by line (a line joined with ``&&`` timed command by command, so the demo's
own wall time shows), ``python`` blocks in one Python process that stays alive:

    python tests/doc_blocks.py README.md       # benchmarks/newcomer.sh does this
    python tests/doc_blocks.py README.md --list
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

RUNNABLE = ("python", "bash")
SHOWN = ("text", "toml", "json")
NOT_RUN = "not run"
SET_UP = "set-up"

_MARK = re.compile(r"<!--\s*(?P<mark>not run|set-up):\s*(?P<reason>.+?)\s*-->")
_FENCE = re.compile(r"^```(?P<lang>[\w-]*)\s*$")


@dataclass(frozen=True)
class Block:
    """One fenced code block: its language, its code, the line of its fence, and its mark
    (``None``, :data:`NOT_RUN` or :data:`SET_UP`) with the mark's reason."""

    lang: str
    code: str
    line: int
    mark: str | None = None
    reason: str | None = None

    @property
    def runs(self) -> bool:
        """Whether the doc test runs it: runnable language, no mark."""
        return self.lang in RUNNABLE and self.mark is None


def blocks(text: str, name: str = "<page>") -> list[Block]:
    """The fenced code blocks of a Markdown ``text``, each with the mark on the line above it.

    Raises ``ValueError`` for a mark that no block follows, and for a fence left open.
    """
    found: list[Block] = []
    lines = text.splitlines()
    following = [*lines[1:], ""]
    index = 0
    while index < len(lines):
        line = lines[index]
        if _MARK.search(line) and not _FENCE.match(following[index]):
            raise ValueError(f"{name}:{index + 1}: a mark must stand right above its block")
        match = _FENCE.match(line)
        if match is None:
            index += 1
            continue
        start = index
        index += 1
        while index < len(lines) and lines[index].strip() != "```":
            index += 1
        if index == len(lines):
            raise ValueError(f"{name}:{start + 1}: this block is never closed")
        above = _MARK.search(lines[start - 1]) if start > 0 else None
        code = "\n".join(lines[start + 1 : index])
        found.append(
            Block(
                match["lang"],
                code,
                start + 1,
                above["mark"] if above else None,
                above["reason"] if above else None,
            )
        )
        index += 1
    return found


# -- the newcomer's runner -----------------------------------------------------------------------

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
        exec(compile(code, "<block>", "exec"), namespace)
        status = {"ok": True}
    except BaseException:
        status = {"ok": False, "error": traceback.format_exc(limit=3)}
    status["seconds"] = time.perf_counter() - start
    sys.stdout.flush()
    print("\\n@@status@@ " + json.dumps(status), flush=True)
"""


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
    for line in block.code.replace("\\\n", " ").splitlines():
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
    """Run the set-up and runnable blocks of a page as written; 1 if any failed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("page", type=Path)
    parser.add_argument("--list", action="store_true", help="list the blocks, run nothing")
    args = parser.parse_args()
    found = blocks(args.page.read_text(encoding="utf-8"), str(args.page))
    python = _Python()
    failed = 0
    try:
        for number, block in enumerate(found, 1):
            head = f"block {number:2} (line {block.line:3}, {block.lang or 'text'}): "
            head += _first(block.code)
            if block.lang not in RUNNABLE:
                print(f"skip  {head}  [not code: {block.lang or 'text'}]", flush=True)
                continue
            if block.mark == NOT_RUN or args.list:
                print(f"skip  {head}  [{block.reason or 'listed'}]", flush=True)
                continue
            if block.lang == "python":
                status = python.run(block.code)
                ok = bool(status["ok"])
                notes = [f"{float(status['seconds']):.1f} s"]  # type: ignore[arg-type]
                if not ok:
                    notes.append(str(status["error"]))
            else:
                ok, notes = _run_bash(block)
            failed += not ok
            print(f"{'ok  ' if ok else 'FAIL'}  {head}  ({'; '.join(notes)})", flush=True)
    finally:
        python.close()
    print(f"{len(found)} blocks, {failed} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
