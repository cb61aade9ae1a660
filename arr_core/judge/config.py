"""The judge's settings, defined once and reused by every config that runs the judge: ``arr judge``
(``JudgeConfig``), the RPO reward (``reward`` in rank mode), the pipeline's judge check (``judge``)
and the evaluation's win rate."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

OrderMode = Literal["single", "swap", "random"]
RewardMapping = Literal["paper", "linear"]


class JudgeSettings(BaseModel):
    """How images are shown to the judge (every judge config has this field, defined here once)."""

    model_config = ConfigDict(extra="forbid")

    order: OrderMode = Field("swap", description="single: images as given; swap: as given and reversed, "
                             "agreement wins and disagreement is a tie; random: one seeded permutation per "
                             "item (recorded)")
