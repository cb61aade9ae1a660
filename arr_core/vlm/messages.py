"""Shared helpers for OpenAI chat messages: image data URLs, labelled image parts, and reading them back.

Every request the project sends has one user message; the templates (``arr_core.prompts``) put the
static instructions first, then the images, each preceded by its label text part, then the text that
varies per pair:

- T2I: <instructions>, "Image 1:", <image>, "Image 2:", <image>, …, "Caption: …";
- editing: <instructions>, "Image BASE (original):", <source>, "Edited Image 1:", <image>, …,
  "Instruction: …".

Images travel as ``data:`` URLs encoded under an ``ImagePolicy`` (``arr_core.data.images``: size cap,
PNG/JPEG/WebP, once per image content); ``encode_images`` re-encodes a request's images to the
client's policy. The reverse direction (``split_user_content``) is used by the offline scene VLM and
by tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from PIL import Image

from arr_core.data.images import (
    DEFAULT_REQUEST_MAX_SIDE,
    ImagePolicy,
    decode_rgb,
    encode_image,
    payload_digest,
    read_bytes,
    reencode_data_url,
)

BASE_LABEL = "Image BASE (original):"
T2I_TASKS = ("t2i",)
EDIT_TASKS = ("edit",)


@runtime_checkable
class SupportsDataURL(Protocol):
    """Anything that can render itself as a data URL (``arr_core.data.records.ImageRef``)."""

    def data_url(self, max_side: int | None = None) -> str: ...


ImageLike = Image.Image | SupportsDataURL | str


def image_data_url(image: ImageLike, max_side: int | None = DEFAULT_REQUEST_MAX_SIDE, *,
                   policy: ImagePolicy | None = None) -> str:
    """A ``data:`` URL for a PIL image, an ImageRef-like object, an existing data URL or a path.

    Encoded under ``policy`` (default: ``ImagePolicy(max_side=max_side)``: downscaled to
    ``max_side``, PNG when small, JPEG q90 above 256 px), once per image content per process. A data
    URL that already fits the policy is passed through unchanged.
    """
    policy = policy or ImagePolicy(max_side=max_side)
    if isinstance(image, Image.Image):
        return encode_image(image, policy)
    if isinstance(image, str):
        if image.startswith("data:"):
            return reencode_data_url(image, policy)
        return encode_image(decode_rgb(read_bytes(image)), policy)
    sha = getattr(image, "sha256", None)
    if isinstance(sha, str) and callable(getattr(image, "load", None)):  # an ImageRef: its file digest names it
        return encode_image(image.load(), policy, digest="file:" + sha)
    if isinstance(image, SupportsDataURL):
        return reencode_data_url(image.data_url(), policy)
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
                         max_side: int | None = DEFAULT_REQUEST_MAX_SIDE) -> list[dict[str, Any]]:
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
    return payload_digest(url)


def decode_data_url(url: str) -> Image.Image:
    return decode_rgb(read_bytes(url))


def _image_url(part: dict[str, Any]) -> str:
    if part.get("type") != "image_url":
        return ""
    iu = part.get("image_url")
    return (iu.get("url", "") if isinstance(iu, dict) else str(iu or ""))


def encode_images(messages: list[dict[str, Any]], policy: ImagePolicy) -> list[dict[str, Any]]:
    """A copy of ``messages`` whose ``data:`` images follow ``policy`` (size cap, format, quality);
    other parts and other URLs are kept as they are. Each image is encoded once per process
    (``arr_core.data.images.reencode_data_url``), so both orders of a pair and every retry reuse it."""
    out = []
    for m in messages:
        content = m.get("content")
        if not isinstance(content, list):
            out.append(m)
            continue
        parts = []
        for part in content:
            url = _image_url(part)
            if url.startswith("data:"):
                new = reencode_data_url(url, policy)
                if new is not url:
                    part = image_part(new)
            parts.append(part)
        out.append({**m, "content": parts})
    return out


def downscale_images(messages: list[dict[str, Any]], max_side: int) -> list[dict[str, Any]]:
    """``encode_images`` with a size cap only, lossless (PNG)."""
    return encode_images(messages, ImagePolicy(max_side=max_side, fmt="png"))


def count_images(messages: list[dict[str, Any]]) -> int:
    """Number of image parts in ``messages``."""
    return sum(1 for m in messages if isinstance(m.get("content"), list)
               for p in m["content"] if p.get("type") == "image_url")


def request_chars(messages: list[dict[str, Any]]) -> int:
    """Characters of the message content (image URLs and text): within a few hundred bytes of the
    JSON request body for image requests."""
    n = 0
    for m in messages:
        content = m.get("content")
        if isinstance(content, str):
            n += len(content)
            continue
        for p in content or []:
            n += len(_image_url(p)) if p.get("type") == "image_url" else len(p.get("text", ""))
    return n


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

