"""Plots for the HTML reports: plain data (``Plot``, ``Series``) drawn by matplotlib as inline SVG.

Two chart kinds cover the reports: grouped bars with confidence-interval whiskers (accuracy by
order mode, per-tag scores) and lines with optional interval bands (ablation curves, training
curves). ``render_svg`` returns a standalone ``<svg>`` element (matplotlib's Agg-free SVG backend,
text kept as text so the page stays searchable, fixed ids and no date so equal plots give equal
bytes): no scripts, no network references.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

PALETTE = ("#3366cc", "#dc7633", "#2e9e5b", "#a43fb8", "#c0392b", "#17a2b8", "#7f8c8d", "#b7950b")


@dataclass
class Series:
    """One named series: ``y`` per x position; ``lo``/``hi`` optional interval bounds."""

    name: str
    x: list[float | str]
    y: list[float]
    lo: list[float] | None = None
    hi: list[float] | None = None

    def __post_init__(self) -> None:
        n = len(self.x)
        for key in ("y", "lo", "hi"):
            v = getattr(self, key)
            if v is not None and len(v) != n:
                raise ValueError(f"series '{self.name}': field '{key}' has {len(v)} values for {n} x positions")


@dataclass
class Plot:
    title: str
    kind: str  # "bar" | "line"
    series: list[Series]
    x_label: str = ""
    y_label: str = ""
    y_range: tuple[float, float] | None = None  # None: from the data (bars always include 0)
    note: str = ""
    log_x: bool = False
    hlines: list[tuple[float, str]] = field(default_factory=list)  # (y, label), e.g. chance level

    def __post_init__(self) -> None:
        if self.kind not in ("bar", "line"):
            raise ValueError(f"plot '{self.title}': kind must be 'bar' or 'line', got {self.kind!r}")

    def to_dict(self) -> dict:
        return {"title": self.title, "kind": self.kind, "x_label": self.x_label, "y_label": self.y_label,
                "y_range": list(self.y_range) if self.y_range else None, "note": self.note,
                "log_x": self.log_x, "hlines": [list(h) for h in self.hlines],
                "series": [{"name": s.name, "x": s.x, "y": s.y, "lo": s.lo, "hi": s.hi} for s in self.series]}

    @classmethod
    def from_dict(cls, d: dict) -> Plot:
        return cls(title=d["title"], kind=d["kind"], x_label=d.get("x_label", ""), y_label=d.get("y_label", ""),
                   y_range=tuple(d["y_range"]) if d.get("y_range") else None, note=d.get("note", ""),
                   log_x=bool(d.get("log_x", False)), hlines=[(float(a), str(b)) for a, b in d.get("hlines", [])],
                   series=[Series(**s) for s in d["series"]])


def _finite(v: float | None) -> bool:
    return v is not None and isinstance(v, (int, float)) and math.isfinite(v)


def render_svg(plot: Plot, *, width: int = 640, height: int = 300) -> str:
    """The plot as an ``<svg>`` element string, ``width``×``height`` pixels."""
    import io

    import matplotlib

    matplotlib.use("Agg")  # never a GUI backend (servers, CI, worker threads)
    import matplotlib.pyplot as plt

    style = {"svg.fonttype": "none", "svg.hashsalt": "arr-report", "font.size": 9,
             "axes.spines.top": False, "axes.spines.right": False}
    with matplotlib.rc_context(style):
        fig, ax = plt.subplots(figsize=(width / 100, height / 100), dpi=100)
        try:
            (_bars if plot.kind == "bar" else _lines)(ax, plot)
            for y, label in plot.hlines:
                ax.axhline(y, color="#888888", linestyle="--", linewidth=1)
                ax.annotate(label, (1.0, y), xycoords=("axes fraction", "data"), ha="right", va="bottom",
                            fontsize=8, color="#666666")
            if plot.y_range:
                ax.set_ylim(*plot.y_range)
            ax.set_title(plot.title, fontsize=11, loc="left")
            ax.set_xlabel(plot.x_label)
            ax.set_ylabel(plot.y_label)
            ax.grid(axis="y", color="#e5e5e5", linewidth=0.8)
            ax.set_axisbelow(True)
            if len(plot.series) > 1:
                ax.legend(fontsize=8, frameon=False)
            fig.tight_layout()
            buf = io.StringIO()
            fig.savefig(buf, format="svg", metadata={"Date": None})
        finally:
            plt.close(fig)
    svg = buf.getvalue()
    return svg[svg.index("<svg"):]  # inline: no XML prologue or doctype


def _bars(ax: Any, plot: Plot) -> None:
    """Grouped bars, one group per category, whiskers from ``lo``/``hi``."""
    cats: list[Any] = []
    for s in plot.series:
        cats += [c for c in s.x if c not in cats]
    n = max(len(plot.series), 1)
    w = 0.8 / n
    for k, s in enumerate(plot.series):
        pos = {c: i for i, c in enumerate(cats)}
        xs = [pos[c] - 0.4 + w * (k + 0.5) for c in s.x]
        ys = [y if _finite(y) else 0.0 for y in s.y]
        bars = ax.bar(xs, ys, w * 0.92, label=s.name, color=PALETTE[k % len(PALETTE)])
        for j, b in enumerate(bars):
            b.set_gid(f"bar-{k}-{j}")
        if s.lo is not None and s.hi is not None:
            ok = [j for j in range(len(xs)) if _finite(s.lo[j]) and _finite(s.hi[j]) and _finite(s.y[j])]
            if ok:
                err = [[max(0.0, s.y[j] - s.lo[j]) for j in ok], [max(0.0, s.hi[j] - s.y[j]) for j in ok]]
                ax.errorbar([xs[j] for j in ok], [s.y[j] for j in ok], yerr=err, fmt="none", ecolor="#333333",
                            elinewidth=1, capsize=3)
    ax.set_xticks(range(len(cats)), [str(c) for c in cats])


def _lines(ax: Any, plot: Plot) -> None:
    """Lines with markers and a shaded ``lo``..``hi`` band; string x values become categories."""
    if plot.log_x:
        ax.set_xscale("log")
    for k, s in enumerate(plot.series):
        color = PALETTE[k % len(PALETTE)]
        pts = [(x, y, j) for j, (x, y) in enumerate(zip(s.x, s.y, strict=True)) if _finite(y)]
        if not pts:
            continue
        xs = [p[0] for p in pts]
        ax.plot(xs, [p[1] for p in pts], marker="o" if len(pts) <= 30 else None, markersize=3, linewidth=1.5,
                color=color, label=s.name)
        if s.lo is not None and s.hi is not None:
            band = [(x, s.lo[j], s.hi[j]) for x, _, j in pts if _finite(s.lo[j]) and _finite(s.hi[j])]
            if band:
                ax.fill_between([b[0] for b in band], [b[1] for b in band], [b[2] for b in band], color=color,
                                alpha=0.18, linewidth=0)
    ax.margins(y=0.1)
    ax.ticklabel_format(axis="y", style="plain", useOffset=False)
    if all(isinstance(x, int) for s in plot.series for x in s.x):  # steps, counts: no 1.25 ticks
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
