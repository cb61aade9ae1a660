-- One generate/revise + blind-verification attempt of one seed pair (arr_core.rubrics.induction).
-- A pair interrupted mid-way is run again on resume; its rewritten attempts replace the old rows.
INSERT INTO induction_records (induction_key, pair_id, dataset_id, epoch, criteria, judge, passed,
                               final_status, created_at)
VALUES ($induction_key, $pair_id, $dataset_id, $epoch, $criteria, $judge, $passed, $final_status, now())
ON CONFLICT (induction_key, epoch) DO UPDATE SET
    criteria = excluded.criteria, judge = excluded.judge, passed = excluded.passed,
    final_status = excluded.final_status, created_at = excluded.created_at;
