"""Data tasks: make scene-world pairs (cached), load + register a preference dataset in the store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks._artifacts import publish_stage
from tasks._cache import keyed_by
from tasks.common import fail_point, home_path, open_store, retry_transient


@task(cache_key_fn=keyed_by("world"), persist_result=True, result_serializer="json")
def make_world_pairs(world: dict[str, Any], home: str) -> dict[str, Any]:
    """Scene-world preference pairs (ARR reference JSON + PNGs) under ``ARR_HOME/data``.

    Keyed by the generator settings and the world's code version: equal settings give equal bytes.
    """
    from arr_core.digest import digest_obj
    from arr_core.sim.world.pairs import make_pairs
    from tasks._cache import code_version

    out = home_path(home) / "data" / f"world-{world['task']}-{digest_obj(world, 12)}"
    path = make_pairs(world["task"], int(world["n"]), int(world["seed"]), out, size=int(world["size"]))
    # Equal settings and world code give equal bytes: this key stands for the file's content.
    return {"pairs_uri": str(path), "content_key": digest_obj({"world": world, "code": code_version(__file__)}, 24)}


@task(cache_policy=NO_CACHE, retries=1, retry_delay_seconds=2,
      retry_condition_fn=retry_transient)
def register_dataset(pairs_uri: str, task: str | None, split_kw: dict[str, Any], home: str,
                     max_seed_pairs: int | None = None, content_key: str | None = None,
                     root: str | None = None, data_format: str | None = None,
                     allow_ties: bool = False) -> dict[str, Any]:
    """Load a preference file (checks every record and image), store it, return its digests.
    ``root``/``data_format``: the config's data.root and data.format (None: the file's folder; detected).
    ``allow_ties`` (data.allow_ties): records whose label ties are loaded and stored, but set aside from
    every split (no preference to induce from or to score) and counted as ``n_tied_labels``.

    Not cached on purpose: reading and hashing is cheap, and the digest it returns is what every
    later cache key is built from (a path string would not notice edits to the file).
    """
    from arr_core.data.dataset import load_dataset
    from arr_core.digest import digest_obj

    fail_point("data")
    ds = load_dataset(Path(pairs_uri), task=task, root=root, format=data_format, allow_ties=allow_ties)
    store = open_store(home)
    dataset_id = store.put_dataset(ds, split_kw=split_kw)
    # The split is computed here from the config, not read back from the store: the store keeps the
    # split of the first registration, and a later config may use other fractions or salt.
    tied = {r.pair_id for r in ds.records if r.label_rank is not None and len(set(r.label_rank)) < len(r.label_rank)}
    splits = {name: sorted(r.pair_id for r in recs if r.pair_id not in tied)
              for name, recs in ds.split(**split_kw).items()}
    if max_seed_pairs is not None:
        splits["seed"] = splits["seed"][:max_seed_pairs]
    publish_stage("data", f"dataset {dataset_id}", {"dataset id": dataset_id, "name": ds.name, "task": ds.task,
                  "records": len(ds.records), "splits": {n: len(ids) for n, ids in splits.items()},
                  "digest": ds.digest, "source": ds.source_uri})
    return {"dataset_id": dataset_id, "digest": ds.digest, "name": ds.name, "task": ds.task,
            "source_uri": ds.source_uri, "n_records": len(ds.records),
            "splits": {name: len(ids) for name, ids in splits.items()},
            "split_digest": digest_obj(splits, 16), "pair_ids": splits, **({"n_tied_labels": len(tied)} if tied else {})}


# Scene-world pairs are fully determined by their generator settings and the world's code, so their
# registration can be cached by that content key (a user's file is loaded and hashed every run). A task
# of its own, not register_dataset.with_options: that would carry both NO_CACHE and a key function, and
# Prefect warns on every run.
@task(name="register_world_dataset", cache_key_fn=keyed_by("content_key", "task", "split_kw", "max_seed_pairs"),
      persist_result=True, result_serializer="json", retries=1, retry_delay_seconds=2,
      retry_condition_fn=retry_transient)
def register_world_dataset(pairs_uri: str, task: str | None, split_kw: dict[str, Any], home: str,
                           max_seed_pairs: int | None = None, content_key: str | None = None) -> dict[str, Any]:
    """``register_dataset`` for generated scene-world pairs, cached by their content key."""
    return register_dataset.fn(pairs_uri, task, split_kw, home, max_seed_pairs, content_key)
