"""The induction recipe (ARR): the one place that composes rubric induction from an ``InduceConfig``.

``arr induce`` and the benchmarks call :func:`induce_rubrics` (all stages in one process); the
Prefect induction tasks (``tasks/induce.py``) call the stage functions below one by one, so each
stage is cached and retried on its own. Both paths share the same pieces, written once here:
the VLM clients, the parent reuse of an incremental induction, and the final step (statistics merge,
"unchanged parent" check, the versioned rubric set written to the store). Components below take
plain values (``arr_core.rubrics.induction.generate_and_verify``, ``aggregate.select_criteria``,
``categorize.categorize_criteria``).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from arr_core.errors import ArrError, InputError
from arr_core.rubrics.induction import (
    InductionResult,
    PairOutcome,
    Progress,
    build_rubric_set,
    client_model_id,
    generate_and_verify,
    induction_stats,
    load_finished,
    parent_outcomes,
)
from arr_core.rubrics.rubric_set import RubricSet, Theme


def endpoint_names(gen: Any, ver: Any) -> str:
    """The generator's and verifier's endpoints, for messages (no credentials)."""
    from arr_core.failures import endpoint_name

    return " / ".join(sorted({endpoint_name(gen), endpoint_name(ver)}))


def build_clients(cfg: Any, store: Any) -> tuple[Any, Any]:
    """(generator, verifier) VLM clients of an ``InduceConfig``, caching in ``store`` (None: memory).
    Without a separate ``verifier`` the generator's client verifies too."""
    from arr_core.rubrics.config import with_retries
    from arr_core.vlm.config import build_client

    gen = build_client(with_retries(cfg.generator, cfg.retries), store)
    ver = gen if cfg.verifier is None else build_client(with_retries(cfg.verifier_config(), cfg.retries), store)
    return gen, ver


@dataclass
class ParentReuse:
    """What an incremental induction takes over from its parent rubric set."""

    parent: RubricSet | None = None
    prior: list[PairOutcome] = field(default_factory=list)  # the parent's per-pair outcomes, in order
    known: set[str] = field(default_factory=set)  # the parent's pair ids


def reuse_parent(store: Any, parent_id: str | None, task: str) -> ParentReuse:
    """The parent's finished per-pair outcomes; an unknown id, a parent of another task or one without
    per-pair records (imported from text) is an ``InputError`` naming ``parent``."""
    if parent_id is None:
        return ParentReuse()
    parent = store.get_rubric_set(parent_id)
    if parent.task != task:
        raise InputError(f"parent {parent.id} is a {parent.task} rubric set but the pairs are {task}",
                         field="parent")
    reuse, parent_pairs = parent_outcomes(store, parent)
    return ParentReuse(parent, [reuse[k] for _, k in parent.metadata["induction_pairs"]], set(parent_pairs))


def latest_in_lineage(store: Any, task: str, lineage_name: str | None) -> str | None:
    """The newest extendable rubric set of ``task`` made under ``lineage_name`` (the pipeline or
    re-induction config's name; None: any). Extendable: it has per-pair induction records."""
    for row in store.list_rubric_sets():  # newest first
        if row.get("task") != task:
            continue
        rs = store.get_rubric_set(row["rubric_set_id"])
        if rs.metadata.get("induction_pairs") and (lineage_name is None
                                                   or rs.metadata.get("lineage_name") == lineage_name):
            return rs.id
    return None


async def run_pairs_async(records: Sequence[Any], cfg: Any, store: Any, clients: tuple[Any, Any], *,
                          dataset_id: str | None, reuse: ParentReuse, progress: Progress | None = None
                          ) -> tuple[list[PairOutcome], InductionResult, int]:
    """Stages 1–3 for the records the parent does not already cover. Returns (all per-pair outcomes,
    parent's first; this run's result; the number of new records)."""
    new = [r for r in records if r.pair_id not in reuse.known]
    gen, ver = clients
    result = await generate_and_verify(
        new, gen, ver, generate_number=cfg.generate_number, max_epochs=cfg.max_epochs,
        verify_orders=cfg.verify_orders, concurrency=cfg.concurrency, store=store, progress=progress,
        dataset_id=dataset_id, max_failure_rate=cfg.max_failure_rate, early_abort=cfg.early_abort)
    return reuse.prior + result.per_pair, result, len(new)


def run_pairs(records: Sequence[Any], cfg: Any, store: Any, clients: tuple[Any, Any], *,
              dataset_id: str | None, reuse: ParentReuse, progress: Progress | None = None
              ) -> tuple[list[PairOutcome], InductionResult, int]:
    """``run_pairs_async`` in its own event loop (the clients must not be used in another loop after)."""
    return asyncio.run(run_pairs_async(records, cfg, store, clients, dataset_id=dataset_id, reuse=reuse,
                                       progress=progress))


def pooled_criteria(per_pair: Sequence[PairOutcome]) -> list[str]:
    return [c for p in per_pair if p.status == "passed" for c in p.criteria]


def select(criteria: Sequence[str], cfg: Any) -> list[str]:
    """Stage 4a: de-duplicate and select up to ``max_rubrics`` criteria (seeded)."""
    from arr_core.rubrics.aggregate import select_criteria

    return select_criteria(criteria, max_rubrics=cfg.max_rubrics, seed=cfg.selection_seed,
                           dedup_threshold=cfg.dedup_threshold)


async def categorize_async(criteria: list[str], client: Any, cfg: Any, task: str
                           ) -> tuple[list[Theme], bool, dict[str, int]]:
    """Stage 4b: themes with tips (flat list on an unusable answer), and the VLM counters it spent."""
    from arr_core.rubrics.categorize import categorize_criteria

    before = client.stats()
    themes, fallback = await categorize_criteria(list(criteria), client, categories_number=cfg.categories_number,
                                                 task=task)
    after = client.stats()
    spent = {k: int(after.get(k, 0)) - int(before.get(k, 0)) for k in ("calls", "prompt_tokens", "completion_tokens")}
    return themes, fallback, spent


def categorize(criteria: list[str], client: Any, cfg: Any, task: str) -> tuple[list[Theme], bool, dict[str, int]]:
    """``categorize_async`` in its own event loop."""
    return asyncio.run(categorize_async(criteria, client, cfg, task))


def finish(store: Any, *, task: str, criteria: list[str], themes: list[Theme], fallback: bool,
           per_pair: Sequence[PairOutcome], stats: dict[str, Any], categorize_spent: dict[str, int],
           generator_model: str, verifier_model: str, parameters: dict[str, Any], dataset_digest: str | None,
           parent: RubricSet | None, lineage_name: str | None = None) -> tuple[RubricSet, bool]:
    """Stage 5: merge the categorization's VLM counters into the statistics and write the versioned
    rubric set to the store. With a parent whose criteria are unchanged no new version is made: the
    parent comes back (second value True)."""
    if parent is not None and list(parent.criteria) == list(criteria):
        return parent, True
    if not criteria:  # never store a rubric set without criteria: it would judge nothing
        passed = sum(p.status == "passed" for p in per_pair)
        raise ArrError(f"no criteria to store: {passed} of {len(per_pair)} seed pairs passed blind "
                       f"verification (statistics: {dict((k, v) for k, v in stats.items() if 'pairs' in k)}); "
                       "nothing was stored. Check the VLM (generator and verifier) or raise max_epochs")
    stats = merged_statistics(stats, criteria, fallback, categorize_spent)
    rs = build_rubric_set(task, themes, list(criteria), generator_model=generator_model,
                          verifier_model=verifier_model, parameters=parameters, dataset_digest=dataset_digest,
                          parent_id=parent.id if parent else None, statistics=stats, pairs=per_pair,
                          lineage_name=lineage_name)
    store.put_rubric_set(rs)
    return rs, False


def merged_statistics(stats: dict[str, Any], criteria: Sequence[str], fallback: bool,
                      categorize_spent: dict[str, int]) -> dict[str, Any]:
    """The generation statistics plus the selection and the categorization's VLM counters."""
    stats = dict(stats, criteria_selected=len(criteria), categorize_fallback=fallback)
    stats["vlm_calls"] = stats.get("vlm_calls", 0) + categorize_spent.get("calls", 0)
    for k in ("prompt_tokens", "completion_tokens"):
        stats[k] = stats.get(k, 0) + categorize_spent.get(k, 0)
    return stats


def run_statistics(per_pair: Sequence[PairOutcome], result: InductionResult, n_new: int, n_prior: int,
                   pooled: int) -> dict[str, Any]:
    """Per-pair statistics over all pairs plus this run's VLM counters."""
    stats = dict(induction_stats(per_pair, {}), **{k: v for k, v in result.stats.items()
                                                  if k.startswith("vlm_") or k.endswith("_tokens")})
    stats.update(new_pairs=n_new, reused_pairs=n_prior, criteria_pooled=pooled,
                 pairs_transport_failed=result.failed_pairs)
    return stats


def induce_rubrics(dataset: Any, cfg: Any, store: Any, *, parent_id: str | None = None, client_gen: Any = None,
                   client_ver: Any = None, progress: Progress | None = None,
                   lineage_name: str | None = None, skip_tied: bool = False) -> RubricSet:
    """Induce a rubric set from every record of ``dataset`` (an ``arr_core.data.dataset.Dataset``):
    generate → verify blind/refine → select → categorize → store.

    Clients default to the ones ``cfg`` describes (``build_clients``), caching in ``store``. With
    ``parent_id`` the parent's pairs are reused and only new pairs are asked; when the selected
    criteria equal the parent's the parent itself comes back (no new version). The dataset is
    recorded in the store (idempotent) so lineage can name it. ``skip_tied``: records whose
    ``label_rank`` ties are set aside (counted as ``tied_pairs_skipped``) instead of refused — they carry
    no preference to explain; the stored dataset keeps them.
    """
    if not dataset.records:
        raise InputError("the dataset has no records", file=dataset.source_uri)
    task = dataset.task
    if client_gen is None:
        client_gen, built_ver = build_clients(cfg, store)
        client_ver = client_ver or built_ver
    client_ver = client_ver or client_gen
    dataset_id = store.put_dataset(dataset)
    digest = dataset.digest  # lineage names the stored dataset, tied pairs included
    tied = [r for r in dataset.records if skip_tied and r.label_rank is not None
            and len(set(r.label_rank)) < len(r.label_rank)]
    if tied:
        if len(tied) == len(dataset.records):
            raise InputError(f"all {len(tied)} pairs have a tied label: no preference to induce rubrics from",
                             file=dataset.source_uri, field="label_rank")
        dataset = dataclasses.replace(dataset, records=[r for r in dataset.records if r not in tied])
    # One event loop for every VLM call: an HTTP client's pooled connections belong to the loop that
    # opened them. The store is opened per write (see generate_and_verify): readers are never locked out.
    return asyncio.run(_induce(dataset, cfg, store, task, (client_gen, client_ver), dataset_id, parent_id,
                               progress, lineage_name, len(tied), digest))


async def _induce(dataset: Any, cfg: Any, store: Any, task: str, clients: tuple[Any, Any], dataset_id: str,
                  parent_id: str | None, progress: Progress | None, lineage_name: str | None,
                  n_tied: int = 0, dataset_digest: str | None = None) -> RubricSet:
    client_gen, client_ver = clients
    reuse = reuse_parent(store, parent_id, task)
    per_pair, result, n_new = await run_pairs_async(dataset.records, cfg, store, clients, dataset_id=dataset_id,
                                                    reuse=reuse, progress=progress)
    pool = pooled_criteria(per_pair)
    selected = select(pool, cfg)
    if reuse.parent is not None and selected == list(reuse.parent.criteria):
        return reuse.parent
    stats = run_statistics(per_pair, result, n_new, len(reuse.prior), len(pool))
    if n_tied:
        stats["tied_pairs_skipped"] = n_tied
    themes, fallback, spent = await categorize_async(selected, client_gen, cfg, task)
    rs, _ = finish(store, task=task, criteria=selected, themes=themes, fallback=fallback, per_pair=per_pair,
                   stats=stats, categorize_spent=spent, generator_model=client_model_id(client_gen),
                   verifier_model=client_model_id(client_ver), parameters=cfg.parameters(),
                   dataset_digest=dataset_digest or dataset.digest, parent=reuse.parent, lineage_name=lineage_name)
    return rs


def finished_outcomes(store: Any, keys: Sequence[str]) -> list[PairOutcome]:
    """The finished per-pair outcomes of ``keys`` (induction keys), in order, skipping unknown keys."""
    found = load_finished(store, list(keys))
    return [found[k] for k in keys if k in found]
