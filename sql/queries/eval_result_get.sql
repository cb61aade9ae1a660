-- One evaluation by exact id (metrics/config come back as JSON text).
SELECT eval_id, kind, rubric_set_id, policy_id, config, metrics, report_uri, created_at
FROM eval_results WHERE eval_id = ?;
