"""The rules of a schedule's tables: keys, rows of 0/1 flags, forecast orders, techniques.

:class:`~smoothcache.schedule.Schedule` runs these on construction, so every schedule in memory
is valid whatever it was made from (a dict, a file, a search); errors name the key, the step
and what to do.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

from smoothcache.errors import ScheduleError

#: The highest forecast order a schedule may ask for (order 0 is reuse).
MAX_ORDER = 3

#: ``kind`` or ``kind-<block>``, ASCII only and the block written one way (no leading zero):
#: ``\d`` would also take other scripts' digits ("attn-\u0661" read as block 1), and "attn-01"
#: would be block 1 to some checks and no block's key to others.
_KEY_RE = re.compile(r"(?P<kind>[A-Za-z_][A-Za-z0-9_.]*?)(?:-(?P<block>0|[1-9][0-9]*))?", re.ASCII)


def parse_key(key: str) -> tuple[str, int | None]:
    """Split a schedule key into ``(kind, block)``; ``block`` is ``None`` for a per-kind key.

    Raises :class:`ScheduleError` for a key that is neither ``kind`` nor ``kind-<index>``.
    """
    match = _KEY_RE.fullmatch(key) if isinstance(key, str) else None
    if match is None:
        raise ScheduleError(
            f"schedule key {key!r} is not a branch kind ('attn1') or a kind with a block index "
            "('attn1-3'; ASCII letters, digits, '_' and '.', the block without leading zeros); "
            "rename it to one of the kinds the model's adapter declares"
        )
    block = match.group("block")
    return match.group("kind"), None if block is None else int(block)


def validate_rows(rows: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """Check the rows of a schedule and return them as tuples of ints."""
    if not isinstance(rows, Mapping) or not rows:
        raise ScheduleError(
            f"a schedule needs at least one row {{key: [1, 0, ...]}}, found {type(rows).__name__} "
            f"{rows!r:.80}; build one with Schedule.uniform(...) or load a schedule file"
        )
    clean: dict[str, tuple[int, ...]] = {}
    length: int | None = None
    first_key = ""
    for key, values in rows.items():
        parse_key(key)
        if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
            raise ScheduleError(
                f"schedule row {key!r} must be a list of 0/1 flags, found {type(values).__name__}"
            )
        values = list(values)
        bad = [v for v in values if type(v) is not int or v not in (0, 1)]
        if bad:
            raise ScheduleError(
                f"schedule row {key!r} may hold only 0 (reuse) and 1 (compute), found {bad[0]!r}; "
                "fix that entry"
            )
        if not values:
            raise ScheduleError(f"schedule row {key!r} is empty; it needs one flag per step")
        if length is None:
            length, first_key = len(values), key
        elif len(values) != length:
            raise ScheduleError(
                f"schedule row {key!r} has {len(values)} steps but row {first_key!r} has {length}; "
                "every row needs one flag per denoising step"
            )
        if values[0] != 1:
            raise ScheduleError(
                f"schedule row {key!r} reuses at step 0, where nothing has been computed yet; "
                "set its first flag to 1"
            )
        clean[key] = tuple(values)
    return clean


def validate_orders(
    orders: Mapping[str, Any] | None, rows: Mapping[str, tuple[int, ...]]
) -> dict[str, tuple[int, ...]]:
    """Check a schedule's forecast orders against its rows; all-zero rows are dropped.

    Every key must have a row; every list one entry per step; an order ``k > 0`` only at a
    skipped step with at least ``k + 1`` computed steps before it (the points the forecast
    extrapolates from). Errors name the key and the step.
    """
    orders = _per_key_table(orders, rows, "orders", "[0, 0, 1, ...]", "plain reuse")
    clean: dict[str, tuple[int, ...]] = {}
    for key, values in orders.items():
        row = rows[key]
        values = _per_step(
            key,
            values,
            len(row),
            "orders",
            f"integers 0..{MAX_ORDER}",
            "0 where the step computes or reuses",
        )
        computed = 0
        for step, (flag, order) in enumerate(zip(row, values)):
            if type(order) is not int or not 0 <= order <= MAX_ORDER:
                raise ScheduleError(
                    f"orders of {key!r} at step {step}: expected an integer 0..{MAX_ORDER} "
                    f"(0 reuses, k > 0 forecasts with a polynomial of degree k), found {order!r}"
                )
            if order and flag:
                raise ScheduleError(
                    f"orders of {key!r} at step {step}: order {order} at a step that computes; "
                    "a forecast order applies only where the row skips (0), set it to 0"
                )
            if order > computed - 1 and not flag:
                raise ScheduleError(
                    f"orders of {key!r} at step {step}: a forecast of order {order} needs "
                    f"{order + 1} computed steps before it, the row has {computed}; lower the "
                    "order or compute more steps first"
                )
            computed += flag
        if any(values):
            clean[key] = tuple(values)
    return clean


def validate_weights(
    weights: Mapping[str, Any] | None,
    rows: Mapping[str, tuple[int, ...]],
    orders: Mapping[str, tuple[int, ...]],
) -> dict[str, tuple[tuple[float, ...] | None, ...]]:
    """Check a schedule's fitted forecast weights against its rows and orders.

    Per key, one entry per step: ``None`` (the Lagrange weights of the step's order, reuse at
    order 0) or, at a skipped step of order ``k >= 1``, ``k + 1`` finite numbers that weigh the
    ``k + 1`` outputs the forecast reads, oldest first. Rows whose entries are all ``None`` are
    dropped. Errors name the key and the step.
    """
    weights = _per_key_table(weights, rows, "weights", "[null, [w0, w1], ...]", "Lagrange weights")
    clean: dict[str, tuple[tuple[float, ...] | None, ...]] = {}
    for key, values in weights.items():
        key_orders = orders.get(key, (0,) * len(rows[key]))
        values = _per_step(
            key,
            values,
            len(key_orders),
            "weights",
            "entries (null or a list of numbers)",
            "null where none is fitted",
        )
        entries = [
            _weight_entry(key, step, v, k) for step, (v, k) in enumerate(zip(values, key_orders))
        ]
        if any(e is not None for e in entries):
            clean[key] = tuple(entries)
    return clean


def _weight_entry(key: str, step: int, value: Any, order: int) -> tuple[float, ...] | None:
    """One step's fitted weights, checked against the step's forecast order."""
    if value is None:
        return None
    if not order:
        raise ScheduleError(
            f"weights of {key!r} at step {step}: fitted weights need a forecast (order >= 1) "
            "at that step, which computes or reuses; set the entry to null"
        )
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise ScheduleError(
            f"weights of {key!r} at step {step}: expected a list of {order + 1} numbers, found "
            f"{type(value).__name__}"
        )
    items = list(value)
    numbers = [float(v) for v in items if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if (
        len(numbers) != len(items)
        or len(items) != order + 1
        or not all(map(math.isfinite, numbers))
    ):
        raise ScheduleError(
            f"weights of {key!r} at step {step}: a forecast of order {order} weighs {order + 1} "
            f"outputs, so it needs {order + 1} finite numbers, found {items!r:.80}"
        )
    return tuple(numbers)


def _per_step(key: str, values: Any, steps: int, what: str, items: str, rest: str) -> list[Any]:
    """A key's per-step table (``orders``, ``weights``) as a list of one entry per step."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise ScheduleError(
            f"{what} of {key!r} must be a list of {items}, one per step, found "
            f"{type(values).__name__}"
        )
    values = list(values)
    if len(values) != steps:
        raise ScheduleError(
            f"{what} of {key!r} have {len(values)} entries but its row has {steps} steps; "
            f"give one entry per step ({rest})"
        )
    return values


def check_order(order: Any) -> None:
    if isinstance(order, bool) or not isinstance(order, int) or not 0 <= order <= MAX_ORDER:
        raise ScheduleError(f"order must be an integer 0..{MAX_ORDER}, found {order!r}")


def validate_techniques(
    techniques: Mapping[str, Any] | None, rows: Mapping[str, tuple[int, ...]]
) -> dict[str, str]:
    """Check which technique answers the skipped steps of each key (a name registered with
    :func:`smoothcache.engine.register_technique`; the engine checks the name when the schedule
    is applied). Keys without one reuse, or forecast where the orders say so."""
    techniques = _per_key_table(techniques, rows, "techniques", "name", "reuse and forecasts")
    for key, name in techniques.items():
        if not isinstance(name, str) or not name:
            raise ScheduleError(
                f"the technique of {key!r} must be a technique's name (a string such as "
                f"'forecast'), found {name!r}"
            )
    return dict(techniques)


def _per_key_table(
    table: Mapping[str, Any] | None, rows: Mapping[str, Any], what: str, item: str, default: str
) -> Mapping[str, Any]:
    """A schedule's optional per-key table (``orders``, ``techniques``), checked to be an object
    whose keys all have rows; empty when absent."""
    if table is None:
        return {}
    if not isinstance(table, Mapping):
        raise ScheduleError(
            f"schedule {what} must be an object {{key: {item}}}, found "
            f"{type(table).__name__}; leave them out for {default}"
        )
    for key in table:
        if key not in rows:
            singular = {"techniques": "its technique"}.get(what, f"its {what}")
            raise ScheduleError(
                f"schedule {what} name key {key!r}, which has no row; give {key!r} a row of "
                f"0/1 flags or remove {singular}"
            )
    return table
