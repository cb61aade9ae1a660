SELECT rubric_set_id, task, parent_id, dataset_digest, n_themes, n_criteria, created_at, metadata, body
FROM rubric_sets WHERE rubric_set_id = ?;
