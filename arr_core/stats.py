"""Small statistics helpers shared by the judge, the benchmarks and the reports."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np


def bootstrap_ci(values: Sequence[float], *, n_boot: int = 2000, alpha: float = 0.05, seed: int = 0,
                 stat: Callable[[np.ndarray], float] = np.mean) -> tuple[float, float, float]:
    """Percentile bootstrap: (point estimate, low, high) of ``stat`` over ``values``.

    Deterministic for a given seed. An empty input gives NaNs, a single value a zero-width interval.
    """
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return (math.nan, math.nan, math.nan)
    point = float(stat(x))
    if x.size == 1:
        return (point, point, point)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(n_boot, x.size))
    boots = np.apply_along_axis(stat, 1, x[idx]) if stat is not np.mean else x[idx].mean(axis=1)
    lo, hi = np.quantile(boots, [alpha / 2, 1 - alpha / 2])
    # The percentile interval can exclude the point estimate for skewed statistics; widen to cover it.
    return (point, float(min(lo, point)), float(max(hi, point)))


def wilson_ci(successes: int, n: int, *, z: float = 1.959964) -> tuple[float, float, float]:
    """Wilson score interval for a proportion: (p, low, high)."""
    if n <= 0:
        return (math.nan, math.nan, math.nan)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (p, max(0.0, centre - half), min(1.0, centre + half))
