"""Prefect artifacts of the stages: a Markdown summary, a table, a link to the stage's MLflow run.

They are what the Prefect UI shows on a flow or task run (its Artifacts tab, and under
Artifacts by key ``arr-<stage>-summary`` / ``-table`` / ``-mlflow``, latest version first). Every
value goes through :func:`arr_core.secrets.redact` first, so a config's key or a credential in a URL
never reaches the Prefect database. Outside a Prefect run (a task's ``.fn`` called directly, the
all-cached fast path of ``run_pipeline``) nothing is written. An artifact that Prefect refuses
never fails the stage (its work is done, stored and logged to MLflow): the run log says why.
"""

from __future__ import annotations

import math
import os
import re
from typing import Any

from arr_core.secrets import redact, redact_url

# `arr ui` serves the MLflow UI here when the tracking URI is a local file/SQLite store.
DEFAULT_MLFLOW_UI = "http://127.0.0.1:5000"


def _in_prefect_run() -> bool:
    from prefect.context import FlowRunContext, TaskRunContext

    return TaskRunContext.get() is not None or FlowRunContext.get() is not None


def artifact_key(stage: str, kind: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only."""
    return re.sub(r"[^a-z0-9-]+", "-", f"arr-{stage}-{kind}".lower()).strip("-")


def mlflow_run_url(run_id: str) -> str:
    """The run's page in the MLflow UI: the tracking server's when the tracking URI is one (without
    credentials), else ``ARR_MLFLOW_UI_URL`` (default the ``arr ui`` address, 127.0.0.1:5000)."""
    from tasks import _mlflow as mlf

    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    base = uri if uri.startswith(("http://", "https://")) else os.environ.get("ARR_MLFLOW_UI_URL", DEFAULT_MLFLOW_UI)
    exp = mlf.client().get_run(run_id).info.experiment_id
    return f"{redact_url(base.rstrip('/'))}/#/experiments/{exp}/runs/{run_id}"


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    if isinstance(v, (dict, list)):
        import json

        v = json.dumps(v, default=str, sort_keys=True)
    return str(v).replace("|", "\\|").replace("\n", " ")


def facts_markdown(title: str, facts: dict[str, Any], extra: str | None = None) -> str:
    """``## title`` then a two-column table of ``facts`` (secrets removed), then ``extra``."""
    safe = redact(facts)
    lines = [f"## {title}", "", "| | |", "|---|---|"]
    lines += [f"| {_cell(k)} | {_cell(v)} |" for k, v in safe.items() if v is not None]
    if extra:
        lines += ["", extra]
    return "\n".join(lines) + "\n"


def publish_stage(stage: str, title: str, facts: dict[str, Any], *, table: list[dict[str, Any]] | None = None,
                  markdown: str | None = None, mlflow_run_id: str | None = None) -> list[str]:
    """Write the stage's artifacts to the current Prefect run; return the keys written.

    ``facts``: the stage's summary (ids, counts, metrics) as a Markdown table; ``table``: rows for a
    table artifact; ``markdown``: more Markdown under the summary (a rubric set's text);
    ``mlflow_run_id``: a link artifact to that run in the MLflow UI.
    """
    if not _in_prefect_run():
        return []
    from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact

    written: list[str] = []
    try:
        key = artifact_key(stage, "summary")
        create_markdown_artifact(facts_markdown(title, facts, markdown), key=key, description=title)
        written.append(key)
        if table:
            key = artifact_key(stage, "table")
            rows = [{k: (v if isinstance(v, (int, float)) else _cell(v)) for k, v in redact(r).items()}
                    for r in table]
            create_table_artifact(rows, key=key, description=f"{title}: table")
            written.append(key)
        if mlflow_run_id:
            key = artifact_key(stage, "mlflow")
            create_link_artifact(mlflow_run_url(mlflow_run_id), link_text=f"MLflow run {mlflow_run_id}", key=key,
                                 description=f"{title}: the MLflow run")
            written.append(key)
    except Exception as e:  # presentation only: never fail a stage whose work is done
        from prefect.logging import get_run_logger

        get_run_logger().error("could not write the Prefect artifacts of stage %s: %s", stage, e)
    return written
