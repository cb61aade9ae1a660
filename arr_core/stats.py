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


def paired_order_stats(forward: Sequence[float], reverse: Sequence[float], *, n_boot: int = 2000,
                       alpha: float = 0.05, seed: int = 0) -> dict[str, tuple[float, float, float]]:
    """Position-bias maths over items judged in both orders (per item: 1 correct / 0 not, or any real).

    forward = mean(f), reverse = mean(r), gap = forward − reverse, balanced = mean((f + r) / 2), each as
    (point, low, high). One percentile bootstrap over items: every resample takes the same items for all
    four, so the gap's interval is the paired one. Empty input gives NaNs, one item zero-width intervals.
    """
    f = np.asarray(forward, dtype=float)
    r = np.asarray(reverse, dtype=float)
    if f.shape != r.shape:
        raise ValueError(f"forward and reverse must pair up item by item, got {f.size} and {r.size} values")
    cols = {"forward": f, "reverse": r, "gap": f - r, "balanced": (f + r) / 2}
    if f.size == 0:
        return {k: (math.nan, math.nan, math.nan) for k in cols}
    out: dict[str, tuple[float, float, float]] = {}
    idx = np.random.default_rng(seed).integers(0, f.size, size=(n_boot, f.size)) if f.size > 1 else None
    for name, x in cols.items():
        point = float(x.mean())
        if idx is None:
            out[name] = (point, point, point)
            continue
        lo, hi = np.quantile(x[idx].mean(axis=1), [alpha / 2, 1 - alpha / 2])
        out[name] = (point, float(min(lo, point)), float(max(hi, point)))
    return out
