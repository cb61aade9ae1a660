-- Store one validated VLM answer; an existing key keeps its first answer (equal requests, equal answers).
INSERT INTO vlm_cache (cache_key, backend, model, kind, prompt_version, response_text, usage, created_at)
VALUES ($cache_key, $backend, $model, $kind, $prompt_version, $response_text, $usage, $created_at)
ON CONFLICT (cache_key) DO NOTHING;
