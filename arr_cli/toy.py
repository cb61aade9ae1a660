"""``arr toy ...``: the toy policy of the scene world (pretraining and a quick accuracy check).

Registered on the root app by ``register_toy(app)`` (this module's name is not one of the stage
modules that ``arr_cli/__init__.py`` registers automatically).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from arr_cli.common import console

toy_app = typer.Typer(help="The toy text-to-image policy of the scene world.", no_args_is_help=True)


@toy_app.command("pretrain")
def pretrain_cmd(
    steps: Annotated[int, typer.Option(help="AdamW steps.")] = 5000,
    out: Annotated[Path, typer.Option(help="Folder for the policy (toy_policy.json, text_encoder/, "
                                      "transformer/).")] = Path("toy_policy"),
    seed: Annotated[int, typer.Option(help="Seed of the weights, data and noise.")] = 0,
    batch_size: Annotated[int, typer.Option(help="Images per step.")] = 16,
    lr: Annotated[float, typer.Option(help="AdamW learning rate.")] = 1e-3,
    eval_per_tag: Annotated[int, typer.Option(help="Held-out prompts per tag for the final accuracy "
                                              "check (0 = skip).")] = 20,
    threads: Annotated[Optional[int], typer.Option(help="torch CPU threads (1 is fastest on a busy "
                                                   "machine).")] = None,
    init: Annotated[Optional[Path], typer.Option(help="Continue from this toy policy folder (fresh "
                                                 "weights otherwise).")] = None,
) -> None:
    """Pretrain the toy policy by flow matching on scene-world renders (with noisy captions).

    The research options (architecture, noise-level sampling, loss floor, schedule, condition
    dropout) are in ``benchmarks/toy_pretrain.py``."""
    from arr_core.sim.toy_pretrain import run_pretrain

    summary = run_pretrain(steps=steps, out=out, seed=seed, batch_size=batch_size, lr=lr,
                           eval_per_tag=eval_per_tag, threads=threads, init=init, log=console.print)
    console.print(f"saved {out} in {summary['total_seconds']:.0f} s")


def register_toy(app: typer.Typer) -> None:
    """Add the ``toy`` command group (``arr toy pretrain``) to the root app."""
    app.add_typer(toy_app, name="toy")
