"""Rubric Policy Optimization: SDE sampling with log-probs, PPO + analytic KL on LoRA."""
