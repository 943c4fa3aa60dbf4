"""Schedule searches, one per file, behind one interface (:class:`~.base.Search`).

:meth:`smoothcache.ErrorCurves.schedule` looks ``method`` up in :data:`METHODS` and hands the
curves and the caller's ``alpha``, ``compute_fraction`` and ``per_block`` to that search:

- ``"paper"``: the SmoothCache paper's threshold rule (:mod:`.paper`), for an ``alpha`` or a
  ``compute_fraction`` (the alpha whose schedule computes the largest share not above it is
  searched among the curves' error values); ``per_block=False`` pools the blocks of a kind
  into one row, as the paper does;
- ``"sensitivity"``: the schedule of least predicted error of the final output within a
  ``compute_fraction`` (:mod:`.sensitivity`); it needs the curves' sensitivity
  (:func:`smoothcache.measure_sensitivity`), measured per block for ``per_block=True``;
- ``"forecast"``: for a ``compute_fraction``, which steps compute and, for every skipped step
  and kind (or block), reuse or a forecast of which order (:mod:`.forecast`); it needs the
  curves' forecast errors (recorded by default), and a sensitivity, if the curves carry one,
  weighs the steps;
- ``"fitted"``: the ``"forecast"`` search with every forecast's weights fitted to the
  calibration outputs instead of Lagrange's (:mod:`smoothcache.fitting`): scored so, and
  carried by the schedule; it needs curves recorded with the outputs' inner products.

A new search is a new file here and one entry in :data:`METHODS` (docs/design.md).
"""

from __future__ import annotations

from smoothcache.searches.base import Search
from smoothcache.searches.forecast import fitted_search, forecast_search
from smoothcache.searches.paper import paper_search
from smoothcache.searches.sensitivity import sensitivity_search

#: Method name -> search, in the order the CLI and error messages list them.
METHODS: dict[str, Search] = {
    "paper": paper_search,
    "sensitivity": sensitivity_search,
    "forecast": forecast_search,
    "fitted": fitted_search,
}
