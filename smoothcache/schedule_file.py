"""The schedule file format: this library's JSON object, and the original bare ``{key: list}``.

Version 1 has rows only, version 2 adds forecast orders, version 3 (written only when a
schedule names techniques) adds techniques, version 4 (written only when a schedule carries
fitted forecast weights) adds weights; every version still loads. Rows are written one per
line so that diffs stay readable.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smoothcache.errors import ScheduleError, ScheduleFileError
from smoothcache.jsonfile import parse_json

if TYPE_CHECKING:
    from smoothcache.schedule import Schedule

FORMAT_NAME = "smoothcache.schedule"
FORMAT_VERSION = 2
#: The version of a schedule that names techniques (written only then; others stay version 2).
TECHNIQUES_VERSION = 3
#: The version of a schedule with fitted forecast weights (written only then).
WEIGHTS_VERSION = 4
#: Format versions :func:`schedule_from_dict` reads (1 has no forecast orders, 2 no techniques,
#: 3 no fitted weights).
READABLE_VERSIONS = (1, 2, 3, 4)


def schedule_from_dict(cls: type[Schedule], data: Mapping[str, Any]) -> Schedule:
    """Build a ``cls`` from this library's JSON object or the original bare ``{key: list}``."""
    if not isinstance(data, Mapping):
        raise ScheduleError(
            f"a schedule must be a JSON object, found {type(data).__name__}; expected "
            '{"attn": [1, 0, ...]} or the object written by Schedule.save()'
        )
    if "schedule" not in data and "format" not in data:
        return cls(rows=data)
    if data.get("format") != FORMAT_NAME:
        raise ScheduleError(
            f"expected format {FORMAT_NAME!r}, found {data.get('format')!r}; "
            "is this a smoothcache schedule file?"
        )
    version = data.get("version")
    if type(version) is not int or version not in READABLE_VERSIONS:
        raise ScheduleError(
            f"schedule format version {version!r} is not supported (this library reads "
            f"versions {', '.join(map(str, READABLE_VERSIONS))}); upgrade smoothcache or "
            "re-create the schedule"
        )
    if version == 1 and "orders" in data:
        raise ScheduleError(
            "a version 1 schedule cannot carry forecast orders (they came with version 2); "
            'set "version": 2'
        )
    metadata = data.get("metadata", {})
    if not isinstance(metadata, Mapping):
        raise ScheduleError(
            f"schedule metadata must be a JSON object, found {type(metadata).__name__}; "
            "fix or remove it"
        )
    if version < TECHNIQUES_VERSION and "techniques" in data:
        raise ScheduleError(
            f"a version {version} schedule cannot name techniques (they came with version "
            f'{TECHNIQUES_VERSION}); set "version": {TECHNIQUES_VERSION}'
        )
    if version < WEIGHTS_VERSION and "weights" in data:
        raise ScheduleError(
            f"a version {version} schedule cannot carry fitted weights (they came with version "
            f'{WEIGHTS_VERSION}); set "version": {WEIGHTS_VERSION}'
        )
    schedule = cls(
        rows=data.get("schedule"),
        metadata=metadata,
        orders=data.get("orders"),
        techniques=data.get("techniques"),
        weights=data.get("weights"),
    )
    declared = data.get("num_steps")
    if declared is not None and declared != schedule.num_steps:
        raise ScheduleError(
            f"schedule declares num_steps={declared} but its rows have {schedule.num_steps} "
            "steps; the file is inconsistent, re-create it"
        )
    return schedule


def schedule_to_dict(schedule: Schedule) -> dict[str, Any]:
    """The JSON object :func:`write_schedule` writes: format, version, num_steps, rows,
    metadata, the forecast orders when any step forecasts, the techniques when any is named
    (only then version 3) and the fitted weights when there are any (only then version 4)."""
    version = TECHNIQUES_VERSION if schedule.techniques else FORMAT_VERSION
    data: dict[str, Any] = {
        "format": FORMAT_NAME,
        "version": WEIGHTS_VERSION if schedule.weights else version,
        "num_steps": schedule.num_steps,
        "schedule": {k: list(v) for k, v in schedule.rows.items()},
    }
    if schedule.orders:
        data["orders"] = {k: list(v) for k, v in schedule.orders.items()}
    if schedule.techniques:
        data["techniques"] = dict(schedule.techniques)
    if schedule.weights:
        data["weights"] = {k: [w and list(w) for w in v] for k, v in schedule.weights.items()}
    data["metadata"] = dict(schedule.metadata)
    return data


def read_schedule(cls: type[Schedule], path: str | Path) -> Schedule:
    """Read a schedule JSON file (this library's format or the original SmoothCache one)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ScheduleFileError(
            f"schedule file {str(path)!r} does not exist; check the path, or pass a shipped "
            "name (smoothcache.shipped_schedules() lists them)"
        ) from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte, undecodable text
        raise ScheduleFileError(f"cannot read schedule file {str(path)!r}: {exc}") from None
    try:
        data = parse_json(text)
    except json.JSONDecodeError as exc:
        raise ScheduleFileError(
            f"schedule file {str(path)!r} is not valid JSON ({exc.msg} at line {exc.lineno}, "
            f"column {exc.colno}); it may be truncated or corrupt: re-create or re-download it"
        ) from None
    except ValueError as exc:
        raise ScheduleFileError(
            f"schedule file {str(path)!r} is not a schedule: it holds {exc}"
        ) from None
    try:
        return schedule_from_dict(cls, data)
    except ScheduleError as exc:
        raise ScheduleFileError(f"schedule file {str(path)!r}: {exc}") from None


def write_schedule(schedule: Schedule, path: str | Path) -> None:
    """Write the schedule as JSON (rows one per line, so diffs stay readable)."""
    data = schedule_to_dict(schedule)
    tables = {name: data.pop(name) for name in ("schedule", "orders", "weights") if name in data}
    parts = [json.dumps(data, indent=2)[:-2]]  # without the closing "\n}"
    for name, table in tables.items():
        lines = [
            f"    {json.dumps(k)}: {json.dumps(v, separators=(',', ':'))}" for k, v in table.items()
        ]
        body = ",\n".join(lines)
        parts.append(f'  "{name}": {{\n{body}\n  }}')
    Path(path).write_text(",\n".join(parts) + "\n}\n", encoding="utf-8")
