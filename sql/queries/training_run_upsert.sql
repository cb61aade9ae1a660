INSERT INTO training_runs (run_id, rubric_set_id, policy_id, config, status, lora_uri, metrics, created_at, finished_at)
VALUES ($run_id, $rubric_set_id, $policy_id, $config, $status, $lora_uri, $metrics, now(), now())
ON CONFLICT (run_id) DO UPDATE SET status = excluded.status, lora_uri = excluded.lora_uri,
    metrics = excluded.metrics, finished_at = excluded.finished_at;
