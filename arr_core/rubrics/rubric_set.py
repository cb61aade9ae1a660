"""A versioned rubric set and its exchange formats.

The version id is a digest of the content (task, themes, tips, criteria) and of the lineage that
produced it (parent version, dataset digest, generator/verifier models, prompt version,
parameters). Statistics and timestamps are not part of it, so re-running an induction with equal
inputs yields the same id.

Formats: the ARR reference plain-text block ("Rubric k:" / "Theme: …" / "- Tip: …"), JSON, and
Parquet rows (one row per theme tip or criterion).
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from arr_core.digest import digest_obj

ID_LINEAGE_KEYS = ("parent_id", "dataset_digest", "generator_model", "verifier_model",
                   "prompt_version", "parameters")


class Theme(BaseModel):
    model_config = ConfigDict(extra="forbid")

    theme: str
    tips: list[str] = Field(default_factory=list)

    @field_validator("theme")
    @classmethod
    def _nonempty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("theme must not be empty")
        return v.strip()


class RubricSet(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task: str = "t2i"
    themes: list[Theme] = Field(default_factory=list)
    criteria: list[str] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("task")
    @classmethod
    def _task(cls, v: str) -> str:
        if v not in ("t2i", "edit", "pointwise"):
            raise ValueError(f"task must be t2i, edit or pointwise, got '{v}'")
        return v

    # ---- identity -----------------------------------------------------------------------------
    def identity(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "themes": [t.model_dump() for t in self.themes],
            "criteria": list(self.criteria),
            "lineage": {k: self.metadata.get(k) for k in ID_LINEAGE_KEYS},
        }

    @property
    def id(self) -> str:
        return "rs-" + digest_obj(self.identity(), 16)

    def content_digest(self) -> str:
        """Digest of the content alone (no lineage): equal rubrics from different runs match."""
        return digest_obj({k: v for k, v in self.identity().items() if k != "lineage"}, 16)

    @property
    def n_items(self) -> int:
        return sum(len(t.tips) for t in self.themes) if self.themes else len(self.criteria)

    # ---- text ---------------------------------------------------------------------------------
    def to_text(self) -> str:
        """The ARR reference block. With no themes, each criterion is its own rubric."""
        blocks = []
        if self.themes:
            for k, t in enumerate(self.themes, 1):
                lines = [f"Rubric {k}:", f"Theme: {t.theme}"] + [f"- Tip: {tip}" for tip in t.tips]
                blocks.append("\n".join(lines))
        else:
            for k, c in enumerate(self.criteria, 1):
                blocks.append(f"Rubric {k}:\nTheme: {c}")
        return "\n\n".join(blocks) + ("\n" if blocks else "")

    def prompt_block(self) -> str:
        """Text inserted into judge prompts: the themed block, else a numbered flat list."""
        if self.themes:
            return self.to_text().strip()
        return "\n".join(f"{k}. {c}" for k, c in enumerate(self.criteria, 1))

    @classmethod
    def from_text(cls, text: str, *, task: str = "t2i", metadata: dict[str, Any] | None = None,
                  ) -> RubricSet:
        """Parse the reference block. Lines outside the grammar raise ValueError naming the line."""
        themes: list[Theme] = []
        current: dict[str, Any] | None = None
        for lineno, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if not line:
                continue
            if re.match(r"^rubric\s*\d+\s*:?\s*$", line, re.I):
                if current is not None:
                    themes.append(_theme_from(current, lineno))
                current = {"theme": None, "tips": []}
                continue
            m_theme = re.match(r"^theme\s*:\s*(.+)$", line, re.I)
            m_tip = re.match(r"^[-*•]?\s*tip\s*\d*\s*:\s*(.+)$", line, re.I)
            if current is None:
                current = {"theme": None, "tips": []}
            if m_theme:
                if current["theme"] is not None:
                    themes.append(_theme_from(current, lineno))
                    current = {"theme": None, "tips": []}
                current["theme"] = m_theme.group(1).strip()
            elif m_tip:
                current["tips"].append(m_tip.group(1).strip())
            elif current["theme"] is not None and current["tips"]:
                current["tips"][-1] += " " + line  # wrapped tip line
            else:
                raise ValueError(f"rubric text line {lineno}: expected 'Rubric k:', 'Theme: …' or "
                                 f"'- Tip: …', got {line[:60]!r}")
        if current is not None:
            themes.append(_theme_from(current, None))
        if not themes:
            raise ValueError("rubric text contains no rubrics")
        criteria = [tip for t in themes for tip in t.tips] or [t.theme for t in themes]
        if all(not t.tips for t in themes):
            return cls(task=task, themes=[], criteria=criteria, metadata=dict(metadata or {}))
        return cls(task=task, themes=themes, criteria=criteria, metadata=dict(metadata or {}))

    # ---- JSON ---------------------------------------------------------------------------------
    def to_json(self, *, indent: int | None = 2) -> str:
        return json.dumps({"id": self.id, **self.model_dump(mode="json")}, indent=indent,
                          ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | dict[str, Any]) -> RubricSet:
        data = json.loads(text) if isinstance(text, str) else dict(text)
        claimed = data.pop("id", None)
        rs = cls.model_validate(data)
        if claimed is not None and claimed != rs.id:
            raise ValueError(f"rubric set JSON claims id {claimed} but its content hashes to {rs.id}")
        return rs

    # ---- rows (Parquet) -----------------------------------------------------------------------
    def to_rows(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for ti, t in enumerate(self.themes):
            for j, tip in enumerate(t.tips):
                rows.append({"kind": "theme_tip", "theme_idx": ti, "theme": t.theme, "item_idx": j,
                             "text": tip})
            if not t.tips:
                rows.append({"kind": "theme_tip", "theme_idx": ti, "theme": t.theme, "item_idx": -1,
                             "text": ""})
        for j, c in enumerate(self.criteria):
            rows.append({"kind": "criterion", "theme_idx": None, "theme": None, "item_idx": j,
                         "text": c})
        return rows

    @classmethod
    def from_rows(cls, rows: list[dict[str, Any]], *, task: str, metadata: dict[str, Any]) -> RubricSet:
        themes: dict[int, Theme] = {}
        criteria: list[tuple[int, str]] = []
        for r in sorted(rows, key=lambda r: (r["kind"], r["theme_idx"] or 0, r["item_idx"])):
            if r["kind"] == "theme_tip":
                t = themes.setdefault(int(r["theme_idx"]), Theme(theme=r["theme"], tips=[]))
                if r["item_idx"] >= 0:
                    t.tips.append(r["text"])
            elif r["kind"] == "criterion":
                criteria.append((int(r["item_idx"]), r["text"]))
            else:
                raise ValueError(f"unknown rubric row kind {r['kind']!r}")
        return cls(task=task, themes=[themes[k] for k in sorted(themes)],
                   criteria=[c for _, c in sorted(criteria)], metadata=metadata)

    # ---- derived sets -------------------------------------------------------------------------
    def with_criteria_subset(self, k: int) -> RubricSet:
        """The first ``k`` criteria as a flat set (cardinality ablations); lineage points here."""
        if k < 1:
            raise ValueError("k must be at least 1")
        meta = {key: self.metadata.get(key) for key in ID_LINEAGE_KEYS if key != "parent_id"}
        meta.update(parent_id=self.id, parameters={**(self.metadata.get("parameters") or {}),
                                                    "criteria_subset": k})
        return RubricSet(task=self.task, themes=[], criteria=self.criteria[:k], metadata=meta)


def _theme_from(current: dict[str, Any], lineno: int | None) -> Theme:
    if current["theme"] is None:
        where = f" before line {lineno}" if lineno else " at the end"
        raise ValueError(f"rubric text: a rubric without a 'Theme:' line{where}")
    return Theme(theme=current["theme"], tips=current["tips"])
