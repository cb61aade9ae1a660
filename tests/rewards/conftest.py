"""Shared fixtures of the reward tests: one torch thread for the toy training runs, the reference HTTP
reward model (benchmarks/reward_http_reference.py) as an app to serve on 127.0.0.1."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture()
def reference_app():
    """A fresh app of the reference reward server (its request counter starts at 0)."""
    spec = importlib.util.spec_from_file_location("reward_http_reference", ROOT / "benchmarks" / "reward_http_reference.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.create_app()

