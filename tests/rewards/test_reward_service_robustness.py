"""The reward service against hostile or broken input, over real HTTP on 127.0.0.1: wrong types and
malformed bodies are 400s naming the field (never a 500, and the server keeps answering), a body over
max_request_mb is a 413 also when it is streamed without a length, too many images are refused on
every endpoint, --image-root paths cannot escape the root (absolute, '..', links, NUL bytes, folders,
overlong names), a full queue is a 503 busy before the body is read, and a dead VLM endpoint is a 503
that names it with the credentials of its URL masked."""

from __future__ import annotations

import base64
import os
import threading
import time
from pathlib import Path

import httpx
import pytest
from reward_scenes import render_pair, service_app  # tests/rewards is on sys.path (pytest prepend mode)

from arr_core.judge.http_reward import png_b64 as _b64
from arr_core.rubrics.rubric_set import RubricSet
from arr_core.sim.scene_vlm import SceneVLM
from arr_core.vlm.server import FaultConfig, ServedApp, ServedVLM, free_port

RUBRICS = RubricSet.from_text(
    "Rubric 1:\nTheme: Counts\n- Tip: Each object appears exactly the number of times the caption states.\n")


def _app(reward: dict, **kw):
    return service_app(reward, RUBRICS, **kw)


def test_wrong_types_malformed_bodies_and_too_many_images_are_400s_naming_the_field() -> None:
    prompt, clean, wrong = render_pair(21)
    a, b = _b64(clean), _b64(wrong)
    with ServedApp(_app({"mode": "scores"}, max_images=4)) as srv, httpx.Client(base_url=srv.url, timeout=60) as c:
        for path, body, field in (
                ("/v1/rewards", {"prompts": prompt, "groups": [[a, b]]}, "prompts"),
                ("/v1/rewards", {"prompts": [3], "groups": [[a, b]]}, "prompts[0]"),
                ("/v1/rewards", {"prompts": [" "], "groups": [[a, b]]}, "prompts[0]"),
                ("/v1/rewards", {"prompts": [prompt], "groups": {"0": [a, b]}}, "groups"),
                ("/v1/rewards", {"prompts": [prompt], "groups": [a]}, "groups[0]"),
                ("/v1/rewards", {"prompts": [prompt], "groups": [[a, 5]]}, "groups[0][1]"),
                ("/v1/rewards", {"prompts": [prompt], "groups": [[a, {"data": b, "x": 1}]]}, "groups[0][1]"),
                ("/v1/rewards", {"prompts": [prompt], "groups": [[a, base64.b64encode(b"\x89PNG\r\n").decode()]]},
                 "groups[0][1]"),
                ("/v1/rewards", {"prompts": [prompt], "groups": [[a, b, a, b, a]]}, "groups"),  # 5 > max_images
                ("/v1/rewards", "a string", "body"),
                ("/v1/scores", {"prompts": [prompt] * 5, "images": [a] * 5}, "images"),
                ("/v1/scores", {"prompts": [prompt], "images": a}, "images"),
                ("/compute", {"prompt": [prompt] * 5, "image": [a] * 5}, "groups"),
                ("/compute", {"prompt": prompt, "image": [a]}, "prompt")):
            r = c.post(path, json=body)
            assert r.status_code == 400 and r.json()["field"] == field, (path, body if len(str(body)) < 200 else "",
                                                                         r.text)
        raw = {"empty": b"", "not UTF-8": b"\xff\xfe{", "NaN": b'{"prompts": NaN}',
               "nested 100k deep": b"[" * 100_000 + b"]" * 100_000}
        for what, content in raw.items():
            r = c.post("/v1/rewards", content=content, headers={"content-type": "application/json"})
            assert r.status_code == 400 and r.json()["field"] in ("body", "prompts"), (what, r.text)
        ok = c.post("/v1/rewards", json={"prompts": [prompt], "groups": [[a, b]]})  # the server still answers
        assert ok.status_code == 200 and ok.json()["results"][0]["outcome"] == "win"
        assert c.get("/health").json()["rejected"] == 18


def test_a_request_over_the_size_cap_is_a_413_also_when_streamed_without_a_length() -> None:
    prompt, clean, wrong = render_pair(22)
    small = {"prompts": [prompt], "groups": [[_b64(clean), _b64(wrong)]]}
    huge = b'{"prompts": ["x"], "groups": [["' + b"A" * 200_000 + b'", "AAAA"]]}'
    with ServedApp(_app({"mode": "scores"}, max_request_mb=0.1)) as srv, httpx.Client(base_url=srv.url) as c:
        r = c.post("/v1/rewards", content=huge, headers={"content-type": "application/json"})
        assert r.status_code == 413 and r.json()["field"] == "body" and "max_request_bytes (104857 bytes)" in r.text

        def chunks():  # no content-length: the cap applies while reading
            for i in range(0, len(huge), 16_384):
                yield huge[i:i + 16_384]
        r = c.post("/v1/scores", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413 and r.json()["field"] == "body"
        assert c.post("/v1/rewards", json=small).status_code == 200


def test_image_paths_never_escape_the_image_root(tmp_path: Path) -> None:
    prompt, clean, wrong = render_pair(23)
    root, outside = tmp_path / "root", tmp_path / "outside.png"
    (root / "sub").mkdir(parents=True)
    clean.save(root / "sub" / "clean.png")
    wrong.save(outside)
    os.symlink(outside, root / "escape.png")  # a link inside the root to a file outside it
    os.symlink(root / "sub" / "clean.png", root / "inside.png")  # a link that stays inside
    with ServedApp(_app({"mode": "scores"}, image_root=str(root))) as srv, httpx.Client(base_url=srv.url) as c:
        for path, why in ((str(outside), "outside the image root"), ("../outside.png", "outside the image root"),
                          ("sub/../../outside.png", "outside the image root"),
                          ("escape.png", "outside the image root"), ("clean\x00.png", "cannot be read"),
                          ("sub", "no file"), ("x" * 5000, "cannot be read"), ("", "non-empty string")):
            r = c.post("/v1/rewards", json={"prompts": [prompt], "groups": [[_b64(wrong), {"path": path}]]})
            assert r.status_code == 400 and r.json()["field"] == "groups[0][1]" and why in r.json()["error"], \
                (path[:40], r.text[:300])
        r = c.post("/v1/rewards", json={"prompts": [prompt], "groups": [[{"path": "inside.png"},
                                                                        {"path": "sub/clean.png"}]]})
        assert r.status_code == 200 and r.json()["results"][0]["outcome"] == "tie"  # the same image twice


def test_a_full_queue_is_a_busy_503_before_the_body_is_read() -> None:
    prompt, clean, wrong = render_pair(24)
    with ServedVLM(SceneVLM(seed=0), FaultConfig(latency_ms=1500)) as vlm:
        app = _app({"mode": "scores", "vlm": {"backend": "openai", "base_url": vlm.base_url, "model": "scene-vlm-1",
                                              "cache_mode": "off"}}, max_concurrency=1, max_queue=0)
        with ServedApp(app) as srv:
            first: dict = {}
            t = threading.Thread(target=lambda: first.update(r=httpx.post(
                srv.url + "/v1/rewards", json={"prompts": [prompt], "groups": [[_b64(clean), _b64(wrong)]]},
                timeout=60)))
            t.start()
            deadline = time.monotonic() + 10
            while httpx.get(srv.url + "/health").json()["requests"] < 1:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            time.sleep(0.3)  # the first request is being scored (1.5 s per VLM answer)
            r = httpx.post(srv.url + "/v1/rewards", content=b"{not json", timeout=60,
                           headers={"content-type": "application/json"})
            assert r.status_code == 503 and r.headers["retry-after"] == "1" and "busy" in r.json()["error"]
            t.join(60)
            assert first["r"].status_code == 200
            health = httpx.get(srv.url + "/health").json()
    assert health["busy"] == 1 and health["rejected"] == 0 and health["in_flight_max"] == 1


@pytest.mark.parametrize("reward", [{"mode": "scores"}, {"mode": "rank", "order": "single"},
                                    {"components": [{"kind": "rubric_scores"}, {"kind": "checker", "checker": "scene"}]}],
                         ids=["scores", "rank", "hybrid"])
def test_a_dead_vlm_endpoint_is_a_503_naming_it_with_credentials_masked(reward: dict) -> None:
    prompt, clean, wrong = render_pair(25)
    url = f"http://user:s3cret-pw@127.0.0.1:{free_port()}/v1"  # nothing listens there
    app = _app({**reward, "vlm": {"backend": "openai", "base_url": url, "model": "m", "max_retries": 0,
                                  "cache_mode": "off"}})
    a, b = _b64(clean), _b64(wrong)
    calls = [("/v1/rewards", {"prompts": [prompt], "groups": [[a, b]]}), ("/compute", {"prompt": [prompt] * 2,
                                                                                       "image": [a, b]})]
    if reward.get("mode") == "scores":
        calls.append(("/v1/scores", {"prompts": [prompt], "images": [a]}))
    with ServedApp(app) as srv, httpx.Client(base_url=srv.url, timeout=60) as c:
        for path, body in calls:
            r = c.post(path, json=body)
            assert r.status_code == 503 and "results" not in r.json() and "rewards" not in r.json(), (path, r.text)
            assert f"VLM endpoint openai:m at http://***@127.0.0.1:{url.rsplit(':', 1)[1]}" in r.json()["error"]
            assert "s3cret" not in r.text and "user:" not in r.text
        assert c.get("/health").json()["failed"] == len(calls)


def test_edit_groups_are_judged_against_their_source_and_need_one(tmp_path: Path) -> None:
    from arr_core.sim.world.pairs import make_pairs

    pairs = make_pairs("edit", 2, 0, tmp_path / "world")
    import json

    rec = json.loads(pairs.read_text())[0]
    root = pairs.parent
    src, (a, b) = {"path": rec["source_image"]}, [{"path": p} for p in rec["edited_images"]]
    rs = RubricSet.from_text("Rubric 1:\nTheme: Edit\n- Tip: The requested edit is carried out exactly.\n\n"
                             "Rubric 2:\nTheme: Preservation\n- Tip: Everything the instruction does not mention "
                             "is left unchanged.\n", task="edit")
    app = service_app({"mode": "scores", "default_scale": "binary"}, rs, task="edit", image_root=str(root))
    better = max((0, 1), key=lambda i: rec["meta"]["utility"][i])  # the world's better edit of the pair
    with ServedApp(app) as srv, httpx.Client(base_url=srv.url, timeout=60) as c:
        r = c.post("/v1/rewards", json={"prompts": [rec["query"]], "groups": [[a, b]], "sources": [src]})
        [res] = r.json()["results"]
        assert r.status_code == 200 and res["outcome"] == "win" and res["ranks"][better] == 1, r.text
        for body, field in (({"prompts": [rec["query"]], "groups": [[a, b]]}, "sources"),
                            ({"prompts": [rec["query"]], "groups": [[a, b]], "sources": [src, src]}, "sources"),
                            ({"prompts": [rec["query"]], "groups": [[a, b]], "sources": [{"path": "../x.png"}]},
                             "sources[0]")):
            bad = c.post("/v1/rewards", json=body)
            assert bad.status_code == 400 and bad.json()["field"] == field, bad.text
        # Flow-Factory's protocol: the source as each sample's first condition image
        r = c.post("/compute", json={"prompt": [rec["query"]] * 2, "image": [a, b], "condition_images": [[src], [src]]})
        assert r.status_code == 200 and r.json()["rewards"] == res["rewards"]
        assert c.post("/compute", json={"prompt": [rec["query"]] * 2, "image": [a, b]}).json()["field"] == \
            "condition_images"
