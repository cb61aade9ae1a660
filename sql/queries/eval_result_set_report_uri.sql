-- Where the rendered HTML report of an evaluation was written.
UPDATE eval_results SET report_uri = ? WHERE eval_id = ?;
