"""``arr vlm``: serve a VLM backend over the OpenAI protocol (with injectable faults), cache statistics."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from arr_cli.common import Home, Json, console, deprecated_alias, err_console, home_dir, print_json
from arr_core.errors import InputError

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def register(app: typer.Typer) -> None:
    vlm = typer.Typer(name="vlm", help="VLM access: serve a backend over the OpenAI protocol, cache stats.",
                      no_args_is_help=True)

    @vlm.command("serve")
    def serve_cmd(
        backend: Annotated[str, typer.Option(help="scene (offline simulator) or openai (proxy an endpoint)")] = "scene",
        host: Annotated[str, typer.Option(help="bind address (loopback by default)")] = "127.0.0.1",
        port: Annotated[int, typer.Option(help="TCP port")] = 8000,
        latency_ms: Annotated[float, typer.Option(help="latency added to every answer (non-blocking)")] = 0.0,
        error_rate: Annotated[float, typer.Option(help="share of requests answered with HTTP 500")] = 0.0,
        rate_limit_rate: Annotated[float, typer.Option(help="share answered with HTTP 429 + Retry-After")] = 0.0,
        timeout_rate: Annotated[float, typer.Option(help="share that hang for --hang-s before answering")] = 0.0,
        malformed_rate: Annotated[float, typer.Option(help="share answered with text that has no JSON")] = 0.0,
        retry_after_s: Annotated[float, typer.Option(help="Retry-After of injected 429s")] = 1.0,
        hang_s: Annotated[float, typer.Option(help="how long an injected hang lasts")] = 30.0,
        seed: Annotated[int, typer.Option(help="seed of the injected faults and of the scene VLM")] = 0,
        model: Annotated[Optional[str], typer.Option(help="model name (openai: the upstream model)")] = None,
        base_url: Annotated[Optional[str], typer.Option(
            "--base-url", help="openai backend: the upstream OpenAI-compatible endpoint (default "
            "OPENAI_BASE_URL); key from OPENAI_API_KEY")] = None,
        upstream_url: Annotated[Optional[str], typer.Option(
            "--upstream-url", hidden=True, help="deprecated: --base-url")] = None,
        token: Annotated[Optional[str], typer.Option(
            "--token", envvar="ARR_SERVE_TOKEN", help="Bearer token clients must send (required in proxy mode, "
            "so nobody spends the owner's OPENAI_API_KEY without it; default ARR_SERVE_TOKEN)")] = None,
        allow_remote_images: Annotated[bool, typer.Option(
            "--allow-remote-images", help="Accept http(s) image URLs (data: URLs only by default; local paths "
            "never).")] = False,
    ) -> int:
        """Serve POST /v1/chat/completions and GET /v1/models until interrupted."""
        from arr_core.vlm.config import VLMConfig, build_backend
        from arr_core.vlm.server import FaultConfig, serve

        base_url = deprecated_alias("--upstream-url", upstream_url, "--base-url", base_url)
        if backend not in ("scene", "openai"):
            raise InputError(f"must be 'scene' or 'openai', got {backend!r}", field="--backend")
        if not 0 < port < 65536:
            raise InputError(f"must be a TCP port (1..65535), got {port}", field="--port")
        try:
            faults = FaultConfig(latency_ms=latency_ms, error_rate=error_rate, rate_limit_rate=rate_limit_rate,
                                 timeout_rate=timeout_rate, malformed_rate=malformed_rate,
                                 retry_after_s=retry_after_s, hang_s=hang_s, seed=seed)
            cfg = VLMConfig(backend=backend, model=model, base_url=base_url, seed=seed)
        except ValueError as e:
            raise InputError(str(e)) from None
        if backend == "openai" and not token:
            raise InputError("the proxy attaches the owner's OPENAI_API_KEY to what it forwards: give clients a "
                             "token of their own (--token or ARR_SERVE_TOKEN)", field="--token")
        if host not in LOOPBACK and not token:
            err_console.print(f"[yellow]warning:[/] serving on {host}, reachable from other machines; "
                              "the server has no authentication (--token)")
        be = build_backend(cfg)
        console.print(f"serving {be.name} model {be.model!r} at http://{host}:{port}/v1 "
                      f"(latency {latency_ms:g} ms, faults: 500 {error_rate:g}, 429 {rate_limit_rate:g}, "
                      f"hang {timeout_rate:g}, malformed {malformed_rate:g})")
        serve(be, faults, host=host, port=port, api_key=token, allow_remote_images=allow_remote_images)
        return 0

    @vlm.command("cache-stats")
    def cache_stats_cmd(home: Home = None, as_json: Json = False) -> int:
        """Rows in the VLM response cache per backend, model, request kind and prompt version."""
        from arr_core.errors import NotFoundError
        from arr_core.store.store import Store

        try:
            rows = Store(home_dir(home), read_only=True).fetchall("vlm_cache_stats")
        except NotFoundError:  # nothing written yet
            rows = []
        if as_json:
            print_json([{k: r[k] for k in ("backend", "model", "kind", "prompt_version", "n")} for r in rows])
            return 0
        if not rows:
            console.print("the VLM cache is empty")
        for r in rows:
            console.print(f"{r['backend']}\t{r['model']}\t{r['kind']}\t{r['prompt_version']}\t{r['n']}")
        return 0

    app.add_typer(vlm)
