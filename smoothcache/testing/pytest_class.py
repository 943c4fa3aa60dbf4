"""The pytest base class: subclass it and pytest collects one test per check of the table.

Its ``test_<name>`` methods are made from :data:`~smoothcache.testing.table.TABLE`, each
documented by its check's summary. pytest is imported only to skip the test of a check whose
need the adapter lacks, so importing the kit does not import pytest.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from smoothcache.adapter import Adapter
from smoothcache.binding import resolve
from smoothcache.testing.table import CHECKS, TABLE, CheckSpec


class AdapterConformance:
    """Base class of a pytest test class that runs every check on one adapter.

    Subclass it in a test module (the subclass's name must start with ``Test``), set
    ``adapter`` and ``num_steps``, and define ``make_model`` and ``run``::

        class TestMyAdapter(AdapterConformance):
            adapter = "my-dit"
            num_steps = 4

            def make_model(self):
                return tiny_random_model()

            def run(self, model):
                return sample(model, num_steps=4)

    pytest collects one test per check. ``min_change`` may be lowered for a model whose
    branches barely change the output.
    """

    adapter: str | Adapter | None = None
    num_steps: int | None = None
    min_change: float = 1e-5

    def make_model(self) -> Any:
        """A fresh model (or pipeline) with random, non-zero gates; see ``Factory``."""
        raise NotImplementedError("define make_model(self) in your AdapterConformance subclass")

    def run(self, model: Any) -> torch.Tensor:
        """A short seeded sampling loop of ``num_steps`` steps on ``model``; see ``Runner``."""
        raise NotImplementedError("define run(self, model) in your AdapterConformance subclass")

    def _check(self, spec: CheckSpec) -> None:
        """Run one check, skipping it when the adapter lacks what it needs."""
        if spec.needs is not None:
            root, adapter = resolve(self.make_model(), self.adapter)
            lacking = spec.unmet(root, adapter)
            if lacking is not None:
                import pytest

                pytest.skip(f"adapter {adapter.name!r} {lacking}")
        if self.num_steps is None:
            raise TypeError(f"set num_steps on {type(self).__name__} (the run's step count)")
        CHECKS[spec.name](
            self.make_model,
            self.run,
            adapter=self.adapter,
            num_steps=self.num_steps,
            min_change=self.min_change,
        )


def _test_method(spec: CheckSpec) -> Callable[[AdapterConformance], None]:
    """``AdapterConformance.test_<name>``: runs the check ``spec`` on the subclass's model."""

    def test(self: AdapterConformance) -> None:
        self._check(spec)

    test.__name__ = f"test_{spec.name}"
    test.__qualname__ = f"AdapterConformance.test_{spec.name}"
    test.__doc__ = spec.summary
    return test


for _spec in TABLE:
    setattr(AdapterConformance, f"test_{_spec.name}", _test_method(_spec))
