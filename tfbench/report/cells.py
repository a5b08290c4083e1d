"""How a number becomes a table cell in every table of the report: scores in percent with one
decimal, r with two, log odds with three, and MISSING where there is no value; and how rows of
cells become a Markdown table."""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

MISSING = "-"


def percent(value: Optional[float]) -> str:
    """A fraction as a percentage with one decimal: 0.7512 -> "75.1"."""
    return MISSING if value is None else f"{100.0 * value:.1f}"


def fixed(value: Optional[float], decimals: int) -> str:
    """A number with `decimals` decimals (r: 2, log odds: 3)."""
    return MISSING if value is None else f"{value:.{decimals}f}"


def text(value: Any) -> str:
    return MISSING if value is None else str(value)


def plural(count: int, noun: str) -> str:
    """"1 run", "3 runs"."""
    return f"{count:,} {noun}" + ("" if count == 1 else "s")


def markdown_table(rows: Sequence[Mapping[str, str]]) -> str:
    """Rows (column -> cell, the first row's columns) as a Markdown table; "(none)" without rows."""
    if not rows:
        return "(none)\n"
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(str(row[c]).replace("|", "\\|") for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"
