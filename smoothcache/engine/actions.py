"""The action table: what every branch does at every step, built once from the schedule.

The schedule is static, so everything the per-call path decides is known before the first call:
whether a step computes or skips, which technique answers a skipped step and with which
constants, how many stored outputs the answer reads, and how many earlier outputs must still be
kept when the step starts. An output is stored only when a later skipped step reads it, and
dropped when the first step that no longer reads it starts. Dropping and choosing the outputs a
step reads happen once per model evaluation, before the branches run, so the wrapper itself
never counts: under ``torch.compile`` no stored-output count becomes a guard.
"""

from __future__ import annotations

from collections.abc import Sequence

from smoothcache.engine.forecast import FORECAST
from smoothcache.engine.reuse import REUSE
from smoothcache.engine.standin import STAND_IN
from smoothcache.engine.technique import Technique
from smoothcache.forecast import plan_reads

# Per-step flags of one branch; bit flags so the wrapper tests them with one `&`.
STORE = 1  # computing: store the output, a later skipped step reads it
SKIP = 2  # skipped: answer from the stored outputs (the action's technique)
NO_CLOCK = 4  # the timestep source has not fired yet: the adapter is wrong
DROP = 16  # before this step, fewer stored outputs are needed than held: drop the oldest

#: How a skipped step is answered: the technique and the constants the schedule fixes for it.
Answering = tuple[Technique, tuple[float, ...]]

#: One branch's action at one step: (flags, outputs the answer reads, earlier outputs kept
#: when the step starts, how the answer is made or ``None`` when the step computes).
Action = tuple[int, int, int, Answering | None]


def actions_for(
    row: Sequence[int],
    orders: Sequence[int] | None = None,
    technique: Technique | None = None,
    weights: Sequence[tuple[float, ...] | None] | None = None,
) -> list[Action]:
    """The action of each step for one branch (see :data:`Action`).

    ``technique`` answers every skipped step; by default a step of order 0 reuses and a step
    of a higher order forecasts (an explicit forecast at order 0 is reuse too: bit-identical).
    ``weights`` (a schedule's fitted weights for this branch) replace a forecast's Lagrange
    weights where they give some: the same constants, the same work per answer.
    """
    acts: list[Action] = []
    present = 0  # outputs stored when the step starts: kept before the last, plus its own
    for step, (skip, read, hold) in enumerate(plan_reads(row, orders)):
        answering = None
        if skip:
            chosen = technique or FORECAST
            if chosen is FORECAST and len(read) == 1:
                chosen = REUSE
            fitted = weights[step] if weights is not None and chosen.takes_weights else None
            answering = (chosen, fitted or chosen.constants(read, step))
            flags = SKIP
            keep = max(len(read), hold)
        else:
            flags = STORE if hold else 0
            keep = max(hold - 1, 0)  # the output of this step joins them
        if keep < present:
            flags |= DROP
        acts.append((flags, len(read), keep, answering))
        present = keep + (1 if flags & STORE else 0)
    return acts


def member_actions(row: Sequence[int]) -> list[Action]:
    """The actions of a group member (see :class:`~smoothcache.adapter.Branch`): compute with
    its leader; at the leader's skipped steps, a stand-in shaped like its last output."""
    return actions_for(row, None, STAND_IN)
