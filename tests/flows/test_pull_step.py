"""The deployments' pull step (prefect.yaml) run by Prefect's own step runner, as a worker's flow run
does: the checkout comes from the worker's ARR_PROJECT_DIR when the run starts (issue 25 item 4)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def _pull_step() -> dict:
    (step,) = yaml.safe_load((ROOT / "prefect.yaml").read_text())["pull"]
    return step


def test_pull_step_reads_the_workers_project_dir_when_the_run_starts(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.deployments.steps.core import run_step

    step = _pull_step()
    assert "{{" not in str(step)  # nothing for `prefect deploy` to fill in from the deploying machine
    monkeypatch.chdir(tmp_path)
    link = tmp_path / "checkout-elsewhere"
    link.symlink_to(ROOT, target_is_directory=True)
    monkeypatch.setenv("ARR_PROJECT_DIR", str(link))
    out = asyncio.run(run_step(step))
    assert out["directory"] == str(ROOT.resolve()) and Path(os.getcwd()) == ROOT.resolve()

    monkeypatch.delenv("ARR_PROJECT_DIR")
    with pytest.raises(Exception, match="ARR_PROJECT_DIR is not set in this worker's environment"):
        asyncio.run(run_step(step))
    monkeypatch.setenv("ARR_PROJECT_DIR", str(tmp_path))
    with pytest.raises(Exception, match="is not an arr-pipeline checkout on this host"):
        asyncio.run(run_step(step))
