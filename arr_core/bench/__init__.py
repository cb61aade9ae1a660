"""Benchmarks: preference accuracy of the judge, generation benchmarks of a policy, prompt-set loaders
and self-contained HTML reports."""
