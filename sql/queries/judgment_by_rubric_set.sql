-- Judgments made under one rubric set ($rubric_set_id NULL: judged without rubrics).
SELECT judgment_id, rubric_set_id, pair_id, order_mode, orders, final_rank, outcome, rewards, judge_model,
       created_at
FROM judgments
WHERE rubric_set_id IS NOT DISTINCT FROM $rubric_set_id
ORDER BY pair_id, judgment_id;
