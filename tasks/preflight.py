"""Preflight task: the checks of ``arr_core.recipes.preflight`` before any pipeline stage starts."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE


@task(cache_policy=NO_CACHE)
def preflight(vlm: Any, training: Any, home: str) -> None:
    """The pipeline's VLM endpoint answers and serves its model; for in-process training, the device
    exists and the run folder is writable. Errors name the config field (``vlm.model`` …)."""
    from arr_core.recipes.preflight import check_device, check_endpoint, check_writable
    from arr_core.recipes.rpo import judge_vlm

    check_endpoint(vlm, "vlm")
    if training is not None and training.enabled:
        judge = judge_vlm(training.config, vlm)
        if judge is not vlm:
            check_endpoint(judge, "training.config.reward.vlm")
        if training.dispatch == "in-process":  # a work pool's worker checks its own machine
            check_device(training.config.policy.device, training.gpus or 1, "training.config.policy.device")
            check_writable(training.shared_dir or f"{home}/exchange", "training.shared_dir")
