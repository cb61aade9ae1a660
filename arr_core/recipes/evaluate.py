"""The evaluation recipe: the one place that composes a generation benchmark of a policy.

The pipeline's ``evaluate`` task (:func:`run`: base vs trained on held-out scene-world prompts) and
``arr eval generate`` (:func:`generate`: a policy spec on any prompt set) both call this module; neither
builds a policy, a checker or a judge client itself. Below this line everything takes plain values and
there is one of each:

- sampling: ``arr_core.bench.generation.sample_images`` (deterministic ODE from per-image seeded noise);
- GenEval-format scoring: ``arr_core.bench.generation.run_geneval`` with GenEval's aggregation (overall
  = mean over tags, stratified bootstrap; ``geneval_scores``);
- win rate: ``arr_core.bench.winrate.run_winrate`` (rubric judge and independent checker).

Held-out scores at checkpoints: :func:`run` also scores the LoRA of the training run's saved
checkpoints (``checkpoints/step_N`` with a complete manifest, next to the final LoRA folder) with the
same prompts, noise and checker, chosen by ``evaluate.checkpoints`` (:func:`select_checkpoints`).

Checkers: the scene detector for the toy policy (its images are scene-world renders), the VLM's yes/no
GenEval questions for real generators (FLUX, SD3). Qwen-Image-Edit is an editing policy: a text-to-image
benchmark cannot sample it (no source images), so it is refused by name.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
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
# evaluate.checkpoints: every saved checkpoint, the newest only, none, or (an int N) at most N evenly spaced.
CHECKPOINT_CHOICES = ("all", "last", "none")
DEFAULT_CHECKPOINTS = 4


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


def select_checkpoints(checkpoints_dir: str | Path, which: int | str) -> list[tuple[int, Path]]:
    """(step, folder) of the complete checkpoints (``step_*`` with a valid ``COMPLETE.json``) under
    ``checkpoints_dir``, by step, chosen by ``which``: ``all``; ``last`` (the newest); ``none`` or 0;
    an int N >= 1: at most N evenly spaced over the saved ones, always the first and the newest
    (N = 1: the newest). A missing folder has none; incomplete checkpoints are skipped."""
    import json

    from arr_core.rpo.checkpoint import MANIFEST, is_complete

    if isinstance(which, bool) or not (which in CHECKPOINT_CHOICES or (isinstance(which, int) and which >= 0)):
        raise InputError(f"evaluate.checkpoints must be all, last, none or an integer >= 0, got {which!r}",
                         field="evaluate.checkpoints")
    root = Path(checkpoints_dir)
    found = sorted((int(json.loads((d / MANIFEST).read_text(encoding="utf-8"))["step"]), d)
                   for d in (root.glob("step_*") if root.is_dir() else []) if is_complete(d))
    if which in ("none", 0) or not found:
        return []
    if which == "all":
        return found
    n = len(found) if which == "last" else min(int(which), len(found))
    if which == "last" or n == 1:
        return found[-1:]
    return [found[i] for i in sorted({round(k * (len(found) - 1) / (n - 1)) for k in range(n)})]


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
    # held-out score at each evaluated checkpoint, by step: {"step", "point", "lo", "hi" (GenEval-format
    # overall with its 95 % interval), "image_mean", "lora" (the checkpoint's LoRA folder)}
    checkpoint_scores: list[dict[str, Any]] = field(default_factory=list)

    def checkpoint_metrics(self) -> list[dict[str, Any]]:
        """The checkpoint curve as per-step metric rows (MLflow ``geneval.checkpoint``, step = checkpoint step)."""
        return [{"step": c["step"], "geneval.checkpoint": c["point"], "geneval.checkpoint_lo": c["lo"],
                 "geneval.checkpoint_hi": c["hi"], "geneval.checkpoint_image_mean": c["image_mean"]}
                for c in self.checkpoint_scores]

    @property
    def report(self) -> Report:
        return self.result.report

    @property
    def tables(self) -> list[Table]:
        return self.result.tables


def run(train_cfg: TrainConfig, eval_cfg: Mapping[str, Any], lora_uri: str | Path, out_dir: str | Path, *,
        rubric_set: Any = None, vlm: Any = None, run_key: str = "", rubric_set_id: str | None = None,
        policy_id: str | None = None, meta: Mapping[str, Any] | None = None, n_boot: int = 2000, seed: int = 0,
        policy: Any = None, checkpoints_dir: str | Path | None = None) -> PolicyEvaluation:
    """Sample the base policy of ``train_cfg`` and the base + LoRA at ``lora_uri`` on the held-out
    scene-world prompts of ``eval_cfg`` (the pipeline's ``evaluate`` section: prompts, prompt_seed,
    images_per_prompt, num_steps, win_rate), score both in GenEval format and measure the win rate of
    trained over base. Images go to ``out_dir/samples``.

    ``vlm``: the ``VLMConfig`` of the rubric judge and of the VLM checker (real generators); one client
    serves both, ``metrics["vlm_calls"]`` counts its calls. ``rubric_set``: the judge's rubrics (read
    only when ``eval_cfg["win_rate"]``). ``run_key`` (the training's cache key), ``rubric_set_id``,
    ``policy_id`` and ``meta`` (report header) label the result. ``policy``: an already built policy
    instead of building it from ``train_cfg`` (its transformer gets the LoRA after the base is sampled).

    Checkpoints: ``eval_cfg["checkpoints"]`` (default none here; the pipeline's default is
    ``DEFAULT_CHECKPOINTS``) chooses among the complete checkpoints in ``checkpoints_dir`` (default: the
    training run's, ``<lora_uri>/../checkpoints``; :func:`select_checkpoints`); each one's LoRA is sampled
    and scored like the trained one (a checkpoint whose LoRA file is byte-identical to ``lora_uri``'s
    reuses the trained scores). ``PolicyEvaluation.checkpoint_scores`` has the curve.

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
    peft_model = load_lora(policy, lora_uri)  # wraps policy.transformer: from here on the policy is the trained one
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
    chosen = select_checkpoints(Path(lora_uri).parent / "checkpoints" if checkpoints_dir is None
                                else checkpoints_dir, eval_cfg.get("checkpoints", "none"))
    ckpts = _score_checkpoints(policy, peft_model, chosen, lora_uri, gt, items, out / "samples", kw, checker,
                               n_boot=n_boot, seed=seed, simulated=simulated)
    if chosen:
        metrics["geneval.checkpoints_scored"] = len(ckpts)
    vlm_stats = client.stats() if client is not None else {}
    if client is not None:
        metrics["vlm_calls"] = int(vlm_stats.get("calls", 0))
    metrics["wall_s"] = round(time.perf_counter() - t0, 3)

    report = _pipeline_report(items, base, trained, sb, st, tags, metrics, checker.name, run_key,
                              scene_vlm=vcfg.backend == "scene", meta=meta, checkpoint_scores=ckpts)
    result = EvalResult("geneval", {**eval_cfg, "train_key": run_key}, metrics,
                        [t for sec in report.sections for t in sec.tables], report,
                        rubric_set_id=rubric_set_id or getattr(rubric_set, "id", None), policy_id=policy_id,
                        details={"geneval": {"base": gb, "trained": gt}, "winrate": wr, "checkpoints": ckpts})
    samples_png = out / "samples.png"
    first = [p for it in items for p in base[it.id]][:8], [p for it in items for p in trained[it.id]][:8]
    _save_pairs_grid(*first, samples_png)
    return PolicyEvaluation(metrics, result, items, base, trained, samples_png if samples_png.exists() else None,
                            vlm_stats, ckpts)


def _score_checkpoints(policy: Any, peft_model: Any, chosen: Sequence[tuple[int, Path]], lora_uri: str | Path,
                       gt: EvalResult,
                       items: Sequence[PromptItem], samples: Path, kw: Mapping[str, Any], checker: Checker, *,
                       n_boot: int, seed: int, simulated: bool) -> list[dict[str, Any]]:
    """Score each chosen checkpoint's LoRA on ``items`` with the trained images' noise and ``checker``
    (images in ``samples/step_N``). ``policy`` carries the LoRA at ``lora_uri`` (``peft_model``; ``gt``: its
    scores) and carries it again on return: a checkpoint's adapter replaces it while that checkpoint is
    sampled (``unload`` restores the base modules in place, then ``load_lora`` wraps them again)."""
    from arr_core.bench.generation import load_lora, lora_digest, run_geneval, sample_images

    final = lora_digest(lora_uri)
    out, swapped = [], False
    for step, folder in chosen:
        if lora_digest(folder / "lora") == final:  # the same bytes: the trained images and scores
            g = gt
        else:
            peft_model.unload()  # back to the bare transformer
            peft_model = load_lora(policy, folder / "lora")
            swapped = True
            images = sample_images(policy, items, samples / f"step_{step:06d}", **kw)
            g = run_geneval(items, images, checker, n_boot=n_boot, seed=seed, simulated=simulated)
        sc = g.details["scores"]
        out.append({"step": step, "point": sc["overall"]["point"], "lo": sc["overall"]["lo"],
                    "hi": sc["overall"]["hi"], "image_mean": sc["prompt_mean"], "lora": str(folder / "lora")})
    if swapped:
        peft_model.unload()
        load_lora(policy, lora_uri)
    return out


def _pipeline_report(items: Sequence[PromptItem], base: ImagesById, trained: ImagesById, sb: dict[str, Any],
                     st: dict[str, Any], tags: list[str], metrics: dict[str, Any], checker_name: str,
                     run_key: str, *, scene_vlm: bool, meta: Mapping[str, Any] | None,
                     checkpoint_scores: Sequence[Mapping[str, Any]] = ()) -> Report:
    from arr_core.bench.report import GridRow, ImageGrid, Report, Section, Table

    rows = [["overall", sb["overall"], st["overall"]]]
    rows += [[tag, sb["per_tag"][tag], st["per_tag"][tag]] for tag in tags]
    k = min(8, len(items))
    grid = ImageGrid("Base vs trained (seed 0)", ["base", "trained"],
                     [GridRow(it.prompt, [base[it.id][0], trained[it.id][0]]) for it in items[:k]])
    tables = [Table("accuracy with 95 % intervals", ["tag", "base", "trained"], rows,
                    note="Overall = mean over tags (GenEval); intervals: bootstrap over prompts, stratified by "
                         "tag for overall.")]
    if checkpoint_scores:
        tables.append(Table("held-out score at training checkpoints", ["step", "overall (95% CI)", "image mean"],
                            [[c["step"], {k: c[k] for k in ("point", "lo", "hi")}, c["image_mean"]]
                             for c in checkpoint_scores],
                            note="The checkpoint's LoRA on the same held-out prompts and noise as base and trained."))
    win_rows = [[f"independent checker ({checker_name})", metrics["winrate.checker"]]]
    if "winrate.judge" in metrics:
        win_rows.insert(0, ["rubric judge (training reward)", metrics["winrate.judge"]])
    return Report(
        title="arr-pipeline evaluation", subtitle=f"training run {run_key}",
        notes=["Scene world with the offline simulated VLM: these figures say nothing about real VLMs."]
        if scene_vlm else [],
        meta=dict(meta or {}),
        sections=[Section("geneval", f"GenEval-format accuracy ({checker_name})", tables=tables),
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
             source: str | None = None, limit: int | None = None,
             on_progress: Callable[[int, int], None] | None = None) -> EvalResult:
    """Sample the policy ``policy_spec`` (``load_policy``; base, or base + ``lora``) on ``items`` and score it:
    ``geneval`` (GenEval format), ``checkpoints`` (yes/no questions per prompt) or ``winrate`` (base vs
    trained: needs ``lora``). ``client``: the VLM client of the ``vlm`` checker and of the win-rate judge;
    ``source``/``limit``: the prompt set's file and limit (recorded in the config). Images go to
    ``runs_dir/gen-<digest of the run>``; training curves join the report when the LoRA's run has a
    ``metrics.jsonl``. ``on_progress(done, total)``: images sampled of all the run samples (base and trained
    for ``winrate``)."""
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
    kw: dict[str, Any] = dict(n_per_prompt=n_per_prompt, steps=steps, seed=seed)
    n_images = len(items) * n_per_prompt * (2 if benchmark == "winrate" else 1)
    if on_progress is not None:  # winrate: the trained images count on from the base images
        kw["on_progress"] = lambda done, _n: on_progress(done, n_images)
    if benchmark == "winrate":
        base = gen.sample_images(pol, items, run_dir / "base", context=lambda: gen.adapter_off(peft_model), **kw)
        if on_progress is not None:
            kw["on_progress"] = lambda done, n: on_progress(n + done, n_images)
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
