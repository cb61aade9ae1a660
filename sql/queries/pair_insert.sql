-- One statement for all of a dataset's pairs: `new_pairs` is an Arrow table registered by the caller
-- (a row-by-row executemany managed ~670 rows/s).
INSERT INTO pairs (dataset_id, pair_id, idx, split, record)
SELECT dataset_id, pair_id, idx, split, record FROM new_pairs
ON CONFLICT (dataset_id, pair_id) DO NOTHING;
