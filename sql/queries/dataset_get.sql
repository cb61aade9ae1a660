SELECT dataset_id, name, task, n_records, source_uri, created_at, meta FROM datasets WHERE dataset_id = ?;
