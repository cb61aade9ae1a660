"""Published benchmark formats (issue 24, item 1): HPDv3, MM-RewardBench2, EditReward-Bench, Pick-a-Pic,
HPDv2, ImageReward(DB). Every fixture is written here, in the format's published layout (docs/data.md
cites the source of each field), with tiny generated images: nothing is downloaded."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from arr_cli import main
from arr_core.data.dataset import load_dataset, scan_dataset
from arr_core.data.formats import FORMATS, competition_ranks, detect_format
from arr_core.errors import InputError

HF_IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])  # datasets.Image() in Parquet
JUNK = b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 40


def img_bytes(colour: tuple[int, int, int], fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), colour).save(buf, format=fmt)
    return buf.getvalue()


def img_file(path: Path, colour: tuple[int, int, int]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(img_bytes(colour))
    return path.name


def struct(data: bytes, name: str = "x.png") -> dict:
    return {"bytes": data, "path": name}


def write_parquet(path: Path, rows: list[dict], schema: pa.Schema, row_group_size: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path, row_group_size=row_group_size)
    return path


# ---- one writer per format, in its published layout ------------------------------------------


def write_hpdv3(root: Path, *, missing: bool = False) -> Path:
    """HPDv3 test.json: images/… relative to the file, path1 preferred."""
    for k, colour in enumerate([(200, 0, 0), (0, 0, 200), (0, 200, 0), (90, 90, 90)]):
        img_file(root / "images" / f"u{k}.jpg", colour)
    rows = [{"prompt": "a red square", "path1": "images/u0.jpg", "path2": "images/u1.jpg", "model1": "flux",
             "model2": "infinity"},
            {"prompt": "a green square", "path1": "images/u2.jpg",
             "path2": "images/gone.jpg" if missing else "images/u3.jpg", "model1": "kolors", "model2": "sd3"}]
    (root / "test.json").write_text(json.dumps(rows))
    return root / "test.json"


def write_pickapic(path: Path, rows: list[dict] | None = None) -> Path:
    """Pick-a-Pic v2 Parquet: jpg_0/jpg_1 hold the image bytes (binary columns), label_0/label_1 floats."""
    schema = pa.schema([("caption", pa.string()), ("jpg_0", pa.binary()), ("jpg_1", pa.binary()),
                        ("label_0", pa.float64()), ("label_1", pa.float64()), ("has_label", pa.bool_()),
                        ("are_different", pa.bool_()), ("model_0", pa.string()), ("model_1", pa.string()),
                        ("ranking_id", pa.int64()), ("created_at", pa.timestamp("ns"))])
    a, b, c = img_bytes((200, 0, 0), "JPEG"), img_bytes((0, 0, 200), "JPEG"), img_bytes((0, 200, 0), "JPEG")
    base = {"has_label": True, "are_different": True, "model_0": "sdxl", "model_1": "sd2", "created_at": None}
    rows = rows if rows is not None else [
        {**base, "caption": "a red square", "jpg_0": a, "jpg_1": b, "label_0": 1.0, "label_1": 0.0, "ranking_id": 1},
        {**base, "caption": "a blue square", "jpg_0": a, "jpg_1": b, "label_0": 0.0, "label_1": 1.0, "ranking_id": 2},
        {**base, "caption": "a square", "jpg_0": b, "jpg_1": c, "label_0": 0.5, "label_1": 0.5, "ranking_id": 3},
        {**base, "caption": "unlabelled", "jpg_0": c, "jpg_1": a, "label_0": 0.0, "label_1": 0.0, "ranking_id": 4,
         "has_label": False}]
    return write_parquet(path, rows, schema, row_group_size=1)  # several row groups: read batch by batch


def write_editreward(path: Path, rows: list[tuple[str, str | None, str]] | None = None) -> Path:
    """EditReward-Bench Parquet (datasets.Image structs): one pairwise comparison per row."""
    schema = pa.schema([("id", pa.string()), ("instruction", pa.string()), ("source_image", HF_IMAGE),
                        ("candidate_1", HF_IMAGE), ("candidate_2", HF_IMAGE), ("ranking", pa.string()),
                        ("comparison_type", pa.string()), ("dataset", pa.string()), ("model_1", pa.string()),
                        ("model_2", pa.string()), ("score_1", pa.float64()), ("score_2", pa.float64())])
    src, x, y = img_bytes((50, 50, 50)), img_bytes((200, 0, 0)), img_bytes((0, 0, 200))
    rows = rows if rows is not None else [("A>B", None, "2pair"), ("C>A", "AvsC", "3pair"), ("A=B", "AvsB", "2pair")]
    out = [{"id": f"s{k}_{ctype or 'AvsB'}", "instruction": f"make it red ({k})", "source_image": struct(src),
            "candidate_1": struct(x), "candidate_2": struct(y), "ranking": r, "comparison_type": ctype,
            "dataset": subset, "model_1": "m1", "model_2": "m2", "score_1": 7.0, "score_2": 4.0}
           for k, (r, ctype, subset) in enumerate(rows)]
    return write_parquet(path, out, schema)


def write_mmrb2_json(root: Path, task: str) -> Path:
    """MMRB2 release layout: {subset}.json with pairs; images/ (responses) and input_images/ (prompts)."""
    for name, colour in [("p_0.png", (200, 0, 0)), ("p_1.png", (0, 0, 200)), ("q_0.png", (0, 200, 0)),
                         ("q_1.png", (90, 0, 90))]:
        img_file(root / "images" / name, colour)
    img_file(root / "input_images" / "src.png", (50, 50, 50))
    prompt = [["text", "a red square"]] if task == "t2i" else [["image", "input_images/src.png"],
                                                                ["text", "make the square red"]]
    pairs = [{"id": f"{task}-0", "prompt_content": prompt, "prompt_source": "oneigbench",
              "prompt_metadata": {"id": "7"}, "human_annotations": [2, 2, 1], "chosen": "B",
              "response_a": {"model_name": "imagen4", "response_content": [["image", "images/p_0.png"]]},
              "response_b": {"model_name": "gpt-image-1", "response_content": [["image", "images/p_1.png"]]}},
             {"id": f"{task}-1", "prompt_content": prompt, "prompt_source": "wise", "prompt_metadata": {},
              "human_annotations": [5, 6, 5], "chosen": "A",
              "response_a": {"model_name": "imagen4", "response_content": [["image", "images/q_0.png"]]},
              "response_b": {"model_name": "flux", "response_content": [["image", "images/q_1.png"],
                                                                         ["image", "images/p_0.png"]]}}]
    (root / f"{task}.json").write_text(json.dumps({"pairs": pairs}))
    return root / f"{task}.json"


def write_mmrb2_hf(path: Path) -> Path:
    """MMRB2's Hugging Face rows (edit subset): images embedded, <image_N> placeholders in prompt_text."""
    schema = pa.schema([("pair_id", pa.string()), ("prompt_text", pa.string()), ("prompt_images", pa.list_(HF_IMAGE)),
                        ("response_a_text", pa.string()), ("response_a_images", pa.list_(HF_IMAGE)),
                        ("response_b_text", pa.string()), ("response_b_images", pa.list_(HF_IMAGE)),
                        ("chosen", pa.string()), ("human_annotations", pa.string()), ("prompt_source", pa.string()),
                        ("prompt_metadata", pa.string()), ("response_a_model", pa.string()),
                        ("response_b_model", pa.string())])
    row = {"pair_id": "e-0", "prompt_text": "<image_1> make the square red", "prompt_images": [struct(img_bytes((5, 5, 5)))],
           "response_a_text": "", "response_a_images": [struct(img_bytes((200, 0, 0)))], "response_b_text": "",
           "response_b_images": [struct(img_bytes((0, 0, 200)))], "chosen": "a", "human_annotations": "[5, 6, 6]",
           "prompt_source": "emu-edit", "prompt_metadata": "{\"id\": 3}", "response_a_model": "m1",
           "response_b_model": "m2"}
    return write_parquet(path, [row], schema)


def write_hpdv2(root: Path) -> Path:
    """HPDv2 test.json: image_path list with per-image rank (lower preferred), paths under the image folder."""
    for k in range(4):
        img_file(root / "test" / f"{k}.jpg", (60 * k, 0, 0))
    rows = [{"prompt": "a red square", "image_path": [f"{k}.jpg" for k in range(4)], "rank": [2, 1, 4, 3],
             "raw_annotations": [{"rank": [2, 1, 4, 3], "user_hash": "u"}], "user_hash": ["u"]},
            {"prompt": "a dark square", "image_path": ["0.jpg", "3.jpg"], "rank": [1, 1]}]
    (root / "test.json").write_text(json.dumps(rows))
    return root / "test.json"


def write_imagereward(root: Path) -> Path:
    """ImageReward data/test.json: generations relative to --img_prefix, ranking lower = preferred (ties)."""
    for k in range(4):
        img_file(root / "test_images" / "part-1" / f"{k}.webp", (0, 60 * k, 0))
    rows = [{"id": "000001-0001", "prompt": "a green square",
             "generations": [f"part-1/{k}.webp" for k in range(4)], "ranking": [1, 2, 5, 2]}]
    (root / "test.json").write_text(json.dumps(rows))
    return root / "test.json"


def write_imagerewarddb(path: Path) -> Path:
    """ImageRewardDB rows, one per image (datasets.Image struct), grouped by prompt_id on load."""
    schema = pa.schema([("image", HF_IMAGE), ("prompt_id", pa.string()), ("prompt", pa.string()),
                        ("classification", pa.string()), ("image_amount_in_total", pa.int64()),
                        ("rank", pa.int64()), ("overall_rating", pa.int64())])
    rows = [{"image": struct(img_bytes((40 * k, 0, 0))), "prompt_id": pid, "prompt": f"prompt {pid}",
             "classification": "People", "image_amount_in_total": n, "rank": r, "overall_rating": 5 - r}
            for pid, n, ranks in [("000864-0061", 3, [2, 1, 3]), ("000864-0062", 2, [1, 2])]
            for k, r in enumerate(ranks)]
    return write_parquet(path, rows, schema)


# ---- each format loads into the project's records ----------------------------------------------


def test_hpdv3_path1_is_preferred_and_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    ds = load_dataset(write_hpdv3(tmp_path / "HPDv3"))
    assert [r.label_rank for r in ds.records] == [[1, 2], [1, 2]] and ds.task == "t2i"
    r0 = ds.records[0]
    assert r0.prompt == "a red square" and r0.images[0].uri == str(tmp_path / "HPDv3" / "images" / "u0.jpg")
    assert r0.meta == {"format": "hpdv3", "model1": "flux", "model2": "infinity"}


def test_a_missing_image_names_the_record_and_the_formats_field(tmp_path: Path, capsys) -> None:
    f = write_hpdv3(tmp_path, missing=True)
    assert main(["data", "validate", str(f)]) == 2
    out = " ".join(capsys.readouterr().out.split())
    assert "format: hpdv3 (detected" in out
    assert "record 1, field 'path2': image 1: image file not found" in out
    with pytest.raises(InputError) as e:
        load_dataset(f)
    assert e.value.record == 1 and e.value.field == "path2"


def test_pickapic_parquet_with_embedded_bytes_ties_and_unlabelled_rows(tmp_path: Path, capsys) -> None:
    f = write_pickapic(tmp_path / "test_unique.parquet")
    with pytest.raises(InputError) as e:  # the 0.5/0.5 row is a tie: refused unless ties are allowed
        load_dataset(f)
    assert e.value.record == 2 and e.value.field == "label_0" and "--allow-ties" in str(e.value)
    ds = load_dataset(f, allow_ties=True)
    assert [r.label_rank for r in ds.records] == [[1, 2], [2, 1], [1, 1]]
    assert ds.records[0].images[0].uri.startswith("data:image/jpeg;base64,")
    assert ds.records[0].images[0].load().getpixel((8, 8))[0] > 150
    assert ds.records[0].meta["ranking_id"] == 1 and "created_at" not in ds.records[0].meta
    assert any(n.record == 3 and n.field == "has_label" for n in ds.notes)  # skipped, noted
    assert main(["data", "validate", str(f), "--allow-ties"]) == 0
    assert "format: pickapic (detected" in capsys.readouterr().out


def test_pickapic_broken_bytes_and_bad_labels_are_named_without_printing_bytes(tmp_path: Path, capsys) -> None:
    good = img_bytes((1, 2, 3))
    f = write_pickapic(tmp_path / "bad.parquet", [
        {"caption": "a", "jpg_0": JUNK, "jpg_1": good, "label_0": 1.0, "label_1": 0.0},
        {"caption": "b", "jpg_0": good, "jpg_1": None, "label_0": 0.0, "label_1": 1.0},
        {"caption": "c", "jpg_0": good, "jpg_1": good, "label_0": 0.3, "label_1": 0.7},
        {"caption": " ", "jpg_0": good, "jpg_1": JUNK, "label_0": 1.0, "label_1": 0.0}])
    assert main(["data", "validate", str(f)]) == 2
    out = " ".join(capsys.readouterr().out.split())  # the console wraps long lines
    assert "record 0, field 'jpg_0': image 0:" in out and "unreadable" in out
    assert "record 1, field 'jpg_1': image 1:" in out
    assert "record 2, field 'label_0': label_0/label_1 must be 1/0, 0/1 or 0.5/0.5 (a tie), got 0.3/0.7" in out
    assert "record 3, field 'caption': missing or empty prompt" in out and "expected one of" not in out
    assert "garbage" not in out and "\\x00" not in out and "\\x89" not in out


def test_editreward_bench_letters_follow_comparison_type_and_ties_need_allow_ties(tmp_path: Path) -> None:
    f = write_editreward(tmp_path / "train-00000-of-00001.parquet")
    ds = load_dataset(f, allow_ties=True)
    assert ds.task == "edit" and [r.label_rank for r in ds.records] == [[1, 2], [2, 1], [1, 1]]
    r1 = ds.records[1]
    assert r1.source is not None and r1.prompt == "make it red (1)"
    assert r1.meta["subset"] == "3pair" and r1.meta["group"] == "s1" and r1.meta["comparison_type"] == "AvsC"
    with pytest.raises(InputError, match="record 2, field 'ranking': ranks \\[1, 1\\] contain a tie"):
        load_dataset(f)
    bad = write_editreward(tmp_path / "bad.parquet", [("B>C", "AvsB", "2pair")])
    with pytest.raises(InputError, match="field 'ranking'.*comparison_type 'AvsB'.*got 'B>C'"):
        load_dataset(bad)
    table = pq.read_table(f).to_pylist()
    table[0]["source_image"], table[1]["source_image"] = None, struct(JUNK)
    broken = write_parquet(tmp_path / "broken.parquet", table, pq.read_schema(f))
    with pytest.raises(InputError) as e:
        load_dataset(broken, allow_ties=True)
    assert "record 0, field 'source_image': edit record without a source image" in str(e.value)
    assert "record 1, field 'source_image': source image:" in str(e.value) and "garbage" not in str(e.value)


def test_editreward_bench_layout_loads_from_a_glob_of_subset_folders(tmp_path: Path, capsys) -> None:
    root = tmp_path / "EditReward-Bench"
    write_editreward(root / "2pair" / "train-00000-of-00001.parquet", [("A>B", None, "2pair")])
    write_editreward(root / "3pair" / "train-00000-of-00002.parquet", [("C>A", "AvsC", "3pair")])
    write_editreward(root / "3pair" / "train-00001-of-00002.parquet", [("B>C", "BvsC", "3pair")])
    ds = load_dataset(root / "*" / "train-*.parquet")
    assert len(ds.records) == 2 and ds.name == "EditReward-Bench"  # the 3pair rows duplicate each other's images
    assert ds.records[0].meta["file"].endswith("2pair/train-00000-of-00001.parquet")
    assert main(["data", "validate", str(root / "**" / "*.parquet")]) == 0
    out = capsys.readouterr().out
    assert "format: editreward-bench (detected" in out and "duplicates record 0 of" in out
    with pytest.raises(InputError, match="holds no .json/.jsonl/.yaml/.parquet file"):
        load_dataset(root)  # the files are in sub-folders: a folder reads only what is directly inside it


def test_mmrb2_t2i_and_edit_json_release(tmp_path: Path) -> None:
    t2i = load_dataset(write_mmrb2_json(tmp_path, "t2i"))
    assert t2i.task == "t2i" and len(t2i.records) == 1 and t2i.records[0].label_rank == [2, 1]  # chosen B
    assert t2i.records[0].meta["model_b"] == "gpt-image-1" and t2i.records[0].meta["prompt_source"] == "oneigbench"
    note = t2i.notes[0]
    assert note.record == 1 and "responses with 1 and 2 images: skipped" in note.message
    assert note.field == "response_b.response_content" and not note.fatal
    edit = load_dataset(write_mmrb2_json(tmp_path, "edit"))
    r = edit.records[0]
    assert edit.task == "edit" and r.prompt == "make the square red"
    assert r.source is not None and r.source.uri == str(tmp_path / "input_images" / "src.png")


def test_mmrb2_hugging_face_rows_and_response_only_files(tmp_path: Path) -> None:
    ds = load_dataset(write_mmrb2_hf(tmp_path / "edit.parquet"))
    r = ds.records[0]
    assert r.task == "edit" and r.prompt == "make the square red" and r.label_rank == [1, 2]  # "a" → A
    assert r.source is not None and r.source.uri.startswith("data:image/png") and r.meta["prompt_metadata"] == {"id": 3}
    assert r.meta["human_annotations"] == [5, 6, 6] and r.meta["model_a"] == "m1"
    only = tmp_path / "t2i_response_only.json"
    only.write_text(json.dumps({"pairs": [{"id": "x", "chosen": "A", "response_a": {}, "response_b": {}}]}))
    with pytest.raises(InputError, match="field 'prompt_content': no prompt_content.*build_from_hf.py"):
        load_dataset(only)


def test_hpdv2_ranks_become_listwise_competition_ranks(tmp_path: Path) -> None:
    f = write_hpdv2(tmp_path)
    with pytest.raises(InputError, match="image file not found"):  # the images live in the test/ folder
        load_dataset(f)
    ds = load_dataset(f, root=tmp_path / "test", allow_ties=True)
    assert [r.label_rank for r in ds.records] == [[2, 1, 4, 3], [1, 1]]
    assert ds.records[0].preferred_index() == 1 and len(ds.records[0].images) == 4


def test_hpdv2_train_rows_with_embedded_images(tmp_path: Path) -> None:
    schema = pa.schema([("prompt", pa.string()), ("image", pa.list_(HF_IMAGE)),
                        ("human_preference", pa.list_(pa.int8()))])
    f = write_parquet(tmp_path / "train.parquet", [
        {"prompt": "p", "image": [struct(img_bytes((9, 9, 9))), struct(img_bytes((200, 9, 9)))],
         "human_preference": [0, 1]}], schema)
    assert detect_format(f) == "hpdv2"
    assert load_dataset(f).records[0].label_rank == [2, 1]


def test_imagereward_test_json_with_an_image_root_and_ties(tmp_path: Path) -> None:
    f = write_imagereward(tmp_path)
    ds = load_dataset(f, root=tmp_path / "test_images", allow_ties=True)
    assert ds.records[0].label_rank == [1, 2, 4, 2] and ds.records[0].meta["id"] == "000001-0001"
    assert competition_ranks([1, 2, 5, 3]) == [1, 2, 4, 3] and competition_ranks([1, "x"]) is None


def test_imagerewarddb_rows_are_grouped_by_prompt(tmp_path: Path) -> None:
    ds = load_dataset(write_imagerewarddb(tmp_path / "metadata-test.parquet"))
    assert [(r.idx, r.label_rank) for r in ds.records] == [(0, [2, 1, 3]), (3, [1, 2])]
    assert ds.records[0].meta["prompt_id"] == "000864-0061" and ds.records[0].meta["overall_rating"] == [3, 4, 2]


# ---- detection, a wrong format named, the CLI -----------------------------------------------------


def test_each_format_is_detected_from_its_fields(tmp_path: Path) -> None:
    files = {"hpdv3": write_hpdv3(tmp_path / "a"), "pickapic": write_pickapic(tmp_path / "b.parquet"),
             "editreward-bench": write_editreward(tmp_path / "c.parquet"),
             "mmrb2": write_mmrb2_json(tmp_path / "d", "t2i"), "hpdv2": write_hpdv2(tmp_path / "e"),
             "imagereward": write_imagereward(tmp_path / "f"),
             "imagerewarddb": write_imagerewarddb(tmp_path / "g.parquet")}
    files["mmrb2-hf"] = write_mmrb2_hf(tmp_path / "h.parquet")
    for name, f in files.items():
        assert detect_format(f) == name.removesuffix("-hf"), name
    lines = tmp_path / "a" / "test.jsonl"  # HPDv3 rows as JSON lines: read line by line
    lines.write_text("".join(json.dumps(r) + "\n" for r in json.loads(files["hpdv3"].read_text())))
    assert detect_format(lines) == "hpdv3" and len(load_dataset(lines).records) == 2
    own = tmp_path / "own.jsonl"
    own.write_text(json.dumps({"prompt": "p", "path1": "a", "path2": "b", "label_rank": [1, 2]}) + "\n")
    assert detect_format(own) == "arr"  # label_rank marks the reference / project format
    assert set(FORMATS) >= {"hpdv3", "mmrb2", "editreward-bench", "pickapic", "hpdv2", "imagereward", "arr"}


def test_a_wrong_format_named_is_refused_with_what_the_file_looks_like(tmp_path: Path, capsys) -> None:
    f = write_pickapic(tmp_path / "p.parquet")
    assert main(["data", "validate", str(f), "--format", "hpdv3"]) == 2
    err = capsys.readouterr().err
    assert "not in the hpdv3 format: its rows lack 'path1', 'path2', 'prompt'" in err and "looks like pickapic" in err
    assert main(["data", "validate", str(f), "--format", "nope"]) == 2
    assert "unknown format 'nope'" in capsys.readouterr().err
    mixed = tmp_path / "mixed"
    write_hpdv3(mixed)
    write_pickapic(mixed / "x.parquet")
    with pytest.raises(InputError, match="different formats"):
        scan_dataset(mixed)


def test_import_prints_the_format_and_the_pairs_load_for_judging(tmp_path: Path, capsys) -> None:
    f = write_hpdv3(tmp_path / "h")
    assert main(["data", "import", str(f), "--name", "hpdv3-test", "--format", "HPDv3"]) == 0
    out = capsys.readouterr().out
    assert "format: hpdv3 (named" in out and "imported 2 records" in out
    from arr_cli.induce import _load_pairs

    ds = _load_pairs(write_editreward(tmp_path / "e.parquet", [("A>B", None, "2pair")]), False, fmt=None)
    assert ds.task == "edit" and "format: editreward-bench (detected" in capsys.readouterr().out


def test_parquet_is_read_by_batches_not_as_one_table(tmp_path: Path, monkeypatch) -> None:
    f = write_pickapic(tmp_path / "p.parquet")

    def whole_table(*a, **k):
        raise AssertionError("read the whole table")

    monkeypatch.setattr(pq, "read_table", whole_table)
    assert len(load_dataset(f, allow_ties=True, format="pickapic").records) == 3
