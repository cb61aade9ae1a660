"""`arr eval protocol NAME …` end to end: the scene VLM in process and a real OpenAI-compatible HTTP
server on 127.0.0.1 (the quirk server of tests/vlm, answering from the scene VLM), plus the real public
files when ``../shared/data`` is present."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from arr_cli import main
from arr_core.store.store import Store
from arr_core.vlm.openai_backend import forget_endpoints
from tests.vlm.quirks import QuirkVLM

from . import protocol_fixtures as fx


def _eid(capsys) -> str:
    return [ln.strip() for ln in capsys.readouterr().out.splitlines() if ln.strip().startswith("ev-")][-1]


def _summary(home: Path, eid: str) -> dict:
    row = Store(home).fetchall("eval_result_get", [eid])[0]
    return json.loads(row["metrics"])["summary"]


def test_cli_imgedit_report_and_errors(tmp_path: Path, capsys) -> None:
    f, home, out = fx.imgedit(tmp_path / "ie"), tmp_path / "home", tmp_path / "imgedit.html"
    args = ["eval", "protocol", "imgedit", "--prompts", str(f["edits"]), "--images", str(f["edited"]),
            "--sources", str(f["origin"]), "--n-boot", "100", "--home", str(home)]
    assert main([*args, "--report", str(out)]) == 0
    eid = _eid(capsys)
    assert _summary(home, eid)["imgedit/overall"] == pytest.approx(4.0)
    html = out.read_text()
    assert "Differences from the official protocol" in html and "imgedit-basic-v1" in html
    assert "offline scene VLM" in html  # simulated judges are labelled
    again = tmp_path / "again.html"
    assert main(["report", eid[:9], "--out", str(again), "--home", str(home)]) == 0
    assert again.read_text() == html
    capsys.readouterr()
    assert main(["report", "--list", "--home", str(home)]) == 0
    assert f"│ {eid} │ imgedit │" in capsys.readouterr().out  # whole id, under the benchmark's own kind

    (f["edited"] / "3.png").unlink()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "basic_edit.json" in err and "record 3" in err and "edited image" in err
    assert main(["eval", "protocol", "nope", "--prompts", str(f["edits"]), "--images", str(f["edited"]),
                 "--home", str(home)]) == 2
    assert "unknown protocol 'nope'" in capsys.readouterr().err


@pytest.mark.parametrize("quirk,names", [("gemini", ("gedit", "unigenbench")), ("no_json_schema", ("tiif", "gedit"))])
def test_cli_through_a_real_http_endpoint_matches_the_scene_vlm(tmp_path: Path, capsys, monkeypatch,
                                                                quirk: str, names: tuple[str, ...]) -> None:
    """Fenced JSON after thinking (Gemini) and a server without structured output (text fallback) give
    the same scores as the scene VLM in process."""
    forget_endpoints()
    t, g, u = fx.tiif(tmp_path / "tiif"), fx.gedit(tmp_path / "gedit"), fx.unigenbench(tmp_path / "ugb", 1)
    runs = {"tiif": ["--prompts", str(t["root"]), "--images", str(t["images"])],
            "gedit": ["--prompts", str(g["meta"]), "--images", str(g["images"])],
            "unigenbench": ["--prompts", str(u["csv"]), "--images", str(u["images"]), "--images-per-prompt", "1"]}
    runs = {n: runs[n] for n in names}
    direct = {}
    for name, a in runs.items():
        assert main(["eval", "protocol", name, *a, "--n-boot", "50", "--home", str(tmp_path / "h1")]) == 0
        direct[name] = _summary(tmp_path / "h1", _eid(capsys))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with QuirkVLM(quirk) as srv:
        for name, a in runs.items():
            assert main(["eval", "protocol", name, *a, "--n-boot", "50", "--backend", "openai", "--model",
                         "scene-vlm-1", "--base-url", srv.base_url, "--home", str(tmp_path / "h2")]) == 0
            got = _summary(tmp_path / "h2", _eid(capsys))
            keys = [k for k in direct[name] if k.startswith(name)]
            assert keys and {k: got[k] for k in keys} == {k: direct[name][k] for k in keys}, name
            assert got["abstained"] == 0 and got["transport_failures"] == 0
        outcomes = srv.log.outcomes()
    if quirk == "no_json_schema":
        assert outcomes["400:json_schema"] == 1  # learnt once, then the text fallback
    forget_endpoints()


def test_real_public_files_load(shared_data: Path) -> None:
    """The real benchmark files in ../shared/data parse with the protocols' loaders."""
    from arr_core.bench.prompt_sets import load_tiif_bench
    from arr_core.bench.protocols import imgedit, tiif, unigenbench

    _, prompts = imgedit.load_judge_prompts(None, shared_data / "imgedit_bench" / "basic_edit.json")
    assert set(prompts) == set(imgedit.TYPES)  # all nine types, three labels each (checked by the loader)
    for name in ("test_prompts_en.csv", "test_prompts_zh.csv"):
        lang, recs = unigenbench.load(shared_data / "unigenbench" / name, None)
        assert len(recs) == 600 and lang in ("en", "zh")  # every checkpoint has an official definition
    items = load_tiif_bench(shared_data / "tiif_bench", split="testmini")
    assert {it.category for it in items} <= {t for ts in tiif.GROUPS.values() for t in ts}
