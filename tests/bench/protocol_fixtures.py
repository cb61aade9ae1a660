"""Small fixtures in each benchmark's published layout, with scene-world images (not the real data).

Every builder writes files the way the benchmark's own evaluation script reads them (see
docs/protocols.md) and returns the paths plus what the scene VLM should find in them.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from arr_core.sim.world.edit import sample_edit
from arr_core.sim.world.render import render
from arr_core.sim.world.scene import Scene, SceneObject

RED_CIRCLE = Scene([SceneObject("circle", "red", 0.3, 0.5, 0.25)])
BLUE_SQUARE = Scene([SceneObject("square", "blue", 0.7, 0.5, 0.25)])
BOTH = Scene([SceneObject("circle", "red", 0.3, 0.5, 0.25), SceneObject("square", "blue", 0.7, 0.5, 0.25)])


def png(scene: Scene, path: Path, size: int = 64) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    render(scene, size).save(path)
    return path


def png_bytes(scene: Scene) -> bytes:
    buf = io.BytesIO()
    render(scene, 64).save(buf, format="PNG")
    return buf.getvalue()


def edits(n: int, seed: int = 5) -> list[tuple[str, Scene, Scene]]:
    """(instruction, source, correct edit) scene-world edits, one kind after another."""
    rng = np.random.default_rng(seed)
    kinds = ("recolour", "add", "remove", "move")
    out = []
    for i in range(n):
        t = sample_edit(rng, kinds[i % 4])
        out.append((t.instruction, t.source, t.target))
    return out


def gedit(root: Path, *, parquet: bool = False) -> dict:
    """GEdit-Bench metadata (the HF dataset's fields) + ``fullset/<task_type>/en/<key>.png`` edits.

    Record 0: a correct edit; record 1: the edit not made (the output is the source); record 2
    (intersection): a correct edit. Sources are ``<key>_SRCIMG.png`` files, except record 2 of the
    Parquet variant, whose source is only in the record's ``input_image`` bytes."""
    cases = edits(3)
    groups = ["color_alter", "subject-add", "subject-remove"]
    rows = []
    for i, ((instr, src, tgt), g) in enumerate(zip(cases, groups, strict=True)):
        key = f"k{i}"
        folder = root / "results" / "fullset" / g / "en"
        png(src if i == 1 else tgt, folder / f"{key}.png")
        if i < 2 or not parquet:
            png(src, folder / f"{key}_SRCIMG.png")
        rows.append({"task_type": g, "key": key, "instruction": instr, "instruction_language": "en",
                     "Intersection_exist": i == 2,
                     "input_image": {"bytes": png_bytes(src), "path": f"{key}.png"}})
    meta = root / ("gedit.parquet" if parquet else "gedit.jsonl")
    if parquet:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), meta)
    else:
        with meta.open("w") as f:
            for r in rows:
                f.write(json.dumps({k: v for k, v in r.items() if k != "input_image"}) + "\n")
    return {"meta": meta, "images": root / "results", "cases": cases, "groups": groups}


# A judging prompt in ImgEdit's format (our wording): the three labelled 1-5 lines and <edit_prompt>.
JUDGE_PROMPT = ("\nYou are a data rater specializing in grading image edits. You will be given two images (before "
                "and after editing) and the editing instruction.\n\nExample Response Format:\nBrief reasoning: A "
                "short explanation.\nPrompt Compliance: A number from 1 to 5.\nVisual Naturalness: A number from 1 "
                "to 5.\nPhysical & Detail Integrity: A number from 1 to 5.\nediting instruction is : <edit_prompt>."
                "\n\nBelow are the images before and after editing:\n")


def imgedit(root: Path) -> dict:
    """``basic_edit.json`` ({key: {id, prompt, edit_type}}), origin images under ``<id>``, edits as
    ``<key>.png``, and a judge-prompt file. Key "2" is an edit that was not made."""
    cases = edits(4, seed=9)
    types = ["adjust", "add", "remove", "replace"]
    data, prompts = {}, {}
    for i, ((instr, src, tgt), t) in enumerate(zip(cases, types, strict=True)):
        key = str(i + 1)
        data[key] = {"id": f"cat{i % 2}/{i:06d}.jpg", "prompt": instr, "edit_type": t}
        png(src, root / "origin" / data[key]["id"])
        png(src if key == "2" else tgt, root / "edited" / f"{key}.png")
        prompts[t] = JUDGE_PROMPT
    (root / "basic_edit.json").write_text(json.dumps(data, indent=1))
    (root / "prompts.json").write_text(json.dumps(prompts))
    return {"edits": root / "basic_edit.json", "origin": root / "origin", "edited": root / "edited",
            "prompts": root / "prompts.json", "types": types}


DPG_COLUMNS = ["item_id", "text", "keywords", "proposition_id", "dependency", "category_broad",
               "category_detailed", "tuple", "question_natural_language"]


def dpg(root: Path, *, grid: bool = False) -> dict:
    """``dpg_bench.csv`` rows (ELLA's columns) for two prompts and ``<item_id>.png`` images.

    Item "a1": a red circle is drawn, no blue square: q1 (circle, yes) → q2 (red, child of q1, yes);
    q3 (square, no) → q4 (blue, child of q3, masked). Expected score (1 + 1 + 0 + 0) / 4 = 0.5.
    Item "b2": both drawn: every answer yes, score 1."""
    rows = [("a1", 1, "0", "entity - whole (circle)", "Is there a circle?"),
            ("a1", 2, "1", "attribute - color (circle, red)", "Is there a red circle?"),
            ("a1", 3, "0", "entity - whole (square)", "Is there a square?"),
            ("a1", 4, "3", "attribute - color (square, blue)", "Is there a blue square?"),
            ("b2", 1, "0", "entity - whole (circle)", "Is there a red circle?"),
            ("b2", 2, "0", "entity - whole (square)", "Is there a blue square?"),
            ("b2", 3, "1,2", "relation - spatial (circle, square, left of)", "Is the circle left of the square?")]
    path = root / "dpg_bench.csv"
    root.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(DPG_COLUMNS)
        for iid, qid, dep, tup, q in rows:
            w.writerow([iid, "prompt text", "", qid, dep, tup.split(" - ")[0], tup.split(" (")[0], tup, q])
    for iid, scene in (("a1", RED_CIRCLE), ("b2", BOTH)):
        if grid:
            tile = render(scene, 64)
            from PIL import Image

            g = Image.new("RGB", (128, 128))
            for k, (x, y) in enumerate([(0, 0), (64, 0), (0, 64), (64, 64)]):
                g.paste(tile if k != 3 else render(Scene([]), 64), (x, y))
            (root / "images").mkdir(parents=True, exist_ok=True)
            g.save(root / "images" / f"{iid}.png")
        else:
            png(scene, root / "images" / f"{iid}.png")
    return {"csv": path, "images": root / "images"}


def tiif(root: Path) -> dict:
    """A TIIF-Bench folder (``testmini_prompts`` + line-aligned ``testmini_eval_prompts``) with two types,
    and images ``<type>/<model>/short_description/<idx>.png``."""
    spec = {"shape+color": [("A red circle.", RED_CIRCLE,
                             ["Is there a red circle in the image?  ", "Is there a blue circle in the image?"],
                             ["yes", "no"]),
                            ("A blue square.", RED_CIRCLE,  # wrong image: both expected answers fail
                             ["Is there a blue square in the image?", "Is there a red circle in the image?"],
                             ["yes", "no"])],
            "2d_spatial_relation": [("A red circle left of a blue square.", BOTH,
                                     ["Is there a red circle in the image?", "Is there a blue square in the image?",
                                      "Is the red circle left of the blue square?"], ["yes", "yes", "yes"])]}
    for t, rows in spec.items():
        (root / "testmini_prompts").mkdir(parents=True, exist_ok=True)
        (root / "testmini_eval_prompts").mkdir(parents=True, exist_ok=True)
        with (root / "testmini_prompts" / f"{t}_prompts.jsonl").open("w") as f:
            for text, _, _, _ in rows:
                f.write(json.dumps({"type": t, "short_description": text, "long_description": text + " Long."}) + "\n")
        with (root / "testmini_eval_prompts" / f"{t}_eval_prompts.jsonl").open("w") as f:
            for _, _, qs, ans in rows:
                f.write(json.dumps({"type": t, "yn_question_list": qs, "yn_answer_list": ans}) + "\n")
        for idx, (_, scene, _, _) in enumerate(rows):
            png(scene, root / "output" / t / "my-model" / "short_description" / f"{idx}.png")
    return {"root": root, "images": root / "output"}


def unigenbench(root: Path, per_prompt: int = 2) -> dict:
    """A UniGenBench test CSV (``index, prompt_en, sub_dims_en``) and ``<index>_<j>.png`` images."""
    rows = [(0, "A red circle.", ["Attribute - Color", "Attribute - Quantity"], ["red circle", "two circles"],
             RED_CIRCLE),
            (1, "A blue square next to a red circle.", ["Entity Layout - Two-Dimensional Space", "Style"],
             ["red circle left of blue square", "flat vector style"], BOTH)]
    path = root / "test_prompts_en.csv"
    root.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["index", "prompt_en", "sub_dims_en"])
        for idx, text, tps, descs, _ in rows:
            w.writerow([idx, text, json.dumps({"Primary Categories": "Test", "Testpoints": tps,
                                               "Testpoint Description": descs})])
    for idx, *_, scene in rows:
        for j in range(per_prompt):
            png(scene, root / "images" / f"{idx}_{j}.png")
    return {"csv": path, "images": root / "images"}
