"""The Markdown tables of a quality page: every row, the targets, the spread over calibration
seeds and the library against each peer's held-out choice."""

from __future__ import annotations

import math
from typing import Any

from benchmarks.common.scoring import FLOOR

_CHOSEN = "✓"


def _db(value: float) -> str:
    return "inf" if math.isinf(value) else f"{value:.1f}"


def _seed(value: int | None) -> str:
    return "" if value is None else str(value)


def markdown_table(table: list[dict[str, Any]], clock: str) -> list[str]:
    """The rows as a Markdown table; with CPU-time latency, the wall-clock speedup beside it.

    ``cal. seed`` is the calibration seed of a row that calibrates; ``chosen for`` the target
    budgets at which the row is its family's held-out choice.
    """
    wall = clock == "cpu"
    lines = [
        "| method | setting | cal. seed | chosen for | branch-steps computed | latency (s) | "
        "speedup | "
        + ("wall-clock speedup | " if wall else "")
        + "batch PSNR (dB) | 90% interval | median sample PSNR | worst sample PSNR | rel L2 | "
        "accuracy | FD | C2ST |",
        "|---|---|---:|---|---:|---:|---:|"
        + ("---:|" if wall else "")
        + "---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in table:
        if r["psnr"] is None:
            quality, spread, median, worst = "(reference)", "", "", ""
        else:
            quality, spread = f"{r['psnr']:.2f}", f"{_db(r['low'])} to {_db(r['high'])}"
            median, worst = _db(r["median_psnr"]), _db(r["worst_psnr"])
        differs = abs(r["timing_computed"] - r["computed"]) > 0.0005
        mark = f" († {r['timing_computed']:.1%})" if differs else ""
        extra = f"{r['wall_speedup']:.2f}x | " if wall else ""
        chosen = ", ".join(f"{b:.0%}" for b in r["chosen"])
        lines.append(
            f"| {r['family']} | {r['setting']} | {_seed(r['calibration_seed'])} | {chosen} | "
            f"{r['computed']:.1%}{mark} | {r['latency']:.2f} | "
            f"{r['speedup']:.2f}x | {extra}{quality} | {spread} | {median} | "
            f"{worst} | {r['rel_l2']:.4f} | {r['accuracy']:.1%} | {r['fd']:.2f} | "
            f"{r['c2st']:.1%} |"
        )
    return lines


def _peer_name(entry: dict[str, Any]) -> str:
    return f"{entry['family']} {entry['setting']} ({entry['computed']:.1%}, {entry['psnr']:.2f})"


def targets_table(lines: list[dict[str, Any]], floor: bool) -> list[str]:
    """The forecast rows (and targets without one) against the peer envelope of their
    calibration seed, as Markdown. ``floor``: a column for the lower bound > :data:`FLOOR`."""
    extra = f" | lower bound > {FLOOR:g} dB" if floor else ""
    out = [
        "| target | cal. seed | forecast row | computed | batch PSNR (dB) | peer envelope (dB, "
        "90% interval) | envelope from | margin (dB) | margin 90% interval | lower bound > 0"
        + extra
        + " |",
        "|---|---:|---|---:|---:|---|---|---:|---|---" + ("|---" if floor else "") + "|",
    ]
    for line in lines:
        target = "" if line["target"] is None else f"{line['target']:.0%}"
        low, high = line["envelope_interval"]
        envelope = f"{line['envelope']:.2f} ({low:.2f} to {high:.2f})"
        spanned = " to ".join(_peer_name(p) for p in line["spanned"])
        if line["clipped"]:
            spanned += " (left of every peer: read at the leftmost)"
        row = line["row"]
        if row is None:
            cells = ["(none)", f"{line['computed']:.1%}", "", envelope, spanned, "", ""]
            checks = ["", ""]
        else:
            m_low, m_high = line["interval"]
            cells = [
                f"{row['family']}, {row['setting']}",
                f"{row['computed']:.1%}",
                f"{row['psnr']:.2f}",
                envelope,
                spanned,
                f"{line['margin']:+.2f}",
                f"{m_low:+.2f} to {m_high:+.2f}",
            ]
            checks = ["**yes**" if m_low > 0 else "no", "**yes**" if m_low > FLOOR else "no"]
        if not floor:
            checks = checks[:1]
        if line["target"] is None:
            checks = ["" for _ in checks]
        out.append("| " + " | ".join([target, _seed(line["seed"]), *cells, *checks]) + " |")
    return out


def seeds_table(summary: list[dict[str, Any]], floor: bool) -> list[str]:
    """Per target: the margin over the envelope at every calibration seed, its spread, and the
    interval's lowest lower bound over seeds (``scoring.over_seeds``)."""
    extra = f" | lower bound > {FLOOR:g} dB" if floor else ""
    out = [
        "| target | calibration seeds | margins (dB) | spread (dB) | lowest lower bound | "
        "highest upper bound | lower bound > 0" + extra + " |",
        "|---|---|---|---:|---:|---:|---" + ("|---" if floor else "") + "|",
    ]
    for item in summary:
        low = item["low"]
        checks = ["**yes**" if low > 0 else "no"]
        if floor:
            checks.append("**yes**" if low > FLOOR else "no")
        out.append(
            f"| {item['target']:.0%} | {', '.join(_seed(s) for s in item['seeds'])} | "
            f"{', '.join(f'{m:+.2f}' for m in item['margins'])} | {item['spread']:.2f} | "
            f"{low:+.2f} | {item['high']:+.2f} | " + " | ".join(checks) + " |"
        )
    return out


def choices_table(margins: list[dict[str, Any]]) -> list[str]:
    """The library's forecast row against every peer family's held-out choice at each target
    (``scoring.choice_margins``)."""
    out = [
        "| target | cal. seed | peer (held-out choice) | its computed | its batch PSNR | "
        "forecast computed | forecast batch PSNR | margin (dB) | 90% interval |",
        "|---|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for item in margins:
        peer, row = item["peer"], item["row"]
        low, high = item["interval"]
        out.append(
            f"| {item['target']:.0%} | {_seed(item['seed'])} | {peer['family']}, "
            f"{peer['setting']} | {peer['computed']:.1%} | {peer['psnr']:.2f} | "
            f"{row['computed']:.1%} | {row['psnr']:.2f} | {item['margin']:+.2f} | "
            f"{low:+.2f} to {high:+.2f} |"
        )
    return out
