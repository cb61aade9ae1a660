"""``arr toy ...``: the toy policy of the scene world (pretraining and a quick accuracy check).

Registered on the root app by ``register_toy(app)`` (this module's name is not one of the stage
modules that ``arr_cli/__init__.py`` registers automatically).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from arr_cli.common import console
from arr_core.errors import InputError

toy_app = typer.Typer(help="The toy text-to-image policy of the scene world.", no_args_is_help=True)


@toy_app.command("pretrain")
def pretrain_cmd(
    steps: Annotated[int, typer.Option(help="AdamW steps.")] = 5000,
    out: Annotated[Path, typer.Option(help="Folder for the policy (toy_policy.json, text_encoder/, "
                                            "transformer/).")] = Path("toy_policy"),
    seed: Annotated[int, typer.Option(help="Seed of the weights, data and noise.")] = 0,
    batch_size: Annotated[int, typer.Option(help="Images per step.")] = 16,
    lr: Annotated[float, typer.Option(help="AdamW learning rate.")] = 1e-3,
    defect_rate: Annotated[float, typer.Option(help="Share of training images with a defect that "
                                                    "contradicts their prompt.")] = 0.3,
    eval_per_tag: Annotated[int, typer.Option(help="Held-out prompts per tag for the final accuracy "
                                                   "(0 skips it).")] = 20,
    loss_floor: Annotated[float, typer.Option(help="Floor f of the loss weight 1/max(σ, f)² on the clean-"
                                                   "image error: 1 = x-loss, 0.05 = JiT's v-loss.")] = 0.5,
    threads: Annotated[Optional[int], typer.Option(help="torch CPU threads (1 is fastest on a busy "
                                                        "2-core machine).")] = None,
    init: Annotated[Optional[Path], typer.Option(help="Continue from this toy policy folder (fresh "
                                                      "optimizer and warmup; other data than its run).")] = None,
    schedule: Annotated[str, typer.Option(help="Learning rate after warmup: constant, or cosine "
                                               "(decays to 0 at the last step).")] = "constant",
    cond_dropout: Annotated[float, typer.Option(help="Share of training prompts replaced by the empty "
                                                     "prompt, for classifier-free guidance (0 = none).")] = 0.0,
    sigma_sampling: Annotated[str, typer.Option(help="Noise levels of the training examples: uniform, or "
                                                     "logit-normal (SD3; more of the middle levels).")] = "uniform",
    logit_mean: Annotated[float, typer.Option(help="Mean m of logit-normal σ = sigmoid(m + s·z).")] = 0.0,
    logit_std: Annotated[float, typer.Option(help="Spread s of logit-normal σ (> 0).")] = 1.0,
    width: Annotated[Optional[int], typer.Option(help="Transformer width of a fresh policy (multiple of 32; "
                                                      "default 96).")] = None,
    layers: Annotated[Optional[int], typer.Option(help="Transformer blocks of a fresh policy (default 4).")] = None,
    image_size: Annotated[Optional[int], typer.Option(help="Pixels per side of a fresh policy's images (default "
                                                           "32; 64 draws the objects at the detector's size).")] = None,
    patch_size: Annotated[Optional[int], typer.Option(help="Pixels per side of a fresh policy's patches (default 2; "
                                                           "4 at 64 px keeps 256 tokens).")] = None,
) -> None:
    """Pretrain the toy policy by flow matching on scene-world renders (with noisy captions)."""
    summary = run_pretrain(steps=steps, out=out, seed=seed, batch_size=batch_size, lr=lr,
                           defect_rate=defect_rate, eval_per_tag=eval_per_tag, threads=threads,
                           loss_floor=loss_floor, init=init, schedule=schedule, cond_dropout=cond_dropout,
                           sigma_sampling=sigma_sampling, logit_mean=logit_mean, logit_std=logit_std,
                           width=width, layers=layers, image_size=image_size, patch_size=patch_size)
    console.print(f"saved {out} in {summary['total_seconds']:.0f} s")


def run_pretrain(*, steps: int, out: Path, seed: int = 0, batch_size: int = 16, lr: float = 1e-3,
                 defect_rate: float = 0.3, eval_per_tag: int = 20, threads: int | None = None,
                 loss_floor: float = 0.5, init: Path | None = None, schedule: str = "constant",
                 cond_dropout: float = 0.0, sigma_sampling: str = "uniform", logit_mean: float = 0.0,
                 logit_std: float = 1.0, width: int | None = None, layers: int | None = None,
                 image_size: int | None = None, patch_size: int | None = None) -> dict:
    """The work of ``arr toy pretrain``: validates the options, then ``toy_pretrain.pretrain``."""
    if steps < 1:
        raise InputError(f"must be >= 1, got {steps}", field="--steps")
    if batch_size < 1:
        raise InputError(f"must be >= 1, got {batch_size}", field="--batch-size")
    if not 0.0 <= defect_rate <= 1.0:
        raise InputError(f"must lie in [0, 1], got {defect_rate}", field="--defect-rate")
    if not 0.0 < loss_floor <= 1.0:
        raise InputError(f"must lie in (0, 1], got {loss_floor}", field="--loss-floor")
    if not 0.0 <= cond_dropout < 1.0:
        raise InputError(f"must lie in [0, 1), got {cond_dropout}", field="--cond-dropout")
    if logit_std <= 0:
        raise InputError(f"must be > 0, got {logit_std}", field="--logit-std")
    from arr_core.sim.toy_policy import CONFIG_FILE, default_config

    defaults = default_config()
    head = defaults["head_dim"]
    if width is not None and (width < head or width % head):
        raise InputError(f"must be a positive multiple of {head} (the head width), got {width}", field="--width")
    if layers is not None and layers < 1:
        raise InputError(f"must be >= 1, got {layers}", field="--layers")
    if image_size is not None and image_size < 8:
        raise InputError(f"must be >= 8, got {image_size}", field="--image-size")
    if patch_size is not None and patch_size < 1:
        raise InputError(f"must be >= 1, got {patch_size}", field="--patch-size")
    size, patch = image_size or defaults["image_size"], patch_size or defaults["patch_size"]
    if size % patch:
        raise InputError(f"the image size ({size}) must be a multiple of the patch size ({patch})",
                         field="--patch-size")
    architecture = {k: v for k, v in (("width", width), ("layers", layers), ("image_size", image_size),
                                      ("patch_size", patch_size)) if v is not None}
    if architecture and init is not None:
        raise InputError("cannot change the architecture of a continued policy (drop --width/--layers/"
                         "--image-size/--patch-size)",
                         field="--init", file=str(init))
    if threads is not None and threads < 1:
        raise InputError(f"must be >= 1, got {threads}", field="--threads")
    from arr_core.sim.toy_pretrain import SCHEDULES, SIGMA_SAMPLINGS, pretrain

    if schedule not in SCHEDULES:
        raise InputError(f"must be one of {', '.join(SCHEDULES)}, got {schedule!r}", field="--schedule")
    if sigma_sampling not in SIGMA_SAMPLINGS:
        raise InputError(f"must be one of {', '.join(SIGMA_SAMPLINGS)}, got {sigma_sampling!r}",
                         field="--sigma-sampling")
    if init is not None and not (init / CONFIG_FILE).is_file():
        raise InputError(f"is not a toy policy folder ({CONFIG_FILE} is missing)", field="--init",
                         file=str(init))
    if init is not None and out.resolve() == init.resolve():
        raise InputError("must differ from --init (saving would overwrite the policy being continued)",
                         field="--out", file=str(out))
    if out.exists() and not out.is_dir():
        raise InputError("exists and is not a folder", field="--out", file=str(out))
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    return pretrain(out, steps=steps, seed=seed, batch_size=batch_size, lr=lr, defect_rate=defect_rate,
                    eval_per_tag=eval_per_tag, loss_floor=loss_floor, init=init, schedule=schedule,
                    cond_dropout=cond_dropout, sigma_sampling=sigma_sampling, logit_mean=logit_mean,
                    logit_std=logit_std, architecture=architecture, log=console.print)


def register_toy(app: typer.Typer) -> None:
    """Add the ``toy`` command group (``arr toy pretrain``) to the root app."""
    app.add_typer(toy_app, name="toy")
