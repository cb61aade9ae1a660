"""Self-contained HTML reports for evaluations.

One file per evaluation: inline CSS, plots as inline SVG (matplotlib, ``arr_core.bench.svg``), images embedded
as PNG data URLs (downscaled), no scripts and no network references, so the file opens anywhere and
can be attached to an MLflow run as one artifact.

A ``Report`` is plain data (``to_dict``/``from_dict``): the benchmarks build it from their results,
the store keeps its dict form in ``eval_results.metrics["report"]`` (images by path), and
``arr report ID`` renders it again later.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

from PIL import Image

from arr_core.bench.svg import Plot, render_svg

ImageLike = str | Image.Image | None


@dataclass
class Table:
    """A metrics table. A cell that is a dict with ``point``/``lo``/``hi`` renders as an interval."""

    title: str
    columns: list[str]
    rows: list[list[Any]]
    note: str = ""

    def __post_init__(self) -> None:
        for i, r in enumerate(self.rows):
            if len(r) != len(self.columns):
                raise ValueError(f"table '{self.title}': row {i} has {len(r)} cells for {len(self.columns)} columns")

    def to_dict(self) -> dict:
        return {"title": self.title, "columns": self.columns, "rows": self.rows, "note": self.note}

    def to_records(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, r, strict=True)) for r in self.rows]


@dataclass
class GridRow:
    label: str
    images: list[ImageLike]
    captions: list[str] = field(default_factory=list)


@dataclass
class ImageGrid:
    """Rows of images under column headers (e.g. prompt × [base, trained])."""

    title: str
    columns: list[str]
    rows: list[GridRow]
    note: str = ""

    def to_dict(self) -> dict:
        return {"title": self.title, "columns": self.columns, "note": self.note,
                "rows": [{"label": r.label, "images": [i if isinstance(i, str) or i is None else None
                                                       for i in r.images], "captions": r.captions}
                         for r in self.rows]}


@dataclass
class JudgedPair:
    """One judged pair: the images (and edit source), the human label, the rubric and each judgment.

    ``judgments``: dicts with ``mode`` (single/swap/random/forward/reversed), ``rank`` (list[int] in
    the original image order, or None when abstained), ``reason``, and optional ``outcome``.
    """

    prompt: str
    images: list[ImageLike]
    human_preferred: int | None = None
    rubric_text: str = ""
    judgments: list[dict[str, Any]] = field(default_factory=list)
    source: ImageLike = None
    pair_id: str = ""
    reference: str = "preferred by people"  # what ``human_preferred`` stands for (e.g. a checker's choice)

    def to_dict(self) -> dict:
        return {"prompt": self.prompt, "images": [i if isinstance(i, str) else None for i in self.images],
                "human_preferred": self.human_preferred, "rubric_text": self.rubric_text,
                "judgments": self.judgments, "source": self.source if isinstance(self.source, str) else None,
                "pair_id": self.pair_id, "reference": self.reference}


@dataclass
class Section:
    id: str
    title: str
    text: str = ""
    tables: list[Table] = field(default_factory=list)
    plots: list[Plot] = field(default_factory=list)
    grids: list[ImageGrid] = field(default_factory=list)
    pairs: list[JudgedPair] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"id": self.id, "title": self.title, "text": self.text,
                "tables": [t.to_dict() for t in self.tables], "plots": [p.to_dict() for p in self.plots],
                "grids": [g.to_dict() for g in self.grids], "pairs": [p.to_dict() for p in self.pairs]}


@dataclass
class Report:
    title: str
    sections: list[Section]
    subtitle: str = ""
    notes: list[str] = field(default_factory=list)  # warnings shown at the top (e.g. simulated VLM)
    meta: dict[str, Any] = field(default_factory=dict)  # ids, config: shown in the "Run" section

    def to_dict(self) -> dict:
        return {"title": self.title, "subtitle": self.subtitle, "notes": self.notes, "meta": self.meta,
                "sections": [s.to_dict() for s in self.sections]}

    @classmethod
    def from_dict(cls, d: dict) -> Report:
        secs = []
        for s in d.get("sections", []):
            secs.append(Section(
                id=s["id"], title=s["title"], text=s.get("text", ""),
                tables=[Table(t["title"], t["columns"], t["rows"], t.get("note", "")) for t in s.get("tables", [])],
                plots=[Plot.from_dict(p) for p in s.get("plots", [])],
                grids=[ImageGrid(g["title"], g["columns"],
                                 [GridRow(r["label"], r["images"], r.get("captions", [])) for r in g["rows"]],
                                 g.get("note", "")) for g in s.get("grids", [])],
                pairs=[JudgedPair(**p) for p in s.get("pairs", [])]))
        return cls(title=d["title"], sections=secs, subtitle=d.get("subtitle", ""), notes=list(d.get("notes", [])),
                   meta=dict(d.get("meta", {})))


def interval(point: float, lo: float, hi: float) -> dict[str, float]:
    """A table cell holding a point estimate with its interval."""
    return {"point": float(point), "lo": float(lo), "hi": float(hi)}


# ---------------------------------------------------------------------------------------------
# rendering

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0;background:#f5f6f8;color:#1d2330}
header{background:#1f3b63;color:#fff;padding:18px 28px}
header h1{margin:0 0 4px;font-size:22px} header p{margin:0;opacity:.85}
main{padding:8px 28px 40px;max-width:1280px}
nav{margin:12px 0;font-size:13px} nav a{margin-right:14px;color:#1f3b63}
section{background:#fff;border:1px solid #dde1e7;border-radius:6px;padding:12px 18px;margin:14px 0}
h2{font-size:18px;margin:4px 0 10px;color:#1f3b63} h3{font-size:14px;margin:14px 0 6px}
.note{background:#fff4d6;border:1px solid #e8c65a;border-radius:4px;padding:8px 12px;margin:10px 0;font-size:13px}
table{border-collapse:collapse;font-size:13px;margin:4px 0 8px}
th,td{border:1px solid #d7dbe2;padding:4px 9px;text-align:left;vertical-align:top;white-space:pre-line}
th{background:#eef1f6} td.num{text-align:right;font-variant-numeric:tabular-nums}
.ci{color:#667;font-size:11px}
.plots{display:flex;flex-wrap:wrap;gap:12px}
.grid td{text-align:center} .grid img{width:160px;height:160px;object-fit:contain;background:#eee}
.pair{border-top:1px solid #e3e6eb;padding:10px 0}
.pair .imgs{display:flex;gap:10px;flex-wrap:wrap}
.pair figure{margin:0;text-align:center;font-size:12px}
.pair img{width:200px;height:200px;object-fit:contain;background:#eee;border:3px solid transparent}
.pair img.human{border-color:#2e9e5b}
.ok{color:#1e7d45;font-weight:bold} .bad{color:#b3261e;font-weight:bold}
pre{background:#f3f4f7;padding:8px;white-space:pre-wrap;font-size:12px;max-height:260px;overflow:auto}
.missing{display:inline-block;width:160px;height:160px;background:#ddd;color:#666;line-height:160px;font-size:11px}
"""


def _fmt_cell(v: Any) -> tuple[str, bool]:
    """(html, is_numeric)."""
    if isinstance(v, dict) and {"point", "lo", "hi"} <= set(v):
        p, lo, hi = v["point"], v["lo"], v["hi"]
        if p is None or (isinstance(p, float) and math.isnan(p)):
            return "–", True
        return f'{p:.3f} <span class="ci">[{lo:.3f}, {hi:.3f}]</span>', True
    if isinstance(v, bool):
        return ("yes" if v else "no"), False
    if isinstance(v, float):
        return ("–" if math.isnan(v) else f"{v:.3f}"), True
    if isinstance(v, int):
        return str(v), True
    if v is None:
        return "–", False
    return escape(str(v)), False


def image_src(ref: ImageLike, *, max_side: int = 256) -> str | None:
    """A data URL for an image given as PIL image, data URL or local path; None when it cannot be
    embedded offline (missing file, remote URL: reports never reference the network)."""
    from arr_core.data.images import decode_rgb, to_data_url

    if ref is None:
        return None
    if isinstance(ref, Image.Image):
        return to_data_url(ref, max_side=max_side)
    if isinstance(ref, dict):
        ref = ref.get("uri")
        if not ref:
            return None
    s = str(ref)
    if s.startswith("data:"):
        return s
    if s.startswith(("http://", "https://")):
        return None
    p = Path(s[7:] if s.startswith("file://") else s)
    if not p.is_file():
        return None
    try:
        return to_data_url(decode_rgb(p.read_bytes()), max_side=max_side)
    except Exception:  # a broken image must not break the whole report
        return None


def _img(ref: ImageLike, alt: str, max_side: int, cls: str = "") -> str:
    src = image_src(ref, max_side=max_side)
    if src is None:
        return '<span class="missing">image unavailable</span>'
    c = f' class="{cls}"' if cls else ""
    return f'<img{c} src="{src}" alt="{escape(alt)}">'


def _table_html(t: Table) -> str:
    head = "".join(f"<th>{escape(c)}</th>" for c in t.columns)
    body = []
    for r in t.rows:
        cells = []
        for v in r:
            h, num = _fmt_cell(v)
            cells.append(f'<td class="num">{h}</td>' if num else f"<td>{h}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    note = f'<p class="ci">{escape(t.note)}</p>' if t.note else ""
    return f'<h3>{escape(t.title)}</h3><table class="metrics"><thead><tr>{head}</tr></thead>' \
           f'<tbody>{"".join(body)}</tbody></table>{note}'


def _grid_html(g: ImageGrid, max_side: int) -> str:
    head = "<th></th>" + "".join(f"<th>{escape(c)}</th>" for c in g.columns)
    rows = []
    for r in g.rows:
        cells = []
        for i, im in enumerate(r.images):
            cap = r.captions[i] if i < len(r.captions) else ""
            cap_html = f"<br><span class='ci'>{escape(cap)}</span>" if cap else ""
            cells.append(f"<td>{_img(im, f'{r.label} {g.columns[i] if i < len(g.columns) else i}', max_side)}"
                         f"{cap_html}</td>")
        rows.append(f"<tr><th>{escape(r.label)}</th>{''.join(cells)}</tr>")
    note = f'<p class="ci">{escape(g.note)}</p>' if g.note else ""
    return f'<h3>{escape(g.title)}</h3><table class="grid"><thead><tr>{head}</tr></thead>' \
           f'<tbody>{"".join(rows)}</tbody></table>{note}'


def _pair_html(p: JudgedPair, max_side: int) -> str:
    figs = []
    if p.source is not None:
        figs.append(f"<figure>{_img(p.source, 'source image', max_side)}<figcaption>Source image</figcaption></figure>")
    for i, im in enumerate(p.images):
        human = p.human_preferred == i
        cap = f"Image {i + 1}" + (f" — {p.reference}" if human else "")
        figs.append(f"<figure>{_img(im, cap, max_side, 'human' if human else '')}<figcaption>{escape(cap)}"
                    f"</figcaption></figure>")
    rows = []
    for j in p.judgments:
        rank = j.get("rank")
        if rank:
            winner = rank.index(min(rank))
            verdict = f"Image {winner + 1} first"
            if p.human_preferred is not None:
                ok = winner == p.human_preferred and rank.count(min(rank)) == 1
                verdict += " <span class='ok'>✓ agrees</span>" if ok else " <span class='bad'>✗ disagrees</span>"
        else:
            verdict = "abstained / tie"
        rows.append(f"<tr><td>{escape(str(j.get('mode', '')))}</td><td>{escape(str(rank))}</td>"
                    f"<td>{verdict}</td><td>{escape(str(j.get('reason', '')))}</td></tr>")
    judg = ("<table><thead><tr><th>order mode</th><th>rank (image order)</th><th>verdict</th><th>judge's reason (image numbers as shown in that order)</th>"
            f"</tr></thead><tbody>{''.join(rows)}</tbody></table>") if rows else ""
    rubric = (f"<details><summary>Rubric text</summary><pre class='rubric'>{escape(p.rubric_text)}</pre></details>"
              if p.rubric_text else "<p class='ci'>judged without rubrics</p>")
    pid = f" <span class='ci'>{escape(p.pair_id)}</span>" if p.pair_id else ""
    return (f"<div class='pair'><p><b>Prompt:</b> {escape(p.prompt)}{pid}</p><div class='imgs'>{''.join(figs)}</div>"
            f"{judg}{rubric}</div>")


def render_html(report: Report, *, max_image_side: int = 256) -> str:
    """The report as one self-contained HTML document."""
    nav = "".join(f'<a href="#{escape(s.id)}">{escape(s.title)}</a>' for s in report.sections)
    notes = "".join(f'<div class="note">{escape(n)}</div>' for n in report.notes)
    parts = []
    for s in report.sections:
        body = [f'<section id="{escape(s.id)}"><h2>{escape(s.title)}</h2>']
        if s.text:
            body.append(f"<p>{escape(s.text)}</p>")
        body += [_table_html(t) for t in s.tables]
        if s.plots:
            body.append('<div class="plots">' + "".join(render_svg(p) for p in s.plots) + "</div>")
            body += [f'<p class="ci">{escape(p.title)}: {escape(p.note)}</p>' for p in s.plots if p.note]
        body += [_grid_html(g, max_image_side) for g in s.grids]
        body += [_pair_html(p, max_image_side) for p in s.pairs]
        body.append("</section>")
        parts.append("".join(body))
    if report.meta:
        rows = "".join(f"<tr><th>{escape(str(k))}</th><td>{escape(str(v))}</td></tr>" for k, v in report.meta.items())
        parts.append(f'<section id="run"><h2>Run</h2><table>{rows}</table></section>')
    sub = f"<p>{escape(report.subtitle)}</p>" if report.subtitle else ""
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>{escape(report.title)}</title><style>{_CSS}</style></head><body>"
            f"<header><h1>{escape(report.title)}</h1>{sub}</header><main>{notes}<nav>{nav}</nav>"
            f"{''.join(parts)}</main></body></html>")


def write_html(report: Report, path: str | Path, *, max_image_side: int = 256) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(render_html(report, max_image_side=max_image_side), encoding="utf-8")
    return p


CURVE_KEYS = ("reward_mean", "win_rate", "loss", "kl", "clip_frac", "grad_norm")


def training_curves(metrics_jsonl: str | Path, keys: tuple[str, ...] = CURVE_KEYS) -> list[Plot]:
    """Line plots of the RPO trainer's ``metrics.jsonl`` (one JSON object per step with ``step``);
    keys absent from the file are left out. Empty list when the file has no usable rows."""
    import json

    rows = []
    for line in Path(metrics_jsonl).read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line:
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                continue  # a partly written last line of a running job
            if isinstance(obj, dict) and isinstance(obj.get("step"), (int, float)):
                rows.append(obj)
    from arr_core.bench.svg import Series

    plots = []
    for k in keys:
        pts = [(r["step"], float(r[k])) for r in rows if isinstance(r.get(k), (int, float))]
        if pts:
            plots.append(Plot(f"Training: {k}", "line", [Series(k, [p[0] for p in pts], [p[1] for p in pts])],
                              x_label="step", y_label=k))
    return plots


def find_training_metrics(lora_dir: str | Path | None) -> Path | None:
    """``metrics.jsonl`` of the run a LoRA folder belongs to (the folder itself, or its parents up to 3
    levels: ``run/lora``, ``run/checkpoints/step_N/lora``)."""
    if lora_dir is None:
        return None
    p = Path(lora_dir).resolve()
    for cand in [p, *list(p.parents)[:3]]:
        if (cand / "metrics.jsonl").is_file():
            return cand / "metrics.jsonl"
    return None
