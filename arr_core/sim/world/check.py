"""GenEval-style checking of a prompt's clauses against detections.

Follows GenEval's ``evaluate`` (Ghosh et al., 2023): for each include clause take the first ``count``
detections of its class (highest score first); the clause fails when fewer are found, when fewer
than ``count`` of them have the asked colour, or when any of them is not in the asked relation to every
object matched by the referenced clause (GenEval's ``relative_position`` with a margin of 0.1 × the
summed box sizes). An exclude clause ``{class, count: n}`` fails when ``n`` or more are found.
A count of N in an include clause therefore means "at least N"; exact counts need the exclude.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from arr_core.sim.world.detect import Detection
from arr_core.sim.world.grammar import TAGS, PromptSpec
from arr_core.sim.world.scene import relative_position


def _by_class(detections: Sequence[Detection]) -> dict[str, list[Detection]]:
    out: dict[str, list[Detection]] = {}
    for d in sorted(detections, key=lambda d: -d.score):  # stable: equal scores keep input order
        out.setdefault(d.shape, []).append(d)
    return out


def check_spec(spec: PromptSpec, detections: Sequence[Detection]) -> dict:
    """``{"passed": bool, "clauses": [{"clause", "passed", "why", "fail"}]}`` with one entry per
    include clause, then one per exclude clause. ``fail`` names what went wrong (None when the clause
    passed): ``missing`` (no object of the class), ``too_few`` (some, fewer than the count), ``colour``,
    ``position`` (no target, or an object not in the relation), ``too_many`` (an exclude clause)."""
    objects = _by_class(detections)
    clauses: list[dict] = []
    matched_groups: list[list[Detection] | None] = []
    for i, req in enumerate(spec.include):
        cls, count = req["class"], int(req["count"])
        found = objects.get(cls, [])[:count]
        ok, why, fail = True, f"found {len(found)} {cls}", None
        if len(found) < count:
            ok, why, fail = False, f"expected {cls}>={count}, found {len(found)}", "too_few" if found else "missing"
        else:
            if req.get("color"):
                colors = [d.color for d in found]
                if colors.count(req["color"]) < count:
                    ok, why, fail = False, f"expected {req['color']} {cls}>={count}, found {colors}", "colour"
            if ok and req.get("position"):
                rel, idx = req["position"][0], int(req["position"][1])
                if idx >= i or idx < 0:
                    raise ValueError(f"include clause {i} field 'position' refers to clause {idx}; "
                                     "it must name an earlier clause")
                targets = matched_groups[idx]
                if targets is None:
                    ok, why, fail = False, f"no target for {cls} to be {rel}", "position"
                else:
                    for d in found:
                        for t in targets:
                            rels = relative_position((d.cx, d.cy), (d.w, d.h), (t.cx, t.cy), (t.w, t.h))
                            if rel not in rels:
                                ok, why, fail = False, f"expected {cls} {rel} target, found {sorted(rels) or 'none'}", "position"
                                break
                        if not ok:
                            break
        matched_groups.append(found if ok else None)
        clauses.append({"clause": dict(req), "passed": ok, "why": why, "fail": fail})
    for req in spec.exclude:
        cls, count = req["class"], int(req["count"])
        n = len(objects.get(cls, []))
        ok = n < count
        clauses.append({"clause": dict(req), "passed": ok,
                        "why": f"expected {cls}<{count}, found {n}", "fail": None if ok else "too_many"})
    return {"passed": all(c["passed"] for c in clauses), "clauses": clauses}


def geneval_score(results_by_tag: Mapping[str, Sequence[bool | dict]]) -> dict:
    """Per-tag accuracy and the overall score (mean over the tags present), as GenEval reports it.

    ``results_by_tag`` maps a tag to its per-image results (bools or ``check_spec`` dicts).
    Returns ``{"per_tag": {tag: acc}, "overall": float, "n": {tag: count}}``.
    """
    per_tag: dict[str, float] = {}
    counts: dict[str, int] = {}
    for tag, results in results_by_tag.items():
        if tag not in TAGS:
            raise ValueError(f"unknown tag {tag!r}; expected one of {TAGS}")
        vals = [bool(r["passed"]) if isinstance(r, dict) else bool(r) for r in results]
        if not vals:
            continue
        per_tag[tag] = sum(vals) / len(vals)
        counts[tag] = len(vals)
    overall = sum(per_tag.values()) / len(per_tag) if per_tag else 0.0
    return {"per_tag": per_tag, "overall": overall, "n": counts}
