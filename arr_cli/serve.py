"""``arr serve reward``: the judge as a reward service for other trainers (docs/rewards.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from arr_cli.common import Home, console, home_dir, resolve_rubrics
from arr_core.errors import InputError


def register(app: typer.Typer) -> None:
    serve = typer.Typer(name="serve", help="Serve the judge over HTTP.", no_args_is_help=True)

    @serve.command("reward")
    def reward_cmd(
        rubrics: Annotated[str, typer.Option("--rubrics", help="Rubric set id (or prefix) in the store, a "
                                             "plain-text rubrics file, or 'none'.")],
        config: Annotated[Optional[Path], typer.Option("--config", help="Service YAML: task, reward (as in a "
                                                       "training config), image_root, max_concurrency, "
                                                       "max_queue, max_images, max_failure_rate.")] = None,
        port: Annotated[int, typer.Option("--port", help="TCP port on 127.0.0.1")] = 8200,
        image_root: Annotated[Optional[Path], typer.Option(
            "--image-root", help="Folder request images may be read from by path (overrides the config's "
            "image_root); without it, only base64 images are accepted.")] = None,
        home: Home = None,
    ) -> int:
        """Serve POST /v1/rewards (groups of images → per-image rewards with per-component and
        per-criterion details), POST /v1/scores (per-criterion judge: pointwise), POST /compute
        (Flow-Factory's remote reward protocol) and GET /health on 127.0.0.1 until interrupted."""
        import uvicorn

        from arr_core.judge.service import image_root_from
        from arr_core.recipes.preflight import check_endpoint
        from arr_core.recipes.reward_service import build_app, load_service_config
        from arr_core.store import Store
        from arr_core.vlm.config import VLMConfig

        if not 0 < port < 65536:
            raise InputError(f"must be a TCP port (1..65535), got {port}", field="--port")
        cfg = load_service_config(config)
        if image_root is not None:
            cfg = cfg.model_copy(update={"image_root": image_root})
        try:
            cfg = cfg.model_copy(update={"image_root": image_root_from(cfg.image_root)})
        except ValueError as e:
            raise InputError(str(e), field="--image-root") from None
        rs = resolve_rubrics(Store(home_dir(home)), rubrics)
        if cfg.reward.vlm:
            check_endpoint(VLMConfig.model_validate(cfg.reward.vlm), "reward.vlm")
        app, desc = build_app(cfg, rs)
        console.print(f"reward service: {desc}; task {cfg.task}; at http://127.0.0.1:{port}/v1/rewards "
                      f"(max_concurrency {cfg.max_concurrency}, image paths "
                      f"{'under ' + str(cfg.image_root) if cfg.image_root else 'refused'})", markup=False)
        uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan="off",
                    timeout_graceful_shutdown=2)
        return 0

    app.add_typer(serve)
