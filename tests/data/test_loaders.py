"""Loading the ARR reference format (T2I and edit), the project's own JSONL/Parquet, digests, splits."""

from __future__ import annotations

import json
import shutil

import pytest
from PIL import Image

from arr_core.data import load_dataset
from arr_core.data.dataset import scan_dataset, split_of, write_jsonl, write_parquet


@pytest.mark.parametrize("fmt", ["json", "jsonl", "yaml"])
def test_reference_t2i_formats_load_equal(tmp_path, writers, fmt):
    path = writers.t2i(tmp_path / fmt, n=4, fmt=fmt)
    ds = load_dataset(path)
    assert len(ds) == 4 and ds.task == "t2i"
    r0 = ds.records[0]
    assert r0.prompt == "a photo of thing 0" and r0.label_rank == [1, 2] and r0.preferred_index() == 0
    assert ds.records[1].preferred_index() == 1
    assert all(len(r.images) == 2 for r in ds.records)
    # The same content in another serialisation has the same digest.
    assert ds.digest == load_dataset(writers.t2i(tmp_path / "ref", n=4, fmt="json")).digest


def test_reference_edit_loads_with_aliases(edit_dataset):
    ds = load_dataset(edit_dataset)
    assert ds.task == "edit" and len(ds) == 3
    r = ds.records[0]
    assert r.source is not None and len(r.images) == 2 and r.label_rank == [2, 1]
    assert r.source.load().mode == "RGB"


def test_own_jsonl_and_parquet_round_trip(tmp_path, t2i_dataset, edit_dataset):
    for src in (t2i_dataset, edit_dataset):
        ds = load_dataset(src)
        j = write_jsonl(ds.records, tmp_path / f"{src.parent.name}.jsonl")
        p = write_parquet(ds.records, tmp_path / f"{src.parent.name}.parquet")
        for other in (j, p):
            again = load_dataset(other, allow_outside=True)
            assert again.digest == ds.digest
            assert [r.pair_id for r in again.records] == [r.pair_id for r in ds.records]


def test_digest_ignores_file_names_but_not_pixels(tmp_path, writers):
    a = writers.t2i(tmp_path / "a", n=3)
    base = load_dataset(a).digest
    # Rename an image and point the record at the new name: same digest.
    recs = json.loads(a.read_text())
    old = tmp_path / "a" / recs[0]["response"][0]
    shutil.move(old, old.with_name("renamed.png"))
    recs[0]["response"][0] = "img/renamed.png"
    a.write_text(json.dumps(recs))
    assert load_dataset(a).digest == base
    # Change one pixel: new digest.
    im = Image.open(old.with_name("renamed.png")).convert("RGB")
    im.putpixel((3, 3), (0, 0, 0))
    im.save(old.with_name("renamed.png"))
    assert load_dataset(a).digest != base


def test_relative_paths_resolve_against_dataset_folder(tmp_path, writers, monkeypatch):
    path = writers.t2i(tmp_path / "d", n=2)
    monkeypatch.chdir(tmp_path)  # cwd is not the dataset folder
    ds = load_dataset(path)
    assert ds.records[0].images[0].uri == str((tmp_path / "d" / "img" / "0_a.png").resolve())


def test_data_url_images_are_accepted(tmp_path, writers):
    from arr_core.data.images import to_data_url

    url = to_data_url(Image.new("RGB", (8, 8), (9, 9, 9)))
    url2 = to_data_url(Image.new("RGB", (8, 8), (90, 9, 9)))
    p = writers.dump(tmp_path, [{"query": "q", "response": [url, url2], "label_rank": [2, 1]}], "json")
    ds = load_dataset(p)
    assert ds.records[0].images[0].load().getpixel((0, 0)) == (9, 9, 9)


def test_splits_are_deterministic_and_keyed_by_digest(tmp_path, writers):
    ds = load_dataset(writers.t2i(tmp_path / "s", n=6))
    s1, s2 = ds.split(), ds.split()
    assert {k: [r.pair_id for r in v] for k, v in s1.items()} == {k: [r.pair_id for r in v] for k, v in s2.items()}
    assert sum(len(v) for v in s1.values()) == 6
    for split, recs in s1.items():
        assert all(split_of(r.pair_id) == split for r in recs)
    # Fractions: all-seed and all-test extremes.
    assert len(ds.split(seed_fraction=1.0, validation_fraction=0.0)["seed"]) == 6
    assert len(ds.split(seed_fraction=0.0, validation_fraction=0.0)["test"]) == 6


def test_pointwise_records(tmp_path, writers):
    a = writers.png(tmp_path / "p" / "a.png", (1, 2, 3))
    p = writers.dump(tmp_path / "p", [{"prompt": "q", "image": "a.png", "label_score": [0.7]}], "jsonl")
    ds = load_dataset(p)
    assert ds.records[0].task == "pointwise" and ds.records[0].label_score == [0.7]
    assert a.exists()


def test_mode_conversion_is_noted_not_fatal(tmp_path, writers):
    root = tmp_path / "m"
    writers.png(root / "a.png", (10, 20, 30), mode="P")
    writers.png(root / "b.png", (10, 20, 90), mode="L")
    p = writers.dump(root, [{"query": "q", "response": ["a.png", "b.png"], "label_rank": [1, 2]}], "json")
    records, problems = scan_dataset(p)
    assert len(records) == 1
    assert [p.fatal for p in problems] == [False, False]
    assert "converted to RGB" in str(problems[0])
    assert records[0].images[1].load().mode == "RGB"
