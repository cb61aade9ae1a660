"""GEdit-Bench (Liu et al., 2025, Step1X-Edit) with its VIEScore protocol.

Source: stepfun-ai/Step1X-Edit @ 570eba6, ``GEdit-Bench/`` (Apache-2.0):

- prompts: ``viescore/vie_prompts.py`` — ``_context_no_delimit`` (line 3),
  ``_prompts_0shot_two_image_edit_rule`` (line 245), ``_prompts_0shot_tie_rule_SC`` (line 326),
  ``_prompts_0shot_rule_PQ`` (line 359), joined with newlines as ``viescore/__init__.py`` does for
  task ``tie`` (lines 45-47); the text comes first, then the images (``mllm_tools/openai.py``
  ``prepare_prompt``): source and edited image for SC, the edited image alone for PQ (line 66);
- scores (``viescore/__init__.py`` lines 92-94): SC = min(editing success, over-editing),
  PQ = min(naturalness, artifacts), both 0-10; overall O = sqrt(SC·PQ) per sample;
- aggregation (``calculate_statistics.py``): per task group and instruction language, the means of
  SC, PQ and O (O from each sample, line 56); the headline numbers are the means over the 11 groups
  (lines 84-116); the same again for samples with ``Intersection_exist`` (line 61);
- inputs (``test_gedit_score.py`` lines 25-34): the edited image ``fullset/<task_type>/<lang>/<key>.png``
  and the source ``<key>_SRCIMG.png`` next to it; the edited image is resized to the source's size.

Metadata: the Hugging Face dataset ``stepfun-ai/GEdit-Bench`` (Parquet; fields ``key``, ``task_type``,
``instruction``, ``instruction_language``, ``Intersection_exist``, ``input_image``) or the same fields as
JSONL/JSON. The source image is ``<key>_SRCIMG.png`` when present, else the record's ``input_image``
(``{bytes, path}`` struct or bytes).

Differences from the official run: the judge is whatever VLM is configured (official: GPT-4.1 or
Qwen2.5-VL-72B); temperature 0; an answer that cannot be parsed after the client's re-asks abstains and
is left out (VIEScore's ``mllm_output_to_dict(give_up_parsing=True)`` draws a random score instead);
groups without samples are left out of the group mean (and listed) instead of producing NaN.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from arr_core.bench.protocols import base
from arr_core.errors import InputError

NAME = "gedit"
VERSION = "gedit-viescore-v1"
GROUPS = ("background_change", "color_alter", "material_alter", "motion_change", "ps_human", "style_change",
          "subject-add", "subject-remove", "subject-replace", "text_change", "tone_transfer")

# VIEScore prompts for task "tie", verbatim from GEdit-Bench/viescore/vie_prompts.py (Apache-2.0).
CONTEXT = ('You are a professional digital artist. You will have to evaluate the effectiveness of the '
           'AI-generated image(s) based on given rules.\nAll the input images are AI-generated. All human in '
           'the images are AI-generated too. so you need not worry about the privacy confidentials.\n\nYou will '
           'have to give your output in this way (Keep your reasoning concise and short.):\n{\n"score" : [...],\n'
           '"reasoning" : "..."\n}')
TWO_IMAGE_EDIT_RULE = ('RULES:\n\nTwo images will be provided: The first being the original AI-generated image '
                       'and the second being an edited version of the first.\nThe objective is to evaluate how '
                       'successfully the editing instruction has been executed in the second image.\n\nNote that '
                       'sometimes the two images might look identical due to the failure of image edit.\n')
TIE_RULE_SC = ("\nFrom scale 0 to 10: \nA score from 0 to 10 will be given based on the success of the editing. "
               "(0 indicates that the scene in the edited image does not follow the editing instruction at all. "
               "10 indicates that the scene in the edited image follow the editing instruction text perfectly.)\n"
               "A second score from 0 to 10 will rate the degree of overediting in the second image. (0 indicates "
               "that the scene in the edited image is completely different from the original. 10 indicates that "
               "the edited image can be recognized as a minimal edited yet effective version of original.)\nPut "
               "the score in a list such that output score = [score1, score2], where 'score1' evaluates the "
               "editing success and 'score2' evaluates the degree of overediting.\n\nEditing instruction: "
               "<instruction>\n")
RULE_PQ = ("RULES:\n\nThe image is an AI-generated image.\nThe objective is to evaluate how successfully the image "
           "has been generated.\n\nFrom scale 0 to 10: \nA score from 0 to 10 will be given based on image "
           "naturalness. \n(\n    0 indicates that the scene in the image does not look natural at all or give a "
           "unnatural feeling such as wrong sense of distance, or wrong shadow, or wrong lighting. \n    10 "
           "indicates that the image looks natural.\n)\nA second score from 0 to 10 will rate the image artifacts. "
           "\n(\n    0 indicates that the image contains a large portion of distortion, or watermark, or scratches, "
           "or blurred faces, or unusual body parts, or subjects not harmonized. \n    10 indicates the image has "
           "no artifacts.\n)\nPut the score in a list such that output score = [naturalness, artifacts]\n")
SC_PROMPT = "\n".join([CONTEXT, TWO_IMAGE_EDIT_RULE, TIE_RULE_SC])
PQ_PROMPT = "\n".join([CONTEXT, RULE_PQ])

DIFFERENCES = ("Official judge GPT-4.1 (or Qwen2.5-VL-72B-Instruct-AWQ); here the configured VLM at "
               "temperature 0. VIEScore's prompts are sent verbatim, text before images; the answer is the "
               "official JSON {score, reasoning}, requested with a JSON schema where the endpoint supports it. "
               "Unparseable answers abstain (VIEScore guesses a random score after one retry). Group means "
               "cover the groups that have samples.")


def sample_scores(sc: list[float], pq: list[float]) -> tuple[float, float, float]:
    """VIEScore's per-sample scores: (SC, PQ, O) = (min SC list, min PQ list, sqrt(SC·PQ))."""
    s, p = min(sc), min(pq)
    return s, p, math.sqrt(s * p)


def aggregate(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """``calculate_statistics.py`` for rows ``{group, lang, sc, pq, intersection}`` (O computed per row).

    Returns ``{lang: {"groups": {group: (SC, PQ, O)}, "avg": (SC, PQ, O), "intersection": {...same}}}``;
    averages are over the groups that have samples."""
    out: dict[str, Any] = {}
    for lang in sorted({r["lang"] for r in rows}):
        block: dict[str, Any] = {}
        for subset, keep in (("all", lambda r: True), ("intersection", lambda r: bool(r["intersection"]))):
            groups: dict[str, tuple[float, float, float]] = {}
            for g in [*GROUPS, *sorted({r["group"] for r in rows} - set(GROUPS))]:
                sel = [r for r in rows if r["lang"] == lang and r["group"] == g and keep(r)]
                if sel:
                    groups[g] = (base.mean_or_nan([r["sc"] for r in sel]), base.mean_or_nan([r["pq"] for r in sel]),
                                 base.mean_or_nan([math.sqrt(r["sc"] * r["pq"]) for r in sel]))
            avg = tuple(base.mean_or_nan([v[i] for v in groups.values()]) for i in range(3))
            block[subset] = {"groups": groups, "avg": avg, "n": sum(1 for r in rows if r["lang"] == lang and keep(r))}
        out[lang] = block
    return out


def _score_list(obj: dict[str, Any]) -> list[float] | None:
    s = obj.get("score")
    s = s if isinstance(s, list) else [s]
    vals = [base.as_number(v, 0, 10) for v in s]
    return [float(v) for v in vals] if vals and all(v is not None for v in vals) else None


def _validator(n: int):
    def validate(obj: dict[str, Any]) -> str | None:
        vals = _score_list(obj)
        if vals is None or len(vals) != n:
            return f'"score" must be a list of {n} numbers from 0 to 10'
        return None
    return validate


def _schema(n: int) -> dict[str, Any]:
    return base.obj_schema({"score": base.int_list_schema(n, 0, 10), "reasoning": {"type": "string"}})


def sc_request(instruction: str, source: Any, edited: Any):
    from arr_core.vlm.messages import image_data_url, image_part, text_part

    parts = [text_part(SC_PROMPT.replace("<instruction>", instruction)),
             image_part(image_data_url(source)), image_part(image_data_url(edited))]
    return base.make_request(parts, kind="gedit-sc", version=VERSION, schema=_schema(2), validator=_validator(2),
                             required=("score",), max_tokens=512)


def pq_request(edited: Any):
    from arr_core.vlm.messages import image_data_url, image_part, text_part

    parts = [text_part(PQ_PROMPT), image_part(image_data_url(edited))]
    return base.make_request(parts, kind="gedit-pq", version=VERSION, schema=_schema(2), validator=_validator(2),
                             required=("score",), max_tokens=512)


def _source_ref(v: Any, file: str, record: int) -> bytes | str:
    """A record's ``input_image`` (``{bytes, path}`` struct or raw bytes) as bytes or a file path."""
    raw = v.get("bytes") if isinstance(v, dict) else v
    if isinstance(raw, (bytes, bytearray)) and raw:
        return bytes(raw)
    if isinstance(v, dict) and v.get("path") and Path(v["path"]).is_file():
        return str(v["path"])
    raise InputError("no source image: neither <key>_SRCIMG.png in the images folder nor image bytes in "
                     "'input_image'", file=file, record=record, field="input_image")


def images(rec: dict[str, Any]) -> tuple[Any, Any]:
    """(source, edited) PIL images of a record, the edited one resized to the source's size as
    ``test_gedit_score.py`` does; an unreadable file names the record and field."""
    from arr_core.data.images import ImageReadError, decode_rgb, read_bytes

    out = []
    for ref, what in ((rec["source"], "input_image"), (rec["edited_path"], "edited image")):
        try:
            out.append(decode_rgb(ref if isinstance(ref, bytes) else read_bytes(ref)))
        except (ImageReadError, OSError, ValueError) as e:
            raise InputError(f"unreadable image ({str(e)[:200]})", file=rec["file"], record=rec["record"],
                             field=what) from None
    return out[0], out[1].resize(out[0].size)


def _edit_folder(images_dir: Path, group: str, lang: str) -> Path:
    for root in (images_dir / "fullset", images_dir):
        if (root / group / lang).is_dir():
            return root / group / lang
    return images_dir / "fullset" / group / lang


FIELDS = frozenset({"key", "task_type", "instruction", "instruction_language", "Intersection_exist", "input_image"})


def load(inputs: base.ProtocolInputs) -> list[dict[str, Any]]:
    """Records in file order with the edited image's path and the source (a ``_SRCIMG.png`` path or the
    record's image bytes); ``options["language"]`` ("en", "cn" or "all") selects instruction languages.
    Parquet is read in batches, only the fields above (not ``input_image_raw``)."""
    from arr_core.data.formats import iter_rows

    lang_opt = str(inputs.options.get("language") or "en")
    f = str(inputs.prompts)
    if not inputs.prompts.is_file():
        raise InputError("GEdit-Bench metadata file not found (Parquet, JSONL or JSON with key, task_type, "
                         "instruction, instruction_language)", file=f)
    out = []
    for i, row in iter_rows(inputs.prompts, FIELDS):
        if not isinstance(row, dict):
            raise InputError("each record must be an object", file=f, record=i)
        lang = str(base.require(row, "instruction_language", file=f, record=i))
        if lang_opt != "all" and lang != lang_opt:
            continue
        key = str(base.require(row, "key", file=f, record=i))
        group = str(base.require(row, "task_type", file=f, record=i))
        instruction = str(base.require(row, "instruction", file=f, record=i))
        folder = _edit_folder(inputs.images, group, lang)
        edited_path = base.find_image(folder, key, file=f, record=i, what="edited image")
        src_path = folder / f"{key}_SRCIMG.png"
        source = str(src_path) if src_path.is_file() else _source_ref(row.get("input_image"), f, i)
        out.append({"key": key, "group": group, "lang": lang, "instruction": instruction, "record": i, "file": f,
                    "intersection": bool(row.get("Intersection_exist", False)), "source": source,
                    "edited_path": str(edited_path)})
        if inputs.limit and len(out) >= inputs.limit:
            break
    if not out:
        raise InputError(f"no GEdit-Bench records for language '{lang_opt}'", file=f, field="instruction_language")
    return out


def _requests(rec: dict[str, Any]) -> list[Any]:
    """The SC and PQ request builders of a record (built when asked)."""
    def sc():
        src, edited = images(rec)
        return sc_request(rec["instruction"], src, edited)

    def pq():
        return pq_request(images(rec)[1])

    return [sc, pq]


def run(client: Any, inputs: base.ProtocolInputs, *, judge_name: str, simulated: bool = False,
        n_boot: int = 2000, seed: int = 0):
    from arr_core.bench.generation import stratified_mean_ci

    recs = load(inputs)
    reqs = [r for rec in recs for r in _requests(rec)]
    resps, counter = base.ask(client, reqs, "gedit", max_failure_rate=inputs.max_failure_rate)
    rows, abstained, per_item = [], 0, []
    for k, rec in enumerate(recs):
        sc = base.outcome(resps[2 * k], _score_list_dict)
        pq = base.outcome(resps[2 * k + 1], _score_list_dict)
        if sc.parsed is None or pq.parsed is None:
            abstained += 1
            per_item.append({"key": rec["key"], "abstained": sc.error or pq.error})
            continue
        s, p, o = sample_scores(sc.parsed["score"], pq.parsed["score"])
        rows.append({"group": rec["group"], "lang": rec["lang"], "sc": s, "pq": p,
                     "intersection": rec["intersection"]})
        per_item.append({"key": rec["key"], "group": rec["group"], "lang": rec["lang"], "SC": s, "PQ": p, "O": o})
    agg = aggregate(rows)
    tables, summary = [], {}
    for lang, block in agg.items():
        for subset, res in block.items():
            trs = [[g, *v] for g, v in res["groups"].items()]
            by_group = {g: [math.sqrt(r["sc"] * r["pq"]) for r in rows if r["lang"] == lang and r["group"] == g
                            and (subset == "all" or r["intersection"])] for g in res["groups"]}
            ci = stratified_mean_ci(by_group, n_boot=n_boot, seed=seed)
            trs.append(["average over groups", *res["avg"]])
            missing = [g for g in GROUPS if g not in res["groups"]]
            note = (f"{res['n']} samples. Overall O 95% interval (bootstrap within groups): "
                    f"[{ci['lo']:.3f}, {ci['hi']:.3f}]." + (f" Groups without samples: {', '.join(missing)}."
                                                             if missing else ""))
            tables.append((f"GEdit-Bench {lang} ({subset}) — VIEScore 0-10", ["group", "SC", "PQ", "O"], trs, note))
            for name, v in zip(("SC", "PQ", "O"), res["avg"], strict=True):
                summary[f"gedit/{lang}/{subset}/{name}"] = v
    return base.build_result(NAME, VERSION, base.Summary(tables, summary, {"items": per_item}),
                             inputs=inputs, judge_name=judge_name, simulated=simulated, counter=counter,
                             abstained=abstained, items=len(rows), differences=DIFFERENCES, client=client)


def _score_list_dict(obj: dict[str, Any]) -> dict[str, Any] | None:
    vals = _score_list(obj)
    return {"score": vals} if vals else None
