"""A failure is never data (issue 20): a dead or failing VLM endpoint makes `arr induce` / `arr judge`
exit 4 naming the endpoint, nothing is stored as finished, and a rerun with the endpoint back gives
the same rubric set as an uninterrupted run. Against real servers on 127.0.0.1 (`arr vlm serve`) and
a dead port."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from arr_cli import main
from arr_core.errors import ArrError, EndpointError
from arr_core.failures import FailureCounter, is_transport_error
from arr_core.sim.world.pairs import make_pairs
from arr_core.store import Store
from arr_core.vlm.server import free_port

ROOT = Path(__file__).resolve().parents[2]


def _config(path: Path, port: int, **extra: object) -> Path:
    gen = {"backend": "openai", "base_url": f"http://127.0.0.1:{port}/v1", "model": "scene-test",
           "max_retries": 0, "timeout_s": 5, "max_reasks": 1}
    path.write_text(json.dumps({"max_epochs": 2, "concurrency": 2, "generator": gen, **extra}))
    return path


class Served:
    """`arr vlm serve` as a user starts it, on a free 127.0.0.1 port."""

    def __init__(self, *extra: str) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen([sys.executable, "-m", "arr_cli", "vlm", "serve", "--port", str(self.port),
                                      "--model", "scene-test", *extra], cwd=ROOT, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/v1/models", timeout=1).read()
                return
            except OSError:
                assert self.proc.poll() is None, self.proc.stderr.read().decode()
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.2)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def test_failure_counter_policy() -> None:
    c = FailureCounter("induce", "openai:m at http://127.0.0.1:9/v1", max_failure_rate=0.25, early_abort=3)
    c.fail("transport: connection refused")
    c.ok()  # a success ends the start-of-stage run: no early abort from here on
    for _ in range(3):
        c.ok()
    c.check()  # 1 of 5 = 0.2 <= 0.25
    c.fail("transport: 500")
    with pytest.raises(EndpointError, match=r"127\.0\.0\.1:9.*2 of 6 items failed.*connection refused"):
        c.check()
    early = FailureCounter("judge", "e", early_abort=2)
    early.fail("transport: x")
    with pytest.raises(EndpointError, match="the first 2 items all failed; stopped early"):
        early.fail("transport: x")
    assert is_transport_error("transport: refused") and not is_transport_error("rank must be a permutation")
    assert EndpointError("x").exit_code == 4


def test_empty_rubric_set_is_never_stored(tmp_path: Path) -> None:
    from arr_core.recipes.induce import finish

    store = Store(tmp_path)
    with pytest.raises(ArrError, match="no criteria to store"):
        finish(store, task="t2i", criteria=[], themes=[], fallback=False, per_pair=[], stats={},
               categorize_spent={}, generator_model="g", verifier_model="v", parameters={}, dataset_digest=None,
               parent=None)
    assert store.list_rubric_sets() == []


@pytest.mark.slow
def test_dead_endpoint_fails_loudly_stores_nothing_and_a_rerun_recovers(tmp_path: Path, capsys) -> None:
    pairs = make_pairs("t2i", 6, 3, tmp_path / "pairs", size=32)
    home, dead = tmp_path / "home", free_port()
    # 1. Unreachable from the start: preflight fails in seconds, naming the endpoint and the field.
    assert main(["induce", "--pairs", str(pairs), "--config", str(_config(tmp_path / "dead.yaml", dead)),
                 "--home", str(home)]) == 4
    err = " ".join(capsys.readouterr().err.split())
    assert f"127.0.0.1:{dead}/v1 (generator.base_url) does not answer" in err, err
    # 2. Up at preflight, failing every chat call (HTTP 500): the transport failures end the stage.
    failing = Served("--error-rate", "1.0")
    try:
        t0 = time.monotonic()
        assert main(["induce", "--pairs", str(pairs), "--config",
                     str(_config(tmp_path / "failing.yaml", failing.port)), "--home", str(home)]) == 4
        err = " ".join(capsys.readouterr().err.split())
        assert f"127.0.0.1:{failing.port}" in err and "Nothing failed was stored" in err, err
        assert time.monotonic() - t0 < 120
    finally:
        failing.stop()
    store = Store(home)
    assert store.list_rubric_sets() == []
    with store.connect() as con:  # no pair is recorded as finished (passed or discarded)
        assert con.execute("SELECT count(*) FROM induction_records WHERE final_status IS NOT NULL").fetchone() == (0,)

    # 3. The endpoint back: the rerun completes with the same rubric set as an uninterrupted run.
    server = Served()
    try:
        cfg = _config(tmp_path / "live.yaml", server.port)
        assert main(["induce", "--pairs", str(pairs), "--config", str(cfg), "--home", str(home)]) == 0
        rerun_id = capsys.readouterr().out.strip().splitlines()[-1]
        assert main(["induce", "--pairs", str(pairs), "--config", str(cfg), "--home", str(tmp_path / "h2")]) == 0
        straight_id = capsys.readouterr().out.strip().splitlines()[-1]
        assert rerun_id.startswith("rs-") and rerun_id == straight_id
    finally:
        server.stop()


@pytest.mark.slow
def test_judge_on_a_dead_or_failing_endpoint_exits_4_instead_of_abstaining(tmp_path: Path, capsys) -> None:
    pairs = make_pairs("t2i", 4, 5, tmp_path / "pairs", size=32)
    dead = free_port()
    cfg = tmp_path / "judge.yaml"
    cfg.write_text(json.dumps({"vlm": {"backend": "openai", "base_url": f"http://127.0.0.1:{dead}/v1",
                                       "model": "scene-test", "max_retries": 0, "timeout_s": 5}}))
    assert main(["judge", "--rubrics", "none", "--pairs", str(pairs), "--config", str(cfg),
                 "--home", str(tmp_path / "home")]) == 4
    err = " ".join(capsys.readouterr().err.split())
    assert f"127.0.0.1:{dead}/v1 (vlm.base_url) does not answer" in err  # preflight
    failing = Served("--error-rate", "1.0")
    try:
        cfg.write_text(json.dumps({"vlm": {"backend": "openai", "base_url": f"http://127.0.0.1:{failing.port}/v1",
                                           "model": "scene-test", "max_retries": 0, "timeout_s": 5}}))
        assert main(["judge", "--rubrics", "none", "--pairs", str(pairs), "--config", str(cfg),
                     "--home", str(tmp_path / "home")]) == 4
        err = " ".join(capsys.readouterr().err.split())
        assert f"127.0.0.1:{failing.port}" in err and "4 of 4 items failed" in err, err
    finally:
        failing.stop()
