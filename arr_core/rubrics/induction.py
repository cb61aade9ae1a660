"""Rubric induction (ARR, "Auto-Rubric as Reward"): seed pairs → verified criteria → a rubric set.

Per seed pair (T2I: caption + N images; editing: instruction + source + N edits), following the
paper's propose–evaluate–revise loop:

1. *Generate* ``generate_number`` criteria; the generator sees the images and which one people
   preferred.
2. *Verify blind*: the judge template (the same one used at inference, never told the preference)
   ranks the images with the candidate criteria, in every order of ``verify_orders`` (both: as given
   and reversed). The pair passes only if every order recovers the human ranking; an order without a
   valid rank fails, so do disagreements between orders (ties).
3. *Revise* with feedback (which orders failed, the judge's ranks and reasons) and verify again, for
   at most ``max_epochs`` attempts in all. A pair that never passes is kept as *discarded* with its
   history.
4. Pool the passing criteria of all pairs, de-duplicate and select a diverse subset
   (:mod:`arr_core.rubrics.aggregate`), categorize into themes (:mod:`arr_core.rubrics.categorize`)
   and build a versioned :class:`~arr_core.rubrics.rubric_set.RubricSet`.

Deviations from the paper's released code, on purpose: its verifier is shown the expected ranks
(verification becomes a formality), accepts ties, never swaps image order and never verifies the
final revision; its selection is unseeded and its rubrics exist only as printed text.

Every attempt is a row of the store table ``induction_records`` (criteria, per-order ranks and
reasons, pass/fail, epoch). A pair's rows are keyed by its *induction key* — a digest of the pair's
content digest, the generator and verifier models, the prompt-template version and the parameters
that change attempts — so an interrupted induction resumes (finished pairs are read back, not asked
again) and an incremental induction (``parent``) reuses the parent's pairs.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from arr_core.data.records import PreferenceRecord
from arr_core.digest import canonical_json, digest_obj
from arr_core.errors import InputError
from arr_core.failures import FailureCounter, endpoint_name, is_transport_error
from arr_core.judge.judge import (
    JudgeItem,
    OrderResult,
    judge_request,
    order_result,
    presentation_orders,
)
from arr_core.prompts.templates import PROMPT_VERSION, build_generate, build_revise
from arr_core.rubrics.aggregate import normalize_criterion
from arr_core.rubrics.rubric_set import RubricSet, Theme

VERIFY_ORDERS: dict[str, str] = {"both": "swap", "single": "single"}
Progress = Callable[[int, int, "PairOutcome"], None]


# ---- results -------------------------------------------------------------------------------------

@dataclass
class Attempt:
    """One generate/revise + blind verification round of one pair."""

    epoch: int
    kind: str  # generate | revise
    criteria: list[str]
    orders: list[dict[str, Any]]  # per presented order: permutation, rank, reason, abstained, recovered
    passed: bool
    generator_reason: str = ""
    generator_error: str | None = None
    feedback: str | None = None  # what the next revision was told (None when passed or last)


@dataclass
class PairOutcome:
    pair_id: str
    induction_key: str
    status: str  # passed | discarded
    criteria: list[str]  # the passing attempt's criteria; [] when discarded
    attempts: list[Attempt]
    reused: bool = False  # read back from the store (resume or parent), no VLM calls made

    @property
    def epochs(self) -> int:
        return len(self.attempts)


@dataclass
class InductionResult:
    """Finished pairs (in record order) and the run's statistics. Pairs whose VLM calls failed in
    transport are not in ``per_pair``: they are not finished (nothing about them is recorded as
    done), ``failed_pairs`` counts them and a rerun asks them again."""

    per_pair: list[PairOutcome]
    stats: dict[str, Any] = field(default_factory=dict)
    failed_pairs: int = 0

    def passed_criteria(self) -> list[str]:
        """Criteria of the passing pairs, in pair order (the pool for selection)."""
        return [c for p in self.per_pair if p.status == "passed" for c in p.criteria]


# ---- keys and small helpers ----------------------------------------------------------------------

def client_model_id(client: Any) -> str:
    """"backend:model" of a VLMClient, used in induction keys and lineage."""
    return f"{client.backend.name}:{client.backend.model}"


def attempt_parameters(generate_number: int, max_epochs: int, verify_orders: str,
                       max_reasks: tuple[int, int]) -> dict[str, Any]:
    """Parameters that change a pair's attempts (and therefore its induction key)."""
    return {"generate_number": generate_number, "max_epochs": max_epochs, "verify_orders": verify_orders,
            "max_reasks": list(max_reasks)}


def induction_key(pair_id: str, generator: str, verifier: str, params: dict[str, Any]) -> str:
    return "ik-" + digest_obj({"pair_id": pair_id, "generator": generator, "verifier": verifier,
                               "prompt_version": PROMPT_VERSION, "params": params}, 24)


def check_seed_record(record: PreferenceRecord) -> None:
    """A seed pair needs a task the templates know and a strict human ranking."""
    if record.task not in ("t2i", "edit"):
        raise InputError(f"task {record.task!r} cannot seed induction (t2i or edit only)",
                         record=record.idx, field="task")
    rank = record.label_rank
    if rank is None:
        raise InputError("seed pairs need 'label_rank' (which image people preferred)",
                         record=record.idx, field="label_rank")
    if sorted(rank) != list(range(1, len(rank) + 1)):
        raise InputError(f"label_rank {rank} is not a strict ranking 1..{len(rank)}; tied seed pairs "
                         "carry no preference to explain", record=record.idx, field="label_rank")


def criteria_block(criteria: Sequence[str]) -> str:
    """Candidate criteria as the judge sees them: a numbered list (as a flat RubricSet's block)."""
    return "\n".join(f"{k}. {c}" for k, c in enumerate(criteria, 1))


def _names(task: str, n: int) -> list[str]:
    return [("Edited Image" if task == "edit" else "Image") + f" {k}" for k in range(1, n + 1)]


def feedback_text(record: PreferenceRecord, orders: list[OrderResult], recovered: list[bool]) -> str:
    """Feedback for the reviser, in the images' own numbering (which the reviser sees)."""
    names = _names(record.task, len(record.images))
    lines = []
    for o, ok in zip(orders, recovered, strict=True):
        shown = ", ".join(names[i] for i in o.permutation)
        head = f"Order shown [{shown}]"
        if o.abstained:
            lines.append(f"{head}: FAILED, the judge gave no valid ranking ({o.error}).")
            continue
        ranking = ", ".join(f"{names[i]}: {o.rank[i]}" for i in range(len(names)))
        status = "recovered the preference" if ok else "FAILED to recover the preference"
        mapping = "; ".join(f"position {p + 1} showed {names[i]}" for p, i in enumerate(o.permutation))
        lines.append(f"{head}: {status}. Judge's ranks ({ranking}). Judge's reason, which names images "
                     f"by position ({mapping}): {o.reason.strip() or '(none)'}")
    return "\n".join(lines)


def _recovered(record: PreferenceRecord, o: OrderResult) -> bool:
    return (not o.abstained) and o.rank == list(record.label_rank or [])


# ---- store I/O -----------------------------------------------------------------------------------

def _attempt_row(key: str, pair_id: str, dataset_id: str | None, a: Attempt,
                 final_status: str | None) -> dict[str, Any]:
    judge = {"kind": a.kind, "orders": a.orders, "generator_reason": a.generator_reason,
             "generator_error": a.generator_error, "feedback": a.feedback}
    return {"induction_key": key, "pair_id": pair_id, "dataset_id": dataset_id, "epoch": a.epoch,
            "criteria": canonical_json(a.criteria), "judge": canonical_json(judge), "passed": a.passed,
            "final_status": final_status}


def save_attempt(store: Any, key: str, pair_id: str, dataset_id: str | None, a: Attempt) -> None:
    store.execute("induction_record_upsert", _attempt_row(key, pair_id, dataset_id, a, None))


def finalize_pair(store: Any, outcome: PairOutcome) -> None:
    """Mark every attempt row of the pair with its final status: from now on it counts as finished."""
    store.execute("induction_record_finalize", {"induction_key": outcome.induction_key,
                                                "final_status": outcome.status})


def load_finished(store: Any, keys: Sequence[str]) -> dict[str, PairOutcome]:
    """Finished pairs (final status set) among ``keys``, rebuilt from their attempt rows."""
    if not keys:
        return {}
    rows = store.fetchall("induction_records_by_keys", {"keys": list(keys)})
    by_key: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_key.setdefault(r["induction_key"], []).append(r)
    out: dict[str, PairOutcome] = {}
    for key, rs in by_key.items():
        rs.sort(key=lambda r: r["epoch"])
        status = rs[-1]["final_status"]
        if status not in ("passed", "discarded"):
            continue  # interrupted mid-pair: run it again (its VLM calls are cache hits)
        attempts = []
        for r in rs:
            judge = json.loads(r["judge"])
            attempts.append(Attempt(epoch=r["epoch"], kind=judge["kind"], criteria=json.loads(r["criteria"]),
                                    orders=judge["orders"], passed=bool(r["passed"]),
                                    generator_reason=judge.get("generator_reason", ""),
                                    generator_error=judge.get("generator_error"),
                                    feedback=judge.get("feedback")))
        criteria = next((a.criteria for a in attempts if a.passed), []) if status == "passed" else []
        out[key] = PairOutcome(rs[0]["pair_id"], key, status, criteria, attempts, reused=True)
    return out


# ---- one pair ------------------------------------------------------------------------------------

class PairTransportError(Exception):
    """A VLM call of this pair failed in transport: the pair is not finished and not recorded as done."""


def _raise_on_transport(resp: Any) -> None:
    if is_transport_error(resp.error):
        raise PairTransportError(resp.error)

async def induce_pair(record: PreferenceRecord, key: str, client_gen: Any, client_ver: Any, *,
                      generate_number: int, max_epochs: int, verify_orders: str,
                      store: Any = None, dataset_id: str | None = None) -> PairOutcome:
    """Generate → verify blind → revise, for one seed pair. Each attempt is written to the store as
    it finishes; the pair's final status is written last."""
    check_seed_record(record)
    preferred = record.preferred_index()
    item = JudgeItem.from_record(record)
    perms = presentation_orders(len(record.images), VERIFY_ORDERS[verify_orders], key=record.pair_id)
    if store is not None:  # rows left by an interrupted run of this pair are replaced, not mixed in
        store.execute("induction_record_delete_pair", {"induction_key": key})
    attempts: list[Attempt] = []
    previous: list[str] | None = None
    feedback: str | None = None
    passed = False
    for epoch in range(max_epochs):
        if previous is None:
            kind = "generate"
            req = build_generate(record.task, record.prompt, list(record.images), source=record.source,
                                 preferred=preferred, n_rubrics=generate_number)
        else:
            kind = "revise"
            req = build_revise(record.task, record.prompt, list(record.images), source=record.source,
                               preferred=preferred, previous=previous, feedback=feedback or "",
                               n_rubrics=generate_number)
        resp = await client_gen.ask(req)
        _raise_on_transport(resp)  # an unreachable generator is no verdict on the pair
        parsed = resp.parsed if resp.error is None and isinstance(resp.parsed, dict) else None
        criteria = [c for c in (normalize_criterion(x) for x in (parsed or {}).get("rubrics", [])
                                if isinstance(x, str)) if c]
        attempt = Attempt(epoch=epoch, kind=kind, criteria=criteria, orders=[], passed=False,
                          generator_reason=str((parsed or {}).get("reason", "")),
                          generator_error=resp.error if parsed is None else None)
        if criteria:
            reqs = [judge_request(item, p, criteria_block(criteria)) for p in perms]
            resps = await client_ver.ask_many(reqs)
            for r in resps:
                _raise_on_transport(r)
            results = [order_result(p, r) for p, r in zip(perms, resps, strict=True)]
            recovered = [_recovered(record, o) for o in results]
            attempt.orders = [dict(asdict(o), recovered=ok) for o, ok in zip(results, recovered, strict=True)]
            passed = all(recovered)
            attempt.passed = passed
            if not passed:
                feedback = feedback_text(record, results, recovered)
                previous = criteria
        if not passed and epoch + 1 < max_epochs:
            attempt.feedback = feedback
        attempts.append(attempt)
        if store is not None:
            save_attempt(store, key, record.pair_id, dataset_id, attempt)
        if passed:
            break
    outcome = PairOutcome(record.pair_id, key, "passed" if passed else "discarded",
                          attempts[-1].criteria if passed else [], attempts)
    if store is not None:
        finalize_pair(store, outcome)
    return outcome


# ---- stage 1: all pairs --------------------------------------------------------------------------

def _client_counts(clients: Sequence[Any]) -> dict[str, int]:
    out: Counter[str] = Counter()
    seen: set[int] = set()
    for c in clients:
        if id(c) in seen:
            continue
        seen.add(id(c))
        s = c.stats()
        for k in ("calls", "cache_hits", "reasks", "failures", "prompt_tokens", "completion_tokens"):
            out[k] += int(s.get(k, 0))
    return dict(out)


def pair_keys(records: Sequence[PreferenceRecord], client_gen: Any, client_ver: Any, *, generate_number: int,
              max_epochs: int, verify_orders: str) -> list[str]:
    params = attempt_parameters(generate_number, max_epochs, verify_orders,
                                (client_gen.max_reasks, client_ver.max_reasks))
    gen, ver = client_model_id(client_gen), client_model_id(client_ver)
    return [induction_key(r.pair_id, gen, ver, params) for r in records]


async def generate_and_verify(records: Sequence[PreferenceRecord], client_gen: Any, client_ver: Any, *,
                              generate_number: int, max_epochs: int, verify_orders: str, concurrency: int,
                              store: Any = None, progress: Progress | None = None,
                              dataset_id: str | None = None,
                              reuse: dict[str, PairOutcome] | None = None,
                              max_failure_rate: float = 0.2, early_abort: int = 8) -> InductionResult:
    """Stage API: run (or read back) every pair's generate → verify → revise loop.

    generate_number, max_epochs, verify_orders, concurrency, max_failure_rate, early_abort: as in
    ``InduceConfig``. A pair whose VLM calls fail in transport is not finished (a rerun asks it
    again); past ``max_failure_rate`` of the pairs asked, or after ``early_abort`` such pairs in a row
    at the start, the stage raises ``EndpointError`` naming the endpoint (``arr_core.failures``).
    store: where attempts go and finished pairs are read back from (None: memory only, no resume).
    progress(done, total, outcome) is called after each pair; an exception it raises stops the run
    (pairs finished so far stay in the store). reuse: outcomes by induction key to take as they are
    (an incremental induction passes its parent's).
    """
    # The store is opened for each read and write and closed after it (DuckDB locks the whole file
    # while any connection is open): other processes (`arr store ls`, a judge run) get in between.
    return await _generate_and_verify(records, client_gen, client_ver, generate_number, max_epochs,
                                      verify_orders, concurrency, store, progress,
                                      dataset_id=dataset_id, reuse=reuse,
                                      policy=(max_failure_rate, early_abort))


async def _generate_and_verify(records: Sequence[PreferenceRecord], client_gen: Any, client_ver: Any,
                               generate_number: int, max_epochs: int, verify_orders: str, concurrency: int,
                               store: Any, progress: Progress | None, *, dataset_id: str | None,
                               reuse: dict[str, PairOutcome] | None,
                               policy: tuple[float, int]) -> InductionResult:
    for r in records:
        check_seed_record(r)
    seen: dict[str, int] = {}
    for r in records:
        if r.pair_id in seen:
            raise InputError(f"duplicate seed pair (same content as record {seen[r.pair_id]})",
                             record=r.idx)
        seen[r.pair_id] = r.idx
    keys = pair_keys(records, client_gen, client_ver, generate_number=generate_number, max_epochs=max_epochs,
                     verify_orders=verify_orders)
    finished = dict(reuse or {})
    if store is not None:
        finished.update(load_finished(store, [k for k in keys if k not in finished]))
    before = _client_counts([client_gen, client_ver])
    outcomes: dict[str, PairOutcome] = {k: finished[k] for k in keys if k in finished}
    todo = [(r, k) for r, k in zip(records, keys, strict=True) if k not in finished]
    total, done = len(records), len(outcomes)
    sem = asyncio.Semaphore(concurrency)
    stopping = [False]
    endpoints = {endpoint_name(client_gen), endpoint_name(client_ver)}
    failures = FailureCounter("induce", " / ".join(sorted(endpoints)), max_failure_rate=policy[0],
                              early_abort=policy[1])

    async def run(record: PreferenceRecord, key: str) -> None:
        nonlocal done
        async with sem:
            # Set before the semaphore is released, so no waiting pair starts after a failure.
            if stopping[0]:
                return
            try:
                try:
                    out = await induce_pair(record, key, client_gen, client_ver,
                                            generate_number=generate_number, max_epochs=max_epochs,
                                            verify_orders=verify_orders, store=store, dataset_id=dataset_id)
                except PairTransportError as e:
                    failures.fail(str(e))  # raises at once past the early-abort bound
                    return
                failures.ok()
                for c in {id(client_gen): client_gen, id(client_ver): client_ver}.values():
                    c.flush()  # the pair's answers reach the cache before it counts as done
                outcomes[key] = out
                done += 1
                if progress is not None:
                    progress(done, total, out)
            except BaseException:
                stopping[0] = True
                raise

    tasks = [asyncio.ensure_future(run(r, k)) for r, k in todo]
    try:
        if tasks:
            await asyncio.gather(*tasks)
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    finally:
        for c in {id(client_gen): client_gen, id(client_ver): client_ver}.values():
            c.flush()
    failures.check()
    per_pair = [outcomes[k] for k in keys if k in outcomes]
    after = _client_counts([client_gen, client_ver])
    stats = induction_stats(per_pair, {k: after.get(k, 0) - before.get(k, 0) for k in after})
    return InductionResult(per_pair, stats, failed_pairs=failures.failed)


def induction_stats(per_pair: Sequence[PairOutcome], vlm: dict[str, int]) -> dict[str, Any]:
    """Pairs used/passed/discarded/reused, the epochs histogram (attempts used by passing pairs;
    discarded pairs under "discarded") and this run's VLM calls and tokens."""
    hist: Counter[str] = Counter()
    for p in per_pair:
        hist[str(p.epochs) if p.status == "passed" else "discarded"] += 1
    return {
        "pairs_used": len(per_pair),
        "passed": sum(p.status == "passed" for p in per_pair),
        "discarded": sum(p.status == "discarded" for p in per_pair),
        "reused": sum(p.reused for p in per_pair),
        "epochs_histogram": dict(sorted(hist.items())),
        "vlm_calls": vlm.get("calls", 0),
        "vlm_cache_hits": vlm.get("cache_hits", 0),
        "vlm_reasks": vlm.get("reasks", 0),
        "vlm_failures": vlm.get("failures", 0),
        "prompt_tokens": vlm.get("prompt_tokens", 0),
        "completion_tokens": vlm.get("completion_tokens", 0),
    }


# ---- stages 2–4 ----------------------------------------------------------------------------------

def build_rubric_set(task: str, themes: list[Theme], criteria: list[str], *, generator_model: str,
                     verifier_model: str, parameters: dict[str, Any], dataset_digest: str | None,
                     parent_id: str | None, statistics: dict[str, Any],
                     pairs: Sequence[PairOutcome] = (), lineage_name: str | None = None) -> RubricSet:
    """The versioned rubric set. ``induction_pairs`` ([pair_id, induction_key] per pair) lets an
    incremental induction find this set's per-pair results; ``lineage_name`` (the pipeline or
    re-induction config's name) scopes ``parent: latest``; like statistics neither is in the id."""
    return RubricSet(task=task, themes=themes, criteria=list(criteria), metadata={
        "task": task, "generator_model": generator_model, "verifier_model": verifier_model,
        "prompt_version": PROMPT_VERSION, "parameters": parameters, "parent_id": parent_id,
        "dataset_digest": dataset_digest, "statistics": statistics,
        "induction_pairs": [[p.pair_id, p.induction_key] for p in pairs],
        **({"lineage_name": lineage_name} if lineage_name else {}),
    })


def parent_outcomes(store: Any, parent: RubricSet) -> tuple[dict[str, PairOutcome], list[str]]:
    """A parent's finished per-pair outcomes (by induction key) and its pair ids.

    A parent without per-pair records (imported from text) cannot be extended: InputError.
    """
    pairs = parent.metadata.get("induction_pairs") or []
    if not pairs:
        raise InputError(f"rubric set {parent.id} has no per-pair induction records (imported or "
                         "derived); induce without --parent", field="parent")
    keys = [k for _, k in pairs]
    found = load_finished(store, keys)
    missing = [k for k in keys if k not in found]
    if missing:
        raise InputError(f"the store lacks {len(missing)} of rubric set {parent.id}'s per-pair records "
                         f"(first: {missing[0]}); was it imported from another store?", field="parent")
    return found, [p for p, _ in pairs]
