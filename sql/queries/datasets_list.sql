SELECT dataset_id, name, task, n_records, source_uri, created_at FROM datasets ORDER BY created_at DESC;
