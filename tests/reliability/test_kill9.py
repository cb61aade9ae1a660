"""kill -9 leaves nothing behind and a rerun recovers (issue 20, items 10 and 11): Prefect's temporary
local API server ends with the process that started it; a killed `arr induce` / `arr train` rerun
gives the same rubric set id / a byte-identical LoRA file as an uninterrupted run. Real processes,
real signals."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil
import pytest
from reliability_procs import ENV, ROOT, induction_helpers

LOCAL_API = """
import sys, time
from tasks._env import apply_defaults, parent_bound_local_api, start_local_api_early, wait_local_api
apply_defaults(sys.argv[1])
start_local_api_early()
wait_local_api()
server = parent_bound_local_api()
print("SERVER", server.server_process.pid, server.api_url, flush=True)
time.sleep(600)
"""


def _gone(pids: list[int], timeout_s: float) -> list[int]:
    """The pids still alive (zombies count as gone) after waiting up to ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        alive = []
        for pid in pids:
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    alive.append(pid)
            except psutil.NoSuchProcess:
                pass
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)


def _kill_tree_after(proc: subprocess.Popen, pids: list[int]) -> None:
    """Test clean-up: whatever is left of a failed test."""
    for pid in [proc.pid, *pids]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=10)


def test_local_api_server_dies_with_its_parent_on_kill_9(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", LOCAL_API, str(tmp_path / "home")], cwd=ROOT, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    server_pid = 0
    try:
        line = proc.stdout.readline()  # blocks until the server answered /health (or the process ended)
        assert line.startswith("SERVER"), proc.stderr.read()
        _, pid, api_url = line.split()
        server_pid = int(pid)
        assert urllib.request.urlopen(f"{api_url}/health", timeout=5).status == 200
        assert psutil.Process(server_pid).ppid() == proc.pid
        tree = [p.pid for p in psutil.Process(proc.pid).children(recursive=True)]
        assert server_pid in tree
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        assert _gone(tree, 15) == [], "the local API server outlived its parent's kill -9"
    finally:
        _kill_tree_after(proc, [server_pid] if server_pid else [])


@pytest.mark.slow
def test_killed_demo_leaves_no_process_behind(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "arr_cli", "demo", "--home", str(tmp_path / "home")], cwd=ROOT,
                            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tree: list[int] = []
    try:
        deadline = time.monotonic() + 180
        while True:  # the demo's temporary Prefect server is up and a flow is under way
            assert proc.poll() is None and time.monotonic() < deadline, "the demo ended before it could be killed"
            kids = psutil.Process(proc.pid).children(recursive=True)
            if any("uvicorn" in " ".join(k.cmdline()) for k in kids) and \
                    (tmp_path / "home" / "store").exists():
                break
            time.sleep(0.2)
        time.sleep(3)
        tree = [p.pid for p in psutil.Process(proc.pid).children(recursive=True)]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        assert _gone(tree, 20) == [], "processes outlived the killed demo"
    finally:
        _kill_tree_after(proc, tree)


def _kill_when(proc: subprocess.Popen, ready: Any, what: str, timeout_s: float = 240) -> None:
    """kill -9 ``proc`` as soon as ``ready()`` is true (polled); fails if it ended first."""
    deadline = time.monotonic() + timeout_s
    while not ready():
        assert proc.poll() is None, f"the command ended before {what}: {proc.stderr.read()}"
        assert time.monotonic() < deadline, f"no {what} within {timeout_s} s"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=10) == -signal.SIGKILL


def _arr(*args: str, **kw: Any) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "arr_cli", *args], cwd=ROOT, env=ENV, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def _finished(proc: subprocess.Popen) -> str:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return out


@pytest.mark.slow
def test_kill_9_during_induction_then_rerun_gives_the_uninterrupted_rubric_set(tmp_path: Path) -> None:
    from arr_core.sim.world.pairs import make_pairs
    from arr_core.store import Store
    helpers = induction_helpers()

    pairs = make_pairs("t2i", 12, 3, tmp_path / "pairs", size=32)
    server = helpers.Served("--latency-ms", "200")
    try:
        cfg = helpers._config(tmp_path / "induce.json", server.port)
        base = ["induce", "--pairs", str(pairs), "--config", str(cfg)]
        straight = _finished(_arr(*base, "--home", str(tmp_path / "straight"))).strip().splitlines()[-1]

        home = tmp_path / "killed"
        proc = _arr(*base, "--home", str(home))
        lines: list[str] = []

        def four_pairs_done() -> bool:
            lines.append(proc.stdout.readline())
            return "[4/12]" in lines[-1]

        _kill_when(proc, four_pairs_done, "4 finished pairs")
        with Store(home, read_only=True).connect() as con:  # the kill left finished pairs, not all
            done = con.execute("SELECT count(*) FROM induction_records WHERE final_status IS NOT NULL").fetchone()[0]
        assert 4 <= done < 12
        assert Store(home, read_only=True).list_rubric_sets() == []
        out = _finished(_arr(*base, "--home", str(home)))
        assert out.strip().splitlines()[-1] == straight and straight.startswith("rs-")
        reused = re.search(r"pairs reused \(resume or parent\)\s*│\s*(\d+)", out)
        assert reused and int(reused.group(1)) >= 4, out
    finally:
        server.stop()


@pytest.mark.slow
def test_kill_9_during_training_then_resume_writes_the_uninterrupted_lora_bytes(tmp_path: Path) -> None:
    cfg = tmp_path / "train.json"
    cfg.write_text(json.dumps({
        "policy": {"kind": "toy", "device": "cpu"}, "prompts": {"source": "world", "count": 16}, "num_steps": 3,
        "steps": 3, "prompts_per_step": 2, "rollout_batch_size": 2, "lr": 1e-3, "sample_grid_every": 0,
        "checkpoint_every": 1, "lora": {"rank": 2, "alpha": 4}, "reward": {"vlm": {"backend": "scene"}}}))
    base = ["train", "--config", str(cfg), "--rubrics", "none", "--home", str(tmp_path / "home")]
    _finished(_arr(*base, "--out", str(tmp_path / "straight")))

    run = tmp_path / "killed"
    proc = _arr(*base, "--out", str(run))
    _kill_when(proc, lambda: (run / "checkpoints" / "step_000001" / "COMPLETE.json").exists(), "checkpoint 1")
    assert not (run / "lora").exists()
    out = _finished(_arr(*base, "--resume", str(run), "--out", str(run)))
    assert "step 3/3" in out and "step 1/3" not in out, out

    def sha(folder: Path) -> str:
        return hashlib.sha256((folder / "lora" / "pytorch_lora_weights.safetensors").read_bytes()).hexdigest()

    assert sha(run) == sha(tmp_path / "straight")
