"""Whether a chosen hyperparameter lies at an end of its grid, where the optimum may lie beyond
what was tried: one rule for the probe's L2 and the fine-tune searches, and how a record says so
(`at_grid_edge`, `grid_edges`, which the report marks)."""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional

LARGEST = "largest"
SMALLEST = "smallest"


def edge(value: float, grid: Iterable[float]) -> Optional[str]:
    """LARGEST or SMALLEST when `value` is that end of the distinct values of `grid`, else None.
    A grid of one value was not searched; 0 (none) is a real end of a weight-decay grid, never a
    sign that the optimum lies beyond it."""
    values = sorted(set(grid))
    if len(values) < 2 or value <= 0:
        return None
    return LARGEST if value == values[-1] else SMALLEST if value == values[0] else None


def edges(chosen: Mapping[str, float], tried: List[Mapping[str, float]]) -> Dict[str, str]:
    """{name: LARGEST | SMALLEST} of the chosen hyperparameters at an end of the values tried."""
    ends = {name: edge(value, [trial[name] for trial in tried]) for name, value in chosen.items()}
    return {name: end for name, end in ends.items() if end is not None}


def mark(record: Dict[str, Any], found: Mapping[str, str], log: Callable[[str], None] = print) -> None:
    """Set `at_grid_edge` / `grid_edges` on a finished record, warning once when at an edge."""
    record["at_grid_edge"], record["grid_edges"] = bool(found), dict(found)
    if found:
        listed = ", ".join(f"{name}={record['hyperparameters'][name]:.3g} is the {end} of its grid"
                           for name, end in found.items())
        log(f"warning: the choice lies at the edge of its grid ({listed}); the optimum may lie "
            "beyond it")
