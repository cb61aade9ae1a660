"""Prefect flows that only wire tasks; one module per deployable flow (see prefect.yaml)."""

import tasks  # noqa: F401  (offline defaults before prefect/mlflow are imported)
