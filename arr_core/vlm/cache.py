"""The VLM response cache: content-derived keys and batched reads/writes to the store's ``vlm_cache``.

Key = sha256 of canonical JSON over backend name, model, the messages with every image replaced by
the sha256 of its data-URL payload, decoding parameters (temperature, max_tokens, seed, json_mode),
the required keys and the prompt-template version. Nothing secret is part of it: backends never put
an API key into ``name``/``model`` and requests carry none.

Writes are buffered and flushed in one store transaction (``flush``), not one connection per
request; reads for a batch are one query.
"""

from __future__ import annotations

import json
import threading
from datetime import datetime, timezone
from typing import Any

from arr_core.digest import digest_obj
from arr_core.vlm.base import VLMRequest
from arr_core.vlm.messages import data_url_digest


def _strip_images(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for msg in messages:
        content = msg.get("content")
        if isinstance(content, list):
            parts = []
            for part in content:
                if part.get("type") == "image_url":
                    url = part["image_url"]["url"] if isinstance(part["image_url"], dict) else part["image_url"]
                    parts.append({"type": "image", "sha256": data_url_digest(url)})
                else:
                    parts.append(part)
            content = parts
        out.append({"role": msg.get("role"), "content": content})
    return out


def cache_key(backend_name: str, model: str, req: VLMRequest, *, json_mode: bool, salt: str = "") -> str:
    """The cache key of a request (images by content hash; never a credential).

    ``salt``: anything else that changes a backend's answers (the scene VLM's seed).
    """
    return digest_obj({
        "backend": backend_name,
        "salt": salt,
        "model": model,
        "messages": _strip_images(req.messages),
        "temperature": req.temperature,
        "max_tokens": req.max_tokens,
        "seed": req.seed,
        "json_mode": json_mode,
        "required_keys": list(req.required_keys),
        "prompt_version": req.prompt_version,
    })


class ResponseCache:
    """Batched access to ``vlm_cache`` through the store's named queries.

    ``store`` is an ``arr_core.store.Store`` (or None: memory only, for one process).
    """

    def __init__(self, store: Any | None, *, writable: bool = True) -> None:
        self.store = store
        self.writable = writable
        self._pending: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self.flushes = 0
        self.reads = 0  # store queries made by get_many

    def get_many(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        """Rows for the keys that are cached (pending writes included): key → {text, usage}."""
        found: dict[str, dict[str, Any]] = {}
        with self._lock:
            for k in keys:
                if k in self._pending:
                    row = self._pending[k]
                    found[k] = {"text": row["response_text"], "usage": json.loads(row["usage"])}
        rest = [k for k in dict.fromkeys(keys) if k not in found]
        if rest and self.store is not None:
            self.reads += 1
            for row in self.store.fetchall("vlm_cache_get_many", {"keys": rest}):
                usage = row.get("usage")
                if isinstance(usage, str):
                    usage = json.loads(usage)
                found[row["cache_key"]] = {"text": row["response_text"], "usage": usage or {}}
        return found

    def put(self, key: str, *, backend: str, model: str, kind: str, prompt_version: str, text: str,
            usage: dict[str, int]) -> None:
        if not self.writable:
            return
        with self._lock:
            self._pending[key] = {
                "cache_key": key, "backend": backend, "model": model, "kind": kind,
                "prompt_version": prompt_version, "response_text": text,
                "usage": json.dumps(usage, sort_keys=True),
                "created_at": datetime.now(timezone.utc).replace(tzinfo=None),
            }

    @property
    def n_pending(self) -> int:
        return len(self._pending)

    def flush(self) -> int:
        """Write pending rows in one transaction; returns how many were written."""
        with self._lock:
            rows = list(self._pending.values())
            if self.store is None or not rows:
                return 0
            self.store.executemany("vlm_cache_put", rows)
            self._pending.clear()
            self.flushes += 1
            return len(rows)
