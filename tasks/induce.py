"""Induction tasks (ARR): generate → blind verify/refine, select, categorize, store.

Each task wraps one stage API of :mod:`arr_core.rubrics.induction` and returns small values: the
per-pair attempts live in the store (``induction_records``), tasks pass induction keys, criteria
lists (≤ ``max_rubrics``) and ids. Keys are content digests (dataset digest + split, the stage config
without secrets, the prompt-template version, the code version), so a rerun with equal inputs is a
cache hit that makes no VLM call; a VLM-bound task retries on failure, and its retry is cheap because
finished pairs and VLM answers are read back from the store.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from arr_core.errors import EndpointError
from tasks import _mlflow as mlf
from tasks._artifacts import publish_stage
from tasks._cache import keyed_by
from tasks.common import fail_point, home_path, open_store, retry_transient


def prompt_version() -> str:
    """The current prompt-template version (read at call time so tests can change it)."""
    from arr_core.prompts import templates

    return templates.PROMPT_VERSION


@task(cache_key_fn=keyed_by("dataset_digest", "split_digest", "parent_id", "induce_cfg", "prompt_version"),
      persist_result=True, result_serializer="json", retries=2, retry_delay_seconds=5,
      retry_condition_fn=retry_transient)
def generate_and_verify_pairs(dataset_id: str, dataset_digest: str, split_digest: str, pair_ids: list[str],
                              induce_cfg: Any, prompt_version: str, home: str,
                              parent_id: str | None = None) -> dict[str, Any]:
    """Stage 1–3 for every seed pair (generate K criteria, verify blind in both orders, revise).

    With ``parent_id`` the parent's per-pair results are reused and only new pairs are asked.
    Returns the ``[pair_id, induction_key]`` list and the run statistics (calls, tokens, passed).
    """
    from arr_core.recipes import induce as recipe

    fail_point("induce")
    store = open_store(home)
    wanted = set(pair_ids)
    records = [r for r in store.get_dataset_records(dataset_id) if r.pair_id in wanted]
    task_kind = records[0].task if records else "t2i"
    reuse = recipe.reuse_parent(store, parent_id, task_kind)
    gen, ver = recipe.build_clients(induce_cfg, store)
    t0 = time.perf_counter()
    per_pair, result, n_new = recipe.run_pairs(records, induce_cfg, store, (gen, ver), dataset_id=dataset_id,
                                               reuse=reuse)
    stats = dict(recipe.run_statistics(per_pair, result, n_new, len(reuse.prior),
                                       len(recipe.pooled_criteria(per_pair))),
                 wall_s=round(time.perf_counter() - t0, 3))
    if result.failed_pairs:  # never cache a partial stage: the retry (or rerun) asks only the failed pairs
        raise EndpointError(f"induce: {result.failed_pairs} of {n_new} seed "
                            f"pairs failed in transport against {recipe.endpoint_names(gen, ver)}; finished pairs "
                            "are stored and reused when the stage runs again")
    return {"pairs": [[p.pair_id, p.induction_key] for p in per_pair], "stats": stats,
            "generator_model": f"{gen.backend.name}:{gen.backend.model}",
            "verifier_model": f"{ver.backend.name}:{ver.backend.model}"}


@task(cache_key_fn=keyed_by("pairs", "max_rubrics", "selection_seed", "dedup_threshold"),
      persist_result=True, result_serializer="json")
def select_criteria(pairs: list[list[str]], max_rubrics: int, selection_seed: int, dedup_threshold: float,
                    home: str) -> list[str]:
    """Stage 4a: pool the passing pairs' criteria (read back from the store by induction key),
    de-duplicate, select a diverse subset deterministically."""
    from arr_core.recipes import induce as recipe
    from arr_core.rubrics.aggregate import select_criteria as select

    pool = recipe.pooled_criteria(recipe.finished_outcomes(open_store(home), [k for _, k in pairs]))
    return select(pool, max_rubrics=max_rubrics, seed=selection_seed, dedup_threshold=dedup_threshold)


@task(cache_key_fn=keyed_by("criteria", "categories_number", "generator", "retries", "task_kind",
                            "prompt_version"),
      persist_result=True, result_serializer="json", retries=2, retry_delay_seconds=5,
      retry_condition_fn=retry_transient)
def categorize_criteria(criteria: list[str], categories_number: int, generator: Any, retries: int | None,
                        task_kind: str, prompt_version: str, home: str) -> dict[str, Any]:
    """Stage 4b: group the selected criteria into at most ``categories_number`` themes with tips
    (a flat list when the VLM's answer is unusable)."""
    from types import SimpleNamespace

    from arr_core.recipes import induce as recipe
    from arr_core.rubrics.config import with_retries
    from arr_core.vlm.config import build_client

    client = build_client(with_retries(generator, retries), open_store(home))
    themes, fallback, spent = recipe.categorize(list(criteria), client,
                                                SimpleNamespace(categories_number=categories_number), task_kind)
    return {"themes": [t.model_dump() for t in themes], "fallback": fallback, "vlm_calls": spent["calls"],
            "prompt_tokens": spent["prompt_tokens"], "completion_tokens": spent["completion_tokens"]}


@task(cache_key_fn=keyed_by("task_kind", "criteria", "categories", "generation", "induce_params",
                            "dataset_digest", "parent_id", "lineage_name"),
      persist_result=True, result_serializer="json", retries=1, retry_delay_seconds=2,
      retry_condition_fn=retry_transient)
def store_rubric_set(task_kind: str, criteria: list[str], categories: dict[str, Any],
                     generation: dict[str, Any], induce_params: dict[str, Any], dataset_digest: str,
                     dataset: dict[str, Any], parent_id: str | None, induce_cfg: Any, experiment: str,
                     parent_run_id: str | None, home: str, lineage_name: str | None = None) -> dict[str, Any]:
    """Stage 5: build the versioned rubric set, write it to the store, export JSON + reference text
    under ``ARR_HOME/rubric_sets``, and record the ``induce`` child run in MLflow.

    With a parent whose criteria are unchanged, no new version is made: the parent id comes back.
    """
    from arr_core.recipes import induce as recipe
    from arr_core.rubrics.rubric_set import Theme

    store = open_store(home)
    per_pair = recipe.finished_outcomes(store, [k for _, k in generation["pairs"]])
    parent = store.get_rubric_set(parent_id) if parent_id is not None else None
    spent = {"calls": categories["vlm_calls"], "prompt_tokens": categories["prompt_tokens"],
             "completion_tokens": categories["completion_tokens"]}
    rs, unchanged = recipe.finish(
        store, task=task_kind, criteria=list(criteria), themes=[Theme(**t) for t in categories["themes"]],
        fallback=categories["fallback"], per_pair=per_pair, stats=generation["stats"], categorize_spent=spent,
        generator_model=generation["generator_model"], verifier_model=generation["verifier_model"],
        parameters=induce_params, dataset_digest=dataset_digest, parent=parent, lineage_name=lineage_name)
    stats = recipe.merged_statistics(generation["stats"], criteria, categories["fallback"], spent)
    out = home_path(home) / "rubric_sets"
    out.mkdir(parents=True, exist_ok=True)
    json_path, text_path = out / f"{rs.id}.json", out / f"{rs.id}.txt"
    json_path.write_text(rs.to_json(), encoding="utf-8")
    text_path.write_text(rs.to_text(), encoding="utf-8")

    tags = {"arr.dataset_digest": dataset_digest, "arr.rubric_set_id": rs.id,
            "arr.parent_rubric_set_id": parent_id, "arr.prompt_version": rs.metadata.get("prompt_version"),
            "arr.generator_model": generation["generator_model"],
            "arr.verifier_model": generation["verifier_model"], "arr.unchanged": str(unchanged).lower()}
    metrics = {k: v for k, v in stats.items() if isinstance(v, (int, float))}
    metrics.update(n_themes=len(rs.themes), n_criteria=len(rs.criteria))
    with mlf.stage_run(experiment, "induce", home=home_path(home), parent_run_id=parent_run_id,
                       params=induce_cfg, tags=tags) as run_id:
        mlf.log_input(run_id, name=dataset.get("name") or "preference-pairs", digest=dataset_digest,
                      source_uri=dataset.get("source_uri") or "", context="induction")
        mlf.log_metrics(run_id, metrics)
        mlf.log_artifact(run_id, json_path, "rubric_set")
        mlf.log_artifact(run_id, text_path, "rubric_set")
    publish_stage("induce", f"rubric set {rs.id}", {**tags, **metrics},
                  table=[{"theme": t.theme, "tips": len(t.tips)} for t in rs.themes],
                  markdown=f"```\n{rs.to_text()}\n```", mlflow_run_id=run_id)
    return {"stage": "induce", "entity_kind": "rubric_set", "entity_id": rs.id, "mlflow_run_id": run_id,
            "rubric_set_id": rs.id, "unchanged": unchanged, "tags": tags, "metrics": metrics,
            "artifacts": {"rubric_set_json": str(json_path), "rubric_set_text": str(text_path)}}


def rubric_set_uri(result: dict[str, Any]) -> Path:
    return Path(result["artifacts"]["rubric_set_json"])


@task(cache_policy=NO_CACHE)
def resolve_parent(parent: str | None, task_kind: str, home: str, lineage_name: str | None = None) -> str | None:
    """``'latest'`` → the newest rubric set of ``task_kind`` in this lineage (made under the config
    name ``lineage_name``) that has per-pair induction records (so it can be extended): another
    experiment's rubric sets in the same store are never picked. An id or prefix → that id."""
    from arr_core.recipes.induce import latest_in_lineage

    if parent is None:
        return None
    store = open_store(home)
    if parent != "latest":
        return store.resolve_rubric_set_id(parent)
    return latest_in_lineage(store, task_kind, lineage_name)
