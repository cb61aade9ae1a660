"""The one report of a pipeline run: the whole story on one self-contained HTML page.

Sections, in reading order: links to the MLflow and Prefect runs, the data, the rubric set (themes and
tips), judge accuracy with and without rubrics (95 % intervals) and the position-bias table, the
training curves (reward spread, KL, ratio, clip fraction and any absolute per-step score the trainer
logged), the paired base-vs-trained Δ with its interval, the evaluation's own sections (GenEval-format
accuracy, win rates, samples) and a gallery of the pairs where the rubric judge and the independent
checker disagree, those first.

Everything here takes plain values (dicts, lists, the evaluation's ``Report``); the evaluation task
gathers them from the store, the judge report and the trainer's ``metrics.jsonl``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from arr_core.bench.report import JudgedPair, Report, Section, Table, interval
from arr_core.bench.svg import Plot, Series
from arr_core.stats import bootstrap_ci

# Training curves: (title, metric keys drawn together, y label). Absent keys are skipped.
CURVES: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("Reward spread within groups", ("reward_spread", "reward_std"), "reward"),
    ("KL to the base policy", ("kl",), "KL"),
    ("Importance ratio", ("ratio_mean", "ratio_max"), "ratio"),
    ("Clip fraction", ("clip_frac",), "fraction"),
    ("Judge outcomes", ("win_rate", "tie_rate", "abstain_rate"), "share of groups"),
)
# Absolute per-step scores (they rise when the policy improves, unlike group-ranked rewards): any
# metric whose name contains one of these (a checker's pass rate, a rubric checklist's), a hybrid
# reward component's raw mean (``reward/<name>/mean``), and the per-criterion rubric scores
# (``score/<criterion>``, drawn as their mean).
ABSOLUTE_MARKERS = ("pass_rate", "checklist", "heldout")
# Not absolute: the rank judge's component (default name ``rubric_judge``) has group-ranked values, so
# its mean only mirrors the tie rate (0.45 for every decided group with G = 2).
RELATIVE_COMPONENT_MEANS = ("reward/rubric_judge/mean",)


def absolute_series(rows: Sequence[Mapping[str, Any]]) -> list[Series]:
    """The absolute per-step scores of the trainer's metric rows (see ``ABSOLUTE_MARKERS``)."""
    def num(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    keys = sorted({k for r in rows for k, v in r.items() if num(v) and k not in RELATIVE_COMPONENT_MEANS and (
        any(m in k for m in ABSOLUTE_MARKERS) or (k.startswith("reward/") and k.endswith("/mean")))})
    series = [Series(k, [r["step"] for r in rows if num(r.get(k))], [float(r[k]) for r in rows if num(r.get(k))])
              for k in keys]
    crit = [(r["step"], [float(v) for k, v in r.items() if k.startswith("score/") and num(v)]) for r in rows]
    crit = [(s, vs) for s, vs in crit if vs]
    if crit:
        series.append(Series("rubric criteria score (mean over criteria)", [s for s, _ in crit],
                             [sum(vs) / len(vs) for _, vs in crit]))
    return series


@dataclass
class GalleryPair:
    """One base/trained pair of the win-rate benchmark with both verdicts.

    ``judge``: 0 trained preferred, 1 base preferred, None tie/abstained; ``checker``: the same from
    the checker's pass/score comparison; ``judgments``: the judge's orders as ``JudgedPair`` dicts."""

    prompt: str
    trained: str
    base: str
    judge: int | None
    checker: int | None
    checker_why: tuple[str, str] = ("", "")
    judgments: tuple[dict[str, Any], ...] = ()

    @property
    def disagreement(self) -> int:
        """0: opposite verdicts; 1: one decisive, the other not; 2: agreement."""
        if self.judge is not None and self.checker is not None:
            return 0 if self.judge != self.checker else 2
        return 1 if (self.judge is None) != (self.checker is None) else 2


def paired_delta(base: Mapping[str, float], trained: Mapping[str, float], *, n_boot: int = 2000,
                 seed: int = 0) -> dict[str, float]:
    """Mean over prompts of trained − base (per-prompt scores, paired by prompt id) with a percentile
    bootstrap 95 % interval over prompts."""
    missing = sorted(set(base) ^ set(trained))
    if missing:
        raise ValueError(f"paired Δ needs the same prompts on both sides; unpaired: {missing[:5]}")
    diffs = [trained[k] - base[k] for k in sorted(base)]
    return interval(*bootstrap_ci(diffs, n_boot=n_boot, seed=seed))


def _verdict(i: int | None) -> str:
    return {0: "trained", 1: "base", None: "tie / none"}[i]


def gallery_section(pairs: Sequence[GalleryPair], limit: int = 12) -> Section:
    """The pairs sorted disagreements first (stable within a class), at most ``limit`` shown."""
    ordered = sorted(pairs, key=lambda p: p.disagreement)
    n_opp = sum(p.disagreement == 0 for p in pairs)
    n_half = sum(p.disagreement == 1 for p in pairs)
    shown = []
    for p in ordered[:limit]:
        label = {0: "DISAGREE", 1: "one undecided", 2: "agree"}[p.disagreement]
        shown.append(JudgedPair(
            prompt=f"[{label}] judge prefers {_verdict(p.judge)}, checker prefers {_verdict(p.checker)} — {p.prompt}",
            images=[p.trained, p.base], human_preferred=p.checker, judgments=list(p.judgments),
            reference="checker's choice"))
    return Section("gallery", "Judge vs checker: disagreements first",
                   text=f"{len(pairs)} base/trained pairs: the rubric judge and the independent checker pick "
                        f"opposite images in {n_opp}, one of them is undecided in {n_half}. Image 1 = trained, "
                        "Image 2 = base; the green frame marks the checker's choice, ✓/✗ compare the judge's "
                        "order verdicts with it.",
                   pairs=shown)


def gallery_pairs(items: Sequence[Any], base: Mapping[str, Sequence[str]], trained: Mapping[str, Sequence[str]],
                  base_results: Mapping[str, Sequence[Any]], trained_results: Mapping[str, Sequence[Any]],
                  judgments: Sequence[Any]) -> list[GalleryPair]:
    """Base/trained pairs in the win-rate benchmark's order (item, then image index) with the judge's
    verdict (``judgments`` in the same order, trained shown as image 1; empty: no judge) and the
    checker's (higher checker score wins, equal scores are a tie)."""
    out = []
    pairs = [(it, k) for it in items for k in range(len(base[it.id]))]
    if judgments and len(judgments) != len(pairs):
        raise ValueError(f"{len(judgments)} judgments for {len(pairs)} base/trained pairs")
    for n, (it, k) in enumerate(pairs):
        rt, rb = trained_results[it.id][k], base_results[it.id][k]
        checker = 0 if rt.score > rb.score else 1 if rt.score < rb.score else None
        j = judgments[n] if judgments else None
        out.append(GalleryPair(
            prompt=it.prompt, trained=str(trained[it.id][k]), base=str(base[it.id][k]),
            judge=j.winner if j is not None else None, checker=checker,
            checker_why=(rt.why, rb.why),
            judgments=tuple({"mode": f"order {o.permutation}", "rank": o.rank, "reason": o.reason}
                            for o in (j.orders if j is not None else []))))
    return out


def data_section(data: Mapping[str, Any] | None) -> Section:
    if not data:
        return Section("data", "Data", text="No dataset summary was available to this evaluation.")
    rows = [[k, v] for k, v in data.items() if not isinstance(v, (dict, list))]
    return Section("data", "Data", tables=[Table("dataset", ["field", "value"], rows)])


def rubric_section(rubric_set: Any | None) -> Section:
    """Themes and their tips (``RubricSet``)."""
    if rubric_set is None:
        return Section("rubrics", "Rubric set", text="This run trained without a rubric set.")
    rows = [[t.theme, len(t.tips), "\n".join(f"• {tip}" for tip in t.tips)] for t in rubric_set.themes]
    return Section("rubrics", f"Rubric set {rubric_set.id}",
                   text=f"{len(rubric_set.themes)} themes, {len(rubric_set.criteria)} criteria.",
                   tables=[Table("themes and tips", ["theme", "tips", "tips text"], rows)])


def _ci(c: Mapping[str, Any], key: str, lo: str, hi: str) -> Any:
    """An interval cell when the summary has the bounds, else the point (or None)."""
    if c.get(key) is None:
        return None
    return interval(c[key], c[lo], c[hi]) if lo in c and hi in c else float(c[key])


def judge_section(judge: Mapping[str, Any] | None) -> Section:
    """From the judge check's report (``conditions``: name → accuracy summary with ``accuracy`` and
    its bounds; the order keys ``forward_accuracy``, ``reversed_accuracy``, ... when it judged both
    presentation orders)."""
    if not judge or not judge.get("conditions"):
        return Section("judge", "Judge accuracy", text="The judge check did not run for this rubric set.")
    cond = judge["conditions"]
    names = [n for n, c in cond.items() if isinstance(c.get("accuracy"), (int, float))]
    acc = [[n.replace("_", " "), _ci(cond[n], "accuracy", "accuracy_lo", "accuracy_hi"), cond[n].get("n"),
            cond[n].get("tie_rate"), cond[n].get("abstain_rate")] for n in names]
    tables = [Table("accuracy on held-out human preferences", ["judge", "accuracy (95% CI)", "pairs", "ties",
                                                                "abstained"], acc,
                    note="Percentile bootstrap over pairs.")]
    series = Series("accuracy", [n.replace("_", " ") for n in names], [cond[n]["accuracy"] for n in names],
                    [cond[n].get("accuracy_lo", cond[n]["accuracy"]) for n in names],
                    [cond[n].get("accuracy_hi", cond[n]["accuracy"]) for n in names])
    plots = [Plot("Judge accuracy with and without rubrics", "bar", [series], y_label="accuracy",
                  y_range=(0.0, 1.0), hlines=[(0.5, "chance")])]
    ordered = [n for n in names if "forward_accuracy" in cond[n]]
    if ordered:
        bias = [[n.replace("_", " "), _ci(cond[n], "forward_accuracy", "forward_lo", "forward_hi"),
                 _ci(cond[n], "reversed_accuracy", "reversed_lo", "reversed_hi"),
                 cond[n].get("forward_minus_reversed"), cond[n].get("position_gap"),
                 cond[n].get("first_position_rate")] for n in ordered]
        tables.append(Table("position bias (both presentation orders)",
                            ["judge", "forward order", "reversed order", "forward − reversed",
                             "preferred-first − preferred-second", "picks position 1"], bias,
                            note="An unbiased judge has equal accuracy in both orders and picks position 1 "
                                 "half of the time; – : not measured by this protocol."))
    return Section("judge", "Judge accuracy", tables=tables, plots=plots)


def training_section(rows: Sequence[Mapping[str, Any]], checkpoint_scores: Sequence[Mapping[str, Any]] = (),
                     base_score: float | None = None) -> Section:
    """Curves of the trainer's per-step metrics (``metrics.jsonl`` rows with ``step``) and, when given,
    held-out scores at checkpoints (``{"step", "point", "lo", "hi"}``, the evaluation's GenEval-format
    overall) with the base policy's score on the same prompts (``base_score``) as a line."""
    rows = [r for r in rows if isinstance(r.get("step"), (int, float))]
    if not rows and not checkpoint_scores:
        return Section("training", "Training", text="No training metrics were found for this run.")
    plots = []
    for title, keys, ylab in CURVES:
        series = [Series(k, [r["step"] for r in rows if isinstance(r.get(k), (int, float))],
                         [float(r[k]) for r in rows if isinstance(r.get(k), (int, float))]) for k in keys]
        series = [s for s in series if s.x]
        if series:
            plots.append(Plot(title, "line", series, x_label="step", y_label=ylab))
    absolute = absolute_series(rows)
    if absolute:
        plots.append(Plot("Absolute per-step score", "line", absolute, x_label="step",
                          y_label=absolute[0].name if len(absolute) == 1 else "score"))
    if checkpoint_scores:
        c = sorted(checkpoint_scores, key=lambda d: d["step"])
        plots.append(Plot("Held-out score at checkpoints", "line",
                          [Series("held-out", [d["step"] for d in c], [d["point"] for d in c], [d["lo"] for d in c],
                                  [d["hi"] for d in c])], x_label="step", y_label="GenEval-format overall",
                          y_range=(0.0, 1.0), hlines=[(base_score, "base")] if base_score is not None else [],
                          note="Each checkpoint's LoRA on the evaluation's held-out prompts and noise; 95 % "
                               "bootstrap intervals over prompts."))
    text = (f"{len(rows)} steps logged. Group-ranked rewards have a fixed mean, so the spread, KL, ratio and clip "
            "fraction show whether the policy moved; an absolute score shows whether it improved.")
    if not absolute and not checkpoint_scores:
        text += " This run logged no absolute per-step score and no held-out checkpoint scores."
    return Section("training", "Training", text=text, plots=plots)


def paired_section(delta: Mapping[str, float], checker_name: str, base: float, trained: float) -> Section:
    return Section("paired", "Base vs trained: paired Δ",
                   text="Per prompt: the trained policy's GenEval-format pass rate minus the base policy's on the "
                        "same prompt and noise; mean over prompts with a bootstrap 95 % interval over prompts. An "
                        "interval that excludes 0 is a change larger than the prompt sampling noise.",
                   tables=[Table("paired difference", ["checker", "base", "trained", "Δ trained − base (95% CI)"],
                                 [[checker_name, base, trained, dict(delta)]])])


def links_section(links: Mapping[str, str | None]) -> Section:
    rows = [[k, v] for k, v in links.items() if v]
    return Section("links", "Runs", tables=[Table("where this run is recorded", ["what", "where"], rows)])


def pipeline_run_report(evaluation: Report, *, data: Mapping[str, Any] | None, rubric_set: Any | None,
                        judge: Mapping[str, Any] | None, training_rows: Sequence[Mapping[str, Any]],
                        delta: Mapping[str, float], checker_name: str, scores: tuple[float, float],
                        gallery: Sequence[GalleryPair], links: Mapping[str, str | None],
                        checkpoint_scores: Sequence[Mapping[str, Any]] = (), base_score: float | None = None) -> Report:
    """The run's report: the sections listed in the module docstring around the evaluation's own
    (``checkpoint_scores`` and ``base_score``: see :func:`training_section`)."""
    sections = [links_section(links), data_section(data), rubric_section(rubric_set), judge_section(judge),
                training_section(training_rows, checkpoint_scores, base_score),
                paired_section(delta, checker_name, *scores), *evaluation.sections]
    if gallery:
        sections.append(gallery_section(gallery))
    return Report(title="arr-pipeline run", sections=sections, subtitle=evaluation.subtitle,
                  notes=list(evaluation.notes), meta=dict(evaluation.meta))
