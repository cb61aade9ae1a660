"""Generation benchmarks on the scene world: hand-checked GenEval/checkpoint/win-rate/edit numbers,
ODE sampling and LoRA loading with tiny real components."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from arr_core.bench import generation as gen
from arr_core.bench.checkers import SceneChecker, VLMChecker
from arr_core.bench.prompt_sets import PromptItem
from arr_core.bench.report import render_html
from arr_core.bench.winrate import EditCase, run_edit_checks, run_edit_winrate, run_winrate
from arr_core.sim.world import BACKGROUND, make_prompts, render, sample_edit, scene_from_spec
from arr_core.vlm.client import VLMClient

from .scripted import CheckBackend, FirstBackend, RedBackend
from .test_cli import TINY


def _items(n: int = 6, seed: int = 3) -> list[PromptItem]:
    return [PromptItem(f"p{i}", s.prompt, s.tag, meta={"geneval": s.to_geneval()})
            for i, s in enumerate(make_prompts(n, seed))]


def _render_correct(item: PromptItem, path: Path, seed: int) -> str:
    from arr_core.sim.world import PromptSpec

    spec = PromptSpec.from_geneval(item.meta["geneval"])
    render(scene_from_spec(spec, np.random.default_rng(seed)), 64).save(path)
    return str(path)


def _blank(path: Path) -> str:
    Image.new("RGB", (64, 64), BACKGROUND).save(path)
    return str(path)


def _blob(path: Path, color: str = "red") -> str:
    im = Image.new("RGB", (64, 64), BACKGROUND)
    ImageDraw.Draw(im).rectangle((4, 4, 60, 60), fill=color)
    im.save(path)
    return str(path)


@pytest.fixture()
def correct_and_blank(tmp_path: Path):
    items = _items()
    images = {}
    for i, it in enumerate(items):
        second = _render_correct(it, tmp_path / f"{it.id}_1.png", 100 + i) if i < 3 else _blank(tmp_path / f"{it.id}_b.png")
        images[it.id] = [_render_correct(it, tmp_path / f"{it.id}_0.png", i), second]
    return items, images


def test_geneval_hand_checked(correct_and_blank) -> None:
    items, images = correct_and_blank
    assert [it.category for it in items] == ["single_object", "two_object", "counting", "colors", "position",
                                             "color_attr"]
    res = gen.run_geneval(items, images, SceneChecker(), n_boot=500)
    # Prompts 0-2: both images are clean renders (pass); prompts 3-5: one clean render, one blank image.
    per_tag = {r[0]: r[1]["point"] for r in res.table("GenEval-format accuracy").rows}
    assert per_tag["single_object"] == per_tag["two_object"] == per_tag["counting"] == 1.0
    assert per_tag["colors"] == per_tag["position"] == per_tag["color_attr"] == 0.5
    assert res.summary["geneval/overall"] == pytest.approx(0.75)
    assert res.summary["geneval/image_level"] == pytest.approx(9 / 12)
    overall = res.table("GenEval-format accuracy").rows[-1][1]
    assert overall["lo"] <= overall["point"] <= overall["hi"]
    assert "Samples and checker verdicts" in render_html(res.report)


def test_geneval_scores_average_over_tags_not_prompts() -> None:
    # Unbalanced: three "a" prompts, one "b", one "c". GenEval: mean over tags of the tag means.
    res = gen.geneval_scores([1.0, 0.0, 1.0, 1.0, 0.5], ["a", "a", "a", "b", "c"], n_boot=500)
    assert {t: c["point"] for t, c in res["per_tag"].items()} == pytest.approx({"a": 2 / 3, "b": 1.0, "c": 0.5})
    assert res["overall"]["point"] == pytest.approx((2 / 3 + 1.0 + 0.5) / 3)
    assert res["prompt_mean"] == pytest.approx(3.5 / 5)  # the mean over prompts differs
    assert res["n_prompts"] == {"a": 3, "b": 1, "c": 1}
    # One-prompt tags are fixed under resampling within tags: only "a" moves the overall interval.
    assert res["per_tag"]["b"]["lo"] == res["per_tag"]["b"]["hi"] == 1.0
    lo, hi = res["overall"]["lo"], res["overall"]["hi"]
    assert 1.5 / 3 - 1e-9 <= lo < res["overall"]["point"] < hi <= 2.5 / 3 + 1e-9
    assert res["overall"] == gen.stratified_mean_ci({"a": [1.0, 0.0, 1.0], "b": [1.0], "c": [0.5]}, n_boot=500)
    with pytest.raises(ValueError, match="3 per-prompt scores for 2 tags"):
        gen.geneval_scores([1.0, 0.0, 1.0], ["a", "b"])


def test_vlm_checker_on_geneval_questions(tmp_path: Path) -> None:
    items = [PromptItem("a", "a photo of a red circle", "colors",
                        meta={"geneval": {"tag": "colors", "include": [{"class": "circle", "count": 1, "color": "red"}],
                                          "prompt": "a photo of a red circle"}})]
    images = {"a": [_blob(tmp_path / "r.png", "red"), _blob(tmp_path / "b.png", "blue")]}
    checker = VLMChecker(VLMClient(CheckBackend(), cache_mode="off"))
    res = gen.run_geneval(items, images, checker, n_boot=200)
    assert res.summary["geneval/image_level"] == 0.5  # the red image passes, the blue one does not
    assert res.details["results"]["a"][0].answers == ["yes"]


def test_checkpoints_hand_checked(tmp_path: Path) -> None:
    items = [PromptItem("t0", "a red square", "color", ["Is the square red?", "Is there any text?"], answers=["yes", "no"]),
             PromptItem("t1", "a blue square", "color", ["Is the square blue?"], answers=["yes"])]
    images = {"t0": [_blob(tmp_path / "t0.png", "red")], "t1": [_blob(tmp_path / "t1.png", "blue")]}
    res = gen.run_checkpoints(items, images, VLMChecker(VLMClient(CheckBackend(), cache_mode="off")), n_boot=200)
    # CheckBackend: red question → yes (image is red); everything else → yes. So t0 gets 1 of 2 right
    # (the "no" expectation fails), t1 gets 1 of 1 → question accuracy (0.5 + 1) / 2, all-right 1/2.
    assert res.summary["checkpoints/question_acc"] == pytest.approx(0.75)
    assert res.summary["checkpoints/all_correct"] == pytest.approx(0.5)


def test_winrate_flags_reward_hacking(tmp_path: Path) -> None:
    items = _items(4, seed=5)
    base = {it.id: [_render_correct(it, tmp_path / f"{it.id}_base.png", 7)] for it in items}
    hacked = {it.id: [_blob(tmp_path / f"{it.id}_hack.png", "red")] for it in items}
    judge = VLMClient(RedBackend(needs_rubrics=0), cache_mode="off")  # prefers red pixels, whatever the prompt
    res = run_winrate(items, base, hacked, judge_client=judge, rubric_set=None, checker=SceneChecker(), n_boot=200)
    assert res.summary["winrate/judge"] == 1.0  # the judge always prefers the red blob
    # The checker: correct renders beat the blob, except for prompt 0 ("a photo of a square"), which
    # the red square blob satisfies too (a tie, 0.5) → (0.5 + 0 + 0 + 0) / 4.
    assert [it.prompt for it in items][0] == "a photo of a square"
    assert res.summary["winrate/checker"] == pytest.approx(0.125)
    assert res.summary["winrate/gap"] == pytest.approx(0.875) and res.summary["winrate/reward_hacking_flag"] == 1.0
    assert "Possible reward hacking" in res.report.notes[0]
    fair = run_winrate(items, hacked, base, judge_client=VLMClient(FirstBackend(), cache_mode="off"), rubric_set=None,
                       checker=SceneChecker(), n_boot=200)
    assert fair.summary["winrate/judge"] == 0.5  # swap + first-position judge → all ties
    assert fair.summary["winrate/checker"] == pytest.approx(0.875)  # mirror of the case above
    assert fair.summary["winrate/reward_hacking_flag"] == 0.0
    # Decisive pairs (the pipeline's winrate.*): the judge's wins among its wins and losses, the checker's
    # among pairs where exactly one image passes (prompt 0: both pass → left out).
    assert res.summary["winrate/judge_decisive"] == 1.0 and res.summary["winrate/judge_ties"] == 0.0
    assert res.summary["winrate/checker_decisive"] == 0.0 and res.summary["winrate/gap_decisive"] == 1.0
    assert fair.summary["winrate/judge_decisive"] == 0.5 and fair.summary["winrate/judge_ties"] == 1.0
    assert fair.summary["winrate/checker_decisive"] == 1.0
    # Without a judge: the checker alone, from verdicts already at hand (nothing is checked again).
    class _NoChecks(SceneChecker):
        def check(self, jobs):
            raise AssertionError("checked twice")

    known = {"base": gen.check_all(SceneChecker(), items, base), "trained": gen.check_all(SceneChecker(), items, hacked)}
    alone = run_winrate(items, base, hacked, judge_client=None, rubric_set=None, checker=_NoChecks(), n_boot=200,
                        base_results=known["base"], trained_results=known["trained"])
    assert alone.summary["winrate/checker"] == res.summary["winrate/checker"]
    assert alone.summary["winrate/checker_decisive"] == 0.0 and "winrate/judge" not in alone.summary
    assert [r[0] for r in alone.table("Win rate trained vs base").rows] == ["independent checker (scene-detector)"]
    assert "pairs" not in [s.id for s in alone.report.sections]


def test_edit_checks_and_winrate_hand_checked(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    cases = []
    for i, kind in enumerate(["add", "remove", "recolour", "move"]):
        et = sample_edit(rng, kind)
        src = tmp_path / f"e{i}_src.png"
        render(et.source, 64).save(src)
        good = tmp_path / f"e{i}_good.png"
        render(et.target, 64).save(good)
        cases.append(EditCase(f"e{i}", et.instruction, str(src), {"trained": str(good), "base": str(src)}))
    res = run_edit_checks(cases, n_boot=200)
    # trained = the target scene (a perfect edit); base = the unchanged source: it follows no
    # instruction and preserves everything (check_edit judges the edited object only by 'follows').
    assert res.summary["edit/trained/follows"] == 1.0 and res.summary["edit/trained/preserved"] == 1.0
    assert res.summary["edit/base/follows"] == 0.0 and res.summary["edit/base/preserved"] == 1.0
    assert res.summary["edit/base/both"] == 0.0 and res.summary["edit/trained/both"] == 1.0
    wr = run_edit_winrate(cases, judge_client=VLMClient(FirstBackend(), cache_mode="off"), rubric_set=None,
                          mode="single", n_boot=200)
    assert wr.summary["edit_winrate"] == 1.0  # single order, trained shown first, first-position judge


class _TargetPolicy:
    """A Policy whose exact flow ends at a fixed target image x0: v(x, σ) = (x − x0)/σ, so Euler steps
    land on the straight line from the noise to x0 and reach x0 exactly at σ = 0."""

    name = "target"
    lora_targets: list[str] = []

    def __init__(self, target: torch.Tensor) -> None:
        self.x0 = target
        self.transformer = torch.nn.Identity()

    def encode(self, prompts, conditions=None):
        return {"n": torch.zeros(len(prompts), 1)}

    def initial_latents(self, batch, generator):
        return torch.randn((batch, *self.x0.shape), generator=generator)

    def sigmas(self, num_steps):
        return torch.linspace(1.0, 0.0, num_steps + 1)

    def velocity(self, latents, sigma, cond):
        s = sigma.view(-1, 1, 1, 1)
        return (latents - self.x0) / s

    def decode(self, latents):
        arr = ((latents.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        return [Image.fromarray(a, "RGB") for a in arr]

    def describe(self):
        return {"class": "target"}


def test_ode_sampling_reaches_the_exact_target(tmp_path: Path) -> None:
    target = torch.linspace(-1, 1, 3 * 8 * 8).reshape(3, 8, 8)
    policy = _TargetPolicy(target)
    items = _items(3)
    paths = gen.sample_images(policy, items, tmp_path / "a", n_per_prompt=2, steps=4, batch_size=4)
    want = np.asarray(policy.decode(target[None])[0])
    for it in items:
        assert len(paths[it.id]) == 2
        for p in paths[it.id]:
            assert np.array_equal(np.asarray(Image.open(p)), want)


def test_sampling_is_seeded_per_prompt_not_per_batch(tmp_path: Path) -> None:
    from arr_core.sim.toy_policy import ToyPolicy

    policy = ToyPolicy.random(seed=0, **TINY)
    items = _items(3)
    a = gen.sample_images(policy, items, tmp_path / "a", n_per_prompt=2, steps=2, batch_size=6)
    b = gen.sample_images(policy, items[1:], tmp_path / "b", n_per_prompt=2, steps=2, batch_size=1)
    assert np.array_equal(np.asarray(Image.open(a["p1"][1])), np.asarray(Image.open(b["p1"][1])))
    c = gen.sample_images(policy, items[:1], tmp_path / "c", n_per_prompt=1, steps=2, seed=1)
    assert not np.array_equal(np.asarray(Image.open(a["p0"][0])), np.asarray(Image.open(c["p0"][0])))


def test_prompt_noise_keys_give_repeats_fresh_noise(tmp_path: Path) -> None:
    from arr_core.sim.toy_policy import ToyPolicy

    policy = ToyPolicy.random(seed=0, **TINY)
    items = _items(2)
    twice = [*items, PromptItem("again", items[0].prompt, items[0].category, meta=items[0].meta)]
    key = gen.prompt_noise_keys(twice)
    assert [key(it, 1) for it in twice] == [f"{items[0].prompt}|1", f"{items[1].prompt}|1", f"{items[0].prompt}#1|1"]
    paths = gen.sample_images(policy, twice, tmp_path, n_per_prompt=1, steps=2, noise_key=key)
    assert not np.array_equal(np.asarray(Image.open(paths["p0"][0])), np.asarray(Image.open(paths["again"][0])))
    with pytest.raises(ValueError, match="unique"):
        gen.prompt_noise_keys([items[0], items[0]])


def test_lora_round_trip(tmp_path: Path) -> None:
    from arr_core.rpo.checkpoint import save_lora
    from arr_core.rpo.lora import add_lora
    from arr_core.sim.toy_policy import LORA_TARGETS, ToyPolicy

    trained = ToyPolicy.random(seed=0, **TINY)
    peft_model = add_lora(trained.transformer, rank=4, alpha=8, targets=LORA_TARGETS)
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.add_(0.05 * torch.randn_like(p))
    save_lora(peft_model, tmp_path / "ckpt" / "lora")
    fresh = ToyPolicy.random(seed=0, **TINY)
    loaded = gen.load_lora(fresh, tmp_path / "ckpt")
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    cond = trained.encode(["a photo of a red circle"])
    sigma = torch.tensor([0.5])
    with torch.no_grad():
        assert torch.allclose(fresh.velocity(x, sigma, cond), trained.velocity(x, sigma, cond), atol=1e-6)
        with gen.adapter_off(loaded):
            base = fresh.velocity(x, sigma, cond)
        with peft_model.disable_adapter():
            assert torch.allclose(base, trained.velocity(x, sigma, cond), atol=1e-6)
        assert not torch.allclose(base, fresh.velocity(x, sigma, cond), atol=1e-4)
