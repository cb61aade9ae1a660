"""Win rate of a trained policy against its base, and editing benchmarks.

RPO optimises the policy against the rubric judge, so a higher win rate under that judge alone can
be reward hacking (the ARR paper's concern; Flow-GRPO reports the same failure mode). The win rate
is therefore measured twice on held-out prompts, with base and trained images drawn from the same
noise:

- under the training judge (pairwise, order mode ``swap`` by default so position bias cancels):
  trained wins 1, loses 0, tie or abstention 0.5;
- under an independent checker (scene detector or VLM yes/no questions): the image with the higher
  check score wins, equal scores count 0.5.

gap = judge win rate − checker win rate; a gap above ``hack_threshold`` (default 0.15) is flagged as
possible reward hacking. Intervals: bootstrap over prompts.

The same pairs also give the decisive-pair rates the pipeline's evaluation reports (``winrate.judge``,
``winrate.checker``, ``winrate.gap`` in MLflow): the share of the judge's decisive verdicts the trained
image wins (ties and abstentions left out; ``winrate/judge_decisive``) and the share of image pairs
where exactly one image passes every check in which it is the trained one (``winrate/checker_decisive``);
0.5 when nothing is decisive. ``run_winrate`` is the one implementation of both (``arr eval generate``
and ``arr_core.recipes.evaluate``); without a judge client it measures the checker alone.

Editing: ``run_edit_checks`` reads scene-world edits with the detector (instruction followed, rest
preserved; ``arr_core.sim.world.check_edit``); ``run_edit_winrate`` is the judge-based win rate for real
edits (instruction + source image + two edited images).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from arr_core.bench.checkers import Checker, CheckResult
from arr_core.bench.generation import ImagesById, check_all
from arr_core.bench.prompt_sets import PromptItem
from arr_core.bench.report import GridRow, ImageGrid, JudgedPair, Report, Section, Table
from arr_core.bench.results import SCENE_NOTE, WORLD_NOTE, EvalResult, rate_ci, run_sync, simulation_notes
from arr_core.bench.svg import Plot, Series
from arr_core.digest import digest_obj
from arr_core.judge.judge import JudgeItem, Judgment, judge_many

HACK_THRESHOLD = 0.15


def _judge_score(j: Judgment) -> float:
    """Trained is image 0: win 1, loss 0, tie/abstain 0.5."""
    if j.winner is None:
        return 0.5
    return 1.0 if j.winner == 0 else 0.0


def _cmp(a: float, b: float) -> float:
    return 1.0 if a > b else 0.0 if a < b else 0.5


def decisive_share(outcomes: Sequence[float]) -> float:
    """Share of the decisive outcomes (1 win, 0 loss) that are wins; ties (0.5) are left out; 0.5
    when no outcome is decisive."""
    wins = sum(o == 1.0 for o in outcomes)
    losses = sum(o == 0.0 for o in outcomes)
    return wins / (wins + losses) if wins + losses else 0.5


async def _judge_pairs(client: Any, task: str, prompts: list[str], trained: list[str], base: list[str],
                       sources: list[str | None], rubric_block: str | None, rubric_set_id: str | None,
                       mode: str, seed: int) -> list[Judgment]:
    items = [JudgeItem(task=task, prompt=p, images=[t, b], source=s,
                       key=digest_obj({"prompt": p, "a": t, "b": b}, 16))
             for p, t, b, s in zip(prompts, trained, base, sources, strict=True)]
    return await judge_many(client, items, rubric_block=rubric_block, rubric_set_id=rubric_set_id, order=mode,
                            seed=seed)


def run_winrate(items: Sequence[PromptItem], base: ImagesById, trained: ImagesById, *, judge_client: Any | None,
                rubric_set: Any | None, checker: Checker, mode: str = "swap", hack_threshold: float = HACK_THRESHOLD,
                n_boot: int = 2000, seed: int = 0, policy_id: str | None = None, config: dict[str, Any] | None = None,
                simulated: bool = False, n_examples: int = 4,
                base_results: dict[str, list[CheckResult]] | None = None,
                trained_results: dict[str, list[CheckResult]] | None = None) -> EvalResult:
    """Win rate of ``trained`` over ``base`` images (same prompts, same noise, paired by index).

    ``judge_client`` None: the checker's win rate alone (no judge rows, no gap). ``base_results`` /
    ``trained_results``: the checker's verdicts when already known (e.g. from ``run_geneval``'s
    ``details["results"]``), so the images are not checked twice."""
    if not items:
        raise ValueError("no prompt items to evaluate")
    for it in items:
        if len(base.get(it.id, [])) != len(trained.get(it.id, [])) or not base.get(it.id):
            raise ValueError(f"prompt item '{it.id}': base and trained need the same, non-zero number of images")
    pairs = [(it, k) for it in items for k in range(len(base[it.id]))]
    judged = judge_client is not None
    judgments: list[Judgment] = []
    if judged:
        block = rubric_set.prompt_block() if rubric_set is not None else None
        judgments = run_sync(_judge_pairs(judge_client, "t2i", [it.prompt for it, _ in pairs],
                                          [trained[it.id][k] for it, k in pairs], [base[it.id][k] for it, k in pairs],
                                          [None] * len(pairs), block,
                                          rubric_set.id if rubric_set is not None else None, mode, seed))
    res_b = base_results if base_results is not None else check_all(checker, items, base)
    res_t = trained_results if trained_results is not None else check_all(checker, items, trained)
    judge_by: dict[str, list[float]] = {it.id: [] for it in items}
    check_by: dict[str, list[float]] = {it.id: [] for it in items}
    pass_outcomes = []
    for n, (it, k) in enumerate(pairs):
        if judged:
            judge_by[it.id].append(_judge_score(judgments[n]))
        check_by[it.id].append(_cmp(res_t[it.id][k].score, res_b[it.id][k].score))
        pass_outcomes.append(_cmp(float(res_t[it.id][k].passed), float(res_b[it.id][k].passed)))
    cw = rate_ci([float(np.mean(v)) for v in check_by.values()], n_boot=n_boot, seed=seed)
    pass_b = rate_ci([float(np.mean([r.passed for r in res_b[it.id]])) for it in items], n_boot=n_boot, seed=seed)
    pass_t = rate_ci([float(np.mean([r.passed for r in res_t[it.id]])) for it in items], n_boot=n_boot, seed=seed)
    checker_decisive = decisive_share(pass_outcomes)
    summary = {"winrate/checker": cw["point"], "winrate/checker_decisive": checker_decisive}
    rows = [[f"independent checker ({checker.name})", cw, ""]]
    flagged = False
    if judged:
        jw = rate_ci([float(np.mean(v)) for v in judge_by.values()], n_boot=n_boot, seed=seed)
        gaps = [float(np.mean(judge_by[i])) - float(np.mean(check_by[i])) for i in judge_by]
        gap = rate_ci(gaps, n_boot=n_boot, seed=seed)
        flagged = gap["point"] > hack_threshold
        ties = sum(j.winner is None for j in judgments) / len(judgments)
        judge_decisive = decisive_share([_judge_score(j) for j in judgments])
        rows = [[f"training judge ({'rubrics ' + rubric_set.id if rubric_set is not None else 'no rubrics'}, "
                 f"{mode})", jw, f"tie/abstain rate {ties:.2f}"], *rows,
                ["gap (judge − checker)", gap,
                 "POSSIBLE REWARD HACKING" if flagged else f"below the {hack_threshold} flag"]]
        summary = {"winrate/judge": jw["point"], **summary, "winrate/gap": gap["point"],
                   "winrate/reward_hacking_flag": float(flagged), "winrate/judge_decisive": judge_decisive,
                   "winrate/judge_ties": ties, "winrate/gap_decisive": judge_decisive - checker_decisive}
    t = Table("Win rate trained vs base", ["measured by", "win rate (95% CI)", "note"], rows,
              note="Win 1, tie 0.5, loss 0; per-prompt means, bootstrap over prompts.")
    t_pass = Table("Checker pass rate", ["policy", "pass rate (95% CI)"], [["base", pass_b], ["trained", pass_t]])
    summary.update({"pass/base": pass_b["point"], "pass/trained": pass_t["point"], "n_prompts": float(len(items))})
    names = ["judge", "checker"] if judged else ["checker"]
    cells = [r[1] for r in rows[:len(names)]]
    plot = Plot("Win rate of the trained policy", "bar",
                [Series("win rate", names, [c["point"] for c in cells], [c["lo"] for c in cells],
                        [c["hi"] for c in cells])], y_label="win rate", y_range=(0.0, 1.0), hlines=[(0.5, "parity")])
    grid_rows = []
    for it in items[:n_examples]:
        grid_rows.append(GridRow(it.prompt, [base[it.id][0], trained[it.id][0]],
                                 [f"checker {'pass' if res_b[it.id][0].passed else 'fail'}",
                                  f"checker {'pass' if res_t[it.id][0].passed else 'fail'}"]))
    rubric_text = rubric_set.to_text() if rubric_set is not None else ""
    jpairs = []
    for (it, k), j in list(zip(pairs[:len(judgments)], judgments, strict=True))[:n_examples]:
        jpairs.append(JudgedPair(prompt=it.prompt, images=[trained[it.id][k], base[it.id][k]], rubric_text=rubric_text,
                                 judgments=[{"mode": f"{mode} order {o.permutation}", "rank": o.rank,
                                             "reason": o.reason} for o in j.orders]))
    notes = simulation_notes(simulated, checker.name)
    if getattr(getattr(judge_client, "backend", None), "name", "") == "scene" and SCENE_NOTE not in notes:
        notes.append(SCENE_NOTE)  # the training judge is the simulator
    if flagged:
        notes.insert(0, f"Possible reward hacking: the training judge prefers the trained policy "
                        f"{gap['point']:.2f} more often than the independent checker does.")
    cfg = dict(config or {})
    cfg.update({"benchmark": "winrate", "checker": checker.name, "mode": mode, "hack_threshold": hack_threshold,
                "items": digest_obj([it.to_dict() for it in items], 16), "n_boot": n_boot, "seed": seed,
                "rubric_set_id": rubric_set.id if rubric_set is not None else None})
    sections = [Section("metrics", "Metrics", tables=[t, t_pass]), Section("plots", "Plots", plots=[plot]),
                Section("images", "Base vs trained", grids=[ImageGrid("Base vs trained (first sample)",
                                                                      ["base", "trained"], grid_rows)])]
    if judged:
        sections.append(Section("pairs", "Judged pairs", text="Image 1 = trained, Image 2 = base.", pairs=jpairs))
    report = Report("Win rate: trained vs base", sections, subtitle=f"{len(items)} prompts", notes=notes,
                    meta={k: v for k, v in cfg.items() if not isinstance(v, (dict, list))})
    return EvalResult("winrate", cfg, summary, [t, t_pass], report,
                      rubric_set_id=rubric_set.id if rubric_set is not None else None, policy_id=policy_id,
                      details={"judgments": judgments, "results": {"base": res_b, "trained": res_t}})


# ---------------------------------------------------------------------------------------------
# editing


@dataclass
class EditCase:
    """One edit: instruction, source image path, and the edited image path of each variant."""

    id: str
    instruction: str
    source: str
    edited: dict[str, str]


def run_edit_checks(cases: Sequence[EditCase], *, n_boot: int = 2000, seed: int = 0,
                    config: dict[str, Any] | None = None, n_examples: int = 6) -> EvalResult:
    """Scene-world edits read by the detector: instruction followed, rest preserved, both; per variant."""
    from PIL import Image

    from arr_core.sim.world import check_edit, detect

    if not cases:
        raise ValueError("no edit cases to evaluate")
    variants = list(dict.fromkeys(v for c in cases for v in c.edited))
    res: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    for c in cases:
        src = detect(Image.open(c.source).convert("RGB"))
        for v, path in c.edited.items():
            r = check_edit(c.instruction, src, detect(Image.open(path).convert("RGB")))
            res[v].append({**r, "id": c.id})
    rows, summary = [], {"n_cases": float(len(cases))}
    for v in variants:
        fol = rate_ci([r["follows"] for r in res[v]], n_boot=n_boot, seed=seed)
        pre = rate_ci([r["preserved"] for r in res[v]], n_boot=n_boot, seed=seed)
        both = rate_ci([r["follows"] and r["preserved"] for r in res[v]], n_boot=n_boot, seed=seed)
        rows.append([v, fol, pre, both, len(res[v])])
        summary.update({f"edit/{v}/follows": fol["point"], f"edit/{v}/preserved": pre["point"],
                        f"edit/{v}/both": both["point"]})
    t = Table("Edit checks (scene detector)", ["variant", "follows instruction", "rest preserved", "both", "n"], rows,
              note="Detector-read scene-world edits (arr_core.sim.world.check_edit); bootstrap 95% intervals.")
    plot = Plot("Edit success by variant", "bar",
                [Series(name, variants, [r[i]["point"] for r in rows], [r[i]["lo"] for r in rows],
                        [r[i]["hi"] for r in rows]) for i, name in ((1, "follows"), (2, "preserved"), (3, "both"))],
                y_label="rate", y_range=(0.0, 1.0))
    by_id = {v: {r["id"]: r for r in res[v]} for v in variants}
    grid = ImageGrid("Edits", ["source", *variants], [
        GridRow(c.instruction, [c.source, *[c.edited.get(v) for v in variants]],
                ["", *[("follows" if by_id[v][c.id]["follows"] else "does not follow") + ", " +
                       ("preserved" if by_id[v][c.id]["preserved"] else "not preserved") if c.id in by_id[v] else ""
                       for v in variants]]) for c in cases[:n_examples]])
    cfg = dict(config or {})
    cfg.update({"benchmark": "edit-checks", "cases": digest_obj([[c.id, c.instruction, c.edited] for c in cases], 16),
                "n_boot": n_boot, "seed": seed})
    report = Report("Editing benchmark (scene world)", [
        Section("metrics", "Metrics", tables=[t]), Section("plots", "Plots", plots=[plot]),
        Section("images", "Edits", grids=[grid])], subtitle=f"{len(cases)} edits",
        notes=[WORLD_NOTE],
        meta={k: v for k, v in cfg.items() if not isinstance(v, (dict, list))})
    return EvalResult("edit", cfg, summary, [t], report, details={"results": res})


def run_edit_winrate(cases: Sequence[EditCase], *, judge_client: Any, rubric_set: Any | None, a: str = "trained",
                     b: str = "base", mode: str = "swap", n_boot: int = 2000, seed: int = 0,
                     config: dict[str, Any] | None = None, simulated: bool = False, n_examples: int = 4) -> EvalResult:
    """Judge-based win rate of edit variant ``a`` over ``b`` (real edits: no detector needed)."""
    use = [c for c in cases if a in c.edited and b in c.edited]
    if not use:
        raise ValueError(f"no edit case has both variants '{a}' and '{b}'")
    block = rubric_set.prompt_block() if rubric_set is not None else None
    js = run_sync(_judge_pairs(judge_client, "edit", [c.instruction for c in use], [c.edited[a] for c in use],
                               [c.edited[b] for c in use], [c.source for c in use], block,
                               rubric_set.id if rubric_set is not None else None, mode, seed))
    scores = [_judge_score(j) for j in js]
    wr = rate_ci(scores, n_boot=n_boot, seed=seed)
    ties = sum(j.winner is None for j in js) / len(js)
    t = Table("Edit win rate", ["comparison", "win rate (95% CI)", "tie/abstain rate", "n"],
              [[f"{a} vs {b} ({mode})", wr, ties, len(use)]], note="Win 1, tie/abstain 0.5, loss 0.")
    rubric_text = rubric_set.to_text() if rubric_set is not None else ""
    jpairs = [JudgedPair(prompt=c.instruction, images=[c.edited[a], c.edited[b]], source=c.source,
                         rubric_text=rubric_text, pair_id=c.id,
                         judgments=[{"mode": f"{mode} order {o.permutation}", "rank": o.rank, "reason": o.reason}
                                    for o in j.orders]) for c, j in list(zip(use, js, strict=True))[:n_examples]]
    cfg = dict(config or {})
    cfg.update({"benchmark": "edit-winrate", "a": a, "b": b, "mode": mode, "n_boot": n_boot, "seed": seed,
                "cases": digest_obj([[c.id, c.instruction, c.edited] for c in use], 16),
                "rubric_set_id": rubric_set.id if rubric_set is not None else None})
    report = Report("Editing win rate", [Section("metrics", "Metrics", tables=[t]),
                                         Section("pairs", "Judged pairs",
                                                 text=f"Edited Image 1 = {a}, Edited Image 2 = {b}.", pairs=jpairs)],
                    subtitle=f"{len(use)} edits", notes=[SCENE_NOTE] if simulated else [],
                    meta={k: v for k, v in cfg.items() if not isinstance(v, (dict, list))})
    return EvalResult("edit", cfg, {"edit_winrate": wr["point"], "edit_ties": ties}, [t], report,
                      rubric_set_id=rubric_set.id if rubric_set is not None else None, details={"judgments": js})
