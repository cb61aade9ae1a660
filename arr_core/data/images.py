"""Reading and checking images from paths, ``http(s)://`` URLs and ``data:`` URLs, and encoding them
for VLM requests (``ImagePolicy``: size cap, format, quality; each image encoded once per process)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import os
import stat
import threading
import time
import urllib.request
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from PIL import Image, UnidentifiedImageError

DEFAULT_MAX_IMAGE_SIDE = 4096
_URL_TIMEOUT_S = 30.0
MAX_IMAGE_BYTES = 64 * 2**20  # a remote or local image larger than this is refused before it is read


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
                data = resp.read(MAX_IMAGE_BYTES + 1)  # bounded: a huge or endless stream is cut, not read
        except OSError as e:
            raise ImageReadError(f"could not fetch {uri} ({e})") from None
        if len(data) > MAX_IMAGE_BYTES:
            raise ImageReadError(f"{uri} is larger than {MAX_IMAGE_BYTES // 2**20} MiB")
        return data
    # os.open/os.read: a third of the CPU of a buffered open() for small files (bulk import reads every
    # image). O_NONBLOCK: a FIFO named as an image opens without waiting for a writer, and is refused.
    try:
        fd = os.open(uri, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise ImageReadError(f"image file not found: {uri}") from None
    except IsADirectoryError:
        raise ImageReadError(f"image path is not a file: {uri}") from None
    too_big = ImageReadError(f"image file {uri} is larger than {MAX_IMAGE_BYTES // 2**20} MiB")
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ImageReadError(f"image path is not a file: {uri}")
        if st.st_size > MAX_IMAGE_BYTES:
            raise too_big
        chunks, n = [], 0
        while chunk := os.read(fd, max(st.st_size + 1 - n, 1 << 16)):
            chunks.append(chunk)
            n += len(chunk)
            if n > MAX_IMAGE_BYTES:  # it grew after the fstat
                raise too_big
    finally:
        os.close(fd)
    return b"".join(chunks)


def inspect_image(data: bytes, *, max_side: int = DEFAULT_MAX_IMAGE_SIDE) -> ImageInfo:
    """Check the size limit from the header (before any pixel is decoded: a 20000² PNG would take
    gigabytes), then decode fully (catches truncation) and report the original mode."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            mode = im.mode
            w, h = im.size
            if max(w, h) > max_side:
                raise ImageReadError(f"image is {w}x{h}, larger than the limit of {max_side} px per side "
                                     f"(raise --max-image-side to allow it)")
            im.load()  # forces a full decode: truncated files fail here
    except Image.DecompressionBombError as e:
        raise ImageReadError(f"image refused as a decompression bomb ({e})") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise ImageReadError(f"unreadable or truncated image ({e.__class__.__name__}: {e})") from None
    except ValueError as e:
        if isinstance(e, ImageReadError):
            raise
        raise ImageReadError(f"unreadable or truncated image ({e.__class__.__name__}: {e})") from None
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


# --------------------------------------------------------------------------- request encoding
#
# What the VLM client sends: images downscaled to ``max_side`` with a Lanczos filter and encoded as
# PNG, JPEG or WebP, each (image content, policy) encoded once per process. A 1024² photo is ~3 MB of
# base64 as PNG and ~0.3 MB as JPEG at quality 90; PNG encoding costs ~0.2–0.6 s of CPU, JPEG ~5 ms.

IMAGE_FORMATS = ("auto", "png", "jpeg", "webp")
DEFAULT_REQUEST_MAX_SIDE = 1024  # Qwen-VL's recommended pixel budget is about 1024² per image
AUTO_PNG_MAX_SIDE = 256  # "auto": images this small stay lossless PNG (they are small anyway)
_MIME = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
_PIL_FORMAT = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}


@dataclass(frozen=True)
class ImagePolicy:
    """How images are encoded for a VLM request.

    max_side: downscale (Lanczos) so the longer side is at most this; None keeps the size.
    fmt: ``png`` (lossless), ``jpeg``, ``webp`` or ``auto`` (PNG up to ``AUTO_PNG_MAX_SIDE`` px on the
    longer side, JPEG above it; a JPEG/WebP source that already fits is sent as it is, never
    recompressed). quality: JPEG/WebP quality (1–95).
    """

    max_side: int | None = DEFAULT_REQUEST_MAX_SIDE
    fmt: str = "auto"
    quality: int = 90

    def __post_init__(self) -> None:
        if self.fmt not in IMAGE_FORMATS:
            raise ValueError(f"image format must be one of {', '.join(IMAGE_FORMATS)}, got {self.fmt!r}")
        if self.max_side is not None and (not isinstance(self.max_side, int) or self.max_side < 16):
            raise ValueError(f"max_side must be an integer >= 16 or None, got {self.max_side!r}")
        if not isinstance(self.quality, int) or not 1 <= self.quality <= 95:
            raise ValueError(f"quality must be an integer in 1..95, got {self.quality!r}")

    def output_format(self, size: tuple[int, int]) -> str:
        """The format an image of ``size`` (after downscaling) is encoded in."""
        if self.fmt != "auto":
            return self.fmt
        return "png" if max(size) <= AUTO_PNG_MAX_SIDE else "jpeg"

    def target_size(self, size: tuple[int, int]) -> tuple[int, int]:
        w, h = size
        if self.max_side is None or max(w, h) <= self.max_side:
            return w, h
        scale = self.max_side / max(w, h)
        return max(1, round(w * scale)), max(1, round(h * scale))

    def label(self) -> str:
        """A short string for cache keys and logs."""
        q = f",q{self.quality}" if self.fmt != "png" else ""
        return f"{self.fmt},max_side={self.max_side}{q}"


class _BoundedCache:
    """An LRU of data URLs bounded by total characters (thread-safe)."""

    def __init__(self, max_chars: int) -> None:
        self.max_chars = max_chars
        self._d: OrderedDict[Any, str] = OrderedDict()
        self._chars = 0
        self._lock = threading.Lock()

    def get(self, key: Any) -> str | None:
        with self._lock:
            v = self._d.get(key)
            if v is not None:
                self._d.move_to_end(key)
            return v

    def put(self, key: Any, value: str) -> None:
        with self._lock:
            old = self._d.pop(key, None)
            if old is not None:
                self._chars -= len(old)
            self._d[key] = value
            self._chars += len(value)
            while self._chars > self.max_chars and len(self._d) > 1:
                _, v = self._d.popitem(last=False)
                self._chars -= len(v)

    def clear(self) -> None:
        with self._lock:
            self._d.clear()
            self._chars = 0


@dataclass
class EncodeStats:
    """Process-wide counters of request image encoding (for benchmarks and stats)."""

    encoded: int = 0  # images actually encoded
    reused: int = 0  # served from the encoded-bytes cache (other order, retry, another request)
    passed_through: int = 0  # data URLs sent as they came (already fit the policy)
    encode_s: float = 0.0  # CPU-bound seconds spent resizing and encoding
    bytes_out: int = 0  # data-URL characters produced by encoding


ENCODE_STATS = EncodeStats()
# (content digest, policy) → data URL; data-URL payload digest → transcoded data URL
_ENCODED = _BoundedCache(256 * 2**20)
# payload digest of a URL this process produced → (weak reference to the source image, content digest),
# so a client whose policy differs re-encodes from the original pixels, not from a lossy copy
_SOURCES: OrderedDict[str, tuple[weakref.ref, str]] = OrderedDict()
_SOURCES_MAX = 16384
_SOURCES_LOCK = threading.Lock()


def payload_digest(url: str) -> str:
    """sha256 of a data URL's payload (the part after the comma): the image's identity in cache keys.
    Any other URL is identified by the whole URL (every http URL used to share the empty payload's key)."""
    if not url.startswith("data:"):
        return "url-sha256:" + hashlib.sha256(url.encode("utf-8", "replace")).hexdigest()
    _, _, payload = url.partition(",")
    return "sha256:" + hashlib.sha256(payload.encode("ascii", "replace")).hexdigest()


def image_digest(image: Image.Image) -> str:
    """Content digest of decoded pixels (mode, size and bytes)."""
    h = hashlib.sha256(f"{image.mode}:{image.width}x{image.height}:".encode())
    h.update(image.tobytes())
    return "px:" + h.hexdigest()


def _encode(im: Image.Image, fmt: str, quality: int) -> str:
    buf = io.BytesIO()
    if fmt == "png":
        im.save(buf, format="PNG")
    elif fmt == "jpeg":
        im.save(buf, format="JPEG", quality=quality)
    else:
        im.save(buf, format="WEBP", quality=quality, method=0)  # method 0: ~5x faster, a few % larger
    return f"data:{_MIME[fmt]};base64,{base64.b64encode(buf.getvalue()).decode('ascii')}"


def encode_image(image: Image.Image, policy: ImagePolicy, *, digest: str | None = None) -> str:
    """The data URL of ``image`` under ``policy``, encoded once per (content, policy) per process.

    ``digest``: the image's content digest when the caller knows it (an ``ImageRef``'s file sha256),
    else the pixels are hashed (~3 ms for 1024²).
    """
    digest = digest or image_digest(image)
    key = (digest, policy)
    url = _ENCODED.get(key)
    if url is not None:
        ENCODE_STATS.reused += 1
        return url
    t0 = time.perf_counter()
    im = image.convert("RGB") if image.mode != "RGB" else image
    size = policy.target_size(im.size)
    if size != im.size:
        # reducing_gap: a cheap integer box reduction first, then Lanczos over at most 2x (same look)
        im = im.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    url = _encode(im, policy.output_format(size), policy.quality)
    ENCODE_STATS.encoded += 1
    ENCODE_STATS.encode_s += time.perf_counter() - t0
    ENCODE_STATS.bytes_out += len(url)
    _ENCODED.put(key, url)
    _remember_source(url, image, digest)
    return url


def _remember_source(url: str, image: Image.Image, digest: str) -> None:
    with _SOURCES_LOCK:
        _SOURCES[payload_digest(url)] = (weakref.ref(image), digest)
        while len(_SOURCES) > _SOURCES_MAX:
            _SOURCES.popitem(last=False)


def _source_of(pd: str) -> tuple[Image.Image, str] | None:
    with _SOURCES_LOCK:
        entry = _SOURCES.get(pd)
    if entry is None:
        return None
    im = entry[0]()
    return (im, entry[1]) if im is not None else None


def data_url_format(url: str) -> str | None:
    """png | jpeg | webp from a data URL's media type (None for others)."""
    head = url[5:url.find(",")] if url.startswith("data:") else ""
    mime = head.split(";", 1)[0].lower()
    return {"image/png": "png", "image/jpeg": "jpeg", "image/jpg": "jpeg", "image/webp": "webp"}.get(mime)


def reencode_data_url(url: str, policy: ImagePolicy) -> str:
    """``url`` (a ``data:`` image) as ``policy`` wants it: from the original pixels when this process
    encoded the URL, else decoded; returned unchanged when it already fits (right size, and the
    format asked for, or for ``auto`` a JPEG/WebP). Encoded results are cached by payload digest."""
    pd = payload_digest(url)
    key = (pd, policy)
    done = _ENCODED.get(key)
    if done is not None:
        ENCODE_STATS.reused += 1
        return done
    src = _source_of(pd)
    if src is not None:
        out = encode_image(src[0], policy, digest=src[1])
    else:
        fmt = data_url_format(url)
        with Image.open(io.BytesIO(read_bytes(url))) as probe:
            size = probe.size
        fits = policy.target_size(size) == size and (
            fmt == policy.output_format(size) or (policy.fmt == "auto" and fmt in ("jpeg", "webp")))
        if fits:
            ENCODE_STATS.passed_through += 1
            out = url
        else:
            im = decode_rgb(read_bytes(url))
            out = encode_image(im, policy, digest=pd)
    _ENCODED.put(key, out)
    return out


def clear_encode_caches() -> None:
    """Forget every encoded image (tests and benchmarks that measure cold encoding)."""
    _ENCODED.clear()
    with _SOURCES_LOCK:
        _SOURCES.clear()
