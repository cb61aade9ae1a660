"""``arr pipeline run``, ``arr demo``, ``arr runs compare``, ``arr ui``: the orchestrated DAG.

Prefect and MLflow are imported inside the commands, after the offline defaults are set for the
chosen ``--home`` (``tasks._env.apply_defaults``); a user's PREFECT_API_URL / MLFLOW_TRACKING_URI win.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from arr_cli.common import Home, Json, console, home_dir, print_json, require_prefect_code
from arr_core.errors import InputError


def _prepare(home: Optional[Path], *, flows: bool = False) -> Path:
    """Resolve the state folder and fill the offline defaults for it before prefect/mlflow load.
    ``flows``: the command runs the pipeline flow; Prefect's temporary local API is not started here:
    ``run_pipeline`` starts it only when a stage has to run (an all-cached rerun needs none)."""
    import os

    h = home_dir(home)
    os.environ["ARR_HOME"] = str(h)
    require_prefect_code()
    from tasks._env import apply_defaults

    return apply_defaults(h)


def _wide(width: int) -> Any:
    """The shared console on a terminal; a wide one when output goes to a file or pipe (Rich would
    squeeze tables into 80 columns there)."""
    from rich.console import Console

    return console if console.is_terminal else Console(width=width, highlight=False)


def _print_summary(summary: dict[str, Any], wall_s: float) -> None:
    from rich.table import Table

    st = summary["stages"]
    t = Table(title=f"{summary['name']}: done in {wall_s:.1f} s", show_lines=False)
    t.add_column("stage")
    t.add_column("cached")
    t.add_column("result")
    if "data" in st:
        d = st["data"]
        t.add_row("data", "-", f"{d['n_records']} pairs ({d['splits']}) digest {d['digest'][:12]}")
    if "induce" in st:
        s = st["induce"]
        t.add_row("induce", str(s["cached"]), f"rubric set {s['rubric_set_id']} "
                  f"({s['metrics'].get('n_themes', 0)} themes, {s['metrics'].get('n_criteria', 0)} criteria)")
    if "judge" in st:
        m = st["judge"]["metrics"]
        t.add_row("judge", str(st["judge"]["cached"]),
                  f"accuracy {m.get('rubrics.accuracy', float('nan')):.3f} with rubrics vs "
                  f"{m.get('no_rubrics.accuracy', float('nan')):.3f} without")
    if "train" in st:
        s = st["train"]
        t.add_row("train", str(s["cached"]), f"{s.get('steps', 0)} steps, LoRA {s.get('lora_uri')}")
    if "evaluate" in st:
        m = st["evaluate"]["metrics"]
        t.add_row("evaluate", str(st["evaluate"]["cached"]),
                  f"GenEval-format {m.get('geneval.base', 0):.3f} → {m.get('geneval.trained', 0):.3f}; "
                  f"win rate judge {m.get('winrate.judge', float('nan')):.2f} / checker "
                  f"{m.get('winrate.checker', float('nan')):.2f}")
    _wide(140).print(t)
    m = summary["metrics"]
    console.print(f"VLM calls this run: {m['vlm_calls_this_run']}   training steps this run: "
                  f"{m['train_steps_this_run']}")
    if "induce" in st:
        a = st["induce"]["artifacts"]
        console.print(f"rubric set:  {a['rubric_set_json']}\n             {a['rubric_set_text']}")
    if "train" in st:
        console.print(f"LoRA:        {st['train'].get('lora_uri')}\n             (MLflow: "
                      f"{st['train'].get('lora_artifact_uri')})")
    if "evaluate" in st:
        console.print(f"report:      {st['evaluate']['artifacts']['report']}")
    import os

    console.print(f"MLflow:      experiment '{summary['mlflow_experiment']}', parent run "
                  f"{summary['mlflow_run_id']} at {os.environ.get('MLFLOW_TRACKING_URI')}")
    console.print(f"state:       {summary['home']}   (compare runs: arr runs compare; UIs: arr ui --start)")


def register(app: typer.Typer) -> None:
    pipeline = typer.Typer(name="pipeline", help="Run the whole DAG as a Prefect flow.", no_args_is_help=True)
    runs = typer.Typer(name="runs", help="Pipeline runs recorded in MLflow.", no_args_is_help=True)

    @pipeline.command("run")
    def run_cmd(
        config: Annotated[Path, typer.Option("--config", help="pipeline YAML (see configs/pipeline_demo.yaml)")],
        home: Home = None,
    ) -> int:
        """Run data → induce → judge → train → evaluate. Rerunning the same config after a failure
        re-executes only the failed stage and the ones after it."""
        from flows.config import load_pipeline_config

        cfg = load_pipeline_config(config)  # bad input fails before anything starts
        h = _prepare(home, flows=True)
        from flows.pipeline import run_pipeline

        t0 = time.perf_counter()
        summary = run_pipeline(cfg, h)
        _print_summary(summary, time.perf_counter() - t0)
        return 0

    @app.command("demo")
    def demo_cmd(
        home: Home = None,
        fresh: Annotated[bool, typer.Option("--fresh", help="delete the state folder first (cold run)")] = False,
    ) -> int:
        """The whole DAG on the embedded defaults: scene-world pairs made on the fly, the offline
        scene VLM (a simulator: its figures say nothing about real VLMs), the shipped toy policy
        trained in-process, MLflow and the store under the state folder."""
        target = home_dir(home)
        if fresh and target.exists():
            if not (target / "store").exists() and any(target.iterdir()):
                raise InputError("refusing to delete a folder that does not look like an arr state folder "
                                 "(no store/ inside)", field="--home")
            shutil.rmtree(target)
        h = _prepare(target, flows=True)
        console.print(f"arr demo: state folder {h} (first run: a few minutes on a laptop CPU)")
        from flows.config import demo_config
        from flows.pipeline import run_pipeline

        t0 = time.perf_counter()
        summary = run_pipeline(demo_config(), h)
        _print_summary(summary, time.perf_counter() - t0)
        return 0

    @runs.command("compare")
    def compare_cmd(
        experiment: Annotated[Optional[str], typer.Option(help="MLflow experiment (default: all arr ones)")] = None,
        limit: Annotated[int, typer.Option(help="newest runs to show")] = 20,
        home: Home = None, as_json: Json = False,
    ) -> int:
        """A table of this project's pipeline runs: rubric set, judge model, accuracy, win rate,
        GenEval-format score, VLM calls and tokens spent by that run (cached stages count 0), wall time."""
        _prepare(home)
        from rich.table import Table

        from tasks._mlflow import PROJECT, PROJECT_TAG, client

        c = client()
        exps = ([c.get_experiment_by_name(experiment)] if experiment else
                c.search_experiments(filter_string=f"tags.`{PROJECT_TAG}` = '{PROJECT}'"))
        exps = [e for e in exps if e is not None]
        if not exps:
            raise InputError(f"no MLflow experiment {experiment!r}" if experiment else "no MLflow runs yet "
                             "(run `arr demo` first)", field="--experiment" if experiment else None)
        rows = c.search_runs([e.experiment_id for e in exps], filter_string="tags.`arr.kind` = 'pipeline'",
                             order_by=["attributes.start_time DESC"], max_results=limit)
        if as_json:  # every metric and arr.* tag of each run, full ids
            print_json([{"run_id": r.info.run_id, "run_name": r.info.run_name, "status": r.info.status,
                         "experiment_id": r.info.experiment_id, "metrics": r.data.metrics,
                         "tags": {k: v for k, v in r.data.tags.items() if k.startswith("arr.")},
                         "tokens": run_tokens(c, [e.experiment_id for e in exps], r.info.run_id)} for r in rows])
            return 0
        t = Table(title=f"pipeline runs ({', '.join(e.name for e in exps)})")
        for col in ("run", "status", "rubric set", "judge model", "acc (rubrics)", "acc (none)",
                    "win rate", "GenEval base→trained", "VLM calls", "tokens", "wall s", "cached"):
            t.add_column(col)

        def f(v: Any, fmt: str = "{:.3f}") -> str:
            return "-" if v is None else fmt.format(v)

        for r in rows:
            m, tg = r.data.metrics, r.data.tags
            tokens = run_tokens(c, [e.experiment_id for e in exps], r.info.run_id)
            gen = (f"{m['geneval.base']:.3f}→{m['geneval.trained']:.3f}"
                   if "geneval.base" in m and "geneval.trained" in m else "-")
            t.add_row(f"{r.info.run_name} {r.info.run_id[:8]}", r.info.status, tg.get("arr.rubric_set_id", "-"),
                      tg.get("arr.judge_model", "-"), f(m.get("judge.rubrics.accuracy")),
                      f(m.get("judge.no_rubrics.accuracy")), f(m.get("winrate.judge"), "{:.2f}"), gen,
                      f(m.get("vlm_calls_this_run"), "{:.0f}"), f(tokens or None, "{:.0f}"),
                      f(m.get("wall_s"), "{:.1f}"), f(m.get("stages_cached"), "{:.0f}"))
        _wide(220).print(t)
        return 0

    @app.command("ui")
    def ui_cmd(
        home: Home = None,
        start: Annotated[bool, typer.Option("--start", help="start both UIs on 127.0.0.1 and keep them up "
                                            "until Ctrl-C (needs the ui extra for MLflow)")] = False,
        mlflow_port: Annotated[int, typer.Option(help="MLflow UI port")] = 5000,
        prefect_port: Annotated[int, typer.Option(help="Prefect UI port")] = 4200,
        wait_s: Annotated[float, typer.Option(help="seconds to wait for each UI to answer")] = 120.0,
    ) -> int:
        """The Prefect and MLflow UIs on 127.0.0.1 for this state folder: the commands that start them,
        or (``--start``) both started here."""
        import os

        h = _prepare(home)
        tracking = os.environ["MLFLOW_TRACKING_URI"]
        api = os.environ.get("PREFECT_API_URL")
        cmds = ui_commands(h, mlflow_port, prefect_port)
        if not start:
            console.print("Prefect UI")
            if api:
                console.print(f"  your server: {api.removesuffix('/api')}")
            else:
                console.print(f"  {_shell(cmds['prefect'])}\n  then open http://127.0.0.1:{prefect_port} (the runs "
                              "of `arr demo` / `arr pipeline run` are in that PREFECT_HOME's database)\n"
                              f"  to run flows against it: export PREFECT_API_URL=http://127.0.0.1:{prefect_port}/api",
                              soft_wrap=True)
            console.print("MLflow UI")
            if "mlflow" in cmds:
                console.print(f"  {_shell(cmds['mlflow'])}\n  then open http://127.0.0.1:{mlflow_port}", soft_wrap=True)
                problem = mlflow_ui_problem()
                if problem:
                    console.print(f"  [yellow]{problem}[/yellow]", soft_wrap=True)
            else:
                console.print(f"  your tracking server: {tracking}")
            console.print("Or start both here: arr ui --start")
            return 0
        if "mlflow" in cmds and (problem := mlflow_ui_problem()):
            raise InputError(problem, field="--start")
        if api:
            cmds.pop("prefect")
            console.print(f"Prefect UI: your server {api.removesuffix('/api')}")
        procs = start_uis(cmds, h)
        try:
            for name, url in wait_uis(procs, wait_s).items():
                console.print(f"{name} UI: {url}")
            console.print("Ctrl-C stops them.")
            while all(p.poll() is None for p, _ in procs.values()):
                time.sleep(1.0)
            gone = [n for n, (p, _) in procs.items() if p.poll() is not None]
            raise RuntimeError(f"the {', '.join(gone)} UI exited; its log: {procs[gone[0]][1]}")
        except KeyboardInterrupt:
            return 0
        finally:
            stop_uis(procs)

    app.add_typer(pipeline)
    app.add_typer(runs)


def run_tokens(c: Any, experiment_ids: list[str], pipeline_run_id: str) -> int:
    """Prompt + completion tokens spent by one pipeline run: summed over its stage child runs that
    did work in it (a cached stage's child, tagged ``arr.cached``, repeats the tokens of the run that
    did the work, so it counts 0)."""
    from tasks._mlflow import PARENT_TAG

    children = c.search_runs(experiment_ids, filter_string=f"tags.`{PARENT_TAG}` = '{pipeline_run_id}'",
                             max_results=100)
    return int(sum(v for ch in children if ch.data.tags.get("arr.cached") != "true"
                   for k, v in ch.data.metrics.items() if k in ("prompt_tokens", "completion_tokens")))


# ---------------------------------------------------------------------------------------------
# the UIs (`arr ui`)


def ui_commands(home: Path, mlflow_port: int, prefect_port: int) -> dict[str, list[str]]:
    """The commands serving the Prefect UI (this state folder's PREFECT_HOME database) and, for a
    local SQLite tracking store, the MLflow UI; both bound to 127.0.0.1. A remote tracking URI is a
    server already: no MLflow command then."""
    import os
    import sys

    from tasks._env import prefect_home

    py = sys.executable
    cmds = {"prefect": ["env", f"PREFECT_HOME={prefect_home(home)}", py, "-m", "prefect", "server", "start",
                        "--host", "127.0.0.1", "--port", str(prefect_port)]}
    tracking = os.environ.get("MLFLOW_TRACKING_URI", "")
    if tracking.startswith("sqlite:"):
        cmds["mlflow"] = [py, "-m", "mlflow", "server", "--backend-store-uri", tracking, "--host", "127.0.0.1",
                          "--port", str(mlflow_port), "--workers", "1"]
    return cmds


def _shell(cmd: list[str]) -> str:
    import shlex

    return " ".join(shlex.quote(c) for c in cmd)


def mlflow_ui_problem() -> str | None:
    """Why the MLflow UI cannot serve this tracking store, or None: the server is the full ``mlflow``
    package (the ``ui`` extra), and it must be the tracking client's version (``mlflow-skinny``) or it
    cannot read the database schema that client wrote."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        server = version("mlflow")
    except PackageNotFoundError:
        return ("the MLflow UI needs the full `mlflow` package: pip install 'arr-pipeline[ui]' "
                "(mlflow-skinny, which arr depends on, has no UI)")
    try:
        client = version("mlflow-skinny")
    except PackageNotFoundError:
        return None
    if client != server:
        return (f"mlflow {server} (UI) and mlflow-skinny {client} (tracking client) differ: a UI older than the "
                f"client cannot read its database. Install one version of both: pip install 'mlflow=={client}' "
                f"or pip install 'arr-pipeline[ui]', which resolves a matching pair")
    return None


def start_uis(cmds: dict[str, list[str]], home: Path) -> dict[str, tuple[Any, Path]]:
    """Start each command in its own process group (so stopping it stops its workers too), output
    to ``home/logs/ui-<name>.log``; returns name → (process, log path)."""
    import subprocess

    logs = home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    procs: dict[str, tuple[Any, Path]] = {}
    for name, cmd in cmds.items():
        log = logs / f"ui-{name}.log"
        with log.open("wb") as f:
            procs[name] = (subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True), log)
    return procs


def ui_url(cmd: list[str]) -> str:
    return f"http://127.0.0.1:{cmd[cmd.index('--port') + 1]}"


def wait_uis(procs: dict[str, tuple[Any, Path]], timeout_s: float) -> dict[str, str]:
    """Wait until each UI answers ``GET /`` with 200; name → URL. Raises naming the UI, its URL and
    its log when one exits or does not answer within ``timeout_s``."""
    import httpx

    urls = {n: ui_url(p.args) for n, (p, _) in procs.items()}
    deadline = time.monotonic() + timeout_s
    pending = dict(urls)
    while pending:
        for name, url in list(pending.items()):
            proc, log = procs[name]
            if proc.poll() is not None:
                raise RuntimeError(f"the {name} UI exited with code {proc.returncode} before answering at {url}; "
                                   f"its log: {log}")
            try:
                if httpx.get(url + "/", timeout=2.0).status_code == 200:
                    del pending[name]
            except httpx.HTTPError:
                pass
        if pending and time.monotonic() > deadline:
            name = next(iter(pending))
            raise RuntimeError(f"the {name} UI did not answer at {pending[name]} within {timeout_s:.0f} s; "
                               f"its log: {procs[name][1]}")
        if pending:
            time.sleep(0.5)
    return urls


def stop_uis(procs: dict[str, tuple[Any, Path]], grace_s: float = 10.0) -> None:
    """SIGTERM each UI's process group, SIGKILL what is left after ``grace_s``."""
    import os
    import signal

    for p, _ in procs.values():
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for p, _ in procs.values():
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except Exception:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=5)
