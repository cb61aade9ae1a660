"""The one secret redaction: which keys hold secrets, and a copy of a config without them.

Used wherever parameters leave the process: Prefect cache keys and parameters, MLflow params, tags and
artifacts, the store, logs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# Keys whose values are secrets: dropped from cache keys, MLflow params/tags/artifacts and logs.
SECRET_MARKERS = ("api_key", "apikey", "token", "secret", "password", "authorization", "credential")


def is_secret_key(key: str) -> bool:
    k = key.lower().replace("-", "_")
    return any(m in k for m in SECRET_MARKERS)


def redact(obj: Any) -> Any:
    """A copy of a JSON-like value with every secret-named key removed (recursively).

    Pydantic models are dumped first; ``SecretStr`` values are dropped whatever their key is, and
    credentials embedded in a URL (``https://user:key@host``) are masked wherever the URL appears.
    """
    if hasattr(obj, "model_dump"):
        obj = obj.model_dump(mode="python")
    if isinstance(obj, dict):
        return {k: redact(v) for k, v in obj.items()
                if not is_secret_key(str(k)) and not _is_secret_value(v)}
    if isinstance(obj, (list, tuple)):
        return [redact(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, str) and "://" in obj and "@" in obj:
        return redact_url(obj)
    return obj


def _is_secret_value(v: Any) -> bool:
    return type(v).__name__ in ("SecretStr", "SecretBytes")


def redact_url(url: str | None) -> str | None:
    """``url`` without credentials embedded in it (``https://user:key@host`` → ``https://***@host``)."""
    if not url:
        return url
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(str(url))
    if parts.username is None and parts.password is None:
        return str(url)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=f"***@{host}"))
