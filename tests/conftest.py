"""Suite-wide settings: offline, quiet, and never writing into the checkout's ./.arr."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    """Every test gets its own ARR_HOME unless it sets one itself."""
    monkeypatch.setenv("ARR_HOME", str(tmp_path_factory.mktemp("arr_home")))


# ---- reference-format fixtures, made on the fly -------------------------------------------
# Small deterministic PNGs (Pillow) plus a dataset file in the ARR reference layout: a JSON array with
# `query`, `response` / `base_image` + `edited_images` and `label_rank`, paths relative to the file.





COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30), (30, 200, 200), (200, 30, 200)]


def png(path: Path, colour: tuple[int, int, int], size: int = 16, mode: str = "RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.new("RGB", (size, size), colour)
    im.putpixel((0, 0), (colour[0] // 2, 1, 2))  # not a flat image
    if mode != "RGB":
        im = im.convert(mode)
    im.save(path)
    return path


def write_t2i_dataset(root: Path, n: int = 4, *, fmt: str = "json") -> Path:
    recs = []
    for i in range(n):
        a = png(root / "img" / f"{i}_a.png", COLOURS[i % 6])
        b = png(root / "img" / f"{i}_b.png", COLOURS[(i + 1) % 6], size=17)
        recs.append({"query": f"a photo of thing {i}", "response": [str(a.relative_to(root)),
                     str(b.relative_to(root))], "label_rank": [1, 2] if i % 2 == 0 else [2, 1]})
    return dump(root, recs, fmt)


def write_edit_dataset(root: Path, n: int = 3) -> Path:
    recs = []
    for i in range(n):
        src = png(root / "img" / f"{i}_src.png", COLOURS[i % 6])
        e1 = png(root / "img" / f"{i}_e1.png", COLOURS[(i + 2) % 6])
        e2 = png(root / "img" / f"{i}_e2.png", COLOURS[(i + 3) % 6])
        recs.append({"instruction": f"make it colour {i}", "base_image": "img/" + src.name,
                     "edited_images": ["img/" + e1.name, "img/" + e2.name], "label_rank": [2, 1]})
    return dump(root, recs, "json")


def dump(root: Path, recs: list, fmt: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    if fmt == "json":
        p = root / "pairs.json"
        p.write_text(json.dumps(recs, indent=1))
    elif fmt == "jsonl":
        p = root / "pairs.jsonl"
        p.write_text("".join(json.dumps(r) + "\n" for r in recs))
    elif fmt == "yaml":
        import yaml

        p = root / "pairs.yaml"
        p.write_text(yaml.safe_dump(recs))
    else:
        raise ValueError(fmt)
    return p


@pytest.fixture
def t2i_dataset(tmp_path: Path) -> Path:
    return write_t2i_dataset(tmp_path / "t2i")


@pytest.fixture
def edit_dataset(tmp_path: Path) -> Path:
    return write_edit_dataset(tmp_path / "edit")


@pytest.fixture
def writers():
    """The fixture writers, for tests that build their own variants."""
    from types import SimpleNamespace

    return SimpleNamespace(t2i=write_t2i_dataset, edit=write_edit_dataset, png=png, dump=dump)
