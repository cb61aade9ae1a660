"""Hostile files are bounded (issue 20, item 9): each is exit 2 naming the file/record/field, within
bounded time and memory, never a traceback; no request leaves the machine without --allow-remote."""

from __future__ import annotations

import http.server
import io
import json
import threading
import time
import tracemalloc
from pathlib import Path

import pytest
from PIL import Image

from arr_cli import main

BOMB = "".join(f"{k}: &{k} [{', '.join(['*' + prev] * 9) if prev else ', '.join(['lol'] * 9)}]\n"
               for prev, k in zip(["", *"abcdefgh"], "abcdefghi", strict=True)) + "pairs: [*i]\n"


def _png(path: Path, side: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (side, side), (10, 20, 30)).save(path, format="PNG")
    return path


def _pairs(root: Path, a: str, b: str, **extra: object) -> Path:
    p = root / "pairs.json"
    p.write_text(json.dumps([{"query": "a red circle", "response": [a, b], "label_rank": [1, 2], **extra}]))
    return p


def test_yaml_alias_bomb_is_refused_at_once(tmp_path: Path, capsys) -> None:
    f = tmp_path / "bomb.yaml"
    f.write_text(BOMB)
    t0 = time.monotonic()
    assert main(["data", "validate", str(f)]) == 2
    assert time.monotonic() - t0 < 10
    assert "expands to more than" in capsys.readouterr().err
    assert main(["data", "import", str(f), "--name", "x", "--home", str(tmp_path / "h")]) == 2


def test_deeply_nested_json_is_refused(tmp_path: Path, capsys) -> None:
    f = tmp_path / "deep.json"
    f.write_text("[" * 100_000 + "]" * 100_000)
    assert main(["data", "validate", str(f)]) == 2
    assert "nested too deeply" in capsys.readouterr().err


def test_huge_image_is_refused_from_its_header_in_bounded_memory(tmp_path: Path, capsys) -> None:
    from arr_core.data.images import ImageReadError, inspect_image

    big = _png(tmp_path / "img" / "big.png", 12000)  # ~600 MB decoded; a few hundred kB as PNG
    tracemalloc.start()
    with pytest.raises(ImageReadError, match="12000x12000, larger than the limit"):
        inspect_image(big.read_bytes())
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 50 * 2**20, f"peak {peak / 2**20:.0f} MB: the pixels were decoded"
    f = _pairs(tmp_path, "img/big.png", str(_png(tmp_path / "img" / "ok.png", 16).relative_to(tmp_path)))
    assert main(["data", "validate", str(f)]) == 2
    out = " ".join(capsys.readouterr().out.split())
    assert "record 0" in out and "larger than the limit of 4096 px" in out


def test_wrong_types_are_named_not_tracebacks(tmp_path: Path, capsys) -> None:
    a = _png(tmp_path / "img" / "a.png", 16)
    _png(tmp_path / "img" / "b.png", 17)
    f = _pairs(tmp_path, str(a.relative_to(tmp_path)), "img/b.png", image_sha256=12345)
    assert main(["data", "validate", str(f)]) == 2
    out = " ".join(capsys.readouterr().out.split())
    assert "image_sha256" in out and "must be a list of sha256 strings" in out


class _Counting(http.server.BaseHTTPRequestHandler):
    hits = 0
    body = b""

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        type(self).hits += 1
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        pass


def test_remote_images_need_an_explicit_opt_in_and_are_size_capped(tmp_path: Path, capsys, monkeypatch) -> None:
    from arr_core.data import images

    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 0, 0)).save(buf, format="PNG")
    _Counting.body = buf.getvalue() * 4  # a valid PNG followed by junk: 4× its size on the wire
    server = http.server.HTTPServer(("127.0.0.1", 0), _Counting)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/a.png"
        f = _pairs(tmp_path, url, str(_png(tmp_path / "img" / "b.png", 16).relative_to(tmp_path)))
        assert main(["data", "validate", str(f)]) == 2
        assert "--allow-remote" in " ".join(capsys.readouterr().out.split()) and _Counting.hits == 0
        monkeypatch.setattr(images, "MAX_IMAGE_BYTES", len(_Counting.body) - 1)
        assert main(["data", "validate", str(f), "--allow-remote"]) == 2
        assert "larger than" in capsys.readouterr().out and _Counting.hits == 1
    finally:
        server.shutdown()
