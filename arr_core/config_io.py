"""One YAML config loader for every stage: read a file, expand ``${VAR}`` / ``${VAR:-default}``,
apply dotted overrides, validate with a pydantic model, and shape the first error as an
``InputError`` naming the file and the dotted field.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from arr_core.errors import InputError

M = TypeVar("M", bound=BaseModel)

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(value: Any, path: str = "", file: str | None = None, skip: Sequence[str] = ()) -> Any:
    """Expand ``${VAR}`` / ``${VAR:-default}`` in string values (recursively); an unset VAR without a
    default raises, naming the field. Values under a dotted prefix in ``skip`` are left as written
    (a config that expands its own fields, e.g. the VLM config's ``api_key``)."""
    if isinstance(value, dict):
        return {k: expand_env(v, f"{path}.{k}" if path else str(k), file, skip) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v, f"{path}[{i}]", file, skip) for i, v in enumerate(value)]
    if isinstance(value, str) and not any(path.startswith(s) for s in skip):
        def sub(m: re.Match[str]) -> str:
            var, default = m.group(1), m.group(2)
            if var in os.environ:
                return os.environ[var]
            if default is not None:
                return default
            raise InputError(f"environment variable {var} is not set (use ${{{var}:-default}} for a "
                             "default)", file=file, field=path)
        return _ENV.sub(sub, value)
    return value


def read_yaml(path: str | Path, what: str = "config fields") -> dict[str, Any]:
    """The top-level mapping of a YAML file (an empty file is ``{}``); errors name the file."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise InputError("config file not found", file=str(path))
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise InputError(f"not valid YAML: {e}", file=str(path)) from None
    if not isinstance(raw, dict):
        raise InputError(f"the top level must be a mapping of {what}", file=str(path))
    return raw


def apply_overrides(raw: dict[str, Any], overrides: dict[str, Any] | None) -> dict[str, Any]:
    """Set dotted keys (``"reward.rubrics"``) in ``raw`` in place; returns ``raw``."""
    for key, val in (overrides or {}).items():
        node = raw
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = val
    return raw


def validate(model: type[M], raw: Any, file: str = "<config>") -> M:
    """``model.model_validate(raw)``; the first error becomes an ``InputError`` with the dotted field."""
    try:
        return model.model_validate(raw)
    except ValidationError as e:
        raise validation_error(e, file) from None


def validation_error(e: ValidationError, file: str | None = None) -> InputError:
    err = e.errors()[0]
    field = ".".join(str(x) for x in err["loc"]) or None
    more = f" (and {len(e.errors()) - 1} more)" if len(e.errors()) > 1 else ""
    return InputError(f"{err['msg']}{more}", file=file, field=field)


def load_config(path: str | Path, model: type[M], *, overrides: dict[str, Any] | None = None,
                skip_env: Sequence[str] = (), what: str = "config fields") -> M:
    """Read, expand, override and validate a YAML config file."""
    raw = read_yaml(path, what)
    raw = expand_env(raw, "", str(path), skip_env)
    apply_overrides(raw, overrides)
    return validate(model, raw, str(path))
