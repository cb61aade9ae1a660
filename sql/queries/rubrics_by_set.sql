SELECT kind, theme_idx, theme, item_idx, text FROM rubrics WHERE rubric_set_id = ? ORDER BY kind, theme_idx, item_idx;
