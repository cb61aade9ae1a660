SELECT entity_kind, entity_id, stage, mlflow_run_id, parent_run_id, experiment, created_at
FROM mlflow_runs WHERE entity_id = ? ORDER BY created_at;
