-- Rows in the VLM response cache per backend, model, request kind and prompt version.
SELECT backend, model, kind, prompt_version, count(*) AS n
FROM vlm_cache
GROUP BY ALL
ORDER BY backend, model, kind, prompt_version;
