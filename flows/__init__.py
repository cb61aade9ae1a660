"""Prefect flows that only wire tasks; one module per deployable flow (see prefect.yaml).

``flows.config`` holds the pipeline and re-induction configs. Importing this package has no side
effects; the flows apply the offline defaults (``tasks._env.apply_defaults``) when they start.
"""
