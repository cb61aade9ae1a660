"""Pair datasets: ARR reference format, byte-identical for a seed, loadable by the project's loader;
held-out prompt sets balanced over tags; the CLI."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from PIL import Image

from arr_core.sim.world.grammar import TAGS, PromptSpec, parse_prompt
from arr_core.sim.world.pairs import make_pairs, make_prompts


def digest_tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_t2i_pairs_format_and_determinism(tmp_path):
    a = make_pairs("t2i", 12, 5, tmp_path / "a", size=32)
    b = make_pairs("t2i", 12, 5, tmp_path / "b", size=32)
    c = make_pairs("t2i", 12, 6, tmp_path / "c", size=32)
    assert a.name == "pairs.json"
    assert digest_tree(a.parent) == digest_tree(b.parent)
    assert digest_tree(a.parent) != digest_tree(c.parent)
    records = json.loads(a.read_text())
    assert len(records) == 12
    assert [r["meta"]["tag"] for r in records] == [TAGS[i % 6] for i in range(12)]
    for i, r in enumerate(records):
        assert set(r) == {"query", "response", "label_rank", "meta"}
        assert r["response"] == [f"images/{i:04d}_a.png", f"images/{i:04d}_b.png"]
        assert r["label_rank"] in ([1, 2], [2, 1])
        assert r["meta"]["defects_a"] != r["meta"]["defects_b"]
        assert len(r["meta"]["utility"]) == 2
        assert parse_prompt(r["query"]).prompt == r["query"]
        for p in r["response"]:
            with Image.open(a.parent / p) as im:
                assert im.size == (32, 32) and im.mode == "RGB"
    meta = [json.loads(line) for line in (a.parent / "geneval_metadata.jsonl").read_text().splitlines()]
    assert [m["prompt"] for m in meta] == [r["query"] for r in records]
    assert all(PromptSpec.from_geneval(m).to_geneval() == m for m in meta)


def test_edit_pairs_format_and_determinism(tmp_path):
    a = make_pairs("edit", 8, 2, tmp_path / "a")
    b = make_pairs("edit", 8, 2, tmp_path / "b")
    assert digest_tree(a.parent) == digest_tree(b.parent)
    records = json.loads(a.read_text())
    for i, r in enumerate(records):
        assert set(r) == {"query", "source_image", "edited_images", "label_rank", "meta"}
        assert r["source_image"] == f"images/{i:04d}_src.png"
        assert r["edited_images"] == [f"images/{i:04d}_a.png", f"images/{i:04d}_b.png"]
        assert r["label_rank"] in ([1, 2], [2, 1])
        assert not {"not_followed", "wrong_edit"} <= set(r["meta"]["defects_a"])


def test_labels_mostly_follow_the_utility(tmp_path):
    records = json.loads(make_pairs("t2i", 60, 0, tmp_path / "p", size=32).read_text())
    clear = [r for r in records if abs(r["meta"]["utility"][0] - r["meta"]["utility"][1]) > 0.2]
    agree = sum((r["meta"]["utility"][0] > r["meta"]["utility"][1]) == (r["label_rank"] == [1, 2])
                for r in clear)
    print(f"\nlabels agree with the utility on {agree}/{len(clear)} clearly different pairs")
    assert len(clear) >= 20 and agree / len(clear) >= 0.75  # label noise 0.1 on clear pairs


def test_pairs_load_with_the_project_loader(tmp_path):
    loader = pytest.importorskip("arr_core.data.dataset")
    for task in ("t2i", "edit"):
        path = make_pairs(task, 4, 1, tmp_path / task, size=32)
        ds = loader.load_dataset(path)
        recs = ds.records
        assert len(recs) == 4 and {r.task for r in recs} == {task}
        assert (recs[0].source is not None) == (task == "edit")


def test_make_prompts_balanced_and_distinct():
    specs = make_prompts(60, 3)
    assert [s.tag for s in specs] == [TAGS[i % 6] for i in range(60)]
    # distinct up to the number of prompts the grammar has per tag (3 shapes, 6 ordered pairs, 9 counts)
    room = {"single_object": 3, "two_object": 6, "counting": 9, "colors": 30, "position": 24 * 91,
            "color_attr": 540}
    for tag in TAGS:
        prompts = [s.prompt for s in specs if s.tag == tag]
        assert len(set(prompts)) == min(len(prompts), room[tag]), tag
    assert make_prompts(60, 3) == specs
    with pytest.raises(ValueError, match="task"):
        make_pairs("video", 2, 0, Path("unused"))


def test_cli_make_pairs_and_prompts(tmp_path):
    cli = pytest.importorskip("arr_cli")
    out = tmp_path / "pairs"
    assert cli.main(["world", "make-pairs", "--task", "t2i", "--n", "3", "--seed", "1", "--out", str(out),
                     "--size", "32"]) == 0
    assert len(json.loads((out / "pairs.json").read_text())) == 3
    assert cli.main(["world", "make-pairs", "--task", "edit", "--n", "2", "--seed", "1",
                     "--out", str(tmp_path / "edit")]) == 0
    prompts = tmp_path / "prompts.jsonl"
    assert cli.main(["world", "make-prompts", "--n", "12", "--seed", "0", "--out", str(prompts)]) == 0
    lines = [json.loads(x) for x in prompts.read_text().splitlines()]
    assert len(lines) == 12 and {x["tag"] for x in lines} == set(TAGS)
    assert cli.main(["world", "make-pairs", "--task", "video", "--n", "2", "--out", str(out)]) == 2
