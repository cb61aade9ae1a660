"""``arr vlm serve`` as a user starts it (a separate process), and its input checks."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from PIL import Image

from arr_cli import main
from arr_core.prompts import templates as T
from arr_core.prompts.templates import build_judge
from arr_core.vlm.client import VLMClient
from arr_core.vlm.openai_backend import OpenAIBackend
from arr_core.vlm.server import free_port

ROOT = Path(__file__).resolve().parents[2]


def test_serve_answers_models_and_chat_over_http():
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "arr_cli", "vlm", "serve", "--port", str(port),
                             "--seed", "1", "--model", "scene-test"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                models = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=1).read())
                break
            except OSError:
                assert proc.poll() is None, proc.stderr.read().decode()
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.2)
        assert models["data"][0]["id"] == "scene-test"
        ims = [Image.new("RGB", (32, 32), c) for c in ((200, 30, 30), (30, 30, 200))]
        client = VLMClient(OpenAIBackend(f"http://127.0.0.1:{port}/v1", None, "scene-test"), cache_mode="off")
        resp = asyncio.run(client.ask(build_judge("t2i", "a photo of a red circle", ims, rubrics_block=None)))
        assert resp.error is None and sorted(resp.parsed["rank"]) == [1, 2]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_bad_options_exit_2_with_a_message(capsys):
    assert main(["vlm", "serve", "--error-rate", "1.5"]) == 2
    assert "error_rate" in capsys.readouterr().err
    assert main(["vlm", "serve", "--backend", "gemini"]) == 2
    assert main(["vlm", "serve", "--port", "0"]) == 2


def test_cache_stats_on_an_empty_and_a_used_home(tmp_path, capsys):
    from arr_core.sim.scene_vlm import SceneVLM
    from arr_core.store.store import Store

    assert main(["vlm", "cache-stats", "--home", str(tmp_path)]) == 0
    assert "empty" in capsys.readouterr().out
    ims = [Image.new("RGB", (32, 32), c) for c in ((200, 30, 30), (30, 30, 200))]
    client = VLMClient(SceneVLM(), store=Store(tmp_path))
    asyncio.run(client.ask(build_judge("t2i", "a photo of a red circle", ims, rubrics_block=None)))
    assert main(["vlm", "cache-stats", "--home", str(tmp_path)]) == 0
    assert capsys.readouterr().out.split() == ["scene", "scene-vlm-1", "judge", T.JUDGE_PROMPT_VERSION, "1"]
