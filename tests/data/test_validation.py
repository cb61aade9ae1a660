"""Every bad-input case of the loader gives an error naming file, record and field; nothing is written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from arr_cli import main
from arr_core.data import load_dataset
from arr_core.errors import InputError


def _good(tmp_path: Path, writers) -> tuple[Path, list[dict]]:
    path = writers.t2i(tmp_path / "d", n=3)
    return path, json.loads(path.read_text())


def _expect(path: Path, *fragments: str, **kw) -> InputError:
    with pytest.raises(InputError) as ei:
        load_dataset(path, **kw)
    msg = str(ei.value)
    assert str(path) in msg
    for f in fragments:
        assert f in msg, msg
    return ei.value


def test_invalid_json(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text('[{"query": "x",]')
    _expect(p, "invalid JSON at line 1")


def test_invalid_jsonl_names_line(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"query": "x"}\n{oops\n')
    _expect(p, "line 2")


def test_invalid_yaml(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("- query: [unclosed\n")
    _expect(p, "invalid YAML")


def test_empty_dataset(tmp_path):
    p = tmp_path / "empty.json"
    p.write_text("[]")
    _expect(p, "empty")


@pytest.mark.parametrize("mutate,fragments", [
    (lambda r: r.pop("query"), ["record 1", "'query'", "missing or empty prompt"]),
    (lambda r: r.update(response=r["response"][:1]), ["record 1", "'response'", "at least 2"]),
    (lambda r: r.update(label_rank=[1, 2, 3]), ["record 1", "'label_rank'", "3 ranks for 2"]),
    (lambda r: r.update(label_rank=[1, 3]), ["record 1", "'label_rank'", "1..2"]),
    (lambda r: r.update(label_rank=[1, 1]), ["record 1", "'label_rank'", "tie"]),
    (lambda r: r.pop("label_rank"), ["record 1", "'label_rank'", "missing"]),
    (lambda r: r.update(response=["img/nope.png", r["response"][1]]), ["record 1", "'response'", "not found"]),
    (lambda r: r.update(response=["../../etc/passwd", r["response"][1]]), ["record 1", "escapes the dataset folder"]),
])
def test_record_errors_name_record_and_field(tmp_path, writers, mutate, fragments):
    path, recs = _good(tmp_path, writers)
    mutate(recs[1])
    path.write_text(json.dumps(recs))
    _expect(path, *fragments)


def test_ties_allowed_when_asked(tmp_path, writers):
    path, recs = _good(tmp_path, writers)
    recs[0]["label_rank"] = [1, 1]
    path.write_text(json.dumps(recs))
    assert load_dataset(path, allow_ties=True).records[0].label_rank == [1, 1]


def test_truncated_and_unreadable_images(tmp_path, writers):
    path, recs = _good(tmp_path, writers)
    img = path.parent / recs[2]["response"][0]
    img.write_bytes(img.read_bytes()[:40])  # truncated PNG
    (path.parent / "img" / "text.png").write_text("not an image")
    recs[1]["response"][1] = "img/text.png"
    path.write_text(json.dumps(recs))
    err = _expect(path, "2 invalid record(s)", "record 1", "record 2", "unreadable or truncated")
    assert err.record is None  # several records: listed in the message


def test_outside_path_allowed_with_flag(tmp_path, writers):
    path, recs = _good(tmp_path, writers)
    outside = writers.png(tmp_path / "elsewhere" / "x.png", (1, 1, 1))
    recs[0]["response"][0] = str(outside)
    path.write_text(json.dumps(recs))
    _expect(path, "escapes the dataset folder", "--allow-outside")
    assert load_dataset(path, allow_outside=True).records[0].images[0].uri == str(outside.resolve())


def test_edit_without_source(tmp_path, edit_dataset):
    recs = json.loads(edit_dataset.read_text())
    recs[0].pop("base_image")
    edit_dataset.write_text(json.dumps(recs))
    _expect(edit_dataset, "record 0", "source_image", "without a source image", task="edit")


def test_oversized_image(tmp_path, writers):
    path, _ = _good(tmp_path, writers)
    _expect(path, "larger than the limit of 8 px", max_image_side=8)


def test_duplicates_reported_and_dropped(tmp_path, writers):
    path, recs = _good(tmp_path, writers)
    recs.append(dict(recs[0]))
    path.write_text(json.dumps(recs))
    ds = load_dataset(path)
    assert len(ds) == 3
    assert any("duplicates record 0" in str(n) for n in ds.notes)


def test_cli_exit_2_and_nothing_written(tmp_path, writers, capsys, monkeypatch):
    path, recs = _good(tmp_path, writers)
    recs[1]["label_rank"] = [2, 2]
    path.write_text(json.dumps(recs))
    home = tmp_path / "home"
    assert main(["data", "validate", str(path)]) == 2
    out = capsys.readouterr().out
    assert "record 1" in out and "label_rank" in out
    assert main(["data", "import", str(path), "--name", "x", "--home", str(home)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "record 1" in err
    # Nothing was written: the store has no dataset.
    from arr_core.store import Store

    assert Store(home).list_datasets() == []


def test_cli_import_ok(tmp_path, t2i_dataset, capsys):
    assert main(["data", "validate", str(t2i_dataset)]) == 0
    assert main(["data", "import", str(t2i_dataset), "--name", "demo", "--home", str(tmp_path / "h")]) == 0
    out = capsys.readouterr().out
    assert "imported 4 records as ds-" in out
