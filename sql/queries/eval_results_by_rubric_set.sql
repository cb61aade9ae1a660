SELECT eval_id, kind, policy_id, report_uri, created_at FROM eval_results WHERE rubric_set_id = ? ORDER BY created_at;
