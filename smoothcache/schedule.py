"""Static caching schedules: per branch kind (or block) and per step, compute, reuse or forecast.

A schedule maps a key to a list of 0/1 flags, one per denoising step: ``1`` computes the branch at
that step, ``0`` skips it. A key is a branch kind named by the model's adapter (``attn``,
``attn1``, ``spatial.cross_attn`` ...) or a kind with a block index (``attn1-3``), which overrides
the kind's row for that block only. A skipped step is answered by the branch's last computed
output (*reuse*, order 0) unless the schedule's ``orders`` give it a forecast order ``k`` (1 to
:data:`MAX_ORDER`): then the engine extrapolates from the branch's last ``k + 1`` computed outputs
with the polynomial of degree ``k`` through them (see :mod:`smoothcache.forecast`).

The original SmoothCache JSON (a bare ``{key: [0/1, ...]}`` dict) is a valid schedule file; this
library writes the same rows inside an object that also records the format version, the
forecast orders, the techniques and where the schedule came from
(:mod:`smoothcache.schedule_file`). A key's skipped steps may name another technique
(``techniques``), registered with :func:`smoothcache.engine.register_technique`. A forecast
step may carry its own weights (``weights``, fitted to calibration by
:func:`smoothcache.fit_forecasts`) instead of the Lagrange weights of its order.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from smoothcache.errors import ScheduleError
from smoothcache.jsonfile import parse_json
from smoothcache.registry import REGISTRY
from smoothcache.remap import remap_schedule
from smoothcache.schedule_file import (
    FORMAT_NAME as FORMAT_NAME,
)
from smoothcache.schedule_file import (
    FORMAT_VERSION as FORMAT_VERSION,
)
from smoothcache.schedule_file import (
    READABLE_VERSIONS as READABLE_VERSIONS,
)
from smoothcache.schedule_file import (
    read_schedule,
    schedule_from_dict,
    schedule_to_dict,
    write_schedule,
)
from smoothcache.schedule_rules import MAX_ORDER as MAX_ORDER  # part of this module's API
from smoothcache.schedule_rules import (
    check_order,
    parse_key,
    validate_orders,
    validate_rows,
    validate_techniques,
    validate_weights,
)

#: A key's fitted forecast weights: per step, ``None`` (Lagrange) or one weight per output read.
StepWeights = tuple[tuple[float, ...] | None, ...]


@dataclass(frozen=True)
class Schedule:
    """A validated static schedule.

    ``rows`` maps keys to per-step flags (1 compute, 0 skip); ``orders`` (optional) maps some of
    those keys to per-step forecast orders (0 reuses the last computed output at a skipped step,
    ``k`` in 1..:data:`MAX_ORDER` extrapolates from the last ``k + 1`` computed outputs);
    ``metadata`` records provenance (``alpha``, ``lookahead``, ``model``, ``solver`` ...);
    ``techniques`` (optional) names, for some keys, the technique that answers their skipped
    steps instead (see :mod:`smoothcache.engine.technique`); ``weights`` (optional) gives, for
    some keys and forecast steps, the weights of the ``k + 1`` outputs a forecast of order ``k``
    reads (oldest first) instead of the Lagrange weights (:mod:`smoothcache.fitting`).
    Construction validates everything that can be checked without a model;
    :func:`smoothcache.enabled` checks the keys against the model.
    """

    rows: Mapping[str, tuple[int, ...]]
    metadata: Mapping[str, Any] = field(default_factory=dict)
    orders: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    techniques: Mapping[str, str] = field(default_factory=dict)
    weights: Mapping[str, StepWeights] = field(default_factory=dict)

    def __post_init__(self) -> None:
        rows = validate_rows(self.rows)
        object.__setattr__(self, "rows", rows)
        object.__setattr__(self, "orders", validate_orders(self.orders, rows))
        object.__setattr__(self, "techniques", validate_techniques(self.techniques, rows))
        object.__setattr__(self, "weights", validate_weights(self.weights, rows, self.orders))
        object.__setattr__(self, "metadata", dict(self.metadata))

    @property
    def num_steps(self) -> int:
        """Number of denoising steps the schedule describes."""
        return len(next(iter(self.rows.values())))

    @property
    def compute_fraction(self) -> float:
        """Fraction of (row, step) entries that compute, over all rows of the schedule."""
        total = sum(len(v) for v in self.rows.values())
        return sum(sum(v) for v in self.rows.values()) / total

    @property
    def positions(self) -> tuple[float, ...] | None:
        """The sampler's timesteps the schedule was made for, one per step (metadata
        ``timesteps``, which calibration records), or ``None`` where it does not say."""
        recorded = self.metadata.get("timesteps")
        if not isinstance(recorded, (list, tuple)) or len(recorded) != self.num_steps:
            return None
        try:
            return tuple(float(t) for t in recorded)
        except (TypeError, ValueError):
            return None

    @property
    def forecasts(self) -> bool:
        """True when some skipped step is answered by a forecast (an order above 0)."""
        return bool(self.orders)

    def fingerprint(self) -> str:
        """A hex digest of what the schedule decides (its rows and orders, not its metadata).

        Two schedules with the same fingerprint skip and forecast exactly alike. Ranks of a
        distributed run must apply the same schedule (the library never communicates to check
        it): compare fingerprints with a collective of your own before generating, e.g.
        ``dist.all_gather_object``, as ``examples/multi_gpu.py`` does.
        """
        decided = {
            "rows": {k: list(v) for k, v in sorted(self.rows.items())},
            "orders": {k: list(v) for k, v in sorted(self.orders.items())},
        }
        if self.techniques:
            decided["techniques"] = dict(sorted(self.techniques.items()))
        if self.weights:
            decided["weights"] = {
                k: [w and list(w) for w in v] for k, v in sorted(self.weights.items())
            }
        return hashlib.sha256(json.dumps(decided, sort_keys=True).encode()).hexdigest()

    def renamed(self, kinds: Mapping[str, str]) -> Schedule:
        """This schedule with the kinds of its keys renamed by ``kinds`` (others unchanged).

        Raises :class:`ScheduleError` when two keys would become one (``attn`` and ``attn1``
        both present when ``attn`` is renamed to ``attn1``).
        """
        return _renamed(self, kinds)

    def remapped(
        self,
        num_steps: int | None = None,
        *,
        positions: Sequence[float] | None = None,
        start: int = 0,
    ) -> Schedule:
        """This schedule mapped to a run of other steps, keeping each row's compute share.

        ``num_steps``: a run of that many steps along the same path (the sampler's spacing
        alike, e.g. DDIM 50 to DDIM 20, or FLUX at 50 to 28 steps); with ``start`` only its steps
        from ``start`` on (image-to-image at ``strength < 1`` runs the last ones). ``positions``:
        the run's own timesteps, mapped through the timesteps this schedule records
        (:attr:`positions`). Each row computes the same share of the new steps, where the
        source computed densely; forecast orders follow the nearest skipped step, with the
        Lagrange weights of the new steps (fitted weights belong to the steps they were fitted
        at and are dropped; the metadata says so). The result's
        metadata says what it was mapped from (:mod:`smoothcache.remap`). Mapping is never done
        silently: a run of another step count under :func:`smoothcache.enabled` raises
        :class:`~smoothcache.StepCountError` unless ``remap=True`` is passed there.
        """
        return remap_schedule(self, num_steps, positions, start)

    def key_for(self, kind: str, block: int) -> str | None:
        """The key whose row applies to one branch: its per-block key, else its kind, else None."""
        key = f"{kind}-{block}"
        if key in self.rows:
            return key
        return kind if kind in self.rows else None

    def row_for(self, kind: str, block: int) -> tuple[int, ...] | None:
        """The flags for one branch: its per-block row if any, else its kind's row, else None."""
        key = self.key_for(kind, block)
        return None if key is None else self.rows[key]

    def orders_for(self, kind: str, block: int) -> tuple[int, ...] | None:
        """The forecast orders of the row that applies to one branch (``None``: reuse only)."""
        key = self.key_for(kind, block)
        return None if key is None else self.orders.get(key)

    def weights_for(self, kind: str, block: int) -> StepWeights | None:
        """The fitted forecast weights of the row that applies to one branch (``None``: the
        Lagrange weights everywhere)."""
        key = self.key_for(kind, block)
        return None if key is None else self.weights.get(key)

    def technique_for(self, kind: str, block: int) -> str | None:
        """The technique named for the row that applies to one branch (``None``: the default,
        reuse or forecast by its orders)."""
        key = self.key_for(kind, block)
        return None if key is None else self.techniques.get(key)

    # -- conversion -------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Schedule:
        """Build a schedule from this library's JSON object or the original bare ``{key: list}``."""
        return schedule_from_dict(cls, data)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object :meth:`save` writes: format, version, num_steps, rows, metadata, and
        the forecast orders and techniques when there are any."""
        return schedule_to_dict(self)

    @classmethod
    def load(cls, path: str | Path) -> Schedule:
        """Read a schedule JSON file (this library's format or the original SmoothCache one)."""
        return read_schedule(cls, path)

    def save(self, path: str | Path) -> None:
        """Write the schedule as JSON (rows one per line, so diffs stay readable)."""
        write_schedule(self, path)

    # -- constructors -----------------------------------------------------------------------

    @classmethod
    def uniform(
        cls,
        num_steps: int,
        every: int,
        kinds: Iterable[str] | None = None,
        order: int = 0,
        *,
        model: Any = None,
    ) -> Schedule:
        """FORA-style baseline: compute every ``every``-th step, the first and last always.

        The rows are the branch ``kinds`` given, or those the adapter of ``model`` (a denoiser
        or a pipeline) finds in it. ``order`` > 0 forecasts the skipped steps with that order
        instead of reusing (lower where fewer computed steps precede a skipped one), like
        diffusers' TaylorSeer at a fixed interval.
        """
        check_order(order)
        if not isinstance(num_steps, int) or num_steps < 1:
            raise ScheduleError(f"num_steps must be a positive integer, found {num_steps!r}")
        if not isinstance(every, int) or every < 1:
            raise ScheduleError(f"every must be a positive integer, found {every!r}")
        if (kinds is None) == (model is None):
            raise ScheduleError(
                "Schedule.uniform needs exactly one of kinds= (e.g. ['attn', 'mlp']) or "
                "model= (the model or pipeline whose branch kinds to use)"
            )
        if model is not None:
            kinds = REGISTRY.kinds_of(model)
        elif not isinstance(kinds, (str, bytes)):
            kinds = list(kinds or ())
        if isinstance(kinds, (str, bytes)) or not kinds or any(type(k) is not str for k in kinds):
            raise ScheduleError(
                f"Schedule.uniform needs branch kinds as strings, e.g. ['attn', 'mlp'], found "
                f"{kinds!r}; or pass model= to take them from the model's adapter"
            )
        row = [1 if i % every == 0 or i == num_steps - 1 else 0 for i in range(num_steps)]
        schedule = cls(rows={k: row for k in kinds}, metadata={"method": "fora", "every": every})
        return schedule.forecasting(order)

    def forecasting(self, order: int) -> Schedule:
        """This schedule with every skipped step forecast with ``order`` (0: reuse), with the
        Lagrange weights (fitted weights, fitted for other orders, are not kept).

        Where fewer than ``order + 1`` steps of a row computed before a skipped step, that step
        forecasts with the highest order they allow (reuse after the first computed step).
        """
        check_order(order)
        if not order:
            return Schedule(self.rows, self.metadata)
        orders = {}
        for key, row in self.rows.items():
            before = itertools.accumulate(row, initial=0)  # computed steps before each step
            orders[key] = [0 if flag else min(order, done - 1) for flag, done in zip(row, before)]
        return Schedule(self.rows, {**self.metadata, "order": order}, orders)

    @classmethod
    def shipped(cls, name: str) -> Schedule:
        """Load a schedule shipped with the package, by a name :func:`shipped_schedules` lists."""
        index = _shipped_index()
        if name not in index:
            known = "\n  ".join(sorted(index)) or "(none)"
            raise ScheduleError(
                f"no shipped schedule is named {name!r}; the shipped ones are:\n  {known}"
            )
        entry = index[name]
        text = resources.files("smoothcache.schedules").joinpath(entry["file"]).read_text("utf-8")
        schedule = cls.from_dict(parse_json(text))
        meta = {k: v for k, v in entry.items() if k != "file"}
        return cls(
            rows=schedule.rows,
            metadata={**meta, **schedule.metadata, "name": name},
            orders=schedule.orders,
            weights=schedule.weights,
        )

    def __repr__(self) -> str:
        keys = ", ".join(self.rows)
        forecast = f", forecast_keys=[{', '.join(self.orders)}]" if self.orders else ""
        fitted = f", fitted_keys=[{', '.join(self.weights)}]" if self.weights else ""
        return (
            f"Schedule(num_steps={self.num_steps}, keys=[{keys}], "
            f"compute_fraction={self.compute_fraction:.3f}{forecast}{fitted})"
        )


def _renamed(schedule: Schedule, kinds: Mapping[str, str]) -> Schedule:
    """What :meth:`Schedule.renamed` returns."""
    names: dict[str, str] = {}
    for key in schedule.rows:
        kind, block = parse_key(key)
        new_kind = kinds.get(kind, kind)
        new = new_kind if block is None else f"{new_kind}-{block}"
        if new in names.values():
            first = next(k for k, v in names.items() if v == new)
            raise ScheduleError(
                f"schedule keys {first!r} and {key!r} both mean {new!r} for this model "
                f"({', '.join(f'{a} = {b}' for a, b in kinds.items())}); keep one of them"
            )
        names[key] = new
    if all(k == v for k, v in names.items()):
        return schedule
    renamed = {k: v for k, v in names.items() if k != v}
    return Schedule(
        {names[k]: v for k, v in schedule.rows.items()},
        {**schedule.metadata, "renamed_keys": renamed},
        {names[k]: v for k, v in schedule.orders.items()},
        {names[k]: v for k, v in schedule.techniques.items()},
        {names[k]: v for k, v in schedule.weights.items()},
    )


def _shipped_index() -> dict[str, dict[str, Any]]:
    """The index of shipped schedules (``schedules/index.json``)."""
    text = resources.files("smoothcache.schedules").joinpath("index.json").read_text("utf-8")
    return parse_json(text)


def shipped_schedules() -> list[str]:
    """Names of the schedules shipped with the package, for :meth:`Schedule.shipped`."""
    return sorted(_shipped_index())


def as_schedule(schedule: Schedule | Mapping[str, Any] | str | Path) -> Schedule:
    """Accept a Schedule, a dict, a path to a JSON file or a shipped name, and return a Schedule."""
    if isinstance(schedule, Schedule):
        return schedule
    if isinstance(schedule, Mapping):
        return Schedule.from_dict(schedule)
    if isinstance(schedule, Path):
        return Schedule.load(schedule)
    if isinstance(schedule, str):
        if schedule.endswith(".json") or Path(schedule).exists():
            return Schedule.load(schedule)
        return Schedule.shipped(schedule)
    raise ScheduleError(
        f"expected a Schedule, a dict, a path to a JSON file or a shipped schedule name, "
        f"found {type(schedule).__name__}"
    )
