-- Every attempt of the given pairs (by induction key), in epoch order.
SELECT induction_key, pair_id, dataset_id, epoch, criteria, judge, passed, final_status, created_at
FROM induction_records
WHERE list_contains($keys, induction_key)
ORDER BY induction_key, epoch;
