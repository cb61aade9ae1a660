"""VLMClient without HTTP: cache hits, modes, batched writes, re-asks, abstention, statistics."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from arr_core.prompts.templates import build_judge
from arr_core.sim.scene_vlm import SceneVLM
from arr_core.sim.world import render, sample_spec
from arr_core.sim.world.scene import scene_from_spec
from arr_core.store.store import Store
from arr_core.vlm.base import VLMBackend, VLMTransportError
from arr_core.vlm.client import VLMClient


def _judge_requests(n: int, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        spec = sample_spec(rng)
        out.append(build_judge("t2i", spec.prompt, [render(scene_from_spec(spec, rng), 32) for _ in range(2)],
                               rubrics_block=None))
    return out


class Scripted:
    """A backend that answers from a list (one entry per call) and records what it was sent."""

    name = "scripted"
    model = "scripted-1"

    def __init__(self, answers: list[Any]) -> None:
        self.answers = list(answers)
        self.sent: list[list[dict]] = []

    async def chat(self, messages, *, temperature, max_tokens, seed=None, json_mode=False):
        self.sent.append(messages)
        a = self.answers.pop(0)
        if isinstance(a, Exception):
            raise a
        return a, {"prompt_tokens": 10, "completion_tokens": 5}


def test_scripted_backend_satisfies_the_protocol():
    assert isinstance(Scripted([]), VLMBackend) and isinstance(SceneVLM(), VLMBackend)


def test_cache_hits_make_no_backend_calls_and_writes_are_one_transaction(tmp_path):
    store = Store(tmp_path)
    reqs = _judge_requests(6)
    first = VLMClient(SceneVLM(), store=store)
    r1 = asyncio.run(first.ask_many(reqs))
    assert first.backend.calls == 6 and first.cache.flushes == 1
    assert len(store.fetchall("vlm_cache_stats")) == 1 and store.fetchall("vlm_cache_stats")[0]["n"] == 6
    again = VLMClient(SceneVLM(), store=store)
    r2 = asyncio.run(again.ask_many(reqs))
    assert again.backend.calls == 0
    assert [r.parsed for r in r2] == [r.parsed for r in r1] and all(r.cached for r in r2)
    st = again.stats()
    assert st["cache_hits"] == 6 and st["calls"] == 0
    # single asks hit too
    assert asyncio.run(again.ask(reqs[0])).cached


def test_readonly_reads_but_never_writes_and_off_ignores_the_cache(tmp_path):
    store = Store(tmp_path)
    reqs = _judge_requests(3)
    asyncio.run(VLMClient(SceneVLM(), store=store).ask_many(reqs[:2]))
    ro = VLMClient(SceneVLM(), store=store, cache_mode="readonly")
    out = asyncio.run(ro.ask_many(reqs))
    assert [r.cached for r in out] == [True, True, False] and ro.backend.calls == 1
    assert store.fetchall("vlm_cache_stats")[0]["n"] == 2
    off = VLMClient(SceneVLM(), store=store, cache_mode="off")
    asyncio.run(off.ask_many(reqs))
    assert off.backend.calls == 3
    with pytest.raises(ValueError, match="cache_mode"):
        VLMClient(SceneVLM(), cache_mode="sometimes")


def test_reask_tells_the_model_what_was_wrong_then_succeeds():
    req = _judge_requests(1)[0]
    be = Scripted(["Sure, image one!", '{"rank": [1, 1], "reason": "tie"}', '```json\n{"rank": [2, 1], "reason": "ok"}\n```'])
    client = VLMClient(be, max_reasks=2)
    resp = asyncio.run(client.ask(req))
    assert resp.error is None and resp.parsed["rank"] == [2, 1] and resp.attempts == 3
    assert len(be.sent) == 3
    assert be.sent[1][-1]["content"].startswith("Your previous answer could not be used: the answer contained no JSON")
    assert "permutation" in be.sent[2][-1]["content"] and be.sent[2][-2]["role"] == "assistant"
    st = client.stats()
    assert st["reasks"] == 2 and st["invalid_answers"] == 2 and st["calls"] == 3 and st["failures"] == 0
    assert st["prompt_tokens"] == 30 and st["completion_tokens"] == 15


def test_garbage_and_transport_failures_abstain_without_raising(tmp_path):
    req = _judge_requests(1)[0]
    client = VLMClient(Scripted(["no", "still no"]), store=Store(tmp_path), max_reasks=1)
    resp = asyncio.run(client.ask(req))
    assert resp.parsed is None and "after 1 re-ask" in resp.error
    client.flush()
    assert Store(tmp_path).fetchall("vlm_cache_stats") == []  # failures are never cached
    dead = VLMClient(Scripted([VLMTransportError("HTTP 500 after 5 retries")]))
    resp = asyncio.run(dead.ask(req))
    assert resp.parsed is None and resp.error.startswith("transport:") and dead.stats()["failures"] == 1


def test_concurrency_cap_in_process():
    class Slow(SceneVLM):
        def __init__(self):
            super().__init__()
            self.now = self.peak = 0

        async def chat(self, messages, **kw):
            self.now += 1
            self.peak = max(self.peak, self.now)
            await asyncio.sleep(0.01)
            self.now -= 1
            return '{"rank": [1, 2], "reason": ""}', {}

    be = Slow()
    client = VLMClient(be, cache_mode="off", concurrency=3)
    seen = []
    asyncio.run(client.ask_many(_judge_requests(10), progress=lambda d, t: seen.append((d, t))))
    assert be.peak == 3 and client.stats()["max_in_flight"] == 3
    assert seen[-1] == (10, 10) and len(seen) == 10


def test_concurrent_single_asks_share_one_read_and_one_write(tmp_path):
    """Induction asks pair by pair from concurrent coroutines: that must not be one store round trip each."""
    store = Store(tmp_path)
    reqs = _judge_requests(6, seed=3)

    async def burst(client):
        return await asyncio.gather(*(client.ask(r) for r in reqs))

    first = VLMClient(SceneVLM(), store=store)
    asyncio.run(burst(first))
    assert first.cache.reads == 1 and first.cache.flushes == 1
    assert store.fetchall("vlm_cache_stats")[0]["n"] == 6  # flushed without an explicit flush()
    again = VLMClient(SceneVLM(), store=store)
    out = asyncio.run(burst(again))
    assert all(r.cached for r in out) and again.cache.reads == 1 and again.backend.calls == 0


def test_an_unreadable_store_degrades_to_cache_misses(tmp_path, caplog):
    """readonly on a fresh home: there is no store file yet; requests still run (with a warning)."""
    store = Store(tmp_path / "fresh", read_only=True)
    client = VLMClient(SceneVLM(), store=store, cache_mode="readonly")
    out = asyncio.run(client.ask_many(_judge_requests(2)))
    assert all(r.error is None and not r.cached for r in out)
    assert client.stats()["cache_errors"] == 1 and "cache read failed" in caplog.text


def test_scene_seeds_do_not_share_cache_entries(tmp_path):
    store = Store(tmp_path)
    reqs = _judge_requests(2, seed=9)
    asyncio.run(VLMClient(SceneVLM(seed=0), store=store).ask_many(reqs))
    other = VLMClient(SceneVLM(seed=1), store=store)
    asyncio.run(other.ask_many(reqs))
    assert other.backend.calls == 2  # a different simulator seed answers differently: no hits
    same = VLMClient(SceneVLM(seed=1), store=store)
    asyncio.run(same.ask_many(reqs))
    assert same.backend.calls == 0


def test_max_side_downscales_what_the_backend_sees_and_keys_the_cache(tmp_path):
    """``vlm.max_side`` is wired: the backend receives images at most max_side px on the longer side,
    the request's other parts are untouched, and answers cached at one size are not reused at another."""
    from arr_core.vlm.messages import decode_data_url, split_user_content

    [req] = _judge_requests(1)  # two 32 px renders
    ans = '{"rank": [1, 2], "reason": "r"}'
    store = Store(tmp_path)
    small = Scripted([ans])
    asyncio.run(VLMClient(small, store=store, max_side=16).ask(req))
    sent = split_user_content(small.sent[0])
    assert [decode_data_url(u).size for u in sent.image_urls] == [(16, 16), (16, 16)]
    assert sent.text == split_user_content(req.messages).text and sent.labels == split_user_content(req.messages).labels
    full = Scripted([ans])
    asyncio.run(VLMClient(full, store=store).ask(req))  # another size: not a cache hit
    assert [decode_data_url(u).size for u in split_user_content(full.sent[0]).image_urls] == [(32, 32), (32, 32)]
    again = Scripted([])
    asyncio.run(VLMClient(again, store=store, max_side=16).ask(req))  # same size: a cache hit
    assert again.sent == []
    with pytest.raises(ValueError, match="max_side"):
        VLMClient(Scripted([]), max_side=4)
