"""Prompt grammar of the scene world, modelled on GenEval's six task categories.

GenEval (Ghosh et al., 2023) writes prompts as "a photo of ..." over COCO classes and checks them with
``include``/``exclude`` clauses. The scene world keeps the phrasing and the metadata format but uses
three shapes as classes and GenEval's ten colour names.

Deviations from GenEval, on purpose:
- position prompts may carry colours ("a photo of a blue square left of a yellow circle"), which
  GenEval's position set does not; the metadata then has both ``color`` and ``position``.
- counting uses 2..4 like GenEval but the two shapes of two-object, position and colour-attribution
  prompts are always distinct (with three classes GenEval's distinct-class rule leaves few prompts;
  same-shape pairs would be ambiguous under GenEval's "top-k detections" matching).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
PLURALS: dict[str, str] = {s: s + "s" for s in SHAPES}

# Distinct, saturated RGB values; the background (BACKGROUND) is a mid-light grey so that both white
# and black objects stand out. Every colour differs from the background by > 90 in RGB distance.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (245, 140, 20),
    "yellow": (245, 225, 30),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "purple": (140, 50, 180),
    "pink": (250, 125, 195),
    "brown": (120, 70, 30),
    "black": (20, 20, 20),
    "white": (252, 252, 252),
}
BACKGROUND: tuple[int, int, int] = (160, 160, 160)

TAGS: tuple[str, ...] = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
NUMBER_WORDS: dict[int, str] = {1: "one", 2: "two", 3: "three", 4: "four"}
MAX_COUNT = 4
PREFIX = "a photo of"


@dataclass
class PromptSpec:
    """One prompt with its GenEval metadata.

    ``include``: list of ``{"class", "count", "color"?, "position"?: [relation, index]}``;
    ``exclude``: list of ``{"class", "count"}`` meaning "fewer than count".
    """

    tag: str
    include: list[dict]
    exclude: list[dict] = field(default_factory=list)
    prompt: str = ""

    def to_geneval(self) -> dict:
        """The GenEval ``evaluation_metadata.jsonl`` record (``exclude`` only when non-empty)."""
        d: dict[str, Any] = {"tag": self.tag, "include": [_clause_copy(c) for c in self.include]}
        if self.exclude:
            d["exclude"] = [_clause_copy(c) for c in self.exclude]
        d["prompt"] = self.prompt
        return d

    @classmethod
    def from_geneval(cls, d: dict) -> PromptSpec:
        """Build from a GenEval metadata record; raises ValueError naming the bad field."""
        if not isinstance(d, dict):
            raise ValueError(f"GenEval record must be an object, got {type(d).__name__}")
        for key in ("tag", "include", "prompt"):
            if key not in d:
                raise ValueError(f"GenEval record lacks field '{key}'")
        if not isinstance(d["include"], list):
            raise ValueError("GenEval record field 'include' must be a list")
        for i, c in enumerate(list(d["include"]) + list(d.get("exclude", []))):
            if not isinstance(c, dict) or "class" not in c or "count" not in c:
                raise ValueError(f"GenEval clause {i} needs 'class' and 'count': {c!r}")
        return cls(tag=str(d["tag"]), include=[_clause_copy(c) for c in d["include"]],
                   exclude=[_clause_copy(c) for c in d.get("exclude", [])], prompt=str(d["prompt"]))


def _clause_copy(c: dict) -> dict:
    out: dict[str, Any] = {"class": c["class"], "count": int(c["count"])}
    if c.get("color") is not None:
        out["color"] = c["color"]
    if c.get("position") is not None:
        rel, idx = c["position"]
        out["position"] = [rel, int(idx)]
    return out


# ----------------------------------------------------------------------------- rendering to text

def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _np(shape: str, color: str | None = None, count: int = 1) -> str:
    """Noun phrase: "a red circle", "an orange square", "three triangles"."""
    if count == 1:
        head = f"{color} {shape}" if color else shape
        return f"{_article(head)} {head}"
    words = [NUMBER_WORDS[count]] + ([color] if color else []) + [PLURALS[shape]]
    return " ".join(words)


def spec_text(tag: str, include: list[dict]) -> str:
    """The prompt for a tag and its include clauses (GenEval phrasing)."""
    if tag == "position":
        ref, tgt = include[0], include[1]
        rel = tgt["position"][0]
        return (f"{PREFIX} {_np(tgt['class'], tgt.get('color'))} {rel} "
                f"{_np(ref['class'], ref.get('color'))}")
    parts = [_np(c["class"], c.get("color"), c["count"]) for c in include]
    return f"{PREFIX} " + " and ".join(parts)


# ----------------------------------------------------------------------------- sampling

def sample_spec(rng: np.random.Generator, tag: str | None = None) -> PromptSpec:
    """Draw a prompt of ``tag`` (uniform over TAGS when None)."""
    if tag is None:
        tag = TAGS[int(rng.integers(len(TAGS)))]
    if tag not in TAGS:
        raise ValueError(f"tag must be one of {TAGS}, got {tag!r}")
    shapes = [SHAPES[i] for i in rng.permutation(len(SHAPES))]
    colors = [list(COLORS)[i] for i in rng.permutation(len(COLORS))]
    exclude: list[dict] = []
    if tag == "single_object":
        include = [{"class": shapes[0], "count": 1}]
    elif tag == "two_object":
        include = [{"class": shapes[0], "count": 1}, {"class": shapes[1], "count": 1}]
    elif tag == "counting":
        n = int(rng.integers(2, MAX_COUNT + 1))
        include = [{"class": shapes[0], "count": n}]
        exclude = [{"class": shapes[0], "count": n + 1}]
    elif tag == "colors":
        include = [{"class": shapes[0], "count": 1, "color": colors[0]}]
    elif tag == "color_attr":
        include = [{"class": shapes[0], "count": 1, "color": colors[0]},
                   {"class": shapes[1], "count": 1, "color": colors[1]}]
    else:  # position: include[0] is the reference, include[1] is placed relative to it
        rel = RELATIONS[int(rng.integers(len(RELATIONS)))]
        coloured = bool(rng.random() < 0.5)
        ref = {"class": shapes[0], "count": 1}
        tgt: dict[str, Any] = {"class": shapes[1], "count": 1}
        if coloured:
            ref["color"], tgt["color"] = colors[0], colors[1]
        tgt["position"] = [rel, 0]
        include = [ref, tgt]
    return PromptSpec(tag=tag, include=include, exclude=exclude, prompt=spec_text(tag, include))


# ----------------------------------------------------------------------------- parsing

_WORD_TO_NUM = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4,
                "1": 1, "2": 2, "3": 3, "4": 4}
_SINGULAR = {**{s: s for s in SHAPES}, **{p: s for s, p in PLURALS.items()}}


def normalize_text(text: str) -> str:
    """Lower case, punctuation to spaces, single spaces."""
    return " ".join(re.sub(r"[^a-z0-9 ]+", " ", text.lower()).split())


def parse_noun_phrase(words: list[str]) -> dict | None:
    """["two", "red", "circles"] → {"class": "circle", "count": 2, "color": "red"}; None if not one."""
    if not words:
        return None
    count = 1
    if words[0] in _WORD_TO_NUM:
        count = _WORD_TO_NUM[words[0]]
        words = words[1:]
    elif words[0] == "the":
        words = words[1:]
    color = None
    if len(words) == 2 and words[0] in COLORS:
        color, words = words[0], words[1:]
    if len(words) != 1 or words[0] not in _SINGULAR:
        return None
    plural = words[0] in PLURALS.values()
    if (count > 1) != plural:
        return None
    out: dict[str, Any] = {"class": _SINGULAR[words[0]], "count": count}
    if color:
        out["color"] = color
    return out


def parse_prompt(text: str) -> PromptSpec | None:
    """Inverse of the grammar: a PromptSpec whose ``prompt`` is the canonical text, or None.

    Tolerates case, punctuation, extra spaces and a missing "a photo of" prefix.
    """
    norm = normalize_text(text)
    for prefix in ("a photo of ", "a picture of ", "an image of "):
        if norm.startswith(prefix):
            norm = norm[len(prefix):]
            break
    words = norm.split()
    if not words:
        return None
    joined = " ".join(words)
    for rel in RELATIONS:
        m = re.fullmatch(rf"(.+) {rel} (.+)", joined)
        if m:
            tgt, ref = parse_noun_phrase(m.group(1).split()), parse_noun_phrase(m.group(2).split())
            if not tgt or not ref or tgt["count"] != 1 or ref["count"] != 1:
                return None
            if tgt["class"] == ref["class"] or (("color" in tgt) != ("color" in ref)):
                return None
            tgt["position"] = [rel, 0]
            include = [ref, tgt]
            return PromptSpec("position", include, [], spec_text("position", include))
    parts = joined.split(" and ")
    if len(parts) > 2:
        return None
    nps = [parse_noun_phrase(p.split()) for p in parts]
    if any(n is None for n in nps):
        return None
    if len(nps) == 1:
        c = nps[0]
        if c["count"] > 1:
            if "color" in c:
                return None
            tag, exclude = "counting", [{"class": c["class"], "count": c["count"] + 1}]
        else:
            tag, exclude = ("colors" if "color" in c else "single_object"), []
        return PromptSpec(tag, [c], exclude, spec_text(tag, [c]))
    a, b = nps
    if a["count"] != 1 or b["count"] != 1 or a["class"] == b["class"]:
        return None
    if "color" in a and "color" in b:
        tag = "color_attr"
    elif "color" not in a and "color" not in b:
        tag = "two_object"
    else:
        return None
    return PromptSpec(tag, [a, b], [], spec_text(tag, [a, b]))


def prompt_vocabulary() -> list[str]:
    """Every word the prompt grammar can produce, sorted (for a word-level tokenizer)."""
    words = set(PREFIX.split()) | {"an", "and"}
    words |= set(SHAPES) | set(PLURALS.values()) | set(COLORS)
    words |= {NUMBER_WORDS[n] for n in range(2, MAX_COUNT + 1)}
    for rel in RELATIONS:
        words |= set(rel.split())
    return sorted(words)
