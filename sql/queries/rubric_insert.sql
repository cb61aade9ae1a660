INSERT INTO rubrics (rubric_set_id, kind, theme_idx, theme, item_idx, text)
VALUES ($rubric_set_id, $kind, $theme_idx, $theme, $item_idx, $text);
