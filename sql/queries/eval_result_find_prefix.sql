-- Evaluation ids starting with a prefix (the CLI accepts unique prefixes).
SELECT eval_id FROM eval_results WHERE starts_with(eval_id, ?) ORDER BY eval_id LIMIT 10;
