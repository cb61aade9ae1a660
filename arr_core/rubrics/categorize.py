"""Grouping selected criteria into at most ``categories_number`` themes with tips (ARR's "Theme-Tips").

ARR asks an LLM/VLM to merge the selected query-specific criteria into a few themes, each with tips;
the result is the rubric block judges see. The paper's released code trusts the answer; here an
answer that is not valid JSON of the right shape (checked by the request's validator, with
re-asks) or that has more themes than allowed makes the rubric set fall back to the flat numbered
list of criteria (``fallback_used`` = True), which the judge can use just as well.
"""

from __future__ import annotations

from typing import Any

from arr_core.prompts.templates import build_categorize
from arr_core.rubrics.rubric_set import Theme


def parse_categories(obj: dict[str, Any] | None, categories_number: int) -> list[Theme] | None:
    """Themes from a categorize answer, or None when it is unusable (no silent repair)."""
    if not isinstance(obj, dict):
        return None
    cats = obj.get("categories")
    if not isinstance(cats, list) or not cats or len(cats) > categories_number:
        return None
    themes: list[Theme] = []
    for c in cats:
        if not isinstance(c, dict):
            return None
        name, tips = c.get("theme"), c.get("tips")
        if not isinstance(name, str) or not name.strip():
            return None
        if not isinstance(tips, list) or not tips or not all(isinstance(t, str) and t.strip() for t in tips):
            return None
        themes.append(Theme(theme=name.strip(), tips=[t.strip() for t in tips]))
    return themes


async def categorize_criteria(criteria: list[str], client: Any, *, categories_number: int, task: str,
                              ) -> tuple[list[Theme], bool]:
    """(themes, fallback_used). An empty criteria list gives ([], True) without asking the VLM."""
    if not criteria:
        return [], True
    req = build_categorize(list(criteria), categories_number=categories_number, task=task)
    resp = await client.ask(req)
    client.flush()
    themes = parse_categories(resp.parsed if resp.error is None else None, categories_number)
    if themes is None:
        return [], True
    return themes, False
