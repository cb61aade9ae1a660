"""DPG-Bench (Hu et al., 2024, ELLA) with its question/dependency scoring.

Source: TencentQQGYLab/ELLA @ 3c228f1, ``dpg_bench/compute_dpg_bench.py`` (Apache-2.0):

- questions (``prepare_dpg_data``, lines 65-99): ``dpg_bench.csv`` rows ``item_id, text, keywords,
  proposition_id, dependency, category_broad, category_detailed, tuple, question_natural_language``;
  ``dependency`` lists parent proposition ids, ``0`` = none;
- images (lines 109-121, 190-200): one file per prompt named ``<item_id>.<ext>``; with ``--pic-num 4``
  the file is a 2x2 grid of four ``resolution``-sized images, each scored on its own (crops in the
  order top-left, top-right, bottom-left, bottom-right);
- per crop (lines 130-155): a question scores 1 when the VQA answer is "yes"; a question any of whose
  parents scores 0 is set to 0 (in question order, so masking chains); the crop's score is the mean;
  the image's score is the mean over its crops; the DPG-Bench score is the mean over images x 100;
- categories (lines 207-245): L2 = the tuple's text before "(", L1 = L2 before "-"; category scores are
  means of the unmasked question scores (of the last crop) x 100.

Differences: the official VQA model is mPLUG-large (``damo/mplug_visual-question-answering_coco_large_en``),
asked one question at a time; here the configured VLM answers all questions of a crop in one request
(the project's yes/no check template, JSON answers; the prompt is not shown, as mPLUG does not see it).
The official loader skips the CSV's first data row (``if i == 0: continue``, line 75); we keep it. An
unusable answer drops that crop; an image none of whose crops was answered abstains.
"""

from __future__ import annotations

import csv
from functools import partial
from pathlib import Path
from typing import Any

from arr_core.bench.protocols import base
from arr_core.errors import InputError

NAME = "dpg"
VERSION = "dpg-bench-vlm-v1"
COLUMNS = ("item_id", "proposition_id", "dependency", "tuple", "question_natural_language")
DIFFERENCES = ("Official VQA model mPLUG-large, one question per call; here the configured VLM answers all "
               "questions of an image (crop) in one JSON request, without the prompt. The official loader "
               "skips the CSV's first data row; this one keeps it. Crops without a usable answer are dropped; "
               "an image with none abstains.")


def load_questions(path: Path) -> dict[str, list[dict[str, Any]]]:
    """``dpg_bench.csv`` → {item_id: [{qid, parents, tuple, question}] in file order}."""
    f = str(path)
    if not path.is_file():
        raise InputError("DPG-Bench question file (dpg_bench.csv) not found", file=f)
    out: dict[str, list[dict[str, Any]]] = {}
    with path.open(encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise InputError(f"not a DPG-Bench question file: no column(s) {missing}", file=f, field=missing[0])
        for n, row in enumerate(reader, 1):
            iid = str(base.require(row, "item_id", file=f, record=n)).strip()
            try:
                qid = int(str(base.require(row, "proposition_id", file=f, record=n)).strip())
                parents = [int(d.strip()) for d in str(base.require(row, "dependency", file=f, record=n)).split(",")]
            except ValueError:
                raise InputError("proposition_id and dependency must be integers (dependency comma-separated)",
                                 file=f, record=n, field="dependency") from None
            out.setdefault(iid, []).append({"qid": qid, "parents": parents, "tuple": row.get("tuple") or "",
                                            "question": str(base.require(row, "question_natural_language",
                                                                         file=f, record=n)).strip()})
    for iid, qs in out.items():
        known = {q["qid"] for q in qs}
        for q in qs:
            bad = [p for p in q["parents"] if p != 0 and p not in known]
            if bad:
                raise InputError(f"item '{iid}': question {q['qid']} depends on unknown question(s) {bad}",
                                 file=f, field="dependency")
    return out


def masked_scores(questions: list[dict[str, Any]], yes: dict[int, bool]) -> dict[int, float]:
    """DPG-Bench's dependency masking: 1 for "yes", then (in question order) 0 for any question with a
    parent scoring 0 (parent id 0 means none)."""
    scores = {q["qid"]: float(bool(yes[q["qid"]])) for q in questions}
    for q in questions:
        if any(p != 0 and scores[p] == 0 for p in q["parents"]):
            scores[q["qid"]] = 0.0
    return scores


def crop_score(questions: list[dict[str, Any]], yes: dict[int, bool]) -> float:
    s = masked_scores(questions, yes)
    return sum(s.values()) / len(s)


def category(tuple_text: str) -> tuple[str, str]:
    """(L1, L2) category of a question's tuple, as the official summary reads them."""
    l2 = tuple_text.split("(")[0].strip()
    return l2.split("-")[0].strip(), l2


def crops(image: Any, pic_num: int) -> list[Any]:
    """The ``pic_num`` crops of a 2x2 grid (resolution = half the width), or the image for 1."""
    if pic_num == 1:
        return [image]
    r = image.width // 2
    boxes = [(0, 0, r, r), (r, 0, 2 * r, r), (0, r, r, 2 * r), (r, r, 2 * r, 2 * r)]
    return [image.crop(b) for b in boxes[:pic_num]]


def run(client: Any, inputs: base.ProtocolInputs, *, judge_name: str, simulated: bool = False,
        n_boot: int = 2000, seed: int = 0):
    from arr_core.bench.results import rate_ci

    pic_num = int(inputs.options.get("pic_num") or 1)
    if pic_num not in (1, 2, 3, 4):
        raise InputError(f"--pic-num must be 1-4, got {pic_num}", field="pic_num")
    questions = load_questions(inputs.prompts)
    items = list(questions.items())[: inputs.limit] if inputs.limit else list(questions.items())
    jobs = []
    for iid, qs in items:
        path = base.find_image(inputs.images, iid, file=str(inputs.prompts), record=iid, what="generated image")
        for k in range(pic_num):
            jobs.append((iid, k, partial(_crop_request, path, k, pic_num, [q["question"] for q in qs])))
    resps, counter = base.ask(client, [j[2] for j in jobs], "dpg", max_failure_rate=inputs.max_failure_rate)
    per_crop: dict[str, list[tuple[int, dict[int, bool]]]] = {}
    for (iid, k, _), resp in zip(jobs, resps, strict=True):
        qs = questions[iid]
        got = base.outcome(resp, lambda o, n=len(qs): _answers(o, n))
        if got.parsed is not None:
            per_crop.setdefault(iid, []).append((k, {q["qid"]: a for q, a in zip(qs, got.parsed["yes"], strict=True)}))
    image_scores, cats_l1, cats_l2, per_item = [], {}, {}, []
    for iid, qs in items:
        answered = per_crop.get(iid, [])
        if not answered:
            per_item.append({"item_id": iid, "abstained": "no crop answered"})
            continue
        s = sum(crop_score(qs, yes) for _, yes in answered) / len(answered)
        image_scores.append(s)
        last = max(answered)[1]  # the official category tally reads the last crop's unmasked scores
        for q in qs:
            l1, l2 = category(q["tuple"])
            cats_l1.setdefault(l1, []).append(float(last[q["qid"]]))
            cats_l2.setdefault(l2, []).append(float(last[q["qid"]]))
        per_item.append({"item_id": iid, "score": s, "crops": len(answered)})
    overall = rate_ci(image_scores, n_boot=n_boot, seed=seed)
    overall = {k: 100 * v for k, v in overall.items()}
    rows = [["DPG-Bench score", overall, len(image_scores)]]
    rows += [[f"L1 {c}", 100 * base.mean_or_nan(v), len(v)] for c, v in sorted(cats_l1.items())]
    rows += [[f"L2 {c}", 100 * base.mean_or_nan(v), len(v)] for c, v in sorted(cats_l2.items())]
    summary = {"dpg/score": overall["point"], **{f"dpg/L1/{c}": 100 * base.mean_or_nan(v) for c, v in cats_l1.items()}}
    table = ("DPG-Bench (0-100)", ["what", "score", "images / questions"], rows,
             f"pic_num {pic_num}; score: mean over images of the dependency-masked question accuracy, 95% "
             "bootstrap interval over images; categories: unmasked question scores.")
    return base.build_result(NAME, VERSION, base.Summary([table], summary, {"items": per_item}),
                             inputs=inputs, judge_name=judge_name, simulated=simulated, counter=counter,
                             abstained=len(items) - len(image_scores), items=len(image_scores),
                             differences=DIFFERENCES, client=client)


def _crop_request(path: Path, k: int, pic_num: int, questions: list[str]):
    """The yes/no request of crop ``k`` (built when asked: images are opened lazily)."""
    from PIL import Image

    from arr_core.prompts.templates import build_check

    with Image.open(path) as im:
        return build_check(crops(im.convert("RGB"), pic_num)[k], questions)


def _answers(obj: dict[str, Any], n: int) -> dict[str, Any] | None:
    got = base.yes_no_list(obj, n)
    return {"yes": [a == "yes" for a in got]} if got is not None else None
