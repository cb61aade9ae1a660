"""Shared by the tests in this folder: the environment of the processes they start, and `arr vlm serve`
started as the induction failure tests start it (tests/ folders are not packages)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}


def induction_helpers() -> ModuleType:
    """tests/rubrics/test_induction_failures.py as a module: its ``Served`` and ``_config``."""
    spec = importlib.util.spec_from_file_location("induction_failures",
                                                  ROOT / "tests" / "rubrics" / "test_induction_failures.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
