"""Prompt templates: message layout (static text, images, per-pair text), labels, blind judging, the
position-bias and Image BASE instructions, answer schemas, validators, image handling."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from arr_core.data.records import ImageRef
from arr_core.prompts import templates as T
from arr_core.vlm.messages import BASE_LABEL, decode_data_url, split_user_content


def _img(color: tuple[int, int, int], size: int = 32) -> Image.Image:
    im = Image.new("RGB", (size, size), color)
    im.putpixel((1, 1), (0, 0, 0))
    return im


A, B, C, SRC = _img((200, 0, 0)), _img((0, 200, 0)), _img((0, 0, 200)), _img((90, 90, 90))


def _parts(req):
    assert len(req.messages) == 1 and req.messages[0]["role"] == "user"
    return req.messages[0]["content"]


def test_t2i_layout_static_text_then_labelled_images_then_the_caption():
    req = T.build_judge("t2i", "a photo of a red circle", [A, B, C], rubrics_block=None)
    parts = _parts(req)
    kinds = [p["type"] for p in parts]
    assert kinds == ["text"] + ["text", "image_url"] * 3 + ["text"]
    assert [parts[i]["text"] for i in (1, 3, 5)] == ["Image 1:", "Image 2:", "Image 3:"]
    assert parts[-1]["text"] == "Caption: a photo of a red circle"
    assert '"rank"' in parts[0]["text"] and "Caption:" not in parts[0]["text"]
    # images round-trip in order
    for k, im in enumerate([A, B, C]):
        url = parts[2 * k + 2]["image_url"]["url"]
        assert url.startswith("data:image/png;base64,")
        assert decode_data_url(url).getpixel((5, 5)) == im.getpixel((5, 5))


def test_edit_layout_base_then_edited_images():
    req = T.build_generate("edit", "change the red circle to blue", [A, B], source=SRC, preferred=1)
    parts = _parts(req)
    labels = [p["text"] for p in parts[1:-1] if p["type"] == "text"]
    assert labels == [BASE_LABEL, "Edited Image 1:", "Edited Image 2:"]
    assert decode_data_url(parts[2]["image_url"]["url"]).getpixel((5, 5)) == SRC.getpixel((5, 5))
    assert "Instruction: change the red circle to blue" in parts[-1]["text"]
    assert "preferred Edited Image 2" in parts[-1]["text"]
    uc = split_user_content(req.messages)
    assert uc.is_edit and len(uc.image_urls) == 3


def test_judge_never_carries_the_preference():
    """The generator is told which image won; the judge request is identical whatever the label."""
    g0 = T.build_generate("t2i", "a photo of a cat", [A, B], preferred=0)
    g1 = T.build_generate("t2i", "a photo of a cat", [A, B], preferred=1)
    assert g0.messages != g1.messages
    j = T.build_judge("t2i", "a photo of a cat", [A, B], rubrics_block="1. Objects are present.")
    text = split_user_content(j.messages).text.lower()
    assert "prefer" not in text and "label" not in text and "human" not in text
    assert "Evaluation rubrics:\n1. Objects are present." in _parts(j)[0]["text"]


@pytest.mark.parametrize("n", [2, 3, 5])
def test_rank_validator_accepts_only_permutations(n):
    v = T.build_judge("t2i", "x", [A] * n, rubrics_block=None).validator
    assert v({"rank": list(range(n, 0, -1)), "reason": "r"}) is None
    assert "permutation" in v({"rank": [1] * n, "reason": "r"})  # ties
    assert "exactly" in v({"rank": list(range(1, n)), "reason": "r"})  # too short
    assert "exactly" in v({"rank": list(range(1, n + 2)), "reason": "r"})  # too long
    assert "permutation" in v({"rank": [0] + list(range(1, n)), "reason": "r"})  # 0-based
    assert "integers" in v({"rank": ["1"] * n, "reason": "r"})
    assert "integers" in v({"rank": [True, False] + [3] * (n - 2), "reason": "r"})
    assert "reason" in v({"rank": list(range(1, n + 1))})


def test_contracts_and_versions_of_every_kind():
    reqs = {
        "generate": T.build_generate("t2i", "p", [A, B], preferred=0, n_rubrics=3),
        "judge": T.build_judge("t2i", "p", [A, B], rubrics_block=None),
        "revise": T.build_revise("t2i", "p", [A, B], preferred=0, previous=["c1"], feedback="order 2 failed"),
        "categorize": T.build_categorize(["c1", "c2"], categories_number=2, task="t2i"),
        "check": T.build_check(A, ["Is there a circle?"], prompt="a circle"),
    }
    keys = {"generate": ("rubrics", "reason"), "judge": ("rank", "reason"), "revise": ("rubrics", "reason"),
            "categorize": ("categories", "reason"), "check": ("answers",)}
    for kind, req in reqs.items():
        assert req.kind == kind
        assert req.prompt_version == T.PROMPT_VERSIONS[kind] and req.prompt_version in T.PROMPT_VERSION
        assert req.required_keys == keys[kind]
        text = split_user_content(req.messages).text
        for k in keys[kind]:
            assert f'"{k}"' in text  # the output contract names every required key
        # the schema for structured output requires exactly the keys the validator needs
        assert req.schema["type"] == "object" and tuple(req.schema["required"]) == keys[kind]
    assert "exactly 3 criteria" in _parts(reqs["generate"])[0]["text"]
    assert reqs["generate"].schema["properties"]["rubrics"]["minItems"] == 3
    assert reqs["judge"].schema["properties"]["rank"]["maxItems"] == 2
    assert all(p["type"] == "text" for p in _parts(reqs["categorize"]))  # no images


def test_revise_carries_previous_criteria_and_feedback():
    req = T.build_revise("t2i", "p", [A, B], preferred=1, previous=["Crit one", "Crit two"],
                         feedback="Order (2, 1) failed: the judge said Image 1 is sharper.")
    text = _parts(req)[-1]["text"]  # per-pair text comes after the images
    assert "Previous criteria:\n1. Crit one\n2. Crit two" in text
    assert "Feedback:\nOrder (2, 1) failed" in text


def test_categorize_and_check_validators():
    v = T.build_categorize(["a", "b"], categories_number=2, task="edit").validator
    assert v({"categories": [{"theme": "T", "tips": ["a", "b"]}], "reason": ""}) is None
    assert "at most 2" in v({"categories": [{"theme": "T", "tips": ["a"]}] * 3})
    assert "tips" in v({"categories": [{"theme": "T", "tips": []}]})
    assert "theme" in v({"categories": [{"tips": ["a"]}]})
    c = T.build_check(A, ["q1", "q2"]).validator
    assert c({"answers": [{"question": "q1", "answer": "yes"}, {"question": "q2", "answer": "no"}]}) is None
    assert "exactly 2" in c({"answers": [{"question": "q1", "answer": "yes"}]})
    assert "yes" in c({"answers": [{"question": "q1", "answer": "maybe"}, {"question": "q2", "answer": "no"}]})


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="source"):
        T.build_judge("edit", "p", [A, B], rubrics_block=None)
    with pytest.raises(ValueError, match="source"):
        T.build_judge("t2i", "p", [A, B], source=SRC, rubrics_block=None)
    with pytest.raises(ValueError, match="task"):
        T.build_judge("pointwise", "p", [A, B], rubrics_block=None)
    with pytest.raises(ValueError, match="preferred"):
        T.build_generate("t2i", "p", [A, B], preferred=2)
    with pytest.raises(ValueError, match="at least 2"):
        T.build_judge("t2i", "p", [A], rubrics_block=None)
    with pytest.raises(ValueError, match="rubrics_block"):
        T.build_judge("t2i", "p", [A, B], rubrics_block="  ")
    with pytest.raises(ValueError, match="feedback"):
        T.build_revise("t2i", "p", [A, B], preferred=0, previous=["c"], feedback="")
    with pytest.raises(ValueError, match="questions"):
        T.build_check(A, [])


def test_image_refs_and_downscaling(tmp_path):
    big = Image.new("RGB", (300, 150), (10, 120, 200))
    path = tmp_path / "big.png"
    big.save(path)
    ref = ImageRef.from_uri(str(path))
    req = T.build_judge("t2i", "p", [ref, big], rubrics_block=None, max_side=64)
    urls = [p["image_url"]["url"] for p in _parts(req) if p["type"] == "image_url"]
    sizes = [decode_data_url(u).size for u in urls]
    assert sizes == [(64, 32), (64, 32)]
    full = T.build_judge("t2i", "p", [ref, big], rubrics_block=None, max_side=None)
    assert [decode_data_url(p["image_url"]["url"]).size for p in _parts(full) if p["type"] == "image_url"] \
        == [(300, 150), (300, 150)]
    # the default caps images at 1024 px; above 256 px "auto" encodes JPEG, small images stay PNG
    huge = Image.new("RGB", (2048, 1024), (10, 120, 200))
    dflt = T.build_judge("t2i", "p", [huge, A], rubrics_block=None)
    urls = [p["image_url"]["url"] for p in _parts(dflt) if p["type"] == "image_url"]
    assert decode_data_url(urls[0]).size == (1024, 512) and urls[0].startswith("data:image/jpeg;base64,")
    assert urls[1].startswith("data:image/png;base64,")
    json.dumps(req.messages)  # the messages are plain JSON (sendable as is)


def test_judge_prompts_carry_the_position_bias_instruction_and_edit_prompts_the_base_requirements():
    t2i = [T.build_judge("t2i", "p", [A, B], rubrics_block=rb) for rb in (None, "1. Objects are sharp.")]
    edit = [T.build_judge("edit", "p", [A, B], source=SRC, rubrics_block=rb) for rb in (None, "1. Edit applied.")]
    for req in t2i + edit:
        assert T.POSITION_BIAS in _parts(req)[0]["text"]
    for req in edit + [T.build_generate("edit", "p", [A, B], source=SRC, preferred=0),
                       T.build_revise("edit", "p", [A, B], source=SRC, preferred=0, previous=["c"], feedback="f"),
                       T.build_checklist("edit", "p", B, source=SRC, rubrics=["c"])]:
        text = split_user_content(req.messages).text
        assert "against Image BASE" in text and "is never ranked" in text
    for req in t2i + [T.build_generate("t2i", "p", [A, B], preferred=0)]:
        assert "BASE" not in split_user_content(req.messages).text


def test_static_text_is_identical_across_pairs_so_servers_can_reuse_the_prefix():
    """Everything before the first image depends only on task, N and the rubric block."""
    block = "1. Objects are sharp.\n2. Colours match."
    a = T.build_judge("t2i", "a red circle", [A, B], rubrics_block=block)
    b = T.build_judge("t2i", "two blue squares", [C, SRC], rubrics_block=block)
    assert _parts(a)[0] == _parts(b)[0] and _parts(a)[1] == _parts(b)[1]  # static text + first label
    assert _parts(a)[-1] != _parts(b)[-1]
    g = [T.build_generate("edit", q, [A, B], source=SRC, preferred=p) for q, p in (("make it red", 0), ("move it", 1))]
    assert _parts(g[0])[0] == _parts(g[1])[0]
    assert "preferred Edited Image 1 over" in _parts(g[0])[-1]["text"]


def test_prompt_versions_bumped_for_the_new_layout():
    assert T.PROMPT_VERSIONS["judge"] == "judge-v3" and T.PROMPT_VERSIONS["generate"] == "generate-v2"
    assert T.PROMPT_VERSIONS["revise"] == "revise-v2" and T.PROMPT_VERSIONS["checklist"] == "checklist-v2"
    assert T.PROMPT_VERSION == "categorize-v1+check-v1+generate-v2+judge-v3+revise-v2"
