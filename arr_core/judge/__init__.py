"""The rubric-conditioned VLM judge (pairwise/listwise, order modes, reward mappings) and its RPO
rewarder."""
