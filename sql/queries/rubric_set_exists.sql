SELECT count(*) AS n FROM rubric_sets WHERE rubric_set_id = ?;
