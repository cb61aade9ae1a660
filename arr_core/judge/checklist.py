"""The rubric checklist judge: pointwise yes/no verdicts per rubric, as an RPO group rewarder.

The ranking judge (``arr_core.judge.reward.JudgeRewarder``, the ARR paper's RPO reward) must order
every group strictly, so a group in which no image does what the caption asks is still ranked, by
whichever partial criteria differ, and that order becomes an advantage. The checklist judge asks
the VLM about each image on its own: for every rubric (the tips of the rubric set), does the image
satisfy it — "yes", "no" or "n/a" (does not apply, cannot be judged)? An image's score is the share
of "yes" among its applicable rubrics; images with equal scores tie, and a group whose scores are
all equal gets no advantage (``arr_core.rewards.outcome_from_scores``). This is the
checklist reward of DSG / TIFA-style question checklists and of rubric rewards for language models
(RaR, "Rubrics as Rewards"), applied to ARR's induced rubrics.

Hard themes (``hard_themes``): rubric themes an image must satisfy for any credit, the "hard rules"
of OpenRubrics. An image scores 0 unless its verdicts on the hard themes' rubrics hold at least one
"yes" and no "no" ("n/a" neither passes nor fails); an image that passes scores 1 + its share of
"yes" among the other rubrics. So images that all fail a hard rule tie, and the other themes only
order images that pass. With ``hard_only`` an image that passes scores 1 flat, so the other themes
order nothing. They are still asked and still matter in two ways: an answer with the wrong number of
verdicts makes the group abstain, and an image whose hard rubrics are all "n/a" scores 0 (fails the
gate) when some other rubric applies but abstains when none does. Which themes are hard is the
user's choice (after reading the categorized rubric set); the induction does not decide it.

Costs one VLM request per image (the ranking judge: one or two per group). An image whose answer is
unusable after the client's re-asks, or for which no rubric applies, makes its group an abstention
(counted in ``stats``). Verdicts are not written to the store's ``judgments`` table (that table holds
rankings).
"""

from __future__ import annotations

import logging
import statistics
from typing import Any

from PIL import Image

from arr_core.judge.reward import check_judge_batch, check_pointwise_args
from arr_core.prompts.templates import build_checklist, normalize_verdict
from arr_core.rewards import GroupOutcome, outcome_from_scores
from arr_core.rubrics.rubric_set import RubricSet

log = logging.getLogger(__name__)


def checklist_rubrics(rubric_set: RubricSet, hard_themes: list[str] | tuple[str, ...] = ()
                      ) -> tuple[list[str], list[bool]]:
    """(rubric texts, is-hard flags): the tips of a themed set, else its flat criteria.

    Raises ValueError naming a hard theme that the set does not have (and listing those it has), or
    when hard themes are asked of a set without themes."""
    if rubric_set.themes:
        names = [t.theme for t in rubric_set.themes]
        missing = [h for h in hard_themes if h not in names]
        if missing:
            raise ValueError(f"hard theme(s) {missing} not in rubric set {rubric_set.id}; its themes are "
                             f"{names}")
        texts, hard = [], []
        for t in rubric_set.themes:
            for tip in (t.tips or [t.theme]):
                texts.append(tip)
                hard.append(t.theme in hard_themes)
        return texts, hard
    if hard_themes:
        raise ValueError(f"rubric set {rubric_set.id} has no themes, so it has no hard themes "
                         f"{list(hard_themes)}; categorize it first or drop hard_themes")
    return list(rubric_set.criteria), [False] * len(rubric_set.criteria)


def checklist_score(verdicts: list[str], hard: list[bool], hard_only: bool = False) -> float | None:
    """One image's score from its verdicts (``normalize_verdict`` spellings): the share of "yes" among
    the applicable rubrics. With hard rubrics: 0 unless the hard rubrics hold at least one "yes" and
    no "no" ("n/a" neither passes nor fails the gate), else 1 + the share of "yes" among the
    applicable other rubrics (0 when none applies), or 1 flat with ``hard_only``. None when no rubric
    applies at all."""
    if len(verdicts) != len(hard):
        raise ValueError(f"got {len(verdicts)} verdicts for {len(hard)} rubrics")
    norm = [normalize_verdict(v) for v in verdicts]
    if None in norm:
        raise ValueError(f"verdicts must be yes, no or n/a, got {verdicts[norm.index(None)]!r}")
    applicable = [(v == "yes", h) for v, h in zip(norm, hard, strict=True) if v != "n/a"]
    if not applicable:
        return None
    if not any(hard):
        return statistics.fmean(y for y, _ in applicable)
    gate = [y for y, h in applicable if h]
    if not gate or not all(gate):
        return 0.0
    soft = [y for y, h in applicable if not h]
    return 1.0 + (statistics.fmean(soft) if soft and not hard_only else 0.0)


class ChecklistRewarder:
    """``await rewarder.score(prompts, groups, sources)`` → one GroupOutcome per prompt.

    client: a VLMClient; rubric_set: the rubrics to check (required); task: "t2i" or "edit" (editing
    needs ``sources``); hard_themes: names of the set's themes that gate credit (see the module
    docstring); hard_only: with hard themes, every image that passes them scores 1, so the other
    rubrics do not order them (rewards come from ranks, so the other rubrics can only break ties
    among passing images or not; there is no weight in between); tie_tol: scores within this
    distance tie.
    ``stats``: images asked, images whose answer was unusable, "n/a" verdicts, abstained groups.
    """

    def __init__(self, client: Any, rubric_set: RubricSet, task: str, *,
                 hard_themes: list[str] | tuple[str, ...] = (), hard_only: bool = False,
                 tie_tol: float = 1e-9) -> None:
        check_pointwise_args(task, rubric_set, tie_tol, "checklist")
        if hard_only and not hard_themes:
            raise ValueError("hard_only scores images by the hard themes alone; it needs hard_themes")
        self.client, self.rubric_set, self.task, self.tie_tol = client, rubric_set, task, tie_tol
        self.hard_themes, self.hard_only = list(hard_themes), hard_only
        self.rubrics, self.hard = checklist_rubrics(rubric_set, self.hard_themes)
        if not self.rubrics or not all(r.strip() for r in self.rubrics):
            raise ValueError(f"rubric set {rubric_set.id} has no rubrics to check, or an empty one")
        self.stats = {"images": 0, "unusable": 0, "not_applicable": 0, "abstained_groups": 0}

    async def score(self, prompts: list[str], groups: list[list[Image.Image]],
                    sources: list[Image.Image] | None = None) -> list[GroupOutcome]:
        check_judge_batch(self.task, prompts, groups, sources)
        reqs, owner = [], []
        for k, (prompt, grp) in enumerate(zip(prompts, groups, strict=True)):
            src = sources[k] if sources is not None else None
            for im in grp:
                reqs.append(build_checklist(self.task, prompt, im, rubrics=self.rubrics, source=src))
                owner.append(k)
        resps = await self.client.ask_many(reqs) if reqs else []
        scores: list[list[float | None]] = [[] for _ in groups]
        latency = [0.0] * len(groups)  # a group's requests run concurrently: the longest one
        for k, resp in zip(owner, resps, strict=True):
            latency[k] = max(latency[k], resp.latency_s)
            scores[k].append(self._score(resp, prompts[k]))
        self.stats["images"] += len(reqs)
        out = []
        for k in range(len(groups)):
            o = outcome_from_scores(scores[k], self.tie_tol, latency[k])
            self.stats["abstained_groups"] += o.outcome == "abstain"
            out.append(o)
        return out

    def _score(self, resp: Any, prompt: str) -> float | None:
        parsed = resp.parsed if isinstance(resp.parsed, dict) else None
        verdicts = parsed.get("verdicts") if parsed else None
        norm = [normalize_verdict(v) for v in verdicts] if isinstance(verdicts, list) else []
        if resp.error or len(norm) != len(self.rubrics) or None in norm:
            self.stats["unusable"] += 1
            log.warning("checklist judge: unusable answer for an image of prompt %r (%s); its group abstains",
                        prompt[:80], resp.error or "no valid 'verdicts' list")
            return None
        self.stats["not_applicable"] += norm.count("n/a")
        return checklist_score(norm, self.hard, self.hard_only)
