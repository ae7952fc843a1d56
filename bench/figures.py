"""How every bench quotes a figure measured in rounds: the median, and the range the rounds gave."""

from __future__ import annotations

import statistics

__all__ = ["spread"]


def spread(values: list[float], fmt: str = "{:.2f}") -> str:
    """``median (min-max)``, each formatted with ``fmt``."""
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}-{fmt.format(max(values))})"
