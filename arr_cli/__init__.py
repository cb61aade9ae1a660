"""The ``arr`` command line. Each sub-module registers its commands on the root app.

Heavy dependencies (torch, prefect, mlflow) are imported inside the commands that need them, so
``arr --help`` and the data/store commands start quickly.
"""

from __future__ import annotations

import sys

import typer

from arr_cli.common import err_console
from arr_core.errors import ArrError

app = typer.Typer(
    name="arr",
    help="arr-pipeline: induce rubrics from preference pairs (ARR), train image generators with "
    "rubric rewards (RPO), evaluate, and orchestrate it all with Prefect + MLflow.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            v = version("arr-pipeline")
        except PackageNotFoundError:  # run from a checkout without an install
            v = "unknown (not installed)"
        typer.echo(f"arr-pipeline {v}")
        raise typer.Exit(0)


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """arr-pipeline: induce rubrics from preference pairs (ARR), train image generators with rubric
    rewards (RPO), evaluate, and orchestrate it all with Prefect + MLflow."""


def _register() -> None:
    from arr_cli import data, store  # noqa: F401  (foundation)

    data.register(app)
    store.register(app)
    # Later stages register themselves when their modules exist.
    import importlib

    for name in ("world", "vlm", "induce", "train", "toy", "evaluate", "pipeline", "serve"):
        try:
            mod = importlib.import_module(f"arr_cli.{name}")
        except ModuleNotFoundError as exc:  # only a missing stage module is tolerated
            if exc.name != f"arr_cli.{name}":
                raise
            continue
        (getattr(mod, "register", None) or getattr(mod, f"register_{name}"))(app)


_register()


def _plain_paragraphs(typer_app: typer.Typer) -> None:
    """Help texts are docstrings wrapped at ~100 columns: let the help renderer re-flow paragraphs
    instead of keeping each source line break (typer's "rich" mode keeps them)."""
    typer_app.rich_markup_mode = "markdown"
    for group in typer_app.registered_groups:
        if group.typer_instance is not None:
            _plain_paragraphs(group.typer_instance)


_plain_paragraphs(app)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code.

    Commands signal failure with ``raise typer.Exit(code)``; an :class:`ArrError` becomes its message
    and exit code (input errors exit 2), never a traceback.
    """
    try:
        app(args=argv, prog_name="arr")  # standalone mode: always ends in SystemExit
    except SystemExit as e:
        code = e.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except ArrError as e:
        from rich.markup import escape

        # One unwrapped line (ids and URLs stay copyable), the message's brackets shown as written.
        err_console.print(f"[bold red]error:[/] {escape(str(e))}", soft_wrap=True)
        return e.exit_code
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130
    return 0


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
