"""Preference records for text-to-image, editing and pointwise data.

A record holds a prompt (caption or edit instruction), N ≥ 2 candidate images, for editing the
source image, and either ``label_rank`` (one rank per candidate, 1 = preferred; the source image is
never ranked) or ``label_score`` (pointwise). Images are referenced by URI plus the sha256 of their
bytes, so a record's digest follows image content, not file names.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from arr_core.data.images import decode_rgb, read_bytes, to_data_url
from arr_core.digest import digest_obj, sha256_bytes

TASKS = ("t2i", "edit", "pointwise")


@dataclass(frozen=True)
class ImageRef:
    """An image by location (absolute path, http(s) URL or data URL) and content hash."""

    uri: str
    sha256: str

    @classmethod
    def from_uri(cls, uri: str) -> ImageRef:
        return cls(uri=uri, sha256=sha256_bytes(read_bytes(uri)))

    def load(self) -> Image.Image:
        """The image as RGB. Raises ImageReadError if it is gone or changed since loading."""
        return _load_rgb(self.uri, self.sha256)

    def data_url(self, max_side: int | None = None) -> str:
        return to_data_url(self.load(), max_side=max_side)


@functools.lru_cache(maxsize=512)
def _load_rgb(uri: str, sha256: str) -> Image.Image:
    from arr_core.data.images import ImageReadError

    data = read_bytes(uri)
    if sha256_bytes(data) != sha256:
        raise ImageReadError(f"image changed since the dataset was loaded: {uri}")
    return decode_rgb(data)


@dataclass
class PreferenceRecord:
    task: str
    prompt: str
    images: list[ImageRef]
    source: ImageRef | None = None
    label_rank: list[int] | None = None
    label_score: list[float] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    idx: int = 0

    def to_canonical(self) -> dict[str, Any]:
        """The content that defines the record: paths are not part of it, image hashes are."""
        return {
            "task": self.task,
            "prompt": self.prompt,
            "images": [im.sha256 for im in self.images],
            "source": self.source.sha256 if self.source else None,
            "label_rank": self.label_rank,
            "label_score": self.label_score,
        }

    @property
    def pair_id(self) -> str:
        return digest_obj(self.to_canonical(), 16)

    def preferred_index(self) -> int:
        """0-based index of the most preferred candidate (rank 1, or the highest score)."""
        if self.label_rank is not None:
            return self.label_rank.index(min(self.label_rank))
        if self.label_score is not None:
            return max(range(len(self.label_score)), key=lambda i: self.label_score[i])
        raise ValueError(f"record {self.idx} has no label_rank or label_score")

    def to_row(self) -> dict[str, Any]:
        """A JSON-able row in the project's own format (absolute URIs and hashes)."""
        return {
            "task": self.task,
            "prompt": self.prompt,
            "images": [im.uri for im in self.images],
            "image_sha256": [im.sha256 for im in self.images],
            "source_image": self.source.uri if self.source else None,
            "source_sha256": self.source.sha256 if self.source else None,
            "label_rank": self.label_rank,
            "label_score": self.label_score,
            "meta": self.meta,
            "idx": self.idx,
        }

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> PreferenceRecord:
        src = row.get("source_image")
        return cls(
            task=row["task"],
            prompt=row["prompt"],
            images=[ImageRef(u, h) for u, h in zip(row["images"], row["image_sha256"], strict=True)],
            source=ImageRef(src, row["source_sha256"]) if src else None,
            label_rank=list(row["label_rank"]) if row.get("label_rank") is not None else None,
            label_score=list(row["label_score"]) if row.get("label_score") is not None else None,
            meta=dict(row.get("meta") or {}),
            idx=int(row.get("idx", 0)),
        )
