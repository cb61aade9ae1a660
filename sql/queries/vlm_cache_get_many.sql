-- Cached VLM answers for a batch of cache keys (one query per batch).
SELECT cache_key, response_text, usage
FROM vlm_cache
WHERE cache_key IN (SELECT unnest($keys::VARCHAR[]));
