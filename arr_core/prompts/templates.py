"""Versioned prompt templates for rubric induction and rubric-conditioned judging (ARR).

Auto-Rubric as Reward (ARR) asks a VLM to (1) generate criteria that explain a human preference,
(2) judge image pairs or lists with those criteria, (3) revise criteria that failed verification
and (4) group the pooled criteria into themes with tips. These templates are written in our own
words. Request layout (one user message): first the text that is the same for every pair of a run —
the task, for editing the Image BASE requirements, the rubric block, the position-bias instruction and
the JSON output contract — so that servers with prefix caching (vLLM's automatic prefix caching,
SGLang's radix cache, OpenAI and Gemini implicit caching) reuse it across pairs; then the images, each
after its label ("Image k:" for T2I, "Image BASE (original):" then "Edited Image k:" for editing);
then the text that varies per pair (caption or instruction, the preference, previous criteria).
The reference puts the images first and all text after them.

Deviations from the reference code, on purpose:
- the judge template never carries labels or expected ranks (the reference shows them to its
  verifier); verification is blind;
- the judge's rank is validated: a permutation of 1..N of the right length (ties are rejected,
  the client re-asks and finally abstains);
- every template has a version string that enters cache keys and rubric-set lineage; change the
  version whenever the wording changes;
- every judge prompt tells the judge that the order and numbering of the images must not influence
  its decision (the paper's Figure 8 instruction), and edit prompts state the requirements of judging
  every edited image against Image BASE (its Figure 10); the reference code omits both;
- every request carries the JSON schema of its answer (``VLMRequest.schema``) for endpoints with
  structured output; the client falls back to parsing the text where it is rejected.

Builders return ``VLMRequest`` objects (see ``arr_core.vlm.base``); they do no I/O besides encoding
images as data URLs.
"""

from __future__ import annotations

from typing import Any

from arr_core.data.images import DEFAULT_REQUEST_MAX_SIDE
from arr_core.vlm.base import VLMRequest
from arr_core.vlm.messages import (
    ImageLike,
    image_data_url,
    image_part,
    labelled_image_parts,
    text_part,
    user_message,
)

# v2/v3 (issue 21): static text before the images, position-bias instruction, Image BASE requirements.
GENERATE_PROMPT_VERSION = "generate-v2"
JUDGE_PROMPT_VERSION = "judge-v3"
REVISE_PROMPT_VERSION = "revise-v2"
CATEGORIZE_PROMPT_VERSION = "categorize-v1"
CHECK_PROMPT_VERSION = "check-v1"
CHECKLIST_PROMPT_VERSION = "checklist-v2"
PROMPT_VERSIONS: dict[str, str] = {
    "generate": GENERATE_PROMPT_VERSION,
    "judge": JUDGE_PROMPT_VERSION,
    "revise": REVISE_PROMPT_VERSION,
    "categorize": CATEGORIZE_PROMPT_VERSION,
    "check": CHECK_PROMPT_VERSION,
    "checklist": CHECKLIST_PROMPT_VERSION,
}
# One string for rubric-set lineage: changes when any template changes. The checklist template
# (added later) is left out: rubric induction never uses it, and adding it would have changed the id
# of every rubric set induced before.
_NOT_LINEAGE = frozenset({"checklist"})
PROMPT_VERSION = "+".join(PROMPT_VERSIONS[k] for k in sorted(PROMPT_VERSIONS) if k not in _NOT_LINEAGE)

TASKS = ("t2i", "edit")

# --------------------------------------------------------------------------- shared wording

_INTRO = {
    "t2i": ("You are a careful evaluator of AI-generated images. Below are {n} images, all generated "
            "from the same caption; the caption follows the images."),
    "edit": ("You are a careful evaluator of instruction-based image editing. Below are the original "
             "image, Image BASE, and {n} edited images, each produced from Image BASE with the same "
             "instruction; the instruction follows the images."),
}
_PROMPT_LINE = {"t2i": "Caption: {prompt}", "edit": "Instruction: {prompt}"}
_NAME = {"t2i": "Image {k}", "edit": "Edited Image {k}"}
# The paper's Figure 10 requirements for editing, in our words.
EDIT_REQUIREMENTS = (
    "Judge every edited image against Image BASE:\n"
    "- the change the instruction asks for must be carried out, completely and on the right object;\n"
    "- everything the instruction does not mention must stay as it is in Image BASE: the other "
    "objects, their positions, shapes and colours, the background and the style;\n"
    "- an edited image that shows no change from Image BASE has not carried out the instruction;\n"
    "- Image BASE itself is not a candidate and is never ranked."
)
# The paper's Figure 8 instruction against position bias, in our words.
POSITION_BIAS = (
    "Judge each image on its own content. The order in which the images are shown and their "
    "numbers carry no information: do not let them influence your decision, and give the same "
    "ranking whatever order the images come in."
)
_CRITERIA_RULES = (
    "Each criterion must be:\n"
    "- general: reusable for other {what} (do not name the specific objects, colours or numbers of "
    "this {prompt_kind}, and do not refer to image numbers);\n"
    "- checkable: someone looking at an image can decide whether it meets the criterion;\n"
    "- about one property only, stated as what a good image does."
)
_RUBRICS_CONTRACT = ('Answer with JSON only, in exactly this form:\n'
                     '{{"rubrics": ["<criterion>", ...], "reason": "<the differences you saw>"}}\n'
                     'with exactly {k} criteria in "rubrics".')


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")


def _check_images(task: str, images: list[ImageLike], source: ImageLike | None, min_n: int = 2) -> None:
    _check_task(task)
    if not isinstance(images, (list, tuple)) or len(images) < min_n:
        raise ValueError(f"images must be a list of at least {min_n} images, got "
                         f"{len(images) if isinstance(images, (list, tuple)) else type(images).__name__}")
    if task == "edit" and source is None:
        raise ValueError("task 'edit' needs the original image in argument 'source'")
    if task == "t2i" and source is not None:
        raise ValueError("task 't2i' takes no 'source' image; use task='edit' for editing")


def _check_preferred(preferred: int, n: int) -> None:
    if not isinstance(preferred, int) or isinstance(preferred, bool) or not 0 <= preferred < n:
        raise ValueError(f"preferred must be the 0-based index of the preferred image (0..{n - 1}), "
                         f"got {preferred!r}")


def _check_n_rubrics(n_rubrics: int) -> None:
    if not isinstance(n_rubrics, int) or n_rubrics < 1:
        raise ValueError(f"n_rubrics must be a positive integer, got {n_rubrics!r}")


def _intro(task: str, n: int) -> str:
    """The static opening: the task, and for editing the Image BASE requirements."""
    text = _INTRO[task].format(n=n)
    return text + "\n\n" + EDIT_REQUIREMENTS if task == "edit" else text


def _prompt_line(task: str, prompt: str) -> str:
    return _PROMPT_LINE[task].format(prompt=prompt.strip())


def _rules(task: str) -> str:
    what = "captions and images" if task == "t2i" else "instructions and edits"
    return _CRITERIA_RULES.format(what=what, prompt_kind="caption" if task == "t2i" else "instruction")


def _request(parts: list[dict[str, Any]], *, kind: str, required: tuple[str, ...], validator: Any,
             max_tokens: int, schema: dict[str, Any]) -> VLMRequest:
    return VLMRequest(messages=user_message(parts), required_keys=required, validator=validator,
                      temperature=0.0, max_tokens=max_tokens, prompt_version=PROMPT_VERSIONS[kind],
                      kind=kind, schema=schema)


def _layout(static: str, image_parts: list[dict[str, Any]], varying: str) -> list[dict[str, Any]]:
    """Static text, then the labelled images, then the per-pair text."""
    return [text_part(static), *image_parts, text_part(varying)]


# --------------------------------------------------------------------------- answer schemas
# JSON schemas for structured output (response_format json_schema). The validators below still run:
# a schema cannot say "a permutation", and endpoints without structured output send free text.

def _object(props: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}


_STR = {"type": "string"}


def judge_schema(n: int) -> dict[str, Any]:
    return _object({"rank": {"type": "array", "items": {"type": "integer", "minimum": 1, "maximum": n},
                             "minItems": n, "maxItems": n}, "reason": _STR})


def rubrics_schema(k: int) -> dict[str, Any]:
    return _object({"rubrics": {"type": "array", "items": _STR, "minItems": k, "maxItems": k}, "reason": _STR})


def categories_schema(max_themes: int) -> dict[str, Any]:
    theme = _object({"theme": _STR, "tips": {"type": "array", "items": _STR, "minItems": 1}})
    return _object({"categories": {"type": "array", "items": theme, "minItems": 1, "maxItems": max_themes},
                    "reason": _STR})


def answers_schema(n: int) -> dict[str, Any]:
    item = _object({"question": _STR, "answer": {"type": "string", "enum": ["yes", "no"]}})
    return _object({"answers": {"type": "array", "items": item, "minItems": n, "maxItems": n}})


def verdicts_schema(n: int) -> dict[str, Any]:
    return _object({"verdicts": {"type": "array", "items": {"type": "string", "enum": ["yes", "no", "n/a"]},
                                 "minItems": n, "maxItems": n}, "reason": _STR})


# --------------------------------------------------------------------------- validators

def validate_rubrics(obj: dict[str, Any]) -> str | None:
    rubrics = obj.get("rubrics")
    if not isinstance(rubrics, list) or not rubrics:
        return '"rubrics" must be a non-empty list of strings'
    if not all(isinstance(r, str) and r.strip() for r in rubrics):
        return 'every item of "rubrics" must be a non-empty string'
    if not isinstance(obj.get("reason"), str):
        return '"reason" must be a string'
    return None


def rank_validator(n: int):
    """Validator for judge answers: ``rank`` is a permutation of 1..n (no ties, right length)."""

    def validate(obj: dict[str, Any]) -> str | None:
        rank = obj.get("rank")
        if not isinstance(rank, list) or not all(isinstance(r, int) and not isinstance(r, bool) for r in rank):
            return f'"rank" must be a list of {n} integers'
        if len(rank) != n:
            return f'"rank" must have exactly {n} entries, one per image, got {len(rank)}'
        if sorted(rank) != list(range(1, n + 1)):
            return (f'"rank" must be a permutation of 1..{n}: each rank used once, no ties, '
                    f'got {rank}')
        if not isinstance(obj.get("reason"), str):
            return '"reason" must be a string'
        return None

    return validate


def categories_validator(categories_number: int):
    def validate(obj: dict[str, Any]) -> str | None:
        cats = obj.get("categories")
        if not isinstance(cats, list) or not cats:
            return '"categories" must be a non-empty list of {"theme", "tips"} objects'
        if len(cats) > categories_number:
            return f'"categories" must have at most {categories_number} themes, got {len(cats)}'
        for i, c in enumerate(cats):
            if not isinstance(c, dict) or not isinstance(c.get("theme"), str) or not c["theme"].strip():
                return f'categories[{i}] needs a non-empty string "theme"'
            tips = c.get("tips")
            if not isinstance(tips, list) or not tips or not all(isinstance(t, str) and t.strip() for t in tips):
                return f'categories[{i}] needs "tips": a non-empty list of strings'
        return None

    return validate


def answers_validator(questions: list[str]):
    n = len(questions)

    def validate(obj: dict[str, Any]) -> str | None:
        answers = obj.get("answers")
        if not isinstance(answers, list) or len(answers) != n:
            return f'"answers" must be a list with exactly {n} entries, one per question, in order'
        for i, a in enumerate(answers):
            if not isinstance(a, dict) or a.get("answer") not in ("yes", "no"):
                return f'answers[{i}] must be an object with "question" and "answer": "yes" or "no"'
        return None

    return validate


VERDICTS: tuple[str, ...] = ("yes", "no", "n/a")
_NA_SPELLINGS = frozenset({"n/a", "na", "n.a", "not applicable", "none"})


def normalize_verdict(v: Any) -> str | None:
    """A checklist verdict as "yes", "no" or "n/a" (case, spaces, a final full stop and common n/a
    spellings ignored), or None when it is none of them."""
    if not isinstance(v, str):
        return None
    t = " ".join(v.lower().split()).rstrip(".")
    if t in ("yes", "no"):
        return t
    return "n/a" if t in _NA_SPELLINGS else None


def verdicts_validator(n: int):
    """Validator for checklist answers: ``verdicts`` holds exactly n entries, each yes, no or n/a."""

    def validate(obj: dict[str, Any]) -> str | None:
        verdicts = obj.get("verdicts")
        if not isinstance(verdicts, list) or len(verdicts) != n:
            got = len(verdicts) if isinstance(verdicts, list) else type(verdicts).__name__
            return f'"verdicts" must be a list with exactly {n} entries, one per rubric in order, got {got}'
        for i, v in enumerate(verdicts):
            if normalize_verdict(v) is None:
                return f'verdicts[{i}] must be "yes", "no" or "n/a", got {v!r}'
        if not isinstance(obj.get("reason"), str):
            return '"reason" must be a string'
        return None

    return validate


# --------------------------------------------------------------------------- builders

def build_generate(task: str, prompt: str, images: list[ImageLike], *, source: ImageLike | None = None,
                   preferred: int, n_rubrics: int = 5,
                   max_side: int | None = DEFAULT_REQUEST_MAX_SIDE) -> VLMRequest:
    """Ask for ``n_rubrics`` general criteria explaining why image ``preferred`` (0-based) won.

    The generator is told the human preference; the judge (``build_judge``) never is.
    ``max_side``: images are downscaled to this (None: as given); the client re-encodes to its own policy.
    """
    _check_images(task, images, source)
    _check_preferred(preferred, len(images))
    _check_n_rubrics(n_rubrics)
    n = len(images)
    others = ", ".join(_NAME[task].format(k=k + 1) for k in range(n) if k != preferred)
    static = "\n\n".join([
        _intro(task, n),
        (f"Which image people preferred is said after the images. Write {n_rubrics} evaluation criteria "
         f"that explain this preference: properties the preferred image has and the others lack, judged "
         f"against the {'caption' if task == 't2i' else 'instruction and Image BASE'}."),
        _rules(task),
        _RUBRICS_CONTRACT.format(k=n_rubrics),
    ])
    varying = "\n\n".join([
        _prompt_line(task, prompt),
        (f"People compared these images and preferred {_NAME[task].format(k=preferred + 1)} over "
         f"{others}."),
    ])
    parts = _layout(static, labelled_image_parts(task, list(images), source=source, max_side=max_side), varying)
    return _request(parts, kind="generate", required=("rubrics", "reason"), validator=validate_rubrics,
                    max_tokens=1024, schema=rubrics_schema(n_rubrics))


def build_judge(task: str, prompt: str, images: list[ImageLike], *, source: ImageLike | None = None,
                rubrics_block: str | None, max_side: int | None = DEFAULT_REQUEST_MAX_SIDE) -> VLMRequest:
    """Ask for a full ranking of the images (pairwise for N=2, listwise for N>2); never shows labels.

    ``rubrics_block`` is the text of a rubric set (``RubricSet.prompt_block()``) or None to judge
    without rubrics. Answer: ``{"rank": [r_1..r_N], "reason"}`` with r_k the rank of image k. Everything
    before the images is the same for every pair with the same rubrics, task and N.
    """
    _check_images(task, images, source)
    if rubrics_block is not None and not rubrics_block.strip():
        raise ValueError("rubrics_block is empty; pass None to judge without rubrics")
    n = len(images)
    sections = [_intro(task, n)]
    if rubrics_block is not None:
        sections.append("Evaluation rubrics:\n" + rubrics_block.strip())
        sections.append("Check every image against every rubric above, then rank the images by how "
                        "well they satisfy the rubrics as a whole.")
    else:
        target = ("matches the caption" if task == "t2i" else
                  "carries out the instruction while keeping the rest of Image BASE")
        sections.append(f"Decide which image best {target} and is of the highest visual quality.")
    sections.append(POSITION_BIAS)
    names = ", ".join(f"r{k} is the rank of {_NAME[task].format(k=k)}" for k in range(1, n + 1))
    sections.append(
        f"Rank {'both' if n == 2 else f'all {n}'} {'edited ' if task == 'edit' else ''}images from best to "
        f"worst: give each a different rank from 1 (best) to {n} (worst); ties are not allowed.\n"
        'Answer with JSON only, in exactly this form:\n'
        '{"rank": [' + ", ".join(f"r{k}" for k in range(1, n + 1)) + '], "reason": "<short justification>"}\n'
        f"where {names}.")
    parts = _layout("\n\n".join(sections),
                    labelled_image_parts(task, list(images), source=source, max_side=max_side),
                    _prompt_line(task, prompt))
    return _request(parts, kind="judge", required=("rank", "reason"), validator=rank_validator(n),
                    max_tokens=512, schema=judge_schema(n))


def build_revise(task: str, prompt: str, images: list[ImageLike], *, source: ImageLike | None = None,
                 preferred: int, previous: list[str], feedback: str, n_rubrics: int = 5,
                 max_side: int | None = DEFAULT_REQUEST_MAX_SIDE) -> VLMRequest:
    """Ask for improved criteria after blind verification failed; ``feedback`` says which presented
    orders failed and what the judge said."""
    _check_images(task, images, source)
    _check_preferred(preferred, len(images))
    _check_n_rubrics(n_rubrics)
    if not previous or not all(isinstance(p, str) and p.strip() for p in previous):
        raise ValueError("previous must be the non-empty list of criteria that failed verification")
    if not isinstance(feedback, str) or not feedback.strip():
        raise ValueError("feedback must say which orders failed and the judge's reason")
    n = len(images)
    prev = "\n".join(f"{i}. {p.strip()}" for i, p in enumerate(previous, 1))
    static = "\n\n".join([
        _intro(task, n),
        ("After the images come which image people preferred, the criteria written before, and "
         "feedback from a judge who was not told the preference, ranked the images using those "
         "criteria and did not recover it."),
        (f"Write {n_rubrics} revised criteria that let a judge recover the preference: keep what "
         f"helped, drop or fix what misled the judge or could not be checked, and add what was "
         f"missing."),
        _rules(task),
        _RUBRICS_CONTRACT.format(k=n_rubrics),
    ])
    varying = "\n\n".join([
        _prompt_line(task, prompt),
        f"People compared these images and preferred {_NAME[task].format(k=preferred + 1)}.",
        "Previous criteria:\n" + prev,
        "Feedback:\n" + feedback.strip(),
    ])
    parts = _layout(static, labelled_image_parts(task, list(images), source=source, max_side=max_side), varying)
    return _request(parts, kind="revise", required=("rubrics", "reason"), validator=validate_rubrics,
                    max_tokens=1024, schema=rubrics_schema(n_rubrics))


def build_categorize(criteria: list[str], *, categories_number: int = 5, task: str) -> VLMRequest:
    """Ask to group pooled criteria into at most ``categories_number`` themes with tips (no images)."""
    _check_task(task)
    if not criteria or not all(isinstance(c, str) and c.strip() for c in criteria):
        raise ValueError("criteria must be a non-empty list of non-empty strings")
    if not isinstance(categories_number, int) or categories_number < 1:
        raise ValueError(f"categories_number must be a positive integer, got {categories_number!r}")
    what = "AI-generated images (text-to-image)" if task == "t2i" else "instruction-based image edits"
    listing = "\n".join(f"{i}. {c.strip()}" for i, c in enumerate(criteria, 1))
    text = "\n\n".join([
        f"Below are {len(criteria)} criteria for evaluating {what}.",
        "Criteria:\n" + listing,
        (f"Group them into at most {categories_number} themes. For each theme give a short name and "
         "a list of tips: concise, checkable statements taken from or merging the criteria of that "
         "theme. Every criterion must be covered by some tip; merge criteria that say the same thing."),
        ('Answer with JSON only, in exactly this form:\n'
         '{"categories": [{"theme": "<name>", "tips": ["<tip>", ...]}, ...], '
         '"reason": "<how you grouped them>"}'),
    ])
    return _request([text_part(text)], kind="categorize", required=("categories", "reason"),
                    validator=categories_validator(categories_number), max_tokens=2048,
                    schema=categories_schema(categories_number))


def build_checklist(task: str, prompt: str, image: ImageLike, *, rubrics: list[str],
                    source: ImageLike | None = None,
                    max_side: int | None = DEFAULT_REQUEST_MAX_SIDE) -> VLMRequest:
    """Ask whether ONE image satisfies each rubric (pointwise; the checklist judge of
    ``arr_core.judge.checklist``). Answer: ``{"verdicts": ["yes"|"no"|"n/a", ...], "reason"}``, one
    verdict per rubric in order; "n/a" when a rubric does not apply or cannot be judged from the image.
    Rubric texts are flattened to one line each (the listing is numbered)."""
    _check_images(task, [image], source, min_n=1)
    lines = [" ".join(r.split()) for r in rubrics] if isinstance(rubrics, (list, tuple)) else []
    if not lines or not all(lines):
        raise ValueError("rubrics must be a non-empty list of non-empty strings")
    listing = "\n".join(f"{i}. {r}" for i, r in enumerate(lines, 1))
    what = ("The image above was generated from the caption below." if task == "t2i" else
            "The first image above is the original, Image BASE; the edited image after it was produced "
            "from Image BASE with the instruction below.")
    name = _NAME[task].format(k=1)
    sections = [
        "You are a careful evaluator of AI-generated images. " + what + "\n"
        + _PROMPT_LINE[task].format(prompt=prompt.strip()),
        *([EDIT_REQUIREMENTS.replace("every edited image", "the edited image")] if task == "edit" else []),
        "Rubrics:\n" + listing,
        (f"Check {name} against each rubric on its own: answer \"yes\" if it satisfies the rubric, "
         "\"no\" if it does not, and \"n/a\" if the rubric does not apply here or cannot be judged "
         "from the image."),
        ('Answer with JSON only, in exactly this form, one verdict per rubric in the same order:\n'
         '{"verdicts": ["yes" or "no" or "n/a", ...], "reason": "<short justification>"}'),
    ]
    parts = labelled_image_parts(task, [image], source=source, max_side=max_side)
    parts.append(text_part("\n\n".join(sections)))
    return _request(parts, kind="checklist", required=("verdicts", "reason"),
                    validator=verdicts_validator(len(lines)), max_tokens=256 + 8 * len(lines),
                    schema=verdicts_schema(len(lines)))


def build_check(image: ImageLike, questions: list[str], *, prompt: str | None = None,
                max_side: int | None = DEFAULT_REQUEST_MAX_SIDE) -> VLMRequest:
    """Ask yes/no questions about one image (GenEval/TIIF-style checkpoints)."""
    if not questions or not all(isinstance(q, str) and q.strip() for q in questions):
        raise ValueError("questions must be a non-empty list of non-empty strings")
    listing = "\n".join(f"{i}. {q.strip()}" for i, q in enumerate(questions, 1))
    sections = ["Look at the image above."]
    if prompt is not None:
        sections.append(f"Caption: {prompt.strip()}")
    sections += [
        "Answer each question about the image with yes or no.\nQuestions:\n" + listing,
        ('Answer with JSON only, in exactly this form, one entry per question in the same order:\n'
         '{"answers": [{"question": "<question>", "answer": "yes" or "no"}, ...]}'),
    ]
    parts = [text_part("Image 1:"), image_part(image_data_url(image, max_side)),
             text_part("\n\n".join(sections))]
    return _request(parts, kind="check", required=("answers",), validator=answers_validator(questions),
                    max_tokens=256 + 32 * len(questions), schema=answers_schema(len(questions)))
