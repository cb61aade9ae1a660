"""OpenAIBackend + VLMClient against the served scene VLM over real HTTP (uvicorn on a free port):
retries on 500/429 (Retry-After honoured), re-asks on malformed answers, timeouts, the concurrency cap,
cache hits without HTTP requests, and the API key kept out of logs and the store."""

from __future__ import annotations

import asyncio
import logging
import time

import duckdb
import numpy as np
import pytest

from arr_core.prompts.templates import build_judge
from arr_core.sim.scene_vlm import SceneVLM
from arr_core.sim.world import render, sample_spec
from arr_core.sim.world.scene import scene_from_spec
from arr_core.store.store import Store
from arr_core.vlm.client import VLMClient
from arr_core.vlm.openai_backend import OpenAIBackend
from arr_core.vlm.server import FaultConfig, ServedVLM

KEY = "sk-test-DO-NOT-LEAK-0123456789"


@pytest.fixture(scope="module")
def reqs():
    rng = np.random.default_rng(7)
    out = []
    for _ in range(24):
        spec = sample_spec(rng)
        out.append(build_judge("t2i", spec.prompt, [render(scene_from_spec(spec, rng), 32) for _ in range(2)],
                               rubrics_block=None))
    return out


def _client(srv, **kw):
    be_kw = {k: kw.pop(k) for k in ("timeout_s", "max_retries", "backoff_s", "total_retry_budget_s") if k in kw}
    be = OpenAIBackend(srv.base_url, kw.pop("api_key", None), "scene-vlm-1", **{"backoff_s": 0.01, **be_kw})
    return VLMClient(be, **{"cache_mode": "off", **kw})


def test_retries_500_then_429_honouring_retry_after(reqs):
    with ServedVLM(SceneVLM(), FaultConfig(script=["500", "429"], retry_after_s=0.5)) as srv:
        client = _client(srv)
        t0 = time.perf_counter()
        resp = asyncio.run(client.ask(reqs[0]))
        elapsed = time.perf_counter() - t0
        snap = srv.stats.snapshot()
    assert resp.error is None and sorted(resp.parsed["rank"]) == [1, 2]
    assert elapsed >= 0.5  # waited for Retry-After: 0.5 although its own backoff was 0.01 s
    assert client.stats()["retries"] == 2 and client.backend.errors_by_kind == {"HTTP 500": 1, "HTTP 429": 1}
    assert snap["requests"] == 3 and snap["outcomes"]["500"] == 1 and snap["outcomes"]["429"] == 1


def test_persistent_errors_end_in_an_abstention_not_an_exception(reqs):
    with ServedVLM(SceneVLM(), FaultConfig(error_rate=1.0)) as srv:
        client = _client(srv, max_retries=2)
        resp = asyncio.run(client.ask(reqs[0]))
        assert srv.stats.snapshot()["requests"] == 3
    assert resp.parsed is None and "HTTP 500 after 2 retries" in resp.error
    assert client.stats()["failures"] == 1


def test_malformed_answer_is_reasked(reqs):
    with ServedVLM(SceneVLM(), FaultConfig(script=["malformed"])) as srv:
        client = _client(srv)
        resp = asyncio.run(client.ask(reqs[0]))
        assert srv.stats.snapshot()["requests"] == 2
    assert resp.error is None and resp.attempts == 2
    st = client.stats()
    assert st["reasks"] == 1 and st["invalid_answers"] == 1 and st["retries"] == 0


def test_a_hung_request_times_out_and_is_retried(reqs):
    with ServedVLM(SceneVLM(), FaultConfig(script=["hang"], hang_s=20)) as srv:
        client = _client(srv, timeout_s=0.5)
        t0 = time.perf_counter()
        resp = asyncio.run(client.ask(reqs[0]))
        elapsed = time.perf_counter() - t0
    assert resp.error is None and 0.5 <= elapsed < 5
    assert client.backend.errors_by_kind == {"timeout": 1} and client.stats()["retries"] == 1


def test_retry_budget_bounds_the_time_spent(reqs):
    with ServedVLM(SceneVLM(), FaultConfig(timeout_rate=1.0, hang_s=20)) as srv:
        client = _client(srv, timeout_s=0.3, max_retries=10, total_retry_budget_s=0.8)
        t0 = time.perf_counter()
        resp = asyncio.run(client.ask(reqs[0]))
        elapsed = time.perf_counter() - t0
    assert resp.error is not None and "timeout" in resp.error and elapsed < 2.5


def test_concurrency_cap_holds_at_the_server(reqs):
    with ServedVLM(SceneVLM(), FaultConfig(latency_ms=100)) as srv:
        client = _client(srv, concurrency=4)
        out = asyncio.run(client.ask_many(reqs))
        snap = srv.stats.snapshot()
    assert all(r.error is None for r in out)
    assert snap["requests"] == len(reqs) and snap["max_in_flight"] == 4  # reached and never exceeded


def test_cache_hits_make_zero_http_requests(reqs, tmp_path):
    store = Store(tmp_path)
    with ServedVLM(SceneVLM()) as srv:
        first = asyncio.run(_client(srv, store=store, cache_mode="readwrite").ask_many(reqs[:6]))
        assert srv.stats.snapshot()["requests"] == 6
        client = _client(srv, store=store, cache_mode="readwrite")
        again = asyncio.run(client.ask_many(reqs[:6]))
        single = asyncio.run(client.ask(reqs[0]))
        assert srv.stats.snapshot()["requests"] == 6  # no new HTTP request
    assert all(r.cached for r in again) and single.cached
    assert [r.parsed for r in again] == [r.parsed for r in first]
    assert client.stats()["cache_hits"] == 7 and client.backend.http_requests == 0


def test_api_key_is_sent_but_never_logged_or_stored(reqs, tmp_path, caplog):
    store = Store(tmp_path)
    caplog.set_level(logging.DEBUG)  # every logger, the openai and httpx ones included
    with ServedVLM(SceneVLM(), FaultConfig(script=["500", "malformed"]), api_key=KEY) as srv:
        client = _client(srv, store=store, cache_mode="readwrite", api_key=KEY)
        out = asyncio.run(client.ask_many(reqs[:3]))
        assert all(r.error is None for r in out)  # the server accepted the key
        wrong = asyncio.run(_client(srv, api_key="sk-wrong").ask(reqs[5]))
        assert wrong.error is not None and "HTTP 401" in wrong.error
    logging.getLogger("arr_core.vlm").info("stats %s backend %r", client.stats(), client.backend)
    assert "retry 1/5" in caplog.text  # the retry was logged ...
    assert KEY not in caplog.text  # ... without the key
    assert KEY not in repr(client.backend) and KEY not in str(client.stats())
    assert KEY not in str([r.text for r in out])
    # scan every column of every table of the store
    with duckdb.connect(str(store.path), read_only=True) as con:
        tables = [r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()]
        assert "vlm_cache" in tables
        n_rows = 0
        for t in tables:
            for row in con.execute(f'SELECT * FROM "{t}"').fetchall():
                n_rows += 1
                assert KEY not in " ".join(str(v) for v in row), t
    assert n_rows >= 3
    assert KEY.encode() not in store.path.read_bytes()


def test_serving_an_openai_backend_proxies_to_the_upstream(reqs):
    """``arr vlm serve --backend openai`` in front of another endpoint (two real servers)."""
    with ServedVLM(SceneVLM()) as upstream:
        with ServedVLM(OpenAIBackend(upstream.base_url, None, "scene-vlm-1")) as proxy:
            client = _client(proxy)
            out = asyncio.run(client.ask_many(reqs[:3]))
            assert proxy.stats.snapshot()["requests"] == 3 and upstream.stats.snapshot()["requests"] == 3
    direct = [SceneVLM().respond(r.messages)[0] for r in reqs[:3]]
    assert [r.text for r in out] == direct


def test_a_faulty_endpoint_under_load_still_answers_everything(reqs):
    """Random (seeded) 500s, 429s and malformed answers at concurrency 8: every request ends valid."""
    faults = FaultConfig(error_rate=0.15, rate_limit_rate=0.1, malformed_rate=0.1, retry_after_s=0.05, seed=3)
    with ServedVLM(SceneVLM(), faults) as srv:
        client = _client(srv, concurrency=8, max_retries=8)
        out = asyncio.run(client.ask_many(reqs))
        snap = srv.stats.snapshot()
    assert all(r.error is None for r in out)
    st = client.stats()
    assert st["retries"] == snap["outcomes"]["500"] + snap["outcomes"]["429"] > 0
    assert st["reasks"] == snap["outcomes"]["malformed"] > 0
    assert snap["requests"] == len(reqs) + st["retries"] + st["reasks"]
