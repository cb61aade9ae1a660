"""Pooling criteria: normalisation, de-duplication and the seeded diverse selection."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from arr_core.rubrics.aggregate import (
    criterion_key,
    deduplicate,
    normalize_criterion,
    select_criteria,
    select_diverse,
    text_vectors,
)

POOL = [
    "Every object named in the caption is present in the image; none is missing.",
    "1. Every object named in the caption is present in the image; none is missing.",
    "- Tip: every object named in the caption is present in the image, none is missing",
    "Object colours match the colours named in the caption.",
    "Each object appears exactly the number of times the caption states.",
    "Object edges are sharp and in focus, not blurred.",
    "The image is clean, without grain or noise speckle.",
    "Object colours match the colours named in the caption!",
    "The relative position of the objects follows the caption.",
    "Every object named in the caption is present in the image.",
]


def test_normalize_strips_bullets_numbering_and_space():
    assert normalize_criterion("  1.  - Tip:  Objects   are red. ") == "Objects are red."
    assert normalize_criterion('"Rubric 2: Colours match."') == "Colours match."
    assert normalize_criterion("(a) Sharp edges") == "Sharp edges"
    assert normalize_criterion(" - ") == ""
    assert criterion_key("Colours, match!") == criterion_key("colours match")
    with pytest.raises(TypeError):
        normalize_criterion(3)


def test_text_vectors_are_unit_and_independent_of_hash_seed():
    vecs = text_vectors(POOL)
    assert vecs.shape[0] == len(POOL)
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0)
    code = ("import json,sys; from arr_core.rubrics.aggregate import text_vectors; "
            "v=text_vectors(json.loads(sys.argv[1])); print(json.dumps([round(float(x), 12) for x in v.sum(axis=0)[:64]]))")
    outs = []
    for seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        res = subprocess.run([sys.executable, "-c", code, json.dumps(POOL)], capture_output=True, text=True,
                             env=env, check=True)
        outs.append(json.loads(res.stdout))
    assert outs[0] == outs[1]


def test_deduplicate_merges_exact_and_near_duplicates_with_support():
    pooled = deduplicate(POOL, threshold=0.8)
    texts = [p.text for p in pooled]
    # three spellings of the presence criterion are exact duplicates after normalisation; its shorter
    # variant (cosine ≈ 0.82) is a near duplicate at this threshold; the two colour ones collapse
    assert texts[0] == POOL[0] and pooled[0].support == 4
    assert sum("colours match" in t.lower() for t in texts) == 1
    colour = next(p for p in pooled if "colours match" in p.text.lower())
    assert colour.support == 2
    # distinct checks stay distinct
    assert any("number of times" in t for t in texts) and any("sharp" in t for t in texts)
    assert sum(p.support for p in pooled) == len(POOL)
    # at 1.0 only exact (normalised) duplicates merge: the shorter variant stays apart
    strict = deduplicate(POOL, threshold=1.0)
    assert len(strict) == len(pooled) + 1 and strict[0].support == 3
    with pytest.raises(ValueError, match="threshold"):
        deduplicate(POOL, threshold=0.0)


def test_select_diverse_prefers_novel_vectors_and_is_deterministic():
    a = np.array([1.0, 0.0, 0.0])
    a2 = np.array([0.99, 0.141, 0.0]) / np.linalg.norm([0.99, 0.141, 0.0])
    b = np.array([0.0, 0.0, 1.0])
    vecs = np.stack([a, a2, b])
    assert sorted(select_diverse(vecs, 2, seed=0)) == [0, 2] or sorted(select_diverse(vecs, 2, seed=0)) == [1, 2]
    assert set(select_diverse(vecs, 2, seed=0, weights=[2.0, 1.0, 1.0])) == {0, 2}
    assert select_diverse(vecs, 5) and len(select_diverse(vecs, 5)) == 3
    with pytest.raises(ValueError, match="weights"):
        select_diverse(vecs, 2, weights=[1.0])


def test_select_criteria_deterministic_bounded_and_support_ordered():
    big = POOL * 2 + [f"Criterion about property number {w}." for w in ("alpha", "beta", "gamma", "delta")]
    one = select_criteria(big, max_rubrics=5, seed=0)
    assert one == select_criteria(list(big), max_rubrics=5, seed=0)
    assert len(one) == 5 and len(set(one)) == 5
    assert one[0].startswith("Every object named")  # the most supported criterion comes first
    everything = select_criteria(big, max_rubrics=100)
    assert set(one) <= set(everything)
    with pytest.raises(ValueError, match="max_rubrics"):
        select_criteria(big, max_rubrics=0)
