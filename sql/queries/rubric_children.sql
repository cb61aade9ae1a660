SELECT rubric_set_id, created_at FROM rubric_sets WHERE parent_id = ? ORDER BY created_at;
