"""Versioned prompt templates (generate, judge, revise, categorize, check) for T2I and editing."""
