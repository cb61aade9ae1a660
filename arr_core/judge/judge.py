"""The rubric-conditioned VLM judge: pairwise and listwise, T2I and editing.

ARR (Auto-Rubric as Reward) judges a group of candidate images with a VLM prompt that carries the
rubric block and asks for JSON ``{"rank": [...], "reason": "..."}``; the rank becomes the RPO reward
(winner 1.0, loser −0.1). Departures from the paper's released code, on purpose:

- The rank must be a permutation of 1..N of the right length. The client re-asks through the
  request's validator; an order that still has no valid rank *abstains* (counted, rewards 0) instead
  of crashing the caller.
- Position bias is handled by the order mode: ``single`` (images as given), ``swap`` (as given and
  reversed; agreement wins, disagreement is a tie) or ``random`` (one seeded permutation per item,
  recorded in the judgment). The reference always presents the images in the same order.
- Rewards: ``paper`` (rank 1 gets 1.0, every other image −0.1; ties and abstentions 0 for all) and
  ``linear`` (rank r of N gets 1.0 − 1.1·(r−1)/(N−1); with swap disagreement the mean rank over the
  orders is mapped, and a complete tie gives 0 to all). For N = 2 the two mappings agree.
- Any order without a valid rank makes the whole judgment an abstention: mixing one valid order with
  a missing one would bring position bias back in.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from arr_core.data.records import PreferenceRecord
from arr_core.digest import canonical_json, digest_obj
from arr_core.prompts.templates import build_judge
from arr_core.vlm.base import VLMRequest, VLMResponse

OrderMode = Literal["single", "swap", "random"]
RewardMapping = Literal["paper", "linear"]
ORDER_MODES: tuple[str, ...] = ("single", "swap", "random")
REWARD_MAPPINGS: tuple[str, ...] = ("paper", "linear")
WINNER_REWARD = 1.0
LOSER_REWARD = -0.1


@dataclass
class JudgeItem:
    """One group to judge: a prompt (caption or edit instruction), N ≥ 2 images, the edit source.

    ``key`` identifies the item (a record's pair id, or a digest of the images for RPO groups); it
    seeds the ``random`` order and names the judgment in the store.
    """

    task: str
    prompt: str
    images: list[Any]
    source: Any = None
    key: str = ""

    @classmethod
    def from_record(cls, record: PreferenceRecord) -> JudgeItem:
        if record.task not in ("t2i", "edit"):
            raise ValueError(f"record {record.idx}: field 'task' is {record.task!r}; the judge ranks "
                             "t2i or edit records (pointwise records have no ranking to judge)")
        return cls(task=record.task, prompt=record.prompt, images=list(record.images),
                   source=record.source, key=record.pair_id)


@dataclass
class OrderResult:
    """One presentation of the images to the VLM.

    permutation[j] = index (in the item's own order) of the image shown at position j.
    presented_rank: the VLM's rank list for the shown positions; rank: mapped back to the item's
    order (rank[i] is image i's rank). Both None when this order abstained.
    """

    permutation: list[int]
    presented_rank: list[int] | None
    rank: list[int] | None
    reason: str
    abstained: bool
    error: str | None = None
    cached: bool = False
    latency_s: float = 0.0
    attempts: int = 1
    usage: dict[str, int] = field(default_factory=dict)


@dataclass
class Judgment:
    """The judge's verdict on one item under one order mode."""

    key: str
    order_mode: str
    orders: list[OrderResult]
    final_rank: list[float] | None  # mean rank over orders (integers when they agree); None: abstained
    outcome: str  # win | tie | abstain
    rewards: list[float]
    rubric_set_id: str | None = None
    judge_model: str | None = None
    prompt_version: str | None = None

    @property
    def winner(self) -> int | None:
        """Index of the uniquely best image, or None for ties and abstentions."""
        if self.outcome != "win" or self.final_rank is None:
            return None
        best = min(self.final_rank)
        tops = [i for i, r in enumerate(self.final_rank) if r == best]
        return tops[0] if len(tops) == 1 else None

    @property
    def judgment_id(self) -> str:
        return "jd-" + digest_obj({
            "key": self.key, "rubric_set_id": self.rubric_set_id, "order_mode": self.order_mode,
            "permutations": [o.permutation for o in self.orders], "judge_model": self.judge_model,
            "prompt_version": self.prompt_version,
        }, 24)

    def to_row(self) -> dict[str, Any]:
        """A row for the store table ``judgments``."""
        return {
            "judgment_id": self.judgment_id,
            "rubric_set_id": self.rubric_set_id,
            "pair_id": self.key,
            "order_mode": self.order_mode,
            "orders": canonical_json([asdict(o) for o in self.orders]),
            "final_rank": canonical_json(self.final_rank) if self.final_rank is not None else None,
            "outcome": self.outcome,
            "rewards": canonical_json(self.rewards),
            "judge_model": self.judge_model,
        }


# ---- pure pieces ---------------------------------------------------------------------------------

def is_rank_permutation(rank: Any, n: int) -> str | None:
    """None when ``rank`` is a list of the integers 1..n in some order, else what is wrong."""
    if not isinstance(rank, list):
        return f"'rank' must be a list of {n} integers, got {type(rank).__name__}"
    if len(rank) != n:
        return f"'rank' must have {n} entries (one per image), got {len(rank)}"
    if not all(isinstance(r, int) and not isinstance(r, bool) for r in rank):
        return f"'rank' entries must be integers, got {rank}"
    if sorted(rank) != list(range(1, n + 1)):
        return f"'rank' must be a permutation of 1..{n} (no ties, no gaps), got {rank}"
    return None


def presentation_orders(n: int, mode: str, *, key: str = "", seed: int = 0) -> list[list[int]]:
    """Permutations to present: single → identity; swap → identity and reversed; random → one
    permutation drawn from (seed, key), so the same item always gets the same order."""
    if n < 2:
        raise ValueError(f"a judgment needs at least 2 images, got {n}")
    identity = list(range(n))
    if mode == "single":
        return [identity]
    if mode == "swap":
        return [identity, identity[::-1]]
    if mode == "random":
        perm = identity[:]
        random.Random(digest_obj({"seed": seed, "key": key})).shuffle(perm)
        return [perm]
    raise ValueError(f"order mode must be one of {', '.join(ORDER_MODES)}, got {mode!r}")


def unpermute(presented_rank: list[int], permutation: list[int]) -> list[int]:
    """Ranks of the shown positions → ranks in the item's own order."""
    rank = [0] * len(permutation)
    for pos, idx in enumerate(permutation):
        rank[idx] = presented_rank[pos]
    return rank


def combine_orders(ranks: Sequence[list[int] | None]) -> tuple[list[float] | None, str]:
    """(final rank, outcome) from the per-order ranks (item order). Any None → abstain; all equal →
    win with that rank; otherwise a tie with the mean rank."""
    if not ranks or any(r is None for r in ranks):
        return None, "abstain"
    first = ranks[0]
    if all(r == first for r in ranks):
        return [float(x) for x in first], "win"
    n = len(first)
    return [sum(r[i] for r in ranks) / len(ranks) for i in range(n)], "tie"


def map_rewards(final_rank: list[float] | None, outcome: str, mapping: str) -> list[float] | None:
    """Rewards per image (item order); None only when ``final_rank`` is None (the caller knows n)."""
    if mapping not in REWARD_MAPPINGS:
        raise ValueError(f"reward mapping must be one of {', '.join(REWARD_MAPPINGS)}, got {mapping!r}")
    if final_rank is None:
        return None
    n = len(final_rank)
    if outcome == "abstain" or len(set(final_rank)) == 1:
        return [0.0] * n
    if mapping == "paper":
        if outcome != "win":
            return [0.0] * n
        return [WINNER_REWARD if r == 1 else LOSER_REWARD for r in final_rank]
    # Interpolated from both ends so that rank 1 and rank N give exactly 1.0 and −0.1.
    return [(WINNER_REWARD * (n - r) + LOSER_REWARD * (r - 1)) / (n - 1) for r in final_rank]


def rank_validator(n: int) -> Callable[[dict[str, Any]], str | None]:
    """Validator for a judge answer over ``n`` images (used when a template sets none)."""
    return lambda obj: is_rank_permutation(obj.get("rank"), n)


def judge_request(item: JudgeItem, permutation: list[int], rubric_block: str | None) -> VLMRequest:
    """The blind judge request for ``item`` shown in ``permutation`` order (no labels anywhere)."""
    shown = [item.images[i] for i in permutation]
    req = build_judge(item.task, item.prompt, shown, source=item.source, rubrics_block=rubric_block)
    if req.validator is None:
        req.validator = rank_validator(len(shown))
    return req


def order_result(permutation: list[int], resp: VLMResponse) -> OrderResult:
    """Turn one VLM answer into an OrderResult; anything but a valid permutation abstains."""
    n = len(permutation)
    parsed = resp.parsed if isinstance(resp.parsed, dict) else None
    reason = str(parsed.get("reason", "")) if parsed else ""
    problem = resp.error or (is_rank_permutation(parsed.get("rank"), n) if parsed else "no JSON answer")
    common = dict(cached=resp.cached, latency_s=resp.latency_s, attempts=resp.attempts, usage=dict(resp.usage))
    if problem:
        return OrderResult(permutation, None, None, reason, True, error=str(problem), **common)
    presented = list(parsed["rank"])
    return OrderResult(permutation, presented, unpermute(presented, permutation), reason, False, **common)


def assemble(item: JudgeItem, orders: list[OrderResult], order_mode: str, mapping: str, *,
             rubric_set_id: str | None, judge_model: str | None, prompt_version: str | None) -> Judgment:
    final, outcome = combine_orders([o.rank for o in orders])
    rewards = map_rewards(final, outcome, mapping) or [0.0] * len(item.images)
    return Judgment(item.key, order_mode, orders, final, outcome, rewards, rubric_set_id=rubric_set_id,
                    judge_model=judge_model, prompt_version=prompt_version)


# ---- the batch API -------------------------------------------------------------------------------

def _client_model(client: Any) -> str | None:
    backend = getattr(client, "backend", None)
    if backend is None:
        return None
    return f"{getattr(backend, 'name', '?')}:{getattr(backend, 'model', '?')}"


async def judge_many(client: Any, items: Sequence[JudgeItem | PreferenceRecord], *,
                     rubric_block: str | None = None, rubric_set_id: str | None = None,
                     order: str = "swap", mapping: str = "paper", seed: int = 0,
                     store: Any = None,
                     on_progress: Callable[[int, int], None] | None = None) -> list[Judgment]:
    """Judge many items at once: every (item, order) request goes to ``client.ask_many`` together,
    so the client's concurrency cap and cache apply across the batch.

    client: an ``arr_core.vlm.client.VLMClient``; rubric_block: ``RubricSet.prompt_block()`` or None
    (judge without rubrics); rubric_set_id: recorded with each judgment; order: single|swap|random;
    mapping: paper|linear; seed: seeds the random order; store: when given, judgments are written to
    the ``judgments`` table in one transaction; on_progress: called as ``on_progress(done, total)`` in
    items (``total`` = ``len(items)``), ``done`` rising to ``total``: the share of the batch's requests
    answered, in items' worth (with ``swap`` two answers make one item).
    """
    if order not in ORDER_MODES:
        raise ValueError(f"order must be one of {', '.join(ORDER_MODES)}, got {order!r}")
    if mapping not in REWARD_MAPPINGS:
        raise ValueError(f"mapping must be one of {', '.join(REWARD_MAPPINGS)}, got {mapping!r}")
    norm = [JudgeItem.from_record(it) if isinstance(it, PreferenceRecord) else it for it in items]
    plan: list[tuple[int, list[int]]] = []
    reqs: list[VLMRequest] = []
    for i, item in enumerate(norm):
        for perm in presentation_orders(len(item.images), order, key=item.key, seed=seed):
            plan.append((i, perm))
            reqs.append(judge_request(item, perm, rubric_block))
    tick = _item_progress(on_progress, len(norm), len(reqs)) if on_progress is not None else None
    resps = await client.ask_many(reqs, tick) if reqs else []
    per_item: list[list[OrderResult]] = [[] for _ in norm]
    for (i, perm), resp in zip(plan, resps, strict=True):
        per_item[i].append(order_result(perm, resp))
    model = _client_model(client)
    pv = reqs[0].prompt_version if reqs else None
    judgments = [assemble(item, per_item[i], order, mapping, rubric_set_id=rubric_set_id,
                          judge_model=model, prompt_version=pv) for i, item in enumerate(norm)]
    if store is not None and judgments:
        save_judgments(store, judgments)
    return judgments


def _item_progress(on_progress: Callable[[int, int], None], total: int,
                   n_reqs: int) -> Callable[[int, int], None]:
    """The client's per-request progress as ``on_progress(items done, total)``, reported when it rises."""
    last = -1

    def tick(done: int, _n: int) -> None:
        nonlocal last
        items = done * total // n_reqs
        if items > last:
            last = items
            on_progress(items, total)

    return tick


def save_judgments(store: Any, judgments: Sequence[Judgment]) -> None:
    """Upsert judgments into the store table ``judgments`` (idempotent by judgment id)."""
    store.executemany("judgment_upsert", [j.to_row() for j in judgments])
