"""The README and the docs: the README's test command is CI's, and every code block runs here,
is run by another test, or is marked with its reason and counted (the convention:
``tests/doc_blocks.py``).

The blocks run at CI scale: the shipped reference model's sampler runs ``CI_STEPS`` steps on at
most ``CI_SAMPLES`` samples, unless a block asks for a number of steps itself, and a
``smoothcache ...`` line runs the command line in this process. Every other line is as written.
"""

from __future__ import annotations

import functools
import shlex
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

import smoothcache.reference
from tests.doc_blocks import NOT_RUN, RUNNABLE, SET_UP, SHOWN, Block, blocks

ROOT = Path(__file__).resolve().parents[1]
README_LINES = 150
CI_STEPS = 10
CI_SAMPLES = 2

# Every page with python or bash blocks: how many run here, how many are set-up commands, how
# many are marked not run. Marking a block, or adding one, changes a count: change it here too.
PAGES: dict[str, tuple[int, int, int]] = {
    "README.md": (1, 2, 2),
    "docs/usage.md": (6, 0, 2),
    "docs/methods.md": (5, 0, 1),
    "docs/forecast.md": (3, 0, 0),
    "docs/schedule-search-method.md": (1, 0, 0),
    "docs/distributed.md": (0, 0, 3),
    "docs/evaluation.md": (0, 0, 1),
    "docs/performance.md": (0, 0, 6),
    "docs/quality_speed.md": (0, 0, 1),
    "docs/quality_speed_second.md": (0, 0, 1),
    "docs/quality_speed_second_test.md": (0, 0, 1),
    "docs/quality_speed_flow_test.md": (0, 0, 1),
    "docs/quality_speed_test.md": (0, 0, 1),
    "docs/schedule_search.md": (0, 0, 1),
    "docs/worst_samples.md": (0, 0, 1),
}
# Pages whose blocks another test runs, as one script in a subprocess of its own.
ELSEWHERE = {"docs/adapters.md": "test_the_adapter_guide_runs_as_written"}


def _pages() -> list[str]:
    return ["README.md", *sorted(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md"))]


def _blocks(page: str) -> list[Block]:
    return blocks((ROOT / page).read_text(encoding="utf-8"), page)


def _indented_code(text: str) -> list[int]:
    """Lines that open an indented code block (four spaces after a blank line, outside fences
    and lists): a block the convention cannot mark, to be fenced instead."""
    found, fenced, previous = [], False, ""
    lines = text.splitlines()
    for number, line in enumerate(lines, 1):
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith("    ") and line.strip() and not lines[number - 2]:
            item = previous.lstrip()[:1] in ("-", "*", "|") or previous.lstrip()[:1].isdigit()
            if not item and not previous[:1].isspace():
                found.append(number)
        if line.strip():
            previous = line
    return found


def test_the_readme_test_command_is_what_ci_runs():
    setup = [b for b in _blocks("README.md") if b.mark == SET_UP]
    assert len(setup) == 2 and "smoothcache demo" in setup[0].code
    test_command = setup[1].code.strip()
    assert "\n" not in test_command and "ruff check ." in test_command
    assert "python -m pytest" in test_command
    ci = (ROOT / ".ci/run").read_text(encoding="utf-8").splitlines()
    commands = [line for line in ci if line.strip() and not line.startswith(("#", "set ", "cd "))]
    assert commands == [test_command]


def test_the_readme_reads_in_five_minutes():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_LINES, f"README.md has {len(lines)} lines; move detail to docs/"


@pytest.mark.parametrize("page", _pages())
def test_every_block_is_counted(page: str):
    found = _blocks(page)
    for block in found:
        where = f"{page}:{block.line}"
        assert block.lang in RUNNABLE + SHOWN, f"{where}: tag the block: {RUNNABLE + SHOWN}"
        assert block.mark is None or len(block.reason or "") > 10, f"{where}: say why not"
        assert block.mark != SET_UP or block.lang == "bash", f"{where}: set-up is for commands"
        if block.lang == "python":
            compile(block.code, where, "exec")  # a block that does not run is still Python
    assert not _indented_code((ROOT / page).read_text(encoding="utf-8")), f"{page}: fence it"
    code = [b for b in found if b.lang in RUNNABLE]
    if page in ELSEWHERE:
        test = ELSEWHERE[page]
        assert any(test in p.read_text(encoding="utf-8") for p in (ROOT / "tests").rglob("*.py"))
        return
    counts = (
        sum(b.runs for b in code),
        sum(b.mark == SET_UP for b in code),
        sum(b.mark == NOT_RUN for b in code),
    )
    assert counts == PAGES.get(page, (0, 0, 0)), f"{page}: (run, set-up, not run)"


def test_every_counted_page_exists():
    assert set(PAGES) | set(ELSEWHERE) <= set(_pages())


def _ci_scale(original: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """The reference sampler at CI scale: fewer steps, unless asked for; fewer samples."""

    @functools.wraps(original)
    def sample(model: Any, labels: Any, *, num_steps: int = CI_STEPS, **kwargs: Any) -> Any:
        return original(model, labels[:CI_SAMPLES], num_steps=num_steps, **kwargs)

    return sample


def _run_bash(block: Block, where: str, folder: Path) -> None:
    from smoothcache.cli import main

    for line in block.code.replace("\\\n", " ").splitlines():
        argv = shlex.split(line, comments=True)
        if not argv:
            continue
        if argv[0] == "smoothcache":
            assert main(argv[1:]) == 0, f"{where}: {line}"
        else:
            done = subprocess.run(line, shell=True, cwd=folder, capture_output=True, text=True)
            assert done.returncode == 0, f"{where}: {line}\n{done.stdout}{done.stderr}"


@pytest.mark.parametrize("page", [page for page, counts in PAGES.items() if counts[0]])
def test_the_blocks_run(page: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(smoothcache.reference, "sample", _ci_scale(smoothcache.reference.sample))
    namespace: dict[str, Any] = {"__name__": "__main__"}
    for block in _blocks(page):
        if not block.runs:
            continue
        where = f"{page}:{block.line}"
        if block.lang == "python":
            exec(compile(block.code, where, "exec"), namespace)
        else:
            _run_bash(block, where, tmp_path)
