"""Checkers: does an image satisfy its prompt? One protocol, two implementations.

- ``SceneChecker``: the scene world's numpy detector plus GenEval's clause logic
  (``arr_core.sim.world.check_spec``); only for scene-world images.
- ``VLMChecker``: asks the VLM the item's yes/no questions (GenEval clauses turned into questions,
  TIIF-Bench question lists, UniGenBench checkpoints) with ``build_check``; an image passes when
  every answer equals the expected one. The caption is not shown, so the VLM cannot answer from the
  text alone. A request that yields no usable answer counts as failed and is counted as abstained.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from PIL import Image

from arr_core.bench.prompt_sets import PromptItem, geneval_questions


@dataclass
class CheckResult:
    passed: bool
    score: float  # share of clauses / questions satisfied
    why: str = ""
    answers: list[str] = field(default_factory=list)  # VLM answers per question ("" when missing)
    abstained: bool = False


class Checker(Protocol):
    name: str

    def check(self, jobs: Sequence[tuple[PromptItem, Image.Image]]) -> list[CheckResult]:
        """One result per (item, image), in order."""
        ...


def scene_spec(item: PromptItem) -> Any:
    """The scene-world ``PromptSpec`` of an item: from its GenEval metadata, else parsed from the prompt."""
    from arr_core.sim.world import PromptSpec, parse_prompt

    rec = item.meta.get("geneval")
    if rec:
        return PromptSpec.from_geneval(rec)
    spec = parse_prompt(item.prompt)
    if spec is None:
        raise ValueError(f"prompt item '{item.id}': no GenEval metadata and the prompt is not in the scene-world "
                         "grammar; use the VLM checker for real prompts")
    return spec


class SceneChecker:
    """GenEval-format check of scene-world images with the scene detector."""

    name = "scene-detector"

    def check(self, jobs: Sequence[tuple[PromptItem, Image.Image]]) -> list[CheckResult]:
        from arr_core.sim.world import check_spec, detect

        out = []
        for item, image in jobs:
            res = check_spec(scene_spec(item), detect(image))
            clauses = res["clauses"]
            failed = [c["why"] for c in clauses if not c["passed"]]
            out.append(CheckResult(passed=bool(res["passed"]),
                                   score=sum(c["passed"] for c in clauses) / max(1, len(clauses)),
                                   why="; ".join(failed) if failed else "all clauses pass"))
        return out


def item_questions(item: PromptItem) -> tuple[list[str], list[str]]:
    """(questions, expected answers): the item's own, or derived from GenEval metadata."""
    if item.questions:
        return list(item.questions), list(item.answers)
    if item.meta.get("geneval"):
        qs = geneval_questions(item.meta["geneval"])
        return qs, ["yes"] * len(qs)
    raise ValueError(f"prompt item '{item.id}' has no yes/no questions to ask (and no GenEval metadata)")


def _norm(answer: Any) -> str:
    a = str(answer).strip().lower().rstrip(".")
    return a if a in ("yes", "no") else ""


class VLMChecker:
    """Yes/no questions per image through a ``VLMClient`` (batched with ``ask_many``)."""

    def __init__(self, client: Any, *, name: str = "vlm-questions", max_side: int | None = None) -> None:
        self.client = client
        self.name = name
        self.max_side = max_side

    async def check_async(self, jobs: Sequence[tuple[PromptItem, Image.Image]]) -> list[CheckResult]:
        from arr_core.prompts.templates import build_check

        plans = [item_questions(item) for item, _ in jobs]
        reqs = [build_check(image, qs, max_side=self.max_side) for (_, image), (qs, _) in zip(jobs, plans, strict=True)]
        resps = await self.client.ask_many(reqs) if reqs else []
        out = []
        for (qs, expected), resp in zip(plans, resps, strict=True):
            parsed = resp.parsed if isinstance(resp.parsed, dict) else None
            answers = [""] * len(qs)
            if parsed and not resp.error and isinstance(parsed.get("answers"), list):
                for i, a in enumerate(parsed["answers"][: len(qs)]):
                    answers[i] = _norm(a.get("answer") if isinstance(a, dict) else a)
            abstained = not any(answers)
            ok = [a == e for a, e in zip(answers, expected, strict=True)]
            wrong = [q for q, good in zip(qs, ok, strict=True) if not good]
            out.append(CheckResult(passed=all(ok), score=sum(ok) / len(ok), answers=answers, abstained=abstained,
                                   why="no usable answer" if abstained else
                                   ("all answers as expected" if not wrong else "unexpected: " + " | ".join(wrong))))
        return out

    def check(self, jobs: Sequence[tuple[PromptItem, Image.Image]]) -> list[CheckResult]:
        from arr_core.bench.results import run_sync

        return run_sync(self.check_async(jobs))
