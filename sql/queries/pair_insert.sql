INSERT INTO pairs (dataset_id, pair_id, idx, split, record)
VALUES ($dataset_id, $pair_id, $idx, $split, $record)
ON CONFLICT (dataset_id, pair_id) DO NOTHING;
