"""Thin Prefect tasks: load → one recipe call → persist/log → return small values.

Importing this package has no side effects. Entry points (the ``arr`` CLI, the flows when a worker
runs them, the tests) call ``tasks._env.apply_defaults(home)`` before the first flow run, so the
offline defaults for Prefect and MLflow are applied explicitly.
"""
