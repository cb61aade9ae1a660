"""Benchmark of `arr demo`: a cold run (fresh state folder) and a second run with the same inputs.

    python benchmarks/pipeline_demo.py [--home DIR] [--config FILE]

Targets (issue 6, on a 2-core CPU): cold ≤ 10 minutes, peak RSS ≤ 4 GB (the whole process tree:
the CLI, Prefect's temporary server, any worker subprocess), second run ≤ 10 % of the cold time with
0 VLM calls and 0 training steps. Each run is a fresh `arr` process, as a user would start it, so
start-up (imports, Prefect's temporary server) is included. Memory is sampled from /proc every
0.2 s over the process tree. `--config FILE` measures `arr pipeline run --config FILE` instead.

A second run whose stages are all cached starts no Prefect API at all (flows/_wiring.py,
``run_pipeline``'s all-cached path): the benchmark counts the flow runs in the temporary server's
database before and after it (``prefect_flow_runs_added``: 0 when that path was taken).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGETS = {"cold_s": 600.0, "peak_rss_gb": 4.0, "warm_fraction": 0.10}


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def _rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def tree_rss(pid: int) -> int:
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        total += _rss_bytes(p)
        stack.extend(_children(p))
    return total


def run(cmd: list[str], env: dict[str, str]) -> dict:
    """Run ``cmd``, sampling the RSS of its process tree; return wall time, peak RSS and the counters
    the CLI prints."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, tree_rss(proc.pid))
            time.sleep(0.2)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    out, _ = proc.communicate()
    done.set()
    th.join()
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.stdout.write(out[-6000:])
        raise SystemExit(f"{' '.join(cmd)} failed with exit code {proc.returncode}")
    m = re.search(r"VLM calls this run: (\d+)\s+training steps this run: (\d+)", out)
    return {"wall_s": round(wall, 1), "peak_rss_gb": round(peak / 2**30, 2),
            "vlm_calls": int(m.group(1)) if m else None, "train_steps": int(m.group(2)) if m else None,
            "tail": out[-2500:]}


def flow_runs(home: Path) -> int | None:
    """Flow runs recorded by the temporary local Prefect API of this state folder (its SQLite file)."""
    import sqlite3

    db = home / "prefect" / "prefect.db"
    if not db.is_file():
        return None
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        return con.execute("select count(*) from flow_run").fetchone()[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", type=Path, default=None, help="state folder (default: a new temp folder)")
    ap.add_argument("--config", type=Path, default=None, help="measure `arr pipeline run --config FILE`")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    args = ap.parse_args()
    home = args.home or Path(tempfile.mkdtemp(prefix="arr-demo-bench-"))
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI")}
    env["ARR_HOME"] = str(home)
    arr = [sys.executable, "-m", "arr_cli"]
    if args.config is None:
        cold_cmd = arr + ["demo", "--home", str(home), "--fresh"]
        warm_cmd = arr + ["demo", "--home", str(home)]
    else:
        import shutil

        shutil.rmtree(home, ignore_errors=True)
        cold_cmd = warm_cmd = arr + ["pipeline", "run", "--config", str(args.config), "--home", str(home)]
    cold = run(cold_cmd, env)
    print(cold["tail"])
    before = flow_runs(home)
    warm = run(warm_cmd, env)
    print(warm["tail"])
    after = flow_runs(home)
    warm["prefect_flow_runs_added"] = None if before is None or after is None else after - before
    fraction = warm["wall_s"] / cold["wall_s"]
    checks = {
        f"cold <= {TARGETS['cold_s']:.0f} s": cold["wall_s"] <= TARGETS["cold_s"],
        f"peak RSS <= {TARGETS['peak_rss_gb']} GB": max(cold["peak_rss_gb"], warm["peak_rss_gb"]) <= TARGETS["peak_rss_gb"],
        "second run <= 10 % of cold": fraction <= TARGETS["warm_fraction"],
        "second run: 0 VLM calls": warm["vlm_calls"] == 0,
        "second run: 0 training steps": warm["train_steps"] == 0,
    }
    figures = {"machine": f"{platform.machine()} {os.cpu_count()} CPUs, {platform.python_version()}",
               "home": str(home), "cold": {k: v for k, v in cold.items() if k != "tail"},
               "warm": {k: v for k, v in warm.items() if k != "tail"}, "warm_fraction": round(fraction, 3),
               "checks": checks}
    print("\n| run | wall s | peak RSS GB | VLM calls | training steps |\n|---|---|---|---|---|")
    for name, r in (("cold", cold), ("second", warm)):
        print(f"| {name} | {r['wall_s']} | {r['peak_rss_gb']} | {r['vlm_calls']} | {r['train_steps']} |")
    print(f"\nsecond/cold = {fraction:.1%}; Prefect flow runs the second run added: "
          f"{warm['prefect_flow_runs_added']} (0: all cached, no Prefect API started)")
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
