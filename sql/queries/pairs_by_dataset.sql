SELECT pair_id, idx, split, record FROM pairs WHERE dataset_id = ? ORDER BY idx;
