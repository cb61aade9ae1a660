"""The rubric-conditioned judge: order modes, rank validation → re-ask → abstain, reward mappings,
the batch API over the offline scene VLM, and the store table ``judgments``."""

from __future__ import annotations

import asyncio
import json

import pytest

from arr_core.data.dataset import load_dataset
from arr_core.judge.judge import (
    JudgeItem,
    combine_orders,
    is_rank_permutation,
    judge_many,
    map_rewards,
    presentation_orders,
    unpermute,
)
from arr_core.judge.metrics import accuracy_summary, order_summary, reversed_record
from arr_core.sim.scene_vlm import SceneVLM
from arr_core.sim.world.pairs import make_pairs
from arr_core.store import Store
from arr_core.vlm.client import VLMClient


@pytest.fixture(scope="module")
def scene_records(tmp_path_factory):
    """12 scene-world T2I pairs (64 px), made by make_pairs(seed=7)."""
    path = make_pairs("t2i", 12, 7, tmp_path_factory.mktemp("pairs"))
    return load_dataset(path).records


class FixedAnswers:
    """A VLM backend that answers every request with the next of a fixed list of strings (cycling)."""

    name = "fixed"
    model = "fixed-1"

    def __init__(self, answers: list[str]) -> None:
        self.answers, self.calls = answers, 0

    async def chat(self, messages, *, temperature, max_tokens, seed=None, json_mode=False):
        text = self.answers[self.calls % len(self.answers)]
        self.calls += 1
        return text, {"prompt_tokens": 10, "completion_tokens": 5}


# ---- hand cases ----------------------------------------------------------------------------------

def test_presentation_orders_modes():
    assert presentation_orders(2, "single") == [[0, 1]]
    assert presentation_orders(3, "swap") == [[0, 1, 2], [2, 1, 0]]
    perms = {tuple(presentation_orders(4, "random", key=f"k{i}", seed=3)[0]) for i in range(40)}
    assert len(perms) > 5  # the random mode really permutes
    assert presentation_orders(4, "random", key="k1", seed=3) == presentation_orders(4, "random", key="k1", seed=3)
    with pytest.raises(ValueError, match="order mode"):
        presentation_orders(2, "both")
    with pytest.raises(ValueError, match="at least 2"):
        presentation_orders(1, "single")


def test_unpermute_maps_ranks_back_to_item_order():
    # Shown order: image 2, image 0, image 1; the VLM ranked the shown positions [1, 3, 2].
    assert unpermute([1, 3, 2], [2, 0, 1]) == [3, 2, 1]


def test_rank_validation_cases():
    assert is_rank_permutation([2, 1], 2) is None
    assert "permutation" in is_rank_permutation([1, 1], 2)
    assert "2 entries" in is_rank_permutation([1, 2, 3], 2)
    assert "integers" in is_rank_permutation([1.0, 2.0], 2)
    assert "list" in is_rank_permutation("1,2", 2)


def test_combine_orders_agreement_tie_abstain():
    assert combine_orders([[1, 2], [1, 2]]) == ([1.0, 2.0], "win")
    assert combine_orders([[1, 2], [2, 1]]) == ([1.5, 1.5], "tie")
    assert combine_orders([[1, 2], None]) == (None, "abstain")
    assert combine_orders([[2, 1, 3]]) == ([2.0, 1.0, 3.0], "win")


def test_reward_mappings_hand_values():
    assert map_rewards([1.0, 2.0], "win", "paper") == [1.0, -0.1]
    assert map_rewards([2.0, 1.0], "win", "linear") == [-0.1, 1.0]
    assert map_rewards([1.5, 1.5], "tie", "paper") == [0.0, 0.0]
    assert map_rewards([1.5, 1.5], "tie", "linear") == [0.0, 0.0]
    assert map_rewards(None, "abstain", "paper") is None
    assert map_rewards([3.0, 1.0, 2.0], "win", "paper") == [-0.1, 1.0, -0.1]
    assert map_rewards([3.0, 1.0, 2.0], "win", "linear") == pytest.approx([-0.1, 1.0, 0.45])
    # swap disagreement on 3 images: mean ranks map linearly; paper gives a tie no reward
    assert map_rewards([1.5, 1.5, 3.0], "tie", "linear") == pytest.approx([0.725, 0.725, -0.1])
    assert map_rewards([1.5, 1.5, 3.0], "tie", "paper") == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="mapping"):
        map_rewards([1.0, 2.0], "win", "softmax")


# ---- garbage answers: re-ask, then abstain (counted, never a crash) ------------------------------

@pytest.mark.parametrize("garbage", ["I like the first one.", '{"rank": [1, 1], "reason": "equal"}',
                                     '{"rank": [1, 2, 3], "reason": "x"}', '{"reason": "no rank"}'])
def test_garbage_answers_abstain_after_reasks(scene_records, garbage):
    backend = FixedAnswers([garbage])
    client = VLMClient(backend, cache_mode="off", max_reasks=2)
    js = asyncio.run(judge_many(client, scene_records[:3], order="swap"))
    assert [j.outcome for j in js] == ["abstain"] * 3
    assert all(j.rewards == [0.0, 0.0] and j.final_rank is None and j.winner is None for j in js)
    assert all(o.abstained and o.error for j in js for o in j.orders)
    assert backend.calls == 3 * 2 * 3  # items × orders × (1 + max_reasks)
    summary = accuracy_summary(js, scene_records[:3])
    assert summary["abstain_rate"] == 1.0 and summary["accuracy"] == 0.0


def test_reask_recovers_a_valid_rank(scene_records):
    backend = FixedAnswers(["Image 2 is better.", '{"rank": [2, 1], "reason": "sharper"}'])
    client = VLMClient(backend, cache_mode="off", max_reasks=1)
    [j] = asyncio.run(judge_many(client, scene_records[:1], order="single"))
    assert j.outcome == "win" and j.winner == 1 and j.rewards == [-0.1, 1.0]
    assert j.orders[0].attempts == 2 and backend.calls == 2


def test_swap_position_bias_becomes_a_tie(scene_records):
    """A judge that always ranks the first shown image best wins in single mode and ties in swap."""
    backend = FixedAnswers(['{"rank": [1, 2], "reason": "first"}'])
    client = VLMClient(backend, cache_mode="off")
    single = asyncio.run(judge_many(client, scene_records[:4], order="single"))
    swap = asyncio.run(judge_many(client, scene_records[:4], order="swap"))
    assert all(j.outcome == "win" and j.winner == 0 for j in single)
    assert all(j.outcome == "tie" and j.rewards == [0.0, 0.0] for j in swap)
    diag = order_summary(swap, scene_records[:4])
    assert diag["first_position_rate"] == 1.0 and diag["position_gap"] == 1.0
    first_preferred = sum(r.preferred_index() == 0 for r in scene_records[:4]) / 4
    assert diag["forward_accuracy"] == first_preferred and diag["reversed_accuracy"] == 1 - first_preferred


def test_random_order_is_recorded_and_mapped_back(scene_records):
    backend = FixedAnswers(['{"rank": [1, 2], "reason": "first"}'])
    client = VLMClient(backend, cache_mode="off")
    js = asyncio.run(judge_many(client, scene_records, order="random", seed=5))
    perms = [j.orders[0].permutation for j in js]
    assert {tuple(p) for p in perms} == {(0, 1), (1, 0)}  # both orders occur over 12 items
    for j in js:  # the always-first judge picks whichever image was shown first
        assert j.winner == j.orders[0].permutation[0]
    again = asyncio.run(judge_many(client, scene_records, order="random", seed=5))
    assert [j.orders[0].permutation for j in again] == perms


# ---- the offline scene VLM -----------------------------------------------------------------------

def test_swap_is_order_invariant_on_scene_vlm(scene_records):
    client = VLMClient(SceneVLM(seed=0), cache_mode="off")
    fwd = asyncio.run(judge_many(client, scene_records, order="swap"))
    rev = asyncio.run(judge_many(client, [reversed_record(r) for r in scene_records], order="swap"))
    for a, b in zip(fwd, rev, strict=True):
        assert a.outcome == b.outcome
        if a.winner is not None:
            assert b.winner == 1 - a.winner


def test_rubrics_change_the_request_and_listwise_works(scene_records, tmp_path):
    backend = SceneVLM(seed=0)
    client = VLMClient(backend, cache_mode="off")
    r = scene_records[0]
    three = JudgeItem("t2i", r.prompt, [r.images[0], r.images[1], r.images[0]], key="three")
    block = "1. Every object named in the caption is present in the image.\n2. Outlines are crisp."
    [j] = asyncio.run(judge_many(client, [three], rubric_block=block, order="swap", mapping="linear"))
    assert j.outcome in ("win", "tie")
    assert len(j.rewards) == 3 and max(j.rewards) <= 1.0 and min(j.rewards) >= -0.1


def test_judgments_go_to_the_store_with_the_rubric_set_id(scene_records, tmp_path):
    store = Store(home=tmp_path)
    client = VLMClient(SceneVLM(seed=0), store=store)
    js = asyncio.run(judge_many(client, scene_records[:5], rubric_block="1. Colours match the caption.",
                                rubric_set_id="rs-test", order="swap", store=store))
    rows = store.fetchall("judgment_by_rubric_set", {"rubric_set_id": "rs-test"})
    assert sorted(r["pair_id"] for r in rows) == sorted(r.pair_id for r in scene_records[:5])
    by_id = {r["judgment_id"]: r for r in rows}
    for j in js:
        row = by_id[j.judgment_id]
        assert row["outcome"] == j.outcome and json.loads(row["rewards"]) == j.rewards
        assert [o["permutation"] for o in json.loads(row["orders"])] == [[0, 1], [1, 0]]
    # judging again replaces rows (same ids) instead of adding
    asyncio.run(judge_many(client, scene_records[:5], rubric_block="1. Colours match the caption.",
                           rubric_set_id="rs-test", order="swap", store=store))
    assert len(store.fetchall("judgment_by_rubric_set", {"rubric_set_id": "rs-test"})) == 5
    assert store.fetchall("judgment_by_rubric_set", {"rubric_set_id": None}) == []
