"""Real-endpoint behaviour (tests/vlm/quirks.py) with the default VLM settings: judging and induction
reach exactly what they reach against the scene VLM directly, through every quirk; parameter
adaptation happens once per endpoint; thinking budgets are raised; structured output is used and
dropped where rejected; image limits are clear errors."""

from __future__ import annotations

import asyncio
import logging
import re

import pytest

from arr_cli import main
from arr_core.data.dataset import load_dataset
from arr_core.judge.judge import judge_many
from arr_core.prompts.templates import build_judge
from arr_core.recipes.induce import induce_rubrics
from arr_core.rubrics.config import InduceConfig
from arr_core.sim.scene_vlm import PHRASES, SceneVLM
from arr_core.sim.world.pairs import make_pairs
from arr_core.store import Store
from arr_core.vlm.base import ImageLimitError
from arr_core.vlm.config import VLMConfig, build_client
from arr_core.vlm.jsonx import extract_json
from arr_core.vlm.openai_backend import forget_endpoints

from .quirks import QUIRKS, QuirkVLM

BLOCK = "\n".join(f"{i}. {PHRASES[c][0]}" for i, c in enumerate(("presence", "count", "color", "sharpness"), 1))
EDIT_BLOCK = f"1. {PHRASES['follows'][0]}\n2. {PHRASES['preserved'][0]}"


@pytest.fixture(autouse=True)
def _fresh_endpoints():
    forget_endpoints()  # every test is a fresh run: nothing learnt about an endpoint yet
    yield
    forget_endpoints()


@pytest.fixture(scope="module")
def t2i(tmp_path_factory):
    return load_dataset(make_pairs("t2i", 8, 31, tmp_path_factory.mktemp("t2i")))


@pytest.fixture(scope="module")
def edit(tmp_path_factory):
    return load_dataset(make_pairs("edit", 4, 32, tmp_path_factory.mktemp("edit")))


def _vlm(srv=None, **kw) -> VLMConfig:
    """Default settings; against a quirk server when given, else the scene VLM in process."""
    if srv is None:
        return VLMConfig(cache_mode="off", **kw)
    return VLMConfig(backend="openai", base_url=srv.base_url, model="scene-vlm-1", api_key="sk-test",
                     cache_mode="off", **kw)


def _judge(cfg: VLMConfig, records, block, order="swap"):
    client = build_client(cfg)
    js = asyncio.run(judge_many(client, records, rubric_block=block, order=order))
    return [(j.outcome, j.final_rank) for j in js], client.stats()


def _accuracy(outcomes, records) -> float:
    return sum(o == "win" and r.index(min(r)) == rec.preferred_index()
               for (o, r), rec in zip(outcomes, records, strict=True)) / len(records)


@pytest.fixture(scope="module")
def direct(t2i, edit):
    """What the scene VLM answers in process: t2i without and with rubrics, edit with rubrics."""
    return {"t2i": [_judge(_vlm(), t2i.records, b)[0] for b in (None, BLOCK)],
            "edit": _judge(_vlm(), edit.records, EDIT_BLOCK)[0]}


@pytest.mark.parametrize("quirk", QUIRKS)
def test_judging_through_every_quirk_matches_direct(quirk, t2i, edit, direct):
    with QuirkVLM(quirk) as srv:
        for block, want in zip((None, BLOCK), direct["t2i"], strict=True):
            got, st = _judge(_vlm(srv), t2i.records, block)
            assert got == want, quirk  # the same verdict on every pair, not just the same accuracy
            assert st["failures"] == 0 and st["reasks"] == 0
        if quirk == "image_limit":  # three images (Image BASE + 2 edits) cannot pass: a clear error
            with pytest.raises(ImageLimitError, match=r"at most 2 image.*--limit-mm-per-prompt"):
                _judge(_vlm(srv), edit.records, EDIT_BLOCK)
        else:
            assert _judge(_vlm(srv), edit.records, EDIT_BLOCK)[0] == direct["edit"]
        outcomes = srv.log.outcomes()
    assert _accuracy(direct["t2i"][1], t2i.records) > _accuracy(direct["t2i"][0], t2i.records) - 1e-9
    if quirk == "gpt5":  # adapted once for the whole run (three batches), not once per request
        assert outcomes["400:max_tokens"] == 1 and outcomes["400:temperature"] == 1
    if quirk in ("gpt5", "thinking_parser", "thinking_inline", "thinking_qwen3", "gemini", "small_context"):
        assert outcomes["length"] >= 1  # the default judge budget was too small for the reasoning ...
        assert st["output_budgets"] == {"judge": 1024} and st["length_retries"] >= 1  # ... and was raised
    if quirk == "no_json_schema":
        assert outcomes["400:json_schema"] == 1


@pytest.mark.parametrize("quirk", ["instruct", "gpt5", "thinking_qwen3", "gemini", "no_json_schema"])
def test_induction_through_quirks_gives_the_same_rubric_set(quirk, t2i, tmp_path):
    ds = t2i
    ref = induce_rubrics(ds, InduceConfig(generator=_vlm()), Store(tmp_path / "direct"))
    with QuirkVLM(quirk) as srv:
        got = induce_rubrics(ds, InduceConfig(generator=_vlm(srv)), Store(tmp_path / quirk))
    assert got.criteria == ref.criteria and got.criteria
    assert [(t.theme, t.tips) for t in got.themes] == [(t.theme, t.tips) for t in ref.themes]
    assert got.metadata["statistics"]["passed"] == ref.metadata["statistics"]["passed"]


@pytest.mark.slow
@pytest.mark.parametrize("quirk", ["thinking_parser", "thinking_inline", "image_limit", "small_context"])
def test_induction_through_the_other_quirks(quirk, t2i, tmp_path):
    test_induction_through_quirks_gives_the_same_rubric_set(quirk, t2i, tmp_path)


@pytest.mark.parametrize("quirk", ["gpt5", "thinking_qwen3"])
def test_arr_judge_cli_through_a_quirk_reports_the_direct_accuracy(quirk, t2i, tmp_path, capsys):
    pairs = t2i.source_uri
    acc = re.compile(r"accuracy \(95 % bootstrap\)\s*│\s*([01]\.\d{3}) \[")
    assert main(["judge", "--rubrics", "none", "--pairs", pairs, "--home", str(tmp_path / "a"), "--no-cache"]) == 0
    want = acc.search(capsys.readouterr().out).group(1)
    with QuirkVLM(quirk) as srv:
        assert main(["judge", "--rubrics", "none", "--pairs", pairs, "--home", str(tmp_path / "b"), "--no-cache",
                     "--backend", "openai", "--base-url", srv.base_url, "--model", "scene-vlm-1"]) == 0
    out = capsys.readouterr().out
    assert acc.search(out).group(1) == want
    assert re.search(r"abstain rate\s*│\s*0\.000", out)


def test_the_quirks_have_teeth(t2i):
    """Without the client's handling each quirk would cost answers: the draft inside the reasoning is a
    valid-looking but wrong answer, and the cut-off Qwen3 reasoning parses as one."""
    rec = t2i.records[0]
    req = build_judge("t2i", rec.prompt, list(rec.images), rubrics_block=BLOCK)
    truth = extract_json(SceneVLM().respond(req.messages)[0])
    import httpx

    for quirk, budget in (("thinking_inline", 4096), ("thinking_qwen3", 4096), ("thinking_qwen3", 300)):
        with QuirkVLM(quirk) as srv:
            body = {"model": "scene-vlm-1", "messages": req.messages, "max_tokens": budget}
            msg = httpx.post(srv.base_url + "/chat/completions", json=body, timeout=30).json()["choices"][0]["message"]
        naive = extract_json(msg["content"], ("rank", "reason"))
        assert naive is not None and naive["rank"] == truth["rank"][::-1], quirk


def test_thinking_budget_is_raised_once_then_kept_and_reasoning_is_counted(t2i):
    reqs = [build_judge("t2i", r.prompt, list(r.images), rubrics_block=BLOCK) for r in t2i.records[:4]]
    with QuirkVLM("thinking_parser", reasoning_tokens=1500) as srv:
        client = build_client(_vlm(srv, concurrency=1))

        async def run():  # one event loop: the HTTP connections belong to it
            first = await client.ask(reqs[0])
            st = client.stats()
            assert first.error is None and st["length_retries"] == 2 and st["output_budgets"] == {"judge": 2048}
            return await client.ask_many(reqs[1:])

        assert all(r.error is None for r in asyncio.run(run()))
        assert client.stats()["length_retries"] == 2  # later requests start with the raised budget
        budgets = [s.budget for s in srv.log.seen]
    assert budgets == [512, 1024, 2048, 2048, 2048, 2048]
    assert client.stats()["reasoning_tokens"] >= 4 * 1500
    # a cap below what the reasoning needs: no answer is made up, the request abstains
    with QuirkVLM("thinking_qwen3", reasoning_tokens=1500) as srv:
        capped = build_client(_vlm(srv, max_tokens_cap=1024, max_reasks=1))
        resp = asyncio.run(capped.ask(reqs[0]))
    assert resp.parsed is None and "cut off" in resp.error


def test_context_length_400_shrinks_the_budget_to_what_fits(t2i):
    rec = t2i.records[0]
    req = build_judge("t2i", rec.prompt, list(rec.images), rubrics_block=BLOCK)
    prompt_tokens = SceneVLM().respond(build_client(_vlm())._prepare(req))[1]["prompt_tokens"]
    with QuirkVLM("small_context", max_model_len=prompt_tokens + 700) as srv:
        resp = asyncio.run(build_client(_vlm(srv)).ask(req))
        seen = [(s.budget, s.outcome) for s in srv.log.seen]
    assert resp.error is None
    assert seen == [(512, "length"), (1024, "400:context"), (692, "ok")]


def test_adaptation_is_logged_once_and_shared_by_clients_of_one_endpoint(t2i, caplog):
    reqs = [build_judge("t2i", r.prompt, list(r.images), rubrics_block=None) for r in t2i.records]
    caplog.set_level(logging.WARNING, logger="arr_core.vlm")
    with QuirkVLM("gpt5") as srv:
        a = build_client(_vlm(srv, concurrency=8))
        assert all(r.error is None for r in asyncio.run(a.ask_many(reqs)))
        b = build_client(_vlm(srv))  # another client (e.g. the verifier) on the same endpoint + model
        assert asyncio.run(b.ask(reqs[0])).error is None
        out = srv.log.outcomes()
        sent = [(s.token_param, s.temperature) for s in srv.log.seen if s.outcome in ("ok", "length")]
    assert out["400:max_tokens"] == 1 and out["400:temperature"] == 1
    assert set(sent) == {("max_completion_tokens", None)}
    assert caplog.text.count("'max_tokens' rejected") == 1 and caplog.text.count("'temperature' rejected") == 1
    assert len(b.stats()["adaptations"]) == 2


def test_explicit_parameters_are_sent_as_configured(t2i):
    req = build_judge("t2i", t2i.records[0].prompt, list(t2i.records[0].images), rubrics_block=None)
    with QuirkVLM("instruct") as srv:
        cfg = _vlm(srv, token_param="max_completion_tokens", temperature=None, max_tokens={"judge": 300},
                   structured_output=False)
        assert asyncio.run(build_client(cfg).ask(req)).error is None
        [s] = srv.log.seen
    assert (s.token_param, s.budget, s.temperature, s.response_format) == ("max_completion_tokens", 300, None, None)
    with QuirkVLM("gpt5") as srv:  # an explicit name is not adapted: the server's message is the error
        resp = asyncio.run(build_client(_vlm(srv, token_param="max_tokens")).ask(req))
    assert "HTTP 400" in resp.error and "max_completion_tokens" in resp.error


def test_structured_output_is_sent_and_dropped_where_rejected(t2i):
    reqs = [build_judge("t2i", r.prompt, list(r.images), rubrics_block=BLOCK) for r in t2i.records[:3]]
    for quirk, formats in (("instruct", {"json_schema"}), ("no_json_schema", {"json_schema", None})):
        with QuirkVLM(quirk) as srv:
            client = build_client(_vlm(srv, concurrency=4))
            out = asyncio.run(client.ask_many(reqs))
            seen = [(s.response_format, s.outcome) for s in srv.log.seen]
        assert all(r.error is None for r in out)
        assert {f for f, _ in seen} == formats
        if quirk == "no_json_schema":  # one rejection, then text parsing for every request
            assert seen[0] == ("json_schema", "400:json_schema") and all(f is None for f, _ in seen[1:])


def test_image_limit_is_checked_before_sending_and_learnt_from_the_server(edit):
    rec = edit.records[0]
    req = build_judge("edit", rec.prompt, list(rec.images), source=rec.source, rubrics_block=None)
    with QuirkVLM("image_limit") as srv:
        with pytest.raises(ImageLimitError, match=r"max_images_per_request = 2"):
            asyncio.run(build_client(_vlm(srv, max_images_per_request=2)).ask(req))
        assert srv.log.seen == []  # refused before sending
        client = build_client(_vlm(srv))
        with pytest.raises(ImageLimitError) as e:
            asyncio.run(client.ask(req))
        assert "At most 2 image(s)" in str(e.value) and "'{\"image\": 3}'" in str(e.value)
        with pytest.raises(ImageLimitError):
            asyncio.run(build_client(_vlm(srv)).ask(req))
        assert len(srv.log.seen) == 1  # the limit was learnt for the endpoint: the second request never left


def test_a_request_over_geminis_cap_is_a_clear_error_and_the_default_cap_prevents_it():
    import numpy as np
    from PIL import Image

    class Ranker:  # answers without looking (the scene detector on 1024² noise would take minutes)
        name, model = "fixed", "scene-vlm-1"

        async def chat(self, messages, **kw):
            return '{"rank": [1, 2, 3, 4, 5], "reason": "r"}', {"prompt_tokens": 10, "completion_tokens": 5}

    rng = np.random.default_rng(0)
    noise = [Image.fromarray(rng.integers(0, 256, (1024, 1024, 3), dtype=np.uint8)) for _ in range(5)]
    req = build_judge("t2i", "noise", noise, rubrics_block=None, max_side=None)
    with QuirkVLM("gemini", Ranker()) as srv:
        raw = build_client(_vlm(srv, image_format="png", max_side=None, max_request_bytes=None))
        resp = asyncio.run(raw.ask(req))  # ~21 MB of PNG: rejected by the server, with its message
        assert "too large" in resp.error and "Request payload size exceeds the limit" in resp.error
        capped = build_client(_vlm(srv, image_format="png", max_side=None))  # default 15 MB cap
        resp = asyncio.run(capped.ask(req))
        assert resp.error is None and capped.stats()["request_bytes_max"] <= 15_000_000


def test_error_details_reads_the_openai_vllm_and_gemini_error_forms():
    from arr_core.vlm.openai_backend import error_details

    class E(Exception):
        def __init__(self, body):
            self.body, self.message = body, "Error code: 400"

    assert error_details(E({"message": "m", "param": "temperature", "code": "unsupported_value"})) == \
        ("m", "temperature", "unsupported_value")
    assert error_details(E({"object": "error", "message": "v", "type": "BadRequestError", "param": None,
                            "code": 400})) == ("v", None, "400")
    assert error_details(E([{"error": {"code": 400, "message": "g", "status": "INVALID_ARGUMENT"}}])) == \
        ("g", None, "400")
    assert error_details(E("plain text")) == ("plain text", None, None)
