SELECT run_id, policy_id, status, lora_uri, created_at, finished_at FROM training_runs WHERE rubric_set_id = ? ORDER BY created_at;
