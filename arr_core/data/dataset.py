"""Loading preference datasets: the ARR reference format (JSON array, JSONL, YAML) and the
project's own JSONL/Parquet, with validation that names the file, record and field.

Reference-format keys (aliases accepted):
- prompt: ``query`` | ``prompt`` | ``instruction``
- candidates: ``response`` | ``responses`` | ``images`` | ``image_paths`` | ``image`` |
  ``generated_image`` | ``generated_images``; for editing ``edited_images`` | ``edited_image`` |
  ``output_image(s)`` | ``result_image(s)`` | ``target_image(s)``
- editing source: ``source_image`` | ``base_image`` | ``original_image`` | ``input_image`` |
  ``reference_image`` | ``ref_image``
- ``label_rank`` (one rank per candidate, 1 = preferred) or ``label_score`` (pointwise)

The project's own format (docs/data.md) is the same record with canonical names: ``task``,
``prompt``, ``images``, ``source_image``, ``label_rank``, ``label_score``, ``meta`` and optionally
``image_sha256`` / ``source_sha256`` (verified when present).

Published benchmark formats (HPDv3, MM-RewardBench2, EditReward-Bench, Pick-a-Pic, HPDv2, ImageReward)
are mapped to these records by :mod:`arr_core.data.formats` (``format=``, detected when not given). A
dataset path may also be a folder or a glob of dataset files.
"""

from __future__ import annotations

import glob
import json
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from arr_core.data.images import (
    DEFAULT_MAX_IMAGE_SIDE,
    ImageReadError,
    inspect_image,
    is_url,
    read_bytes,
)
from arr_core.data.records import TASKS, ImageRef, PreferenceRecord
from arr_core.digest import digest_obj, sha256_bytes, sha256_text
from arr_core.errors import InputError

PROMPT_KEYS = ("query", "prompt", "instruction")
IMAGE_KEYS = ("response", "responses", "images", "image_paths", "image", "generated_image",
              "generated_images")
EDITED_KEYS = ("edited_images", "edited_image", "output_image", "output_images", "result_image",
               "result_images", "target_image", "target_images")
SOURCE_KEYS = ("source_image", "base_image", "original_image", "input_image", "reference_image",
               "ref_image")
SPLITS = ("seed", "validation", "test")


@dataclass
class Problem:
    """One finding about a dataset. ``fatal`` problems stop a load; others are notes."""

    message: str
    record: int | None = None
    field: str | None = None
    fatal: bool = True
    file: str | None = None  # set when a load reads several files (a folder or a glob)

    def __str__(self) -> str:
        where = [f"file {self.file}"] if self.file is not None else []
        if self.record is not None:
            where.append(f"record {self.record}")
        if self.field is not None:
            where.append(f"field '{self.field}'")
        return f"{', '.join(where)}: {self.message}" if where else self.message


@dataclass
class Dataset:
    records: list[PreferenceRecord]
    name: str
    source_uri: str
    task: str
    notes: list[Problem] = field(default_factory=list)

    @property
    def digest(self) -> str:
        """Digest of the canonical records (images by content): independent of file names and
        record order, changed by any pixel or label."""
        return digest_obj(sorted(r.pair_id for r in self.records), 24)

    def split(self, *, seed_fraction: float = 0.6, validation_fraction: float = 0.2,
              salt: str = "") -> dict[str, list[PreferenceRecord]]:
        """Deterministic seed/validation/test split keyed by each pair's digest."""
        return split_records(self.records, seed_fraction=seed_fraction,
                             validation_fraction=validation_fraction, salt=salt)

    def __len__(self) -> int:
        return len(self.records)


def split_of(pair_id: str, *, seed_fraction: float = 0.6, validation_fraction: float = 0.2,
             salt: str = "") -> str:
    if not (0 <= seed_fraction <= 1 and 0 <= validation_fraction <= 1
            and seed_fraction + validation_fraction <= 1):
        raise ValueError("split fractions must lie in [0, 1] and sum to at most 1")
    u = int(sha256_text(f"{salt}:{pair_id}")[:12], 16) / float(16 ** 12)
    if u < seed_fraction:
        return "seed"
    if u < seed_fraction + validation_fraction:
        return "validation"
    return "test"


def split_records(records: list[PreferenceRecord], **kw: Any) -> dict[str, list[PreferenceRecord]]:
    out: dict[str, list[PreferenceRecord]] = {s: [] for s in SPLITS}
    for r in records:
        out[split_of(r.pair_id, **kw)].append(r)
    return out


# --------------------------------------------------------------------------------------------
# Reading files


MAX_TEXT_BYTES = 1 << 30  # a JSON/JSONL/YAML dataset file larger than 1 GiB is refused (use Parquet)
MAX_NODES = 20_000_000  # values in a parsed file, aliases expanded (a YAML "billion laughs" is refused)


def _check_size(data: Any, file: Path) -> None:
    """Refuse a parsed document whose expanded size (YAML aliases count each time they are used)
    passes ``MAX_NODES``: walking it later (hashing, validation) would take unbounded time and memory.
    Shared containers (what aliases build) are sized once and memoized, so this is linear in the
    document as parsed."""
    sizes: dict[int, int] = {}
    stack: list[tuple[Any, bool]] = [(data, False)]
    while stack:
        v, done = stack.pop()
        if not isinstance(v, (dict, list, tuple)):
            continue
        if id(v) in sizes:
            continue
        children = list(v.values()) if isinstance(v, dict) else list(v)
        if not done:
            stack.append((v, True))
            stack.extend((c, False) for c in children if isinstance(c, (dict, list, tuple)) and id(c) not in sizes)
            continue
        total = 1 + sum(sizes.get(id(c), 1) for c in children)
        if total > MAX_NODES:
            raise InputError(f"the document expands to more than {MAX_NODES:,} values (YAML aliases "
                             "expanded); refused", file=str(file))
        sizes[id(v)] = total


def _read_raw(path: Path) -> list[Any]:
    suffix = path.suffix.lower()
    if suffix != ".parquet" and path.stat().st_size > MAX_TEXT_BYTES:
        raise InputError(f"{path.stat().st_size / 2**30:.1f} GiB is larger than the {MAX_TEXT_BYTES >> 30} GiB "
                         "limit for text dataset files; convert it to Parquet", file=str(path))
    try:
        data = _read_raw_unchecked(path, suffix)
    except RecursionError:
        raise InputError("nested too deeply to be a dataset (JSON/YAML nesting)", file=str(path)) from None
    if suffix in (".yaml", ".yml"):  # only YAML can share nodes (aliases); JSON's size is its file's
        _check_size(data, path)
    return data


def _read_raw_unchecked(path: Path, suffix: str) -> list[Any]:
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            return pq.read_table(path).to_pylist()
        except Exception as e:  # pyarrow raises several types for corrupt files
            raise InputError(f"not a readable Parquet file ({e})", file=str(path)) from None
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"not UTF-8 text ({e})", file=str(path)) from None
    if suffix == ".jsonl":
        rows = []
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise InputError(f"invalid JSON on line {lineno}: {e.msg} (column {e.colno})",
                                 file=str(path)) from None
        return rows
    if suffix in (".yaml", ".yml"):
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise InputError(f"invalid YAML: {e}", file=str(path)) from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise InputError(f"invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}",
                             file=str(path)) from None
    if isinstance(data, dict):
        for key in ("data", "pairs", "records"):
            if isinstance(data.get(key), list):
                return data[key]
        raise InputError("expected a list of records (or an object with a 'data'/'pairs' list)",
                         file=str(path))
    if data is None:
        return []
    if not isinstance(data, list):
        raise InputError(f"expected a list of records, got {type(data).__name__}", file=str(path))
    return data


def _first_key(obj: dict[str, Any], keys: tuple[str, ...]) -> tuple[str | None, Any]:
    for k in keys:
        if k in obj and obj[k] is not None:
            return k, obj[k]
    return None, None


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


class _ImageResolver:
    """Resolves and reads each distinct image once per load."""

    def __init__(self, base: Path, *, allow_outside: bool, max_side: int, allow_remote: bool = False) -> None:
        self.base = base.resolve()
        self._base = str(self.base)
        self._dirs: dict[str, str] = {}  # folder -> its real path (one realpath per folder, not per image)
        self.allow_outside = allow_outside
        self.allow_remote = allow_remote
        self.max_side = max_side
        self._seen: dict[str, tuple[ImageRef, str | None]] = {}

    def resolve(self, raw: Any) -> tuple[ImageRef, str | None]:
        """Return (ImageRef, note) or raise ImageReadError / ValueError. ``raw`` is a path or URL, raw
        image bytes (a Parquet binary column), or a Hugging Face ``Image`` struct ``{"bytes", "path"}``
        (embedded bytes win; a struct without bytes is read from its path)."""
        if isinstance(raw, dict) and ("bytes" in raw or "path" in raw):
            payload = raw.get("bytes")
            raw = payload if isinstance(payload, (bytes, bytearray, memoryview)) and len(payload) else raw.get("path")
        if isinstance(raw, (bytes, bytearray, memoryview)):
            return self._embedded(bytes(raw))
        if not isinstance(raw, str) or not raw.strip():
            shown = repr(raw)[:60] if isinstance(raw, (int, float, bool, type(None))) else type(raw).__name__
            raise ValueError(f"expected an image path, URL, image bytes or an {{bytes, path}} struct, got {shown}")
        raw = raw.strip()
        if is_url(raw):
            if raw.startswith(("http://", "https://")) and not self.allow_remote:
                raise ValueError(f"image '{raw:.80}' is a remote URL; fetching images from the network is off "
                                 "by default (pass --allow-remote to permit it)")
            uri = raw
        else:
            uri = self._realpath(os.path.join(self._base, os.path.expanduser(raw)))
            if not self.allow_outside and uri != self._base and not uri.startswith(self._base + os.sep):
                raise ValueError(f"image path '{raw}' escapes the dataset folder {self.base} "
                                 f"(pass --allow-outside to permit it)")
        if uri in self._seen:
            return self._seen[uri]
        data = read_bytes(uri)
        info = inspect_image(data, max_side=self.max_side)
        note = None
        if info.mode not in ("RGB",):
            note = f"image mode {info.mode} converted to RGB"
        ref = ImageRef(uri=uri, sha256=sha256_bytes(data))
        self._seen[uri] = (ref, note)
        return ref, note

    def _realpath(self, path: str) -> str:
        """``os.path.realpath`` (symlinks followed), with each folder's real path looked up once."""
        folder, name = os.path.split(path)
        if name in ("", ".", ".."):
            return os.path.realpath(path)
        real = self._dirs.get(folder)
        if real is None:
            real = self._dirs[folder] = os.path.realpath(folder)
        full = os.path.join(real, name)
        return os.path.realpath(full) if os.path.islink(full) else full

    def _embedded(self, data: bytes) -> tuple[ImageRef, str | None]:
        """Image bytes stored in the dataset file itself: kept as a ``data:`` URL (no file to point at)."""
        import base64
        import io

        from PIL import Image

        sha = sha256_bytes(data)
        if sha in self._seen:
            return self._seen[sha]
        info = inspect_image(data, max_side=self.max_side)
        with Image.open(io.BytesIO(data)) as im:  # header only: the format for the MIME type
            fmt = (im.format or "png").lower()
        uri = f"data:image/{fmt};base64," + base64.b64encode(data).decode("ascii")
        out = (ImageRef(uri=uri, sha256=sha), _embedded_note(info))
        self._seen[sha] = out
        return out


def _embedded_note(info: Any) -> str | None:
    return f"image mode {info.mode} converted to RGB" if info.mode != "RGB" else None


def _check_ranks(ranks: Any, n: int, *, allow_ties: bool) -> str | None:
    if not isinstance(ranks, (list, tuple)):
        return f"must be a list of {n} ranks, got {type(ranks).__name__}"
    if len(ranks) != n:
        return f"has {len(ranks)} ranks for {n} candidate images (one rank per candidate)"
    if not all(isinstance(r, int) and not isinstance(r, bool) for r in ranks):
        return f"ranks must be integers, got {list(ranks)}"
    if any(r < 1 or r > n for r in ranks):
        return f"ranks must lie in 1..{n}, got {list(ranks)}"
    if len(set(ranks)) != n:
        if allow_ties:
            return None
        return f"ranks {list(ranks)} contain a tie (ties are not allowed for preference pairs)"
    if sorted(ranks) != list(range(1, n + 1)):
        return f"ranks {list(ranks)} are not a permutation of 1..{n}"
    return None


def _parse_record(obj: Any, i: int, task_hint: str | None, resolver: _ImageResolver,
                  allow_ties: bool, problems: list[Problem]) -> PreferenceRecord | None:
    def bad(msg: str, fld: str | None = None) -> None:
        problems.append(Problem(msg, record=i, field=fld))

    if not isinstance(obj, dict):
        bad(f"expected an object, got {type(obj).__name__}")
        return None
    pkey, prompt = _first_key(obj, ("prompt",) + PROMPT_KEYS if "task" in obj else PROMPT_KEYS)
    if pkey is None or not isinstance(prompt, str) or not prompt.strip():
        bad("missing or empty prompt (expected one of: " + ", ".join(PROMPT_KEYS) + ")", pkey or "query")
        return None
    skey, source_raw = _first_key(obj, SOURCE_KEYS)
    ekey, edited_raw = _first_key(obj, EDITED_KEYS)
    ikey, images_raw = _first_key(obj, IMAGE_KEYS)
    declared = obj.get("task")
    if declared is not None and declared not in TASKS:
        bad(f"unknown task '{declared}' (expected one of {', '.join(TASKS)})", "task")
        return None
    if declared is None and "label_score" in obj and "label_rank" not in obj:
        declared = "pointwise"
    task = declared or task_hint or ("edit" if (skey or ekey) else "t2i")
    if task == "edit":
        cand_key, cand_raw = (ekey, edited_raw) if ekey else (ikey, images_raw)
        if skey is None:
            bad("edit record without a source image (expected one of: " + ", ".join(SOURCE_KEYS) + ")",
                "source_image")
            return None
    else:
        cand_key, cand_raw = (ikey, images_raw) if ikey else (ekey, edited_raw)
    if cand_key is None:
        bad("no candidate images (expected one of: " + ", ".join(IMAGE_KEYS + EDITED_KEYS) + ")",
            "response")
        return None
    cands = _as_list(cand_raw)
    min_n = 1 if task == "pointwise" else 2
    if len(cands) < min_n:
        bad(f"has {len(cands)} candidate image(s); a preference record needs at least {min_n}", cand_key)
        return None

    images: list[ImageRef] = []
    ok = True
    for j, raw in enumerate(cands):
        try:
            ref, note = resolver.resolve(raw)
        except (ImageReadError, ValueError) as e:
            bad(f"image {j}: {e}", cand_key)
            ok = False
            continue
        if note:
            problems.append(Problem(f"image {j}: {note}", record=i, field=cand_key, fatal=False))
        images.append(ref)
    source = None
    if task == "edit":
        try:
            source, note = resolver.resolve(source_raw)
            if note:
                problems.append(Problem(f"source: {note}", record=i, field=skey, fatal=False))
        except (ImageReadError, ValueError) as e:
            bad(f"source image: {e}", skey)
            ok = False
    sha_key = obj.get("image_sha256")
    if ok and sha_key is not None:
        if not isinstance(sha_key, (list, tuple)) or not all(isinstance(h, str) for h in sha_key):
            bad(f"must be a list of sha256 strings (one per image), got {type(sha_key).__name__}", "image_sha256")
            ok = False
        elif list(sha_key) != [im.sha256 for im in images]:
            bad("image bytes do not match the recorded image_sha256", "image_sha256")
            ok = False

    label_rank = obj.get("label_rank")
    label_score = obj.get("label_score")
    if task == "pointwise":
        if not isinstance(label_score, (list, tuple)) or len(label_score) != len(cands) or not all(
                isinstance(s, (int, float)) and not isinstance(s, bool) for s in label_score):
            bad(f"must be a list of {len(cands)} numbers (one score per image)", "label_score")
            return None
        label_score = [float(s) for s in label_score]
    elif label_rank is None:
        bad("missing label_rank (one rank per candidate, 1 = preferred)", "label_rank")
        return None
    else:
        err = _check_ranks(label_rank, len(cands), allow_ties=allow_ties)
        if err:
            bad(err, "label_rank")
            return None
        label_rank = [int(r) for r in label_rank]
    if not ok:
        return None
    meta = obj.get("meta")
    if isinstance(meta, str):  # the Parquet format stores meta as a JSON string
        try:
            meta = json.loads(meta)
        except json.JSONDecodeError:
            meta = {"raw": meta}
    meta = meta if isinstance(meta, dict) else {}
    return PreferenceRecord(task=task, prompt=prompt.strip(), images=images, source=source,
                            label_rank=label_rank if task != "pointwise" else None,
                            label_score=label_score if task == "pointwise" else None,
                            meta=dict(meta), idx=i)


DATA_SUFFIXES = (".json", ".jsonl", ".yaml", ".yml", ".parquet")


def dataset_files(path: Path) -> list[Path]:
    """The dataset files a path names: a file; the dataset files directly inside a folder; or the files a
    glob pattern matches (``**`` reaches into sub-folders), sorted."""
    text = str(path)
    if not path.exists() and any(c in text for c in "*?["):
        files = sorted(Path(p) for p in glob.glob(text, recursive=True)
                       if Path(p).suffix.lower() in DATA_SUFFIXES and Path(p).is_file())
        if not files:
            raise InputError("no .json/.jsonl/.yaml/.parquet file matches this pattern", file=text)
        return files
    if not path.exists():
        raise InputError("dataset file not found", file=text)
    if path.is_dir():
        files = [p for p in sorted(path.iterdir()) if p.is_file() and p.suffix.lower() in DATA_SUFFIXES]
        if not files:
            raise InputError("the folder holds no .json/.jsonl/.yaml/.parquet file (for files in sub-folders "
                             "name a glob such as 'DIR/**/*.parquet')", file=text)
        return files
    return [path]


_IMAGE_N = re.compile(r"image (\d+): ")
_ARR_KEYS_HINT = re.compile(r" \(expected one of: [^)]*\)")


def _source_field(p: Problem, fields: dict[str, Any]) -> str | None:
    """The format's own field for a problem found in a mapped record (``images`` → ``jpg_0``…)."""
    if p.field in ("query", "prompt", "instruction"):
        return fields.get("prompt", p.field)
    if p.field in ("images", "response"):
        names = fields.get("images")
        m = _IMAGE_N.match(p.message)
        if isinstance(names, list) and m and int(m.group(1)) < len(names):
            return names[int(m.group(1))]
        return ", ".join(names) if isinstance(names, list) else names or p.field
    return fields.get(p.field, p.field) if p.field in ("source_image", "label_rank") else p.field


def _file_records(file: Path, fmt_name: str, task: str | None, resolver: _ImageResolver, allow_ties: bool,
                  problems: list[Problem], on_row: Callable[[], None] | None = None) -> Iterator[PreferenceRecord]:
    """The records of one file in format ``fmt_name``; problems are appended to ``problems``;
    ``on_row`` is called once per row read."""
    from arr_core.data import formats

    fmt = formats.format_named(fmt_name)
    if fmt.convert is None:  # the ARR reference / project format
        raw = formats.read_rows(file)
        if not raw:
            raise InputError("the dataset is empty (no records)", file=str(file))
        for i, obj in enumerate(raw):
            rec = _parse_record(obj, i, task, resolver, allow_ties, problems)
            if on_row is not None:
                on_row()
            if rec is not None:
                yield rec
        return
    outputs = 0
    for m in formats.map_file(file, fmt, on_row):
        outputs += 1
        if m.record is None:
            problems.append(Problem(m.problem or "unreadable row", record=m.index, field=m.column, fatal=m.fatal))
            continue
        found: list[Problem] = []
        rec = _parse_record(m.record, m.index, task, resolver, allow_ties, found)
        for p in found:
            p.field = _source_field(p, m.fields)
            p.message = _ARR_KEYS_HINT.sub("", p.message)  # the reference format's key names do not apply
            if "contain a tie" in p.message:
                p.message += " (pass --allow-ties to keep tied pairs)"
        problems.extend(found)
        if rec is not None:
            yield rec
    if not outputs:
        raise InputError("the dataset is empty (no records)", file=str(file))


def scan_dataset(path: str | Path, *, task: str | None = None, allow_outside: bool = False,
                 allow_ties: bool = False, max_image_side: int = DEFAULT_MAX_IMAGE_SIDE,
                 allow_remote: bool = False, root: str | Path | None = None, format: str | None = None,
                 on_progress: Callable[[int, int], None] | None = None
                 ) -> tuple[list[PreferenceRecord], list[Problem]]:
    """Read and check every record; return the good records and all problems found.

    ``path`` is a file, a folder (its dataset files) or a glob pattern. ``format`` names a published
    benchmark format (``arr_core.data.formats.FORMATS``: hpdv3, mmrb2, editreward-bench, pickapic, hpdv2,
    imagereward, imagerewarddb) or ``arr`` (the reference / project format); None detects it from the
    first row's fields. Relative image paths are relative to each file's folder, or to ``root`` when
    given (the ARR reference's example files name images relative to the repository root).

    Problems with ``fatal=True`` make :func:`load_dataset` refuse the file; duplicates and mode
    conversions are notes. File-level failures (unreadable file, invalid JSON) raise InputError.
    ``on_progress(done, total)``: called per record (row) read, ``total`` the rows of all the files
    (counted first: Parquet footers, JSONL lines), ``done`` rising to ``total``.
    """
    from arr_core.data.formats import resolve_format

    path = Path(path)
    if task is not None and task not in TASKS:
        raise InputError(f"unknown task '{task}' (expected one of {', '.join(TASKS)})")
    files = dataset_files(path)
    if root is not None and not Path(root).is_dir():
        raise InputError("the image root is not a folder", file=str(root), field="--root")
    fmt_name, _ = resolve_format(path, format)
    problems: list[Problem] = []
    records: list[PreferenceRecord] = []
    seen: dict[str, tuple[int, str]] = {}
    tick = _row_progress(on_progress, files) if on_progress is not None else None
    for file in files:
        resolver = _ImageResolver(Path(root) if root is not None else file.parent, allow_outside=allow_outside,
                                  max_side=max_image_side, allow_remote=allow_remote)
        found: list[Problem] = []
        for rec in _file_records(file, fmt_name, task, resolver, allow_ties, found, tick):
            i = rec.idx
            if task is not None and rec.task != task and not (task == "t2i" and rec.task == "pointwise"):
                found.append(Problem(f"is a '{rec.task}' record but --task {task} was given", record=i, field="task"))
                continue
            first = seen.get(rec.pair_id)
            if first is not None:
                where = f"record {first[0]}" + (f" of {first[1]}" if len(files) > 1 else "")
                found.append(Problem(f"duplicates {where} (same prompt, images and labels); kept the first",
                                     record=i, fatal=False))
                continue
            seen[rec.pair_id] = (i, file.name)
            if len(files) > 1:
                rec.meta.setdefault("file", str(file))
            records.append(rec)
        if len(files) > 1:
            for p in found:
                p.file = str(file)
        problems.extend(found)
    if tick is not None:
        tick(final=True)
    return records, problems


def _row_count(file: Path) -> int:
    """A dataset file's rows, for progress: Parquet from its footer, JSONL by its non-blank lines, JSON/YAML
    parsed (the parse is kept for the load). 0 when unreadable: the load reports the file."""
    from arr_core.data import formats

    suffix = file.suffix.lower()
    try:
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.read_metadata(file).num_rows
        if suffix == ".jsonl":
            with open(file, "rb") as f:
                return sum(1 for line in f if line.strip())
        return len(formats._parse_whole(file, keep=True))
    except (InputError, *formats._parquet_errors()):
        return 0


def _row_progress(on_progress: Callable[[int, int], None], files: list[Path]) -> Callable[..., None]:
    """``tick()`` per row read → ``on_progress(done, total)``; ``tick(final=True)`` reports ``total``."""
    total = sum(_row_count(f) for f in files)
    done = 0
    on_progress(0, total)

    def tick(final: bool = False) -> None:
        nonlocal done
        if final:
            if done < total:
                on_progress(total, total)
            return
        if done < total:
            done += 1
            on_progress(done, total)

    return tick


def _default_name(path: Path) -> str:
    """A dataset's name: the file's stem, a folder's name, or for a glob its first plain ancestor's name."""
    if not path.exists() and any(c in str(path) for c in "*?["):
        plain = [part for part in path.parts if not any(c in part for c in "*?[")]
        return Path(*plain).name if plain else "dataset"
    return path.stem


def load_dataset(path: str | Path, *, task: str | None = None, name: str | None = None,
                 allow_outside: bool = False, allow_ties: bool = False,
                 max_image_side: int = DEFAULT_MAX_IMAGE_SIDE, allow_remote: bool = False,
                 root: str | Path | None = None, format: str | None = None,
                 on_progress: Callable[[int, int], None] | None = None) -> Dataset:
    """Load and validate a dataset (a file, a folder or a glob; ``format`` and ``on_progress`` as in
    :func:`scan_dataset`); raise InputError listing the problems if any record is bad. Remote (http/https)
    images are fetched only with ``allow_remote`` (bounded in size and time)."""
    path = Path(path)
    records, problems = scan_dataset(path, task=task, allow_outside=allow_outside,
                                     allow_ties=allow_ties, max_image_side=max_image_side,
                                     allow_remote=allow_remote, root=root, format=format,
                                     on_progress=on_progress)
    fatal = [p for p in problems if p.fatal]
    if fatal:
        shown = "\n  ".join(str(p) for p in fatal[:20])
        more = f"\n  … and {len(fatal) - 20} more" if len(fatal) > 20 else ""
        first = fatal[0]
        one = len(fatal) == 1
        raise InputError(f"{len(fatal)} invalid record(s):\n  {shown}{more}",
                         file=first.file if one and first.file else str(path),
                         record=first.record if one else None, field=first.field if one else None)
    tasks = {r.task for r in records}
    ds_task = task or (tasks.pop() if len(tasks) == 1 else "mixed")
    return Dataset(records=records, name=name or _default_name(path), source_uri=str(path.resolve()),
                   task=ds_task, notes=[p for p in problems if not p.fatal])


def write_jsonl(records: list[PreferenceRecord], path: str | Path) -> Path:
    """Write records in the project's own JSONL format (atomic: temp file + rename)."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r.to_row(), ensure_ascii=False) + "\n")
    tmp.replace(path)
    return path


def write_parquet(records: list[PreferenceRecord], path: str | Path) -> Path:
    """Write records in the project's own Parquet format (``meta`` as a JSON string)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    rows = [dict(r.to_row(), meta=json.dumps(r.meta, sort_keys=True)) for r in records]
    tmp = path.with_suffix(path.suffix + ".tmp")
    pq.write_table(pa.Table.from_pylist(rows), tmp)
    tmp.replace(path)
    return path
