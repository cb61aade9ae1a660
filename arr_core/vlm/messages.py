"""Shared helpers for OpenAI chat messages: image data URLs, labelled image parts, and reading them back.

Every request the project sends has one user message whose content lists the images first, each
preceded by its label text part, and the instruction text last (the ARR reference does the same):

- T2I: "Image 1:", <image>, "Image 2:", <image>, …, then the text;
- editing: "Image BASE (original):", <source>, "Edited Image 1:", <image>, …, then the text.

Images travel as ``data:`` URLs (PNG, optionally downscaled so the longer side is ``max_side``). The
reverse direction (``split_user_content``) is used by the offline scene VLM and by tests.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from PIL import Image

from arr_core.data.images import decode_rgb, read_bytes, to_data_url

BASE_LABEL = "Image BASE (original):"
T2I_TASKS = ("t2i",)
EDIT_TASKS = ("edit",)


@runtime_checkable
class SupportsDataURL(Protocol):
    """Anything that can render itself as a data URL (``arr_core.data.records.ImageRef``)."""

    def data_url(self, max_side: int | None = None) -> str: ...


ImageLike = Image.Image | SupportsDataURL | str


def image_data_url(image: ImageLike, max_side: int | None = None) -> str:
    """A ``data:`` URL for a PIL image, an ImageRef-like object or an existing data URL/path.

    A data URL given as a string is passed through unchanged unless ``max_side`` asks for a
    downscale (then it is decoded and re-encoded).
    """
    if isinstance(image, Image.Image):
        return to_data_url(image, max_side=max_side)
    if isinstance(image, str):
        if image.startswith("data:") and max_side is None:
            return image
        return to_data_url(decode_rgb(read_bytes(image)), max_side=max_side)
    if isinstance(image, SupportsDataURL):
        return image.data_url(max_side=max_side)
    raise TypeError(f"image must be a PIL image, an ImageRef or a data URL string, got {type(image).__name__}")


def text_part(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def image_part(url: str) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url}}


def image_labels(task: str, n: int) -> list[str]:
    """Labels for ``n`` candidate images: "Image k:" (T2I) or "Edited Image k:" (editing)."""
    if task in EDIT_TASKS:
        return [f"Edited Image {k}:" for k in range(1, n + 1)]
    if task in T2I_TASKS:
        return [f"Image {k}:" for k in range(1, n + 1)]
    raise ValueError(f"task must be 't2i' or 'edit', got {task!r}")


def labelled_image_parts(task: str, images: list[ImageLike], *, source: ImageLike | None = None,
                         max_side: int | None = None) -> list[dict[str, Any]]:
    """Label + image parts, source first for editing. Raises ValueError on a task/source mismatch."""
    if task in EDIT_TASKS and source is None:
        raise ValueError("task 'edit' needs the source image (argument 'source')")
    if task in T2I_TASKS and source is not None:
        raise ValueError("task 't2i' takes no source image; pass source=None or use task='edit'")
    parts: list[dict[str, Any]] = []
    if source is not None:
        parts += [text_part(BASE_LABEL), image_part(image_data_url(source, max_side))]
    for label, im in zip(image_labels(task, len(images)), images, strict=True):
        parts += [text_part(label), image_part(image_data_url(im, max_side))]
    return parts


def user_message(parts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"role": "user", "content": parts}]


def data_url_digest(url: str) -> str:
    """sha256 of a data URL's payload (the part after the comma): the image's identity in cache keys."""
    _, _, payload = url.partition(",")
    return "sha256:" + hashlib.sha256(payload.encode("ascii", "replace")).hexdigest()


def decode_data_url(url: str) -> Image.Image:
    return decode_rgb(read_bytes(url))


def downscale_images(messages: list[dict[str, Any]], max_side: int) -> list[dict[str, Any]]:
    """A copy of ``messages`` whose ``data:`` images are at most ``max_side`` px on the longer side
    (Lanczos, PNG); smaller images, other parts and other URLs are kept as they are."""
    out = []
    for m in messages:
        content = m.get("content")
        if not isinstance(content, list):
            out.append(m)
            continue
        parts = []
        for part in content:
            url = (part.get("image_url") or {}).get("url", "") if part.get("type") == "image_url" else ""
            if url.startswith("data:"):
                im = decode_data_url(url)
                if max(im.size) > max_side:
                    part = image_part(to_data_url(im, max_side=max_side))
            parts.append(part)
        out.append({**m, "content": parts})
    return out


@dataclass
class UserContent:
    """A user message read back: labelled images (in order) and the concatenated instruction text."""

    labels: list[str]
    image_urls: list[str]
    text: str

    @property
    def is_edit(self) -> bool:
        return bool(self.labels) and self.labels[0] == BASE_LABEL


def split_user_content(messages: list[dict[str, Any]]) -> UserContent:
    """Pair each image part with the text part just before it; the rest of the text is the prompt.

    Uses the last user message (a re-ask appends the model's answer and a correction; those texts
    are appended to ``text`` too, so a reader sees the correction).
    """
    labels: list[str] = []
    urls: list[str] = []
    texts: list[str] = []
    pending: str | None = None
    for msg in messages:
        content = msg.get("content")
        if isinstance(content, str):
            if msg.get("role") == "user":
                texts.append(content)
            continue
        for part in content or []:
            if part.get("type") == "text":
                if pending is not None:
                    texts.append(pending)
                pending = part.get("text", "")
            elif part.get("type") == "image_url":
                url = part["image_url"]["url"] if isinstance(part.get("image_url"), dict) else part["image_url"]
                labels.append((pending or "").strip())
                urls.append(url)
                pending = None
        if pending is not None:
            texts.append(pending)
            pending = None
    return UserContent(labels=labels, image_urls=urls, text="\n".join(texts))

