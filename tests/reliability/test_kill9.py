"""kill -9 leaves nothing behind and a rerun recovers (issue 20, items 10 and 11): Prefect's temporary
local API server ends with the process that started it; a killed `arr induce` / `arr train` rerun
gives the same rubric set id / a byte-identical LoRA file as an uninterrupted run. Real processes,
real signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}

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
