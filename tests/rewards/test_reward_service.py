"""The reward service (``arr serve reward``) over real HTTP on 127.0.0.1: rewards with per-criterion and
per-component details, image paths only under the root, 400s naming the field (and the server still
answers afterwards), 503s naming a failed endpoint, the concurrency cap, the framework clients of
benchmarks/reward_service_clients.py against our protocol, and the CLI as a real process."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from reward_scenes import render_pair as _renders  # tests/rewards is on sys.path (pytest prepend mode)
from reward_scenes import service_app

from arr_core.judge.http_reward import png_b64 as _b64
from arr_core.rubrics.rubric_set import RubricSet
from arr_core.sim.scene_vlm import SceneVLM
from arr_core.vlm.server import FaultConfig, ServedApp, ServedVLM, free_port

ROOT = Path(__file__).resolve().parents[2]
RUBRICS = RubricSet.from_text(
    "Rubric 1:\nTheme: Counts\n- Tip: Each object appears exactly the number of times the caption states.\n\n"
    "Rubric 2:\nTheme: Objects\n- Tip: Every object named in the caption is present in the image; none is missing.\n")
C1 = "c1 Each object appears exactly the numbe"



def _app(reward: dict, **kw):
    return service_app(reward, RUBRICS, **kw)


def _clients_module():
    spec = importlib.util.spec_from_file_location("reward_service_clients", ROOT / "benchmarks" / "reward_service_clients.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_rewards_with_criterion_details_paths_under_the_root_and_400s_naming_the_field(tmp_path: Path) -> None:
    prompt, clean, wrong = _renders(3)
    root = tmp_path / "images"
    root.mkdir()
    clean.save(root / "clean.png")
    (tmp_path / "outside.png").write_bytes((root / "clean.png").read_bytes())
    with ServedApp(_app({"mode": "scores"}, image_root=str(root))) as srv, httpx.Client(base_url=srv.url) as c:
        r = c.post("/v1/rewards", json={"prompts": [prompt], "groups": [[{"path": "clean.png"}, _b64(wrong)]]})
        assert r.status_code == 200, r.text
        [res] = r.json()["results"]
        assert res["outcome"] == "win" and res["ranks"] == [1, 2] and res["rewards"] == res["scores"]
        assert res["criteria"][C1][0] == 5 and res["criteria"][C1][1] < 5
        # malformed requests: 400 naming the field, and the server keeps answering
        for body, field in (
                ({"groups": [[_b64(clean), _b64(wrong)]]}, "prompts"),
                ({"prompts": [prompt], "groups": [[_b64(clean)]]}, "groups[0]"),
                ({"prompts": [prompt], "groups": [[_b64(clean), "not base64!"]]}, "groups[0][1]"),
                ({"prompts": [prompt], "groups": [[_b64(clean), {"path": "../outside.png"}]]}, "groups[0][1]"),
                ({"prompts": [prompt], "groups": [[_b64(clean), _b64(wrong)]], "sources": [_b64(clean)]}, "sources"),
                ([1, 2], "body")):
            bad = c.post("/v1/rewards", json=body)
            assert bad.status_code == 400 and bad.json()["field"] == field, (field, bad.text)
        assert "outside the image root" in c.post("/v1/rewards", json={
            "prompts": [prompt], "groups": [[_b64(clean), {"path": "../outside.png"}]]}).json()["error"]
        assert c.post("/v1/rewards", content=b"{not json", headers={"content-type": "application/json"}
                      ).json()["field"] == "body"
        assert c.post("/v1/rewards", json={"prompts": [prompt], "groups": [[_b64(clean), _b64(wrong)]]}
                      ).status_code == 200
        # pointwise scores of the per-criterion judge
        r = c.post("/v1/scores", json={"prompts": [prompt, prompt], "images": [_b64(clean), _b64(wrong)]})
        a, b = r.json()["results"]
        assert a["composite"] == 1.0 and b["composite"] < 1.0 and a["criteria"][C1] == 5
        assert c.get("/health").json()["rejected"] == 8


def test_paths_are_refused_without_an_image_root_and_scores_need_the_per_criterion_judge() -> None:
    prompt, clean, wrong = _renders(4)
    with ServedApp(_app({"mode": "rank", "order": "single"})) as srv, httpx.Client(base_url=srv.url) as c:
        r = c.post("/v1/rewards", json={"prompts": [prompt], "groups": [[{"path": "/etc/passwd"}, _b64(wrong)]]})
        assert r.status_code == 400 and "no --image-root" in r.json()["error"]
        r = c.post("/v1/rewards", json={"prompts": [prompt], "groups": [[_b64(clean), _b64(wrong)]]})
        [res] = r.json()["results"]
        assert res["outcome"] == "win" and res["scores"] is None and res["rewards"] == [1.0, -0.1]
        assert c.post("/v1/scores", json={"prompts": [prompt], "images": [_b64(clean)]}).json()["field"] == "path"


def test_a_failing_vlm_endpoint_is_a_503_naming_it_never_a_score() -> None:
    prompt, clean, wrong = _renders(5)
    with ServedVLM(SceneVLM(seed=0), FaultConfig(error_rate=1.0)) as vlm:
        app = _app({"mode": "scores", "vlm": {"backend": "openai", "base_url": vlm.base_url, "model": "scene-vlm-1",
                                              "max_retries": 0, "cache_mode": "off"}})
        with ServedApp(app) as srv, httpx.Client(base_url=srv.url, timeout=30) as c:
            r = c.post("/v1/rewards", json={"prompts": [prompt], "groups": [[_b64(clean), _b64(wrong)]]})
            assert r.status_code == 503 and "results" not in r.json()
            assert f"VLM endpoint openai:scene-vlm-1 at {vlm.base_url} failed" in r.json()["error"]


def test_a_failing_http_component_is_a_503_naming_its_url() -> None:
    prompt, clean, wrong = _renders(6)
    url = f"http://127.0.0.1:{free_port()}/score"
    app = _app({"rubrics": None, "components": [{"kind": "checker", "checker": "scene"},
                                                {"kind": "http", "name": "rm", "url": url, "timeout_s": 2}]})
    with ServedApp(app) as srv, httpx.Client(base_url=srv.url, timeout=60) as c:
        r = c.post("/v1/rewards", json={"prompts": [prompt], "groups": [[_b64(clean), _b64(wrong)]]})
        assert r.status_code == 503 and f"reward component rm: endpoint {url} failed" in r.json()["error"]


def test_hybrid_results_carry_per_component_and_per_criterion_details() -> None:
    prompt, clean, wrong = _renders(7)
    app = _app({"components": [{"kind": "checker", "checker": "scene", "weight": 0.5},
                               {"kind": "rubric_scores", "name": "rubric", "default_scale": "binary"}]})
    with ServedApp(app) as srv, httpx.Client(base_url=srv.url) as c:
        [res] = c.post("/v1/rewards", json={"prompts": [prompt], "groups": [[_b64(clean), _b64(wrong)]]}
                       ).json()["results"]
    comp = res["components"]
    assert set(comp) == {"checker", "rubric"} and comp["rubric"]["criteria"][C1] == [1, 0]
    # hand sum: 0.5·checker + composite of two binary criteria
    expect = [0.5 * comp["checker"]["values"][i] + comp["rubric"]["values"][i] for i in range(2)]
    assert res["scores"] == pytest.approx(expect) and res["rewards"] == pytest.approx(expect)


def test_concurrency_is_capped_and_excess_requests_get_a_busy_503() -> None:
    prompt, clean, wrong = _renders(8)
    with ServedVLM(SceneVLM(seed=0), FaultConfig(latency_ms=400)) as vlm:
        app = _app({"mode": "scores", "vlm": {"backend": "openai", "base_url": vlm.base_url, "model": "scene-vlm-1",
                                              "cache_mode": "off"}}, max_concurrency=1, max_queue=1)
        body = {"prompts": [prompt], "groups": [[_b64(clean), _b64(wrong)]]}
        with ServedApp(app) as srv:
            async def burst():
                async with httpx.AsyncClient(base_url=srv.url, timeout=60) as c:
                    return await asyncio.gather(*(c.post("/v1/rewards", json=body) for _ in range(4)))
            codes = sorted(r.status_code for r in asyncio.run(burst()))
            health = httpx.get(srv.url + "/health").json()
    assert codes.count(200) >= 2 and 503 in codes  # one scoring, one waiting, the rest turned away
    assert health["in_flight_max"] == 1 and health["busy"] == codes.count(503)


def test_framework_clients_against_our_protocol() -> None:
    mod = _clients_module()
    prompt, clean, wrong = _renders(9)
    with ServedApp(_app({"mode": "scores"})) as srv:
        # Flow-Factory: GET /health, then its /compute body; consecutive equal prompts are one group
        assert httpx.get(srv.url + "/health").is_success
        r = httpx.post(srv.url + "/compute", json=mod.flow_factory_payload([prompt] * 2, [clean, wrong]))
        rewards = r.json()["rewards"]
        assert len(rewards) == 2 and rewards[0] > rewards[1]
        assert httpx.post(srv.url + "/compute", json=mod.flow_factory_payload([prompt], [clean])).status_code == 400
        # flow_grpo: NCHW float tensor in [0, 1], as its sampler hands images to reward functions
        batch = torch.stack([torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0).permute(2, 0, 1)
                             for im in (clean, wrong, wrong, clean)])
        other, c2, w2 = _renders(10)
        scores, info = mod.arr_rubric_score("cpu", url=srv.url)(batch, [prompt, prompt, other, other], {})
        assert len(scores) == 4 and scores[0] > scores[1] and info["outcomes"][0] == "win"
        # VeRL-Omni: one (C, H, W) tensor per call, the prompt as ground_truth
        img = torch.from_numpy(np.asarray(clean, dtype=np.float32) / 255.0).permute(2, 0, 1)
        out = asyncio.run(mod.compute_score_arr_rubric("scene", img, prompt, {}, url=srv.url))
        assert out["score"] == 1.0 and out["criteria"][0][C1] == 5


def test_arr_serve_reward_cli_runs_a_real_server(tmp_path: Path) -> None:
    rubrics = tmp_path / "rubrics.txt"
    rubrics.write_text(RUBRICS.to_text())
    cfg = tmp_path / "service.yaml"
    cfg.write_text("reward: {mode: scores, default_scale: binary}\nmax_concurrency: 2\n")
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "arr_cli", "serve", "reward", "--rubrics", str(rubrics),
                             "--config", str(cfg), "--port", str(port), "--home", str(tmp_path / "home")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).json()
                break
            except httpx.HTTPError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read() if proc.stdout else ""
                time.sleep(0.3)
        assert "per-criterion judge scene:scene-vlm-1" in health["reward"]
        prompt, clean, wrong = _renders(11)
        r = httpx.post(f"http://127.0.0.1:{port}/v1/rewards", timeout=30,
                       json={"prompts": [prompt], "groups": [[_b64(clean), _b64(wrong)]]})
        assert r.status_code == 200 and r.json()["results"][0]["criteria"][C1] == [1, 0]
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    bad = subprocess.run([sys.executable, "-m", "arr_cli", "serve", "reward", "--rubrics", str(rubrics), "--port",
                          "0", "--home", str(tmp_path / "home")], capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 2 and "--port" in bad.stderr
