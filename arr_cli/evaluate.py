"""`arr eval …` and `arr report …`: benchmark the judge and policies, render HTML reports."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table as RichTable

from arr_cli.common import (
    AllowOutside,
    AllowRemote,
    Format,
    Home,
    Json,
    Root,
    console,
    home_dir,
    print_json,
    progress,
    stored_dataset,
)
from arr_core.errors import InputError

eval_app = typer.Typer(help="Benchmarks: judge preference accuracy (with/without rubrics, position bias, "
                       "ablations) and generation benchmarks of a policy (GenEval-format, checkpoints, "
                       "win rate).", no_args_is_help=True)

Backend = Annotated[str, typer.Option("--backend", help="VLM backend: scene (offline simulator) | openai.")]
Model = Annotated[Optional[str], typer.Option("--model", help="Served model name (openai backend).")]
BaseUrl = Annotated[Optional[str], typer.Option("--base-url", help="OpenAI-compatible endpoint; default "
                                                "OPENAI_BASE_URL.")]
Seed = Annotated[int, typer.Option("--seed", help="Seed of bootstrap, random order and the scene VLM.")]
NBoot = Annotated[int, typer.Option("--n-boot", help="Bootstrap resamples for the 95% intervals.")]
ReportOut = Annotated[Optional[Path], typer.Option("--report", help="Also write the HTML report here.")]


def _vlm_client(backend: str, model: str | None, base_url: str | None, seed: int, store):
    from arr_core.vlm.config import SCENE_MODEL, VLMConfig, build_client

    if backend == "scene" and model is None and seed != 0:
        # The response cache keys on backend name + model, not on the simulator's seed: name the model
        # after the seed so scene judges with different seeds do not share cached answers.
        model = f"{SCENE_MODEL}@seed{seed}"
    try:
        cfg = VLMConfig(backend=backend, model=model, base_url=base_url, seed=seed)
    except ValueError as e:
        raise InputError(str(e), field="backend") from None
    return build_client(cfg, store), f"{cfg.backend}:{cfg.model}" + (f"(seed {seed})" if backend == "scene" else "")


def _judge_spec(spec: str, default_backend: str, base_url: str | None, seed: int, store):
    """'scene' | 'scene:SEED' | 'openai:MODEL' → (name, client)."""
    kind, _, arg = spec.partition(":")
    if kind == "scene":
        s = int(arg) if arg else seed
        client, name = _vlm_client("scene", None, None, s, store)
        return name, client
    if kind == "openai":
        if not arg:
            raise InputError("--judge openai:MODEL needs a model name", field="judge")
        client, name = _vlm_client("openai", arg, base_url, seed, store)
        return name, client
    raise InputError(f"--judge must be 'scene', 'scene:SEED' or 'openai:MODEL', got {spec!r}", field="judge")


def _finish(store, result, report: Path | None, as_json: bool = False) -> str:
    from arr_core.bench.report import write_html
    from arr_core.bench.results import save_eval_result

    eid = save_eval_result(store, result, str(report.resolve()) if report else None)
    if as_json:  # the summary and every table, for scripts (the report is still written when asked)
        print_json({"eval_id": eid, "kind": result.kind, "summary": result.summary, "config": result.config,
                    "rubric_set_id": result.rubric_set_id, "policy_id": result.policy_id,
                    "report": str(report) if report else None,
                    "tables": [{"title": t.title, "columns": list(t.columns), "rows": [list(r) for r in t.rows]}
                               for t in result.tables]})
    else:
        for t in result.tables:
            _print_table(t)
    if report:
        write_html(result.report, report)
        console.print(f"report: {report}")
    if not as_json:
        console.print(f"evaluation [bold]{eid}[/] ({result.kind})")
        console.print(eid)
    return eid


def _cell(v) -> str:
    if isinstance(v, dict) and {"point", "lo", "hi"} <= set(v):
        return "–" if v["point"] is None else f"{v['point']:.3f} [{v['lo']:.3f}, {v['hi']:.3f}]"
    if isinstance(v, float):
        return f"{v:.3f}"
    return "–" if v is None else str(v)


def _print_table(t) -> None:
    rt = RichTable(title=t.title)
    for c in t.columns:
        rt.add_column(c)
    for r in t.rows:
        rt.add_row(*[_cell(v) for v in r])
    console.print(rt)


JudgeModel = Annotated[Optional[list[str]], typer.Option("--judge-model", help="Judge with this model (repeat "
                                                        "for several: one run, cross-model transfer of --rubrics); "
                                                        "same --backend and --base-url.")]
SubsetKey = Annotated[Optional[str], typer.Option("--subset-key", help="Record meta field of the per-subset "
                                                  "breakdown (default: subset, prompt_source, category, "
                                                  "classification or source, whichever the records carry; "
                                                  "'task' for t2i vs edit).")]


def _records(pairs: Path, fmt: str | None, root: Path | None, allow_outside: bool, allow_remote: bool, split: str,
             limit: int | None, home: Path | None = None) -> list:
    """The records to evaluate: any format ``arr data`` reads or a ``ds-…`` id from ``arr data import``,
    tied labels kept (the benchmark counts and skips them), one split, the first ``limit``."""
    from arr_cli.data import describe_format
    from arr_core.data.dataset import load_dataset

    ds = stored_dataset(pairs, home)
    if ds is None:
        ds = load_dataset(pairs, allow_outside=allow_outside, allow_remote=allow_remote, root=root, allow_ties=True,
                          format=describe_format(pairs, fmt))
    records = ds.records if split == "all" else ds.split().get(split)
    if records is None:
        raise InputError(f"--split must be all, seed, validation or test, got {split!r}", field="split")
    return records[:limit] if limit else records


def _judges(judge: list[str] | None, judge_model: list[str] | None, backend: str, model: str | None,
            base_url: str | None, seed: int, store) -> dict:
    """name → client: every --judge spec and --judge-model, else the --backend/--model judge."""
    judges = dict(_judge_spec(s, backend, base_url, seed, store) for s in (judge or []))
    for m in judge_model or []:
        client, name = _vlm_client(backend, m, base_url, seed, store)
        judges[name] = client
    if not judges:
        client, name = _vlm_client(backend, model, base_url, seed, store)
        judges[name] = client
    return judges


def _ks(ks: str, field: str = "ks") -> list[int]:
    try:
        out = [int(k) for k in ks.split(",") if k.strip()]
    except ValueError:
        raise InputError(f"--{field} must be comma-separated integers, got {ks!r}", field=field) from None
    if not out or any(k < 1 for k in out):
        raise InputError(f"--{field} must be positive integers, got {ks!r}", field=field)
    return out


def _paper(store, records, judges: dict, rs, *, ks: list[int], generator: str | None, with_images: bool,
           modes: str, subset_key: str | None, backend: str, base_url: str | None, seed: int, n_boot: int):
    from arr_core.bench import preference as pf

    gen = None
    if generator:
        client, name = _vlm_client(backend, generator, base_url, seed, store)
        gen = (name, client)
    mode_list = [m.strip() for m in modes.split(",") if m.strip()]
    try:
        return pf.run_paper(judges, records, rubric_set=rs, zeroshot_ks=ks, zeroshot_generator=gen,
                            with_images=with_images, modes=mode_list, subset=subset_key, n_boot=n_boot, seed=seed,
                            simulated=all(n.startswith("scene") for n in judges))
    except ValueError as e:
        raise InputError(str(e), field="pairs") from None


@eval_app.command("preference")
def preference(
    pairs: Annotated[Path, typer.Option("--pairs", help="Preference pairs: a file, folder or glob in any format "
                                        "`arr data` reads (--format), or a dataset id from `arr data import`.")],
    rubrics: Annotated[Optional[list[str]], typer.Option("--rubrics", help="Rubric set id or prefix in the store "
                                                         "(repeat for --ablation transfer).")] = None,
    ablation: Annotated[Optional[str], typer.Option("--ablation", help="cardinality | transfer")] = None,
    modes: Annotated[str, typer.Option("--modes", help="Order modes, comma-separated.")] = "single,swap,random",
    ks: Annotated[str, typer.Option("--ks", help="Criteria counts for the cardinality ablation.")] = "1,5,10,20",
    judge: Annotated[Optional[list[str]], typer.Option("--judge", help="Transfer judges: scene | scene:SEED | "
                                                       "openai:MODEL (repeat).")] = None,
    split: Annotated[str, typer.Option("--split", help="all | seed | validation | test (deterministic split "
                                       "by pair digest, default fractions).")] = "all",
    limit: Annotated[Optional[int], typer.Option("--limit", help="Use only the first N records.")] = None,
    paper: Annotated[bool, typer.Option("--paper", help="The ARR paper's protocol (Table 1): per judge, accuracy "
                                        "without and with --rubrics, order-balanced (forward + reversed, default "
                                        "mode single), position-bias table, per-subset accuracy and cost.")] = False,
    judge_model: JudgeModel = None, subset_key: SubsetKey = None,
    fmt: Format = None, root: Root = None, allow_outside: AllowOutside = False, allow_remote: AllowRemote = False,
    backend: Backend = "scene", model: Model = None, base_url: BaseUrl = None, seed: Seed = 0,
    n_boot: NBoot = 2000, report: ReportOut = None, home: Home = None, as_json: Json = False,
) -> int:
    """Judge accuracy against human labels without/with rubrics, per order mode, forward and reversed
    (position bias), with bootstrap 95% intervals; or a rubric-count / cross-model ablation; or, with
    --paper, the paper's protocol (several --judge-model: cross-model transfer in one run)."""
    from arr_core.bench import preference as pf
    from arr_core.store import Store

    store = Store(home_dir(home))
    records = _records(pairs, fmt, root, allow_outside, allow_remote, split, limit, home)
    sets = [store.get_rubric_set(r) for r in (rubrics or [])]
    simulated = backend == "scene"
    if paper:
        if ablation is not None or len(sets) > 1:
            raise InputError("--paper takes at most one --rubrics and no --ablation (use --judge-model for transfer)",
                             field="paper")
        if ks != "1,5,10,20":  # --ks is the cardinality ablation's; zero-shot k's are arr eval zeroshot's
            raise InputError("--paper does not take --ks: for k zero-shot rubrics per prompt run "
                             f"`arr eval zeroshot --ks {ks}`", field="ks")
        judges = _judges(judge, judge_model, backend, model, base_url, seed, store)
        result = _paper(store, records, judges, sets[0] if sets else None, ks=[], generator=None, with_images=False,
                        modes="single" if modes == "single,swap,random" else modes, subset_key=subset_key,
                        backend=backend, base_url=base_url, seed=seed, n_boot=n_boot)
    elif ablation is None:
        if len(sets) > 1:
            raise InputError("give one --rubrics for the plain preference benchmark (several are for transfer)",
                             field="rubrics")
        mode_list = [m.strip() for m in modes.split(",") if m.strip()]
        client, name = _vlm_client(backend, model, base_url, seed, store)
        result = pf.run_preference(client, records, sets[0] if sets else None, modes=mode_list, n_boot=n_boot,
                                   seed=seed, judge_name=name, simulated=simulated)
    elif ablation == "cardinality":
        if len(sets) != 1:
            raise InputError("--ablation cardinality needs exactly one --rubrics (a large induced set)", field="rubrics")
        try:
            k_list = [int(k) for k in ks.split(",") if k.strip()]
        except ValueError:
            raise InputError(f"--ks must be comma-separated integers, got {ks!r}", field="ks") from None
        client, name = _vlm_client(backend, model, base_url, seed, store)
        result = pf.run_cardinality(client, records, sets[0], ks=k_list, n_boot=n_boot, seed=seed, judge_name=name,
                                    simulated=simulated)
    elif ablation == "transfer":
        if not sets:
            raise InputError("--ablation transfer needs one or more --rubrics", field="rubrics")
        specs = judge or ["scene", f"scene:{seed + 1}"]
        judges = dict(_judge_spec(s, backend, base_url, seed, store) for s in specs)
        sources = {}
        for rs in sets:
            label = str(rs.metadata.get("generator_model") or rs.id)
            sources[label if label not in sources else f"{label} ({rs.id})"] = rs
        result = pf.run_transfer(judges, sources, records, n_boot=n_boot, seed=seed,
                                 simulated=all(s.startswith("scene") for s in specs))
    else:
        raise InputError(f"--ablation must be cardinality or transfer, got {ablation!r}", field="ablation")
    _finish(store, result, report, as_json)
    return 0


@eval_app.command("zeroshot")
def zeroshot(
    pairs: Annotated[Path, typer.Option("--pairs", help="Preference pairs: a file, folder or glob in any format "
                                        "`arr data` reads (--format), or a dataset id from `arr data import`. Labels are "
                                        "used only to score.")],
    ks: Annotated[str, typer.Option("--ks", help="Rubrics generated per prompt, one condition each (the "
                                    "paper's cardinality table).")] = "1,5,10,20",
    rubrics: Annotated[Optional[str], typer.Option("--rubrics", help="Induced rubric set (few-shot) to show side "
                                                   "by side.")] = None,
    with_images: Annotated[bool, typer.Option("--with-images", help="Also show the unlabelled candidates to the "
                                              "rubric generator (one generation per pair instead of per "
                                              "prompt).")] = False,
    generator_model: Annotated[Optional[str], typer.Option("--generator-model", help="Model that writes the "
                                                           "zero-shot rubrics (default: each judge writes its "
                                                           "own).")] = None,
    judge: Annotated[Optional[list[str]], typer.Option("--judge", help="Judges: scene | scene:SEED | "
                                                       "openai:MODEL (repeat).")] = None,
    judge_model: JudgeModel = None, subset_key: SubsetKey = None,
    modes: Annotated[str, typer.Option("--modes", help="Order modes, comma-separated (each forward and "
                                       "reversed).")] = "single",
    split: Annotated[str, typer.Option("--split", help="all | seed | validation | test.")] = "all",
    limit: Annotated[Optional[int], typer.Option("--limit", help="Use only the first N records.")] = None,
    fmt: Format = None, root: Root = None, allow_outside: AllowOutside = False, allow_remote: AllowRemote = False,
    backend: Backend = "scene", model: Model = None, base_url: BaseUrl = None, seed: Seed = 0,
    n_boot: NBoot = 2000, report: ReportOut = None, home: Home = None, as_json: Json = False,
) -> int:
    """Zero-shot ARR: for every pair, k rubrics generated from its prompt without the label (cached per
    prompt), then judged with them; one condition per k, beside no rubrics and the few-shot --rubrics, in
    the paper protocol's tables (order-balanced accuracy, position bias, per subset, cost)."""
    from arr_core.store import Store

    k_list = _ks(ks)
    store = Store(home_dir(home))
    records = _records(pairs, fmt, root, allow_outside, allow_remote, split, limit, home)
    rs = store.get_rubric_set(rubrics) if rubrics else None
    judges = _judges(judge, judge_model, backend, model, base_url, seed, store)
    result = _paper(store, records, judges, rs, ks=k_list, generator=generator_model, with_images=with_images,
                    modes=modes, subset_key=subset_key, backend=backend, base_url=base_url, seed=seed, n_boot=n_boot)
    _finish(store, result, report, as_json)
    return 0


@eval_app.command("generate")
def generate(
    policy: Annotated[str, typer.Option("--policy", help="'toy', a toy policy folder, or a YAML config with a "
                                        "policy section (kind toy, flux or sd3).")],
    benchmark: Annotated[str, typer.Option("--benchmark", help="geneval | checkpoints | winrate")],
    prompts: Annotated[Path, typer.Option("--prompts", help="Prompt set file or folder (GenEval metadata, TIIF, "
                                          "UniGenBench CSV, items JSONL, plain text, …).")],
    lora: Annotated[Optional[Path], typer.Option("--lora", help="LoRA folder saved by the RPO trainer.")] = None,
    fmt: Annotated[Optional[str], typer.Option("--format", help="Prompt-set format (default: detected).")] = None,
    checker: Annotated[str, typer.Option("--checker", help="scene (detector; scene world) | vlm (yes/no "
                                         "questions).")] = "scene",
    rubrics: Annotated[Optional[str], typer.Option("--rubrics", help="Rubric set of the training judge "
                                                   "(winrate).")] = None,
    n_per_prompt: Annotated[int, typer.Option("--n-per-prompt", help="Images per prompt.")] = 4,
    steps: Annotated[int, typer.Option("--steps", help="ODE sampling steps.")] = 20,
    limit: Annotated[Optional[int], typer.Option("--limit", help="Use only the first N prompts.")] = None,
    backend: Backend = "scene", model: Model = None, base_url: BaseUrl = None, seed: Seed = 0,
    n_boot: NBoot = 2000, report: ReportOut = None, home: Home = None, as_json: Json = False,
) -> int:
    """Sample a policy (base, or base + LoRA) on a prompt set and score it."""
    from arr_core.bench.prompt_sets import load_prompt_set
    from arr_core.recipes import evaluate as recipe
    from arr_core.store import Store

    recipe.check_generate_args(benchmark, checker, lora)
    store = Store(home_dir(home))
    items = load_prompt_set(prompts, fmt)
    items = items[:limit] if limit else items
    if not items:
        raise InputError("the prompt set is empty", file=str(prompts))
    # One VLM client for the yes/no checker and the win-rate judge, built only when one of them runs.
    client = (_vlm_client(backend, model, base_url, seed, store)[0]
              if checker == "vlm" or benchmark == "winrate" else None)
    rs = store.get_rubric_set(rubrics) if rubrics and benchmark == "winrate" else None
    # The bar counts the images sampled; scoring follows once it is full (the elapsed time keeps running).
    with progress(f"sampling {len(items)} prompts × {n_per_prompt}, then scoring ({benchmark})", total=0) as bar:
        result = recipe.generate(policy, items, benchmark, home_dir(home) / "evals", lora=lora, checker=checker,
                                 client=client, rubric_set=rs, n_per_prompt=n_per_prompt, steps=steps, seed=seed,
                                 n_boot=n_boot, simulated=checker == "scene" or backend == "scene",
                                 source=str(prompts), limit=limit, on_progress=bar)
    _finish(store, result, report, as_json)
    return 0


@eval_app.command("protocol")
def protocol(
    name: Annotated[str, typer.Argument(help="gedit | imgedit | dpg | tiif | unigenbench")],
    prompts: Annotated[Path, typer.Option("--prompts", help="The benchmark's own file: GEdit-Bench metadata "
                                          "(Parquet/JSONL), ImgEdit basic_edit.json, DPG-Bench dpg_bench.csv, the "
                                          "TIIF-Bench data folder, a UniGenBench test CSV.")],
    images: Annotated[Path, typer.Option("--images", help="Generated / edited images, laid out as the "
                                         "benchmark's evaluation script expects (docs/protocols.md).")],
    sources: Annotated[Optional[Path], typer.Option("--sources", help="ImgEdit: the original images "
                                                    "(origin_img_root).")] = None,
    judge_prompts: Annotated[Optional[Path], typer.Option("--judge-prompts", help="ImgEdit: the per-type judging "
                                                          "prompts (Benchmark/Basic/prompts.json).")] = None,
    description: Annotated[str, typer.Option("--description", help="TIIF: short | long prompts.")] = "short",
    split: Annotated[str, typer.Option("--split", help="TIIF: testmini | test.")] = "testmini",
    language: Annotated[str, typer.Option("--language", help="GEdit: en | cn | all.")] = "en",
    images_per_prompt: Annotated[int, typer.Option("--images-per-prompt", help="UniGenBench: images per "
                                                   "prompt (files INDEX_J.png).")] = 4,
    pic_num: Annotated[int, typer.Option("--pic-num", help="DPG: images per file (4 = a 2x2 grid).")] = 1,
    limit: Annotated[Optional[int], typer.Option("--limit", help="Score only the first N records.")] = None,
    backend: Backend = "scene", model: Model = None, base_url: BaseUrl = None, seed: Seed = 0,
    n_boot: NBoot = 2000, report: ReportOut = None, home: Home = None, as_json: Json = False,
) -> int:
    """Score generated or edited images with a benchmark's official VLM protocol (prompts, answer parsing
    and aggregation as its repository defines; differences in docs/protocols.md)."""
    from arr_core.bench.protocols import ProtocolInputs, protocol_module, run_protocol
    from arr_core.store import Store

    protocol_module(name)  # an unknown name fails before anything loads
    store = Store(home_dir(home))
    client, judge_name = _vlm_client(backend, model, base_url, seed, store)
    inputs = ProtocolInputs(prompts=prompts, images=images, sources=sources, judge_prompts=judge_prompts, limit=limit,
                            options={"description": description, "split": split, "language": language,
                                     "images_per_prompt": images_per_prompt, "pic_num": pic_num})
    try:
        result = run_protocol(name, client, inputs, judge_name=judge_name, simulated=backend == "scene",
                              n_boot=n_boot, seed=seed)
    finally:
        client.close()  # answers already received stay cached: a rerun after a failure does not ask again
    _finish(store, result, report, as_json)
    return 0


def register(app: typer.Typer) -> None:
    app.add_typer(eval_app, name="eval")

    @app.command("report")
    def report_cmd(
        eval_id: Annotated[Optional[str], typer.Argument(help="Evaluation id or unique prefix.")] = None,
        out: Annotated[Optional[Path], typer.Option("--out", help="HTML file to write.")] = None,
        screenshot: Annotated[Optional[Path], typer.Option("--screenshot", help="Also save a PNG screenshot "
                                                           "(headless Chromium).")] = None,
        list_: Annotated[bool, typer.Option("--list", help="List stored evaluations.")] = False,
        home: Home = None, as_json: Json = False,
    ) -> int:
        """Render the stored report of an evaluation as one self-contained HTML file."""
        from arr_core.bench.report import write_html
        from arr_core.bench.results import load_eval_row, report_from_row
        from arr_core.store import Store

        store = Store(home_dir(home))
        if list_ and as_json:
            print_json(store.fetchall("eval_results_list"))
            return 0
        if list_:
            rt = RichTable(title="evaluations")
            for c in ("eval_id", "kind", "rubric_set_id", "policy_id", "created_at", "report_uri"):
                rt.add_column(c, no_wrap=c in ("eval_id", "kind"), min_width=19 if c == "eval_id" else None)
            for r in store.fetchall("eval_results_list"):
                rt.add_row(*[str(r[c] or "") for c in ("eval_id", "kind", "rubric_set_id", "policy_id",
                                                        "created_at", "report_uri")])
            console.print(rt)
            return 0
        if not eval_id or out is None:
            raise InputError("usage: arr report ID --out FILE.html (or arr report --list)", field="out")
        row = load_eval_row(store, eval_id)
        path = write_html(report_from_row(row), out)
        store.execute("eval_result_set_report_uri", [str(path.resolve()), row["eval_id"]])
        console.print(f"wrote {path}")
        if screenshot:
            from arr_core.bench.browser import screenshot as shoot

            console.print(f"screenshot {shoot(path, screenshot)}")
        return 0


__all__ = ["register", "eval_app"]
