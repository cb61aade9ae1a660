"""Cache keys from content digests, and small helpers around Prefect task states.

Prefect's own ``INPUTS`` policy hashes argument values: a path string hashes as text (not the file),
and an object hashes by its pickled form. Our keys instead name what a stage's output depends on:

- content digests of the inputs (dataset digest, rubric-set id, prompt-set digest, policy id),
- the digest of the stage config with secrets removed (an API key never changes a result),
- the prompt-template version,
- the code version: a digest of the source of the task function and of the arr_core subpackages it
  calls (editing a helper must invalidate the cache too; Prefect's TASK_SOURCE only sees the task).
"""

from __future__ import annotations

import functools
import hashlib
import inspect
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from arr_core.digest import digest_obj

_ROOT = Path(__file__).resolve().parent.parent

# Keys whose values are secrets: dropped from cache keys, MLflow params/tags/artifacts and logs.
SECRET_MARKERS = ("api_key", "apikey", "token", "secret", "password", "authorization", "credential")


def is_secret_key(key: str) -> bool:
    k = key.lower().replace("-", "_")
    return any(m in k for m in SECRET_MARKERS)


def redact(obj: Any) -> Any:
    """A copy of a JSON-like value with every secret-named key removed (recursively).

    Pydantic models are dumped first; ``SecretStr`` values are dropped whatever their key is.
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
    return obj


def _is_secret_value(v: Any) -> bool:
    return type(v).__name__ in ("SecretStr", "SecretBytes")


@functools.lru_cache(maxsize=64)
def code_version(*packages: str) -> str:
    """Digest of every ``.py`` file under the given arr_core subpackages (e.g. ``"rubrics"``) plus the
    SQL folder when ``"sql"`` is named. Sorted, content-only: equal trees give equal versions."""
    h = hashlib.sha256()
    for pkg in sorted(set(packages)):
        if pkg == "sql":
            base = _ROOT / "sql"
        elif pkg.endswith(".py"):
            base = _ROOT / "arr_core" / pkg
        else:
            base = _ROOT / "arr_core" / pkg.replace(".", "/")
        files = [base] if base.is_file() else sorted(base.rglob("*.py" if pkg != "sql" else "*.sql"))
        for f in files:
            h.update(str(f.relative_to(_ROOT)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def _source_digest(fn: Callable[..., Any]) -> str:
    try:
        return hashlib.sha256(inspect.getsource(fn).encode()).hexdigest()[:16]
    except (OSError, TypeError):
        return "nosource"


def keyed_by(*params: str, code: Iterable[str] = ()) -> Callable[[Any, dict[str, Any]], str]:
    """A Prefect ``cache_key_fn`` over the named task parameters (redacted, canonical JSON) plus the
    task's own source and the code version of the ``code`` subpackages.

    Parameters must already be content digests or small configs: the key is built from their
    values, so pass a dataset *digest*, never a path whose file could change under the same name.
    """
    packages = tuple(code)

    def key(context: Any, parameters: dict[str, Any]) -> str:
        missing = [p for p in params if p not in parameters]
        if missing:  # an internal wiring error, not user input
            raise KeyError(f"cache key parameters {missing} are not parameters of the task")
        task = context.task
        return "arr-" + digest_obj({
            "task": task.name,
            "inputs": {p: redact(parameters[p]) for p in params},
            "task_source": _source_digest(task.fn),
            "code": code_version(*packages) if packages else "",
        }, 40)

    return key


def was_cached(state: Any) -> bool:
    """True when a finished Prefect state came from the cache (Prefect names it 'Cached')."""
    return getattr(state, "name", None) == "Cached"
