"""Per-criterion scores: a pointwise judge that scores ONE image on every rubric criterion in one VLM
request, and its RPO group rewarder.

The "rubric rewards with granular feedback" recipe: each criterion of the rubric set (the tips of a
themed set, else its flat criteria) has a scale, ``binary`` (0 or 1) or ``1-5``; the VLM answers
``{"scores": {"c1": <int>, ...}, "reason": "..."}`` under a JSON schema that lists every criterion
with the values its scale allows (endpoints without structured output get the same contract as text,
and the answer is validated the same way). A score is normalised to [0, 1] (binary: as is; 1-5:
(s − 1) / 4) and the image's **composite** is the weighted mean of the normalised scores. A weight
is given per criterion (its text) or per theme (every tip of the theme gets it); unnamed criteria
weigh 1, so the default is the plain mean.

Scales come from the rubric set when it carries them (``metadata["scales"]``: criterion text or
theme name → scale), else from the config (``scales``, same form), else ``default_scale``.

Failures are never scores: an answer that is not JSON, lacks a criterion, or holds a value outside
its scale is re-asked by the client (``max_reasks``) and then counts as an unusable answer; a
transport failure counts apart (``arr_core.failures``). Either makes the image's group abstain.

The rewarder's rewards are the composites themselves (``arr_core.rewards.outcome_from_values``; the
trainer centres them per group); each outcome's ``details`` carries the per-image, per-criterion
scores and per-step metrics: ``score_theme/<theme>`` (the mean composite of the theme's criteria
over the group's images), ``score/<criterion>`` (mean normalised score) and
``attribution/<criterion>`` (1 when the criterion scored the group's winner above its loser, else
0; ties report 0, abstentions nothing), so the step's mean is the share of judged groups the
criterion separated. Results are stored in the ``judgments`` table (order mode ``scores``; the
``orders`` JSON holds, per image, the scores, the composite and the reason).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from arr_core.data.images import DEFAULT_REQUEST_MAX_SIDE
from arr_core.digest import canonical_json, digest_obj
from arr_core.failures import is_transport_error
from arr_core.judge.judge import JudgeItem, Judgment, _client_model
from arr_core.judge.reward import check_judge_batch, check_pointwise_args, group_key
from arr_core.rewards import GroupOutcome, outcome_from_values
from arr_core.rubrics.rubric_set import RubricSet
from arr_core.vlm.base import VLMRequest
from arr_core.vlm.messages import ImageLike, labelled_image_parts, text_part, user_message

log = logging.getLogger(__name__)

SCORES_PROMPT_VERSION = "scores-v1"
SCALES: dict[str, tuple[int, ...]] = {"binary": (0, 1), "1-5": (1, 2, 3, 4, 5)}
_SCALE_TAG = {"binary": "0/1", "1-5": "1-5"}


@dataclass(frozen=True)
class Criterion:
    """One scored criterion: its text, theme (None in a flat set), scale and weight."""

    text: str
    theme: str | None
    scale: str
    weight: float = 1.0

    def normalise(self, score: int) -> float:
        """A score on this criterion's scale → [0, 1]."""
        lo, hi = SCALES[self.scale][0], SCALES[self.scale][-1]
        return (score - lo) / (hi - lo)


def criterion_label(i: int, text: str) -> str:
    """A metric-safe name for criterion ``i`` (0-based): ``c<i+1> <first words>``."""
    words = re.sub(r"[^A-Za-z0-9 ]+", " ", text).split()
    return (f"c{i + 1} " + " ".join(words))[:40].strip()


def _check_scale(scale: Any, where: str) -> str:
    if scale not in SCALES:
        raise ValueError(f"{where}: scale must be one of {', '.join(SCALES)}, got {scale!r}")
    return str(scale)


def scored_criteria(rubric_set: RubricSet, *, default_scale: str = "1-5",
                    scales: dict[str, str] | None = None, weights: dict[str, float] | None = None) -> list[Criterion]:
    """The criteria of ``rubric_set`` with their scales and weights (see the module docstring).

    Raises ValueError naming a scale or weight key that is neither a criterion nor a theme of the set,
    an unknown scale, a negative weight, or weights that sum to 0."""
    _check_scale(default_scale, "default_scale")
    if rubric_set.themes:
        pairs = [(tip, t.theme) for t in rubric_set.themes for tip in (t.tips or [t.theme])]
    else:
        pairs = [(c, None) for c in rubric_set.criteria]
    if not pairs or not all(text.strip() for text, _ in pairs):
        raise ValueError(f"rubric set {rubric_set.id} has no criteria to score, or an empty one")
    names = {text for text, _ in pairs} | {th for _, th in pairs if th is not None}
    set_scales = rubric_set.metadata.get("scales") or {}
    for where, mapping in (("rubric set metadata 'scales'", set_scales), ("scales", scales or {}),
                           ("weights", weights or {})):
        unknown = [k for k in mapping if k not in names]
        if unknown:
            raise ValueError(f"{where}: {unknown[0]!r} is neither a criterion nor a theme of rubric set "
                             f"{rubric_set.id}")
    for k, w in (weights or {}).items():
        if not isinstance(w, (int, float)) or isinstance(w, bool) or w < 0 or w != w:
            raise ValueError(f"weights: the weight of {k!r} must be a number >= 0, got {w!r}")

    def pick(mapping: dict[str, Any], text: str, theme: str | None) -> Any:
        return mapping.get(text, mapping.get(theme) if theme is not None else None)

    out = []
    for text, theme in pairs:
        scale = pick(set_scales, text, theme) or pick(scales or {}, text, theme) or default_scale
        w = pick(weights or {}, text, theme)
        out.append(Criterion(text, theme, _check_scale(scale, f"criterion {text[:60]!r}"),
                             float(w) if w is not None else 1.0))
    if sum(c.weight for c in out) <= 0:
        raise ValueError("weights: every criterion weighs 0; at least one must weigh more")
    return out


def composite(criteria: Sequence[Criterion], scores: Sequence[int]) -> float:
    """The weighted mean of the normalised scores."""
    total = sum(c.weight for c in criteria)
    return sum(c.weight * c.normalise(s) for c, s in zip(criteria, scores, strict=True)) / total


# --------------------------------------------------------------------------- the request

def scores_schema(criteria: Sequence[Criterion]) -> dict[str, Any]:
    """JSON schema of the answer: every criterion key with the integers its scale allows."""
    props = {f"c{i + 1}": {"type": "integer", "enum": list(SCALES[c.scale])} for i, c in enumerate(criteria)}
    scores = {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}
    return {"type": "object", "properties": {"scores": scores, "reason": {"type": "string"}},
            "required": ["scores", "reason"], "additionalProperties": False}


def parse_scores(obj: Any, criteria: Sequence[Criterion]) -> tuple[list[int] | None, str | None]:
    """(scores in criterion order, None) for a usable answer, else (None, what is wrong)."""
    scores = obj.get("scores") if isinstance(obj, dict) else None
    if not isinstance(scores, dict):
        return None, '"scores" must be an object with one entry per criterion ("c1", "c2", ...)'
    out = []
    for i, c in enumerate(criteria):
        key = f"c{i + 1}"
        if key not in scores:
            return None, f'"scores" lacks criterion "{key}"'
        v = scores[key]
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        if not isinstance(v, int) or isinstance(v, bool) or v not in SCALES[c.scale]:
            return None, (f'scores["{key}"] must be an integer in {list(SCALES[c.scale])} (scale {c.scale}), '
                          f"got {v!r}")
        out.append(v)
    extra = [k for k in scores if k not in {f"c{i + 1}" for i in range(len(criteria))}]
    if extra:
        return None, f'"scores" has key(s) that are not criteria: {extra[:3]}'
    return out, None


def build_scores_request(task: str, prompt: str, image: ImageLike, criteria: Sequence[Criterion], *,
                         source: ImageLike | None = None,
                         max_side: int | None = DEFAULT_REQUEST_MAX_SIDE) -> VLMRequest:
    """Ask for a score of ONE image on every criterion (``{"scores": {"c1": ..}, "reason": ..}``)."""
    if task not in ("t2i", "edit"):
        raise ValueError(f"task must be 't2i' or 'edit', got {task!r}")
    if not criteria:
        raise ValueError("criteria must not be empty")
    listing = "\n".join(f"c{i + 1} ({_SCALE_TAG[c.scale]}): {' '.join(c.text.split())}"
                        for i, c in enumerate(criteria))
    if task == "t2i":
        what, line, name = ("The image above was generated from the caption below.",
                            f"Caption: {prompt.strip()}", "Image 1")
    else:
        what, line, name = ("The first image above is the original, Image BASE; the edited image after it was "
                            "produced from Image BASE with the instruction below.",
                            f"Instruction: {prompt.strip()}", "Edited Image 1")
    sections = [
        "You are a careful evaluator of AI-generated images. " + what + "\n" + line,
        "Criteria:\n" + listing,
        (f"Score {name} on each criterion on its own. A criterion marked (1-5) gets an integer from 1 (not "
         "met at all) to 5 (fully met); one marked (0/1) gets 1 if the image meets it and 0 if not."),
        ('Answer with JSON only, in exactly this form, one entry per criterion key:\n'
         '{"scores": {"c1": <integer>, "c2": <integer>, ...}, "reason": "<short justification>"}'),
    ]
    parts = labelled_image_parts(task, [image], source=source, max_side=max_side)
    parts.append(text_part("\n\n".join(sections)))
    crit = list(criteria)

    def validate(obj: dict[str, Any]) -> str | None:
        return parse_scores(obj, crit)[1] or (None if isinstance(obj.get("reason"), str)
                                              else '"reason" must be a string')

    return VLMRequest(messages=user_message(parts), required_keys=("scores", "reason"), validator=validate,
                      temperature=0.0, max_tokens=256 + 8 * len(crit), prompt_version=SCORES_PROMPT_VERSION,
                      kind="scores", schema=scores_schema(crit))


# --------------------------------------------------------------------------- scoring images

@dataclass
class ImageScores:
    """One image's answer: scores in criterion order and composite, or the error (never both)."""

    scores: list[int] | None
    composite: float | None
    reason: str = ""
    error: str | None = None
    latency_s: float = 0.0

    @property
    def transport_failed(self) -> bool:
        return is_transport_error(self.error)


async def score_images(client: Any, criteria: Sequence[Criterion], task: str,
                       items: Sequence[tuple[str, Image.Image, Image.Image | None]]) -> list[ImageScores]:
    """Score every (prompt, image, source) item: one request each, concurrently through the client."""
    reqs = [build_scores_request(task, p, im, criteria, source=src) for p, im, src in items]
    resps = await client.ask_many(reqs) if reqs else []
    out = []
    for resp in resps:
        scores, problem = (parse_scores(resp.parsed, criteria) if resp.error is None
                           else (None, resp.error))
        if scores is None:
            out.append(ImageScores(None, None, error=problem or "no usable answer", latency_s=resp.latency_s))
            continue
        reason = resp.parsed.get("reason", "") if isinstance(resp.parsed, dict) else ""
        out.append(ImageScores(scores, composite(criteria, scores), str(reason), None, resp.latency_s))
    return out


def theme_means(criteria: Sequence[Criterion], rows: Sequence[Sequence[int]]) -> dict[str, float]:
    """Per theme (criteria without a theme: ``all criteria``), the weighted mean normalised score over ``rows``."""
    out: dict[str, float] = {}
    for theme in dict.fromkeys(c.theme or "all criteria" for c in criteria):
        idx = [i for i, c in enumerate(criteria) if (c.theme or "all criteria") == theme]
        sub = [criteria[i] for i in idx]
        if sum(c.weight for c in sub) > 0:
            out[theme] = sum(composite(sub, [r[i] for i in idx]) for r in rows) / len(rows)
    return out


def group_metrics(criteria: Sequence[Criterion], rows: Sequence[Sequence[int]],
                  ranks: list[int] | None) -> dict[str, float]:
    """A judged group's metrics: mean score per theme and per criterion, and per criterion whether it
    scored the winner (rank 1) above the loser (rank G) — 0 for a tie (``ranks`` None)."""
    m = {f"score_theme/{t}": v for t, v in theme_means(criteria, rows).items()}
    win = ranks.index(1) if ranks is not None else None
    lose = ranks.index(len(ranks)) if ranks is not None else None
    for i, c in enumerate(criteria):
        label = criterion_label(i, c.text)
        m[f"score/{label}"] = sum(c.normalise(r[i]) for r in rows) / len(rows)
        m[f"attribution/{label}"] = float(win is not None and rows[win][i] > rows[lose][i])  # type: ignore[index]
    return m


@dataclass
class ScoresStats:
    images: int = 0
    unusable: int = 0
    transport_failed: int = 0
    abstained_groups: int = 0
    first_errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"images": self.images, "unusable": self.unusable, "transport_failed": self.transport_failed,
                "abstained_groups": self.abstained_groups}


def scores_row(key: str, criteria: Sequence[Criterion], results: Sequence[ImageScores], outcome: GroupOutcome, *,
               rubric_set_id: str | None, judge_model: str | None) -> dict[str, Any]:
    """A ``judgments`` row for one group scored per criterion (order mode ``scores``)."""
    jid = "js-" + digest_obj({"key": key, "rubric_set_id": rubric_set_id, "judge_model": judge_model,
                              "prompt_version": SCORES_PROMPT_VERSION,
                              "criteria": [[c.text, c.scale, c.weight] for c in criteria]}, 24)
    per_image = [{"image": i, "scores": ({f"c{k + 1}": s for k, s in enumerate(r.scores)}
                                         if r.scores is not None else None),
                  "composite": r.composite, "reason": r.reason, "error": r.error} for i, r in enumerate(results)]
    return {"judgment_id": jid, "rubric_set_id": rubric_set_id, "pair_id": key, "order_mode": "scores",
            "orders": canonical_json(per_image),
            "final_rank": canonical_json(outcome.ranks) if outcome.ranks is not None else None,
            "outcome": outcome.outcome, "rewards": canonical_json(outcome.rewards), "judge_model": judge_model}


async def score_groups(client: Any, criteria: Sequence[Criterion], task: str, prompts: Sequence[str],
                       groups: Sequence[Sequence[Any]], sources: Sequence[Any] | None = None
                       ) -> list[list[ImageScores]]:
    """Every image of every group scored (all requests through the client at once), grouped back."""
    items, owner = [], []
    for k, (prompt, grp) in enumerate(zip(prompts, groups, strict=True)):
        for im in grp:
            items.append((prompt, im, sources[k] if sources is not None else None))
            owner.append(k)
    results = await score_images(client, criteria, task, items)
    per_group: list[list[ImageScores]] = [[] for _ in groups]
    for k, r in zip(owner, results, strict=True):
        per_group[k].append(r)
    return per_group


def summary(criteria: Sequence[Criterion], results: Sequence[Sequence[ImageScores]]) -> dict[str, Any]:
    """Means over every usable image: per theme and per criterion (normalised to [0, 1]), the
    composite, and the counts of images, unusable answers and transport failures."""
    rows = [r.scores for res in results for r in res if r.scores is not None]
    flat = [r for res in results for r in res]
    out: dict[str, Any] = {"images": len(flat), "usable": len(rows),
                           "transport_failed": sum(r.transport_failed for r in flat),
                           "unusable": sum(r.error is not None and not r.transport_failed for r in flat)}
    if rows:
        out["composite"] = sum(composite(criteria, r) for r in rows) / len(rows)
        out["themes"] = theme_means(criteria, rows)
        out["criteria"] = {criterion_label(i, c.text): sum(c.normalise(r[i]) for r in rows) / len(rows)
                           for i, c in enumerate(criteria)}
    return out


async def judge_records_by_scores(client: Any, records: Sequence[Any], criteria: Sequence[Criterion], *,
                                  rubric_set_id: str | None, store: Any = None, tie_tol: float = 1e-9
                                  ) -> tuple[list[Judgment], list[list[ImageScores]]]:
    """Labelled records judged pointwise: each image scored on every criterion, the images ranked by
    composite (a record with an unusable image abstains; equal composites tie). Returns judgments
    (order mode ``scores``, for ``arr_core.judge.metrics.accuracy_summary``) and the per-image scores;
    rows go to the store's ``judgments`` table when ``store`` is given."""
    items = [JudgeItem.from_record(r) for r in records]
    tasks = {it.task for it in items}
    if len(tasks) > 1:
        raise ValueError(f"records mix tasks {sorted(tasks)}; score one task at a time")
    task = tasks.pop() if tasks else "t2i"
    results = await score_groups(client, criteria, task, [it.prompt for it in items], [it.images for it in items],
                                 [it.source for it in items] if task == "edit" else None)
    model = _client_model(client)
    judgments, rows = [], []
    for it, res in zip(items, results, strict=True):
        values = [r.composite if r.error is None else None for r in res]
        o = outcome_from_values(values, tie_tol)
        judgments.append(Judgment(it.key, "scores", [], [float(r) for r in o.ranks] if o.ranks else None,
                                  o.outcome, list(o.rewards), rubric_set_id=rubric_set_id, judge_model=model,
                                  prompt_version=SCORES_PROMPT_VERSION))
        rows.append(scores_row(it.key, criteria, res, o, rubric_set_id=rubric_set_id, judge_model=model))
    if store is not None and rows:
        store.executemany("judgment_upsert", rows)
    return judgments, results


class ScoresRewarder:
    """``await rewarder.score(prompts, groups, sources)`` → one GroupOutcome per prompt, rewards = the
    images' composites (see the module docstring).

    client: a VLMClient; rubric_set: the rubrics (required); task: "t2i" or "edit"; default_scale,
    scales, weights: see ``scored_criteria``; tie_tol: composites within this distance tie; store:
    where the per-criterion scores go (table ``judgments``), or None. ``stats``: images, unusable
    answers, transport failures, abstained groups.
    """

    def __init__(self, client: Any, rubric_set: RubricSet, task: str, *, default_scale: str = "1-5",
                 scales: dict[str, str] | None = None, weights: dict[str, float] | None = None,
                 tie_tol: float = 1e-9, store: Any = None) -> None:
        check_pointwise_args(task, rubric_set, tie_tol, "per-criterion")
        self.client, self.rubric_set, self.task, self.tie_tol, self.store = client, rubric_set, task, tie_tol, store
        self.criteria = scored_criteria(rubric_set, default_scale=default_scale, scales=scales, weights=weights)
        self.stats = ScoresStats()

    async def score(self, prompts: list[str], groups: list[list[Image.Image]],
                    sources: list[Image.Image] | None = None) -> list[GroupOutcome]:
        check_judge_batch(self.task, prompts, groups, sources)
        per_group = await score_groups(self.client, self.criteria, self.task, prompts, groups, sources)
        self.stats.images += sum(len(res) for res in per_group)
        out, rows = [], []
        model = _client_model(self.client)
        for k, res in enumerate(per_group):
            out.append(self._outcome(prompts[k], res))
            if self.store is not None:
                src = sources[k] if sources is not None else None
                rows.append(scores_row(group_key(prompts[k], groups[k], src), self.criteria, res, out[-1],
                                       rubric_set_id=self.rubric_set.id, judge_model=model))
        if rows:
            self.store.executemany("judgment_upsert", rows)
        return out

    def _outcome(self, prompt: str, res: list[ImageScores]) -> GroupOutcome:
        latency = max((r.latency_s for r in res), default=0.0)  # a group's requests run concurrently
        failed = [r for r in res if r.error is not None]
        for r in failed:
            if r.transport_failed:
                self.stats.transport_failed += 1
            else:
                self.stats.unusable += 1
            if len(self.stats.first_errors) < 3:
                self.stats.first_errors.append(str(r.error)[:300])
        details: dict[str, Any] = {
            "criteria": [criterion_label(i, c.text) for i, c in enumerate(self.criteria)],
            "scores": [r.scores for r in res], "composites": [r.composite for r in res],
            "errors": [r.error for r in res],
            "transport_failures": sum(r.transport_failed for r in res)}
        if failed:
            self.stats.abstained_groups += 1
            log.warning("per-criterion judge: no usable scores for an image of prompt %r (%s); its group abstains",
                        prompt[:80], failed[0].error)
            return outcome_from_values([None] * len(res), self.tie_tol, latency, details)
        o = outcome_from_values([r.composite for r in res], self.tie_tol, latency, details)
        details["metrics"] = group_metrics(self.criteria, [r.scores for r in res], o.ranks)  # type: ignore[misc]
        return o
