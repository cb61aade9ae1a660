"""Loaders for public text-to-image and editing prompt sets, into one ``PromptItem`` shape.

Every loader takes a path the user passes (a file or the benchmark's folder); nothing here knows
where ``../shared/data`` is. Sources and their formats (each folder keeps its source's licence):

- GenEval (Ghosh et al., 2023; djghosh13/geneval, MIT): ``evaluation_metadata.jsonl`` lines
  ``{tag, include: [{class, count, color?, position?: [relation, index]}], exclude?, prompt}``.
  Yes/no questions are derived from the clauses for the VLM checker (GenEval itself uses a detector).
- DPG-Bench (Hu et al., 2024; TencentQQGYLab/ELLA, Apache-2.0): JSONL ``{item_id, prompt}`` or the
  ``prompts/`` folder of ``<item_id>.txt``. Its question file is not public here: no questions
  (``arr_core.bench.protocols.dpg`` reads ``dpg_bench.csv`` with its dependencies when you have it).
- T2I-CompBench++ (Huang et al., 2023/2025; MIT): one prompt per line, one file per category/split.
- TIIF-Bench (Wei et al., 2025): ``<split>_prompts/<type>_prompts.jsonl`` with
  ``{type, short_description, long_description}`` and, line-aligned, ``<split>_eval_prompts/
  <type>_eval_prompts.jsonl`` with ``{type, yn_question_list, yn_answer_list}``.
- UniGenBench(++) (Wang et al., 2025; CC BY 4.0): CSV ``index, prompt_<lang>, sub_dims_<lang>`` where
  ``sub_dims`` is JSON with "Testpoints" and "Testpoint Description"; one yes/no question per
  checkpoint is derived from each (testpoint, description) pair. The official evaluation asks a VLM
  to judge each testpoint; asking a yes/no question per testpoint is our simplification (the official
  prompt and aggregation: ``arr_core.bench.protocols.unigenbench``).
- PartiPrompts (Yu et al., 2022; Apache-2.0): TSV ``Prompt, Category, Challenge, Note``.
- DrawBench (Saharia et al., 2022; via kennymckormick/DrawBench-Glance): CSV ``Prompt, Category``;
  when the ``glance_images/<Category>/<n>/`` folder sits next to it, the reference images of each
  prompt are attached in ``meta["images"]`` ({model: path}).
- ImgEdit (Ye et al., 2025; PKU-YuanGroup/ImgEdit): JSON ``{key: {id, prompt, edit_type?}}``
  (``basic_edit.json``, ``UGE_edit.json``). Source images are not included: ``meta["source_id"]``
  names the image the user must supply.
- Step1X-Edit examples (stepfun-ai/Step1X-Edit, Apache-2.0): ``inputs/prompt_<lang>.json``
  ``{file: instruction}`` with ``inputs/<file>`` and ``outputs_<lang>_1024/<file>``.
- Plain text (one prompt per line) and this project's own JSONL of ``PromptItem.to_dict()``.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from arr_core.errors import InputError

YES_NO = ("yes", "no")


@dataclass
class PromptItem:
    """One benchmark prompt.

    ``questions`` are yes/no checkpoint questions (may be empty); ``answers`` holds the expected
    answer ("yes"/"no") of each question, same length as ``questions``. ``meta`` keeps the source's
    own fields (GenEval clauses, UniGenBench sub-dimensions, image paths, ...).
    """

    id: str
    prompt: str
    category: str
    questions: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    answers: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not isinstance(self.prompt, str) or not self.prompt.strip():
            raise ValueError(f"prompt item '{self.id}': field 'prompt' must be a non-empty string")
        if self.questions and not self.answers:
            self.answers = ["yes"] * len(self.questions)
        if len(self.answers) != len(self.questions):
            raise ValueError(f"prompt item '{self.id}': {len(self.questions)} questions but "
                             f"{len(self.answers)} expected answers")
        bad = [a for a in self.answers if a not in YES_NO]
        if bad:
            raise ValueError(f"prompt item '{self.id}': field 'answers' must hold 'yes'/'no', got {bad[:3]}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PromptItem:
        return cls(id=str(d["id"]), prompt=d["prompt"], category=str(d.get("category", "")),
                   questions=list(d.get("questions", [])), meta=dict(d.get("meta", {})),
                   answers=list(d.get("answers", [])))


# ---------------------------------------------------------------------------------------------
# helpers


def _read_jsonl(path: Path) -> list[tuple[int, dict]]:
    """(1-based line number, object) for every non-blank line; InputError names the bad line."""
    rows = []
    with path.open(encoding="utf-8") as f:
        for ln, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"invalid JSON ({e.msg})", file=str(path), record=ln) from None
            if not isinstance(obj, dict):
                raise InputError("each line must be a JSON object", file=str(path), record=ln)
            rows.append((ln, obj))
    return rows


def _require(obj: dict, key: str, path: Path, record: int | str) -> Any:
    if key not in obj or obj[key] in (None, ""):
        raise InputError(f"missing required field '{key}'", file=str(path),
                         record=record if isinstance(record, int) else None, field=key)
    return obj[key]


def _exists(path: str | Path, what: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise InputError(f"{what} not found; pass the path of the file or its folder", file=str(p))
    return p


_IRREGULAR = {"person": "people", "mouse": "mice", "sheep": "sheep", "skis": "skis",
              "scissors": "scissors", "knife": "knives", "bus": "buses", "glass": "glasses"}


def plural(noun: str) -> str:
    """English plural of a (possibly multi-word) class name: 'wine glass' → 'wine glasses'."""
    head, _, last = noun.rpartition(" ")
    if last in _IRREGULAR:
        p = _IRREGULAR[last]
    elif last.endswith("ss") or re.search(r"(s|x|ch|sh)$", last):
        p = last + "es"
    elif re.search(r"[^aeiou]y$", last):
        p = last[:-1] + "ies"
    else:
        p = last + "s"
    return f"{head} {p}" if head else p


_NUMBER = {0: "zero", 1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven",
           8: "eight", 9: "nine", 10: "ten"}


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def geneval_questions(record: dict) -> list[str]:
    """Yes/no questions (expected answer: yes) that together say a GenEval record is satisfied.

    One question per include clause (count, with colour when given; "exactly" when an exclude
    clause of the same class caps the count at count + 1), one per position constraint, and one
    per remaining exclude clause. Used by the VLM checker for real images.
    """
    include = list(record.get("include", []))
    exclude = list(record.get("exclude", []))
    caps = {e["class"]: int(e["count"]) for e in exclude}
    used: set[str] = set()
    qs: list[str] = []
    for c in include:
        cls, n = c["class"], int(c.get("count", 1))
        colour = f"{c['color']} " if c.get("color") else ""
        exact = caps.get(cls) == n + 1
        if exact:
            used.add(cls)
        if n == 1 and not exact:
            noun = f"{colour}{cls}"
            qs.append(f"Is there {_article(noun)} {noun} in the image?")
        else:
            qty = f"exactly {_NUMBER.get(n, str(n))}" if exact else f"at least {_NUMBER.get(n, str(n))}"
            noun = f"{colour}{plural(cls) if n != 1 else cls}"
            qs.append(f"Are there {qty} {noun} in the image?" if n != 1
                      else f"Is there exactly one {noun} in the image?")
    for c in include:
        pos = c.get("position")
        if pos:
            relation, idx = pos[0], int(pos[1])
            other = include[idx]
            qs.append(f"Is the {c['class']} {relation} the {other['class']}?")
    for e in exclude:
        if e["class"] in used:
            continue
        k = int(e["count"])
        if k == 1:
            qs.append(f"Is the image free of any {e['class']}?")
        else:
            qs.append(f"Are there fewer than {_NUMBER.get(k, str(k))} {plural(e['class'])} in the image?")
    return qs


def _check_geneval_record(obj: dict, path: Path, ln: int) -> None:
    for key in ("tag", "include", "prompt"):
        _require(obj, key, path, ln)
    if not isinstance(obj["include"], list) or not obj["include"]:
        raise InputError("'include' must be a non-empty list of clauses", file=str(path), record=ln,
                         field="include")
    for i, c in enumerate(list(obj["include"]) + list(obj.get("exclude", []))):
        if not isinstance(c, dict) or "class" not in c:
            raise InputError(f"clause {i} must be an object with 'class'", file=str(path), record=ln,
                             field="include")
        if not isinstance(c.get("count", 1), int) or c.get("count", 1) < 1:
            raise InputError(f"clause {i}: 'count' must be a positive integer", file=str(path),
                             record=ln, field="count")
        pos = c.get("position")
        if pos is not None and (not isinstance(pos, list) or len(pos) != 2
                                or not isinstance(pos[1], int) or not 0 <= pos[1] < len(obj["include"])):
            raise InputError(f"clause {i}: 'position' must be [relation, include-index]",
                             file=str(path), record=ln, field="position")


# ---------------------------------------------------------------------------------------------
# loaders


def load_geneval(path: str | Path) -> list[PromptItem]:
    """GenEval ``evaluation_metadata.jsonl`` (or its folder) → items; category = tag.

    ``meta`` holds the full GenEval record (``include``, ``exclude``, ``tag``) so a checker can
    rebuild it; ids are ``geneval-<0-based line index>`` (4 digits), matching GenEval's output
    folder numbering.
    """
    p = _exists(path, "GenEval metadata")
    if p.is_dir():
        p = _exists(p / "evaluation_metadata.jsonl", "GenEval evaluation_metadata.jsonl")
    items = []
    for i, (ln, obj) in enumerate(_read_jsonl(p)):
        _check_geneval_record(obj, p, ln)
        record = {k: obj[k] for k in ("tag", "include", "exclude", "prompt") if k in obj}
        items.append(PromptItem(id=f"geneval-{i:04d}", prompt=obj["prompt"], category=obj["tag"],
                                questions=geneval_questions(obj), meta={"geneval": record}))
    return items


def _dpg_category(item_id: str) -> str:
    m = re.match(r"([A-Za-z]+)", item_id)
    return m.group(1) if m else "dpg"


def load_dpg_bench(path: str | Path) -> list[PromptItem]:
    """DPG-Bench prompts: JSONL ``{item_id, prompt}`` or a folder of ``<item_id>.txt`` files.

    Category = the alphabetic prefix of the item id (``partiprompts``, ``COCOval``, ``whoops``, ...;
    purely numeric ids → ``dpg``). No questions: DPG-Bench's question file is not available here.
    """
    p = _exists(path, "DPG-Bench prompts")
    rows: list[tuple[str, str]] = []
    if p.is_dir():
        jsonl = p / "dpg_bench_prompts.jsonl"
        if jsonl.exists():
            p = jsonl
        else:
            folder = p / "prompts" if (p / "prompts").is_dir() else p
            for f in sorted(folder.glob("*.txt")):
                rows.append((f.stem, f.read_text(encoding="utf-8").strip()))
            if not rows:
                raise InputError("no *.txt prompt files in the folder", file=str(folder))
    if not rows:
        for ln, obj in _read_jsonl(p):
            rows.append((str(_require(obj, "item_id", p, ln)), _require(obj, "prompt", p, ln)))
    return [PromptItem(id=f"dpg-{iid}", prompt=text, category=_dpg_category(iid), meta={"item_id": iid})
            for iid, text in rows]


def _read_lines(path: Path) -> list[str]:
    return [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]


def load_t2i_compbench(path: str | Path, *, split: str = "val") -> list[PromptItem]:
    """T2I-CompBench++ prompt lists.

    ``path`` is one ``.txt`` file (category = file stem) or the ``dataset`` folder, from which the
    files ``<category>_<split>.txt`` are read (``split``: "val" — the evaluation split —, "train",
    or "full" for the un-suffixed lists).
    """
    p = _exists(path, "T2I-CompBench prompt list")
    if p.is_file():
        files = [p]
    else:
        folder = p / "dataset" if (p / "dataset").is_dir() else p
        if split == "full":
            files = [f for f in sorted(folder.glob("*.txt"))
                     if not re.search(r"_(train|val)(_|$)", f.stem) and f.stem != "new_objects"]
        elif split in ("val", "train"):
            files = sorted(folder.glob(f"*_{split}.txt"))
        else:
            raise ValueError(f"split must be 'val', 'train' or 'full', got {split!r}")
        if not files:
            raise InputError(f"no T2I-CompBench files for split '{split}'", file=str(folder))
    items = []
    for f in files:
        cat = f.stem if p.is_file() else re.sub(r"_(train|val)$", "", f.stem)
        for i, text in enumerate(_read_lines(f)):
            items.append(PromptItem(id=f"t2icb-{f.stem}-{i:04d}", prompt=text, category=cat,
                                    meta={"file": f.name, "line": i + 1}))
    return items


def _tiif_pairs(path: Path, split: str) -> list[tuple[Path, Path]]:
    if path.is_file():
        name = path.name.replace("_eval_prompts.jsonl", "_prompts.jsonl")
        stem = name[: -len("_prompts.jsonl")] if name.endswith("_prompts.jsonl") else None
        if stem is None:
            raise InputError("TIIF-Bench files are named '<type>_prompts.jsonl'", file=str(path))
        prompt_dir = path.parent if not path.name.endswith("_eval_prompts.jsonl") else \
            path.parent.parent / path.parent.name.replace("_eval_prompts", "_prompts")
        eval_dir = prompt_dir.parent / prompt_dir.name.replace("_prompts", "_eval_prompts")
        return [(prompt_dir / f"{stem}_prompts.jsonl", eval_dir / f"{stem}_eval_prompts.jsonl")]
    prompt_dir, eval_dir = path / f"{split}_prompts", path / f"{split}_eval_prompts"
    if not prompt_dir.is_dir():
        raise InputError(f"no '{split}_prompts' folder (split must be 'test' or 'testmini')", file=str(path))
    pairs = []
    for f in sorted(prompt_dir.glob("*_prompts.jsonl")):
        stem = f.name[: -len("_prompts.jsonl")]
        pairs.append((f, eval_dir / f"{stem}_eval_prompts.jsonl"))
    return pairs


def load_tiif_bench(path: str | Path, *, split: str = "testmini", description: str = "short"
                    ) -> list[PromptItem]:
    """TIIF-Bench prompts with their yes/no question lists (expected answers kept per question).

    ``path``: the TIIF-Bench folder (reads ``<split>_prompts`` + ``<split>_eval_prompts``) or one
    ``<type>_prompts.jsonl`` file (its eval file is found by name). ``description``: "short" or
    "long" prompt variant. Prompt and question files are line-aligned; a length mismatch raises.
    """
    if description not in ("short", "long"):
        raise ValueError(f"description must be 'short' or 'long', got {description!r}")
    p = _exists(path, "TIIF-Bench prompts")
    items = []
    for pf, ef in _tiif_pairs(p, split):
        _exists(ef, "TIIF-Bench eval (question) file")
        prompts, evals = _read_jsonl(pf), _read_jsonl(ef)
        if len(prompts) != len(evals):
            raise InputError(f"{len(prompts)} prompts but {len(evals)} question rows in {ef.name}",
                             file=str(pf))
        for i, ((ln, po), (eln, eo)) in enumerate(zip(prompts, evals, strict=True)):
            text = _require(po, f"{description}_description", pf, ln)
            qs = [q.strip() for q in _require(eo, "yn_question_list", ef, eln)]
            ans = [str(a).strip().lower() for a in _require(eo, "yn_answer_list", ef, eln)]
            if len(qs) != len(ans):
                raise InputError(f"{len(qs)} questions but {len(ans)} answers", file=str(ef), record=eln,
                                 field="yn_answer_list")
            bad = [a for a in ans if a not in YES_NO]
            if bad:
                raise InputError(f"answers must be yes/no, got {bad[:3]}", file=str(ef), record=eln,
                                 field="yn_answer_list")
            meta = {"type": po.get("type", ""), "file": pf.name, "line": ln, "index": i,
                    "other_description": po.get("long_description" if description == "short"
                                                else "short_description", "")}
            if "corrspond_idx" in eo:
                meta["corrspond_idx"] = eo["corrspond_idx"]
            stem = pf.name[: -len("_prompts.jsonl")]
            items.append(PromptItem(id=f"tiif-{stem}-{i:03d}", prompt=text, category=str(po.get("type", stem)),
                                    questions=qs, answers=ans, meta=meta))
    return items


_UNIGEN_KEYS = {
    "en": ("prompt_en", "sub_dims_en", "Primary Categories", "Testpoints", "Testpoint Description"),
    "zh": ("prompt_zh", "sub_dims_zh", "一级垂类", "考点", "考点对应描述"),
}


def unigenbench_question(testpoint: str, description: str, lang: str = "en") -> str:
    """One yes/no question for a UniGenBench checkpoint (our wording, not the benchmark's)."""
    if lang == "zh":
        return f"图像是否正确体现了「{description}」（考点：{testpoint}）？"
    return f"Does the image correctly show {description} (checkpoint: {testpoint})?"


def load_unigenbench(path: str | Path) -> list[PromptItem]:
    """UniGenBench test CSV (``test_prompts_{en,zh}[_long].csv``) → items with one question per
    checkpoint; category = the primary category. The language is read from the header."""
    p = _exists(path, "UniGenBench CSV")
    with p.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        lang = "en" if "prompt_en" in header else "zh" if "prompt_zh" in header else None
        if lang is None:
            raise InputError(f"header must have 'prompt_en' or 'prompt_zh', got {header}", file=str(p))
        pk, sk, cat_k, tp_k, desc_k = _UNIGEN_KEYS[lang]
        items = []
        for row_i, row in enumerate(reader, 1):
            text = _require(row, pk, p, row_i)
            try:
                dims = json.loads(_require(row, sk, p, row_i))
            except json.JSONDecodeError as e:
                raise InputError(f"invalid JSON ({e.msg})", file=str(p), record=row_i, field=sk) from None
            tps, descs = list(dims.get(tp_k, [])), list(dims.get(desc_k, []))
            if len(tps) != len(descs):
                raise InputError(f"{len(tps)} testpoints but {len(descs)} descriptions", file=str(p),
                                 record=row_i, field=sk)
            qs = [unigenbench_question(t, d, lang) for t, d in zip(tps, descs, strict=True)]
            items.append(PromptItem(id=f"unigen-{lang}-{row.get('index', row_i - 1)}", prompt=text,
                                    category=str(dims.get(cat_k, "")), questions=qs,
                                    meta={"sub_dims": dims, "lang": lang, "testpoints": tps}))
    return items


def load_partiprompts(path: str | Path) -> list[PromptItem]:
    """PartiPrompts TSV (``Prompt, Category, Challenge, Note``); category = Category."""
    p = _exists(path, "PartiPrompts TSV")
    if p.is_dir():
        p = _exists(p / "PartiPrompts.tsv", "PartiPrompts.tsv")
    with p.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t")
        items = []
        for i, row in enumerate(reader):
            text = _require(row, "Prompt", p, i + 1)
            items.append(PromptItem(id=f"parti-{i:04d}", prompt=text.strip(), category=row.get("Category", ""),
                                    meta={"challenge": row.get("Challenge", ""), "note": row.get("Note", "")}))
    return items


def _drawbench_images(folder: Path) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for pt in sorted(folder.glob("*/*/prompt.txt")):
        text = pt.read_text(encoding="utf-8").strip()
        out[text] = {re.sub(r"_seed_\d+$", "", img.stem): str(img)
                     for img in sorted(pt.parent.iterdir()) if img.suffix.lower() in (".jpg", ".png")}
    return out


def load_drawbench(path: str | Path) -> list[PromptItem]:
    """DrawBench CSV (``Prompt, Category``, BOM tolerated) or its folder; reference images from a
    sibling ``glance_images`` folder are attached as ``meta["images"]`` ({model: path})."""
    p = _exists(path, "DrawBench CSV")
    if p.is_dir():
        p = _exists(p / "drawbench_prompts.csv", "drawbench_prompts.csv")
    glance = p.parent / "glance_images"
    images = _drawbench_images(glance) if glance.is_dir() else {}
    with p.open(encoding="utf-8-sig", newline="") as f:
        items = []
        for i, row in enumerate(csv.DictReader(f)):
            text = _require(row, "Prompt", p, i + 1).strip()
            meta: dict[str, Any] = {}
            if text in images:
                meta["images"] = images[text]
            items.append(PromptItem(id=f"drawbench-{i:03d}", prompt=text, category=row.get("Category", ""),
                                    meta=meta))
    return items


def load_imgedit(path: str | Path) -> list[PromptItem]:
    """ImgEdit JSON ``{key: {id, prompt, edit_type?}}`` (basic or UGE set) → edit instructions;
    category = edit_type ("uge" when absent); ``meta["source_id"]`` names the source image."""
    p = _exists(path, "ImgEdit JSON")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise InputError(f"invalid JSON ({e.msg})", file=str(p)) from None
    if not isinstance(data, dict):
        raise InputError("expected an object {key: {id, prompt, edit_type}}", file=str(p))
    items = []
    for key, obj in data.items():
        if not isinstance(obj, dict):
            raise InputError(f"entry '{key}' must be an object", file=str(p))
        for k in ("id", "prompt"):
            if not obj.get(k):
                raise InputError(f"entry '{key}' lacks field '{k}'", file=str(p), field=k)
        items.append(PromptItem(id=f"imgedit-{key}", prompt=obj["prompt"], category=obj.get("edit_type", "uge"),
                                meta={"source_id": obj["id"], "key": key}))
    return items


def load_step1x_edit_examples(path: str | Path, *, lang: str = "en") -> list[PromptItem]:
    """Step1X-Edit's example folder: instruction per input image, with input and output paths in
    ``meta["source"]`` / ``meta["edited"]`` (real edits for the judge-based edit win rate)."""
    p = _exists(path, "Step1X-Edit examples folder")
    pj = _exists(p / "inputs" / f"prompt_{lang}.json", f"Step1X-Edit prompt_{lang}.json")
    data = json.loads(pj.read_text(encoding="utf-8"))
    items = []
    for name, instruction in sorted(data.items()):
        src, out = p / "inputs" / name, p / f"outputs_{lang}_1024" / name
        meta = {"source": str(_exists(src, "Step1X-Edit input image"))}
        if out.exists():
            meta["edited"] = str(out)
        items.append(PromptItem(id=f"step1x-{Path(name).stem}", prompt=instruction, category="edit", meta=meta))
    return items


def load_text_prompts(path: str | Path) -> list[PromptItem]:
    """One prompt per non-blank line; category empty."""
    p = _exists(path, "prompt list")
    return [PromptItem(id=f"{p.stem}-{i:04d}", prompt=t, category="") for i, t in enumerate(_read_lines(p))]


def load_prompt_items(path: str | Path) -> list[PromptItem]:
    """This project's JSONL of ``PromptItem.to_dict()`` lines."""
    p = _exists(path, "prompt items JSONL")
    items = []
    for ln, obj in _read_jsonl(p):
        try:
            items.append(PromptItem.from_dict(obj))
        except (KeyError, ValueError, TypeError) as e:
            raise InputError(f"not a prompt item: {e}", file=str(p), record=ln) from None
    return items


def write_prompt_items(items: Iterable[PromptItem], path: str | Path) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with p.open("w", encoding="utf-8") as f:
        for it in items:
            f.write(json.dumps(it.to_dict(), ensure_ascii=False) + "\n")
    return p


LOADERS = {
    "geneval": load_geneval, "dpg_bench": load_dpg_bench, "t2i_compbench": load_t2i_compbench,
    "tiif_bench": load_tiif_bench, "unigenbench": load_unigenbench, "partiprompts": load_partiprompts,
    "drawbench": load_drawbench, "imgedit": load_imgedit, "step1x_edit": load_step1x_edit_examples,
    "text": load_text_prompts, "items": load_prompt_items,
}


def detect_format(path: str | Path) -> str:
    """Guess the prompt-set format from the path's name and first line (see ``LOADERS``)."""
    p = _exists(path, "prompt set")
    name = p.name.lower()
    if p.is_dir():
        if (p / "evaluation_metadata.jsonl").exists():
            return "geneval"
        if (p / "dpg_bench_prompts.jsonl").exists() or (p / "prompts").is_dir():
            return "dpg_bench"
        if (p / "testmini_prompts").is_dir() or (p / "test_prompts").is_dir():
            return "tiif_bench"
        if (p / "drawbench_prompts.csv").exists():
            return "drawbench"
        if (p / "PartiPrompts.tsv").exists():
            return "partiprompts"
        if (p / "inputs" / "prompt_en.json").exists():
            return "step1x_edit"
        if (p / "dataset").is_dir():
            return "t2i_compbench"
        raise InputError("cannot tell which prompt set this folder holds; pass --format", file=str(p))
    if name.endswith(".tsv"):
        return "partiprompts"
    if name.endswith(".csv"):
        head = p.open(encoding="utf-8-sig").readline()
        return "unigenbench" if "prompt_en" in head or "prompt_zh" in head else "drawbench"
    if name.endswith(".json"):
        return "imgedit"
    if name.endswith(".jsonl"):
        first = next((obj for _, obj in _read_jsonl(p)), {})
        if "include" in first and "tag" in first:
            return "geneval"
        if "item_id" in first:
            return "dpg_bench"
        if "short_description" in first:
            return "tiif_bench"
        if "id" in first and "prompt" in first:
            return "items"
        raise InputError("unrecognised JSONL prompt file", file=str(p))
    return "text"


def load_prompt_set(path: str | Path, fmt: str | None = None, **kwargs: Any) -> list[PromptItem]:
    """Load any supported prompt set; ``fmt`` is a key of ``LOADERS`` or None to detect it."""
    fmt = fmt or detect_format(path)
    if fmt not in LOADERS:
        raise ValueError(f"unknown prompt-set format {fmt!r}; choose one of {sorted(LOADERS)}")
    return LOADERS[fmt](path, **kwargs)
