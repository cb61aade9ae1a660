"""``arr train``: RPO training of a policy with a group rewarder, from a YAML config.

    arr train --config configs/train_toy.yaml [--rubrics ID|FILE|none] [--resume RUN_OR_CKPT] [--out DIR]
    arr train --config configs/train_flux_qwen3vl.yaml --rubrics ID --gpus 8     # torchrun, one process per GPU

The command parses flags, resolves ``--rubrics`` in the store and calls the RPO recipe
(``arr_core.recipes.rpo.run``), which builds the policy, the rewarder and the prompts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from arr_cli.common import Home, console, home_dir, resolve_rubrics
from arr_core.errors import InputError


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train_cmd(
        config: Annotated[Path, typer.Option("--config", help="Training YAML (configs/train_*.yaml).")],
        rubrics: Annotated[Optional[str], typer.Option(
            "--rubrics", help="Rubric set id (or prefix) in the store, a rubric text file, or 'none'.")] = None,
        resume: Annotated[Optional[Path], typer.Option(
            "--resume", help="Run folder or checkpoint folder to resume from (exactly).")] = None,
        out: Annotated[Optional[Path], typer.Option(
            "--out", help="Run folder (default: the config's output_dir, else HOME/runs/rpo-<config digest>).")]
        = None,
        fresh: Annotated[bool, typer.Option(
            "--fresh", help="Start over in a run folder that has checkpoints (deletes them and its metrics); "
            "without it such a folder must be resumed (--resume) and is never silently restarted.")] = False,
        gpus: Annotated[int, typer.Option(
            "--gpus", min=1, help="Processes on this host, one per GPU: > 1 starts torchrun over the recipe's "
            "entry point (python -m arr_core.recipes.rpo) with the config's distributed mode.")] = 1,
        home: Home = None,
    ) -> None:
        """RPO: sample G images per prompt, rank them with the reward, update a LoRA (PPO + KL)."""
        import os

        from arr_core.recipes import rpo as recipe
        from arr_core.rpo.config import load_train_config
        from arr_core.store import Store

        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise InputError("`arr train` starts torchrun itself: run `arr train --gpus N` (or torchrun over "
                             "`-m arr_core.recipes.rpo`), not torchrun over the CLI", field="--gpus")
        cfg = load_train_config(config)
        if gpus > 1 and cfg.distributed == "none":
            raise InputError(f"--gpus {gpus} needs distributed: ddp or fsdp", file=str(config), field="distributed")
        run_dir = out or cfg.output_dir or home_dir(home) / "runs" / f"rpo-{recipe.config_digest(cfg)}"
        _check_run_folder(Path(run_dir), resume, fresh)
        from arr_core.recipes.preflight import check_device, check_endpoint, check_writable

        check_device(cfg.policy.device, gpus)
        check_writable(run_dir, "--out")
        check_endpoint(recipe.judge_vlm(cfg), "reward.vlm")
        rubrics = rubrics if rubrics is not None else cfg.reward.rubrics
        if rubrics is None:
            raise InputError("the judge needs --rubrics ID (or FILE, or 'none' to judge without rubrics)",
                             field="--rubrics")
        store = Store(home_dir(home))
        rubric_set = resolve_rubrics(store, rubrics)
        if gpus > 1:
            lora_dir, metrics = _torchrun(recipe, cfg, run_dir, rubric_set, gpus, resume)
        else:
            res = recipe.run(cfg, run_dir, rubric_set=rubric_set, store=store, resume=resume,
                             progress=lambda s: console.print(s, markup=False, soft_wrap=True))
            lora_dir, metrics = res.lora_dir, res.metrics_path
        console.print(f"LoRA: {lora_dir}  (pipe.load_lora_weights('{lora_dir}'))")
        console.print(f"metrics: {metrics}")


def _check_run_folder(run_dir: Path, resume: Path | None, fresh: bool) -> None:
    """A run folder with checkpoints is resumed (--resume) or started over (--fresh), never silently
    restarted (that would mix two runs' metrics and checkpoints)."""
    import shutil

    ckpts = sorted((run_dir / "checkpoints").glob("step_*"))
    if resume is not None and fresh:
        raise InputError("--resume and --fresh exclude each other", field="--fresh")
    if not ckpts or resume is not None:
        return
    if not fresh:
        raise InputError(f"the run folder already has checkpoints (newest {ckpts[-1].name}): pass --resume "
                         f"{run_dir} to continue, or --fresh to start over", file=str(run_dir), field="--out")
    shutil.rmtree(run_dir / "checkpoints")
    for name in ("metrics.jsonl", "lora", "samples", "rank0_result.json"):
        target = run_dir / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    console.print(f"--fresh: removed the checkpoints, metrics and LoRA of {run_dir}")


def _torchrun(recipe: Any, cfg: Any, run_dir: Path, rubric_set: Any, gpus: int, resume: Path | None
              ) -> tuple[str, str]:
    """Export the inputs next to the run and start the recipe's torchrun entry point; every rank reads
    the exported files (the DuckDB store stays closed on the workers)."""
    inputs = Path(run_dir) / "inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    # Non-finite values round-trip (TrainConfig writes Infinity/NaN): the trainer sees the value it was
    # given (lr: .inf → exit 5, not a config error).
    (inputs / "train_config.json").write_text(cfg.model_dump_json(indent=2), encoding="utf-8")
    rs_path = None
    if rubric_set is not None:
        rs_path = inputs / "rubric_set.json"
        rs_path.write_text(rubric_set.to_json(), encoding="utf-8")
    cmd = recipe.torchrun_command(gpus, inputs / "train_config.json", run_dir, rubrics_json=rs_path, resume=resume)
    result = recipe.run_torchrun(cmd, run_dir, gpus)  # a rank's error comes back with its exit code (2/3/4/5)
    return result["lora_dir"], result["metrics_uri"]
