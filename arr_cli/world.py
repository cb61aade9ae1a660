"""``arr world``: make scene-world preference pairs and held-out GenEval-format prompt sets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from arr_cli.common import console
from arr_core.errors import InputError


def register(app: typer.Typer) -> None:
    world = typer.Typer(name="world", help="The synthetic scene world (offline test/demo data).",
                        no_args_is_help=True)

    @world.command("make-pairs")
    def make_pairs_cmd(
        task: Annotated[str, typer.Option(help="t2i or edit")] = "t2i",
        n: Annotated[int, typer.Option(help="number of pairs")] = 100,
        seed: Annotated[int, typer.Option(help="random seed (equal seeds give equal bytes)")] = 0,
        out: Annotated[Path, typer.Option(help="output folder")] = Path("world_pairs"),
        size: Annotated[int, typer.Option(help="image side in pixels")] = 64,
    ) -> int:
        """Write OUT/pairs.json (ARR reference format) and OUT/images/*.png."""
        from arr_core.sim.world.pairs import TASKS, make_pairs

        if task not in TASKS:
            raise InputError(f"must be one of {', '.join(TASKS)}, got {task!r}", field="--task")
        if n < 1:
            raise InputError(f"must be >= 1, got {n}", field="--n")
        if size < 16:
            raise InputError(f"must be >= 16 pixels, got {size}", field="--size")
        path = make_pairs(task, n, seed, out, size=size)
        records = json.loads(path.read_text(encoding="utf-8"))
        first = sum(r["label_rank"] == [1, 2] for r in records)
        console.print(f"wrote {len(records)} {task} pairs to {path} (images under {out / 'images'}; "
                      f"first preferred in {first})")
        if task == "t2i":
            console.print(f"GenEval metadata: {out / 'geneval_metadata.jsonl'}")
        return 0

    @world.command("make-prompts")
    def make_prompts_cmd(
        n: Annotated[int, typer.Option(help="number of prompts")] = 60,
        seed: Annotated[int, typer.Option(help="random seed")] = 0,
        out: Annotated[Path, typer.Option(help="output .jsonl file (GenEval metadata format)")] = Path(
            "world_prompts.jsonl"),
    ) -> int:
        """Write N prompts balanced over GenEval's six tags as GenEval metadata lines."""
        from arr_core.sim.world.pairs import make_prompts

        if n < 1:
            raise InputError(f"must be >= 1, got {n}", field="--n")
        specs = make_prompts(n, seed)
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "w", encoding="utf-8") as f:
            for s in specs:
                f.write(json.dumps(s.to_geneval()) + "\n")
        tags: dict[str, int] = {}
        for s in specs:
            tags[s.tag] = tags.get(s.tag, 0) + 1
        console.print(f"wrote {len(specs)} prompts to {out} ({', '.join(f'{k}: {v}' for k, v in tags.items())})")
        return 0

    app.add_typer(world, name="world")
