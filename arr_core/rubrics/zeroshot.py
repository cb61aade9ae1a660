"""Zero-shot ARR: rubrics generated per test prompt, without any label, then used by the judge.

The ARR paper's zero-shot mode writes k rubrics for each evaluated prompt from the prompt alone (the
VLM is never told which image people preferred) and judges that pair with them; its cardinality
table varies k ∈ {1, 5, 10, 20} *per prompt*. Here:

- one generation request per (task, prompt, k), or per (pair, k) with ``with_images`` (the unlabelled
  candidates, in the record's order, are shown too: the answer may depend on them). Pairs sharing a
  prompt share its rubrics;
- the request is an ordinary ``VLMRequest`` (kind ``zeroshot``, template version
  ``ZEROSHOT_PROMPT_VERSION``): the VLM client's response cache keys it, so a rerun with the same
  store makes no new generation call;
- the answer must hold exactly k criteria (a different count is re-asked by the client, then counts
  as a failed generation: that pair abstains under this condition, it is never judged with fewer);
- the criteria become a flat ``RubricSet`` (its id records which rubrics judged the pair), whose
  numbered block is what the judge sees, as with an induced flat set.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from arr_core.data.images import DEFAULT_REQUEST_MAX_SIDE
from arr_core.data.records import PreferenceRecord
from arr_core.digest import digest_obj
from arr_core.prompts.templates import POSITION_BIAS, rubrics_schema, validate_rubrics
from arr_core.rubrics.rubric_set import RubricSet
from arr_core.vlm.base import VLMRequest
from arr_core.vlm.messages import labelled_image_parts, text_part, user_message

ZEROSHOT_PROMPT_VERSION = "zeroshot-v1"
# Said in every zero-shot request (the scene VLM recognises the request kind by it).
NO_PREFERENCE = "No preference between images is given or known"
DEFAULT_KS = (1, 5, 10, 20)

_WHAT = {"t2i": ("images generated from a caption", "Caption", "matches the caption and is of the highest "
                 "visual quality"),
         "edit": ("edited images, each made from an original image (Image BASE) with an instruction",
                  "Instruction", "carries out the instruction while keeping the rest of Image BASE, and is "
                  "of the highest visual quality")}


def count_validator(k: int):
    """The answer must hold exactly ``k`` criteria (the cardinality is the experiment)."""
    def validate(obj: dict[str, Any]) -> str | None:
        problem = validate_rubrics(obj)
        if problem is None and len(obj["rubrics"]) != k:
            problem = f'"rubrics" must hold exactly {k} criteria, got {len(obj["rubrics"])}'
        return problem

    return validate


def build_zeroshot(task: str, prompt: str, k: int, *, images: Sequence[Any] | None = None, source: Any = None,
                   max_side: int | None = DEFAULT_REQUEST_MAX_SIDE) -> VLMRequest:
    """Ask for ``k`` criteria a judge should check for this prompt; never says which image people
    preferred. ``images`` (optional): the unlabelled candidates (with ``source`` for editing)."""
    if task not in _WHAT:
        raise ValueError(f"task must be t2i or edit, got {task!r}")
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    what, line, goal = _WHAT[task]
    sections = [
        f"You write evaluation criteria for judging {what}.",
        (f"Write {k} evaluation criteria that a judge should check, one property each, to decide which "
         f"candidate best {goal}. {NO_PREFERENCE}: derive the criteria from what the "
         f"{line.lower()} asks for and from general image quality."),
        ("Each criterion must be checkable by looking at an image and stated as what a good image does; "
         "do not refer to image numbers."),
        *([POSITION_BIAS] if images else []),
        'Answer with JSON only, in exactly this form:\n{"rubrics": ["<criterion>", ...], "reason": '
        f'"<what the {line.lower()} asks for>"}}\nwith exactly {k} criteria in "rubrics".',
    ]
    parts = [text_part("\n\n".join(sections))]
    if images:
        parts += labelled_image_parts(task, list(images), source=source if task == "edit" else None,
                                      max_side=max_side)
    parts.append(text_part(f"{line}: {prompt.strip()}"))
    return VLMRequest(messages=user_message(parts), required_keys=("rubrics", "reason"),
                      validator=count_validator(k), temperature=0.0, max_tokens=256 + 64 * k,
                      prompt_version=ZEROSHOT_PROMPT_VERSION, kind="zeroshot", schema=rubrics_schema(k))


@dataclass
class ZeroShotRubrics:
    """The k rubrics of one prompt (or pair), or why there are none."""

    key: str
    k: int
    rubric_set: RubricSet | None
    error: str | None = None
    cached: bool = False

    @property
    def block(self) -> str | None:
        return self.rubric_set.prompt_block() if self.rubric_set is not None else None


@dataclass
class ZeroShotResult:
    """Rubrics per (pair id, k), the number of distinct requests and the generation's VLM cost."""

    by_pair: dict[tuple[str, int], ZeroShotRubrics]
    n_requests: int
    cost: dict[str, int] = field(default_factory=dict)

    def blocks(self, k: int) -> dict[str, str | None]:
        """pair id → the judge's rubric block for ``k`` (None where generation failed)."""
        return {pid: z.block for (pid, kk), z in self.by_pair.items() if kk == k}

    def failures(self, k: int) -> dict[str, str]:
        return {pid: z.error or "" for (pid, kk), z in self.by_pair.items() if kk == k and z.rubric_set is None}


def prompt_key(record: PreferenceRecord, k: int, with_images: bool) -> str:
    """What one generation is shared by: (task, prompt, k), plus the images with ``with_images``."""
    ident: dict[str, Any] = {"task": record.task, "prompt": record.prompt.strip(), "k": k}
    if with_images:
        ident["images"] = [im.uri for im in record.images]
        ident["source"] = record.source.uri if record.source is not None else None
    return "zs-" + digest_obj(ident, 16)


COST_KEYS = ("requests", "calls", "cache_hits", "prompt_tokens", "completion_tokens", "request_bytes")


def cost_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, int]:
    """What a client spent between two ``stats()`` snapshots (calls, tokens, request bytes)."""
    return {k: int(after.get(k, 0)) - int(before.get(k, 0)) for k in COST_KEYS}


async def generate_zeroshot(client: Any, records: Sequence[PreferenceRecord], ks: Sequence[int], *,
                            with_images: bool = False, generator_name: str = "") -> ZeroShotResult:
    """k rubrics for every record and every k in ``ks``, one request per distinct prompt (``prompt_key``),
    all sent in one ``ask_many`` batch (cached by the client)."""
    unique: dict[str, tuple[PreferenceRecord, int]] = {}
    keys: dict[tuple[str, int], str] = {}
    for r in records:
        for k in ks:
            key = prompt_key(r, k, with_images)
            unique.setdefault(key, (r, k))
            keys[(r.pair_id, k)] = key
    order = list(unique)
    reqs = [build_zeroshot(r.task, r.prompt, k, images=list(r.images) if with_images else None,
                           source=r.source if with_images else None) for r, k in (unique[q] for q in order)]
    before = client.stats()
    resps = await client.ask_many(reqs) if reqs else []
    cost = cost_delta(before, client.stats())
    made: dict[str, ZeroShotRubrics] = {}
    for key, resp in zip(order, resps, strict=True):
        r, k = unique[key]
        if resp.error is not None or resp.parsed is None:
            made[key] = ZeroShotRubrics(key, k, None, error=resp.error or "no answer", cached=resp.cached)
            continue
        criteria = [str(c).strip() for c in resp.parsed["rubrics"]]
        rs = RubricSet(task=r.task, criteria=criteria,
                       metadata={"kind": "zeroshot", "k": k, "prompt_key": key, "generator_model": generator_name,
                                 "prompt_version": ZEROSHOT_PROMPT_VERSION, "with_images": with_images})
        made[key] = ZeroShotRubrics(key, k, rs, cached=resp.cached)
    return ZeroShotResult({pk: made[key] for pk, key in keys.items()}, len(order), cost)
