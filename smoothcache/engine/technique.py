"""What answers a skipped step: the technique interface and its registry.

A static schedule says, for every branch and step, compute or skip. A skipped step is answered
by a *technique* from the outputs the branch computed at earlier steps: the last one (reuse,
:mod:`smoothcache.engine.reuse`), an extrapolation from the last few (forecast,
:mod:`smoothcache.engine.forecast`), or a stand-in for a fused group's member
(:mod:`smoothcache.engine.standin`). The engine never looks inside a technique: it stores what
the technique keeps of each computed output, hands the answer the outputs it reads, and counts.

A new technique is one file: subclass :class:`Technique`, register an instance with
:func:`register_technique`, and name it in a schedule (``Schedule(rows, techniques={key:
name})``). Everything a technique computes per answer that the schedule fixes (the weights of a
forecast) is a constant made once when the schedule is applied, never per call: the per-call
path stays a dictionary read and one call, with no host sync and no recompilation.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

from smoothcache.errors import ArgumentError, ScheduleError

#: Answers a skipped step from the outputs it reads (oldest first); ``None`` answers with the
#: newest of them as it is (reuse), which the per-call path does without a call: under
#: ``torch.compile`` nothing is left to trace, and in eager mode nothing to pay.
Answer = Callable[[list[Any]], Any] | None


class Technique(ABC):
    """How a skipped step is answered from the branch's earlier computed outputs.

    A schedule's forecast order ``k`` at a step (0 without orders) makes the answer read the
    ``k + 1`` latest stored outputs; the engine stores an output only when a later answer reads
    it and drops it after its last read.
    """

    #: the name schedules use for it (``Schedule.techniques``)
    name: ClassVar[str]
    #: counted in :attr:`CacheStats.forecast <smoothcache.engine.stats.CacheStats.forecast>`
    #: (an answer that is not one of the stored outputs as it is)
    forecast: ClassVar[bool] = False
    #: what a computing step stores of its output (``None``: the output itself)
    keep: ClassVar[Callable[[Any], Any] | None] = None
    #: the answer holds tensors on the outputs' device: made per device and dtype when a step
    #: starts (else once per schedule, with ``newest=None``)
    device_bound: ClassVar[bool] = False
    #: its constants are the weights of the outputs read, so a schedule's fitted weights
    #: (``Schedule.weights``) replace them where it gives some
    takes_weights: ClassVar[bool] = False

    def constants(self, positions: tuple[int, ...], at: int) -> tuple[float, ...]:
        """Numbers of one answer that the schedule fixes, from the steps whose outputs it reads
        (oldest first) and the step it answers; made once per schedule. Default: none."""
        return ()

    @abstractmethod
    def answer(self, constants: tuple[float, ...], newest: Any) -> Answer:
        """The callable that answers with ``constants``, given the outputs read.

        Made once per distinct constants (and, for a :attr:`device_bound` technique, per
        device and dtype of ``newest``, the newest stored output), then called on every
        skipped call of that kind: keep it to a few tensor operations.
        """


#: Registered techniques by name.
TECHNIQUES: dict[str, Technique] = {}


def register_technique(technique: Technique) -> Technique:
    """Make ``technique`` available to schedules under its name; returns it (decorator use).

    Registering another technique under a taken name is an error: a schedule that names it
    must always mean one thing.
    """
    if not isinstance(technique, Technique):
        raise ArgumentError(
            f"a technique must be an instance of smoothcache.engine.Technique, found "
            f"{type(technique).__name__}; subclass Technique and register an instance"
        )
    name = getattr(technique, "name", None)
    if not isinstance(name, str) or not name:
        raise ArgumentError(
            f"technique {type(technique).__name__} has no name; set the class attribute "
            "`name` to the string schedules use for it"
        )
    taken = TECHNIQUES.get(name)
    if taken is not None and taken is not technique:
        raise ArgumentError(
            f"a technique named {name!r} is already registered ({type(taken).__name__}); "
            "choose another name"
        )
    TECHNIQUES[name] = technique
    return technique


def technique_named(name: str, key: str) -> Technique:
    """The registered technique ``name``, which the schedule names for ``key``."""
    found = TECHNIQUES.get(name)
    if found is None:
        raise ScheduleError(
            f"schedule key {key!r} names technique {name!r}, which is not registered (known: "
            f"{', '.join(sorted(TECHNIQUES))}); import the module that registers it, or use "
            "one of those"
        )
    return found
