"""Reading and checking images from paths, ``http(s)://`` URLs and ``data:`` URLs."""

from __future__ import annotations

import base64
import binascii
import io
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

DEFAULT_MAX_IMAGE_SIDE = 4096
_URL_TIMEOUT_S = 30.0


class ImageReadError(ValueError):
    """An image could not be read; the message says why (missing, unreadable, truncated, too big)."""


@dataclass
class ImageInfo:
    data: bytes
    width: int
    height: int
    mode: str


def is_url(uri: str) -> bool:
    return uri.startswith(("http://", "https://", "data:"))


def read_bytes(uri: str) -> bytes:
    """Raw bytes of an image given as an absolute path, an ``http(s)://`` URL or a ``data:`` URL."""
    if uri.startswith("data:"):
        head, _, payload = uri.partition(",")
        if ";base64" not in head:
            raise ImageReadError("data URL is not base64-encoded")
        try:
            return base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError) as e:
            raise ImageReadError(f"data URL has invalid base64 ({e})") from None
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(uri, timeout=_URL_TIMEOUT_S) as resp:  # noqa: S310 (scheme checked)
                return resp.read()
        except OSError as e:
            raise ImageReadError(f"could not fetch {uri} ({e})") from None
    path = Path(uri)
    if not path.exists():
        raise ImageReadError(f"image file not found: {path}")
    if not path.is_file():
        raise ImageReadError(f"image path is not a file: {path}")
    return path.read_bytes()


def inspect_image(data: bytes, *, max_side: int = DEFAULT_MAX_IMAGE_SIDE) -> ImageInfo:
    """Decode fully (catches truncation), check the size limit, report the original mode."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            mode = im.mode
            im.load()  # forces a full decode: truncated files fail here
            w, h = im.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageReadError(f"unreadable or truncated image ({e.__class__.__name__}: {e})") from None
    if max(w, h) > max_side:
        raise ImageReadError(f"image is {w}x{h}, larger than the limit of {max_side} px per side "
                             f"(raise --max-image-side to allow it)")
    return ImageInfo(data=data, width=w, height=h, mode=mode)


def decode_rgb(data: bytes) -> Image.Image:
    """Decode to an RGB image (palette, grayscale, RGBA, CMYK … converted)."""
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        if im.mode == "RGB":
            return im.copy()
        if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
            rgba = im.convert("RGBA")
            bg = Image.new("RGB", rgba.size, (255, 255, 255))
            bg.paste(rgba, mask=rgba.split()[-1])
            return bg
        return im.convert("RGB")


def to_data_url(image: Image.Image, *, max_side: int | None = None, fmt: str = "PNG") -> str:
    """PNG data URL of an image, optionally downscaled so its longer side is at most ``max_side``."""
    im = image.convert("RGB") if image.mode != "RGB" else image
    if max_side is not None and max(im.size) > max_side:
        scale = max_side / max(im.size)
        im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))),
                       Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, format=fmt)
    mime = "image/png" if fmt.upper() == "PNG" else f"image/{fmt.lower()}"
    return f"data:{mime};base64,{base64.b64encode(buf.getvalue()).decode('ascii')}"
