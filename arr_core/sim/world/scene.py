"""Scenes of the scene world: objects with shape, colour, centre and size, seeded layouts, defects.

Coordinates are fractions of the image side, y pointing down (image convention, as in GenEval's
boxes). ``size`` is the side of the object's bounding box (circle diameter, square side, triangle
base and height).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from arr_core.sim.world.grammar import COLORS, RELATIONS, SHAPES, PromptSpec

DEFECTS: tuple[str, ...] = ("missing_object", "extra_object", "wrong_color", "wrong_count",
                            "broken_relation", "wrong_shape", "noise", "blur", "low_contrast")
SCENE_DEFECTS: tuple[str, ...] = DEFECTS[:6]
IMAGE_DEFECTS: tuple[str, ...] = DEFECTS[6:]

MIN_SIZE, MAX_SIZE = 0.16, 0.26
BORDER = 0.04  # free band along the image border, so the border shows only background
GAP = 0.06  # minimum free distance between two bounding boxes (blur must not merge objects)
POSITION_THRESHOLD = 0.1  # GenEval's margin factor on the summed box sizes


@dataclass
class SceneObject:
    shape: str
    color: str
    cx: float
    cy: float
    size: float


@dataclass
class Scene:
    objects: list[SceneObject] = field(default_factory=list)

    def copy(self) -> Scene:
        return Scene([replace(o) for o in self.objects])


def relative_position(a_c: tuple[float, float], a_wh: tuple[float, float],
                      b_c: tuple[float, float], b_wh: tuple[float, float]) -> set[str]:
    """Relations of box A to box B, exactly as GenEval's ``relative_position``.

    The centre offset is shrunk by 0.1 × the summed box sizes per axis; a relation holds when the
    shrunk offset's component along it exceeds half of the offset's length.
    """
    off = np.array([a_c[0] - b_c[0], a_c[1] - b_c[1]], dtype=float)
    dims = np.array([a_wh[0] + b_wh[0], a_wh[1] + b_wh[1]], dtype=float)
    revised = np.maximum(np.abs(off) - POSITION_THRESHOLD * dims, 0) * np.sign(off)
    if np.all(np.abs(revised) < 1e-3):
        return set()
    dx, dy = revised / np.linalg.norm(off)
    rels = set()
    if dx < -0.5:
        rels.add("left of")
    if dx > 0.5:
        rels.add("right of")
    if dy < -0.5:
        rels.add("above")
    if dy > 0.5:
        rels.add("below")
    return rels


def object_relations(a: SceneObject, b: SceneObject) -> set[str]:
    return relative_position((a.cx, a.cy), (a.size, a.size), (b.cx, b.cy), (b.size, b.size))


def _fits(obj: SceneObject, others: list[SceneObject]) -> bool:
    h = obj.size / 2
    if obj.cx - h < BORDER or obj.cx + h > 1 - BORDER or obj.cy - h < BORDER or obj.cy + h > 1 - BORDER:
        return False
    for o in others:
        lim = (obj.size + o.size) / 2 + GAP
        if abs(obj.cx - o.cx) < lim and abs(obj.cy - o.cy) < lim:
            return False
    return True


def _size(rng: np.random.Generator, n_objects: int) -> float:
    hi = MAX_SIZE if n_objects <= 2 else MAX_SIZE - 0.04
    return float(rng.uniform(MIN_SIZE, hi))


def place_object(rng: np.random.Generator, shape: str, color: str, others: list[SceneObject],
                 n_objects: int, tries: int = 200) -> SceneObject | None:
    """A new object at a random free place, or None when none was found in ``tries`` draws."""
    for _ in range(tries):
        s = _size(rng, n_objects)
        o = SceneObject(shape, color, float(rng.uniform(s / 2 + BORDER, 1 - s / 2 - BORDER)),
                        float(rng.uniform(s / 2 + BORDER, 1 - s / 2 - BORDER)), s)
        if _fits(o, others):
            return o
    return None


def place_relative(rng: np.random.Generator, shape: str, color: str, ref: SceneObject, relation: str,
                   others: list[SceneObject], tries: int = 200) -> SceneObject | None:
    """A new object that stands clearly in ``relation`` to ``ref`` (GenEval's test with slack)."""
    if relation not in RELATIONS:
        raise ValueError(f"relation must be one of {RELATIONS}, got {relation!r}")
    for _ in range(tries):
        s = _size(rng, 2)
        along = float(rng.uniform(0.3, 0.7))
        across = float(rng.uniform(-0.3, 0.3)) * along
        dx, dy = {"left of": (-along, across), "right of": (along, across),
                  "above": (across, -along), "below": (across, along)}[relation]
        o = SceneObject(shape, color, ref.cx + dx, ref.cy + dy, s)
        if _fits(o, others) and relation in object_relations(o, ref) and len(object_relations(o, ref)) == 1:
            return o
    return None


def _random_color(rng: np.random.Generator, avoid: set[str] = frozenset()) -> str:
    names = [c for c in COLORS if c not in avoid]
    return names[int(rng.integers(len(names)))]


def scene_from_spec(spec: PromptSpec, rng: np.random.Generator, max_restarts: int = 50) -> Scene:
    """A correct, non-overlapping layout for ``spec``: exactly the included objects, colours as
    asked (random where free), relations satisfied with GenEval's margin."""
    for _ in range(max_restarts):
        objs: list[SceneObject] = []
        ok = True
        n_total = sum(int(c["count"]) for c in spec.include)
        for c in spec.include:
            for _k in range(int(c["count"])):
                color = c.get("color") or _random_color(rng)
                if c.get("position"):
                    rel, idx = c["position"]
                    ref = _group_objects(spec, objs, int(idx))
                    o = place_relative(rng, c["class"], color, ref[0], rel, objs) if ref else None
                else:
                    o = place_object(rng, c["class"], color, objs, n_total)
                if o is None:
                    ok = False
                    break
                objs.append(o)
            if not ok:
                break
        if ok:
            return Scene(objs)
    raise RuntimeError(f"could not lay out {spec.prompt!r} in {max_restarts} restarts")


def _group_objects(spec: PromptSpec, objs: list[SceneObject], idx: int) -> list[SceneObject]:
    """The objects placed for include clause ``idx`` (clauses are placed in order)."""
    start = sum(int(c["count"]) for c in spec.include[:idx])
    return objs[start:start + int(spec.include[idx]["count"])]


def applicable_defects(spec: PromptSpec) -> list[str]:
    """Defects that make a render of ``spec`` wrong or worse (e.g. broken_relation needs a relation)."""
    out = ["missing_object", "extra_object", "wrong_shape", "wrong_count"]
    if any(c.get("color") for c in spec.include):
        out.append("wrong_color")
    if any(c.get("position") for c in spec.include):
        out.append("broken_relation")
    return out + list(IMAGE_DEFECTS)


def apply_defects(scene: Scene, spec: PromptSpec, defects: list[str], rng: np.random.Generator) -> Scene:
    """A copy of ``scene`` with the scene-level ``defects`` applied; image-level ones are ignored here
    (they are render options). Unknown names raise ValueError."""
    bad = [d for d in defects if d not in DEFECTS]
    if bad:
        raise ValueError(f"unknown defects {bad}; expected names from {DEFECTS}")
    out = scene.copy()
    for d in defects:
        if d in IMAGE_DEFECTS or not out.objects:
            continue
        if d == "missing_object":
            out.objects.pop(int(rng.integers(len(out.objects))))
        elif d == "extra_object":
            o = place_object(rng, SHAPES[int(rng.integers(len(SHAPES)))], _random_color(rng),
                             out.objects, len(out.objects) + 1)
            if o is not None:
                out.objects.append(o)
        elif d == "wrong_color":
            coloured = [o for o in out.objects if _asked_color(spec, o)]
            o = (coloured or out.objects)[int(rng.integers(len(coloured or out.objects)))]
            o.color = _random_color(rng, {o.color})
        elif d == "wrong_shape":
            o = out.objects[int(rng.integers(len(out.objects)))]
            others = [s for s in SHAPES if s != o.shape]
            o.shape = others[int(rng.integers(len(others)))]
        elif d == "wrong_count":
            _wrong_count(out, rng)
        elif d == "broken_relation":
            _break_relation(out, spec, rng)
    return out


def _asked_color(spec: PromptSpec, o: SceneObject) -> bool:
    return any(c["class"] == o.shape and c.get("color") == o.color for c in spec.include)


def _wrong_count(scene: Scene, rng: np.random.Generator) -> None:
    """Change the number of objects of one shape by one (down when there are several, else up)."""
    shapes = sorted({o.shape for o in scene.objects})
    shape = shapes[int(rng.integers(len(shapes)))]
    same = [o for o in scene.objects if o.shape == shape]
    if len(same) >= 2 and rng.random() < 0.5:
        scene.objects.remove(same[int(rng.integers(len(same)))])
        return
    o = place_object(rng, shape, same[0].color, scene.objects, len(scene.objects) + 1)
    if o is not None:
        scene.objects.append(o)
    elif len(same) >= 2:
        scene.objects.remove(same[-1])


def _break_relation(scene: Scene, spec: PromptSpec, rng: np.random.Generator) -> None:
    """Mirror the positioned object through its reference so the stated relation becomes its opposite
    (falls back to swapping two objects' centres)."""
    for c in spec.include:
        if not c.get("position"):
            continue
        tgt = next((o for o in scene.objects if o.shape == c["class"]), None)
        ref_cls = spec.include[int(c["position"][1])]["class"]
        ref = next((o for o in scene.objects if o.shape == ref_cls), None)
        if tgt is None or ref is None:
            continue
        tgt.cx, ref.cx, tgt.cy, ref.cy = ref.cx, tgt.cx, ref.cy, tgt.cy
        _clamp(tgt)
        _clamp(ref)
        return
    if len(scene.objects) >= 2:
        i, j = rng.choice(len(scene.objects), size=2, replace=False)
        a, b = scene.objects[int(i)], scene.objects[int(j)]
        a.cx, b.cx, a.cy, b.cy = b.cx, a.cx, b.cy, a.cy
        _clamp(a)
        _clamp(b)


def _clamp(o: SceneObject) -> None:
    lo, hi = o.size / 2 + BORDER, 1 - o.size / 2 - BORDER
    o.cx, o.cy = min(max(o.cx, lo), hi), min(max(o.cy, lo), hi)


def scene_matches(a: Scene, b: Scene, tol: float = 0.05) -> bool:
    """True when both scenes hold the same shapes and colours at centres within ``tol``."""
    if len(a.objects) != len(b.objects):
        return False
    left = list(b.objects)
    for o in a.objects:
        hit = next((p for p in left if p.shape == o.shape and p.color == o.color
                    and math.hypot(p.cx - o.cx, p.cy - o.cy) <= tol), None)
        if hit is None:
            return False
        left.remove(hit)
    return True
