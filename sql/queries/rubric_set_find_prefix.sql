SELECT rubric_set_id FROM rubric_sets WHERE starts_with(rubric_set_id, ?) ORDER BY rubric_set_id LIMIT 10;
