"""A session's step plans: the action table of every branch, one plan per distinct step pattern.

Steps with the same actions for every branch share one plan object, so the per-evaluation work
of choosing, dropping and counting touches only the branches a plan names, and under
``torch.compile`` the distinct plans bound the distinct graphs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from smoothcache.adapter import Branch
from smoothcache.engine.actions import SKIP, Action, actions_for, member_actions
from smoothcache.engine.standin import STAND_IN
from smoothcache.engine.technique import technique_named
from smoothcache.forecast import first_tensor
from smoothcache.schedule import Schedule


class StepPlans:
    """The actions of ``branches`` (in execution order) under ``schedule``, per step.

    ``of_step[s]`` is the plan index of step ``s``; ``plans[p][i]`` branch ``i``'s action in plan
    ``p``; ``skipping[p]`` the branches that skip (fallbacks to check); ``touched[p]`` those whose
    stored outputs may change (outputs to choose or drop, bytes to recount): compute-only
    branches are in neither. ``answers[p][i]`` is the answer of a skipped branch when its
    technique's answer does not depend on the outputs' device (reuse, stand-ins), else
    :data:`DEVICE_BOUND` (made when the step starts, from the stored outputs).
    """

    def __init__(self, schedule: Schedule, branches: Sequence[Branch]) -> None:
        everything = (1,) * schedule.num_steps
        rows = []
        #: per branch, what its technique stores of a computed output (None: the output)
        self.keeps = [STAND_IN.keep if b.leader is not None else None for b in branches]
        for i, b in enumerate(branches):
            row = schedule.row_for(b.kind, b.block) or everything
            if b.leader is not None:
                rows.append(member_actions(row))
                continue
            name = schedule.technique_for(b.kind, b.block)
            technique = None
            if name is not None:  # named under the key whose row applies
                technique = technique_named(name, schedule.key_for(b.kind, b.block) or b.kind)
                self.keeps[i] = technique.keep
            orders = schedule.orders_for(b.kind, b.block)
            rows.append(actions_for(row, orders, technique, schedule.weights_for(b.kind, b.block)))
        unique: dict[tuple[Action, ...], int] = {}
        self.of_step = [unique.setdefault(plan, len(unique)) for plan in zip(*rows)]
        self.plans: list[tuple[Action, ...]] = list(unique)
        self.skipping = [[i for i, a in enumerate(p) if a[0] & SKIP] for p in self.plans]
        self.touched = [[i for i, a in enumerate(p) if a[0]] for p in self.plans]
        made: dict[Any, Any] = {}
        self.answers = [[_fixed_answer(a, made) for a in p] for p in self.plans]


#: In :attr:`StepPlans.answers`: the answer depends on the stored outputs' device and dtype.
DEVICE_BOUND = object()


class DeviceAnswers:
    """The answers of device-bound techniques, made once per (technique and constants,
    device, dtype) of the stored outputs they read; as tensors, their constants are graph
    inputs under ``torch.compile``, not guarded constants."""

    def __init__(self) -> None:
        self._made: dict[Any, Any] = {}

    def __call__(self, answering: Any, newest: Any) -> Any:
        """The answer of ``answering`` for the device and dtype of ``newest``."""
        tensor = first_tensor(newest)
        key = (answering, None if tensor is None else (tensor.device, tensor.dtype))
        found = self._made.get(key)
        if found is None:
            found = self._made[key] = answering[0].answer(answering[1], newest)
        return found


def _fixed_answer(action: Action, made: dict[Any, Any]) -> Any:
    answering = action[3]
    if answering is None:
        return None
    if answering[0].device_bound:
        return DEVICE_BOUND
    if answering not in made:
        made[answering] = answering[0].answer(answering[1], None)
    return made[answering]
