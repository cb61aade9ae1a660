"""Loaders parse the real public files (when ../shared/data is present) and reject bad input."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from arr_core.bench import prompt_sets as ps
from arr_core.errors import InputError


def test_geneval_real(shared_data: Path) -> None:
    items = ps.load_geneval(shared_data / "geneval" / "evaluation_metadata.jsonl")
    assert len(items) == 553
    assert Counter(i.category for i in items) == {"position": 100, "color_attr": 100, "two_object": 99,
                                                  "colors": 94, "single_object": 80, "counting": 80}
    counting = next(i for i in items if i.category == "counting")
    assert counting.prompt == "a photo of two clocks"
    assert counting.questions == ["Are there exactly two clocks in the image?"]
    pos = next(i for i in items if i.category == "position")
    assert pos.questions[-1] == "Is the dog right of the teddy bear?"
    assert pos.meta["geneval"]["include"][1]["position"] == ["right of", 0]
    assert ps.detect_format(shared_data / "geneval") == "geneval"


def test_dpg_real_jsonl_and_folder_agree(shared_data: Path) -> None:
    a = ps.load_dpg_bench(shared_data / "dpg_bench" / "dpg_bench_prompts.jsonl")
    assert len(a) == 1065
    b = ps.load_dpg_bench(shared_data / "dpg_bench" / "prompts")
    assert {i.id: i.prompt for i in a} == {i.id: i.prompt for i in b}
    assert {"partiprompts", "COCOval", "dpg"} <= {i.category for i in a}


def test_t2i_compbench_real(shared_data: Path) -> None:
    folder = shared_data / "t2i_compbench" / "dataset"
    val = ps.load_t2i_compbench(folder)
    cats = Counter(i.category for i in val)
    assert cats["color"] == 300 and cats["spatial"] == 300 and len(cats) == 8
    one = ps.load_t2i_compbench(folder / "color_val.txt")
    assert one[0].prompt == "a green bench and a blue bowl" and one[0].category == "color_val"


def test_tiif_real(shared_data: Path) -> None:
    mini = ps.load_tiif_bench(shared_data / "tiif_bench")
    assert len(mini) == 277
    full = ps.load_tiif_bench(shared_data / "tiif_bench", split="test", description="long")
    assert len(full) == 2538
    no = [a for i in full for a in i.answers if a == "no"]
    assert no and all(len(i.questions) == len(i.answers) > 0 for i in full)
    num = ps.load_tiif_bench(shared_data / "tiif_bench" / "testmini_prompts" / "numeracy_prompts.jsonl")
    assert num[0].questions[1] == "Is the number of trains 4?"
    assert num[0].prompt.startswith("The scene includes four trains")


def test_unigenbench_real(shared_data: Path) -> None:
    en = ps.load_unigenbench(shared_data / "unigenbench" / "test_prompts_en.csv")
    zh = ps.load_unigenbench(shared_data / "unigenbench" / "test_prompts_zh.csv")
    assert len(en) == len(zh) == 600
    assert en[0].questions[0] == ("Does the image correctly show classical ink painting "
                                  "(checkpoint: Style)?")
    assert en[0].category == "Creative Divergence" and zh[0].category == "创意发散"
    assert all(i.questions for i in en)


def test_parti_drawbench_imgedit_step1x_real(shared_data: Path) -> None:
    parti = ps.load_partiprompts(shared_data / "partiprompts" / "PartiPrompts.tsv")
    assert len(parti) == 1632 and parti[0].prompt == "bond" and parti[0].category == "Abstract"
    draw = ps.load_drawbench(shared_data / "drawbench")
    assert len(draw) == 200 and draw[0].prompt == "A red colored car." and draw[0].category == "Colors"
    with_images = [i for i in draw if i.meta.get("images")]
    assert len(with_images) == 200 and sum(len(i.meta["images"]) for i in with_images) == 600
    basic = ps.load_imgedit(shared_data / "imgedit_bench" / "basic_edit.json")
    uge = ps.load_imgedit(shared_data / "imgedit_bench" / "UGE_edit.json")
    assert len(basic) == 737 and len(uge) == 47 and uge[0].category == "uge"
    assert "adjust" in {i.category for i in basic}
    s1 = ps.load_step1x_edit_examples(shared_data / "step1x_edit_examples")
    assert len(s1) == 5 and all(Path(i.meta["edited"]).exists() for i in s1)


def test_detect_format_real(shared_data: Path) -> None:
    assert ps.detect_format(shared_data / "unigenbench" / "test_prompts_en.csv") == "unigenbench"
    assert ps.detect_format(shared_data / "drawbench" / "drawbench_prompts.csv") == "drawbench"
    assert ps.detect_format(shared_data / "tiif_bench") == "tiif_bench"
    assert len(ps.load_prompt_set(shared_data / "partiprompts" / "PartiPrompts.tsv")) == 1632


def test_geneval_questions_hand_checked() -> None:
    rec = {"tag": "counting", "include": [{"class": "wine glass", "count": 3, "color": "red"}],
           "exclude": [{"class": "wine glass", "count": 4}, {"class": "person", "count": 1}], "prompt": "x"}
    assert ps.geneval_questions(rec) == ["Are there exactly three red wine glasses in the image?",
                                         "Is the image free of any person?"]
    rec2 = {"tag": "two_object", "include": [{"class": "apple", "count": 1},
                                             {"class": "bus", "count": 2, "position": ["above", 0]}], "prompt": "x"}
    assert ps.geneval_questions(rec2) == ["Is there an apple in the image?",
                                          "Are there at least two buses in the image?",
                                          "Is the bus above the apple?"]


def test_bad_input_names_record_and_field(tmp_path: Path) -> None:
    f = tmp_path / "meta.jsonl"
    f.write_text(json.dumps({"tag": "t", "include": [{"class": "a"}], "prompt": "p"}) + "\n"
                 + json.dumps({"tag": "t", "include": [{"class": "a", "count": 0}], "prompt": "p"}) + "\n")
    with pytest.raises(InputError, match=r"record 2.*field 'count'"):
        ps.load_geneval(f)
    f.write_text("{not json}\n")
    with pytest.raises(InputError, match="record 1"):
        ps.load_geneval(f)
    with pytest.raises(InputError, match="not found"):
        ps.load_geneval(tmp_path / "missing.jsonl")
    with pytest.raises(ValueError, match="answers"):
        ps.PromptItem("x", "p", "c", questions=["q"], answers=["maybe"])


def test_items_round_trip(tmp_path: Path) -> None:
    items = [ps.PromptItem("a", "a red circle", "colors", ["Is there a red circle?"], {"k": 1}),
             ps.PromptItem("b", "two squares", "counting")]
    out = ps.write_prompt_items(items, tmp_path / "items.jsonl")
    assert ps.detect_format(out) == "items"
    assert ps.load_prompt_set(out) == items
    (tmp_path / "p.txt").write_text("one\n\n two \n")
    assert [i.prompt for i in ps.load_prompt_set(tmp_path / "p.txt")] == ["one", "two"]
