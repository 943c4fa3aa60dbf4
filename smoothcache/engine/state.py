"""The state the engine keeps on the modules it wraps, declared once.

The per-call path reads and writes this state in the module's own ``__dict__`` (plain dict
access; ``nn.Module.__setattr__`` costs microseconds), under names that start with ``_sc_`` so
that they can never meet a model's own attributes. One shared ``forward`` function serves every
branch, so under ``torch.compile`` a regionally compiled block shares its graphs with every
other block in the same step pattern: guards are on these values, never on per-block closures.

Every ``_sc_*`` name the engine uses is a key of one of the two tables below, with what it
holds; ``tests/test_architecture.py`` fails on a name used in the engine and missing here.
Installation sets each module's keys through :class:`~smoothcache.patching.Patches`, which
removes them exactly when the session ends.
"""

from __future__ import annotations

from typing import Any

from smoothcache.engine.actions import NO_CLOCK

#: The state of a wrapped branch module: name -> what it holds.
BRANCH_STATE: dict[str, str] = {
    "_sc_session": "the Session that wrapped the module (for its error messages)",
    "_sc_original": "the module's forward before wrapping: what a computing step calls",
    "_sc_action": "this step's flags (smoothcache.engine.actions), set once per evaluation",
    "_sc_answer": "this step's answer: a technique's callable of the outputs read (None: reuse)",
    "_sc_keep": "what a computing step stores of its output (None: the output itself)",
    "_sc_stored": "the latest stored outputs of the running pass, oldest first",
    "_sc_read": "the stored outputs this skipped step's answer reads ([]: too few, compute)",
    "_sc_shape": "the shape of the branch input the stored outputs were computed from",
    "_sc_fell_back": "a skipped step computed (outputs missing or another input shape)",
    "_sc_ran": "the branch ran in this evaluation (a second call is an adapter error)",
}

#: The state of a block whose forward an adapter's fast path replaces: name -> what it holds.
BLOCK_STATE: dict[str, str] = {
    "_sc_session": "the Session that installed the fast path (for its warning)",
    "_sc_fast": "the adapter's block forward, or the block's own once a check failed",
    "_sc_block_original": "the block's forward before wrapping",
    "_sc_branches": "the wrapped branch modules inside the block",
    "_sc_checked": "the fast path was checked against the block's own forward",
}


def initial_branch_state(session: Any, original: Any, keep: Any) -> dict[str, Any]:
    """A branch module's state when a session starts: no clock yet, nothing stored; ``keep``
    is what its technique stores of a computed output (``None``: the output itself)."""
    return {
        "_sc_session": session,
        "_sc_original": original,
        "_sc_action": NO_CLOCK,
        "_sc_answer": None,
        "_sc_keep": keep,
        "_sc_stored": [],
        "_sc_read": [],
        "_sc_shape": None,
        "_sc_fell_back": False,
        "_sc_ran": False,
    }


def cleared_branch_state() -> dict[str, Any]:
    """The keys a new generation resets: nothing stored, nothing read, no action loaded."""
    return {"_sc_stored": [], "_sc_read": [], "_sc_shape": None, "_sc_action": NO_CLOCK}
