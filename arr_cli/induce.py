"""``arr induce`` (rubric induction from preference pairs) and ``arr judge`` (accuracy of the
rubric-conditioned judge against human labels)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from arr_cli.common import (
    AllowOutside,
    AllowRemote,
    Format,
    Home,
    Root,
    console,
    home_dir,
    progress,
    resolve_rubrics,
    stored_dataset,
)
from arr_core.errors import InputError

Pairs = Annotated[Path, typer.Option("--pairs", help="Preference pairs: ARR reference JSON/JSONL/YAML, "
                                     "the project's JSONL/Parquet, or a dataset id from `arr data import`.")]
Backend = Annotated[Optional[str], typer.Option("--backend", help="VLM backend: scene (offline simulator) "
                                                "| openai (any OpenAI-compatible endpoint).")]
BaseUrl = Annotated[Optional[str], typer.Option("--base-url", help="OpenAI-compatible endpoint, e.g. "
                                                "http://127.0.0.1:8000/v1 (default OPENAI_BASE_URL).")]
Model = Annotated[Optional[str], typer.Option("--model", help="Served model name.")]
NoCache = Annotated[bool, typer.Option("--no-cache", help="Do not read or write the VLM response cache.")]
AllowTies = Annotated[bool, typer.Option("--allow-ties", help="Keep pairs whose label ties (e.g. Pick-a-Pic 0.5/0.5, "
                                         "EditReward-Bench A=B) instead of refusing the file: induce sets them "
                                         "aside (no preference to explain) and counts them; judge reports how "
                                         "often the judge also ties on them, apart from the accuracy.")]


def _vlm_overrides(cfg: Any, backend: str | None, base_url: str | None, model: str | None,
                   no_cache: bool) -> Any:
    """``cfg`` (a VLMConfig) with the command-line choices applied; re-validated."""
    from pydantic import ValidationError

    from arr_core.vlm.config import VLMConfig

    data = cfg.model_dump()
    if backend is not None:
        if backend not in ("scene", "openai"):
            raise InputError(f"must be scene or openai, got {backend!r}", field="--backend")
        if backend != cfg.backend:
            data["model"] = None  # a model name belongs to its backend
        data["backend"] = backend
    if base_url is not None:
        data["base_url"] = base_url
    if model is not None:
        data["model"] = model
    if no_cache:
        data["cache_mode"] = "off"
    try:
        return VLMConfig.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        raise InputError(err["msg"], field=".".join(str(x) for x in err["loc"]) or "--backend") from None


Split = Annotated[str, typer.Option("--split", help="Use only this split of the pairs: seed | validation | "
                                     "test (deterministic by pair digest, 60/20/20) or all.")]


def _load_pairs(pairs: Path, allow_outside: bool, split: str = "all", allow_remote: bool = False,
                root: Path | None = None, fmt: str | None = None, allow_ties: bool = False,
                home: Path | None = None) -> Any:
    from arr_cli.data import describe_format
    from arr_core.data.dataset import SPLITS, Dataset, load_dataset

    if split != "all" and split not in SPLITS:
        raise InputError(f"must be one of {', '.join(SPLITS)} or all, got {split!r}", field="--split")
    ds = stored_dataset(pairs, home)  # a ds-… id from `arr data import`
    if ds is None:
        ds = load_dataset(pairs, allow_outside=allow_outside, allow_remote=allow_remote, root=root,
                          format=describe_format(pairs, fmt), allow_ties=allow_ties)
    if ds.task not in ("t2i", "edit"):
        raise InputError(f"pairs must all be t2i or all be edit records, got {ds.task!r}", file=str(pairs),
                         field="task")
    if split != "all":
        records = ds.split()[split]
        if not records:
            raise InputError(f"the {split} split of {len(ds.records)} pairs is empty", file=str(pairs),
                             field="--split")
        ds = Dataset(records=records, name=f"{ds.name}:{split}", source_uri=ds.source_uri, task=ds.task,
                     notes=ds.notes)
    return ds


def _judge_by_scores(client: Any, records: list[Any], rs: Any, store: Any, scale: str, seed: int,
                     max_failure_rate: float, title: str) -> int:
    """``arr judge --mode scores``: accuracy of the composite's ranking and the per-theme/criterion means."""
    import asyncio

    from arr_core.failures import FailureCounter, endpoint_name
    from arr_core.judge.metrics import accuracy_summary
    from arr_core.judge.scores import judge_records_by_scores, scored_criteria, summary

    if rs is None:
        raise InputError("--mode scores scores rubric criteria; give a rubric set, not 'none'", field="--rubrics")
    try:
        criteria = scored_criteria(rs, default_scale=scale)
    except ValueError as e:
        raise InputError(str(e), field="--rubrics") from None
    t0 = time.perf_counter()
    js, results = asyncio.run(judge_records_by_scores(client, records, criteria, rubric_set_id=rs.id, store=store))
    counter = FailureCounter("judge", endpoint_name(client), max_failure_rate=max_failure_rate, early_abort=0)
    for r in (r for res in results for r in res):
        if r.transport_failed:
            counter.fail(str(r.error))
        else:
            counter.ok()
    counter.check()  # exit 4 past the fail policy: transport failures are not verdicts
    acc = accuracy_summary(js, records, seed=seed)
    summ = summary(criteria, results)
    table = Table(title=title, show_header=False)
    table.add_row("pairs", str(acc["n"]))
    table.add_row("accuracy (95 % bootstrap)", f"{acc['accuracy']:.3f} [{acc['accuracy_lo']:.3f}, "
                  f"{acc['accuracy_hi']:.3f}]")
    table.add_row("tie rate", f"{acc['tie_rate']:.3f}")
    table.add_row("abstain rate", f"{acc['abstain_rate']:.3f}")
    table.add_row("images scored (unusable answers, transport failures)",
                  f"{summ['images']} ({summ['unusable']}, {summ['transport_failed']})")
    if "composite" in summ:
        table.add_row("mean composite", f"{summ['composite']:.3f}")
        for theme, v in summ["themes"].items():
            table.add_row(f"theme: {theme}", f"{v:.3f}")
        for label, v in summ["criteria"].items():
            table.add_row(f"criterion {label}", f"{v:.3f}")
    table.add_row("wall time", f"{time.perf_counter() - t0:.1f} s")
    console.print(table)
    return 0


def register(app: typer.Typer) -> None:
    @app.command("induce")
    def induce_cmd(
        pairs: Pairs,
        config: Annotated[Optional[Path], typer.Option("--config", help="InduceConfig YAML (fields: "
                                                       "generate_number, max_epochs, verify_orders, retries, "
                                                       "concurrency, max_rubrics, categories_number, "
                                                       "selection_seed, dedup_threshold, generator, verifier).")] = None,
        parent: Annotated[Optional[str], typer.Option("--parent", help="Rubric set id (or prefix) to extend: "
                                                      "its pairs are reused, only new pairs are processed.")] = None,
        backend: Backend = None,
        base_url: BaseUrl = None,
        model: Model = None,
        no_cache: NoCache = False,
        allow_outside: AllowOutside = False,
        allow_remote: AllowRemote = False,
        root: Root = None,
        split: Split = "all",
        fmt: Format = None,
        allow_ties: AllowTies = False,
        home: Home = None,
    ) -> int:
        """Induce a rubric set from preference pairs (generate → blind verify/refine → select →
        categorize), store it and print its id and a summary. Rerunning resumes: finished pairs are
        read back from the store."""
        from arr_core.recipes.induce import induce_rubrics
        from arr_core.rubrics.config import InduceConfig, load_config
        from arr_core.store import Store

        cfg = load_config(config, InduceConfig) if config is not None else InduceConfig()
        over = dict(backend=backend, base_url=base_url, model=model, no_cache=no_cache)
        update: dict[str, Any] = {"generator": _vlm_overrides(cfg.generator, **over)}
        if cfg.verifier is not None:
            update["verifier"] = _vlm_overrides(cfg.verifier, **over)
        cfg = cfg.model_copy(update=update)
        from arr_core.recipes.preflight import check_endpoint

        check_endpoint(cfg.generator, "generator")
        if cfg.verifier is not None:
            check_endpoint(cfg.verifier, "verifier")
        ds = _load_pairs(pairs, allow_outside, split, allow_remote, root, fmt, allow_ties, home)
        store = Store(home_dir(home))
        parent_id = store.resolve_rubric_set_id(parent) if parent else None

        def report(done: int, total: int, outcome: Any) -> None:
            bar(done, total)
            console.print(f"  [{done}/{total}] pair {outcome.pair_id}: {outcome.status} after "
                          f"{outcome.epochs} attempt(s)")

        console.print(f"inducing from {len(ds.records)} {ds.task} pairs in {pairs} "
                      f"(generator {cfg.generator.backend}:{cfg.generator.model}, verifier "
                      f"{cfg.verifier_config().backend}:{cfg.verifier_config().model})")
        t0 = time.perf_counter()
        with progress(f"inducing from {len(ds.records)} pairs", total=len(ds.records)) as bar:
            rs = induce_rubrics(ds, cfg, store, parent_id=parent_id, progress=report, skip_tied=allow_ties)
        wall = time.perf_counter() - t0
        if parent_id is not None and rs.id == parent_id:
            console.print(f"no change: the new pairs leave rubric set {parent_id} as it is (parent unchanged)")
            return 0
        st = rs.metadata.get("statistics", {})
        table = Table(title=f"rubric set {rs.id}", show_header=False)
        rows = [
            ("pairs used / passed / discarded", f"{st.get('pairs_used')} / {st.get('passed')} / {st.get('discarded')}"),
            ("pairs reused (resume or parent)", str(st.get("reused"))),
            *([("pairs with a tied label (set aside)", str(st["tied_pairs_skipped"]))]
              if st.get("tied_pairs_skipped") else []),
            ("epochs histogram", str(st.get("epochs_histogram"))),
            ("criteria pooled → selected", f"{st.get('criteria_pooled')} → {st.get('criteria_selected')}"),
            ("themes", f"{len(rs.themes)}" + (" (categorization failed: flat list)" if st.get("categorize_fallback") else "")),
            ("VLM calls (cache hits)", f"{st.get('vlm_calls')} ({st.get('vlm_cache_hits')})"),
            ("tokens prompt / completion", f"{st.get('prompt_tokens')} / {st.get('completion_tokens')}"),
            ("parent", str(rs.metadata.get("parent_id"))),
            ("wall time", f"{wall:.1f} s"),
        ]
        if st.get("pairs_transport_failed"):
            rows.insert(1, ("pairs failed in transport (not used; a rerun asks them again)",
                            str(st["pairs_transport_failed"])))
        for k, v in rows:
            table.add_row(k, v)
        console.print(table)
        console.print(rs.to_text(), markup=False, soft_wrap=True)
        console.print(rs.id)
        return 0

    @app.command("judge")
    def judge_cmd(
        rubrics: Annotated[str, typer.Option("--rubrics", help="Rubric set id (or prefix) in the store, a "
                                             "plain-text rubrics file (reference format), or 'none'.")],
        pairs: Pairs,
        config: Annotated[Optional[Path], typer.Option("--config", help="JudgeConfig YAML (fields: order, "
                                                       "reward_mapping, seed, retries, vlm); flags override it.")] = None,
        order: Annotated[Optional[str], typer.Option("--order", help="single | swap | random (default swap)")] = None,
        mapping: Annotated[Optional[str], typer.Option("--mapping", help="reward mapping: paper | linear "
                                                       "(default paper)")] = None,
        seed: Annotated[Optional[int], typer.Option("--seed", help="seed of the random order and the "
                                                    "bootstrap (default 0)")] = None,
        mode: Annotated[str, typer.Option("--mode", help="rank: the judge ranks each pair (default); scores: "
                                          "each image is scored on every rubric criterion and the pair "
                                          "ranked by composite; prints per-theme and per-criterion means")] = "rank",
        scale: Annotated[Optional[str], typer.Option("--scale", help="scores mode: the scale of criteria the "
                                                     "rubric set leaves open, binary | 1-5 (default 1-5)")] = None,
        backend: Backend = None,
        base_url: BaseUrl = None,
        model: Model = None,
        no_cache: NoCache = False,
        allow_outside: AllowOutside = False,
        allow_remote: AllowRemote = False,
        root: Root = None,
        split: Split = "all",
        fmt: Format = None,
        allow_seed_pairs: Annotated[bool, typer.Option(
            "--allow-seed-pairs", help="Judge pairs the rubric set was induced from (normally refused: "
            "their accuracy is not a held-out figure).")] = False,
        allow_ties: AllowTies = False,
        home: Home = None,
    ) -> int:
        """Judge labelled pairs and print accuracy against the labels (bootstrap 95 % interval), tie
        and abstain rates, and accuracy with the images as given vs reversed. Pairs the rubric set
        was induced from are refused unless --allow-seed-pairs (use --split test)."""
        import asyncio
        import dataclasses

        from arr_core.failures import check_judgments
        from arr_core.judge.judge import ORDER_MODES, REWARD_MAPPINGS, judge_many
        from arr_core.judge.metrics import accuracy_summary, order_summary
        from arr_core.rubrics.config import JudgeConfig, load_config
        from arr_core.rubrics.rubric_set import RubricSet
        from arr_core.store import Store
        from arr_core.vlm.config import build_client

        jcfg = load_config(config, JudgeConfig) if config is not None else JudgeConfig()
        order = order if order is not None else jcfg.order
        mapping = mapping if mapping is not None else jcfg.reward_mapping
        seed = seed if seed is not None else jcfg.seed
        if order not in ORDER_MODES:
            raise InputError(f"must be one of {', '.join(ORDER_MODES)}, got {order!r}", field="--order")
        if mapping not in REWARD_MAPPINGS:
            raise InputError(f"must be one of {', '.join(REWARD_MAPPINGS)}, got {mapping!r}", field="--mapping")
        if mode not in ("rank", "scores"):
            raise InputError(f"must be rank or scores, got {mode!r}", field="--mode")
        if scale is not None and (mode != "scores" or scale not in ("binary", "1-5")):
            raise InputError(f"applies to --mode scores and must be binary or 1-5, got {scale!r}", field="--scale")
        store = Store(home_dir(home))
        rs: RubricSet | None = resolve_rubrics(store, rubrics)
        ds = _load_pairs(pairs, allow_outside, split, allow_remote, root, fmt, allow_ties, home)
        tied = [r for r in ds.records if r.label_rank is not None and r.label_rank.count(min(r.label_rank)) > 1]
        if tied:  # only with --allow-ties: judged apart, they have no preferred image to be right about
            ds = dataclasses.replace(ds, records=[r for r in ds.records if r not in tied])
            if not ds.records:
                raise InputError(f"all {len(tied)} pairs have a tied label: no accuracy to measure", file=str(pairs),
                                 field="label_rank")
        if rs is not None and rs.task != ds.task:
            raise InputError(f"rubric set {rs.id} is for {rs.task} but the pairs are {ds.task}", field="--rubrics")
        seen = {p for p, _ in (rs.metadata.get("induction_pairs") or [])} if rs is not None else set()
        leaked = [r for r in ds.records if r.pair_id in seen]
        if leaked and not allow_seed_pairs:
            raise InputError(f"{len(leaked)} of {len(ds.records)} pairs were used to induce rubric set {rs.id} "
                             f"(first: record {leaked[0].idx}); judging them measures recall, not held-out "
                             "accuracy. Judge another split (--split test or validation, when the rubrics were "
                             "induced with --split seed) or pass --allow-seed-pairs", file=str(pairs),
                             field="--split")
        missing = [r.idx for r in ds.records if r.label_rank is None]
        if missing:
            raise InputError("judging against labels needs label_rank on every record", file=str(pairs),
                             record=missing[0], field="label_rank")
        cfg = _vlm_overrides(jcfg.vlm_config(), backend, base_url, model, no_cache)
        from arr_core.recipes.preflight import check_endpoint

        check_endpoint(cfg, "vlm")
        client = build_client(cfg, store)
        block = rs.prompt_block() if rs is not None else None
        rid = rs.id if rs is not None else None
        t0 = time.perf_counter()
        if mode == "scores":
            return _judge_by_scores(client, ds.records, rs, store, scale or "1-5", seed, jcfg.max_failure_rate,
                                    f"judge {cfg.backend}:{cfg.model} · rubrics {rid} · scores")

        n = len(ds.records)
        total = n * (1 if order == "swap" else 2) + len(tied)  # pairs judged, the swap re-check included

        async def run(bar: Any) -> tuple[list[Any], list[Any], list[Any]]:
            def at(offset: int) -> Any:
                return lambda done, _total: bar(offset + done, total)

            js = await judge_many(client, ds.records, rubric_block=block, rubric_set_id=rid, order=order,
                                  mapping=mapping, seed=seed, store=store, on_progress=at(0))
            both = js if order == "swap" else await judge_many(client, ds.records, rubric_block=block,
                                                               rubric_set_id=rid, order="swap",
                                                               mapping=mapping, seed=seed, on_progress=at(n))
            on_ties = await judge_many(client, tied, rubric_block=block, rubric_set_id=rid, order=order,
                                       mapping=mapping, seed=seed, store=store,
                                       on_progress=at(total - len(tied))) if tied else []
            return js, both, on_ties

        # The store is opened per read and write: `arr store ls` gets in while the judge runs.
        with progress(f"judging {n} pairs (order {order})", total=total) as bar:
            js, both, on_ties = asyncio.run(run(bar))
        wall = time.perf_counter() - t0
        failed = check_judgments(js, client, "judge", jcfg.max_failure_rate).failed  # exit 4 past the policy
        acc = accuracy_summary(js, ds.records, seed=seed)
        diag = order_summary(both, ds.records, seed=seed)
        stats = client.stats()
        table = Table(title=f"judge {cfg.backend}:{cfg.model} · rubrics {rid or 'none'} · order {order}",
                      show_header=False)
        table.add_row("pairs", str(acc["n"]) + (f" ({len(leaked)} used to induce the rubrics)" if leaked else ""))
        table.add_row("accuracy (95 % bootstrap)", f"{acc['accuracy']:.3f} [{acc['accuracy_lo']:.3f}, "
                      f"{acc['accuracy_hi']:.3f}]")
        table.add_row("tie rate", f"{acc['tie_rate']:.3f}")
        table.add_row("abstain rate", f"{acc['abstain_rate']:.3f}")
        if failed:
            table.add_row("pairs failed in transport (abstained)", str(failed))
        if tied:
            said_tie = sum(j.outcome == "tie" for j in on_ties)
            table.add_row("pairs with a tied label (not in the accuracy)", f"{len(tied)}: the judge also tied on "
                          f"{said_tie} ({said_tie / len(tied):.3f})" + (" — order single never ties" if order ==
                                                                        "single" else ""))
        table.add_row("accuracy, images as given", f"{diag['forward_accuracy']:.3f} [{diag['forward_lo']:.3f}, "
                      f"{diag['forward_hi']:.3f}]")
        table.add_row("accuracy, images reversed", f"{diag['reversed_accuracy']:.3f} [{diag['reversed_lo']:.3f}, "
                      f"{diag['reversed_hi']:.3f}]")
        # Two gaps, two names (as in arr eval preference): the order gap compares the presented orders,
        # the position gap where the preferred image was shown.
        table.add_row("order gap (as given − reversed)", f"{diag['forward_minus_reversed']:+.3f}")
        table.add_row("position gap (preferred shown 1st − 2nd)", f"{diag['position_gap']:+.3f}")
        table.add_row("VLM calls (cache hits)", f"{stats['calls']} ({stats['cache_hits']})")
        table.add_row("wall time", f"{wall:.1f} s")
        console.print(table)
        return 0
