"""The README is the front door: its test command is CI's; its code blocks run or say why not."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import load_script

ROOT = Path(__file__).resolve().parents[1]


def _readme_blocks():
    module = load_script("benchmarks/readme_blocks.py")
    return module.blocks((ROOT / "README.md").read_text(encoding="utf-8"))


def test_the_readme_test_command_is_what_ci_runs():
    blocks = _readme_blocks()
    setup = [b for b in blocks if b.lang == "bash"][:2]
    assert "smoothcache demo" in setup[0].code
    test_command = setup[1].code.strip()
    assert "\n" not in test_command and "ruff check ." in test_command
    assert "python -m pytest" in test_command
    ci = (ROOT / ".ci/run").read_text(encoding="utf-8").splitlines()
    commands = [line for line in ci if line.strip() and not line.startswith(("#", "set ", "cd "))]
    assert commands == [test_command]


def test_every_readme_block_runs_or_says_why_not():
    for block in _readme_blocks():
        assert block.lang in ("python", "bash"), block
        assert block.skip is None or len(block.skip) > 10, block
        if block.lang == "python":
            compile(block.code, f"README.md:{block.line}", "exec")  # at least valid Python
    skipped = [b for b in _readme_blocks() if b.skip]
    assert len(skipped) <= 3  # a download, a saved pipeline, the hour-long benchmark
