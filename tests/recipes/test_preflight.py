"""Preflight (issue 20, item 6): before a stage starts, the endpoint answers and serves the model, the
device exists, gpus fit the visible devices, the output folder is writable; each error names the field."""

from __future__ import annotations

import http.server
import json
import threading
from pathlib import Path

import pytest

from arr_core.errors import EndpointError, InputError
from arr_core.recipes.preflight import check_device, check_endpoint, check_writable
from arr_core.vlm.config import VLMConfig
from arr_core.vlm.server import free_port


class _Models(http.server.BaseHTTPRequestHandler):
    status = 200
    body: dict = {"object": "list", "data": [{"id": "qwen3-vl", "object": "model"}]}
    seen_auth: list = []

    def do_GET(self) -> None:  # noqa: N802
        type(self).seen_auth.append(self.headers.get("Authorization"))
        payload = json.dumps(self.body if self.status == 200 else
                             {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error",
                                        "param": None, "code": "invalid_api_key"}}).encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def endpoint():
    server = http.server.HTTPServer(("127.0.0.1", 0), _Models)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Models.status, _Models.seen_auth = 200, []
    yield f"http://127.0.0.1:{server.server_port}/v1"
    server.shutdown()


def _vlm(url: str, model: str = "qwen3-vl", key: str | None = None) -> VLMConfig:
    return VLMConfig(backend="openai", base_url=url, model=model, api_key=key)


def test_endpoint_checks(endpoint: str) -> None:
    assert check_endpoint(VLMConfig()) == []  # the offline scene VLM: nothing to reach
    assert check_endpoint(_vlm(endpoint, key="sk-test")) == ["qwen3-vl"]
    assert _Models.seen_auth[-1] == "Bearer sk-test"
    with pytest.raises(InputError, match="model 'qwen3-vl-8b' is not served by .*it serves: qwen3-vl") as e:
        check_endpoint(_vlm(endpoint, "qwen3-vl-8b"), "generator")
    assert e.value.field == "generator.model"
    _Models.status = 401
    with pytest.raises(EndpointError, match="answered 401: .*Incorrect API key"):
        check_endpoint(_vlm(endpoint))
    dead = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(EndpointError, match=rf"{dead} \(reward.vlm.base_url\) does not answer"):
        check_endpoint(_vlm(dead), "reward.vlm", timeout_s=2)
    secret = dead.replace("http://", "http://user:sk-secret@")
    with pytest.raises(EndpointError) as e:
        check_endpoint(_vlm(secret), timeout_s=2)
    assert "sk-secret" not in str(e.value) and "***@127.0.0.1" in str(e.value)


def test_device_and_folder_checks(tmp_path: Path) -> None:
    import torch

    check_device("cpu")
    check_device("auto", gpus=2)  # no CUDA: gloo processes on the CPU are allowed
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="no CUDA device is visible") as e:
            check_device("cuda", field="training.config.policy.device")
        assert e.value.field == "training.config.policy.device"
    with pytest.raises(InputError, match="not a device"):
        check_device("tpu:0")
    check_writable(tmp_path / "new" / "run", "--out")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InputError, match="cannot write there") as e:
        check_writable(blocker / "run", "--out")
    assert e.value.field == "--out"


def test_arr_train_fails_in_seconds_on_a_missing_device(tmp_path: Path, capsys) -> None:
    import torch

    from arr_cli import main

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the missing-device path cannot be shown here")
    cfg = tmp_path / "t.yaml"
    cfg.write_text("policy: {kind: toy, device: cuda}\nprompts: {source: world}\nreward: {rubrics: none}\n")
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "run")]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "policy.device" in err and "no CUDA device is visible" in err
