INSERT INTO datasets (dataset_id, name, task, n_records, source_uri, created_at, meta)
VALUES ($dataset_id, $name, $task, $n_records, $source_uri, now(), $meta)
ON CONFLICT (dataset_id) DO NOTHING;
