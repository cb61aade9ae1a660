"""Fixtures for the benchmark tests: where the public prompt sets live (optional)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def shared_data_dir() -> Path:
    """``$ARR_SHARED_DATA`` or ``../shared/data`` next to the repository (present on dev machines)."""
    return Path(os.environ.get("ARR_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    d = shared_data_dir()
    if not d.is_dir():
        pytest.skip(f"public prompt sets not present at {d} (set ARR_SHARED_DATA to run the real-file tests)")
    return d
