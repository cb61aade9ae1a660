"""An OpenAI-compatible HTTP server around any VLM backend (``arr vlm serve``), with injected faults.

Endpoints: ``POST /v1/chat/completions`` (the subset of the protocol the project uses: messages with
text and ``image_url`` parts, temperature, max_tokens, seed, response_format), ``GET /v1/models``,
and ``GET /stats`` (request counters, the highest number of requests in flight) for tests and
benchmarks. It binds to 127.0.0.1 unless told otherwise.

Fault injection, seeded (equal seeds and arrival order give equal faults):
- ``error_rate``: HTTP 500; ``rate_limit_rate``: HTTP 429 with ``Retry-After: retry_after_s``;
- ``timeout_rate``: the request hangs for ``hang_s`` (past the client's timeout) before answering;
- ``malformed_rate``: HTTP 200 with a chatty answer that contains no JSON;
- ``script``: a list of forced outcomes ("500", "429", "hang", "malformed", "ok") used, in order, by
  the first requests (tests use it to make exact fault sequences).
``latency_ms`` is added to every answer with a non-blocking sleep, so throughput is bounded by
concurrency / latency (Little's law), not by the server.

``ServedVLM`` runs the server in a background thread on a free port (a context manager for tests).
"""

from __future__ import annotations

import asyncio
import random
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from arr_core.vlm.base import VLMBackend, VLMTransportError

OUTCOMES = ("ok", "500", "429", "hang", "malformed")
MALFORMED_TEXT = "Sure! Looking at the images, I would say the first one is somewhat better overall."


@dataclass
class FaultConfig:
    latency_ms: float = 0.0
    error_rate: float = 0.0
    rate_limit_rate: float = 0.0
    timeout_rate: float = 0.0
    malformed_rate: float = 0.0
    retry_after_s: float = 1.0
    hang_s: float = 30.0
    seed: int = 0
    script: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        for name in ("error_rate", "rate_limit_rate", "timeout_rate", "malformed_rate"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {v}")
        if self.error_rate + self.rate_limit_rate + self.timeout_rate + self.malformed_rate > 1.0:
            raise ValueError("error, rate-limit, timeout and malformed rates must sum to at most 1")
        if self.latency_ms < 0 or self.hang_s < 0 or self.retry_after_s < 0:
            raise ValueError("latency_ms, hang_s and retry_after_s must be >= 0")
        bad = [s for s in self.script if s not in OUTCOMES]
        if bad:
            raise ValueError(f"script outcomes must be among {OUTCOMES}, got {bad}")


class ServerStats:
    """Counters shared between the server's event loop and readers in other threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.requests = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.outcomes: dict[str, int] = dict.fromkeys(OUTCOMES, 0)

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {"requests": self.requests, "in_flight": self.in_flight,
                    "max_in_flight": self.max_in_flight, "outcomes": dict(self.outcomes)}


def _image_url_problem(messages: list[Any], allow_remote_images: bool) -> str | None:
    """Why a request's image URLs are refused, or None. Images must be ``data:`` URLs: the server never
    reads local files and fetches ``http(s)`` URLs only when started to (a request must not make the
    server reach into its own machine or network)."""
    for m in messages:
        content = m.get("content") if isinstance(m, dict) else None
        for part in content if isinstance(content, list) else []:
            if not isinstance(part, dict) or part.get("type") != "image_url":
                continue
            url = str((part.get("image_url") or {}).get("url", ""))
            if url.startswith("data:"):
                continue
            if url.startswith(("http://", "https://")) and allow_remote_images:
                continue
            shown = url[:60]
            if url.startswith(("http://", "https://")):
                return (f"image_url {shown!r}: this server does not fetch URLs (send the image as a data: URL, "
                        "or start it with --allow-remote-images)")
            return f"image_url {shown!r}: only data: URLs are accepted (the server never reads local files)"
    return None


def create_app(backend: VLMBackend, faults: FaultConfig | None = None, *, api_key: str | None = None,
               allow_remote_images: bool = False) -> FastAPI:
    """The FastAPI app. ``api_key``: if set, requests must carry ``Authorization: Bearer <key>``.
    ``allow_remote_images``: accept ``http(s)`` image URLs (the backend fetches them); ``data:`` URLs
    only by default, and never local paths."""
    faults = faults or FaultConfig()
    stats = ServerStats()
    rng = random.Random(faults.seed)
    script = list(faults.script)
    stop = threading.Event()
    app = FastAPI(title="arr vlm serve", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.stats = stats
    app.state.stop = stop
    app.state.backend = backend

    def draw() -> str:
        with stats.lock:
            if script:
                return script.pop(0)
            u = rng.random()
        for name, p in (("500", faults.error_rate), ("429", faults.rate_limit_rate),
                        ("hang", faults.timeout_rate), ("malformed", faults.malformed_rate)):
            if u < p:
                return name
            u -= p
        return "ok"

    def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
        return JSONResponse({"error": {"message": message, "type": "server_error", "code": status}},
                            status_code=status, headers=headers)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": backend.model, "object": "model", "owned_by": "arr"}]}

    @app.get("/stats")
    async def get_stats() -> dict[str, Any]:
        return stats.snapshot()

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        if api_key is not None and request.headers.get("authorization") != f"Bearer {api_key}":
            return error(401, "invalid or missing API key")
        body = await request.json()
        with stats.lock:
            stats.requests += 1
            stats.in_flight += 1
            stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
        try:
            outcome = draw()
            with stats.lock:
                stats.outcomes[outcome] += 1
            if outcome == "500":
                return error(500, "injected server error")
            if outcome == "429":
                return error(429, "injected rate limit", {"Retry-After": f"{faults.retry_after_s:g}"})
            if outcome == "hang":
                await asyncio.to_thread(stop.wait, faults.hang_s)
            if faults.latency_ms:
                await asyncio.sleep(faults.latency_ms / 1000.0)
            messages = body.get("messages")
            if not isinstance(messages, list) or not messages:
                return error(400, "'messages' must be a non-empty list")
            refused = _image_url_problem(messages, allow_remote_images)
            if refused:
                return error(400, refused)
            if outcome == "malformed":
                text, usage = MALFORMED_TEXT, {"prompt_tokens": 0, "completion_tokens": 16}
            else:
                try:
                    text, usage = await backend.chat(
                        messages, temperature=float(body.get("temperature") or 0.0),
                        max_tokens=int(body.get("max_completion_tokens") or body.get("max_tokens") or 1024),
                        seed=body.get("seed"),
                        json_mode=(body.get("response_format") or {}).get("type") == "json_object")
                except VLMTransportError as e:
                    return error(502, f"upstream: {e}")
            pt, ct = int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))
            # A ready JSONResponse skips FastAPI's response encoding (CPU per request matters at high C).
            return JSONResponse({
                "id": "chatcmpl-" + uuid.uuid4().hex[:24],
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model") or backend.model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct},
            })
        finally:
            with stats.lock:
                stats.in_flight -= 1

    return app


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class ServedApp:
    """Serve an ASGI ``app`` on ``host``:``port`` (a free port by default) in a background thread:
    ``with ServedApp(app) as srv: srv.url``. Used for the VLM server, the reward service and reference
    servers in tests and benchmarks."""

    name = "server"

    def __init__(self, app: Any, *, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.app, self.host = app, host
        self.port = port or free_port(host)
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self):  # returns the subclass instance
        import uvicorn

        config = uvicorn.Config(self.app, host=self.host, port=self.port, log_level="warning",
                                access_log=False, lifespan="off", timeout_graceful_shutdown=2)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name=f"{self.name}-{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 20.0
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"the {self.name} did not start on {self.host}:{self.port}")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10.0)


class ServedVLM(ServedApp):
    """Serve ``backend`` over HTTP in a background thread: ``with ServedVLM(SceneVLM()) as srv: srv.base_url``."""

    name = "VLM server"

    def __init__(self, backend: VLMBackend, faults: FaultConfig | None = None, *, host: str = "127.0.0.1",
                 port: int | None = None, api_key: str | None = None) -> None:
        super().__init__(create_app(backend, faults, api_key=api_key), host=host, port=port)

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    @property
    def stats(self) -> ServerStats:
        return self.app.state.stats

    def __exit__(self, *exc: Any) -> None:
        self.app.state.stop.set()  # release hung requests
        super().__exit__(*exc)


def serve(backend: VLMBackend, faults: FaultConfig, *, host: str = "127.0.0.1", port: int = 8000,
          api_key: str | None = None, allow_remote_images: bool = False) -> None:
    """Run the server in the foreground until interrupted."""
    import uvicorn

    app = create_app(backend, faults, api_key=api_key, allow_remote_images=allow_remote_images)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False, lifespan="off",
                timeout_graceful_shutdown=2)
