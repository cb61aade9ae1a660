"""Error types that the CLI turns into clear messages and exit codes (never tracebacks)."""

from __future__ import annotations


class ArrError(Exception):
    """Base class for errors that carry a user-facing message."""

    exit_code = 1


class InputError(ArrError, ValueError):
    """Bad user input: names the file, the record index and the field, and how to fix it."""

    exit_code = 2

    def __init__(self, message: str, *, file: str | None = None, record: int | None = None,
                 field: str | None = None) -> None:
        self.file, self.record, self.field, self.reason = file, record, field, message
        where = []
        if file is not None:
            where.append(str(file))
        if record is not None:
            where.append(f"record {record}")
        if field is not None:
            where.append(f"field '{field}'")
        super().__init__(f"{': '.join([', '.join(where), message]) if where else message}")


class StoreLockedError(ArrError):
    """The DuckDB store file is held by another process past the bounded wait."""

    exit_code = 3


class NotFoundError(ArrError, KeyError):
    """An id (dataset, rubric set, run) that is not in the store."""

    exit_code = 2

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else "not found"


class EndpointError(ArrError):
    """A VLM (or reward) endpoint failed past the stage's fail policy: unreachable, rejected the
    requests (4xx other than 429) or kept failing after retries. The message names the endpoint, the
    error class, the server's message and the counts. Nothing failed was stored; a rerun redoes the
    failed work."""

    exit_code = 4


class TrainingHealthError(ArrError):
    """Training stopped because it could not go on usefully: a non-finite loss, gradient or LoRA weight
    (the run diverged), or a judge that abstained on every group step after step. Nothing non-finite
    is saved; the newest checkpoint before the failure stays resumable."""

    exit_code = 5
