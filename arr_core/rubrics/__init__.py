"""Rubric sets: themes with tips, the criteria they came from, metadata and lineage."""

from arr_core.rubrics.rubric_set import RubricSet, Theme

__all__ = ["RubricSet", "Theme"]
