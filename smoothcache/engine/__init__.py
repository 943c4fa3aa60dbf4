"""The caching engine: applies a static schedule to a model and answers skipped branch calls.

PyTorch hooks cannot skip a module's work (a pre-hook only changes inputs, a forward hook runs
after the work), so each scheduled branch module gets a small ``forward`` wrapper as an
instance attribute. On a skipped step the wrapper answers with a *technique* (reuse, forecast,
a group member's stand-in) from the outputs the branch stored, without calling the original.
Every decision is a lookup in a table built once from the schedule. The rooms, in the order a
call meets them (docs/design.md draws the map):

- :mod:`~smoothcache.engine.api`: :func:`enable` and :func:`enabled`;
- :mod:`~smoothcache.engine.session`: installation, the per-evaluation selection, the lifecycle;
- :mod:`~smoothcache.engine.plans` and :mod:`~smoothcache.engine.actions`: the action table;
- :mod:`~smoothcache.engine.hotpath`: the per-call wrapper and :func:`reused_output`;
- :mod:`~smoothcache.engine.fastpath`: adapter block forwards, checked before they are trusted;
- :mod:`~smoothcache.engine.store` and :mod:`~smoothcache.engine.stats`: stored outputs,
  bytes and counts;
- :mod:`~smoothcache.engine.technique`: the technique interface and registry, with one file per
  technique (:mod:`~smoothcache.engine.reuse`, :mod:`~smoothcache.engine.forecast`,
  :mod:`~smoothcache.engine.standin`, :mod:`~smoothcache.engine.lowprecision`);
- :mod:`~smoothcache.engine.state`: the ``_sc_*`` state the engine keeps on modules.
"""

from __future__ import annotations

from smoothcache.engine.actions import actions_for
from smoothcache.engine.api import enable, enabled
from smoothcache.engine.hotpath import reused_output
from smoothcache.engine.lowprecision import low_precision
from smoothcache.engine.session import Session
from smoothcache.engine.stats import CacheStats
from smoothcache.engine.technique import TECHNIQUES, Technique, register_technique

__all__ = [
    "TECHNIQUES",
    "CacheStats",
    "Session",
    "Technique",
    "actions_for",
    "enable",
    "enabled",
    "low_precision",
    "register_technique",
    "reused_output",
]
