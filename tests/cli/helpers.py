"""Helpers for the command-line tests: run ``smoothcache`` in-process and read its error line."""

from __future__ import annotations

import pytest

from smoothcache.cli import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of ``smoothcache *argv``."""
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def error_line(err: str) -> str:
    """The single ``smoothcache...: error:`` line on stderr (other lines are library logs)."""
    lines = [line for line in err.splitlines() if line.startswith("smoothcache")]
    assert len(lines) == 1, err
    return lines[0]
