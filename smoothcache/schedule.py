"""Static caching schedules: per branch kind (or block) and per step, compute or reuse.

A schedule maps a key to a list of 0/1 flags, one per denoising step: ``1`` computes the branch at
that step, ``0`` reuses the output computed last. A key is a branch kind named by the model's
adapter (``attn``, ``attn1``, ``spatial.cross_attn`` ...) or a kind with a block index
(``attn1-3``), which overrides the kind's row for that block only. The original SmoothCache JSON
(a bare ``{key: [0/1, ...]}`` dict) is a valid schedule file; this library writes the same rows
inside an object that also records the format version and where the schedule came from.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from smoothcache.errors import ScheduleError, ScheduleFileError

FORMAT_NAME = "smoothcache.schedule"
FORMAT_VERSION = 1

_KEY_RE = re.compile(r"^(?P<kind>[A-Za-z_][A-Za-z0-9_.]*?)(?:-(?P<block>\d+))?$")


def parse_key(key: str) -> tuple[str, int | None]:
    """Split a schedule key into ``(kind, block)``; ``block`` is ``None`` for a per-kind key.

    Raises :class:`ScheduleError` for a key that is neither ``kind`` nor ``kind-<index>``.
    """
    match = _KEY_RE.match(key) if isinstance(key, str) else None
    if match is None:
        raise ScheduleError(
            f"schedule key {key!r} is not a branch kind ('attn1') or a kind with a block index "
            "('attn1-3'); rename it to one of the kinds the model's adapter declares"
        )
    block = match.group("block")
    return match.group("kind"), None if block is None else int(block)


def _validate_rows(rows: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
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


@dataclass(frozen=True)
class Schedule:
    """A validated static schedule.

    ``rows`` maps keys to per-step flags (1 compute, 0 reuse); ``metadata`` records provenance
    (``alpha``, ``lookahead``, ``model``, ``solver`` ...). Construction validates everything that
    can be checked without a model; :func:`smoothcache.enabled` checks the keys against the model.
    """

    rows: Mapping[str, tuple[int, ...]]
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "rows", _validate_rows(self.rows))
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

    def row_for(self, kind: str, block: int) -> tuple[int, ...] | None:
        """The flags for one branch: its per-block row if any, else its kind's row, else None."""
        row = self.rows.get(f"{kind}-{block}")
        return row if row is not None else self.rows.get(kind)

    # -- conversion -------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Schedule:
        """Build a schedule from this library's JSON object or the original bare ``{key: list}``."""
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
        if version != FORMAT_VERSION:
            raise ScheduleError(
                f"schedule format version {version!r} is not supported (this library reads "
                f"version {FORMAT_VERSION}); upgrade smoothcache or re-create the schedule"
            )
        schedule = cls(rows=data.get("schedule"), metadata=data.get("metadata") or {})
        declared = data.get("num_steps")
        if declared is not None and declared != schedule.num_steps:
            raise ScheduleError(
                f"schedule declares num_steps={declared} but its rows have {schedule.num_steps} "
                "steps; the file is inconsistent, re-create it"
            )
        return schedule

    def to_dict(self) -> dict[str, Any]:
        """The JSON object :meth:`save` writes (format, version, num_steps, rows, metadata)."""
        return {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "num_steps": self.num_steps,
            "schedule": {k: list(v) for k, v in self.rows.items()},
            "metadata": dict(self.metadata),
        }

    @classmethod
    def load(cls, path: str | Path) -> Schedule:
        """Read a schedule JSON file (this library's format or the original SmoothCache one)."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ScheduleFileError(
                f"schedule file {str(path)!r} does not exist; check the path, or pass a shipped "
                "name (smoothcache.shipped_schedules() lists them)"
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ScheduleFileError(f"cannot read schedule file {str(path)!r}: {exc}") from exc
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ScheduleFileError(
                f"schedule file {str(path)!r} is not valid JSON ({exc.msg} at line {exc.lineno}, "
                f"column {exc.colno}); it may be truncated or corrupt: re-create or re-download it"
            ) from None
        try:
            return cls.from_dict(data)
        except ScheduleError as exc:
            raise ScheduleFileError(f"schedule file {str(path)!r}: {exc}") from None

    def save(self, path: str | Path) -> None:
        """Write the schedule as JSON (rows one per line, so diffs stay readable)."""
        data = self.to_dict()
        rows = data.pop("schedule")
        lines = [
            f"    {json.dumps(k)}: {json.dumps(v, separators=(',', ':'))}" for k, v in rows.items()
        ]
        head = json.dumps(data, indent=2)[:-2]  # without the closing "\n}"
        body = ",\n".join(lines)
        Path(path).write_text(f'{head},\n  "schedule": {{\n{body}\n  }}\n}}\n', encoding="utf-8")

    # -- constructors -----------------------------------------------------------------------

    @classmethod
    def uniform(cls, num_steps: int, every: int, kinds: Iterable[str]) -> Schedule:
        """FORA-style baseline: compute every ``every``-th step, the first and last always."""
        if not isinstance(num_steps, int) or num_steps < 1:
            raise ScheduleError(f"num_steps must be a positive integer, found {num_steps!r}")
        if not isinstance(every, int) or every < 1:
            raise ScheduleError(f"every must be a positive integer, found {every!r}")
        kinds = list(kinds)
        if not kinds:
            raise ScheduleError("Schedule.uniform needs at least one kind, e.g. ['attn', 'mlp']")
        row = [1 if i % every == 0 or i == num_steps - 1 else 0 for i in range(num_steps)]
        return cls(rows={k: row for k in kinds}, metadata={"method": "fora", "every": every})

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
        schedule = cls.from_dict(json.loads(text))
        meta = {k: v for k, v in entry.items() if k != "file"}
        return cls(rows=schedule.rows, metadata={**meta, **schedule.metadata, "name": name})

    def __repr__(self) -> str:
        keys = ", ".join(self.rows)
        return (
            f"Schedule(num_steps={self.num_steps}, keys=[{keys}], "
            f"compute_fraction={self.compute_fraction:.3f})"
        )


def _shipped_index() -> dict[str, dict[str, Any]]:
    """The index of shipped schedules (``schedules/index.json``)."""
    text = resources.files("smoothcache.schedules").joinpath("index.json").read_text("utf-8")
    return json.loads(text)


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
