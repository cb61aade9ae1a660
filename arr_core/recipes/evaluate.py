"""The evaluation recipe: the one place that composes a generation benchmark of a policy.

The pipeline's ``evaluate`` task (:func:`run`: base vs trained on held-out scene-world prompts) and
``arr eval generate`` (:func:`generate`: a policy spec on any prompt set) both call this module; neither
builds a policy, a checker or a judge client itself. Below this line everything takes plain values and
there is one of each:

- sampling: ``arr_core.bench.generation.sample_images`` (deterministic ODE from per-image seeded noise);
- GenEval-format scoring: ``arr_core.bench.generation.run_geneval`` with GenEval's aggregation (overall
  = mean over tags, stratified bootstrap; ``geneval_scores``);
- win rate: ``arr_core.bench.winrate.run_winrate`` (rubric judge and independent checker).

Checkers: the scene detector for the toy policy (its images are scene-world renders), the VLM's yes/no
GenEval questions for real generators (FLUX, SD3). Qwen-Image-Edit is an editing policy: a text-to-image
benchmark cannot sample it (no source images), so it is refused by name.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from arr_core.errors import InputError

if TYPE_CHECKING:
    from arr_core.bench.checkers import Checker
    from arr_core.bench.generation import ImagesById
    from arr_core.bench.prompt_sets import PromptItem
    from arr_core.bench.report import Report, Table
    from arr_core.bench.results import EvalResult
    from arr_core.rpo.config import TrainConfig

BENCHMARKS = ("geneval", "checkpoints", "winrate")
CHECKERS = ("scene", "vlm")


# ---------------------------------------------------------------------------------------------
# builders


def checker_for(policy_kind: str) -> str:
    """The checker a policy's images need: ``scene`` (detector) for the toy policy's scene-world
    renders, ``vlm`` (yes/no questions) for real generators."""
    return "scene" if policy_kind == "toy" else "vlm"


def build_checker(kind: str, client: Any = None) -> Checker:
    """``scene`` → the scene detector; ``vlm`` → yes/no questions through ``client`` (a ``VLMClient``)."""
    from arr_core.bench.checkers import SceneChecker, VLMChecker

    if kind == "scene":
        return SceneChecker()
    if kind == "vlm":
        if client is None:
            raise ValueError("the vlm checker needs a VLM client")
        return VLMChecker(client)
    raise InputError(f"--checker must be scene or vlm, got {kind!r}", field="checker")


def scene_items(n: int, seed: int) -> list[PromptItem]:
    """``n`` held-out scene-world prompts (``make_prompts``, tag i mod 6) as GenEval-format items."""
    from arr_core.bench.prompt_sets import PromptItem
    from arr_core.sim.world.pairs import make_prompts

    return [PromptItem(f"p{i:03d}", s.prompt, s.tag, meta={"geneval": s.to_geneval()})
            for i, s in enumerate(make_prompts(n, seed))]


def _refuse_editing(kind: str, where: str) -> None:
    if kind == "qwen_edit":
        raise InputError("policy kind 'qwen_edit' edits images: the GenEval-format benchmark samples text-to-"
                         "image from prompts alone (evaluate edits with the edit benchmarks of "
                         "arr_core.bench.winrate)", field=where)


def load_policy(spec: str, lora: str | Path | None = None) -> tuple[Any, Any, str]:
    """(policy, peft model or None, policy id) from ``toy`` / a toy policy folder / a YAML file with a
    ``policy:`` section (or that section alone; kinds toy, flux, sd3), plus an optional LoRA folder.

    The policy id is ``pol-`` + a digest of ``policy.describe()`` and the LoRA file's sha256."""
    from arr_core.bench.generation import load_lora, lora_digest
    from arr_core.digest import digest_obj
    from arr_core.sim.toy_policy import ToyPolicy

    p = Path(spec)
    if spec == "toy":
        policy = ToyPolicy.load(None)
    elif p.is_dir():
        policy = ToyPolicy.load(p)
    elif p.is_file() and p.suffix in (".yaml", ".yml"):
        from arr_core.config_io import expand_env, read_yaml, validate
        from arr_core.recipes.rpo import build_policy, resolve_device
        from arr_core.rpo.config import TrainConfig

        raw = read_yaml(p)
        section = expand_env(raw.get("policy", raw), "policy", str(p))
        _refuse_editing(str(section.get("kind")) if isinstance(section, dict) else "", "policy.kind")
        sized = {"resolution": raw["resolution"]} if "policy" in raw and "resolution" in raw else {}
        cfg = validate(TrainConfig, {"policy": section, "prompts": {"source": "world"}, **sized}, str(p))
        policy = (ToyPolicy.load(cfg.policy.folder) if cfg.policy.kind == "toy"
                  else build_policy(cfg, resolve_device(cfg.policy.device)))
    else:
        raise ValueError(f"--policy must be 'toy', a toy policy folder or a YAML config, got {spec!r}")
    peft_model = load_lora(policy, lora) if lora else None
    pid = "pol-" + digest_obj({"policy": policy.describe(), "lora": lora_digest(lora)}, 16)
    return policy, peft_model, pid


# ---------------------------------------------------------------------------------------------
# the pipeline's evaluation: base vs trained


@dataclass
class PolicyEvaluation:
    """What :func:`run` returns: plain values for the caller to store and log."""

    metrics: dict[str, Any]  # flat name → number (MLflow)
    result: EvalResult  # kind "geneval": summary = metrics, the tables and the report
    items: list[PromptItem]
    base: ImagesById  # {item id: [png paths]}
    trained: ImagesById
    samples_png: Path | None  # base/trained pairs side by side (first 8 images)
    vlm_stats: dict[str, Any] = field(default_factory=dict)

    @property
    def report(self) -> Report:
        return self.result.report

    @property
    def tables(self) -> list[Table]:
        return self.result.tables


def run(train_cfg: TrainConfig, eval_cfg: Mapping[str, Any], lora_uri: str | Path, out_dir: str | Path, *,
        rubric_set: Any = None, vlm: Any = None, run_key: str = "", rubric_set_id: str | None = None,
        policy_id: str | None = None, meta: Mapping[str, Any] | None = None, n_boot: int = 2000, seed: int = 0,
        policy: Any = None) -> PolicyEvaluation:
    """Sample the base policy of ``train_cfg`` and the base + LoRA at ``lora_uri`` on the held-out
    scene-world prompts of ``eval_cfg`` (the pipeline's ``evaluate`` section: prompts, prompt_seed,
    images_per_prompt, num_steps, win_rate), score both in GenEval format and measure the win rate of
    trained over base. Images go to ``out_dir/samples``.

    ``vlm``: the ``VLMConfig`` of the rubric judge and of the VLM checker (real generators); one client
    serves both, ``metrics["vlm_calls"]`` counts its calls. ``rubric_set``: the judge's rubrics (read
    only when ``eval_cfg["win_rate"]``). ``run_key`` (the training's cache key), ``rubric_set_id``,
    ``policy_id`` and ``meta`` (report header) label the result. ``policy``: an already built policy
    instead of building it from ``train_cfg`` (its transformer gets the LoRA after the base is sampled).

    Metrics (MLflow names): ``geneval.base`` / ``geneval.trained`` (mean over tags), ``geneval.delta``,
    ``geneval.<policy>.<tag>``, ``geneval.<policy>_tag_mean`` (= the overall), ``geneval.<policy>_image_mean``
    (mean over prompt-images), ``winrate.checker`` / ``winrate.judge`` (decisive pairs, see
    ``arr_core.bench.winrate``), ``winrate.judge_ties``, ``winrate.gap``, ``vlm_calls``, ``wall_s``.
    """
    from arr_core.bench.generation import load_lora, prompt_noise_keys, run_geneval, sample_images
    from arr_core.bench.results import EvalResult
    from arr_core.bench.winrate import run_winrate
    from arr_core.recipes.rpo import build_policy, resolve_device
    from arr_core.vlm.config import VLMConfig, build_client

    kind = train_cfg.policy.kind
    _refuse_editing(kind, "policy.kind")
    t0 = time.perf_counter()
    items = scene_items(int(eval_cfg["prompts"]), int(eval_cfg["prompt_seed"]))
    n_images = int(eval_cfg["images_per_prompt"])
    steps = int(eval_cfg.get("num_steps") or train_cfg.num_steps)
    win_rate = bool(eval_cfg.get("win_rate", True))
    out = Path(out_dir)
    if policy is None:
        policy = build_policy(train_cfg, resolve_device(train_cfg.policy.device))
    checker_kind = checker_for(kind)
    vcfg = vlm if vlm is not None else VLMConfig()
    client = build_client(vcfg, None) if win_rate or checker_kind == "vlm" else None
    checker = build_checker(checker_kind, client)
    # The scene-world evaluation's noise (prompt text + repeat + image index), shared by base and trained.
    kw = dict(n_per_prompt=n_images, steps=steps, noise_key=prompt_noise_keys(items),
              batch_size=64 if kind == "toy" else 4)
    base = sample_images(policy, items, out / "samples" / "base", **kw)
    load_lora(policy, lora_uri)  # wraps policy.transformer: from here on the policy is the trained one
    trained = sample_images(policy, items, out / "samples" / "trained", **kw)

    simulated = checker_kind == "scene"
    gb = run_geneval(items, base, checker, n_boot=n_boot, seed=seed, simulated=simulated)
    gt = run_geneval(items, trained, checker, n_boot=n_boot, seed=seed, simulated=simulated)
    sb, st = gb.details["scores"], gt.details["scores"]
    metrics: dict[str, Any] = {
        "geneval.base": sb["overall"]["point"], "geneval.trained": st["overall"]["point"],
        "geneval.delta": st["overall"]["point"] - sb["overall"]["point"],
        "geneval.base_tag_mean": sb["overall"]["point"], "geneval.trained_tag_mean": st["overall"]["point"],
        "geneval.base_image_mean": sb["prompt_mean"], "geneval.trained_image_mean": st["prompt_mean"],
    }
    tags = sorted(st["per_tag"])
    for tag in tags:
        metrics[f"geneval.trained.{tag}"] = st["per_tag"][tag]["point"]
        metrics[f"geneval.base.{tag}"] = sb["per_tag"][tag]["point"]
    wr = run_winrate(items, base, trained, judge_client=client if win_rate else None,
                     rubric_set=rubric_set if win_rate else None, checker=checker, n_boot=n_boot, seed=seed,
                     base_results=gb.details["results"], trained_results=gt.details["results"],
                     simulated=simulated)
    metrics["winrate.checker"] = wr.summary["winrate/checker_decisive"]
    if win_rate:
        metrics["winrate.judge"] = wr.summary["winrate/judge_decisive"]
        metrics["winrate.judge_ties"] = wr.summary["winrate/judge_ties"]
        metrics["winrate.gap"] = wr.summary["winrate/gap_decisive"]
    vlm_stats = client.stats() if client is not None else {}
    if client is not None:
        metrics["vlm_calls"] = int(vlm_stats.get("calls", 0))
    metrics["wall_s"] = round(time.perf_counter() - t0, 3)

    report = _pipeline_report(items, base, trained, sb, st, tags, metrics, checker.name, run_key,
                              scene_vlm=vcfg.backend == "scene", meta=meta)
    result = EvalResult("geneval", {**eval_cfg, "train_key": run_key}, metrics,
                        [t for sec in report.sections for t in sec.tables], report,
                        rubric_set_id=rubric_set_id or getattr(rubric_set, "id", None), policy_id=policy_id,
                        details={"geneval": {"base": gb, "trained": gt}, "winrate": wr})
    samples_png = out / "samples.png"
    first = [p for it in items for p in base[it.id]][:8], [p for it in items for p in trained[it.id]][:8]
    _save_pairs_grid(*first, samples_png)
    return PolicyEvaluation(metrics, result, items, base, trained, samples_png if samples_png.exists() else None,
                            vlm_stats)


def _pipeline_report(items: Sequence[PromptItem], base: ImagesById, trained: ImagesById, sb: dict[str, Any],
                     st: dict[str, Any], tags: list[str], metrics: dict[str, Any], checker_name: str,
                     run_key: str, *, scene_vlm: bool, meta: Mapping[str, Any] | None) -> Report:
    from arr_core.bench.report import GridRow, ImageGrid, Report, Section, Table

    rows = [["overall", sb["overall"], st["overall"]]]
    rows += [[tag, sb["per_tag"][tag], st["per_tag"][tag]] for tag in tags]
    k = min(8, len(items))
    grid = ImageGrid("Base vs trained (seed 0)", ["base", "trained"],
                     [GridRow(it.prompt, [base[it.id][0], trained[it.id][0]]) for it in items[:k]])
    win_rows = [[f"independent checker ({checker_name})", metrics["winrate.checker"]]]
    if "winrate.judge" in metrics:
        win_rows.insert(0, ["rubric judge (training reward)", metrics["winrate.judge"]])
    return Report(
        title="arr-pipeline evaluation", subtitle=f"training run {run_key}",
        notes=["Scene world with the offline simulated VLM: these figures say nothing about real VLMs."]
        if scene_vlm else [],
        meta=dict(meta or {}),
        sections=[Section("geneval", f"GenEval-format accuracy ({checker_name})",
                          tables=[Table("accuracy with 95 % intervals", ["tag", "base", "trained"], rows,
                                        note="Overall = mean over tags (GenEval); intervals: bootstrap over "
                                             "prompts, stratified by tag for overall.")]),
                  Section("winrate", "Win rate of trained vs base",
                          text="A large gap between the judge and the checker flags possible reward hacking. "
                               "Decisive pairs only: ties and abstentions of the judge, and pairs where both "
                               "or neither image pass the checker, are left out.",
                          tables=[Table("win rate", ["judged by", "trained wins"], win_rows)]),
                  Section("samples", "Samples", grids=[grid])])


def _save_pairs_grid(base: list[str], trained: list[str], path: Path) -> None:
    """base/trained image pairs side by side, one pair per row."""
    from PIL import Image

    images = [Image.open(p).convert("RGB") for pair in zip(base, trained, strict=True) for p in pair]
    if not images:
        return
    w, h = images[0].size
    grid = Image.new("RGB", (2 * w, (len(images) + 1) // 2 * h), "white")
    for i, im in enumerate(images):
        grid.paste(im, ((i % 2) * w, (i // 2) * h))
    grid.save(path)


# ---------------------------------------------------------------------------------------------
# the pipeline's judge check under the paper's protocol

PAPER_CONDITION_NAMES = {"none": "no_rubrics", "fewshot": "rubrics"}


def judge_paper(client: Any, records: Sequence[Any], rubric_set: Any, *, zeroshot_ks: Sequence[int] = (),
                n_boot: int = 2000, seed: int = 0, simulated: bool = False,
                max_failure_rate: float = 0.0) -> tuple[EvalResult, dict[str, dict[str, float]]]:
    """The judge check with the ARR paper's protocol (``arr_core.bench.preference.run_paper``): one judge
    (``client``), no rubrics, ``rubric_set`` and one zero-shot condition per k. Returns the result and,
    per condition (``no_rubrics``, ``rubrics``, ``zeroshot_k<k>``), flat numbers for the stage's
    metrics: order-balanced ``accuracy`` (with ``accuracy_lo``/``_hi``), ``forward_accuracy``,
    ``reversed_accuracy``, ``forward_minus_reversed``, ``gain`` (over no rubrics) and ``vlm_calls``."""
    from arr_core.bench.preference import PAPER_MODES, run_paper

    res = run_paper({"judge": client}, records, rubric_set=rubric_set, zeroshot_ks=zeroshot_ks, n_boot=n_boot,
                    seed=seed, simulated=simulated, max_failure_rate=max_failure_rate)
    mode, s = PAPER_MODES[0], res.summary
    balanced = {r[1]: r[5] for r in res.table("Accuracy vs human labels (paper protocol)").rows}
    tags = ["none", *(["fewshot"] if rubric_set is not None else []), *[f"zeroshot_k{k}" for k in zeroshot_ks]]
    names = [c for c in balanced]  # same order as tags: no rubrics, the set, then each k
    conditions: dict[str, dict[str, float]] = {}
    for tag, name in zip(tags, names, strict=True):
        pre = f"judge/{tag}/{mode}"
        cell = balanced[name]
        conditions[PAPER_CONDITION_NAMES.get(tag, tag)] = {
            "accuracy": cell["point"], "accuracy_lo": cell["lo"], "accuracy_hi": cell["hi"],
            "forward_accuracy": s[f"acc/{pre}/forward"], "reversed_accuracy": s[f"acc/{pre}/reverse"],
            "forward_minus_reversed": s[f"bias/{pre}"], "n": s["n_pairs"],
            "vlm_calls": s[f"cost/judge/{tag}/calls"],
            **({"gain": s[f"gain/{pre}"]} if f"gain/{pre}" in s else {})}
    return res, conditions


# ---------------------------------------------------------------------------------------------
# `arr eval generate`


def check_generate_args(benchmark: str, checker: str, lora: str | Path | None) -> None:
    """Refuse an unknown benchmark or checker, and a win rate without a LoRA (before anything loads)."""
    if benchmark not in BENCHMARKS:
        raise InputError(f"--benchmark must be geneval, checkpoints or winrate, got {benchmark!r}", field="benchmark")
    if checker not in CHECKERS:
        raise InputError(f"--checker must be scene or vlm, got {checker!r}", field="checker")
    if benchmark == "winrate" and lora is None:
        raise InputError("--benchmark winrate compares base and trained: pass --lora", field="lora")


def generate(policy_spec: str, items: Sequence[PromptItem], benchmark: str, runs_dir: str | Path, *,
             lora: str | Path | None = None, checker: str = "scene", client: Any = None, rubric_set: Any = None,
             n_per_prompt: int = 4, steps: int = 20, seed: int = 0, n_boot: int = 2000, simulated: bool = False,
             source: str | None = None, limit: int | None = None) -> EvalResult:
    """Sample the policy ``policy_spec`` (``load_policy``; base, or base + ``lora``) on ``items`` and score it:
    ``geneval`` (GenEval format), ``checkpoints`` (yes/no questions per prompt) or ``winrate`` (base vs
    trained: needs ``lora``). ``client``: the VLM client of the ``vlm`` checker and of the win-rate judge;
    ``source``/``limit``: the prompt set's file and limit (recorded in the config). Images go to
    ``runs_dir/gen-<digest of the run>``; training curves join the report when the LoRA's run has a
    ``metrics.jsonl``."""
    from arr_core.bench import generation as gen
    from arr_core.bench.report import Section, find_training_metrics, training_curves
    from arr_core.bench.winrate import run_winrate
    from arr_core.digest import digest_obj

    check_generate_args(benchmark, checker, lora)
    try:
        pol, peft_model, policy_id = load_policy(policy_spec, lora)
    except InputError:
        raise
    except (ValueError, FileNotFoundError) as e:
        raise InputError(str(e), field="policy") from None
    check = build_checker(checker, client)
    cfg = {"policy": pol.describe(), "policy_id": policy_id, "prompts": source, "n_per_prompt": n_per_prompt,
           "steps": steps, "limit": limit}
    run_dir = Path(runs_dir) / ("gen-" + digest_obj({**cfg, "benchmark": benchmark, "seed": seed}, 12))
    kw = dict(n_per_prompt=n_per_prompt, steps=steps, seed=seed)
    if benchmark == "winrate":
        base = gen.sample_images(pol, items, run_dir / "base", context=lambda: gen.adapter_off(peft_model), **kw)
        trained = gen.sample_images(pol, items, run_dir / "trained", **kw)
        result = run_winrate(items, base, trained, judge_client=client, rubric_set=rubric_set, checker=check,
                             n_boot=n_boot, seed=seed, policy_id=policy_id, config=cfg, simulated=simulated)
    else:
        images = gen.sample_images(pol, items, run_dir / ("trained" if peft_model is not None else "base"), **kw)
        score = gen.run_geneval if benchmark == "geneval" else gen.run_checkpoints
        try:
            result = score(items, images, check, n_boot=n_boot, seed=seed, policy_id=policy_id, config=cfg,
                           simulated=simulated)
        except ValueError as e:
            raise InputError(str(e), file=source) from None
    metrics = find_training_metrics(lora)
    if metrics is not None:
        curves = training_curves(metrics)
        if curves:
            result.report.sections.append(Section("training", "Training curves", text=f"From {metrics}.",
                                                  plots=curves))
    return result
