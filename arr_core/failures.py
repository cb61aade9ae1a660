"""The fail policy shared by the VLM-bound stages: a failure is never data.

A VLM answer is one of three things, counted apart: a genuine verdict, a model-output failure (no
usable answer after re-asks: the item abstains, which is a measurement) and a transport/endpoint
failure (unreachable, rejected, timed out after retries: nothing was measured). Transport failures
are never recorded as finished work, and past ``max_failure_rate`` (or after ``early_abort``
consecutive transport failures at the start of a stage) the stage stops with an ``EndpointError``
that names the endpoint, the error class, the server's message and the counts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from arr_core.errors import EndpointError

# How the VLM client marks a transport failure in ``VLMResponse.error`` (which the judge's per-order
# results keep), so the stages can tell it from a model-output failure.
TRANSPORT_PREFIX = "transport:"


def is_transport_error(error: str | None) -> bool:
    """True for a ``VLMResponse.error`` that comes from the transport (the client prefixes those)."""
    return bool(error) and str(error).startswith(TRANSPORT_PREFIX)


def endpoint_name(client: Any) -> str:
    """``backend:model at base_url`` of a VLM client, without credentials."""
    from arr_core.secrets import redact_url

    b = getattr(client, "backend", client)
    where = getattr(b, "base_url", None)
    name = f"{getattr(b, 'name', '?')}:{getattr(b, 'model', '?')}"
    return f"{name} at {redact_url(where)}" if where else name


@dataclass
class FailureCounter:
    """Counts a stage's work items and the transport failures among them, and applies the policy."""

    stage: str
    endpoint: str
    max_failure_rate: float = 0.2
    early_abort: int = 8
    total: int = 0
    failed: int = 0
    consecutive_at_start: int = 0
    first_errors: list[str] = field(default_factory=list)

    def ok(self) -> None:
        self.total += 1
        self.consecutive_at_start = -1  # something succeeded: the start-of-stage abort no longer applies

    def fail(self, error: str) -> None:
        """Count one transport failure; raise at once after ``early_abort`` of them in a row at the
        start of the stage."""
        self.total += 1
        self.failed += 1
        if len(self.first_errors) < 3:
            self.first_errors.append(str(error)[:500])
        if self.consecutive_at_start >= 0:
            self.consecutive_at_start += 1
            if self.early_abort and self.consecutive_at_start >= self.early_abort:
                raise self.error(f"the first {self.consecutive_at_start} items all failed; stopped early")

    def check(self) -> None:
        """Raise when the share of failed items exceeds ``max_failure_rate``."""
        if self.total and self.failed / self.total > self.max_failure_rate:
            raise self.error(f"{self.failed} of {self.total} items failed "
                             f"(max_failure_rate {self.max_failure_rate:g})")

    def error(self, what: str) -> EndpointError:
        first = self.first_errors[0] if self.first_errors else "?"
        return EndpointError(f"{self.stage}: VLM endpoint {self.endpoint} failed: {what}. Error: {first}. "
                             "Nothing failed was stored; rerun the same command once the endpoint answers.")

    def summary(self) -> dict[str, Any]:
        return {"items": self.total, "transport_failures": self.failed}


def check_judgments(judgments: Any, client: Any, stage: str, max_failure_rate: float = 0.2) -> FailureCounter:
    """Count judgments with a transport failure in any order; raise ``EndpointError`` past
    ``max_failure_rate`` (an abstention because the endpoint was down is not a verdict)."""
    counter = FailureCounter(stage, endpoint_name(client), max_failure_rate=max_failure_rate, early_abort=0)
    for j in judgments:
        err = next((o.error for o in j.orders if is_transport_error(o.error)), None)
        if err:
            counter.fail(err)
        else:
            counter.ok()
    counter.check()
    return counter
