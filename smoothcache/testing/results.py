"""What the conformance kit reports: the error a failed check raises, and one run's results.

A check either returns (passed) or raises :class:`ConformanceError` naming itself; the runner
(:func:`smoothcache.testing.check_adapter`) collects one :class:`CheckResult` per check into a
:class:`Report`. Kept apart from the checks so that both the checks and the runner build on it.
"""

from __future__ import annotations

from dataclasses import dataclass


class ConformanceError(AssertionError):
    """An adapter broke the contract; ``check`` names the check that found it.

    An ``AssertionError`` so that any test runner reports it as a failed test, not an error.
    """

    def __init__(self, check: str, message: str) -> None:
        super().__init__(f"[{check}] {message}")
        self.check = check
        self.message = message


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check: ``passed``, ``failed`` or ``skipped``, and why."""

    check: str
    status: str
    message: str = ""


@dataclass(frozen=True)
class Report:
    """The results of :func:`~smoothcache.testing.check_adapter`, one per check in
    :data:`~smoothcache.testing.CHECKS` order."""

    adapter: str
    results: tuple[CheckResult, ...]

    @property
    def passed(self) -> bool:
        """True when no check failed (skipped checks do not count against the adapter)."""
        return not self.failures

    @property
    def failures(self) -> list[CheckResult]:
        """The failed checks."""
        return [r for r in self.results if r.status == "failed"]

    def raise_for_failures(self) -> None:
        """Raise :class:`ConformanceError` listing every failed check, if any failed."""
        if self.failures:
            raise ConformanceError(
                ", ".join(r.check for r in self.failures),
                f"adapter {self.adapter!r} fails {len(self.failures)} conformance check(s):\n"
                + str(self),
            )

    def __str__(self) -> str:
        lines = []
        for result in self.results:
            line = f"{result.status.upper():7} {result.check}"
            lines.append(f"{line}: {result.message}" if result.message else line)
        return "\n".join(lines)
