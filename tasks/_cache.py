"""Cache keys from content digests, and small helpers around Prefect task states.

Prefect's own ``INPUTS`` policy hashes argument values: a path string hashes as text (not the file),
and an object hashes by its pickled form. Our keys instead name what a stage's output depends on:

- content digests of the inputs (dataset digest, rubric-set id, prompt-set digest, policy id),
- the digest of the stage config with secrets removed (an API key never changes a result),
- the prompt-template version,
- the code version: a digest of all of ``arr_core``, the SQL files and the task's own module
  (editing any helper or builder must invalidate the cache too; Prefect's TASK_SOURCE only sees the
  task function).
"""

from __future__ import annotations

import functools
import hashlib
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

from arr_core.digest import digest_obj
from arr_core.secrets import is_secret_key, redact  # noqa: F401  (re-exported for the tasks)


@functools.lru_cache(maxsize=64)
def code_version(*modules: str) -> str:
    """Digest of every project module a stage can run: all ``.py`` files of ``arr_core`` (recipes,
    components, prompt templates, the simulator), the SQL files (``sql/`` in a checkout,
    ``arr_core/_sql`` in a wheel), plus the named extra source files (a task's own module). Sorted,
    content-only: equal trees give equal versions; editing any builder or helper changes it.

    Hashing the whole package (~0.5 MB) instead of a hand-kept list of subpackages is deliberate: a
    list goes stale the day a stage starts calling a module it does not name."""
    import arr_core
    from arr_core.store.sqlfiles import sql_root

    h = hashlib.sha256()
    root = Path(arr_core.__file__).resolve().parent
    trees = [(root, "arr_core", "*.py"), (sql_root(), "sql", "*.sql")]
    for base, label, pattern in trees:
        for f in sorted(base.rglob(pattern)):
            if "__pycache__" in f.parts:
                continue
            h.update(f"{label}/{f.relative_to(base).as_posix()}".encode())
            h.update(f.read_bytes())
    for m in sorted(set(modules) - {""}):
        f = Path(m).resolve()
        h.update(f"extra/{f.name}".encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def _source_digest(fn: Callable[..., Any]) -> str:
    try:
        return hashlib.sha256(inspect.getsource(fn).encode()).hexdigest()[:16]
    except (OSError, TypeError):
        return "nosource"


def keyed_by(*params: str) -> Callable[[Any, dict[str, Any]], str]:
    """A Prefect ``cache_key_fn`` over the named task parameters (redacted, canonical JSON) plus the
    code version: all of ``arr_core``, the SQL files and the task's own module (``code_version``).

    Parameters must already be content digests or small configs: the key is built from their
    values, so pass a dataset *digest*, never a path whose file could change under the same name.
    """
    def key(context: Any, parameters: dict[str, Any]) -> str:
        missing = [p for p in params if p not in parameters]
        if missing:  # an internal wiring error, not user input
            raise KeyError(f"cache key parameters {missing} are not parameters of the task")
        task = context.task
        return "arr-" + digest_obj({
            "task": task.name,
            "inputs": {p: redact(parameters[p]) for p in params},
            "task_source": _source_digest(task.fn),
            "code": code_version(_module_file(task.fn)),
        }, 40)

    return key


def _module_file(fn: Callable[..., Any]) -> str:
    try:
        return inspect.getsourcefile(fn) or ""
    except TypeError:
        return ""


def was_cached(state: Any) -> bool:
    """True when a finished Prefect state came from the cache (Prefect names it 'Cached')."""
    return getattr(state, "name", None) == "Cached"
