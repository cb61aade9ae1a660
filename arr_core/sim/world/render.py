"""Deterministic Pillow renderer for scenes, with the image-level defects as options."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from arr_core.sim.world.grammar import BACKGROUND, COLORS
from arr_core.sim.world.scene import Scene

SUPERSAMPLE = 4


def render(scene: Scene, size: int = 64, *, noise: float = 0.0, blur: float = 0.0,
           contrast: float = 1.0, seed: int = 0) -> Image.Image:
    """Render ``scene`` as an RGB image of ``size`` × ``size`` pixels (anti-aliased by 4× supersampling).

    ``blur``: Gaussian blur radius in output pixels; ``contrast``: 1 keeps colours, smaller values pull
    every pixel towards the background colour; ``noise``: standard deviation of additive Gaussian
    pixel noise as a fraction of 255, drawn from ``seed``. Equal arguments give equal pixels.
    """
    if size < 8:
        raise ValueError(f"size must be >= 8 pixels, got {size}")
    if noise < 0 or blur < 0 or not 0 < contrast <= 1.5:
        raise ValueError(f"need noise >= 0, blur >= 0, 0 < contrast <= 1.5; got {noise}, {blur}, {contrast}")
    big = size * SUPERSAMPLE
    img = Image.new("RGB", (big, big), BACKGROUND)
    draw = ImageDraw.Draw(img)
    for o in scene.objects:
        if o.color not in COLORS:
            raise ValueError(f"object colour {o.color!r} is not one of {list(COLORS)}")
        cx, cy, h = o.cx * big, o.cy * big, o.size * big / 2
        box = [cx - h, cy - h, cx + h, cy + h]
        fill = COLORS[o.color]
        if o.shape == "circle":
            draw.ellipse(box, fill=fill)
        elif o.shape == "square":
            draw.rectangle(box, fill=fill)
        elif o.shape == "triangle":
            draw.polygon([(cx, cy - h), (cx + h, cy + h), (cx - h, cy + h)], fill=fill)
        else:
            raise ValueError(f"object shape {o.shape!r} is unknown")
    img = img.resize((size, size), Image.Resampling.BOX)
    if blur > 0:
        img = img.filter(ImageFilter.GaussianBlur(radius=blur))
    if contrast == 1.0 and noise == 0.0:
        return img
    arr = np.asarray(img, dtype=np.float64)
    bg = np.asarray(BACKGROUND, dtype=np.float64)
    arr = bg + contrast * (arr - bg)
    if noise > 0:
        arr = arr + np.random.default_rng(seed).normal(0.0, noise * 255.0, arr.shape)
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "RGB")
