-- One evaluation (arr_core.bench.results.save_eval_result). The id is derived from kind, config and
-- inputs, so rerunning an equal evaluation replaces its row instead of adding one.
INSERT INTO eval_results (eval_id, kind, rubric_set_id, policy_id, config, metrics, report_uri, created_at)
VALUES ($eval_id, $kind, $rubric_set_id, $policy_id, $config, $metrics, $report_uri, now())
ON CONFLICT (eval_id) DO UPDATE SET
    kind = excluded.kind, rubric_set_id = excluded.rubric_set_id, policy_id = excluded.policy_id,
    config = excluded.config, metrics = excluded.metrics,
    report_uri = coalesce(excluded.report_uri, eval_results.report_uri), created_at = excluded.created_at;
