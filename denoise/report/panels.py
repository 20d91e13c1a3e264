"""Side-by-side comparison panels with titles and an optional zoomed inset,
and a metadata-free PNG writer."""

from __future__ import annotations

import os
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from denoise.atomic import atomic_path
from denoise.quality.nps import box_sums
from denoise.report.display import to_display

MARK = np.array([255, 80, 0], dtype=np.uint8)  # orange: box and inset frame
GAP = 4  # pixels between tiles
PAD = 2  # pixels around a text line


@lru_cache(maxsize=1)
def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=11)


def _text_width(text: str) -> int:
    return int(np.ceil(_font().getlength(text))) if text else 0


def _line_height() -> int:
    """Fixed line height, so every frame of a GIF has the same layout."""
    return int(_font().getbbox("Agjy|()")[3]) + 2 * PAD


def _zoom_inset(rgb: np.ndarray, grey: np.ndarray, box: tuple[int, int, int, int], zoom: int) -> None:
    """Mark ``box`` in place and paste it, enlarged, in the opposite corner."""
    r, c, h, w = box
    rows, cols = grey.shape
    z = max(1, min(zoom, rows // (2 * h), cols // (2 * w)))
    inset = np.repeat(np.repeat(grey[r:r + h, c:c + w], z, axis=0), z, axis=1)
    ih, iw = inset.shape
    top = 0 if r + h / 2 >= rows / 2 else rows - ih
    left = 0 if c + w / 2 >= cols / 2 else cols - iw
    rgb[top:top + ih, left:left + iw] = inset[..., None]
    for (y, x, hh, ww) in ((top, left, ih, iw), (r, c, h, w)):  # frame of inset, then box
        rgb[y, x:x + ww] = MARK
        rgb[y + hh - 1, x:x + ww] = MARK
        rgb[y:y + hh, x] = MARK
        rgb[y:y + hh, x + ww - 1] = MARK


def panel(tiles: list[tuple], window: tuple[float, float],
          zoom_box: tuple[int, int, int, int] | None = None, zoom: int = 2,
          header: str | None = None) -> np.ndarray:
    """RGB uint8 image: HU tiles side by side under their titles, optionally
    an enlarged inset of ``zoom_box`` (row, col, height, width) in each tile
    and a header line on top. A tile is ``(title, image)`` shown in
    ``window``, or ``(title, image, window)`` with its own (a residual about
    0 HU). Only the caller's strings are drawn."""
    if not tiles:
        raise ValueError("panel needs at least one tile")
    shapes = {np.shape(tile[1]) for tile in tiles}
    if len(shapes) != 1:
        raise ValueError(f"panel tiles must all have one shape, got {sorted(shapes)}")
    shape = shapes.pop()
    if len(shape) != 2:
        raise ValueError(f"panel tiles must be 2-D slices, got shape {shape}")
    rows, cols = shape
    if zoom_box is not None:
        r, c, h, w = (int(v) for v in zoom_box)
        if h < 1 or w < 1 or r < 0 or c < 0 or r + h > rows or c + w > cols:
            raise ValueError(f"zoom box {tuple(zoom_box)} does not fit a {rows}x{cols} tile")
        zoom_box = (r, c, h, w)
    if zoom < 1:
        raise ValueError(f"zoom must be >= 1, got {zoom}")

    line = _line_height()
    widths = [max(cols, _text_width(tile[0]) + 2 * PAD) for tile in tiles]
    lefts = np.concatenate([[0], np.cumsum(np.add(widths, GAP))[:-1]]).astype(int)
    width = max(int(lefts[-1]) + widths[-1], _text_width(header or "") + 2 * PAD)
    top = line if header else 0
    canvas = Image.new("L", (width, top + line + rows), 0)
    draw = ImageDraw.Draw(canvas)
    if header:
        draw.text((PAD, PAD), header, fill=255, font=_font())
    for tile, left in zip(tiles, lefts, strict=True):
        draw.text((int(left) + PAD, top + PAD), tile[0], fill=255, font=_font())
    grey = np.array(canvas)
    shown = [to_display(tile[1], tile[2] if len(tile) > 2 else window) for tile in tiles]
    for img, left in zip(shown, lefts, strict=True):
        grey[-rows:, left:left + cols] = img
    rgb = np.repeat(grey[..., None], 3, axis=2)
    if zoom_box is not None:
        for img, left in zip(shown, lefts, strict=True):
            _zoom_inset(rgb[-rows:, left:left + cols], img, zoom_box, zoom)
    return rgb


def pick_zoom_box(hu: np.ndarray, size: int, body_hu: float = -500.0) -> tuple[int, int, int, int]:
    """The ``size`` square with the most HU variance (structure) lying inside
    the body (HU above ``body_hu``); first such box on ties, so deterministic."""
    hu = np.asarray(hu, dtype=np.float64)
    if hu.ndim != 2:
        raise ValueError(f"pick_zoom_box needs a 2-D slice, got shape {hu.shape}")
    size = int(min(size, *hu.shape))
    if size < 1:
        raise ValueError("zoom box size must be >= 1")
    values = np.clip(hu, -1000.0, 2000.0)  # padding and metal must not dominate
    n = size * size
    mean = box_sums(values, size, size) / n
    var = np.maximum(box_sums(values ** 2, size, size) / n - mean ** 2, 0.0)
    inside = box_sums((hu > body_hu).astype(np.float64), size, size) / n
    score = np.where(inside >= inside.max() - 1e-9, var, -1.0)  # fully inside if possible
    r, c = np.unravel_index(int(np.argmax(score)), score.shape)
    return int(r), int(c), size, size


def save_png(image: np.ndarray, path: str | os.PathLike) -> None:
    """Write a uint8 grey or RGB image as PNG atomically, with no text or
    metadata chunks (only IHDR, IDAT, IEND)."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
        raise ValueError(f"save_png needs a uint8 (H, W) or (H, W, 3) image, got {image.dtype} {image.shape}")
    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")
