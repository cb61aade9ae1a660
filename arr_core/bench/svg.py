"""Inline SVG plots for the HTML reports (no matplotlib, no scripts, no network).

Two chart kinds cover the reports: grouped bars with confidence-interval whiskers (accuracy by
order mode, per-tag scores) and lines with optional interval bands (ablation curves, training
curves). Output is a standalone ``<svg>`` element string.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from html import escape

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


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    span = hi - lo if hi > lo else 1.0
    raw = span / n
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=mag * 10)
    start = math.floor(lo / step) * step
    ticks = []
    # Integer multiples, not repeated addition: a step below the float resolution of ``lo`` would
    # otherwise never advance (a series that is constant up to rounding).
    for k in range(4 * n + 2):
        t = start + k * step
        if t > hi + step * 1e-6:
            break
        if t >= lo - step * 1e-6:
            ticks.append(round(t, 12))
    return ticks


def _data_range(vals: list[float]) -> tuple[float, float]:
    """(low, high) of the data, widened when the values are equal up to float rounding."""
    lo, hi = min(vals), max(vals)
    scale = max(abs(lo), abs(hi), 1e-12)
    if hi - lo <= 1e-9 * scale:
        half = 0.5 if scale < 1e-9 else 0.1 * scale
        return lo - half, hi + half
    return lo, hi


def _fmt(v: float) -> str:
    return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"


def render_svg(plot: Plot, *, width: int = 640, height: int = 300) -> str:
    """The plot as an ``<svg>`` string with title, axes, ticks, legend and interval marks."""
    left, right, top, bottom = 56, 16, 34, 58
    legend_h = 18 * ((len(plot.series) + 2) // 3) if len(plot.series) > 1 else 0
    height += legend_h
    pw, ph = width - left - right, height - top - bottom - legend_h
    vals = [v for s in plot.series for arr in (s.y, s.lo or [], s.hi or []) for v in arr if _finite(v)]
    vals += [h[0] for h in plot.hlines]
    if plot.y_range:
        y0, y1 = plot.y_range
    else:
        y0, y1 = _data_range(vals) if vals else (0.0, 1.0)
        if plot.kind == "bar":
            y0 = min(0.0, y0)
        pad = (y1 - y0) * 0.08 or 0.5
        y0, y1 = (y0 if plot.kind == "bar" and y0 == 0 else y0 - pad), y1 + pad
    ticks = _nice_ticks(y0, y1)

    def sy(v: float) -> float:
        return top + ph * (1 - (v - y0) / (y1 - y0))

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="plot" role="img" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
           f"<title>{escape(plot.title)}</title>",
           f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>',
           f'<text x="{width / 2}" y="18" text-anchor="middle" font-size="13" font-weight="bold">'
           f"{escape(plot.title)}</text>"]
    for t in ticks:
        y = sy(t)
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e3e3e3"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" fill="#444">{_fmt(t)}</text>')
    out.append(f'<line x1="{left}" x2="{left}" y1="{top}" y2="{top + ph}" stroke="#333"/>')
    out.append(f'<line x1="{left}" x2="{left + pw}" y1="{top + ph}" y2="{top + ph}" stroke="#333"/>')
    if plot.y_label:
        out.append(f'<text transform="translate(14,{top + ph / 2}) rotate(-90)" text-anchor="middle">'
                   f"{escape(plot.y_label)}</text>")
    if plot.x_label:
        out.append(f'<text x="{left + pw / 2}" y="{top + ph + 40}" text-anchor="middle">{escape(plot.x_label)}</text>')

    if plot.kind == "bar":
        out += _bars(plot, left, top, pw, ph, sy)
    else:
        out += _lines(plot, left, top, pw, ph, sy)
    for yv, label in plot.hlines:
        y = sy(yv)
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="#888" '
                   f'stroke-dasharray="4 3"/><text x="{left + pw - 2}" y="{y - 3:.1f}" text-anchor="end" '
                   f'fill="#666">{escape(label)}</text>')
    if len(plot.series) > 1:
        ly = height - legend_h - 4
        for i, s in enumerate(plot.series):
            lx = left + (i % 3) * (pw / 3)
            yy = ly + 18 * (i // 3)
            out.append(f'<rect x="{lx:.1f}" y="{yy:.1f}" width="12" height="12" fill="{PALETTE[i % len(PALETTE)]}"/>'
                       f'<text x="{lx + 16:.1f}" y="{yy + 10:.1f}">{escape(s.name)}</text>')
    out.append("</svg>")
    return "".join(out)


def _bars(plot: Plot, left: float, top: float, pw: float, ph: float, sy) -> list[str]:
    cats: list[str] = []
    for s in plot.series:
        for x in s.x:
            if str(x) not in cats:
                cats.append(str(x))
    n_s = max(1, len(plot.series))
    gw = pw / max(1, len(cats))
    bw = gw * 0.8 / n_s
    out = []
    for ci, c in enumerate(cats):
        cx = left + gw * ci + gw / 2
        label = c if len(c) <= 18 else c[:17] + "…"
        out.append(f'<text x="{cx:.1f}" y="{top + ph + 16}" text-anchor="middle" fill="#222">{escape(label)}</text>')
    y_zero = sy(0.0) if sy(0.0) <= top + ph else top + ph
    for si, s in enumerate(plot.series):
        color = PALETTE[si % len(PALETTE)]
        for j, x in enumerate(s.x):
            v = s.y[j]
            if not _finite(v):
                continue
            ci = cats.index(str(x))
            bx = left + gw * ci + gw * 0.1 + bw * si
            yv = sy(v)
            y_top, h = min(yv, y_zero), abs(y_zero - yv)
            out.append(f'<rect class="bar" x="{bx:.1f}" y="{y_top:.1f}" width="{bw * 0.92:.1f}" height="{h:.1f}" '
                       f'fill="{color}"><title>{escape(s.name)} {escape(str(x))}: {v:.3f}</title></rect>')
            mid = bx + bw * 0.46
            if s.lo is not None and s.hi is not None and _finite(s.lo[j]) and _finite(s.hi[j]):
                ylo, yhi = sy(s.lo[j]), sy(s.hi[j])
                out.append(f'<path d="M{mid:.1f},{ylo:.1f}V{yhi:.1f}M{mid - 4:.1f},{ylo:.1f}H{mid + 4:.1f}'
                           f'M{mid - 4:.1f},{yhi:.1f}H{mid + 4:.1f}" stroke="#222" stroke-width="1.2" fill="none"/>')
                label_y = yhi - 4
            else:
                label_y = yv - 4
            out.append(f'<text x="{mid:.1f}" y="{label_y:.1f}" text-anchor="middle" font-size="10" fill="#222">'
                       f"{v:.2f}</text>")
    return out


def _lines(plot: Plot, left: float, top: float, pw: float, ph: float, sy) -> list[str]:
    xs = [float(x) for s in plot.series for x in s.x]
    if not xs:
        return []
    tx = (lambda v: math.log10(v)) if plot.log_x else (lambda v: v)
    x0, x1 = tx(min(xs)), tx(max(xs))
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1

    def sx(v: float) -> float:
        return left + pw * (tx(float(v)) - x0) / (x1 - x0)

    out = []
    for v in sorted(set(xs)) if len(set(xs)) <= 12 else _nice_ticks(min(xs), max(xs), 6):
        out.append(f'<text x="{sx(v):.1f}" y="{top + ph + 16}" text-anchor="middle" fill="#222">{_fmt(v)}</text>')
    for si, s in enumerate(plot.series):
        color = PALETTE[si % len(PALETTE)]
        pts = [(sx(x), sy(y)) for x, y in zip(s.x, s.y, strict=True) if _finite(y)]
        if s.lo is not None and s.hi is not None:
            band = [(sx(x), sy(h)) for x, h in zip(s.x, s.hi, strict=True) if _finite(h)]
            band += [(sx(x), sy(lo)) for x, lo in reversed(list(zip(s.x, s.lo, strict=True))) if _finite(lo)]
            if band:
                out.append(f'<polygon points="{" ".join(f"{a:.1f},{b:.1f}" for a, b in band)}" fill="{color}" '
                           f'fill-opacity="0.15" stroke="none"/>')
        if pts:
            out.append(f'<polyline class="line" points="{" ".join(f"{a:.1f},{b:.1f}" for a, b in pts)}" '
                       f'fill="none" stroke="{color}" stroke-width="2"/>')
            if len(pts) <= 40:
                out += [f'<circle cx="{a:.1f}" cy="{b:.1f}" r="3" fill="{color}"/>' for a, b in pts]
    return out
