"""ImgEdit-Bench (Ye et al., 2025) basic suite with its per-edit-type judging prompts.

Source: PKU-YuanGroup/ImgEdit @ 547185d, ``Benchmark/Basic/`` (no licence stated; the prompts are read
from the user's copy of ``prompts.json`` — the file ``judge_prompts_by_edit_type.json`` in
``../shared/data/imgedit_bench`` is byte-identical — and never shipped here):

- request (``basic_bench.py`` lines 36-49): ``prompts[edit_type]`` with ``<edit_prompt>`` replaced by the
  instruction, then the original image (``<origin_img_root>/<id>``), then the edited image
  (``<result_img_folder>/<key>.png``), one user message;
- answer: ``Brief reasoning: …`` then three ``<Label>: <1-5>`` lines, the labels named in each prompt's
  "Example Response Format" (e.g. Prompt Compliance / Visual Naturalness / Physical & Detail Integrity);
- scores (``step1_get_avgscore.py`` lines 4-13): per image the mean of its three scores (rounded to 2
  decimals there); ``step2_typescore.py`` lines 5-18: per edit type the mean over its images. The
  overall (the paper's "Overall" column) is the mean of the nine type scores.

Differences: the configured VLM at temperature 0 instead of GPT-4o (or the ImgEdit judge model); after
the images one paragraph asks for the same fields as one JSON object (``base.json_contract``), with a
JSON schema for structured output; means are not rounded to 2 decimals before averaging; an answer
without three scores abstains (the official step 1 drops such entries too). UGE-Bench items (no
``edit_type``) need a ``uge`` entry in the judge-prompt file.
"""

from __future__ import annotations

import json
import re
from functools import partial
from pathlib import Path
from typing import Any

from arr_core.bench.protocols import base
from arr_core.errors import InputError

NAME = "imgedit"
VERSION = "imgedit-basic-v1"
TYPES = ("add", "adjust", "extract", "replace", "remove", "background", "style", "compose", "action")
REASONING = "Brief reasoning"
_LABEL = re.compile(r"^\s*([^:\n]+?):\s*A number from 1 to 5\.?\s*$", re.M)
DIFFERENCES = ("Official judge GPT-4o (or the released ImgEdit judge, Qwen2.5-VL-7B based); here the configured "
               "VLM at temperature 0. The per-type prompt is sent verbatim, then original and edited image; one "
               "paragraph after the images asks for the official answer fields (Brief reasoning and the three "
               "labelled 1-5 scores) as one JSON object. Means are not rounded to 2 decimals before averaging.")


def score_labels(prompt: str) -> list[str]:
    """The three score labels of a judging prompt, from its 'Example Response Format' lines."""
    return _LABEL.findall(prompt.split("Example Response Format:", 1)[-1])


def image_score(scores: list[float]) -> float:
    """``step1_get_avgscore.py``: the mean of an image's scores."""
    return sum(scores) / len(scores)


def aggregate(rows: list[tuple[str, float]]) -> dict[str, Any]:
    """``step2_typescore.py`` for (edit_type, image score) rows: {"types": {type: mean}, "overall": mean
    over types, "n": {type: images}}."""
    types: dict[str, list[float]] = {}
    for t, s in rows:
        types.setdefault(t, []).append(s)
    means = {t: base.mean_or_nan(v) for t, v in types.items()}
    return {"types": means, "overall": base.mean_or_nan(list(means.values())), "n": {t: len(v) for t, v in types.items()}}


def load_judge_prompts(path: Path | None, edits: Path) -> tuple[Path, dict[str, str]]:
    """The per-type prompts: ``path``, else ``judge_prompts_by_edit_type.json`` or ``prompts.json`` next to
    the edit file."""
    cands = [path] if path else [edits.parent / "judge_prompts_by_edit_type.json", edits.parent / "prompts.json"]
    for c in cands:
        if c is not None and c.is_file():
            try:
                data = json.loads(c.read_text(encoding="utf-8"))
            except json.JSONDecodeError as e:
                raise InputError(f"invalid JSON ({e.msg})", file=str(c)) from None
            if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
                raise InputError("expected an object {edit_type: prompt text}", file=str(c))
            for t, p in data.items():
                if "<edit_prompt>" not in p or len(score_labels(p)) != 3:
                    raise InputError(f"prompt '{t}' lacks '<edit_prompt>' or three 'Label: A number from 1 to 5.' "
                                     "lines", file=str(c), field=t)
            return c, data
    raise InputError("ImgEdit judging prompts not found; pass --judge-prompts (ImgEdit's Benchmark/Basic/"
                     "prompts.json)", file=str(cands[0]), field="judge_prompts")


def _validator(labels: list[str]):
    def validate(obj: dict[str, Any]) -> str | None:
        bad = [lab for lab in labels if base.as_number(obj.get(lab), 1, 5) is None]
        return f"{', '.join(repr(b) for b in bad)} must be numbers from 1 to 5" if bad else None
    return validate


def request(prompt: str, instruction: str, source: Any, edited: Any):
    from arr_core.vlm.messages import image_data_url, image_part, text_part

    labels = score_labels(prompt)
    example = {REASONING: "<no more than 20 words>", **{lab: "<1-5>" for lab in labels}}
    schema = base.obj_schema({REASONING: {"type": "string"},
                              **{lab: {"type": "integer", "minimum": 1, "maximum": 5} for lab in labels}})
    parts = [text_part(prompt.replace("<edit_prompt>", instruction)), image_part(image_data_url(source)),
             image_part(image_data_url(edited)), text_part(base.json_contract(example))]
    return base.make_request(parts, kind="imgedit", version=VERSION, schema=schema, validator=_validator(labels),
                             required=tuple(labels), max_tokens=512)


def load(inputs: base.ProtocolInputs) -> tuple[list[dict[str, Any]], dict[str, str], Path]:
    from arr_core.bench.prompt_sets import load_imgedit

    if inputs.sources is None:
        raise InputError("ImgEdit needs the original images: pass --sources (the benchmark's origin_img_root)",
                         field="sources")
    ppath, prompts = load_judge_prompts(inputs.judge_prompts, inputs.prompts)
    f = str(inputs.prompts)
    recs = []
    for it in load_imgedit(inputs.prompts):
        key, etype = it.meta["key"], it.category
        if etype not in prompts:
            raise InputError(f"no judging prompt for edit type '{etype}' in {ppath}", file=f, record=key,
                             field="edit_type")
        source = inputs.sources / it.meta["source_id"]
        if not source.is_file():
            raise InputError(f"original image not found: {source}", file=f, record=key, field="id")
        edited = base.find_image(inputs.images, key, file=f, record=key, what="edited image")
        recs.append({"key": key, "type": etype, "instruction": it.prompt, "source": str(source),
                     "edited": str(edited)})
        if inputs.limit and len(recs) >= inputs.limit:
            break
    return recs, prompts, ppath


def run(client: Any, inputs: base.ProtocolInputs, *, judge_name: str, simulated: bool = False,
        n_boot: int = 2000, seed: int = 0):
    from arr_core.bench.generation import stratified_mean_ci

    recs, prompts, _ = load(inputs)
    reqs = [partial(request, prompts[r["type"]], r["instruction"], r["source"], r["edited"]) for r in recs]
    resps, counter = base.ask(client, reqs, "imgedit", max_failure_rate=inputs.max_failure_rate)
    rows, per_item, abstained = [], [], 0
    for rec, resp in zip(recs, resps, strict=True):
        labels = score_labels(prompts[rec["type"]])
        got = base.outcome(resp, lambda o, labels=labels: (
            {lab: base.as_number(o.get(lab), 1, 5) for lab in labels}
            if all(base.as_number(o.get(lab), 1, 5) is not None for lab in labels) else None))
        if got.parsed is None:
            abstained += 1
            per_item.append({"key": rec["key"], "abstained": got.error})
            continue
        s = image_score(list(got.parsed.values()))
        rows.append((rec["type"], s))
        per_item.append({"key": rec["key"], "type": rec["type"], "scores": got.parsed, "score": s})
    agg = aggregate(rows)
    by_type = {t: [s for tt, s in rows if tt == t] for t in agg["types"]}
    ci = stratified_mean_ci(by_type, n_boot=n_boot, seed=seed)
    order = [t for t in TYPES if t in agg["types"]] + sorted(set(agg["types"]) - set(TYPES))
    trs = [[t, agg["types"][t], agg["n"][t]] for t in order] + [["overall (mean over types)", agg["overall"], len(rows)]]
    note = f"Overall 95% interval (bootstrap within types): [{ci['lo']:.3f}, {ci['hi']:.3f}]."
    summary = {f"imgedit/{t}": v for t, v in agg["types"].items()}
    summary["imgedit/overall"] = agg["overall"]
    return base.build_result(NAME, VERSION,
                             base.Summary([("ImgEdit-Bench scores (1-5)", ["edit type", "score", "images"], trs, note)],
                                          summary, {"items": per_item}),
                             inputs=inputs, judge_name=judge_name, simulated=simulated, counter=counter,
                             abstained=abstained, items=len(rows), differences=DIFFERENCES, client=client)
