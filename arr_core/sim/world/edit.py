"""Editing tasks of the scene world: a source scene, an instruction and the intended target scene.

Four kinds: recolour ("change the red circle to blue"), add ("add a green square"), remove
("remove the triangle") and move ("move the circle to the left of the square"). An edit is judged by
whether it follows the instruction and whether it preserves everything else (as ImgEdit-style
benchmarks ask), both read off detections of the source and the edited image.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
from PIL import Image

from arr_core.sim.world.detect import Detection, analyse_image, detect
from arr_core.sim.world.grammar import COLORS, RELATIONS, SHAPES, normalize_text
from arr_core.sim.world.scene import (
    IMAGE_DEFECTS,
    Scene,
    SceneObject,
    object_relations,
    place_object,
    place_relative,
    relative_position,
)
from arr_core.sim.world.utility import rank_from_utilities

EDIT_KINDS: tuple[str, ...] = ("recolour", "add", "remove", "move")
# Scene-level edit defects: the edit was not made, was made wrongly, or changed another object too;
# plus the image-level defects of the renderer.
EDIT_DEFECTS: tuple[str, ...] = ("not_followed", "wrong_edit", "collateral") + IMAGE_DEFECTS
EDIT_WEIGHTS: dict[str, float] = {"follows": 0.5, "preserved": 0.25, "quality": 0.25}
POSITION_TOL = 0.08  # an object "stayed" when its centre moved less than this fraction of the side


@dataclass
class EditTask:
    source: Scene
    instruction: str
    kind: str
    target: Scene


def _ref_text(o: SceneObject, scene: Scene, with_color: bool = False) -> str:
    """"the circle" when the shape is unique in ``scene``, else "the red circle"."""
    same = [p for p in scene.objects if p.shape == o.shape]
    return f"the {o.color} {o.shape}" if with_color or len(same) > 1 else f"the {o.shape}"


def _rel_text(rel: str) -> str:
    return f"to the {rel}" if rel in ("left of", "right of") else rel


def _source_scene(rng: np.random.Generator, n: int) -> Scene:
    """``n`` objects with distinct (shape, colour) pairs at free places."""
    objs: list[SceneObject] = []
    while len(objs) < n:
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        color = list(COLORS)[int(rng.integers(len(COLORS)))]
        if any(o.shape == shape and o.color == color for o in objs):
            continue
        o = place_object(rng, shape, color, objs, 3)
        if o is None:
            objs = []
            continue
        objs.append(o)
    return Scene(objs)


def sample_edit(rng: np.random.Generator, kind: str | None = None) -> EditTask:
    """A random editing task (uniform kind when ``kind`` is None)."""
    if kind is None:
        kind = EDIT_KINDS[int(rng.integers(len(EDIT_KINDS)))]
    if kind not in EDIT_KINDS:
        raise ValueError(f"edit kind must be one of {EDIT_KINDS}, got {kind!r}")
    for _ in range(100):
        # two or more objects, except for "add": every edit then has something to preserve
        n = int(rng.integers(1 if kind == "add" else 2, 4))
        src = _source_scene(rng, n)
        tgt = src.copy()
        i = int(rng.integers(n))
        o = tgt.objects[i]
        if kind == "recolour":
            new = [c for c in COLORS if c != o.color and not any(p.shape == o.shape and p.color == c
                                                                   for p in src.objects)]
            color = new[int(rng.integers(len(new)))]
            text = f"change {_ref_text(src.objects[i], src, with_color=True)} to {color}"
            o.color = color
        elif kind == "add":
            shape = SHAPES[int(rng.integers(len(SHAPES)))]
            free = [c for c in COLORS if not any(p.shape == shape and p.color == c for p in src.objects)]
            color = free[int(rng.integers(len(free)))]
            new_o = place_object(rng, shape, color, tgt.objects, n + 1)
            if new_o is None:
                continue
            tgt.objects.append(new_o)
            text = f"add a {color} {shape}" if color[0] not in "aeiou" else f"add an {color} {shape}"
        elif kind == "remove":
            text = f"remove {_ref_text(o, src)}"
            tgt.objects.pop(i)
        else:
            j = int(rng.integers(n - 1))
            j = j if j < i else j + 1
            ref = tgt.objects[j]
            rel = RELATIONS[int(rng.integers(len(RELATIONS)))]
            if rel in relative_position((o.cx, o.cy), (o.size, o.size), (ref.cx, ref.cy), (ref.size, ref.size)):
                continue  # already true: the edit would be a no-op
            others = [p for k, p in enumerate(tgt.objects) if k != i]
            moved = place_relative(rng, o.shape, o.color, ref, rel, others)
            if moved is None:
                continue
            moved.size = o.size  # the relation margin depends on the size: test again
            if not _fits_size(moved, others) or rel not in object_relations(moved, ref):
                continue
            tgt.objects[i] = moved
            text = f"move {_ref_text(o, src)} {_rel_text(rel)} {_ref_text(ref, src)}"
        return EditTask(source=src, instruction=text, kind=kind, target=tgt)
    raise RuntimeError(f"could not sample a {kind} edit in 100 tries")


def _fits_size(o: SceneObject, others: list[SceneObject]) -> bool:
    from arr_core.sim.world.scene import _fits  # one layout rule for both modules

    return _fits(o, others)


# ----------------------------------------------------------------------------- parsing

_REF = r"(?:the |a |an )?(?:(?P<{p}c>" + "|".join(COLORS) + r") )?(?P<{p}s>" + "|".join(SHAPES) + r")"


def _ref(p: str) -> str:
    return _REF.replace("{p}", p)


def _obj(m: re.Match, p: str) -> dict:
    out = {"class": m.group(p + "s")}
    if m.group(p + "c"):
        out["color"] = m.group(p + "c")
    return out


def parse_instruction(text: str) -> dict | None:
    """Parse an edit instruction into ``{"kind", "object", ...}``; None when it is not one.

    recolour: ``{"kind", "object", "color"}``; add / remove: ``{"kind", "object"}``;
    move: ``{"kind", "object", "relation", "reference"}``. Objects are ``{"class", "color"?}``.
    """
    t = normalize_text(text)
    colors = "|".join(COLORS)
    m = re.fullmatch(rf"(?:change|recolou?r|make|turn|paint) {_ref('a')} (?:to|into|to be) (?P<new>{colors})", t)
    if m:
        return {"kind": "recolour", "object": _obj(m, "a"), "color": m.group("new")}
    m = re.fullmatch(rf"add {_ref('a')}", t)
    if m:
        obj = _obj(m, "a")
        return {"kind": "add", "object": obj}
    m = re.fullmatch(rf"(?:remove|delete) {_ref('a')}", t)
    if m:
        return {"kind": "remove", "object": _obj(m, "a")}
    rels = "|".join(RELATIONS)
    m = re.fullmatch(rf"move {_ref('a')} (?:to )?(?:the )?(?P<rel>{rels}) {_ref('b')}", t)
    if m:
        return {"kind": "move", "object": _obj(m, "a"), "relation": m.group("rel"),
                "reference": _obj(m, "b")}
    return None


def instruction_vocabulary() -> list[str]:
    """Every word an edit instruction can contain, sorted."""
    words = {"change", "to", "add", "a", "an", "remove", "the", "move", "of"}
    words |= set(SHAPES) | set(COLORS)
    for r in RELATIONS:
        words |= set(r.split())
    return sorted(words)


# ----------------------------------------------------------------------------- checking

def _matches(d: Detection, obj: dict) -> bool:
    return d.shape == obj["class"] and ("color" not in obj or d.color == obj["color"])


def _near(a: Detection, b: Detection) -> bool:
    return math.hypot(a.cx - b.cx, a.cy - b.cy) <= POSITION_TOL


def _pair_up(src: list[Detection], out: list[Detection]) -> tuple[list[Detection], list[Detection]]:
    """Greedily pair each source detection with an equal one (shape, colour, place) in ``out``;
    returns (unmatched source, unmatched output)."""
    left = list(out)
    lost = []
    for s in src:
        hit = next((d for d in left if d.shape == s.shape and d.color == s.color and _near(s, d)), None)
        if hit is None:
            lost.append(s)
        else:
            left.remove(hit)
    return lost, left


def _desc(d: Detection) -> str:
    return f"{d.color} {d.shape} at ({d.cx:.2f}, {d.cy:.2f})"


def check_edit(instruction: str, source_dets: list[Detection], edited_dets: list[Detection]) -> dict:
    """``{"follows": bool, "preserved": bool, "why": str}`` for an edit read off detections."""
    ins = parse_instruction(instruction)
    if ins is None:
        raise ValueError(f"instruction {instruction!r} is not a scene-world edit instruction")
    kind, obj = ins["kind"], ins["object"]
    src, out = list(source_dets), list(edited_dets)
    if kind == "add":
        before = sum(_matches(d, obj) for d in src)
        after = sum(_matches(d, obj) for d in out)
        lost, new = _pair_up(src, out)
        follows = after == before + 1
        preserved = not lost and len(new) <= 1
        why = f"{obj} count {before} -> {after}; lost {[_desc(d) for d in lost]}; new {[_desc(d) for d in new]}"
        return {"follows": follows, "preserved": preserved, "why": why}
    cands = [d for d in src if _matches(d, obj)]
    if len(cands) != 1:
        return {"follows": False, "preserved": False,
                "why": f"the source has {len(cands)} objects matching {obj}, expected exactly 1"}
    o = cands[0]
    rest = [d for d in src if d is not o]
    lost, new = _pair_up(rest, out)
    if kind == "recolour":
        hit = [d for d in new if d.shape == o.shape and d.color == ins["color"] and _near(d, o)]
        follows = bool(hit)
        # whatever stands in the edited object's place is judged by "follows", not as an extra
        extra = [d for d in new if not (d.shape == o.shape and _near(d, o))]
        why = f"recoloured {'found' if hit else 'missing'}"
    elif kind == "remove":
        still = [d for d in new if d.shape == o.shape and d.color == o.color and _near(d, o)]
        follows = not still
        extra = [d for d in new if not any(d is t for t in still)]
        why = f"{_desc(o)} {'still there' if still else 'gone'}"
    else:
        refs = [d for d in out if _matches(d, ins["reference"])]
        movers = [d for d in new if d.shape == o.shape and d.color == o.color]
        follows = False
        why = "moved object or reference missing"
        if len(refs) >= 1 and movers:
            r = refs[0]
            rels = relative_position((movers[0].cx, movers[0].cy), (movers[0].w, movers[0].h),
                                     (r.cx, r.cy), (r.w, r.h))
            follows = ins["relation"] in rels
            why = f"moved object is {sorted(rels) or 'in no relation'} to the reference"
        extra = [d for d in new if not movers or d is not movers[0]]
    preserved = not lost and not extra
    why += f"; lost {[_desc(d) for d in lost]}; extra {[_desc(d) for d in extra]}"
    return {"follows": bool(follows), "preserved": bool(preserved), "why": why}


def edit_utility(instruction: str, source_image: Image.Image, edited_image: Image.Image) -> float:
    """Hidden human utility of an edit in [0, 1]: follows the instruction, preserves the rest,
    image quality (weights EDIT_WEIGHTS)."""
    dets, q = analyse_image(edited_image)
    res = check_edit(instruction, detect(source_image), dets)
    quality = (q["sharpness"] + (1.0 - q["noise"]) + q["contrast"]) / 3.0
    parts = {"follows": float(res["follows"]), "preserved": float(res["preserved"]), "quality": quality}
    return float(sum(EDIT_WEIGHTS[k] * parts[k] for k in EDIT_WEIGHTS))


def label_edit_pair(instruction: str, source_image: Image.Image, img_a: Image.Image, img_b: Image.Image,
                    rng: np.random.Generator, noise: float = 0.1) -> list[int]:
    """Noisy human preference between two edits as ``label_rank`` ([1, 2] or [2, 1], never tied)."""
    return rank_from_utilities(edit_utility(instruction, source_image, img_a),
                               edit_utility(instruction, source_image, img_b), rng, noise)


def apply_edit_defects(task: EditTask, defects: list[str], rng: np.random.Generator) -> Scene:
    """The scene an imperfect editor would produce: the target with scene-level edit defects applied
    (image-level ones are render options)."""
    bad = [d for d in defects if d not in EDIT_DEFECTS]
    if bad:
        raise ValueError(f"unknown edit defects {bad}; expected names from {EDIT_DEFECTS}")
    out = task.target.copy()
    if "not_followed" in defects:
        out = task.source.copy()
    elif "wrong_edit" in defects:
        out = _wrong_edit(task, rng)
    if "collateral" in defects:
        changed = [o for o in out.objects
                   if any(o.shape == s.shape and o.color == s.color and abs(o.cx - s.cx) < 1e-9
                          for s in task.source.objects)]
        if changed:
            o = changed[int(rng.integers(len(changed)))]
            colors = [c for c in COLORS if c != o.color]
            o.color = colors[int(rng.integers(len(colors)))]
    return out


def _wrong_edit(task: EditTask, rng: np.random.Generator) -> Scene:
    """Make the edit the instruction asks for, but wrongly (another colour, shape, object or side)."""
    ins = parse_instruction(task.instruction)
    assert ins is not None, task.instruction
    out = task.target.copy()
    src_keys = {(o.shape, o.color, round(o.cx, 9), round(o.cy, 9)) for o in task.source.objects}
    new = [o for o in out.objects if (o.shape, o.color, round(o.cx, 9), round(o.cy, 9)) not in src_keys]
    if ins["kind"] == "recolour" and new:
        colors = [c for c in COLORS if c not in (new[0].color, ins["object"].get("color"))]
        new[0].color = colors[int(rng.integers(len(colors)))]
    elif ins["kind"] == "add" and new:
        new[0].shape = [s for s in SHAPES if s != new[0].shape][int(rng.integers(2))]
    elif ins["kind"] == "remove":
        out = task.source.copy()
        keep = [o for o in out.objects if not (o.shape == ins["object"]["class"]
                                               and o.color == ins["object"].get("color", o.color))]
        if keep:
            out.objects.remove(keep[int(rng.integers(len(keep)))])
        else:  # nothing else to remove by mistake: the object stays and changes colour instead
            o = out.objects[0]
            o.color = [c for c in COLORS if c != o.color][int(rng.integers(len(COLORS) - 1))]
    elif ins["kind"] == "move" and new:
        opposite = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
        ref = next(o for o in out.objects if o.shape == ins["reference"]["class"]
                   and o.color == ins["reference"].get("color", o.color) and o is not new[0])
        others = [o for o in out.objects if o is not new[0]]
        wrong = [opposite[ins["relation"]]] + [r for r in RELATIONS if r not in (ins["relation"],
                                                                                 opposite[ins["relation"]])]
        i = out.objects.index(new[0])
        for rel in wrong:
            moved = place_relative(rng, new[0].shape, new[0].color, ref, rel, others)
            if moved is not None:
                moved.size = new[0].size
                if _fits_size(moved, others) and ins["relation"] not in object_relations(moved, ref):
                    out.objects[i] = moved
                    break
        else:  # nowhere else to put it: the object stays where it was in the source
            out.objects[i] = next(o for o in task.source.objects
                                  if o.shape == new[0].shape and o.color == new[0].color)
    return out
