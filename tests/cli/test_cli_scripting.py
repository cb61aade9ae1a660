"""Issue 25 item 5: scriptable read commands (--json), one flag name, ids that commands accept, content
sniffing on `arr store import`, summarised pair lists in `arr store diff`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from arr_cli import main
from arr_core.rubrics import RubricSet, Theme
from arr_core.store import Store

REFERENCE_TEXT = """Rubric 1:
Theme: Faithful object counts
- Tip: The number of each object matches the prompt.
"""


def _json_out(capsys: pytest.CaptureFixture[str]) -> object:
    return json.loads(capsys.readouterr().out)


def test_store_import_reads_the_format_from_the_content(tmp_path: Path, capsys) -> None:
    home = str(tmp_path / "home")
    rs = RubricSet.from_text(REFERENCE_TEXT)
    as_txt = tmp_path / "really_json.txt"  # JSON under a text name
    as_txt.write_text(rs.to_json())
    as_json = tmp_path / "really_text.json"  # reference text under a JSON name
    as_json.write_text(REFERENCE_TEXT)
    assert main(["store", "import", str(as_txt), "--home", home]) == 0
    assert "format: json" in capsys.readouterr().out
    assert main(["store", "import", str(as_json), "--home", home]) == 0
    assert "format: text" in capsys.readouterr().out
    assert {r["rubric_set_id"] for r in Store(home).list_rubric_sets()} >= {rs.id}
    broken = tmp_path / "broken.txt"  # JSON by content, broken: the error names the file as given
    broken.write_text('{"themes": [')
    assert main(["store", "import", str(broken), "--home", home]) == 2
    err = capsys.readouterr().err
    assert str(broken) in err and "read as json from its content" in err
    pq = tmp_path / "one.parquet"
    pq.write_bytes(b"PAR1" + b"\0" * 16)
    assert main(["store", "import", str(pq), "--home", home]) == 2
    assert "import the export folder" in capsys.readouterr().err


def test_store_diff_summarises_long_lists_and_json_has_them_all(tmp_path: Path, capsys) -> None:
    home = str(tmp_path / "home")
    pairs_a = [[f"p{i}", f"k{i}"] for i in range(40)]
    pairs_b = pairs_a[3:] + [["p-new", "k-new"]]
    a = RubricSet.from_text(REFERENCE_TEXT, metadata={"induction_pairs": pairs_a, "note": "a"})
    b = RubricSet(task="t2i", themes=[Theme(theme="Faithful object counts", tips=["No extra objects appear."])],
                  criteria=["No extra objects appear."], metadata={"induction_pairs": pairs_b, "note": "b"})
    for rs in (a, b):
        Store(home).put_rubric_set(rs)
    assert main(["store", "diff", a.id, b.id, "--home", home]) == 0
    out = capsys.readouterr().out
    assert "~ induction_pairs: 40 → 38 items (+1 added, −3 removed" in out and "k-new" not in out
    assert '~ note: "a" → "b"' in out
    assert main(["store", "diff", a.id, b.id, "--home", home, "--json"]) == 0
    d = _json_out(capsys)
    assert d["from"] == a.id and d["to"] == b.id and d["metadata_changed"]["induction_pairs"][1] == pairs_b
    assert d["criteria_added"] == ["No extra objects appear."]


def test_data_import_id_is_accepted_as_pairs_and_read_commands_print_json(tmp_path: Path, capsys) -> None:
    from arr_core.sim.world.pairs import make_pairs

    home = str(tmp_path / "home")
    path = make_pairs("t2i", 8, 0, tmp_path / "pairs", size=32)
    assert main(["data", "validate", str(path), "--json"]) == 0
    v = _json_out(capsys)
    assert v["ok"] and v["valid_records"] == 8 and v["format"] and v["digest"] and sum(v["splits"].values()) == 8
    assert main(["data", "import", str(path), "--name", "eight", "--home", home]) == 0
    dataset_id = capsys.readouterr().out.strip().splitlines()[-1]
    assert dataset_id.startswith("ds-") and dataset_id in {d["dataset_id"] for d in Store(home).list_datasets()}
    # The printed id is what --pairs takes (here for the judge, offline scene VLM).
    assert main(["judge", "--pairs", dataset_id, "--rubrics", "none", "--backend", "scene", "--home", home]) == 0
    out = capsys.readouterr().out
    # One name per quantity: the order gap (as given − reversed), the position gap (preferred 1st − 2nd).
    assert "order gap (as given − reversed)" in out and "position gap (preferred shown 1st − 2nd)" in out
    assert main(["judge", "--pairs", "ds-not-there", "--rubrics", "none", "--backend", "scene",
                 "--home", home]) != 0
    assert "ds-not-there" in capsys.readouterr().err
    assert main(["vlm", "cache-stats", "--home", home, "--json"]) == 0
    rows = _json_out(capsys)
    assert rows and {"backend", "model", "kind", "prompt_version", "n"} <= set(rows[0])
    assert main(["store", "ls", "--home", home, "--json"]) == 0
    assert [d["dataset_id"] for d in _json_out(capsys)["datasets"]] == [dataset_id]


def test_vlm_serve_takes_base_url_and_the_old_flag_warns(capsys) -> None:
    """One name for the endpoint flag across commands: --base-url (arr induce, judge, eval …)."""
    assert main(["vlm", "serve", "--backend", "openai", "--model", "m", "--base-url", "http://127.0.0.1:9/v1",
                 "--upstream-url", "http://127.0.0.1:9/v1", "--token", "t"]) == 2
    assert "give --base-url only" in capsys.readouterr().err
    # The old spelling still works (here up to the next check: proxy mode needs a token).
    assert main(["vlm", "serve", "--backend", "openai", "--model", "m", "--upstream-url",
                 "http://127.0.0.1:9/v1"]) == 2
    err = capsys.readouterr().err
    assert "--upstream-url is deprecated: use --base-url" in err and "--token" in err
    assert main(["vlm", "serve", "--help"]) == 0
    help_text = capsys.readouterr().out
    assert "--base-url" in help_text and "--upstream-url" not in help_text


def test_long_commands_show_progress_on_a_terminal_only(tmp_path: Path) -> None:
    """`arr judge` (like `arr induce`, `arr data import` and `arr eval generate`, through the same
    arr_cli.common.progress) draws a Rich progress display when stdout is a terminal
    (TTY_COMPATIBLE/TTY_INTERACTIVE make Rich treat the pipe as one) and nothing extra into a pipe."""
    import os
    import subprocess
    import sys

    from arr_core.sim.world.pairs import make_pairs

    path = make_pairs("t2i", 6, 0, tmp_path / "pairs", size=32)
    home = tmp_path / "home"
    base = {k: v for k, v in os.environ.items() if not k.startswith(("TTY_", "FORCE_COLOR"))}
    tty = {**base, "TTY_COMPATIBLE": "1", "TTY_INTERACTIVE": "1"}
    for argv, label in ((["judge", "--pairs", str(path), "--rubrics", "none", "--backend", "scene"], "judging 6 pairs"),):
        cmd = [sys.executable, "-m", "arr_cli", *argv, "--home", str(home)]
        on_tty = subprocess.run(cmd, env=tty, capture_output=True, text=True, timeout=300)
        piped = subprocess.run(cmd, env=base, capture_output=True, text=True, timeout=300)
        assert on_tty.returncode == 0 and piped.returncode == 0, on_tty.stderr + piped.stderr
        assert label in on_tty.stdout and "\x1b[?25l" in on_tty.stdout  # the live display (cursor hidden)
        assert label not in piped.stdout and "\x1b[" not in piped.stdout


def test_eval_summary_and_report_list_print_json(tmp_path: Path, capsys) -> None:
    from arr_core.sim.world.pairs import make_pairs

    home = tmp_path / "home"
    path = make_pairs("t2i", 6, 0, tmp_path / "pairs", size=32)
    assert main(["eval", "preference", "--pairs", str(path), "--modes", "single", "--n-boot", "50",
                 "--home", str(home), "--json"]) == 0
    captured = capsys.readouterr()
    ev = json.loads(captured.out)  # stdout is the JSON alone; the format line went to stderr
    assert "format:" in captured.err
    assert ev["eval_id"] and ev["kind"] and ev["summary"] and ev["tables"][0]["rows"]
    assert main(["report", "--list", "--home", str(home), "--json"]) == 0
    assert [r["eval_id"] for r in _json_out(capsys)] == [ev["eval_id"]]


@pytest.mark.slow  # a fresh MLflow SQLite store migrates its schema: ~30–60 s on a busy 2-core machine
def test_runs_compare_prints_json(tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    """arr runs compare reads the pipeline runs in MLflow: one made here the way the pipeline makes it."""
    home = tmp_path / "home"
    monkeypatch.setenv("ARR_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    from tasks import _mlflow as mlf
    from tasks._env import apply_defaults

    apply_defaults(home)
    run_id = mlf.start_run("arr-json", "arr-json", home=home, tags={"arr.kind": "pipeline",
                                                                    "arr.rubric_set_id": "rs-x"})
    mlf.log_metrics(run_id, {"wall_s": 1.5, "vlm_calls_this_run": 0})
    mlf.end_run(run_id)
    assert main(["runs", "compare", "--home", str(home), "--json"]) == 0
    (row,) = _json_out(capsys)
    assert row["run_id"] == run_id and row["metrics"]["wall_s"] == 1.5 and row["tags"]["arr.rubric_set_id"] == "rs-x"
