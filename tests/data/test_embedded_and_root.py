"""Hugging Face-style Parquet with embedded image structs ({bytes, path}) and the ARR reference's
example layout (image paths relative to the repository root, `--root`): issue 24, item 1 (first part)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from arr_cli import main
from arr_core.data.dataset import load_dataset
from arr_core.data.records import PreferenceRecord


def _png_bytes(colour: tuple[int, int, int], side: int = 16, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (side, side), colour).save(buf, format=fmt)
    return buf.getvalue()


def _hf_parquet(path: Path, rows: list[dict]) -> Path:
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    schema = pa.schema([("prompt", pa.string()), ("images", pa.list_(image)), ("label_rank", pa.list_(pa.int64()))])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return path


def test_parquet_with_embedded_image_structs_loads(tmp_path: Path) -> None:
    a, b = _png_bytes((200, 0, 0)), _png_bytes((0, 0, 200), fmt="JPEG")
    f = _hf_parquet(tmp_path / "train.parquet", [
        {"prompt": "a red square", "images": [{"bytes": a, "path": "a.png"}, {"bytes": b, "path": "b.jpg"}],
         "label_rank": [1, 2]},
        {"prompt": "a blue square", "images": [{"bytes": b, "path": None}, {"bytes": a, "path": None}],
         "label_rank": [1, 2]}])
    ds = load_dataset(f)
    assert len(ds.records) == 2 and ds.task == "t2i"
    r0: PreferenceRecord = ds.records[0]
    assert r0.images[0].uri.startswith("data:image/png;base64,") and r0.images[1].uri.startswith("data:image/jpeg")
    assert r0.images[0].load().getpixel((3, 3)) == (200, 0, 0)
    again = load_dataset(f)
    assert [r.pair_id for r in again.records] == [r.pair_id for r in ds.records]  # content-derived ids


def test_broken_embedded_bytes_are_named_without_printing_them(tmp_path: Path, capsys) -> None:
    junk = b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 50
    f = _hf_parquet(tmp_path / "bad.parquet", [
        {"prompt": "a red square", "images": [{"bytes": junk, "path": "a.png"}, {"bytes": _png_bytes((1, 2, 3)),
                                                                                "path": "b.png"}],
         "label_rank": [1, 2]}])
    assert main(["data", "validate", str(f)]) == 2
    out = capsys.readouterr().out
    assert "record 0" in out and "unreadable" in out
    assert "garbage" not in out and "\\x00" not in out and "\\x89" not in out


def test_reference_layout_with_paths_relative_to_a_root(tmp_path: Path, capsys) -> None:
    repo = tmp_path / "repo"
    (repo / "examples" / "images").mkdir(parents=True)
    (repo / "examples" / "images" / "a.png").write_bytes(_png_bytes((200, 0, 0)))
    (repo / "examples" / "images" / "b.png").write_bytes(_png_bytes((0, 0, 200)))
    f = repo / "examples" / "t2i_pairs.json"
    f.write_text(json.dumps([{"query": "a red square", "response": ["examples/images/a.png", "examples/images/b.png"],
                              "label_rank": [1, 2]}]))
    assert main(["data", "validate", str(f)]) == 2  # relative to the file's folder they do not exist
    assert "image file not found" in capsys.readouterr().out
    assert main(["data", "validate", str(f), "--root", str(repo)]) == 0
    assert load_dataset(f, root=repo).records[0].images[0].uri == str(repo / "examples" / "images" / "a.png")
    assert main(["data", "validate", str(f), "--root", str(repo / "missing")]) == 2
    assert "--root" in capsys.readouterr().err
