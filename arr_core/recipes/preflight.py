"""Preflight checks, run before a stage starts: each failure names the config field to change.

- the VLM endpoint answers ``GET /models`` and serves the configured model (``check_endpoint``);
- the requested training device exists, and ``gpus`` does not exceed the visible devices
  (``check_device``);
- the output folder is writable (``check_writable``).

A stage that would fail on these after minutes of work fails in seconds instead.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from arr_core.errors import EndpointError, InputError
from arr_core.secrets import redact_url


def check_endpoint(vlm: Any, field: str = "vlm", timeout_s: float = 10.0) -> list[str]:
    """For an OpenAI-compatible backend: the endpoint answers ``GET {base_url}/models`` and lists
    ``vlm.model``. Returns the served model ids ([] for the offline scene VLM, or an endpoint without a
    model list: a 404 there is not an error). Raises ``EndpointError`` (unreachable, 401/403, 5xx) or
    ``InputError`` (model not served), naming ``field``."""
    if getattr(vlm, "backend", "scene") != "openai":
        return []
    import httpx

    base = (vlm.base_url or "https://api.openai.com/v1").rstrip("/")
    where = redact_url(base)
    headers = {}
    if vlm.api_key is not None:
        headers["Authorization"] = f"Bearer {vlm.api_key.get_secret_value()}"
    try:
        resp = httpx.get(f"{base}/models", headers=headers, timeout=timeout_s)
    except httpx.HTTPError as e:
        raise EndpointError(f"preflight: the VLM endpoint {where} ({field}.base_url) does not answer: "
                            f"{type(e).__name__}: {e}") from None
    if resp.status_code == 404:
        return []
    if resp.status_code >= 400:
        raise EndpointError(f"preflight: GET {where}/models answered {resp.status_code}: {resp.text[:300]} "
                            f"(check {field}.base_url and the API key in OPENAI_API_KEY)")
    try:
        ids = [str(m.get("id")) for m in resp.json().get("data", [])]
    except (ValueError, AttributeError):
        return []
    if ids and vlm.model not in ids:
        shown = ", ".join(ids[:10]) + (f" … ({len(ids)} in all)" if len(ids) > 10 else "")
        raise InputError(f"model {vlm.model!r} is not served by {where}; it serves: {shown}", field=f"{field}.model")
    return ids


def check_device(spec: str, gpus: int = 1, field: str = "policy.device") -> None:
    """``spec`` names a device this machine has; ``gpus`` (processes, one per GPU) does not exceed the
    visible CUDA devices when training on CUDA."""
    import torch

    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if spec.startswith("cuda"):
        if n == 0:
            raise InputError(f"{spec!r} was requested but no CUDA device is visible on this machine "
                             "(CUDA_VISIBLE_DEVICES, drivers); use 'auto' or 'cpu'", field=field)
        index = int(spec.split(":", 1)[1]) if ":" in spec else 0
        if index >= n:
            raise InputError(f"{spec!r} was requested but only {n} CUDA device(s) are visible", field=field)
    elif spec not in ("auto", "cpu"):
        try:
            torch.device(spec)
        except RuntimeError as e:
            raise InputError(f"not a device: {e}", field=field) from None
    on_cuda = spec.startswith("cuda") or (spec == "auto" and n > 0)
    if on_cuda and gpus > n:
        raise InputError(f"{gpus} processes (one per GPU) were requested but {n} CUDA device(s) are visible",
                         field="gpus")


def check_writable(folder: str | os.PathLike[str], field: str) -> None:
    """``folder`` (created when missing) accepts a file."""
    path = Path(folder)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".arr-preflight-"):
            pass
    except OSError as e:
        raise InputError(f"cannot write there ({e.strerror or e})", file=str(path), field=field) from None
