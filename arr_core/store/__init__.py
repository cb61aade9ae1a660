"""The rubric store: one DuckDB file plus Parquet exports (all SQL lives in ``sql/``)."""

from arr_core.store.store import Store

__all__ = ["Store"]
