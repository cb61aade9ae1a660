"""Configs of the induction and judge stages (one pydantic model each, paper defaults).

Defaults follow the ARR paper: 5 criteria generated per seed pair, up to 5 generate/revise epochs,
at most 5 themes. Fields the paper does not fix (``max_rubrics``, ``dedup_threshold``) carry the
project's choice and say so. The generator and the verifier may be different backends or models.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from arr_core.judge.config import JudgeSettings, RewardMapping
from arr_core.vlm.config import VLMConfig


class InduceConfig(BaseModel):
    """Rubric induction: generate → blind verify/refine → select → categorize."""

    model_config = ConfigDict(extra="forbid")

    generate_number: int = Field(5, ge=1, description="criteria asked for per seed pair (paper: 5)")
    max_epochs: int = Field(5, ge=1, description="generate/revise attempts per pair, each one verified "
                            "(paper: 5)")
    verify_orders: Literal["both", "single"] = Field(
        "both", description="both: verify with the images as given and reversed, pass only if both "
        "recover the preference; single: as given only")
    retries: int | None = Field(None, ge=0, description="re-asks after an unusable VLM answer, for the "
                                "generator and the verifier; None keeps each VLM config's max_reasks")
    concurrency: int = Field(8, ge=1, description="seed pairs processed at the same time (the VLM "
                             "configs cap requests in flight)")
    max_rubrics: int = Field(20, ge=1, description="criteria kept after de-duplication and diverse "
                             "selection (project default; the paper ablates 1–20)")
    categories_number: int = Field(5, ge=1, description="themes at most (paper: 5)")
    selection_seed: int = Field(0, description="seed of the diverse selection's tie-breaking")
    dedup_threshold: float = Field(0.9, gt=0.0, le=1.0, description="cosine similarity of text vectors "
                                   "at which two criteria count as duplicates (project default)")
    max_failure_rate: float = Field(0.2, ge=0.0, le=1.0, description="share of seed pairs whose VLM "
                                    "calls may fail in transport (unreachable, rejected, timed out after "
                                    "retries) before the stage fails; failed pairs are never recorded as "
                                    "done, so a rerun asks them again")
    early_abort: int = Field(8, ge=0, description="stop at once when this many pairs in a row fail in "
                             "transport at the start of the stage (0: never)")
    generator: VLMConfig = Field(default_factory=VLMConfig, description="VLM that writes criteria "
                                 "(and categorizes)")
    verifier: VLMConfig | None = Field(None, description="VLM that judges blind during verification; "
                                       "None: the generator's")

    def verifier_config(self) -> VLMConfig:
        return self.verifier if self.verifier is not None else self.generator

    def parameters(self) -> dict[str, Any]:
        """The fields that change what induction produces (lineage; part of the rubric-set id)."""
        return {
            "generate_number": self.generate_number, "max_epochs": self.max_epochs,
            "verify_orders": self.verify_orders, "retries": self.retries,
            "max_rubrics": self.max_rubrics, "categories_number": self.categories_number,
            "selection_seed": self.selection_seed, "dedup_threshold": self.dedup_threshold,
        }


class JudgeConfig(JudgeSettings):
    """The rubric-conditioned judge at inference (``arr judge``, benchmarks); ``order`` is defined once
    in ``arr_core.judge.config.JudgeSettings`` and shared with the RPO reward and the pipeline."""

    reward_mapping: RewardMapping = Field(
        "paper", description="paper: rank 1 → 1.0, others → −0.1, ties/abstentions 0; linear: 1.0 → −0.1 "
        "over ranks 1..N")
    seed: int = Field(0, description="seed of the random order mode")
    retries: int | None = Field(None, ge=0, description="re-asks after an unusable answer; None keeps the "
                                "VLM config's max_reasks")
    max_failure_rate: float = Field(0.2, ge=0.0, le=1.0, description="share of judged items whose VLM "
                                    "calls may fail in transport before the command fails (exit 4)")
    vlm: VLMConfig = Field(default_factory=VLMConfig)

    def vlm_config(self) -> VLMConfig:
        """The judge's VLM config with ``retries`` applied."""
        return with_retries(self.vlm, self.retries)


def with_retries(cfg: VLMConfig, retries: int | None) -> VLMConfig:
    """``cfg`` with ``max_reasks`` replaced when ``retries`` is set."""
    return cfg if retries is None else cfg.model_copy(update={"max_reasks": retries})


def load_config(path: str | Path, model: type[BaseModel]) -> Any:
    """Read a YAML file into ``model`` (``arr_core.config_io``: ``${VAR:-default}`` expanded except in
    the VLM sections, which expand their own fields); errors name the file and field."""
    from arr_core.config_io import load_config as _load

    return _load(path, model, skip_env=("generator.", "verifier.", "vlm."),
                 what=f"{model.__name__} fields")
