"""Stand-ins for the members of a fused group (see :class:`~smoothcache.adapter.Branch`).

A group member computes with its leader and is skipped with it; the leader's reused output
already carries the group's result, so a member's skipped call only has to return something of
the right structure, shapes, dtypes and devices for the block to run. A computing step keeps
only that description (no tensor memory); a skipped step returns NaN-filled tensors from it,
so a block that used a member's stand-in by mistake would show it rather than hide it.
"""

from __future__ import annotations

from typing import Any

from smoothcache.engine.outputs import like, stand_in
from smoothcache.engine.technique import Answer, Technique, register_technique


def _stand_in_for_last(read: list[Any]) -> Any:
    return stand_in(read[-1])


class StandIn(Technique):
    """NaN tensors shaped like the member's last computed output."""

    name = "stand-in"
    keep = staticmethod(like)

    def answer(self, constants: tuple[float, ...], newest: Any) -> Answer:
        return _stand_in_for_last


STAND_IN = register_technique(StandIn())
