INSERT INTO rubric_sets (rubric_set_id, task, parent_id, dataset_digest, n_themes, n_criteria, created_at, metadata, body)
VALUES ($rubric_set_id, $task, $parent_id, $dataset_digest, $n_themes, $n_criteria, now(), $metadata, $body);
