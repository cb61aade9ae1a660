"""`arr vlm serve` refuses what a request must not make it do (issue 20, item 9): fetch URLs or read
local files, and (in proxy mode) spend the owner's key without a token of its own; the client's cache
keys non-data image URLs by the URL, not all under one key."""

from __future__ import annotations

import base64
import io

import httpx
from PIL import Image

from arr_cli import main
from arr_core.sim.scene_vlm import SceneVLM
from arr_core.vlm.messages import data_url_digest
from arr_core.vlm.server import ServedVLM


def _data_url() -> str:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 0, 0)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _body(url: str) -> dict:
    return {"model": "scene-vlm-1", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "Image 1:"}, {"type": "image_url", "image_url": {"url": url}},
        {"type": "text", "text": "Image 2:"}, {"type": "image_url", "image_url": {"url": _data_url()}},
        {"type": "text", "text": 'Caption: a red circle. Answer as JSON {"rank": [..], "reason": ".."}'}]}]}


def test_only_data_urls_reach_the_backend() -> None:
    with ServedVLM(SceneVLM()) as srv:
        url = f"{srv.base_url}/chat/completions"
        ok = httpx.post(url, json=_body(_data_url()), timeout=30)
        assert ok.status_code == 200
        for bad, says in (("file:///etc/passwd", "never reads local files"), ("/etc/passwd", "never reads"),
                          ("http://169.254.169.254/latest/meta-data", "does not fetch URLs")):
            r = httpx.post(url, json=_body(bad), timeout=30)
            assert r.status_code == 400 and says in r.json()["error"]["message"], r.text


def test_proxy_mode_needs_a_token_of_its_own(capsys, monkeypatch) -> None:
    monkeypatch.delenv("ARR_SERVE_TOKEN", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-owner")
    assert main(["vlm", "serve", "--backend", "openai", "--model", "m", "--upstream-url",
                 "http://127.0.0.1:9/v1"]) == 2
    assert "--token" in capsys.readouterr().err


def test_a_token_is_required_when_set() -> None:
    with ServedVLM(SceneVLM(), api_key="t0k") as srv:
        url = f"{srv.base_url}/chat/completions"
        assert httpx.post(url, json=_body(_data_url()), timeout=30).status_code == 401
        ok = httpx.post(url, json=_body(_data_url()), headers={"Authorization": "Bearer t0k"}, timeout=30)
        assert ok.status_code == 200


def test_cache_identity_of_non_data_urls_is_the_url() -> None:
    a, b = "http://example.com/a.png", "http://example.com/b.png"
    assert data_url_digest(a) != data_url_digest(b) and data_url_digest(a) == data_url_digest(a)
    assert data_url_digest(_data_url()).startswith("sha256:")
