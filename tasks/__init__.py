"""Thin Prefect tasks: unpack config → call arr_core → persist/log → return small values.

Importing this package first fills the offline defaults for Prefect and MLflow (see ``_env``), so
it must be imported before ``prefect`` or ``mlflow``.
"""

from tasks._env import apply_defaults

apply_defaults()
