"""One Prefect test server per session (starting one costs 10–25 s), tiny pipeline configs.

Each test gets its own state folder (store, MLflow SQLite, Prefect results) under tmp_path; the
session shares one Prefect API. The toy policy is a random one saved once per session (the shipped
checkpoint is not needed here).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import pytest

# A new folder per session: Prefect's default result storage follows it (no cache shared across runs).
os.environ.setdefault("ARR_HOME", tempfile.mkdtemp(prefix="arr-test-flows-"))
import tasks  # noqa: E402,F401  (offline defaults before prefect/mlflow load)


@pytest.fixture(scope="session")
def prefect_api():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def toy_policy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from arr_core.sim.toy_policy import ToyPolicy

    folder = tmp_path_factory.mktemp("toy") / "policy"
    ToyPolicy.random(seed=0).save(folder)
    return folder


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from tasks._env import apply_defaults

    h = tmp_path / "home"
    monkeypatch.setenv("ARR_HOME", str(h))
    apply_defaults(h)
    return h


def tiny_config(policy_dir: Path | None, **overrides: Any) -> Any:
    """A pipeline small enough for a test: 24 world pairs, 2 training steps, 6 evaluation prompts."""
    from flows.config import pipeline_config_from_dict

    raw: dict[str, Any] = {
        "name": "arr-test",
        "data": {"world": {"task": "t2i", "n": 24, "seed": 0, "size": 32}, "seed_fraction": 0.5,
                 "validation_fraction": 0.3},
        "vlm": {"backend": "scene"},
        "induce": {"max_epochs": 2, "max_rubrics": 8},
        "judge": {"order": "swap", "max_pairs": 8},
        "training": {
            "enabled": policy_dir is not None,
            "config": {
                "policy": {"kind": "toy", "folder": str(policy_dir) if policy_dir else None,
                           "dtype": "float32", "device": "cpu"},
                "prompts": {"source": "world", "count": 8, "seed": 1},
                "reward": {"mode": "rank", "order": "single"},
                "steps": 2, "num_steps": 3, "prompts_per_step": 2,
                "rollout_batch_size": 2, "sample_grid_every": 1, "checkpoint_every": 0, "lr": 1e-3,
            },
        },
        "evaluate": {"prompts": 6, "images_per_prompt": 1, "num_steps": 3},
        "mlflow": {"experiment": "arr-test"},
    }
    for dotted, value in overrides.items():
        node = raw
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return pipeline_config_from_dict(raw, file="<test>")
