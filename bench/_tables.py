"""Output for the benchmarks: durations in ms, Markdown tables that paste into the README, verdicts, the machine line."""

from __future__ import annotations

import datetime as dt
import os
import sys
from collections.abc import Sequence


def ms(seconds: float) -> str:
    """Format a duration in milliseconds with sensible precision."""
    if seconds != seconds:  # NaN
        return "–"
    value = seconds * 1000.0
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Print a Markdown table with aligned columns (pastes straight into the README)."""
    widths = [
        max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(str(h))
        for i, h in enumerate(headers)
    ]
    print("| " + " | ".join(str(h).ljust(w) for h, w in zip(headers, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print("| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) + " |")


def verdict(value: float, target: float) -> str:
    """'met' / 'NOT met' for a ratio where bigger is better."""
    if value != value:
        return "not measured"
    return "met" if value >= target else "NOT met"


def machine_line() -> str:
    """One line describing the machine and the tools, printed above the tables."""
    load = os.getloadavg()
    return (
        f"python {sys.version.split()[0]} | {os.cpu_count()} CPUs | load average {load[0]:.2f} | "
        f"{dt.datetime.now().isoformat(timespec='seconds')}"
    )
