"""What every benchmark returns, and how it goes to and comes back from the store's ``eval_results``.

``metrics`` (JSON) holds ``summary`` (flat name → number, for MLflow), ``tables`` (the result
tables) and ``report`` (the ``Report`` dict, images by path) so that ``arr report ID`` can render
the HTML again without rerunning anything.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from arr_core.bench.report import Report, Table
from arr_core.digest import canonical_json, digest_obj
from arr_core.errors import InputError, NotFoundError
from arr_core.stats import bootstrap_ci

T = TypeVar("T")

# preference-paper: the ARR paper's preference protocol (arr eval preference --paper / zeroshot); gedit …
# unigenbench: a generation benchmark scored with its official protocol (arr eval protocol NAME).
KINDS = ("preference", "preference-paper", "cardinality", "transfer", "geneval", "checkpoints", "winrate", "edit",
         "gedit", "imgedit", "dpg", "tiif", "unigenbench")

SCENE_NOTE = ("Judged/checked by the offline scene VLM simulator: a test and demo backend whose "
              "accuracies say nothing about real VLMs.")
WORLD_NOTE = ("Scene world: synthetic prompts and images checked by the scene detector; these numbers say "
              "nothing about real generators.")


def simulation_notes(simulated: bool, checker_name: str = "") -> list[str]:
    """The disclaimer(s) a report made on the scene world carries."""
    if not simulated:
        return []
    return [WORLD_NOTE] if checker_name == "scene-detector" else [SCENE_NOTE]


@dataclass
class EvalResult:
    kind: str
    config: dict[str, Any]
    summary: dict[str, float]
    tables: list[Table]
    report: Report
    rubric_set_id: str | None = None
    policy_id: str | None = None
    details: dict[str, Any] = field(default_factory=dict)  # per-item outcomes, not stored

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"eval kind must be one of {KINDS}, got {self.kind!r}")

    @property
    def eval_id(self) -> str:
        return "ev-" + digest_obj({"kind": self.kind, "config": self.config, "rubric_set_id": self.rubric_set_id,
                                   "policy_id": self.policy_id}, 16)

    def table(self, title: str) -> Table:
        for t in self.tables:
            if t.title == title:
                return t
        raise KeyError(f"no table titled {title!r}; have {[t.title for t in self.tables]}")

    def to_row(self, report_uri: str | None = None) -> dict[str, Any]:
        self.report.meta.setdefault("eval_id", self.eval_id)
        metrics = {"summary": _json_safe(self.summary), "tables": [t.to_dict() for t in self.tables],
                   "report": self.report.to_dict()}
        return {"eval_id": self.eval_id, "kind": self.kind, "rubric_set_id": self.rubric_set_id,
                "policy_id": self.policy_id, "config": canonical_json(self.config),
                "metrics": json.dumps(_json_safe(metrics), ensure_ascii=False), "report_uri": report_uri}


def _json_safe(obj: Any) -> Any:
    """NaN/inf → None so the JSON column stays valid JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def save_eval_result(store: Any, result: EvalResult, report_uri: str | None = None) -> str:
    """Upsert into ``eval_results``; returns the eval id."""
    store.execute("eval_result_upsert", result.to_row(report_uri))
    return result.eval_id


def resolve_eval_id(store: Any, id_or_prefix: str) -> str:
    rows = store.fetchall("eval_result_find_prefix", [id_or_prefix])
    ids = [r["eval_id"] for r in rows]
    if id_or_prefix in ids:
        return id_or_prefix
    if not ids:
        raise NotFoundError(f"no evaluation with id or prefix '{id_or_prefix}' (see `arr report --list`)")
    if len(ids) > 1:
        raise InputError(f"evaluation prefix '{id_or_prefix}' is ambiguous: {', '.join(ids)}")
    return ids[0]


def load_eval_row(store: Any, id_or_prefix: str) -> dict[str, Any]:
    """The stored row with ``config`` and ``metrics`` parsed."""
    eid = resolve_eval_id(store, id_or_prefix)
    row = store.fetchall("eval_result_get", [eid])[0]
    for k in ("config", "metrics"):
        if isinstance(row.get(k), str):
            row[k] = json.loads(row[k])
    return row


def report_from_row(row: dict[str, Any]) -> Report:
    rep = (row.get("metrics") or {}).get("report")
    if not rep:
        raise InputError(f"evaluation {row.get('eval_id')} has no stored report body")
    report = Report.from_dict(rep)
    report.meta.setdefault("eval_id", row.get("eval_id"))
    return report


def rate_ci(values: list[float], *, n_boot: int = 2000, seed: int = 0) -> dict[str, float]:
    """Mean of 0/1 (or real) values with a percentile-bootstrap 95 % interval, as an interval cell."""
    p, lo, hi = bootstrap_ci([float(v) for v in values], n_boot=n_boot, seed=seed)
    return {"point": p, "lo": lo, "hi": hi}


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine from synchronous code (benchmarks are called from CLI and Prefect tasks)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    raise RuntimeError("benchmark called inside a running event loop; await the async variant instead")
