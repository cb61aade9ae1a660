-- All evaluations, newest first (no metrics body).
SELECT eval_id, kind, rubric_set_id, policy_id, report_uri, created_at FROM eval_results ORDER BY created_at DESC;
