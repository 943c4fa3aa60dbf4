"""The per-call path: the ``forward`` of every scheduled branch, and :func:`reused_output`.

Everything here runs on every branch call, so it only reads the module's state for the step
(:mod:`smoothcache.engine.state`), set once per evaluation by the session: one flag test, one
shape comparison, and either the technique's answer or the original forward. Counting, byte
accounting and choosing what a step reads happen per evaluation, in the session.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from smoothcache.engine.actions import NO_CLOCK, SKIP, STORE
from smoothcache.engine.outputs import input_shape
from smoothcache.errors import AdapterError

#: While a fast path's first call is checked (:mod:`smoothcache.engine.fastpath`), the input
#: shape each branch was asked about, by ``id(module)``; ``None`` otherwise, so the per-call
#: path pays one global read.
asked: dict[int, Any] | None = None


def branch_forward(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
    """The ``forward`` of every scheduled branch module, bound to it as an instance attribute.

    One function for all branches, with the state in the module's own attributes: under
    ``torch.compile`` a regionally compiled block then shares its graphs with every other block
    in the same step pattern.
    """
    state = self.__dict__  # plain dict access: nn.Module.__setattr__ costs microseconds
    if state["_sc_ran"]:
        raise called_twice(state["_sc_session"].path_of(self))
    state["_sc_ran"] = True
    action = state["_sc_action"]
    shape = getattr(args[0], "shape", None) if args else input_shape(args, kwargs)
    if action & SKIP:
        read = state["_sc_read"]  # chosen before the evaluation: [] if too few are stored
        if read and state["_sc_shape"] == shape:
            answer = state["_sc_answer"]  # None: reuse, the newest output as it is
            return read[-1] if answer is None else answer(read)
        state["_sc_fell_back"] = True  # compute: nothing stored, or from another input shape
        state["_sc_stored"] = []
    elif action & NO_CLOCK:
        raise no_clock(state["_sc_session"], self)
    output = state["_sc_original"](*args, **kwargs)
    if action & STORE:
        keep = state["_sc_keep"]
        kept = output if keep is None else keep(output)
        if state["_sc_shape"] == shape:  # the older outputs a later step reads are kept
            state["_sc_stored"] = [*state["_sc_stored"], kept]
        else:  # none, or computed from inputs of another shape
            state["_sc_stored"] = [kept]
        state["_sc_shape"] = shape
    return output


def reused_output(module: nn.Module, input_shape: Any) -> Any:
    """For adapter fast paths: the output to substitute for ``module`` at this step, else ``None``.

    A block forward that an adapter supplies (see :meth:`Adapter.fast_forwards`) calls this
    *before* preparing a branch's input, with the shape that input will have. When it returns
    an output (reused or forecast) the block skips the input preparation and the branch; when it
    returns ``None`` the block prepares the input and calls the branch module as usual, whose
    wrapper then computes (and counts a fallback if this was a skipped step). Unscheduled
    modules always get ``None``.
    """
    state = module.__dict__
    if asked is not None:  # a fast path's first call is being checked: keep what it asked
        asked[id(module)] = input_shape
    if state.get("_sc_action", 0) & SKIP:
        read = state["_sc_read"]
        if read and state["_sc_shape"] == input_shape:
            state["_sc_ran"] = True
            answer = state["_sc_answer"]
            return read[-1] if answer is None else answer(read)
    return None


def called_twice(path: str) -> AdapterError:
    """The error of a branch called twice in one evaluation."""
    return AdapterError(
        f"branch {path!r} was called twice in one model evaluation (feed-forward chunking, "
        "or a block that runs a branch per chunk or per modality?). One cached output "
        "cannot stand for several calls; turn that feature off (e.g. diffusers' "
        "disable_forward_chunking()) or leave this branch out of the schedule"
    )


def no_clock(session: Any, module: nn.Module) -> AdapterError:
    """The error of a branch that ran before the timestep source fired."""
    return AdapterError(
        f"adapter {session.adapter.name!r}: branch {session.path_of(module)!r} ran before the "
        f"timestep source {session.source_path or '<root>'!r} was called, so the step is "
        "unknown. "
        "The caller bypasses that module's __call__ (hooks do not fire); the adapter must "
        "name a module that is called through __call__ once per evaluation"
    )
