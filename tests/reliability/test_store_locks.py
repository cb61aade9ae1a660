"""Short store locks (issue 20, item 10): a long command holds the DuckDB store's lock only for its short
reads and writes, so another process can read (`arr store ls`) while it runs; genuine contention (a
write transaction held open) still ends in a clear StoreLockedError after the bounded wait. Real
processes."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from reliability_procs import ENV, ROOT, induction_helpers

from arr_core.errors import StoreLockedError
from arr_core.store import Store

HOLD = """
import sys, time
from arr_core.store import Store
with Store(sys.argv[1]).transaction() as con:
    con.execute("SELECT count(*) FROM rubric_sets").fetchall()
    print("holding", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def test_an_open_write_transaction_locks_others_out_until_it_commits(tmp_path: Path) -> None:
    Store(tmp_path).list_rubric_sets()  # create the store
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path), "4"], cwd=ROOT, env=ENV, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == "holding", holder.stderr.read()
        t0 = time.monotonic()
        with pytest.raises(StoreLockedError, match=rf"locked by another process \(PID {holder.pid}\)"):
            Store(tmp_path, lock_timeout_s=0.5, read_only=True).list_rubric_sets()
        assert Store(tmp_path, lock_timeout_s=30).list_rubric_sets() == []  # waits for the commit
        assert holder.wait(timeout=30) == 0 and time.monotonic() - t0 < 30
    finally:
        holder.kill()
        holder.wait()


def test_store_is_closed_between_units_of_work(tmp_path: Path) -> None:
    """The file lock is released when a unit of work ends, also inside an outer `connect()` that has
    ended, and nested units share one attachment."""
    store = Store(tmp_path)
    with store.connect() as outer, store.transaction() as inner:
        assert outer is inner
    probe = [sys.executable, "-c", "import sys, duckdb; duckdb.connect(sys.argv[1], read_only=True).close()",
             str(store.path)]
    assert subprocess.run(probe, capture_output=True, cwd=ROOT, env=ENV).returncode == 0
    with store.connect():
        held = subprocess.run(probe, capture_output=True, text=True, cwd=ROOT, env=ENV)
    assert held.returncode != 0 and "lock" in held.stderr.lower()


@pytest.mark.slow
def test_store_ls_reads_while_a_long_induction_runs(tmp_path: Path) -> None:
    from arr_core.sim.world.pairs import make_pairs

    helpers = induction_helpers()
    pairs = make_pairs("t2i", 16, 3, tmp_path / "pairs", size=32)
    server = helpers.Served("--latency-ms", "400")
    home = tmp_path / "home"
    induce = subprocess.Popen([sys.executable, "-m", "arr_cli", "induce", "--pairs", str(pairs), "--config",
                               str(helpers._config(tmp_path / "induce.json", server.port)), "--home", str(home)],
                              cwd=ROOT, env=ENV, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        while "[2/16]" not in (line := induce.stdout.readline()):
            assert line or induce.poll() is None, induce.stderr.read()
        for _ in range(3):  # several reads, each while the induction is still under way
            t0 = time.monotonic()
            ls = subprocess.run([sys.executable, "-m", "arr_cli", "store", "ls", "--home", str(home)], cwd=ROOT,
                                env=ENV, capture_output=True, text=True, timeout=120)
            assert ls.returncode == 0, ls.stderr
            assert induce.poll() is None, "the induction ended before the reads: the test proves nothing"
            assert time.monotonic() - t0 < 25
        out, err = induce.communicate(timeout=300)
        assert induce.returncode == 0, err
    finally:
        induce.kill()
        induce.wait()
        server.stop()
