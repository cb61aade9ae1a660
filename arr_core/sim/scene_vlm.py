"""The offline scene VLM: a deterministic simulator of a VLM over the scene world (DESIGN.md).

It receives exactly the chat messages a real VLM would (the static instructions, then the images as
data URLs after their labels, then the caption or instruction), looks at the images through the scene
world's detector, recognises the request kind from the JSON output contract in the text, and answers
in that JSON (it reads sections by their headings — "Caption:", "Evaluation rubrics:", "Previous
criteria:", "Feedback:" … — wherever they are, so the order of the text parts does not matter):

- judge WITHOUT rubrics: a holistic look — it checks only object presence, counts and overall quality,
  adds seeded perception noise and prefers the first image when unsure (a position bias), so it is
  clearly less accurate and order-dependent;
- judge WITH rubrics: it maps each rubric line it can parse (keywords) to one of its checks — object
  presence, count, colour, spatial relation, shape, extra objects, sharpness, noise, contrast; for
  edits, instruction followed and rest preserved — and ranks by the summed check scores; lines it
  cannot parse are ignored (and said so in its reason); exact ties are broken by a seeded coin;
- generate: states the checks on which the preferred image beats the others as general criteria in
  the vocabulary it parses; with seeded probability it replaces one real difference by a vague,
  uncheckable criterion or adds a misleading one, so blind verification sometimes fails;
- revise: recomputes the differences, keeps previous criteria that still point the right way,
  drops vague ones and those the feedback names as favouring the other image, adds what is missing;
- categorize: groups criteria by the check they map to into themes with tips;
- zero-shot (no preference given): k general criteria for what the caption or instruction asks for,
  from the caption's words alone (objects, counts, colours, relations; for edits instruction and
  preservation) and image quality, in a fixed order of checks, then paraphrases, then vague fillers;
- checklist: for ONE image, a yes/no/n/a verdict per rubric: a rubric it maps to a check is "yes"
  when that check holds fully (content checks: score 1; sharpness and contrast >= 0.7, noise <= 0.2,
  the thresholds of ``check``), "n/a" when it cannot map the rubric or does not know the caption;
- scores: for ONE image, an integer per criterion on its scale ("c1 (1-5): …" or "c2 (0/1): …"): a
  criterion it maps to a check gets 1 + round(4 × score) on 1-5 and 1/0 by ``checklist_holds`` on
  0/1; one it cannot map (or a content check when it does not know the caption) gets the scale's
  "cannot tell" value, 3 on 1-5 and 0 on 0/1;
- check: answers yes/no questions it can parse with the grammar (objects, counts, colours, relations,
  sharp/noisy/contrast), else a seeded guess;
- the official benchmark protocols (``arr_core.bench.protocols``), recognised by their prompt text
  whatever the message layout: VIEScore SC/PQ (GEdit-Bench) and ImgEdit's 1-5 scores from the edit
  checks and image quality, TIIF answer lines and UniGenBench checkpoint scores by ``check``'s rules.

Randomness is seeded from a hash of the request (images by content), so equal requests give equal
answers. This is a test and demo backend: its accuracies say nothing about real VLMs.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections import OrderedDict
from typing import Any

import numpy as np

from arr_core.digest import digest_obj
from arr_core.vlm.messages import UserContent, data_url_digest, decode_data_url, split_user_content

# --------------------------------------------------------------------------- checks and their words

T2I_CHECKS = ("all", "presence", "count", "color", "relation", "shape", "extra")
EDIT_CHECKS = ("follows", "preserved")
QUALITY_CHECKS = ("sharpness", "noise", "contrast")

# Keyword rules in priority order: a criterion maps to the FIRST check whose pattern it matches.
_RULES: list[tuple[str, re.Pattern[str]]] = [
    ("preserved", re.compile(r"preserv|unchanged|untouched|rest of the (original|image|scene)|"
                             r"not (mentioned|targeted)|collateral|left as (it|they) (was|were)")),
    ("follows", re.compile(r"instruction|requested (change|edit)|edit (is|was) (applied|carried)|"
                           r"carries out|carried out")),
    ("all", re.compile(r"every requirement|all (of the )?requirements|fully|faithful|everything the caption")),
    ("extra", re.compile(r"\bextra\b|additional|unrequested|nothing else|no other object|superfluous|"
                         r"beyond (those|what)|clutter")),
    ("sharpness", re.compile(r"sharp|blur|focus|crisp")),
    ("noise", re.compile(r"noise|noisy|grain|speckle|\bclean\b")),
    ("contrast", re.compile(r"contrast|washed|faded|vivid|saturat")),
    ("relation", re.compile(r"spatial|\bposition|left of|right of|\babove\b|\bbelow\b|\brelation|\barrange|"
                            r"\bplacement|\blayout")),
    ("count", re.compile(r"\bcount\b|number of|how many|quantity|exactly the number|times the caption")),
    ("color", re.compile(r"colou?r|\bhue")),
    ("shape", re.compile(r"\bshapes?\b|geometry|outline|drawn as")),
    ("presence", re.compile(r"missing|\bpresent\b|\bappears?\b|\babsent|every object|all (the )?(requested )?objects|"
                            r"\binclude")),
]

# General criteria the simulator states for each check (paraphrases, chosen by seeded draws).
PHRASES: dict[str, tuple[str, ...]] = {
    "all": ("The image satisfies every requirement of the caption at once.",
            "The image is fully faithful to the caption.",
            "Everything the caption asks for is right in the same image."),
    "presence": ("Every object named in the caption is present in the image; none is missing.",
                 "All objects the caption asks for appear in the image.",
                 "No object requested by the caption is absent."),
    "count": ("Each object appears exactly the number of times the caption states.",
              "The count of every requested object matches the number of objects in the caption.",
              "How many objects of each kind are shown matches the caption exactly."),
    "color": ("Every object has the colour the caption assigns to it.",
              "Object colours match the colours named in the caption.",
              "Each coloured object in the caption is shown in that colour."),
    "relation": ("Objects are placed in the spatial relation the caption describes (left of, right of, "
                 "above, below).",
                 "The relative position of the objects follows the caption.",
                 "The spatial arrangement of the objects matches what the caption says."),
    "shape": ("Each object is drawn with the shape the caption names.",
              "Object shapes are the requested ones: circles round, squares with four corners, triangles "
              "with three.",
              "Every object has the correct geometry for its name."),
    "extra": ("The image contains no extra objects beyond those the caption asks for.",
              "Nothing unrequested is added to the scene.",
              "There are no additional objects besides the requested ones."),
    "sharpness": ("Object edges are sharp and in focus, not blurred.",
                  "Outlines are crisp rather than blurry.",
                  "The image is in sharp focus."),
    "noise": ("The image is clean, without grain or noise speckle.",
              "Flat areas are free of noise.",
              "There is no visible grain in the image."),
    "contrast": ("Objects stand out with strong contrast against the background instead of looking "
                 "washed out.",
                 "Colours are vivid rather than faded.",
                 "The image has full contrast between objects and background."),
    "follows": ("The edit carries out exactly what the instruction asks for.",
                "The requested change is visible in the edited image.",
                "The edited image shows the instruction carried out on the right object."),
    "preserved": ("Everything the instruction does not mention stays unchanged from the original.",
                  "Objects not targeted by the edit keep their place, shape and colour (the rest of the "
                  "original is preserved).",
                  "The rest of the original is left untouched by the edit."),
}
VAGUE = ("The composition feels balanced and pleasing.",
         "The picture has an overall appealing look.",
         "The style is coherent throughout.",
         "The image looks natural and well made.")

THEMES: dict[str, tuple[str, ...]] = {
    "Faithfulness to the caption": ("all",),
    "Objects and counts": ("presence", "count", "extra", "shape"),
    "Colour fidelity": ("color",),
    "Spatial layout": ("relation",),
    "Following the instruction": ("follows",),
    "Preserving the original": ("preserved",),
    "Image quality": ("sharpness", "noise", "contrast"),
    "Overall impression": ("vague",),
}

HOLISTIC_CHECKS = ("presence", "preserved")  # what a quick look catches (not whether the edit is right)
HOLISTIC_NOISE = 0.12  # sd of perception noise on the holistic score
FIRST_BIAS = 0.2  # holistic bonus of the first image ("when unsure, the first one")
TIE_EPS = 1e-6
P_VAGUE = 0.3  # generate: chance to replace one real difference with a vague criterion
P_MISLEAD = 0.15  # generate: chance to add a criterion that favours the rejected image
DIFF_EPS = 0.05  # a check "differs" between images when the score gap exceeds this


def criterion_check(text: str) -> str | None:
    """The check a criterion maps to (first matching keyword rule), or None if it cannot be parsed."""
    t = " ".join(text.lower().split())
    for name, pat in _RULES:
        if pat.search(t):
            return name
    return None


def rubric_lines(block: str) -> list[str]:
    """The criteria in a rubric block: tip lines ("- Tip: …", "- …") and numbered lines ("3. …");
    "Rubric k:" and "Theme: …" headers are skipped (a theme name is not a criterion)."""
    out: list[str] = []
    for raw in block.splitlines():
        line = raw.strip()
        if not line or re.match(r"^rubric\s*\d+\s*:?$", line, re.I) or line.lower().startswith("theme:"):
            continue
        line = re.sub(r"^(?:[-*•]\s*)?(?:tip\s*:\s*)?", "", line, flags=re.I)
        line = re.sub(r"^\d+[.)]\s*", "", line)
        if line:
            out.append(line)
    return out


# --------------------------------------------------------------------------- perception

class _Perception:
    """Detector results per image, cached by content digest (thread-safe, bounded)."""

    def __init__(self, max_items: int = 4096) -> None:
        self._cache: OrderedDict[str, tuple[list[Any], dict[str, float]]] = OrderedDict()
        self._lock = threading.Lock()
        self.max_items = max_items

    def has(self, url: str) -> bool:
        with self._lock:
            return data_url_digest(url) in self._cache

    def look(self, url: str) -> tuple[list[Any], dict[str, float]]:
        from arr_core.sim.world.detect import analyse_image

        key = data_url_digest(url)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        img = decode_data_url(url)
        out = analyse_image(img)  # one pass for detections and quality
        with self._lock:
            self._cache[key] = out
            while len(self._cache) > self.max_items:
                self._cache.popitem(last=False)
        return out


_EYES = _Perception()


def quality_scores(dets: list[Any], quality: dict[str, float]) -> dict[str, float]:
    """Scores of the image-quality checks. Sharpness and contrast are properties of the objects'
    edges and colours: an image without objects satisfies neither (0), although the detector's
    ``image_quality`` reports them as 1 there (nothing wrong measured). Scoring an empty canvas as
    perfectly sharp and contrasty let RPO's judge prefer empty images whenever the content checks
    tied, and the toy policy learned to draw nothing (docs/experiments/2026-11-22-empty-image-reward-hack.md)."""
    has_objects = bool(dets)
    return {"sharpness": float(quality["sharpness"]) if has_objects else 0.0,
            "noise": 1.0 - float(quality["noise"]),
            "contrast": float(quality["contrast"]) if has_objects else 0.0}


def t2i_scores(spec: Any, dets: list[Any], quality: dict[str, float]) -> dict[str, float]:
    """Score in [0, 1] of every check for one image of a T2I prompt (0.5 when the caption is unknown)."""
    out = quality_scores(dets, quality)
    if spec is None:
        out.update(dict.fromkeys(T2I_CHECKS, 0.5))
        return out
    from arr_core.sim.world.check import check_spec

    res = check_spec(spec, dets)
    inc = spec.include
    by_class: dict[str, list[Any]] = {}
    for d in dets:
        by_class.setdefault(d.shape, []).append(d)
    out["all"] = float(res["passed"])
    out["presence"] = float(np.mean([bool(by_class.get(c["class"])) for c in inc]))
    out["count"] = float(np.mean([len(by_class.get(c["class"], [])) == int(c["count"]) for c in inc]))
    coloured = [c for c in inc if c.get("color")]
    out["color"] = float(np.mean([sum(d.color == c["color"] for d in by_class.get(c["class"], []))
                                  >= int(c["count"]) for c in coloured])) if coloured else 1.0
    pos = [i for i, c in enumerate(inc) if c.get("position")]
    out["relation"] = float(np.mean([res["clauses"][i]["passed"] for i in pos])) if pos else 1.0
    wanted = sum(int(c["count"]) for c in inc)
    out["extra"] = 1.0 / (1.0 + max(0, len(dets) - wanted))
    classes = {c["class"] for c in inc}
    out["shape"] = float(np.mean([d.shape in classes for d in dets])) if dets else 0.0
    return out


def edit_scores(instruction: str, src_dets: list[Any], dets: list[Any],
                quality: dict[str, float]) -> dict[str, float]:
    """Score of every check for one edited image (instruction followed, rest preserved, quality)."""
    from arr_core.sim.world.edit import check_edit

    out = quality_scores(dets, quality)
    try:
        res = check_edit(instruction, src_dets, dets)
        out["follows"], out["preserved"] = float(res["follows"]), float(res["preserved"])
    except ValueError:  # not an instruction of the scene world: the simulator cannot tell
        out["follows"] = out["preserved"] = 0.5
    return out


def checklist_holds(check: str, score: float) -> bool:
    """Whether a check's score counts as "satisfied" for a checklist verdict: quality checks use the
    thresholds of the yes/no ``check`` answers (sharpness and contrast >= 0.7, noise level <= 0.2,
    i.e. a noise score >= 0.8); content checks must hold fully (score 1)."""
    if check in ("sharpness", "contrast"):
        return score >= 0.7
    if check == "noise":
        return score >= 0.8
    return score >= 1.0 - 1e-9


# --------------------------------------------------------------------------- reading the request

def _section(text: str, start: str, ends: tuple[str, ...]) -> str | None:
    i = text.find(start)
    if i < 0:
        return None
    rest = text[i + len(start):]
    cut = min([j for j in (rest.find(e) for e in ends) if j >= 0], default=len(rest))
    return rest[:cut].strip()


def _numbered(block: str | None) -> list[str]:
    if not block:
        return []
    return [re.sub(r"^\d+[.)]\s*", "", ln.strip()) for ln in block.splitlines() if ln.strip()]


def request_kind(text: str) -> str:
    """generate | revise | judge | checklist | scores | categorize | check | unknown, from the JSON output
    contract."""
    if '"scores"' in text:
        return "scores"
    if '"verdicts"' in text:
        return "checklist"
    if '"rank"' in text:
        return "judge"
    if '"categories"' in text:
        return "categorize"
    if '"answers"' in text:
        return "check"
    if '"rubrics"' in text:
        if "No preference between images is given" in text:  # arr_core.rubrics.zeroshot
            return "zeroshot"
        return "revise" if "Previous criteria:" in text else "generate"
    return "unknown"


class SceneVLM:
    """``VLMBackend`` simulating a VLM over the scene world. Deterministic per request and ``seed``."""

    name = "scene"

    def __init__(self, seed: int = 0, model: str = "scene-vlm-1") -> None:
        self.seed = seed
        self.model = model
        self.cache_salt = f"seed={seed}"  # answers depend on the seed: part of the VLM cache key
        self.calls = 0
        self._calls_lock = threading.Lock()  # respond() runs in worker threads
        self._eyes = _EYES  # detector results depend on image content only: share them

    def __repr__(self) -> str:
        return f"SceneVLM(seed={self.seed}, model={self.model!r})"

    async def chat(self, messages: list[dict[str, Any]], *, temperature: float = 0.0, max_tokens: int = 1024,
                   seed: int | None = None, json_mode: bool = False) -> tuple[str, dict[str, int]]:
        # The detector is CPU work: run it off the event loop, unless every image has been seen
        # (then answering is cheaper than a thread hand-off).
        urls = split_user_content(messages).image_urls
        if all(self._eyes.has(u) for u in urls):
            return self.respond(messages, seed)
        return await asyncio.to_thread(self.respond, messages, seed)

    def respond(self, messages: list[dict[str, Any]], seed: int | None = None) -> tuple[str, dict[str, int]]:
        """The answer text and a token estimate for ``messages`` (synchronous)."""
        with self._calls_lock:
            self.calls += 1
        uc = split_user_content(messages)
        rng = np.random.default_rng(self._request_seed(messages, seed))
        kind = request_kind(uc.text)
        proto = protocol_answer(self._eyes, messages, rng)  # the official benchmark protocols' prompts
        if proto is not None:
            obj = proto
        elif kind == "judge":
            obj = self._judge(uc, rng)
        elif kind == "generate":
            obj = self._generate(uc, rng, revise=False)
        elif kind == "revise":
            obj = self._generate(uc, rng, revise=True)
        elif kind == "zeroshot":
            obj = self._zeroshot(uc)
        elif kind == "categorize":
            obj = self._categorize(uc)
        elif kind == "check":
            obj = self._check(uc, rng)
        elif kind == "checklist":
            obj = self._checklist(uc)
        elif kind == "scores":
            obj = self._criterion_scores(uc)
        else:
            obj = {"reason": "I could not tell what kind of answer is expected."}
        text = json.dumps(obj, ensure_ascii=False)
        usage = {"prompt_tokens": len(uc.text) // 4 + 256 * len(uc.image_urls),
                 "completion_tokens": max(1, len(text) // 4)}
        return text, usage

    # ------------------------------------------------------------------ helpers

    def _request_seed(self, messages: list[dict[str, Any]], seed: int | None) -> int:
        from arr_core.vlm.cache import _strip_images

        h = digest_obj({"m": _strip_images(messages), "s": self.seed, "r": seed})
        return int(h[:15], 16)

    def _scores(self, uc: UserContent) -> tuple[str, list[dict[str, float]]]:
        """("t2i"|"edit", per candidate image: check → score)."""
        if uc.is_edit:
            instruction = _section(uc.text, "Instruction:", ("\n",)) or ""
            src_dets, _ = self._eyes.look(uc.image_urls[0])
            out = []
            for url in uc.image_urls[1:]:
                dets, q = self._eyes.look(url)
                out.append(edit_scores(instruction, src_dets, dets, q))
            return "edit", out
        from arr_core.sim.world.grammar import parse_prompt

        caption = _section(uc.text, "Caption:", ("\n",)) or ""
        spec = parse_prompt(caption)
        out = []
        for url in uc.image_urls:
            dets, q = self._eyes.look(url)
            out.append(t2i_scores(spec, dets, q))
        return "t2i", out

    @staticmethod
    def _names(task: str, n: int) -> list[str]:
        return [("Edited Image" if task == "edit" else "Image") + f" {k}" for k in range(1, n + 1)]

    # ------------------------------------------------------------------ judge

    def _judge(self, uc: UserContent, rng: np.random.Generator) -> dict[str, Any]:
        task, scores = self._scores(uc)
        n = len(scores)
        names = self._names(task, n)
        block = _section(uc.text, "Evaluation rubrics:", ("\n\nCheck every image against every rubric",))
        checks: list[str] = []
        unparsed = 0
        if block:
            for line in rubric_lines(block):
                c = criterion_check(line)
                if c is not None and c in scores[0]:
                    checks.append(c)
                else:
                    unparsed += 1
        if checks:
            total = np.array([sum(s[c] for c in checks) for s in scores], dtype=float)
            coin = rng.random(n) * TIE_EPS * 0.5  # breaks exact ties only
            order = sorted(range(n), key=lambda i: (-(total[i] + coin[i]), i))
            reason = self._rubric_reason(names, scores, checks, order, unparsed)
        else:
            looked = [c for c in HOLISTIC_CHECKS if c in scores[0]]
            base = np.array([np.mean([s[c] for c in looked] + [np.mean([s[q] for q in QUALITY_CHECKS])])
                             for s in scores])
            noisy = base + rng.normal(0.0, HOLISTIC_NOISE, n)
            bias = np.array([FIRST_BIAS * (n - 1 - i) / max(1, n - 1) for i in range(n)])
            total = noisy + bias
            order = sorted(range(n), key=lambda i: (-total[i], i))
            reason = (f"Overall impression: {names[order[0]]} looks closest to what was asked"
                      + (" (the rubrics could not be applied)." if block else "."))
        rank = [0] * n
        for r, i in enumerate(order, 1):
            rank[i] = r
        return {"rank": rank, "reason": reason}

    @staticmethod
    def _rubric_reason(names: list[str], scores: list[dict[str, float]], checks: list[str], order: list[int],
                       unparsed: int) -> str:
        best = order[0]
        better, worse = [], []
        for c in dict.fromkeys(checks):
            others = [s[c] for i, s in enumerate(scores) if i != best]
            if scores[best][c] > max(others) + DIFF_EPS:
                better.append(c)
            elif scores[best][c] < max(others) - DIFF_EPS:
                worse.append(c)
        parts = [f"{names[best]} ranked first."]
        parts.append(f"It is better on: {', '.join(better)}." if better else "No rubric separates the images clearly.")
        if worse:
            parts.append(f"Another image is better on: {', '.join(worse)}.")
        if unparsed:
            parts.append(f"Could not check {unparsed} rubric(s).")
        return " ".join(parts)

    # ------------------------------------------------------------------ generate / revise

    def _generate(self, uc: UserContent, rng: np.random.Generator, *, revise: bool) -> dict[str, Any]:
        task, scores = self._scores(uc)
        n = len(scores)
        names = self._names(task, n)
        m = re.search(r"preferred (?:Edited )?Image (\d+)", uc.text)
        pref = int(m.group(1)) - 1 if m and 0 < int(m.group(1)) <= n else 0
        k_m = re.search(r"Write (\d+) (?:evaluation|revised) criteria", uc.text)
        k = int(k_m.group(1)) if k_m else 5
        checks = [c for c in scores[0] if c not in ("follows", "preserved")] if task == "t2i" else list(scores[0])
        diff = {c: scores[pref][c] - float(np.mean([s[c] for i, s in enumerate(scores) if i != pref]))
                for c in checks}
        helps = sorted((c for c in checks if diff[c] > DIFF_EPS), key=lambda c: (-diff[c], c))
        hurts = [c for c in checks if diff[c] < -DIFF_EPS]
        neutral = [c for c in checks if abs(diff[c]) <= DIFF_EPS]
        chosen: list[str] = []  # criterion texts
        blamed: set[str] = set()
        if not revise:
            picked = list(helps)
            vague_slot = bool(picked) and rng.random() < P_VAGUE
            if vague_slot:
                picked[int(rng.integers(len(picked)))] = "vague"
            if hurts and rng.random() < P_MISLEAD:
                picked.insert(int(rng.integers(len(picked) + 1)), hurts[int(rng.integers(len(hurts)))])
            chosen = [self._phrase(c, rng) for c in picked]
        else:
            previous = _numbered(_section(uc.text, "Previous criteria:", ("\n\n",)))
            feedback = _section(uc.text, "Feedback:", ("\n\nWrite ",)) or ""
            # In an order that failed, the checks the judge's winner was "better on" misled it.
            blamed = {c.strip() for line in feedback.splitlines() if re.search(r"fail", line, re.I)
                      for m in re.finditer(r"It is better on: ([a-z, ]+)", line) for c in m.group(1).split(",")}
            kept_checks = set()
            for p in previous:
                c = criterion_check(p)
                if c is None or c not in diff or c in hurts or (c in blamed and c not in helps):
                    continue
                chosen.append(p)
                kept_checks.add(c)
            chosen = [self._phrase(c, rng) for c in helps if c not in kept_checks] + chosen
        used = {criterion_check(t) for t in chosen} | (blamed if revise else set())
        pad = [c for c in rng.permutation(neutral).tolist() if c not in used]
        while len(chosen) < k and pad:
            chosen.append(self._phrase(pad.pop(0), rng))
        # Out of checks to state: fill with vague criteria (the judge ignores them), avoiding the
        # ones a failed attempt already used.
        fillers = [v for v in VAGUE if v not in chosen and v not in uc.text] or list(VAGUE)
        while len(chosen) < k:
            chosen.append(fillers[(len(chosen)) % len(fillers)])
        chosen = list(dict.fromkeys(chosen))[:k] if len(chosen) > k else chosen
        reason = (f"{names[pref]} is better on: {', '.join(helps) or 'nothing I can see'}"
                  + (f"; the other image is better on: {', '.join(hurts)}" if hurts else "") + ".")
        return {"rubrics": chosen, "reason": reason}

    @staticmethod
    def _zeroshot(uc: UserContent) -> dict[str, Any]:
        """k criteria from the caption or instruction alone: the checks its words call for, then image
        quality, stated once each; more than that: their other paraphrases, then vague fillers."""
        k_m = re.search(r"Write (\d+) evaluation criteria", uc.text)
        k = int(k_m.group(1)) if k_m else 5
        edit = "Instruction:" in uc.text
        prompt = (_section(uc.text, "Instruction:" if edit else "Caption:", ("\n",)) or "").lower()
        if edit:
            checks = ["follows", "preserved"]
        else:
            wanted = {"count": r"\b(two|three|four|five|six|\d+)\b", "relation": r"left|right|above|below",
                      "color": r"red|green|blue|yellow|purple|orange|black|white|gr[ae]y|brown|pink"}
            checks = ["all", "presence"] + [c for c, pat in wanted.items() if re.search(pat, prompt)]
            checks += ["shape", "extra"]
        checks += list(QUALITY_CHECKS)
        pool = [PHRASES[c][j] for j in range(3) for c in checks] + list(VAGUE)
        chosen = [pool[i % len(pool)] for i in range(k)]
        return {"rubrics": chosen, "reason": f"The {'instruction' if edit else 'caption'} calls for: "
                f"{', '.join(checks)}."}

    @staticmethod
    def _phrase(check: str, rng: np.random.Generator) -> str:
        options = VAGUE if check == "vague" else PHRASES[check]
        return options[int(rng.integers(len(options)))]

    # ------------------------------------------------------------------ categorize

    def _categorize(self, uc: UserContent) -> dict[str, Any]:
        criteria = _numbered(_section(uc.text, "Criteria:", ("\n\nGroup them",)))
        m = re.search(r"at most (\d+) themes", uc.text)
        limit = int(m.group(1)) if m else 5
        groups: dict[str, list[str]] = {}
        for c in criteria:
            check = criterion_check(c) or "vague"
            theme = next(t for t, cs in THEMES.items() if check in cs)
            groups.setdefault(theme, [])
            if c not in groups[theme]:
                groups[theme].append(c)
        themes = sorted(groups, key=lambda t: list(THEMES).index(t))
        while len(themes) > limit:  # fold the smallest themes into the last kept one
            smallest = min(themes[1:], key=lambda t: (len(groups[t]), -themes.index(t)))
            themes.remove(smallest)
            target = themes[-1] if themes[-1] != smallest else themes[0]
            groups[target] += groups.pop(smallest)
        cats = [{"theme": t, "tips": groups[t]} for t in themes]
        return {"categories": cats, "reason": f"Grouped {len(criteria)} criteria by what they check."}

    # ------------------------------------------------------------------ checklist (one image, per rubric)

    def _checklist(self, uc: UserContent) -> dict[str, Any]:
        task, scores = self._scores(uc)
        if len(scores) != 1:
            return {"reason": f"expected one image to check, got {len(scores)}."}
        s = scores[0]
        known = self._knows(uc, task)
        verdicts = []
        for line in _numbered(_section(uc.text, "Rubrics:", ("\n\n",))):
            c = criterion_check(line)
            if c is None or c not in s or (c not in QUALITY_CHECKS and not known):
                verdicts.append("n/a")
            else:
                verdicts.append("yes" if checklist_holds(c, s[c]) else "no")
        n_yes, n_app = verdicts.count("yes"), sum(v != "n/a" for v in verdicts)
        return {"verdicts": verdicts, "reason": f"Satisfies {n_yes} of the {n_app} rubrics that apply."}

    # ------------------------------------------------------------------ scores (one image, per criterion)

    def _criterion_scores(self, uc: UserContent) -> dict[str, Any]:
        task, scores = self._scores(uc)
        if len(scores) != 1:
            return {"reason": f"expected one image to score, got {len(scores)}."}
        s = scores[0]
        known = self._knows(uc, task)
        out: dict[str, int] = {}
        for line in (_section(uc.text, "Criteria:", ("\n\n",)) or "").splitlines():
            m = re.match(r"^\s*(c\d+) \((1-5|0/1)\):\s*(.*)$", line)
            if not m:
                continue
            key, scale, text = m.groups()
            c = criterion_check(text)
            if c is None or c not in s or (c not in QUALITY_CHECKS and not known):
                out[key] = 3 if scale == "1-5" else 0
            elif scale == "1-5":
                out[key] = 1 + int(round(4 * float(np.clip(s[c], 0.0, 1.0))))
            else:
                out[key] = int(checklist_holds(c, s[c]))
        return {"scores": out, "reason": f"Scored {len(out)} criteria."}

    @staticmethod
    def _knows(uc: UserContent, task: str) -> bool:
        """Whether the simulator understands the caption (t2i) or instruction (edit)."""
        if task == "t2i":
            from arr_core.sim.world.grammar import parse_prompt

            return parse_prompt(_section(uc.text, "Caption:", ("\n",)) or "") is not None
        from arr_core.sim.world.edit import parse_instruction

        try:
            return parse_instruction(_section(uc.text, "Instruction:", ("\n",)) or "") is not None
        except ValueError:
            return False

    # ------------------------------------------------------------------ check (yes/no questions)

    def _check(self, uc: UserContent, rng: np.random.Generator) -> dict[str, Any]:
        questions = _numbered(_section(uc.text, "Questions:", ("\n\n",)))
        dets, q = self._eyes.look(uc.image_urls[0]) if uc.image_urls else ([], {"sharpness": 0, "noise": 1,
                                                                                 "contrast": 0})
        return {"answers": [{"question": question, "answer": "yes" if answer_question(question, dets, q, rng) else "no"}
                            for question in questions]}


# --------------------------------------------------------------------------- yes/no questions


def answer_question(question: str, dets: list[Any], q: dict[str, float], rng: np.random.Generator) -> bool:
    """A yes/no question about one image: the scene grammar (objects, counts, colours, relations) or
    sharp/blurred/noisy/contrast words; anything else is a seeded guess."""
    from arr_core.sim.world.check import check_spec
    from arr_core.sim.world.grammar import parse_prompt

    t = question.lower().strip().rstrip("?").strip()
    t = re.sub(r"^(is there|are there|does the image (show|contain)|do you see|is|are)\s+", "", t)
    t = re.sub(r"\s+(in|on) the (image|picture|photo)$", "", t)
    spec = parse_prompt(t)
    if spec is not None:
        return bool(check_spec(spec, dets)["passed"])
    if re.search(r"sharp|in focus|crisp", t):
        return q["sharpness"] >= 0.7
    if re.search(r"blur", t):
        return q["sharpness"] < 0.7
    if re.search(r"nois|grain", t):
        return q["noise"] > 0.2
    if re.search(r"contrast|faded|washed", t):
        return q["contrast"] >= 0.7 if "low" not in t and "faded" not in t else q["contrast"] < 0.7
    return bool(rng.random() < 0.5)


# --------------------------------------------------------------------------- official benchmark protocols

_VIESCORE = "You are a professional digital artist."
_IMGEDIT = "You are a data rater specializing in grading"
_TIIF = "answer the following yes or no questions"
_UNIGEN = "<checkpoint>"


def _raw(messages: list[dict[str, Any]]) -> tuple[str, list[str]]:
    """All text (system and user, in order) and the image URLs in order, whatever the layout."""
    texts, urls = [], []
    for m in messages:
        content = m.get("content")
        if isinstance(content, str):
            texts.append(content)
            continue
        for part in content or []:
            if part.get("type") == "text":
                texts.append(part.get("text", ""))
            elif part.get("type") == "image_url":
                iu = part.get("image_url")
                urls.append(iu.get("url", "") if isinstance(iu, dict) else str(iu))
    return "\n".join(texts), urls


def _edit_checks(eyes: _Perception, text: str, urls: list[str], marker: str) -> dict[str, float] | None:
    m = re.search(re.escape(marker) + r"\s*(.+)", text)
    if m is None or len(urls) < 2:
        return None
    src_dets, _ = eyes.look(urls[0])
    dets, q = eyes.look(urls[1])
    return edit_scores(m.group(1).strip().rstrip("."), src_dets, dets, q)


def _quality(s: dict[str, float]) -> float:
    return float(np.mean([s["sharpness"], s["noise"], s["contrast"]]))


def protocol_answer(eyes: _Perception, messages: list[dict[str, Any]], rng: np.random.Generator
                    ) -> dict[str, Any] | None:
    """The answer to an official-protocol request (see the module docstring), or None for any other
    request. Scores come from the scene checks: edit success and over-editing from ``edit_scores``
    (instruction followed, rest preserved), perceptual scores from the image-quality checks."""
    text, urls = _raw(messages)
    if not urls:
        return None
    if _VIESCORE in text:
        if "Editing instruction:" in text:  # SC: source, edited
            s = _edit_checks(eyes, text, urls, "Editing instruction:")
            if s is None:
                return None
            return {"score": [round(10 * s["follows"]), round(10 * s["preserved"])],
                    "reasoning": "Scored by the scene checks (instruction followed, rest preserved)."}
        dets, q = eyes.look(urls[-1])
        s = quality_scores(dets, q)
        return {"score": [round(10 * (s["sharpness"] + s["contrast"]) / 2), round(10 * s["noise"])],
                "reasoning": "Scored by the scene image-quality checks."}
    if _IMGEDIT in text:
        s = _edit_checks(eyes, text, urls, "editing instruction is :")
        if s is None:
            return None
        labels = re.findall(r"^\s*([^:\n]+?):\s*A number from 1 to 5", text, re.M)
        first = 1 + round(4 * s["follows"])
        rest = [1 + round(4 * _quality(s)), 1 + round(4 * s["preserved"])]
        scores = [first] + [min(first, v) for v in rest]  # "no higher than first score"
        return {"Brief reasoning": "Scene checks: instruction followed, quality, rest preserved.",
                **dict(zip(labels[:3], scores, strict=False))}
    if _TIIF in text:
        block = _section(text, "Questions:", ("\n\n",)) or ""
        dets, q = eyes.look(urls[0])
        return {"answers": [("yes" if answer_question(line, dets, q, rng) else "no") + ", by the scene checks."
                            for line in block.splitlines() if line.strip()]}
    if _UNIGEN in text:
        block = _section(text, "Checkpoints Description:\u300c", ("\u300d",)) or ""
        descs = [ln.split(": ", 1)[-1] for ln in block.splitlines() if ln.strip()]
        dets, q = eyes.look(urls[0])
        scores = [int(answer_question(d, dets, q, rng)) for d in descs]
        return {"analysis": [f"{d}: {'shown' if v else 'not shown'}" for d, v in zip(descs, scores, strict=True)],
                "score": scores}
    return None
