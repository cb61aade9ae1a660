SELECT rubric_set_id, task, parent_id, dataset_digest, n_themes, n_criteria, created_at,
       json_extract_string(metadata, '$.generator_model') AS generator_model,
       json_extract_string(metadata, '$.verifier_model') AS verifier_model
FROM rubric_sets ORDER BY created_at DESC, rubric_set_id;
