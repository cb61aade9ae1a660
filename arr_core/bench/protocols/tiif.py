"""TIIF-Bench (Wei et al., 2025) with its yes/no question protocol.

Source: A113N-W3I/TIIF-Bench @ 3aae750 (no licence stated):

- request (``eval/eval_with_vlm.py`` lines 12-25, 74-108): system message "You are a professional image
  critic.", then one user message: the template with ``##YNQuestions##`` replaced by the item's
  questions (stripped, one per line), then the image;
- answer (lines 164-175): one line per question starting with "yes" or "no"; a count different from
  the number of questions is a format error (retried there);
- images (lines 114-143, README): ``<image_dir>/<type>/<model>/<short|long>_description/<idx>.<ext>``,
  ``idx`` = the 0-based line of the prompt in its ``<type>_prompts.jsonl``;
- scores (``eval/summary_results.py`` lines 75-99): per type and description, accuracy = answers equal
  to the expected answer / questions, pooled over the type's images; ``eval/summary_dimension_results.py``
  lines 30-111: group scores are means of their types' accuracies; the overall is the mean of the nine
  groups (Basic Attribute, Relation, Reasoning; Advanced Attribute+Relation, Attribute+Reasoning,
  Relation+Reasoning, Text Generation, Style Control; Real-world Complex).

Differences: the official script picks one of three template wordings at random and samples at
temperature 1.0 with GPT-4o (or Qwen2.5-VL-72B); here the first wording (``raw_prompt``), temperature 0,
the configured VLM, and after the image one paragraph asking for the answer lines as a JSON list of
strings. Text rendering's OCR metric (PaddleOCR, ``cal_gned_and_recall_models.py``) is not run; the
``text`` type is scored by its yes/no questions only. An image without a usable answer abstains (the
official script retries it until it parses).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from arr_core.bench.protocols import base
from arr_core.errors import InputError

NAME = "tiif"
VERSION = "tiif-bench-vlm-v1"
SYSTEM = "You are a professional image critic."
TEMPLATE = ('\nYou are tasked with conducting a careful examination of the provided image. Based on the content '
            'of the image, please answer the following yes or no questions:\n\nQuestions:\n##YNQuestions##\n\n'
            'Note that:\n1. Each answer should be on a separate line, starting with "yes" or "no", followed by the '
            'reason.\n2. The order of answers must correspond exactly to the order of the questions.\n3. Each '
            'question must have only one answer.\n4. Directly return the answers to each question, without any '
            'additional content.\n5. Each answer must be on its own line!\n6. Make sure the number of output '
            'answers equal to the number of questions!\n')
BASIC = {"Attribute": ["shape+color", "color+texture", "texture+color", "shape+texture"],
         "Relation": ["2d_spatial_relation", "3d_spatial_relation", "action+2d", "action+3d"],
         "Reasoning": ["numeracy", "negation", "differentiation", "comparison"]}
ADVANCED = {"Attribute+Relation": ["action+color", "action+texture", "color+2d", "color+3d", "shape+2d", "shape+3d",
                                   "texture+2d", "texture+3d"],
            "Attribute+Reasoning": ["numeracy+color", "numeracy+texture", "comparison+color", "comparison+texture",
                                    "differentiation+color", "differentiation+texture", "negation+color",
                                    "negation+texture"],
            "Relation+Reasoning": ["numeracy+2d", "numeracy+3d", "comparison+2d", "comparison+3d",
                                   "differentiation+2d", "differentiation+3d", "negation+2d", "negation+3d"],
            "Text Generation": ["text"], "Style Control": ["style"]}
REAL = {"Complex": ["real_world"]}
GROUPS = {**{f"Basic {k}": v for k, v in BASIC.items()}, **{f"Advanced {k}": v for k, v in ADVANCED.items()},
          **{f"Real-world {k}": v for k, v in REAL.items()}}
DIFFERENCES = ("Official: GPT-4o (or Qwen2.5-VL-72B) at temperature 1.0 with one of three template wordings "
               "chosen at random; here the configured VLM at temperature 0 with the first wording, and one "
               "paragraph after the image asking for the answer lines as a JSON list. The OCR metric of the "
               "text type is not run. Images without a usable answer abstain (the official script retries).")


def aggregate(rows: list[tuple[str, int, int]]) -> dict[str, Any]:
    """Official aggregation of (type, correct, questions) rows: {"types": {type: accuracy}, "groups":
    {group: mean of its types}, "overall": mean of the groups that have types}."""
    tot: dict[str, list[int]] = {}
    for t, c, n in rows:
        acc = tot.setdefault(t, [0, 0])
        acc[0] += c
        acc[1] += n
    types = {t: c / n for t, (c, n) in tot.items() if n}
    groups = {g: base.mean_or_nan([types[t] for t in ts if t in types]) for g, ts in GROUPS.items()
              if any(t in types for t in ts)}
    return {"types": types, "groups": groups, "overall": base.mean_or_nan(list(groups.values()))}


def parse_answers(obj: dict[str, Any], n: int) -> dict[str, Any] | None:
    """The answer list as "yes"/"no" per question (each entry must start with yes or no), or None."""
    got = base.yes_no_list(obj, n)
    return {"answers": got} if got is not None else None


def request(questions: list[str], image: Any):
    from arr_core.vlm.messages import image_data_url, image_part, text_part

    n = len(questions)
    text = TEMPLATE.replace("##YNQuestions##", "\n".join(q.strip() for q in questions))
    schema = base.obj_schema({"answers": {"type": "array", "items": {"type": "string"}, "minItems": n, "maxItems": n}})
    parts = [text_part(text), image_part(image_data_url(image)),
             text_part(base.json_contract({"answers": ['yes or no, followed by the reason'] * min(n, 2)}))]
    return base.make_request(parts, kind="tiif", version=VERSION, schema=schema, required=("answers",),
                             validator=lambda o: None if parse_answers(o, n) else
                             f'"answers" must hold {n} strings, each starting with yes or no',
                             max_tokens=256 + 64 * n, system=SYSTEM)


def image_folder(images: Path, ptype: str, description: str) -> Path:
    """``<images>/<type>[/<model>]/<description>_description``: the model level is found when the type folder
    holds exactly one model folder."""
    sub = f"{description}_description"
    if (images / ptype / sub).is_dir():
        return images / ptype / sub
    models = sorted(p for p in (images / ptype).glob(f"*/{sub}") if p.is_dir()) if (images / ptype).is_dir() else []
    if len(models) > 1:
        raise InputError(f"several model folders hold {ptype}/*/{sub}: {[m.parent.name for m in models]}; point --images at a "
                         "folder that holds the images of one model only",
                         file=str(images / ptype), field="images")
    return models[0] if models else images / ptype / sub


def run(client: Any, inputs: base.ProtocolInputs, *, judge_name: str, simulated: bool = False,
        n_boot: int = 2000, seed: int = 0):
    from arr_core.bench.prompt_sets import load_tiif_bench

    description = str(inputs.options.get("description") or "short")
    items = load_tiif_bench(inputs.prompts, split=str(inputs.options.get("split") or "testmini"),
                            description=description)
    items = items[: inputs.limit] if inputs.limit else items
    if not items:
        raise InputError("no TIIF-Bench prompts", file=str(inputs.prompts))
    jobs = []
    for it in items:
        folder = image_folder(inputs.images, it.category, description)
        img = base.find_image(folder, str(it.meta["index"]), file=it.meta["file"], record=it.meta["line"],
                              what="generated image")
        jobs.append((it, partial(request, it.questions, str(img))))
    resps, counter = base.ask(client, [r for _, r in jobs], "tiif", max_failure_rate=inputs.max_failure_rate)
    rows, per_item, abstained = [], [], 0
    for (it, _), resp in zip(jobs, resps, strict=True):
        got = base.outcome(resp, lambda o, n=len(it.questions): parse_answers(o, n))
        if got.parsed is None:
            abstained += 1
            per_item.append({"id": it.id, "abstained": got.error})
            continue
        correct = sum(a == e for a, e in zip(got.parsed["answers"], it.answers, strict=True))
        rows.append((it.category, correct, len(it.questions)))
        per_item.append({"id": it.id, "type": it.category, "correct": correct, "questions": len(it.questions)})
    agg = aggregate(rows)
    trs = [[g, v] for g, v in agg["groups"].items()] + [["overall (mean of groups)", agg["overall"]]]
    type_rows = [[t, v] for t, v in sorted(agg["types"].items())]
    summary = {f"tiif/{description}/overall": agg["overall"],
               **{f"tiif/{description}/{g}": v for g, v in agg["groups"].items()}}
    tables = [(f"TIIF-Bench ({description} prompts) — groups", ["group", "accuracy"], trs,
               "Accuracy = answers equal to the expected yes/no, pooled over a type's questions."),
              (f"TIIF-Bench ({description} prompts) — types", ["type", "accuracy"], type_rows, "")]
    return base.build_result(NAME, VERSION, base.Summary(tables, summary, {"items": per_item}),
                             inputs=inputs, judge_name=judge_name, simulated=simulated, counter=counter,
                             abstained=abstained, items=len(rows), differences=DIFFERENCES, client=client)
