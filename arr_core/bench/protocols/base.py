"""What the official-protocol benchmarks share: finding the images a record names, asking the VLM,
counting failures, and turning aggregated scores into an ``EvalResult``.

Every protocol (``gedit``, ``imgedit``, ``dpg``, ``tiif``, ``unigenbench``) reads its benchmark's own
published files, builds its official judge prompt, asks the VLM through the project's client (cached,
re-asked, JSON-validated) and aggregates as its repository does. The official prompt text is sent
verbatim; where the official answer is free text (ImgEdit's ``Label: N`` lines, TIIF's answer lines,
UniGenBench's ``<score>`` tags) one paragraph is appended that asks for the same fields as one JSON
object (``json_contract``), and the request carries that JSON schema for structured output. Each
protocol module states its other differences from the official run (judge model, temperature, ...).

Failures are never scores: a transport failure is counted by ``arr_core.failures.FailureCounter``
(past ``max_failure_rate`` the run stops with an ``EndpointError``); an answer that stays unusable
after the client's re-asks is an abstention, counted and left out of every mean.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from arr_core.errors import InputError
from arr_core.failures import FailureCounter, endpoint_name, is_transport_error
from arr_core.vlm.base import VLMRequest, VLMResponse

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")
JSON_CONTRACT_INTRO = ("Reply with one JSON object and nothing else, holding the same answer fields as "
                       "requested above, in this form:")


@dataclass
class ProtocolInputs:
    """What a protocol run reads: the benchmark's prompt/metadata file, the folder of generated (or
    edited) images, the folder of source images (editing), the judge-prompt file (ImgEdit) and
    protocol options (``description``, ``split``, ``language``, ``images_per_prompt``, ``pic_num``) and the
    fail policy's ``max_failure_rate``."""

    prompts: Path
    images: Path
    sources: Path | None = None
    judge_prompts: Path | None = None
    limit: int | None = None
    options: dict[str, Any] = field(default_factory=dict)
    max_failure_rate: float = 0.2  # share of requests that may fail in transport before the run stops


@dataclass
class Asked:
    """One request's outcome: the parsed answer (None when abstained) and why it abstained."""

    parsed: dict[str, Any] | None
    error: str | None = None
    text: str = ""


def find_image(folder: Path, stem: str, *, file: str, record: Any, what: str) -> Path:
    """``folder/<stem>.<png|jpg|jpeg|webp>`` (or ``folder/<stem>`` when it has an extension);
    ``InputError`` naming the expected path, the record and the field otherwise."""
    cands = [folder / stem] if Path(stem).suffix.lower() in IMAGE_EXTENSIONS else []
    cands += [folder / f"{stem}{ext}" for ext in IMAGE_EXTENSIONS]
    for c in cands:
        if c.is_file():
            return c
    raise InputError(f"{what} not found: expected {cands[0]} (or another of {', '.join(IMAGE_EXTENSIONS)})",
                     file=file, record=record, field=what)


def require(row: dict[str, Any], key: str, *, file: str, record: Any) -> Any:
    """``row[key]``; ``InputError`` naming file, record and field when it is missing or empty."""
    v = row.get(key)
    if v is None or (isinstance(v, str) and not v.strip()):
        raise InputError(f"missing required field '{key}'", file=file, record=record, field=key)
    return v


def json_contract(example: dict[str, Any]) -> str:
    """The appended answer-format paragraph: ``JSON_CONTRACT_INTRO`` and the example object."""
    return JSON_CONTRACT_INTRO + "\n" + json.dumps(example, ensure_ascii=False)


def make_request(parts: list[dict[str, Any]], *, kind: str, version: str, schema: dict[str, Any],
                 validator: Any, required: tuple[str, ...], max_tokens: int = 1024,
                 system: str | None = None) -> VLMRequest:
    """One protocol request: an optional system message, then one user message of ``parts``."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": parts})
    return VLMRequest(messages=messages, required_keys=required, validator=validator, temperature=0.0,
                      max_tokens=max_tokens, prompt_version=version, kind=kind, schema=schema)


def obj_schema(props: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}


def int_list_schema(n: int, lo: int, hi: int) -> dict[str, Any]:
    return {"type": "array", "items": {"type": "integer", "minimum": lo, "maximum": hi}, "minItems": n,
            "maxItems": n}


def as_number(v: Any, lo: float, hi: float) -> float | None:
    """A score given as a number or a string ("4", "4/5", " 7 ") within [lo, hi], else None."""
    if isinstance(v, bool):
        return None
    if isinstance(v, str):
        head = v.strip().split("/")[0].strip().rstrip(".")
        try:
            v = float(head)
        except ValueError:
            return None
    if isinstance(v, (int, float)) and lo <= float(v) <= hi:
        return float(v)
    return None


_YES_NO = re.compile(r"^\W*(yes|no)\b", re.I)


def yes_no_list(obj: dict[str, Any], n: int) -> list[str] | None:
    """``obj["answers"]`` as "yes"/"no" per question — each entry a string (or ``{"answer": …}``) that
    starts with yes or no, as TIIF-Bench's ``extract_yes_no`` reads answer lines — or None when the
    count differs or an entry is neither."""
    ans = obj.get("answers")
    if not isinstance(ans, list) or len(ans) != n:
        return None
    out = []
    for a in ans:
        m = _YES_NO.match(str(a.get("answer") if isinstance(a, dict) else a))
        if not m:
            return None
        out.append(m.group(1).lower())
    return out


ASK_CHUNK = 128  # requests built and held at a time (each carries its images as data URLs)


def ask(client: Any, requests: Sequence[VLMRequest | Callable[[], VLMRequest]], stage: str, *,
        max_failure_rate: float = 0.2, chunk: int = ASK_CHUNK) -> tuple[list[VLMResponse], FailureCounter]:
    """Ask every request through the client (cache, concurrency, re-asks), ``chunk`` at a time; a
    callable is built only when its chunk is asked, so a large benchmark never holds all its encoded
    images. Transport failures are counted: the run stops with ``EndpointError`` when the first
    requests all fail (``FailureCounter.early_abort``) or, at the end, past ``max_failure_rate``."""
    from arr_core.bench.results import run_sync

    counter = FailureCounter(stage, endpoint_name(client), max_failure_rate=max_failure_rate)
    resps: list[VLMResponse] = []
    for start in range(0, len(requests), chunk):
        batch = [r if isinstance(r, VLMRequest) else r() for r in requests[start:start + chunk]]
        for r in run_sync(client.ask_many(batch)):
            if is_transport_error(r.error):
                counter.fail(r.error or "")
            else:
                counter.ok()
            resps.append(r)
    counter.check()
    return resps, counter


def outcome(resp: VLMResponse, parse: Any) -> Asked:
    """The protocol's reading of one response: ``parse(parsed_json) -> dict | None``; an error, a
    transport failure or an unparseable answer is an abstention (never a score)."""
    if resp.error or not isinstance(resp.parsed, dict):
        return Asked(None, resp.error or "no JSON answer", resp.text)
    got = parse(resp.parsed)
    return Asked(got, None if got is not None else "answer did not hold the protocol's fields", resp.text)


def mean_or_nan(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


@dataclass
class Summary:
    """What a protocol hands to :func:`build_result`: tables (title, columns, rows, note), flat
    numbers, counts and the per-item details."""

    tables: list[tuple[str, list[str], list[list[Any]], str]]
    summary: dict[str, float]
    details: dict[str, Any] = field(default_factory=dict)


def build_result(name: str, version: str, summary: Summary, *, inputs: ProtocolInputs,
                 judge_name: str, simulated: bool, counter: FailureCounter | None, abstained: int,
                 items: int, differences: str, client: Any = None):
    """The ``EvalResult`` of a protocol run (stored by ``arr eval``, rendered by ``arr report``); its kind
    is the benchmark's name, so ``arr report --list`` tells it from this project's own benchmarks."""
    from arr_core.bench.report import Report, Section, Table
    from arr_core.bench.results import EvalResult, simulation_notes

    tables = [Table(t, cols, rows, note=note) for t, cols, rows, note in summary.tables]
    stats = client.stats() if client is not None and hasattr(client, "stats") else {}
    flat = dict(summary.summary)
    flat.update({"items": float(items), "abstained": float(abstained),
                 "transport_failures": float(counter.failed if counter else 0),
                 "vlm_calls": float(stats.get("calls", 0))})
    cost = Table("Judge, cost and failures", ["what", "value"], [
        ["protocol", f"{name} ({version})"], ["judge", judge_name], ["records scored", items],
        ["abstentions (no usable answer; left out of the means)", abstained],
        ["transport failures", counter.failed if counter else 0],
        ["VLM calls / cache hits", f"{stats.get('calls', 0)} / {stats.get('cache_hits', 0)}"],
        ["prompt / completion tokens", f"{stats.get('prompt_tokens', 0)} / {stats.get('completion_tokens', 0)}"]])
    config = {"protocol": name, "protocol_version": version, "judge": judge_name,
              "prompts": str(inputs.prompts), "images": str(inputs.images),
              "sources": str(inputs.sources) if inputs.sources else None,
              "judge_prompts": str(inputs.judge_prompts) if inputs.judge_prompts else None,
              "limit": inputs.limit, "options": dict(sorted(inputs.options.items()))}
    report = Report(f"{name} — official protocol ({version})",
                    [Section("metrics", "Metrics", tables=tables + [cost]),
                     Section("protocol", "Differences from the official protocol", text=differences)],
                    subtitle=f"{items} records · judge {judge_name}", notes=simulation_notes(simulated),
                    meta={k: v for k, v in config.items() if not isinstance(v, (dict, list))})
    return EvalResult(name, config, flat, tables + [cost], report, details=summary.details)
