"""VLM access: a small backend protocol, the OpenAI-compatible backend, the offline scene VLM."""
