"""How times, durations and sizes are shown to people (run logs, metadata, the CLI): readable, with
the raw number kept beside it where someone may need to paste it (a watermark into ``adopt``)."""

from __future__ import annotations

from datetime import UTC, datetime


def utc(epoch_ms: int | None) -> str:
    """``2023-11-14 22:13:20 UTC`` for epoch milliseconds; ``-`` for None."""
    if epoch_ms is None:
        return "-"
    try:
        return datetime.fromtimestamp(epoch_ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (OverflowError, OSError, ValueError):
        return f"{epoch_ms} (not a date)"


def watermark(epoch_ms: int | None) -> str:
    """A CDA watermark as people read it and as tools take it: ``2023-11-14 22:13:20 UTC (1700000000000)``."""
    return "none" if epoch_ms is None else f"{utc(epoch_ms)} ({epoch_ms})"


def duration(ms: int | None) -> str:
    """``45s``, ``12m``, ``3h 05m``, ``2d 4h``; ``-`` for None."""
    if ms is None:
        return "-"
    seconds = ms // 1000
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m"
    if seconds < 86400:
        return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d {seconds % 86400 // 3600}h"


def size(num_bytes: int | None) -> str:
    """``812 B``, ``3.4 MB``, ``1.25 GB`` (decimal units, as storage consoles show them)."""
    if num_bytes is None:
        return "-"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if num_bytes >= scale:
            return f"{num_bytes / scale:.{2 if unit == 'GB' else 1}f} {unit}"
    return f"{num_bytes} B"
