"""Rubric induction on the scene world with the offline scene VLM (real backend, recorded calls)."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from arr_core.data.dataset import Dataset, load_dataset
from arr_core.recipes.induce import induce_rubrics
from arr_core.rubrics.config import InduceConfig
from arr_core.rubrics.induction import (
    Attempt,
    generate_and_verify,
    induce_pair,
    induction_key,
    load_finished,
    pair_keys,
    save_attempt,
)
from arr_core.rubrics.rubric_set import RubricSet
from arr_core.sim.scene_vlm import SceneVLM
from arr_core.sim.world.pairs import make_pairs
from arr_core.store import Store
from arr_core.vlm.client import VLMClient
from arr_core.vlm.messages import data_url_digest, split_user_content


def _params(cfg: InduceConfig) -> dict:
    return {"generate_number": cfg.generate_number, "max_epochs": cfg.max_epochs,
            "verify_orders": cfg.verify_orders}


def gv(records, gen, ver, cfg: InduceConfig, store=None, **kw):
    """``generate_and_verify`` with the plain values of ``cfg`` (as the induction recipe passes them)."""
    return generate_and_verify(records, gen, ver, **_params(cfg), concurrency=cfg.concurrency, store=store, **kw)


class Recording:
    """Wraps a real backend and records every message list it is sent."""

    def __init__(self, inner) -> None:
        self.inner, self.name, self.model = inner, inner.name, inner.model
        self.sent: list[list[dict]] = []

    async def chat(self, messages, **kw):
        self.sent.append(messages)
        return await self.inner.chat(messages, **kw)

    def texts(self, kind: str) -> list[str]:
        """Instruction texts of the recorded requests of one kind (by their JSON contract)."""
        marker = {"judge": '"rank"', "generate": '"rubrics"', "categorize": '"categories"'}[kind]
        return [t for t in (split_user_content(m).text for m in self.sent) if marker in t]


class FixedAnswers:
    """A backend that answers every request with the next of a fixed list of strings (cycling)."""

    name, model = "fixed", "fixed-1"

    def __init__(self, answers: list[str]) -> None:
        self.answers, self.calls = answers, 0

    async def chat(self, messages, **kw):
        text = self.answers[self.calls % len(self.answers)]
        self.calls += 1
        return text, {"prompt_tokens": 1, "completion_tokens": 1}


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    """10 scene-world T2I pairs (64 px) made by make_pairs(seed=3)."""
    return load_dataset(make_pairs("t2i", 10, 3, tmp_path_factory.mktemp("pairs")))


@pytest.fixture(scope="module")
def more_pairs(tmp_path_factory):
    """4 further pairs (make_pairs seed=4) for incremental induction."""
    return load_dataset(make_pairs("t2i", 4, 4, tmp_path_factory.mktemp("more")))


def small_cfg(**kw) -> InduceConfig:
    return InduceConfig(max_epochs=3, concurrency=1, **kw)


def flipped(record):
    return dataclasses.replace(record, label_rank=list(reversed(record.label_rank)))


def test_blind_verification_never_sends_labels(pairs):
    """The verifier's messages are a function of (images, caption, criteria, order) only: a pair and
    the same pair with the opposite label give byte-identical verifier requests when the criteria
    are equal, and no verifier text mentions a preference."""
    crit = '{"rubrics": ["Every object named in the caption is present in the image.", "The image is in sharp focus."], "reason": "x"}'
    sent = []
    for rec in (pairs.records[0], flipped(pairs.records[0])):
        ver = Recording(SceneVLM(seed=0))
        client_gen = VLMClient(FixedAnswers([crit]), cache_mode="off")
        client_ver = VLMClient(ver, cache_mode="off")
        asyncio.run(induce_pair(rec, "k", client_gen, client_ver, generate_number=2, max_epochs=1,
                                verify_orders="both"))
        sent.append(ver.sent)
    assert len(sent[0]) == 2  # both orders were verified
    assert sent[0] == sent[1]
    # end to end with the scene VLM generating: no judge request carries a preference
    rec = Recording(SceneVLM(seed=0))
    client = VLMClient(rec, cache_mode="off")
    asyncio.run(gv(pairs.records[:4], client, client, small_cfg()))
    judge_texts = rec.texts("judge")
    assert judge_texts and len(rec.texts("generate")) >= 4
    assert all("prefer" not in t.lower() and "label" not in t.lower() for t in judge_texts)
    assert all("prefer" in t.lower() for t in rec.texts("generate"))  # the generator is told


def test_ties_and_invalid_ranks_fail_verification(pairs):
    crit = '{"rubrics": ["Object colours match the colours named in the caption."], "reason": "x"}'
    rec = pairs.records[1]
    # A verifier that always ties ([1, 1] is rejected, re-asked, then abstains): the pair never passes.
    gen = VLMClient(FixedAnswers([crit]), cache_mode="off")
    ver = VLMClient(FixedAnswers(['{"rank": [1, 1], "reason": "equally good"}']), cache_mode="off",
                    max_reasks=1)
    out = asyncio.run(induce_pair(rec, "k", gen, ver, generate_number=1, max_epochs=2, verify_orders="both"))
    assert out.status == "discarded" and out.criteria == [] and out.epochs == 2
    assert all(o["abstained"] and not o["recovered"] for a in out.attempts for o in a.orders)
    assert out.attempts[0].feedback and "no valid ranking" in out.attempts[0].feedback
    # A verifier that always ranks the first shown image best: forward and reversed disagree, so one
    # order always fails with "both"; with "single" the pair passes iff its preferred image is first.
    first = '{"rank": [1, 2], "reason": "the first one"}'
    for r in pairs.records[:4]:
        ver = VLMClient(FixedAnswers([first]), cache_mode="off")
        both = asyncio.run(induce_pair(r, "k", gen, ver, generate_number=1, max_epochs=2, verify_orders="both"))
        assert both.status == "discarded"
        assert all(sum(o["recovered"] for o in a.orders) == 1 for a in both.attempts)
        single = asyncio.run(induce_pair(r, "k", gen, ver, generate_number=1, max_epochs=1,
                                         verify_orders="single"))
        assert (single.status == "passed") == (r.preferred_index() == 0)


def test_resume_after_interruption_repeats_no_calls(pairs, tmp_path):
    records = pairs.records[:6]
    cfg = small_cfg()
    # uninterrupted reference run
    ref_store = Store(home=tmp_path / "ref")
    ref_backend = Recording(SceneVLM(seed=0))
    ref_client = VLMClient(ref_backend, store=ref_store)
    ref = asyncio.run(gv(records, ref_client, ref_client, cfg, ref_store))
    # interrupted after 3 pairs, then resumed with a new client on the same store
    store = Store(home=tmp_path / "run")
    backend = Recording(SceneVLM(seed=0))

    class Interrupted(Exception):
        pass

    def stop_after_3(done, total, outcome):
        if done == 3:
            raise Interrupted

    with pytest.raises(Interrupted):
        asyncio.run(gv(records, VLMClient(backend, store=store),
                 VLMClient(backend, store=store), cfg, store, progress=stop_after_3))
    first_calls = len(backend.sent)
    assert 0 < first_calls < len(ref_backend.sent)
    client = VLMClient(backend, store=store)
    res = asyncio.run(gv(records, client, client, cfg, store))
    assert len(backend.sent) == len(ref_backend.sent)  # nothing asked twice
    assert [p.reused for p in res.per_pair] == [True] * 3 + [False] * 3
    assert [(p.status, p.criteria, p.epochs) for p in res.per_pair] == \
        [(p.status, p.criteria, p.epochs) for p in ref.per_pair]
    # a third run asks nothing at all
    again = asyncio.run(gv(records, client, client, cfg, store))
    assert len(backend.sent) == len(ref_backend.sent) and all(p.reused for p in again.per_pair)
    assert again.stats["vlm_calls"] == 0


def test_every_attempt_is_stored_and_discarded_pairs_keep_history(pairs, tmp_path):
    store = Store(home=tmp_path)
    client = VLMClient(SceneVLM(seed=0), store=store)
    cfg = small_cfg()
    res = asyncio.run(gv(pairs.records, client, client, cfg, store))
    keys = [p.induction_key for p in res.per_pair]
    rows = store.fetchall("induction_records_by_keys", {"keys": keys})
    assert len(rows) == sum(p.epochs for p in res.per_pair)
    assert {r["final_status"] for r in rows} <= {"passed", "discarded"}
    assert res.stats["passed"] + res.stats["discarded"] == len(pairs.records)
    assert res.stats["passed"] > 0
    for p in res.per_pair:
        assert all(len(a.orders) == 2 for a in p.attempts if a.criteria)  # both orders verified
        if p.status == "discarded":
            assert p.epochs == cfg.max_epochs and not any(a.passed for a in p.attempts)
        else:
            assert p.attempts[-1].passed and p.criteria == p.attempts[-1].criteria
    assert sum(res.stats["epochs_histogram"].values()) == len(pairs.records)


def test_unfinished_pair_rows_are_replaced_on_rerun(pairs, tmp_path):
    store = Store(home=tmp_path)
    client = VLMClient(SceneVLM(seed=0), store=store)
    cfg = small_cfg()
    rec = pairs.records[0]
    [key] = pair_keys([rec], client, client, **_params(cfg))
    save_attempt(store, key, rec.pair_id, None, Attempt(epoch=2, kind="revise", criteria=["stale"],
                                                        orders=[], passed=False))
    assert load_finished(store, [key]) == {}  # unfinished: not reused
    res = asyncio.run(gv([rec], client, client, cfg, store))
    rows = store.fetchall("induction_records_by_keys", {"keys": [key]})
    assert len(rows) == res.per_pair[0].epochs
    assert all("stale" not in r["criteria"] and r["final_status"] == res.per_pair[0].status for r in rows)


def test_induce_is_deterministic_and_incremental(pairs, more_pairs, tmp_path):
    cfg = small_cfg()
    store = Store(home=tmp_path / "a")
    backend = Recording(SceneVLM(seed=0))
    client = VLMClient(backend, store=store)
    rs = induce_rubrics(pairs, cfg, store, client_gen=client, client_ver=client)
    assert store.get_rubric_set(rs.id).id == rs.id
    stats = rs.metadata["statistics"]
    assert stats["pairs_used"] == 10 and stats["criteria_selected"] == len(rs.criteria) <= cfg.max_rubrics
    assert rs.themes and len(rs.themes) <= cfg.categories_number and not stats["categorize_fallback"]
    assert RubricSet.from_text(rs.to_text(), task="t2i").themes == rs.themes  # reference text round trip
    # equal inputs in a fresh store give the same version id
    other = Store(home=tmp_path / "b")
    c2 = VLMClient(SceneVLM(seed=0), store=other)
    assert induce_rubrics(pairs, cfg, other, client_gen=c2, client_ver=c2).id == rs.id
    # the same pairs again on top of the parent: nothing new, no calls, the parent is returned
    n = len(backend.sent)
    assert induce_rubrics(pairs, cfg, store, parent_id=rs.id, client_gen=client, client_ver=client).id == rs.id
    assert len(backend.sent) == n
    # new pairs: only they are processed
    union = Dataset(records=pairs.records + more_pairs.records, name="union", source_uri="mem", task="t2i")
    child = induce_rubrics(union, cfg, store, parent_id=rs.id, client_gen=client, client_ver=client)
    def digests(records):
        return {data_url_digest(im.data_url()) for r in records for im in r.images}

    sent_images = {data_url_digest(part["image_url"]["url"]) for msgs in backend.sent[n:]
                   for msg in msgs if isinstance(msg["content"], list)
                   for part in msg["content"] if part.get("type") == "image_url"}
    old_only = digests(pairs.records) - digests(more_pairs.records)  # a few renders coincide
    assert old_only and sent_images and sent_images <= digests(more_pairs.records)
    assert not sent_images & old_only
    cs = child.metadata["statistics"]
    assert cs["new_pairs"] == 4 and cs["reused"] == 10 and cs["pairs_used"] == 14
    # with these seeds the new pairs bring new criteria: a new version that points at its parent
    assert child.id != rs.id and child.metadata["parent_id"] == rs.id
    assert store.get_rubric_set(child.id).id == child.id
    assert [p for p, _ in child.metadata["induction_pairs"]][:10] == [r.pair_id for r in pairs.records]


def test_edit_pairs_keep_the_source_first_in_both_orders(tmp_path):
    edit = load_dataset(make_pairs("edit", 3, 5, tmp_path))
    rec = Recording(SceneVLM(seed=0))
    client = VLMClient(rec, cache_mode="off")
    res = asyncio.run(gv(edit.records, client, client, small_cfg()))
    assert res.stats["pairs_used"] == 3
    judge_msgs = [m for m in rec.sent if '"rank"' in split_user_content(m).text]
    assert judge_msgs
    for m in judge_msgs:
        uc = split_user_content(m)
        assert uc.labels == ["Image BASE (original):", "Edited Image 1:", "Edited Image 2:"]
    sources = {data_url_digest(r.source.data_url()) for r in edit.records}
    assert {data_url_digest(split_user_content(m).image_urls[0]) for m in judge_msgs} == sources


def test_seed_records_are_checked(pairs):
    client = VLMClient(SceneVLM(seed=0), cache_mode="off")
    bad = dataclasses.replace(pairs.records[0], label_rank=None)
    with pytest.raises(ValueError, match="label_rank"):
        asyncio.run(gv([bad], client, client, small_cfg()))
    with pytest.raises(ValueError, match="duplicate"):
        asyncio.run(gv([pairs.records[0], pairs.records[0]], client, client, small_cfg()))
    assert induction_key("p", "a", "b", {"x": 1}) != induction_key("p", "a", "c", {"x": 1})


def test_garbage_categorization_falls_back_to_a_flat_list(pairs, tmp_path):
    from arr_core.rubrics.categorize import categorize_criteria, parse_categories

    client = VLMClient(FixedAnswers(["Sure, here are some themes!"]), cache_mode="off", max_reasks=1)
    themes, fallback = asyncio.run(categorize_criteria(["A", "B"], client, categories_number=5, task="t2i"))
    assert (themes, fallback) == ([], True)
    too_many = {"categories": [{"theme": f"T{i}", "tips": ["x"]} for i in range(6)], "reason": ""}
    assert parse_categories(too_many, 5) is None
    ok = parse_categories({"categories": [{"theme": " T ", "tips": [" x "]}]}, 5)
    assert ok[0].theme == "T" and ok[0].tips == ["x"]
    rs = RubricSet(task="t2i", themes=themes, criteria=["A", "B"])
    assert rs.prompt_block() == "1. A\n2. B"
