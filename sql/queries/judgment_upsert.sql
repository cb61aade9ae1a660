-- One judge verdict (arr_core.judge.judge.Judgment.to_row); re-judging the same item under the same
-- rubric set, order mode, permutations, model and prompt version replaces the earlier row.
INSERT INTO judgments (judgment_id, rubric_set_id, pair_id, order_mode, orders, final_rank, outcome,
                       rewards, judge_model, created_at)
VALUES ($judgment_id, $rubric_set_id, $pair_id, $order_mode, $orders, $final_rank, $outcome, $rewards,
        $judge_model, now())
ON CONFLICT (judgment_id) DO UPDATE SET
    orders = excluded.orders, final_rank = excluded.final_rank, outcome = excluded.outcome,
    rewards = excluded.rewards, created_at = excluded.created_at;
