"""Published preference-benchmark formats, each mapped to the project's record dicts.

One function per format turns the format's rows into the record dicts that
:func:`arr_core.data.dataset.scan_dataset` validates (``task``, ``prompt``, ``images``,
``source_image``, ``label_rank``, ``meta``), together with the source field each value came from, so
that an error names the format's own field (``jpg_0``, ``path2``, ``ranking``…). Ties become equal
ranks (kept with ``allow_ties``), more than two images become listwise ranks (competition ranking:
``1 + the number of images strictly preferred``), editing rows carry their source image.

Formats (sources, repository + file + line or dataset card, in docs/data.md "Benchmark formats"):

- ``hpdv3``: HPDv3 ``test.json`` (``prompt``, ``path1`` = preferred, ``path2``).
- ``mmrb2``: MM-RewardBench2 t2i / edit subsets, the released JSON (``{"pairs": […]}`` with
  ``prompt_content`` / ``response_a`` / ``response_b`` / ``chosen``) or its Hugging Face Parquet rows.
- ``editreward-bench``: EditReward-Bench Parquet (``instruction``, ``source_image``, ``candidate_1``,
  ``candidate_2``, ``ranking`` such as ``A>B``).
- ``pickapic``: Pick-a-Pic v1/v2 Parquet (``caption``, ``jpg_0``, ``jpg_1``, ``label_0``, ``label_1``).
- ``hpdv2``: HPDv2 ``test.json`` (``image_path`` + ``rank``) or ``train.json`` (``file_path`` +
  ``human_preference``), or the dataset script's rows (``image`` list).
- ``imagereward``: ImageReward's ``data/test.json`` (``generations`` + ``ranking``; also HPSv3's
  rank-wise evaluation format).
- ``imagerewarddb``: ImageRewardDB per-image rows (``prompt_id``, ``image``/``image_path``, ``rank``),
  grouped by prompt into one listwise record.
- ``arr``: the ARR reference format and the project's own (handled by ``dataset.py`` itself).

Large files are read row by row where the format allows: Parquet by record batches (only the columns
the format reads), JSONL by lines. JSON and YAML are parsed whole (bounded by
``dataset.MAX_TEXT_BYTES``). Messages never show image values (bytes, structs), only field names.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arr_core.errors import InputError

ARR = "arr"
PARQUET_BATCH_ROWS = 32  # rows per Parquet record batch (embedded images make rows large)

Rows = Iterable[tuple[int, dict[str, Any]]]


@dataclass
class Mapped:
    """One output of a format function: a record dict plus, in ``fields``, the source field of each
    canonical key (``images`` maps to one name per image); or a problem with source row ``index``."""

    index: int
    record: dict[str, Any] | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    problem: str | None = None
    column: str | None = None
    fatal: bool = True


@dataclass(frozen=True)
class Format:
    name: str
    title: str
    signatures: tuple[frozenset[str], ...]  # any one, fully present in a row's keys, identifies the format
    columns: frozenset[str]  # every field the function reads (Parquet reads only these)
    convert: Callable[[Rows], Iterator[Mapped]] | None  # None: the ARR reference / project format

    def matches(self, keys: set[str]) -> bool:
        return any(sig <= keys for sig in self.signatures)


def _problem(i: int, message: str, column: str | None, fatal: bool = True) -> Mapped:
    return Mapped(i, problem=message, column=column, fatal=fatal)


def _shown(value: Any) -> str:
    """A value for a message: scalars and short lists of scalars as written, anything else (image bytes,
    structs) by type only."""
    if value is None or isinstance(value, (bool, int, float)):
        return repr(value)
    if isinstance(value, str):
        return repr(value[:40] + ("…" if len(value) > 40 else ""))
    if isinstance(value, (list, tuple)) and len(value) <= 12 and all(
            v is None or isinstance(v, (bool, int, float)) for v in value):
        return repr(list(value))
    return type(value).__name__


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (isinstance(v, float) and math.isnan(v)):
        return None
    return float(v)


def competition_ranks(values: Any, *, lower_is_better: bool = True) -> list[int] | None:
    """``1 + the number of values strictly better`` for each value (equal values share a rank, so ranks
    stay within 1..n); None unless ``values`` is a list of numbers."""
    if not isinstance(values, (list, tuple)):
        return None
    nums = [_number(v) for v in values]
    if any(v is None for v in nums):
        return None
    sign = 1 if lower_is_better else -1
    return [1 + sum(1 for w in nums if sign * w < sign * v) for v in nums]


def _json_safe(v: Any) -> Any:
    """Meta values the store and JSONL can hold: bytes are dropped, other objects become strings."""
    if v is None or isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, float):
        return None if math.isnan(v) else v
    if isinstance(v, (bytes, bytearray, memoryview)):
        return None
    if isinstance(v, dict):
        return {str(k): _json_safe(x) for k, x in v.items() if not isinstance(x, (bytes, bytearray))}
    if isinstance(v, (list, tuple)):
        return [_json_safe(x) for x in v]
    return str(v)


def _meta(fmt: str, row: dict[str, Any], keys: Iterable[str], **extra: Any) -> dict[str, Any]:
    meta = {"format": fmt}
    meta.update({k: _json_safe(row[k]) for k in keys if row.get(k) is not None})
    meta.update({k: _json_safe(v) for k, v in extra.items() if v is not None})
    return meta


def _first_present(row: dict[str, Any], keys: tuple[str, ...]) -> str:
    """The first of ``keys`` with a value (else the first present, else the first): its value may be None,
    which the loader reports as a missing image under that field's name."""
    for k in keys:
        if row.get(k) is not None:
            return k
    return next((k for k in keys if k in row), keys[0])


# --------------------------------------------------------------------------------------------
# One function per format


def hpdv3(rows: Rows) -> Iterator[Mapped]:
    """HPDv3 ``test.json``: ``path1`` is always the preferred image."""
    for i, row in rows:
        yield Mapped(i, {"task": "t2i", "prompt": row.get("prompt"), "images": [row.get("path1"), row.get("path2")],
                         "label_rank": [1, 2],
                         "meta": _meta("hpdv3", row, ("model1", "model2", "confidence", "choice_dist", "source"))},
                     {"prompt": "prompt", "images": ["path1", "path2"], "label_rank": "path1"})


def _pickapic_ranks(l0: Any, l1: Any) -> list[int] | None:
    a, b = _number(l0), _number(l1)
    if a is None or b is None:
        return None
    return {(1.0, 0.0): [1, 2], (0.0, 1.0): [2, 1], (0.5, 0.5): [1, 1]}.get((a, b))


def pickapic(rows: Rows) -> Iterator[Mapped]:
    """Pick-a-Pic: ``label_0``/``label_1`` are 1/0, 0/1, or 0.5/0.5 for a tie; images are the ``jpg_0``/``jpg_1``
    bytes, or the ``image_0_url``/``image_1_url`` of the no-images variant."""
    for i, row in rows:
        if row.get("has_label") is False:
            yield _problem(i, "has_label is false (no preference was recorded): skipped, as PickScore's "
                              "evaluation does", "has_label", fatal=False)
            continue
        ranks = _pickapic_ranks(row.get("label_0"), row.get("label_1"))
        if ranks is None:
            yield _problem(i, "label_0/label_1 must be 1/0, 0/1 or 0.5/0.5 (a tie), got "
                              f"{_shown(row.get('label_0'))}/{_shown(row.get('label_1'))}", "label_0")
            continue
        keys = [_first_present(row, (f"jpg_{k}", f"image_{k}_url")) for k in (0, 1)]
        yield Mapped(i, {"task": "t2i", "prompt": row.get("caption"), "images": [row.get(k) for k in keys],
                         "label_rank": ranks,
                         "meta": _meta("pickapic", row, ("ranking_id", "user_id", "model_0", "model_1", "image_0_uid",
                                                         "image_1_uid", "best_image_uid", "are_different"))},
                     {"prompt": "caption", "images": keys, "label_rank": "label_0"})


def hpdv2(rows: Rows) -> Iterator[Mapped]:
    """HPDv2: ``rank`` (test; lower is preferred) or ``human_preference`` (train; 1 marks the preferred
    image) over the images in ``image`` / ``image_path`` / ``file_path``."""
    for i, row in rows:
        ikey = _first_present(row, ("image", "image_path", "file_path"))
        if row.get("rank") is not None:
            lkey, ranks = "rank", competition_ranks(row["rank"])
            if ranks is None:
                yield _problem(i, f"must be a list of numbers (lower is preferred), got {_shown(row['rank'])}", "rank")
                continue
        elif row.get("human_preference") is not None:
            lkey, pref = "human_preference", row["human_preference"]
            ranks = competition_ranks(pref, lower_is_better=False)
            if ranks is None or not any(_number(p) for p in pref):
                yield _problem(i, f"must be a list of 0/1 with 1 for the preferred image, got {_shown(pref)}",
                               "human_preference")
                continue
        else:
            yield _problem(i, "no label: expected 'rank' (test split) or 'human_preference' (train split)", "rank")
            continue
        images = row.get(ikey)
        names = [f"{ikey}[{j}]" for j in range(len(images))] if isinstance(images, (list, tuple)) else ikey
        yield Mapped(i, {"task": "t2i", "prompt": row.get("prompt"), "images": images, "label_rank": ranks,
                         "meta": _meta("hpdv2", row, ("user_hash",))},
                     {"prompt": "prompt", "images": names, "label_rank": lkey})


def imagereward(rows: Rows) -> Iterator[Mapped]:
    """ImageReward ``data/test.json`` (and HPSv3's rank-wise samples): ``ranking`` over ``generations``,
    lower is preferred, equal values are ties; image paths are relative to the image folder
    (ImageReward's ``--img_prefix``: pass it as ``--root``)."""
    for i, row in rows:
        ranks = competition_ranks(row.get("ranking"))
        if ranks is None:
            yield _problem(i, f"must be a list of numbers (lower is preferred), got {_shown(row.get('ranking'))}",
                           "ranking")
            continue
        gens = row.get("generations")
        names = [f"generations[{j}]" for j in range(len(gens))] if isinstance(gens, (list, tuple)) else "generations"
        yield Mapped(i, {"task": "t2i", "prompt": row.get("prompt"), "images": gens, "label_rank": ranks,
                         "meta": _meta("imagereward", row, ("id",))},
                     {"prompt": "prompt", "images": names, "label_rank": "ranking"})


def imagerewarddb(rows: Rows) -> Iterator[Mapped]:
    """ImageRewardDB: one row per image; the rows of one ``prompt_id`` become one listwise record (lower
    ``rank`` is preferred). The record is numbered by its prompt's first row."""
    groups: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    for i, row in rows:
        pid = row.get("prompt_id")
        if not isinstance(pid, (str, int)) or isinstance(pid, bool) or str(pid).strip() == "":
            yield _problem(i, f"missing prompt_id (the rows of one prompt are grouped by it), got {_shown(pid)}",
                           "prompt_id")
            continue
        groups.setdefault(str(pid), []).append((i, row))
    for pid, members in groups.items():
        first, row0 = members[0]
        bad = next(((j, r) for j, r in members if _number(r.get("rank")) is None), None)
        if bad is not None:
            yield _problem(bad[0], f"must be a number (lower is preferred), got {_shown(bad[1].get('rank'))}", "rank")
            continue
        prompts = {r.get("prompt") for _, r in members}
        if len(prompts) > 1:
            yield _problem(first, f"the {len(members)} rows of prompt_id {pid!r} have different prompts", "prompt")
            continue
        ikeys = [_first_present(r, ("image", "image_path")) for _, r in members]
        per_image = {k: [r.get(k) for _, r in members] for k in
                     ("overall_rating", "image_text_alignment_rating", "fidelity_rating")}
        yield Mapped(first, {"task": "t2i", "prompt": row0.get("prompt"),
                             "images": [r.get(k) for (_, r), k in zip(members, ikeys, strict=True)],
                             "label_rank": competition_ranks([r.get("rank") for _, r in members]),
                             "meta": _meta("imagerewarddb", row0, ("classification",), prompt_id=pid,
                                           rows=[j for j, _ in members], **per_image)},
                     {"prompt": "prompt", "images": [f"{k} (row {j})" for (j, _), k in zip(members, ikeys, strict=True)],
                      "label_rank": "rank"})


_PLACEHOLDER = re.compile(r"<image_\d+>")


def _content(value: Any, where: str) -> tuple[list[str], list[Any]]:
    """MMRB2 content, a list of ``["text", str]`` / ``["image", path]``: its texts and its images."""
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"{where} must be a list of [type, value] items, got {_shown(value)}")
    texts, images = [], []
    for item in value:
        if not (isinstance(item, (list, tuple)) and len(item) == 2 and item[0] in ("text", "image")):
            raise ValueError(f"{where} items must be [\"text\", …] or [\"image\", path], got {_shown(item)}")
        (texts if item[0] == "text" else images).append(item[1])
    return [t.strip() for t in texts if isinstance(t, str) and t.strip()], images


def _mmrb2_parts(row: dict[str, Any]) -> tuple[list[str], list[Any], list[list[Any]], dict[str, Any]]:
    """(prompt texts, prompt images, the images of response a and b, source field names), from the
    released JSON or from the Hugging Face rows (``prompt_text`` with ``<image_N>`` placeholders)."""
    if "response_a" in row or "prompt_content" in row:
        if row.get("prompt_content") is None:
            raise LookupError("prompt_content")
        texts, images = _content(row["prompt_content"], "prompt_content")
        outs = []
        for side in ("response_a", "response_b"):
            resp = row.get(side)
            outs.append(_content(resp.get("response_content") if isinstance(resp, dict) else None,
                                 f"{side}.response_content")[1])
        return texts, images, outs, {"prompt": "prompt_content", "source_image": "prompt_content",
                                     "images": ["response_a.response_content", "response_b.response_content"]}
    text = row.get("prompt_text") if isinstance(row.get("prompt_text"), str) else ""
    texts = [p.strip() for p in _PLACEHOLDER.split(text) if p.strip()]
    outs = [list(row.get(f"response_{s}_images") or []) for s in ("a", "b")]
    return texts, list(row.get("prompt_images") or []), outs, {
        "prompt": "prompt_text", "source_image": "prompt_images", "images": ["response_a_images", "response_b_images"]}


def _maybe_json(value: Any) -> Any:
    """The Hugging Face rows hold MMRB2's prompt_metadata and human_annotations as JSON text."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def mmrb2(rows: Rows) -> Iterator[Mapped]:
    """MM-RewardBench2 t2i and edit subsets: ``chosen`` is ``A`` or ``B``; a prompt with an image is an edit
    (that image is the source). Pairs whose responses are not exactly one image each (the interleaved and
    reasoning subsets, and one multi-image edit pair) are skipped with a note."""
    for i, row in rows:
        try:
            texts, prompt_images, outs, names = _mmrb2_parts(row)
        except LookupError:
            yield _problem(i, "no prompt_content: MMRB2's *_response_only.json files carry no prompts; build the "
                              "benchmark first (benchmark/build_from_hf.py in facebookresearch/MMRB2)", "prompt_content")
            continue
        except ValueError as e:
            yield _problem(i, str(e), str(e).split(" ", 1)[0])
            continue
        counts = [len(o) for o in outs]
        odd = [n for n, c in zip(names["images"], counts, strict=True) if c != 1]
        if odd or len(prompt_images) > 1:
            what = (f"responses with {counts[0]} and {counts[1]} images" if odd
                    else f"a prompt with {len(prompt_images)} input images")
            yield _problem(i, f"{what}: skipped (a preference record holds one image per candidate and at most one "
                              "source image; only the t2i and edit subsets map)",
                           odd[0] if odd else names["source_image"], fatal=False)
            continue
        chosen = row.get("chosen")
        ranks = {"A": [1, 2], "B": [2, 1]}.get(chosen.strip().upper() if isinstance(chosen, str) else None)
        if ranks is None:
            yield _problem(i, f"must be 'A' or 'B', got {_shown(chosen)}", "chosen")
            continue
        models = [row[s].get("model_name") if isinstance(row.get(s), dict) else row.get(f"{s}_model")
                  for s in ("response_a", "response_b")]
        record = {"task": "edit" if prompt_images else "t2i", "prompt": "\n".join(texts),
                  "images": [outs[0][0], outs[1][0]], "label_rank": ranks,
                  "meta": _meta("mmrb2", row, ("prompt_source",), id=row.get("id") or row.get("pair_id"),
                                prompt_metadata=_maybe_json(row.get("prompt_metadata")),
                                human_annotations=_maybe_json(row.get("human_annotations")),
                                model_a=models[0], model_b=models[1])}
        if prompt_images:
            record["source_image"] = prompt_images[0]
        yield Mapped(i, record, {**names, "label_rank": "chosen"})


_VERSUS = re.compile(r"([A-Z])VS([A-Z])")


def _editreward_ranks(ranking: Any, comparison_type: Any) -> list[int] | None:
    left, right = "A", "B"  # candidate_1 is the left letter of comparison_type ("AvsC"), candidate_2 the right
    if isinstance(comparison_type, str):
        m = _VERSUS.fullmatch(comparison_type.strip().upper())
        if m:
            left, right = m.groups()
    if not isinstance(ranking, str):
        return None
    r = ranking.replace(" ", "").upper()
    return {f"{left}>{right}": [1, 2], f"{right}<{left}": [1, 2], f"{right}>{left}": [2, 1],
            f"{left}<{right}": [2, 1], f"{left}={right}": [1, 1], f"{right}={left}": [1, 1]}.get(r)


def editreward_bench(rows: Rows) -> Iterator[Mapped]:
    """EditReward-Bench: one pairwise comparison per row (the 3- and 4-candidate groups are stored as their
    pairs); ``ranking`` is e.g. ``A>B``, ``C>A`` or ``A=B`` (a tie) in the letters of ``comparison_type``."""
    for i, row in rows:
        ranks = _editreward_ranks(row.get("ranking"), row.get("comparison_type"))
        if ranks is None:
            yield _problem(i, f"must compare the two candidates' letters (e.g. 'A>B', 'B>A', 'A=B'; comparison_type "
                              f"{_shown(row.get('comparison_type'))}), got {_shown(row.get('ranking'))}", "ranking")
            continue
        rid = row.get("id")
        group = rid.split("_")[0] if isinstance(rid, str) and "_" in rid else None
        yield Mapped(i, {"task": "edit", "prompt": row.get("instruction"), "source_image": row.get("source_image"),
                         "images": [row.get("candidate_1"), row.get("candidate_2")], "label_rank": ranks,
                         "meta": _meta("editreward-bench", row, ("id", "comparison_type", "model_1", "model_2",
                                                                 "score_1", "score_2"),
                                       subset=row.get("dataset"), group=group)},
                     {"prompt": "instruction", "images": ["candidate_1", "candidate_2"], "source_image": "source_image",
                      "label_rank": "ranking"})


def _fs(*names: str) -> frozenset[str]:
    return frozenset(names)


FORMATS: dict[str, Format] = {f.name: f for f in (
    Format("pickapic", "Pick-a-Pic v1/v2 (Parquet: caption, jpg_0, jpg_1, label_0, label_1)",
           (_fs("caption", "label_0", "label_1", "jpg_0", "jpg_1"),
            _fs("caption", "label_0", "label_1", "image_0_url", "image_1_url")),
           _fs("caption", "jpg_0", "jpg_1", "image_0_url", "image_1_url", "label_0", "label_1", "has_label",
               "ranking_id", "user_id", "model_0", "model_1", "image_0_uid", "image_1_uid", "best_image_uid",
               "are_different"), pickapic),
    Format("editreward-bench", "EditReward-Bench (Parquet: instruction, source_image, candidate_1, candidate_2, "
           "ranking)", (_fs("instruction", "source_image", "candidate_1", "candidate_2", "ranking"),),
           _fs("id", "instruction", "source_image", "candidate_1", "candidate_2", "ranking", "comparison_type",
               "dataset", "model_1", "model_2", "score_1", "score_2"), editreward_bench),
    Format("mmrb2", "MM-RewardBench2 t2i/edit (JSON {pairs: [...]} or its Hugging Face Parquet)",
           (_fs("response_a", "response_b", "chosen"), _fs("response_a_images", "response_b_images", "chosen")),
           _fs("id", "pair_id", "prompt_content", "response_a", "response_b", "chosen", "human_annotations",
               "prompt_source", "prompt_metadata", "prompt_text", "prompt_images", "response_a_images",
               "response_b_images", "response_a_model", "response_b_model"), mmrb2),
    Format("hpdv3", "HPDv3 test.json (prompt, path1 = preferred, path2)", (_fs("prompt", "path1", "path2"),),
           _fs("prompt", "path1", "path2", "model1", "model2", "confidence", "choice_dist", "source"), hpdv3),
    Format("imagerewarddb", "ImageRewardDB per-image rows (prompt_id, image/image_path, rank)",
           (_fs("prompt_id", "prompt", "rank", "image_path"), _fs("prompt_id", "prompt", "rank", "image")),
           _fs("prompt_id", "prompt", "rank", "image", "image_path", "classification", "overall_rating",
               "image_text_alignment_rating", "fidelity_rating"), imagerewarddb),
    Format("imagereward", "ImageReward test.json (id, prompt, generations, ranking)",
           (_fs("prompt", "generations", "ranking"),), _fs("id", "prompt", "generations", "ranking"), imagereward),
    Format("hpdv2", "HPDv2 test.json (prompt, image_path, rank) or train.json (prompt, file_path, "
           "human_preference)", (_fs("prompt", "rank", "image_path"), _fs("prompt", "rank", "image"),
                                 _fs("prompt", "human_preference", "file_path"), _fs("prompt", "human_preference", "image")),
           _fs("prompt", "image", "image_path", "file_path", "rank", "human_preference", "user_hash"), hpdv2),
    Format(ARR, "ARR reference format (query/response/label_rank…) or the project's own JSONL/Parquet", (),
           frozenset(), None),
)}
ALIASES = {"pick-a-pic": "pickapic", "pickapic-v2": "pickapic", "pickapic-v1": "pickapic",
           "mm-rewardbench2": "mmrb2", "mmrb-2": "mmrb2", "editreward": "editreward-bench",
           "image-reward": "imagereward", "image-reward-db": "imagerewarddb", "reference": ARR, "project": ARR}
_OWN_KEYS = {"label_rank", "label_score"}  # a row with either is the reference / project format


def format_named(name: str) -> Format:
    key = name.strip().lower().replace("_", "-")
    key = ALIASES.get(key, key)
    if key not in FORMATS:
        raise InputError(f"unknown format {name!r} (known: {', '.join(FORMATS)})", field="--format")
    return FORMATS[key]


def detect_keys(keys: set[str]) -> str | None:
    """The format whose identifying fields a row's keys hold, or None (then the ARR reference format)."""
    if keys & _OWN_KEYS:
        return ARR
    return next((f.name for f in FORMATS.values() if f.matches(keys)), None)


# --------------------------------------------------------------------------------------------
# Reading rows


_parsed: dict[tuple[str, int, int], list[Any]] = {}  # one JSON/YAML file parsed for detection, kept for its load


def _stamp(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return str(path.resolve()), st.st_mtime_ns, st.st_size


def _parse_whole(path: Path, *, keep: bool) -> list[Any]:
    from arr_core.data.dataset import _read_raw

    key = _stamp(path)
    rows = _parsed.pop(key, None)
    if rows is None:
        rows = _read_raw(path)
    if keep:
        _parsed.clear()
        _parsed[key] = rows
    return rows


def read_rows(path: Path) -> list[Any]:
    """All rows of a file as the ARR loader reads them, reusing a parse made for detection."""
    return _parse_whole(path, keep=False)


def iter_rows(path: Path, columns: frozenset[str] = frozenset()) -> Iterator[tuple[int, Any]]:
    """(row index, row) pairs: Parquet by record batches (only ``columns`` when given), JSONL line by line,
    JSON/YAML parsed whole. Rows are numbered from 0 as the ARR loader numbers them (blank lines skipped)."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        yield from _parquet_rows(path, columns)
    elif suffix == ".jsonl":
        yield from _jsonl_rows(path)
    else:
        yield from enumerate(_parse_whole(path, keep=False))


def _parquet_errors() -> tuple[type[BaseException], ...]:
    import pyarrow as pa

    return OSError, ValueError, pa.ArrowException  # a corrupt file, footer or row group


def _parquet_rows(path: Path, columns: frozenset[str]) -> Iterator[tuple[int, Any]]:
    import pyarrow.parquet as pq

    try:
        with pq.ParquetFile(path) as pf:
            names = [n for n in pf.schema_arrow.names if not columns or n in columns]
            i = 0
            for batch in pf.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=names):
                for row in batch.to_pylist():
                    yield i, row
                    i += 1
    except _parquet_errors() as e:
        raise InputError(f"not a readable Parquet file ({e})", file=str(path)) from None


def _jsonl_rows(path: Path) -> Iterator[tuple[int, Any]]:
    i = 0
    try:
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise InputError(f"invalid JSON on line {lineno}: {e.msg} (column {e.colno})",
                                     file=str(path)) from None
                yield i, row
                i += 1
    except UnicodeDecodeError as e:
        raise InputError(f"not UTF-8 text ({e})", file=str(path)) from None


def first_keys(path: Path) -> set[str] | None:
    """The field names of a file's first row (Parquet: its columns), or None when it has no object row."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            return set(pq.read_schema(path).names)
        except _parquet_errors() as e:
            raise InputError(f"not a readable Parquet file ({e})", file=str(path)) from None
    if suffix == ".jsonl":
        with closing(_jsonl_rows(path)) as lines:  # the first row only
            row = next(lines, (0, None))[1]
    else:
        row = next(iter(_parse_whole(path, keep=True)), None)
    return set(row) if isinstance(row, dict) else None


def detect_format(path: str | Path) -> str | None:
    """The benchmark format of a dataset file, folder or glob, judged by its first row's fields (Parquet:
    its columns); ``arr`` for the reference / project format, None when nothing is recognised."""
    from arr_core.data.dataset import dataset_files

    found = {f: detect_keys(first_keys(f) or set()) for f in dataset_files(Path(path))}
    names = {n or ARR for n in found.values()}
    if len(names) > 1:
        shown = ", ".join(f"{f.name}: {n or ARR}" for f, n in list(found.items())[:6])
        raise InputError(f"the files are in different formats ({shown}); load them separately or name one "
                         "with --format", file=str(path), field="--format")
    return None if all(n is None for n in found.values()) else names.pop()


def resolve_format(path: str | Path, name: str | None) -> tuple[str, str]:
    """(format name, how it was chosen: ``named``, ``detected`` or ``default``) for a dataset path."""
    if name is not None:
        return format_named(name).name, "named"
    found = detect_format(path)
    return (found, "detected") if found is not None else (ARR, "default")


def map_file(path: Path, fmt: Format, on_row: Callable[[], None] | None = None) -> Iterator[Mapped]:
    """The format function's output for one file. The first object row must carry one of the format's
    identifying field sets; otherwise the file is refused with the fields it lacks (and what it looks like).
    ``on_row``: called once per row read (progress)."""
    assert fmt.convert is not None
    keys = first_keys(path)  # Parquet: the columns; JSON: parsed once, kept for the rows below
    if keys is not None:
        _check_fields(path, fmt, keys)

    def rows() -> Iterator[tuple[int, dict[str, Any]]]:
        for i, row in iter_rows(path, fmt.columns):
            if on_row is not None:
                on_row()
            if isinstance(row, dict):
                yield i, row
            else:
                bad.append(_problem(i, f"expected an object, got {type(row).__name__}", None))

    bad: list[Mapped] = []
    for m in fmt.convert(rows()):
        yield from bad
        bad.clear()
        yield m
    yield from bad


def _check_fields(path: Path, fmt: Format, keys: set[str]) -> None:
    if fmt.matches(keys):
        return
    best = min(fmt.signatures, key=lambda s: len(s - keys))
    missing = ", ".join(repr(k) for k in sorted(best - keys))
    actual = detect_keys(keys)
    looks = f"; it looks like {actual}" if actual and actual != fmt.name else ""
    raise InputError(f"not in the {fmt.name} format: its rows lack {missing} (fields: "
                     f"{', '.join(sorted(keys)[:12])}{', …' if len(keys) > 12 else ''}){looks}",
                     file=str(path), field="--format")
