"""Issue 25 item 5: progress bars for the long commands. The core reports ``on_progress(done, total)``
(judge_many per pair, load_dataset per record, the generation recipe per image); the CLI draws a rich
bar from it only on a terminal, never into a pipe and never with --json."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest
from rich.console import Console

from arr_cli import common, main

# A 1-layer, 32-wide toy policy (as in tests/bench/test_cli.py): sampling takes a moment.
TINY = {"layers": 1, "width": 32, "head_dim": 16, "text_layers": 1, "text_width": 32}


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    from arr_core.sim.world.pairs import make_pairs

    return make_pairs("t2i", 6, 0, tmp_path_factory.mktemp("progress") / "pairs", size=32)


def _assert_counts(calls: list[tuple[int, int]], total: int) -> None:
    assert calls, "on_progress was never called"
    assert {t for _, t in calls} == {total}
    done = [d for d, _ in calls]
    assert done == sorted(done) and len(set(done)) == len(done)  # rising, never repeated
    assert done[-1] == total and all(0 <= d <= total for d in done)


@pytest.mark.parametrize("order", ["swap", "single"])
def test_judge_many_reports_pairs_up_to_the_total(pairs: Path, order: str) -> None:
    from arr_core.data.dataset import load_dataset
    from arr_core.judge.judge import judge_many
    from arr_core.vlm.config import VLMConfig, build_client

    records = load_dataset(pairs).records
    calls: list[tuple[int, int]] = []
    js = asyncio.run(judge_many(build_client(VLMConfig(), None), records, order=order,
                                on_progress=lambda d, t: calls.append((d, t))))
    assert len(js) == len(records)
    _assert_counts(calls, len(records))


def test_load_dataset_reports_records_json_and_parquet(pairs: Path, tmp_path: Path) -> None:
    from arr_core.data.dataset import load_dataset, write_parquet

    calls: list[tuple[int, int]] = []
    ds = load_dataset(pairs, on_progress=lambda d, t: calls.append((d, t)))
    _assert_counts(calls, len(ds.records))
    assert [d for d, _ in calls] == list(range(len(ds.records) + 1))  # one call per record, from 0
    pq = write_parquet(ds.records, tmp_path / "pairs.parquet")  # images stay where they are
    calls.clear()
    assert len(load_dataset(pq, allow_outside=True, on_progress=lambda d, t: calls.append((d, t))).records) \
        == len(ds.records)
    _assert_counts(calls, len(ds.records))


def test_generate_reports_images_sampled(pairs: Path, tmp_path: Path) -> None:
    from arr_core.bench.prompt_sets import load_prompt_set
    from arr_core.recipes import evaluate as recipe
    from arr_core.sim.toy_policy import ToyPolicy

    folder = ToyPolicy.random(seed=0, **TINY).save(tmp_path / "toy")
    items = load_prompt_set(pairs.parent / "geneval_metadata.jsonl", None)[:3]
    calls: list[tuple[int, int]] = []
    result = recipe.generate(str(folder), items, "geneval", tmp_path / "evals", n_per_prompt=2, steps=2,
                             n_boot=50, simulated=True, on_progress=lambda d, t: calls.append((d, t)))
    assert result.kind == "geneval"
    _assert_counts(calls, 6)


@pytest.fixture()
def terminal(monkeypatch) -> io.StringIO:
    """The CLI's progress console as a terminal writing into a buffer (the commands' other output
    still goes to captured stdout)."""
    buf = io.StringIO()
    monkeypatch.setattr(common, "console", Console(file=buf, force_terminal=True, width=120))
    return buf


def test_bars_are_drawn_on_a_terminal_only(pairs: Path, tmp_path: Path, terminal: io.StringIO, capsys,
                                           monkeypatch) -> None:
    home = str(tmp_path / "home")
    assert main(["data", "import", str(pairs), "--name", "six", "--home", home]) == 0
    drawn = terminal.getvalue()
    assert "checking" in drawn and "6/6" in drawn  # the per-record bar reached its total
    dataset_id = capsys.readouterr().out.strip().splitlines()[-1]
    terminal.truncate(0)
    assert main(["judge", "--pairs", dataset_id, "--rubrics", "none", "--order", "single", "--backend",
                 "scene", "--home", home]) == 0
    drawn = terminal.getvalue()
    # order single: the pairs as given, then the swap re-check for the order gap = 12 pairs judged
    assert "judging 6 pairs" in drawn and "12/12" in drawn
    assert "━" not in capsys.readouterr().out  # the table went to stdout, no bar in it
    # Not a terminal (a pipe, a file): nothing drawn, the output is the same.
    monkeypatch.setattr(common, "console", Console(file=terminal, force_terminal=False, width=120))
    terminal.truncate(0)
    terminal.seek(0)
    assert main(["judge", "--pairs", dataset_id, "--rubrics", "none", "--backend", "scene", "--home", home]) == 0
    assert terminal.getvalue() == ""


def test_json_output_draws_no_bar_even_on_a_terminal(pairs: Path, tmp_path: Path, terminal: io.StringIO,
                                                     capsys) -> None:
    from arr_core.sim.toy_policy import ToyPolicy

    folder = ToyPolicy.random(seed=0, **TINY).save(tmp_path / "toy")
    assert main(["eval", "generate", "--policy", str(folder), "--benchmark", "geneval", "--prompts",
                 str(pairs.parent / "geneval_metadata.jsonl"), "--limit", "2", "--n-per-prompt", "1",
                 "--steps", "2", "--n-boot", "50", "--home", str(tmp_path / "home"), "--json"]) == 0
    captured = capsys.readouterr()
    assert "sampling" not in terminal.getvalue() + captured.err and "━" not in captured.err
    assert captured.out.lstrip().startswith("{")
    # Without --json the same command on a terminal draws the per-image bar to its total.
    assert main(["eval", "generate", "--policy", str(folder), "--benchmark", "geneval", "--prompts",
                 str(pairs.parent / "geneval_metadata.jsonl"), "--limit", "2", "--n-per-prompt", "1",
                 "--steps", "2", "--n-boot", "50", "--home", str(tmp_path / "home")]) == 0
    assert "sampling 2 prompts" in terminal.getvalue() and "2/2" in terminal.getvalue()
