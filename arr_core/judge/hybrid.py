"""Hybrid, multi-aspect rewards: several reward components combined into one group reward.

After "Beyond Monolithic Rewards" (arXiv 2510.05283): model-based rewards (the rubric judge, per-
criterion scores, a learned scalar reward model behind HTTP) and rule-based ones (a verifier with a
confidence) combined in one objective. Each component scores the G images of every group; its
per-group values are normalised (``none``: as they are; ``zscore``: (v − mean) / std within the
group, 0 when all are equal; ``rank``: (images scored strictly lower + ½ · other images scored
equal) / (G − 1), so 1 = best and 0 = worst), multiplied by the component's weight and summed. The
sum is the images' reward (``arr_core.rewards.outcome_from_values``: equal sums tie).

Components (``kind`` in the config; the recipe builds them):
- ``JudgeComponent``: any group rewarder — the rank judge (its rank rewards; a tie gives 0s), the
  per-criterion judge (its composites, a tie included), the checklist judge. An abstention fails
  the group.
- ``QuestionsComponent``: yes/no checkpoints per prompt (TIIF / UniGenBench style) asked of each
  image through the VLM (``build_check``); the value is the share of "yes".
- ``CheckerComponent``: a rule-based verifier ``fn(prompt, image) -> score`` or ``(score,
  confidence)``; a ValueError (a prompt it cannot check) fails the group.
- ``HttpComponent``: a scalar reward model over the JSON-over-HTTP protocol of
  ``arr_core.judge.http_reward``.

Failures are never scores. ``required`` components: a failure in any group of the batch (an
abstaining judge, an unusable answer, a prompt the checker cannot check, a non-finite value) fails
the step: every group of the batch abstains, each outcome's ``details["step_failed"]`` names the
component, its endpoint and the group, and the trainer updates nothing in that step (it counts it
with the steps that got no verdict and stops after ``MAX_ABSTAIN_STEPS`` in a row); an exception of
the whole component (its endpoint is down after retries) propagates and stops training at once. A
required component's verdict below ``min_confidence`` is dropped, not failed: that group abstains.
Optional components: the group gets 0 from the component, counted in the metrics
``reward/<name>/failed`` and ``reward/<name>/gated`` (the share of groups). Each group's ``details["metrics"]`` also carries ``reward/<name>/mean`` (the
mean raw value) and the component's own metrics under ``<name>/`` (per-theme scores, criterion
attribution of a per-criterion component).
"""

from __future__ import annotations

import asyncio
import logging
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from arr_core.failures import endpoint_name
from arr_core.rewards import GroupOutcome, GroupRewarder, check_batch, outcome_from_values

log = logging.getLogger(__name__)

NORMALISATIONS = ("none", "zscore", "rank")


def normalise(values: Sequence[float], how: str) -> list[float]:
    """One group's values normalised (see the module docstring)."""
    v = [float(x) for x in values]
    if how == "none":
        return v
    if how == "zscore":
        sd = statistics.pstdev(v)
        m = statistics.fmean(v)
        return [0.0] * len(v) if sd < 1e-12 else [(x - m) / sd for x in v]
    if how == "rank":
        g = len(v)
        if g < 2:
            return [0.0] * g
        return [(sum(y < x for y in v) + 0.5 * (sum(y == x for y in v) - 1)) / (g - 1) for x in v]
    raise ValueError(f"normalisation must be one of {', '.join(NORMALISATIONS)}, got {how!r}")


@dataclass
class ComponentResult:
    """A component's verdict on one group: values (one per image) and optional confidences, or the
    error that made it fail; ``metrics`` are the component's own per-group metrics."""

    values: list[float] | None
    confidences: list[float] | None = None
    error: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    latency_s: float = 0.0
    criteria: dict[str, list[int | None]] | None = None  # per-criterion judge: label → each image's score

    @classmethod
    def failed(cls, error: str, latency_s: float = 0.0) -> ComponentResult:
        return cls(None, None, error, {}, latency_s)


class Component:
    """Base of the components: ``name``, ``endpoint`` (what it calls, no credentials: named when it
    fails) and ``async evaluate(prompts, groups, sources)`` → one ComponentResult per group."""

    name = "component"

    @property
    def endpoint(self) -> str:
        client = getattr(self, "client", None) or getattr(getattr(self, "rewarder", None), "client", None)
        return f"VLM endpoint {endpoint_name(client)}" if client is not None else "in-process"

    async def evaluate(self, prompts: list[str], groups: list[list[Image.Image]],
                       sources: list[Image.Image] | None) -> list[ComponentResult]:
        raise NotImplementedError


class JudgeComponent(Component):
    """A GroupRewarder as a component: a win's rewards, 0s for a tie; an abstention fails the group."""

    def __init__(self, name: str, rewarder: GroupRewarder) -> None:
        self.name, self.rewarder = name, rewarder

    async def evaluate(self, prompts: list[str], groups: list[list[Image.Image]],
                       sources: list[Image.Image] | None) -> list[ComponentResult]:
        outs = await self.rewarder.score(prompts, groups, sources)
        res = []
        for o in outs:
            metrics = dict((o.details or {}).get("metrics") or {})
            labels, rows = (o.details or {}).get("criteria"), (o.details or {}).get("scores")
            crit = ({lab: [r[i] if r is not None else None for r in rows] for i, lab in enumerate(labels)}
                    if labels and rows else None)
            if o.outcome == "abstain":
                errs = [e for e in ((o.details or {}).get("errors") or []) if e]
                res.append(ComponentResult(None, None, errs[0] if errs else "the judge abstained", metrics,
                                           o.latency_s, crit))
            else:
                comps = (o.details or {}).get("composites")  # a per-criterion judge: its composites, also on a tie
                values = list(comps) if comps and None not in comps else list(o.rewards)
                res.append(ComponentResult(values, None, None, metrics, o.latency_s, crit))
        return res


class QuestionsComponent(Component):
    """Yes/no checkpoints per prompt: ``questions_for(prompt)`` → the questions (a KeyError or an empty
    list fails the group); each image is asked all of them in one request; value = share of "yes"."""

    def __init__(self, name: str, client: Any, questions_for: Callable[[str], list[str]]) -> None:
        self.name, self.client, self.questions_for = name, client, questions_for

    async def evaluate(self, prompts: list[str], groups: list[list[Image.Image]],
                       sources: list[Image.Image] | None) -> list[ComponentResult]:
        from arr_core.prompts.templates import build_check

        reqs, owner, res = [], [], [ComponentResult.failed("") for _ in groups]
        for k, (prompt, grp) in enumerate(zip(prompts, groups, strict=True)):
            try:
                qs = self.questions_for(prompt)
            except KeyError as e:
                res[k] = ComponentResult.failed(f"no questions for prompt {prompt[:80]!r} ({e})")
                continue
            if not qs:
                res[k] = ComponentResult.failed(f"no questions for prompt {prompt[:80]!r}")
                continue
            for im in grp:
                reqs.append(build_check(im, qs, prompt=prompt))
                owner.append(k)
        resps = await self.client.ask_many(reqs) if reqs else []
        per: dict[int, list[Any]] = {}
        for k, r in zip(owner, resps, strict=True):
            per.setdefault(k, []).append(r)
        for k, rs in per.items():
            bad = next((r for r in rs if r.error is not None or not isinstance(r.parsed, dict)), None)
            latency = max(r.latency_s for r in rs)
            if bad is not None:
                res[k] = ComponentResult.failed(bad.error or "no usable answer", latency)
                continue
            shares = [statistics.fmean(a["answer"] == "yes" for a in r.parsed["answers"]) for r in rs]
            res[k] = ComponentResult(shares, None, None, {"yes_share": statistics.fmean(shares)}, latency)
        return res


def _verdict(out: Any) -> tuple[float, float | None]:
    if isinstance(out, tuple):
        score, conf = out
        return float(score), float(conf)
    return float(out), None


class CheckerComponent(Component):
    """A rule-based verifier ``fn(prompt, image) -> score | (score, confidence)`` (confidence in
    [0, 1]); a ValueError fails the group (e.g. a prompt the checker cannot parse)."""

    def __init__(self, name: str, fn: Callable[[str, Image.Image], Any]) -> None:
        self.name, self.fn = name, fn

    @property
    def endpoint(self) -> str:
        return f"checker {getattr(self.fn, '__module__', '?')}:{getattr(self.fn, '__qualname__', repr(self.fn))}"

    async def evaluate(self, prompts: list[str], groups: list[list[Image.Image]],
                       sources: list[Image.Image] | None) -> list[ComponentResult]:
        return await asyncio.to_thread(self._run, prompts, groups)

    def _run(self, prompts: list[str], groups: list[list[Image.Image]]) -> list[ComponentResult]:
        res = []
        for prompt, grp in zip(prompts, groups, strict=True):
            t0 = time.perf_counter()
            try:
                verdicts = [_verdict(self.fn(prompt, im)) for im in grp]
            except ValueError as e:
                res.append(ComponentResult.failed(str(e), time.perf_counter() - t0))
                continue
            vals = [v for v, _ in verdicts]
            confs = [c for _, c in verdicts]
            if not all(math.isfinite(v) for v in vals):
                res.append(ComponentResult.failed(f"non-finite score {vals}", time.perf_counter() - t0))
                continue
            res.append(ComponentResult(vals, None if None in confs else confs, None, {},  # type: ignore[arg-type]
                                       time.perf_counter() - t0))
        return res


def _usable(r: ComponentResult, g: int) -> bool:
    return r.values is not None and len(r.values) == g and all(math.isfinite(v) for v in r.values)


@dataclass
class Part:
    """A component with its place in the sum."""

    component: Component
    weight: float = 1.0
    required: bool = True
    normalize: str = "none"
    min_confidence: float | None = None

    def __post_init__(self) -> None:
        if self.normalize not in NORMALISATIONS:
            raise ValueError(f"normalize must be one of {', '.join(NORMALISATIONS)}, got {self.normalize!r}")
        if not math.isfinite(self.weight):
            raise ValueError(f"weight must be finite, got {self.weight}")
        if self.min_confidence is not None and not 0.0 <= self.min_confidence <= 1.0:
            raise ValueError(f"min_confidence must be in [0, 1], got {self.min_confidence}")


class HybridRewarder:
    """``await rewarder.score(prompts, groups, sources)`` → one GroupOutcome per prompt: the weighted
    sum of the components' normalised values (see the module docstring). ``stats``: per component,
    groups failed and gated; abstained groups; failed steps (batches a required component failed)."""

    def __init__(self, parts: Sequence[Part], *, tie_tol: float = 1e-9) -> None:
        if not parts:
            raise ValueError("a hybrid reward needs at least one component")
        names = [p.component.name for p in parts]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"component names must be unique; {dup} repeat (give each a name)")
        if tie_tol < 0:
            raise ValueError(f"tie_tol must be >= 0, got {tie_tol}")
        self.parts, self.tie_tol = list(parts), tie_tol
        self.stats: dict[str, Any] = {"abstained_groups": 0, "failed_steps": 0,
                                      "components": {n: {"failed": 0, "gated": 0} for n in names}}

    async def score(self, prompts: list[str], groups: list[list[Image.Image]],
                    sources: list[Image.Image] | None = None) -> list[GroupOutcome]:
        check_batch(prompts, groups, sources)
        results = await asyncio.gather(*(p.component.evaluate(prompts, groups, sources) for p in self.parts),
                                       return_exceptions=True)
        per_part: list[list[ComponentResult]] = []
        for p, r in zip(self.parts, results, strict=True):
            if isinstance(r, BaseException):
                if p.required or not isinstance(r, Exception):
                    raise r  # a required component that cannot answer at all fails the step
                log.warning("optional reward component %s failed for the whole batch: %s", p.component.name, r)
                r = [ComponentResult.failed(f"{type(r).__name__}: {r}") for _ in groups]
            elif len(r) != len(groups):
                raise ValueError(f"reward component {p.component.name} returned {len(r)} results for "
                                 f"{len(groups)} groups")
            per_part.append(r)
        outs = [self._combine(k, len(groups[k]), [rs[k] for rs in per_part]) for k in range(len(groups))]
        failed = next(((p, k, rs[k]) for p, rs in zip(self.parts, per_part, strict=True) if p.required
                       for k in range(len(groups)) if not _usable(rs[k], len(groups[k]))), None)
        if failed is None:
            return outs
        p, k, r = failed  # a required component failed: the step gets no verdict at all
        why = (f"required reward component {p.component.name} ({p.component.endpoint}) failed on group {k} "
               f"({prompts[k][:60]!r}): {r.error or 'no usable values'}")
        self.stats["failed_steps"] += 1
        self.stats["abstained_groups"] += sum(o.outcome != "abstain" for o in outs)
        log.warning("hybrid reward: %s; no group of this batch gets a verdict", why)
        return [outcome_from_values([None] * len(groups[j]), self.tie_tol, o.latency_s,
                                    {**(o.details or {}), "error": why, "step_failed": why,
                                     "metrics": {**(o.details or {}).get("metrics", {}),
                                                 f"reward/{p.component.name}/failed_step": 1.0}})
                for j, o in enumerate(outs)]

    def _combine(self, k: int, g: int, results: list[ComponentResult]) -> GroupOutcome:
        total = [0.0] * g
        metrics: dict[str, float] = {}
        abstain = None
        for p, r in zip(self.parts, results, strict=True):
            name = p.component.name
            counts = self.stats["components"][name]
            ok = _usable(r, g)
            gated = ok and p.min_confidence is not None and r.confidences is not None and \
                min(r.confidences) < p.min_confidence
            metrics[f"reward/{name}/failed"] = float(not ok)
            metrics[f"reward/{name}/gated"] = float(gated)
            if p.required:  # 1 in the steps this component failed (score() marks them)
                metrics[f"reward/{name}/failed_step"] = 0.0
            metrics.update({f"{name}/{key}": v for key, v in r.metrics.items()})
            if not ok or gated:
                counts["failed" if not ok else "gated"] += 1
                if p.required and abstain is None:
                    abstain = (f"required component {name}: " + (r.error or "no usable values") if not ok
                               else f"required component {name}: confidence {min(r.confidences or [0]):.3g} "
                               f"below min_confidence {p.min_confidence:g}")
                continue  # an optional component adds 0 for this group
            metrics[f"reward/{name}/mean"] = statistics.fmean(r.values)  # type: ignore[arg-type]
            for i, v in enumerate(normalise(r.values, p.normalize)):  # type: ignore[arg-type]
                total[i] += p.weight * v
        latency = max((r.latency_s for r in results), default=0.0)
        details: dict[str, Any] = {
            "metrics": metrics, "totals": total,
            "components": {p.component.name: {"values": r.values, "error": r.error, "confidences": r.confidences,
                                              **({"criteria": r.criteria} if r.criteria else {})}
                           for p, r in zip(self.parts, results, strict=True)}}
        if abstain is not None:
            self.stats["abstained_groups"] += 1
            log.warning("hybrid reward: group %d abstains (%s)", k, abstain)
            details["error"] = abstain
            return outcome_from_values([None] * g, self.tie_tol, latency, details)
        return outcome_from_values(total, self.tie_tol, latency, details)
