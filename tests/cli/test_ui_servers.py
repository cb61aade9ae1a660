"""`arr ui`: the Prefect and MLflow UIs started for real on 127.0.0.1 against a state folder by
`arr ui --start`, a page fetched from each, then stopped with Ctrl-C (bounded: the start waits at
most 180 s, the stop 60 s)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from arr_cli import main


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _clean_env(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    for k in ("PREFECT_API_URL", "PREFECT_HOME", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("ARR_HOME", str(home))


def test_ui_prints_commands_bound_to_loopback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    home = tmp_path / "home"
    _clean_env(monkeypatch, home)
    assert main(["ui", "--home", str(home), "--mlflow-port", "5123", "--prefect-port", "4321"]) == 0
    out = capsys.readouterr().out
    assert f"PREFECT_HOME={home / 'prefect'}" in out and "--host 127.0.0.1 --port 4321" in out
    assert f"sqlite:///{home / 'mlflow' / 'mlflow.db'}" in out and "--port 5123" in out
    assert "0.0.0.0" not in out


@pytest.mark.slow
def test_arr_ui_start_serves_both_uis_and_stops_them_on_ctrl_c(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("mlflow.server", reason="needs the ui extra: pip install 'arr-pipeline[ui]'")
    from arr_cli import pipeline as cli

    if (problem := cli.mlflow_ui_problem()) is not None:
        pytest.skip(f"the ui extra is not installed: {problem}")
    home = tmp_path / "home"
    _clean_env(monkeypatch, home)
    h = cli._prepare(home)
    from tasks import _mlflow as mlf

    exp_id = mlf.experiment_id("ui-check", h)  # something of this state folder for the UI to show
    mlf.start_run("ui-check", "probe", home=h)
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_HOME", "MLFLOW_TRACKING_URI")}
    proc = subprocess.Popen([sys.executable, "-c", "from arr_cli import entry; entry()", "ui", "--start", "--home",
                             str(home), "--mlflow-port", str(_free_port()), "--prefect-port", str(_free_port()),
                             "--wait-s", "180"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**env, "COLUMNS": "200"})
    urls: dict[str, str] = {}
    try:
        for line in proc.stdout:  # "<name> UI: http://127.0.0.1:<port>" once each answers
            m = re.match(r"(mlflow|prefect) UI: (http://127\.0\.0\.1:\d+)", line.strip())
            if m:
                urls[m.group(1)] = m.group(2)
            if len(urls) == 2 or "Error" in line:
                break
        assert set(urls) == {"mlflow", "prefect"}, f"arr ui --start did not report both UIs: {urls}"
        ml = httpx.get(urls["mlflow"] + "/", timeout=10)
        assert ml.status_code == 200 and "<html" in ml.text.lower() and "mlflow" in ml.text.lower()
        # The MLflow UI reads this state folder's store: the experiment made above is there.
        found = httpx.get(urls["mlflow"] + "/api/2.0/mlflow/experiments/get-by-name",
                          params={"experiment_name": "ui-check"}, timeout=10).json()
        assert found["experiment"]["experiment_id"] == exp_id
        pf = httpx.get(urls["prefect"] + "/", timeout=10)
        assert pf.status_code == 200 and "<html" in pf.text.lower()
        assert httpx.get(urls["prefect"] + "/api/health", timeout=10).json() is True
        assert (home / "prefect" / "prefect.db").exists(), "the Prefect UI must use the state folder's database"
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C: the command stops both servers and exits 0
        rc = proc.wait(timeout=60)
    assert rc == 0
    for url in urls.values():  # nothing listens any more
        with pytest.raises(httpx.HTTPError):
            httpx.get(url + "/", timeout=2)
