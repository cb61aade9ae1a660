"""Zero-shot ARR (issue 24 item 3): rubrics generated per prompt without labels, cached (a rerun makes
no VLM call), k rubrics per prompt for each k of the cardinality table, few-shot side by side, and the
scene VLM answering the generation request from the CLI. Fixtures: an HPDv3 ``test.json`` (its
published layout: ``prompt``, ``path1`` preferred, ``path2``) whose pairs share prompts."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from PIL import Image

from arr_core.bench import preference as pf
from arr_core.bench.results import load_eval_row
from arr_core.data.dataset import load_dataset
from arr_core.rubrics.rubric_set import RubricSet
from arr_core.rubrics.zeroshot import build_zeroshot, generate_zeroshot
from arr_core.store.store import Store
from arr_core.vlm.client import VLMClient

from .scripted import RedBackend, _text


class ZeroShotRed(RedBackend):
    """Writes k numbered "red" criteria when asked for zero-shot rubrics (``short``: one too few);
    judges like ``RedBackend`` (by redness with >= ``needs_rubrics`` rubric lines, else the first image)."""

    def __init__(self, needs_rubrics: int, short: bool = False) -> None:
        super().__init__(needs_rubrics)
        self.short = short
        self.asked: list[tuple[int, str]] = []  # (k, caption) per generation call

    def answer(self, messages) -> str:
        text = _text(messages)
        if "No preference between images is given" in text:
            k = int(re.search(r"Write (\d+) evaluation criteria", text).group(1))
            self.asked.append((k, text.rsplit("Caption: ", 1)[1].strip()))
            n = k - 1 if self.short else k
            return json.dumps({"rubrics": [f"criterion {i}: the image is red" for i in range(n)], "reason": "-"})
        return super().answer(messages)


def _png(path: Path, colour: tuple[int, int, int]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 16), colour).save(path)
    return f"images/{path.name}"


@pytest.fixture()
def hpdv3(tmp_path: Path) -> Path:
    """4 pairs, 2 prompts (each twice); path1 (preferred) is red, path2 blue."""
    rows = []
    for i in range(4):
        rows.append({"prompt": f"a red apple, take {i % 2}", "path1": _png(tmp_path / "images" / f"r{i}.png", (220, 10 * i, 0)),
                     "path2": _png(tmp_path / "images" / f"b{i}.png", (0, 10 * i, 220)), "model1": "a", "model2": "b"})
    (tmp_path / "test.json").write_text(json.dumps(rows))
    return tmp_path / "test.json"


def _acc(res) -> dict[str, dict]:
    return {r[1]: r for r in res.table("Accuracy vs human labels (paper protocol)").rows}


def test_k_rubrics_per_prompt_and_the_cardinality_hand_checked(hpdv3: Path) -> None:
    recs = load_dataset(hpdv3, format="hpdv3").records
    be = ZeroShotRed(needs_rubrics=5)
    res = pf.run_paper({"red": VLMClient(be, cache_mode="off")}, recs, zeroshot_ks=[1, 5, 10, 20], n_boot=200)
    # one generation per (prompt, k): 2 prompts x 4 ks, each asking its own k (not a prefix of one pool)
    assert sorted(be.asked) == sorted((k, f"a red apple, take {t}") for k in (1, 5, 10, 20) for t in (0, 1))
    acc = _acc(res)
    # k = 1 is below the judge's 5 rubric lines: it answers by position (forward right, reversed wrong)
    assert (acc["zero-shot k=1"][3]["point"], acc["zero-shot k=1"][4]["point"]) == (1.0, 0.0)
    for k in (5, 10, 20):
        assert acc[f"zero-shot k={k}"][5]["point"] == 1.0
        assert acc[f"zero-shot k={k}"][6]["point"] == 0.5  # gain over no rubrics (order-balanced 0.5)
    assert res.summary["acc/red/zeroshot_k20/single/balanced"] == 1.0
    # generation cost on rows of its own: 2 prompts per k
    gen = [r for r in res.table("Cost").rows if r[1].startswith("generate")]
    assert [r[3] for r in gen] == [2, 2, 2, 2]


def test_each_pair_gets_exactly_k_rubrics_and_a_short_answer_abstains(hpdv3: Path) -> None:
    recs = load_dataset(hpdv3, format="hpdv3").records
    import asyncio

    zs = asyncio.run(generate_zeroshot(VLMClient(ZeroShotRed(5), cache_mode="off"), recs, [1, 5, 10, 20]))
    for (_pid, k), z in zs.by_pair.items():
        assert len(z.rubric_set.criteria) == k and z.block.count("\n") == k - 1
    assert zs.n_requests == 8
    # a generator that always writes k - 1 criteria: re-asked, then no rubrics; the pair abstains
    short = ZeroShotRed(5, short=True)
    res = pf.run_paper({"red": VLMClient(short, cache_mode="off", max_reasks=1)}, recs, zeroshot_ks=[5], n_boot=100)
    row = _acc(res)["zero-shot k=5"]
    assert row[5]["point"] == 0.0 and row[8] == 1.0  # abstain rate 1
    assert len(short.asked) == 4  # 2 prompts x (ask + 1 re-ask)


def test_rerun_makes_no_vlm_call_and_few_shot_sits_beside(hpdv3: Path, tmp_path: Path) -> None:
    recs = load_dataset(hpdv3, format="hpdv3").records
    store = Store(tmp_path / "home")
    few = RubricSet(task="t2i", criteria=[f"criterion {i}: the image is red" for i in range(6)],
                    metadata={"generator_model": "model-A"})
    first = ZeroShotRed(5)
    res1 = pf.run_paper({"red": VLMClient(first, store=store)}, recs, rubric_set=few, zeroshot_ks=[1, 5], n_boot=100)
    assert first.calls == 2 * 2 + 4 * 8  # generation: 2 prompts x 2 ks; judging: 4 conditions x 4 pairs x 2
    again = ZeroShotRed(5)
    res2 = pf.run_paper({"red": VLMClient(again, store=store)}, recs, rubric_set=few, zeroshot_ks=[1, 5], n_boot=100)
    assert again.calls == 0
    assert all(r[3] == 0 and r[4] == r[2] for r in res2.table("Cost").rows)  # calls 0, every request a hit
    assert res2.summary == {k: v for k, v in res1.summary.items() if not k.startswith("cost/")} | {
        k: v for k, v in res2.summary.items() if k.startswith("cost/")}
    names = list(_acc(res2))
    assert names == ["no rubrics", f"few-shot {few.id}", "zero-shot k=1", "zero-shot k=5"]
    assert _acc(res2)[f"few-shot {few.id}"][2] == "model-A"


def test_the_request_never_carries_a_label() -> None:
    req = build_zeroshot("t2i", "two red circles", 5)
    text = _text(req.messages)
    assert "preferred" not in text.lower() and "Write 5 evaluation criteria" in text
    assert req.kind == "zeroshot" and req.schema["properties"]["rubrics"]["minItems"] == 5
    assert not [p for p in req.messages[0]["content"] if p["type"] == "image_url"]
    with pytest.raises(ValueError, match="positive"):
        build_zeroshot("t2i", "x", 0)


def test_cli_zeroshot_with_the_scene_vlm_on_scene_world_pairs(tmp_path: Path, capsys) -> None:
    from arr_cli import main
    from arr_core.sim.world.pairs import make_pairs

    pairs = make_pairs("t2i", 4, 3, tmp_path / "world", size=48)
    home = tmp_path / "home"
    few = RubricSet(task="t2i", criteria=["Every object named in the caption is present in the image."])
    Store(home).put_rubric_set(few)
    args = ["eval", "zeroshot", "--pairs", str(pairs), "--ks", "1,5", "--rubrics", few.id, "--n-boot", "50",
            "--home", str(home)]
    assert main(args) == 0
    first = load_eval_row(Store(home), capsys.readouterr().out.strip().splitlines()[-1])["metrics"]["summary"]
    for tag in ("none", "fewshot", "zeroshot_k1", "zeroshot_k5"):
        assert f"acc/scene:scene-vlm-1(seed 0)/{tag}/single/balanced" in first
    assert first["cost/scene:scene-vlm-1(seed 0)/zeroshot_k5/generate/calls"] == 4  # 4 prompts
    assert main(args) == 0  # rerun: everything from the cache
    eid = capsys.readouterr().out.strip().splitlines()[-1]
    summary = load_eval_row(Store(home), eid)["metrics"]["summary"]
    calls = {k: v for k, v in summary.items() if k.startswith("cost/") and k.endswith("/calls")}
    hits = {k: v for k, v in summary.items() if k.startswith("cost/") and k.endswith("/cache_hits")}
    assert len(calls) == 6 and set(calls.values()) == {0.0}  # 4 judge conditions, 2 generations
    assert all(v > 0 for v in hits.values())


def test_through_an_openai_compatible_endpoint_the_results_match_direct(tmp_path: Path) -> None:
    """The served scene VLM over real HTTP (OpenAI chat completions with structured output) gives the
    same zero-shot rubrics and accuracies as the scene VLM called directly."""
    from arr_core.sim.scene_vlm import SceneVLM
    from arr_core.sim.world.pairs import make_pairs
    from arr_core.vlm.openai_backend import OpenAIBackend
    from arr_core.vlm.server import ServedVLM

    recs = load_dataset(make_pairs("t2i", 4, 9, tmp_path / "w", size=48)).records
    direct = pf.run_paper({"j": VLMClient(SceneVLM(), cache_mode="off")}, recs, zeroshot_ks=[1, 5], n_boot=50)
    with ServedVLM(SceneVLM()) as srv:
        client = VLMClient(OpenAIBackend(srv.base_url, None, "scene-vlm-1"), cache_mode="off")
        served = pf.run_paper({"j": client}, recs, zeroshot_ks=[1, 5], n_boot=50)
        asked = srv.stats.snapshot()["requests"]
    acc = {k: v for k, v in direct.summary.items() if k.startswith(("acc/", "bias/", "gain/"))}
    assert acc and acc == {k: v for k, v in served.summary.items() if k.startswith(("acc/", "bias/", "gain/"))}
    assert acc["acc/j/zeroshot_k5/single/balanced"] > 0.5  # judged with real rubrics, not abstentions
    assert asked == 2 * 4 + 3 * 8  # generation: 4 prompts x 2 ks; judging: 3 conditions x 4 pairs x 2 orders


def test_the_reports_judged_pairs_show_each_pairs_own_zero_shot_rubrics(hpdv3: Path) -> None:
    """The example pairs of a zero-shot run show the rubrics that judged each pair (the largest k), not
    'judged without rubrics'; a pair whose generation failed says so."""
    recs = load_dataset(hpdv3, format="hpdv3").records
    res = pf.run_paper({"red": VLMClient(ZeroShotRed(5), cache_mode="off")}, recs, zeroshot_ks=[1, 5], n_boot=50)
    (sec,) = [s for s in res.report.sections if s.id == "pairs"]
    assert "'zero-shot k=5'" in sec.text and len(sec.pairs) == 4
    for p in sec.pairs:
        assert p.rubric_text.splitlines() == [f"{i + 1}. criterion {i}: the image is red" for i in range(5)]
    short = pf.run_paper({"red": VLMClient(ZeroShotRed(5, short=True), cache_mode="off", max_reasks=0)}, recs,
                         zeroshot_ks=[5], n_boot=50)
    (sec,) = [s for s in short.report.sections if s.id == "pairs"]
    assert all(p.rubric_text.startswith("(no rubrics: their generation failed") for p in sec.pairs)
