"""Schedule searches, one per file, behind one interface (:class:`~.base.Search`).

:meth:`smoothcache.ErrorCurves.schedule` looks ``method`` up in :data:`METHODS` and hands the
curves and the caller's ``alpha``, ``compute_fraction`` and ``per_block`` to that search:

- ``"paper"``: the SmoothCache paper's threshold rule (:mod:`.paper`);
- ``"sensitivity"``: least predicted error of the final output for a budget (:mod:`.sensitivity`);
- ``"forecast"``: compute, reuse or forecast, for a budget (:mod:`.forecast`).

A new search is a new file here and one entry in :data:`METHODS` (docs/design.md).
"""

from __future__ import annotations

from smoothcache.searches.base import Search
from smoothcache.searches.forecast import forecast_search
from smoothcache.searches.paper import paper_search
from smoothcache.searches.sensitivity import sensitivity_search

#: Method name -> search, in the order the CLI and error messages list them.
METHODS: dict[str, Search] = {
    "paper": paper_search,
    "sensitivity": sensitivity_search,
    "forecast": forecast_search,
}
