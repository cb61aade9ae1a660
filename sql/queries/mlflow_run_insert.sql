INSERT INTO mlflow_runs (entity_kind, entity_id, stage, mlflow_run_id, parent_run_id, experiment, created_at)
VALUES ($entity_kind, $entity_id, $stage, $mlflow_run_id, $parent_run_id, $experiment, now())
ON CONFLICT DO NOTHING;
