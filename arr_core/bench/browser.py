"""Headless Chromium helpers for checking rendered reports: screenshot and DOM dump.

Uses the system ``chromium`` (Debian package) or ``$ARR_CHROMIUM``; ``scripts/ensure_chromium.sh``
installs it. Runs with ``--no-sandbox`` because CI containers run as root, and with a throwaway
profile folder so that parallel runs do not share state.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    """Path of a Chromium binary, or None."""
    env = os.environ.get("ARR_CHROMIUM")
    if env:
        return shutil.which(env) or (env if Path(env).is_file() else None)
    return next((p for p in (shutil.which(c) for c in _CANDIDATES) if p), None)


def _run(args: list[str], timeout_s: float) -> subprocess.CompletedProcess:
    binary = find_chromium()
    if binary is None:
        raise FileNotFoundError("no chromium found: run scripts/ensure_chromium.sh or set ARR_CHROMIUM")
    with tempfile.TemporaryDirectory(prefix="arr-chromium-") as profile:
        cmd = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
               "--hide-scrollbars", "--no-first-run", "--disable-extensions",
               f"--user-data-dir={profile}", *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)


def screenshot(html_path: str | Path, png_path: str | Path, *, width: int = 1280, height: int = 2000,
               timeout_s: float = 60.0) -> Path:
    """Render ``html_path`` and save a PNG of the top ``width``×``height`` pixels."""
    html, png = Path(html_path).resolve(), Path(png_path).resolve()
    png.parent.mkdir(parents=True, exist_ok=True)
    png.unlink(missing_ok=True)
    proc = _run([f"--window-size={width},{height}", f"--screenshot={png}", html.as_uri()], timeout_s)
    if not png.exists():
        raise RuntimeError(f"chromium wrote no screenshot (exit {proc.returncode}): {proc.stderr[-800:]}")
    return png


def dump_dom(html_path: str | Path, *, timeout_s: float = 60.0) -> str:
    """The DOM after load, serialised by Chromium (``--dump-dom``)."""
    proc = _run(["--dump-dom", Path(html_path).resolve().as_uri()], timeout_s)
    if proc.returncode != 0 or not proc.stdout.strip():
        raise RuntimeError(f"chromium --dump-dom failed (exit {proc.returncode}): {proc.stderr[-800:]}")
    return proc.stdout


def pixel_stats(png_path: str | Path) -> dict[str, float]:
    """Blank-page check numbers: grey-level variance and the fraction of non-background pixels."""
    a = np.asarray(Image.open(png_path).convert("L"), dtype=float)
    vals, counts = np.unique(a.astype(np.uint8), return_counts=True)
    background = vals[counts.argmax()]
    return {"variance": float(a.var()), "non_background": float((a.astype(np.uint8) != background).mean()),
            "height": float(a.shape[0]), "width": float(a.shape[1])}
