"""The runner: every check of the table on one model, each outcome in a report.

Unlike the ``check_*`` functions, which raise at the first failure, the runner keeps going, so
an adapter author sees every broken promise at once.
"""

from __future__ import annotations

from smoothcache.adapter import Adapter
from smoothcache.testing.harness import Factory, Runner, Subject
from smoothcache.testing.results import CheckResult, ConformanceError, Report
from smoothcache.testing.table import TABLE


def check_adapter(
    factory: Factory,
    run: Runner,
    *,
    adapter: str | Adapter | None = None,
    num_steps: int,
    min_change: float = 1e-5,
) -> Report:
    """Run every check on one model from ``factory`` and report each outcome.

    ``adapter`` is the adapter under test, by name or instance (an instance need not be
    registered: detection is then checked as if it were); ``None`` tests whichever adapter
    detection picks. ``num_steps`` is the number of denoising steps ``run`` makes (at least 3).
    ``min_change`` is the smallest relative change of the output that reusing one branch kind
    must cause. A check that raises anything counts as failed; the others still run.
    """
    try:
        subject = Subject(factory, run, adapter, num_steps, min_change)
    except ConformanceError as exc:
        name = adapter if isinstance(adapter, str) else getattr(adapter, "name", "<detected>")
        results = [CheckResult(exc.check, "failed", exc.message)]
        results += [
            CheckResult(spec.name, "skipped", "no adapter")
            for spec in TABLE
            if spec.name != exc.check
        ]
        return Report(str(name), tuple(results))
    results = []
    for spec in TABLE:
        lacking = spec.unmet(subject.root, subject.adapter)
        if lacking is not None:
            results.append(CheckResult(spec.name, "skipped", f"the adapter {lacking}"))
            continue
        try:
            spec.body(subject)
        except ConformanceError as exc:
            results.append(CheckResult(spec.name, "failed", exc.message))
        except Exception as exc:
            results.append(CheckResult(spec.name, "failed", f"raised {type(exc).__name__}: {exc}"))
        else:
            results.append(CheckResult(spec.name, "passed"))
    return Report(subject.name, tuple(results))
