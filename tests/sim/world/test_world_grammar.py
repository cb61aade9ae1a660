"""Grammar: sample → prompt → parse gives the same spec, for every tag; GenEval metadata round trip."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from arr_core.sim.world.grammar import (
    COLORS,
    SHAPES,
    TAGS,
    PromptSpec,
    parse_prompt,
    prompt_vocabulary,
    sample_spec,
)

GENEVAL = Path(__file__).resolve().parents[4] / "shared" / "data" / "geneval" / "evaluation_metadata.jsonl"


@pytest.mark.parametrize("tag", TAGS)
def test_round_trip_every_tag(tag):
    rng = np.random.default_rng(7)
    for _ in range(60):
        spec = sample_spec(rng, tag)
        assert spec.tag == tag
        parsed = parse_prompt(spec.prompt)
        assert parsed == spec, spec.prompt
        assert PromptSpec.from_geneval(json.loads(json.dumps(spec.to_geneval()))) == spec


def test_sampled_prompts_cover_the_grammar():
    rng = np.random.default_rng(0)
    specs = [sample_spec(rng) for _ in range(600)]
    assert {s.tag for s in specs} == set(TAGS)
    counts = {c["count"] for s in specs if s.tag == "counting" for c in s.include}
    assert counts == {2, 3, 4}
    vocab = set(prompt_vocabulary())
    for s in specs:
        assert set(s.prompt.split()) <= vocab, s.prompt
    assert set(SHAPES) | set(COLORS) <= vocab


def test_geneval_phrasing_and_metadata():
    spec = parse_prompt("a photo of a blue square left of a yellow circle")
    assert spec is not None and spec.tag == "position"
    assert spec.to_geneval() == {
        "tag": "position",
        "include": [{"class": "circle", "count": 1, "color": "yellow"},
                    {"class": "square", "count": 1, "color": "blue", "position": ["left of", 0]}],
        "prompt": "a photo of a blue square left of a yellow circle"}
    three = parse_prompt("a photo of three triangles")
    assert three.to_geneval() == {"tag": "counting", "include": [{"class": "triangle", "count": 3}],
                                  "exclude": [{"class": "triangle", "count": 4}],
                                  "prompt": "a photo of three triangles"}
    assert parse_prompt("a photo of an orange circle").include == [
        {"class": "circle", "count": 1, "color": "orange"}]
    assert parse_prompt("a photo of a red circle and a green square").tag == "color_attr"
    assert parse_prompt("a photo of a circle and a triangle").tag == "two_object"


def test_parse_is_tolerant_and_rejects_other_prompts():
    assert parse_prompt("  A Photo of a RED circle. ") == parse_prompt("a photo of a red circle")
    assert parse_prompt("two squares!").prompt == "a photo of two squares"
    for text in ("a photo of a dog", "a photo of a red circle and a square", "a photo of two circle",
                 "a photo of a circle left of a circle", "", "a photo of a circle and a square and a triangle",
                 "a photo of a purple wine glass and a black apple"):
        assert parse_prompt(text) is None, text


def test_from_geneval_names_the_missing_field():
    with pytest.raises(ValueError, match="include"):
        PromptSpec.from_geneval({"tag": "colors", "prompt": "x"})
    with pytest.raises(ValueError, match="clause 0"):
        PromptSpec.from_geneval({"tag": "colors", "prompt": "x", "include": [{"count": 1}]})


@pytest.mark.skipif(not GENEVAL.exists(), reason="../shared GenEval metadata not present")
def test_real_geneval_records_round_trip():
    lines = GENEVAL.read_text(encoding="utf-8").splitlines()
    for line in lines:
        d = json.loads(line)
        assert PromptSpec.from_geneval(d).to_geneval() == d
