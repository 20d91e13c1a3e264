"""Side-by-side comparison panels: HU tiles under their titles, with an
optional zoomed inset, a mm scale bar and a grey-level bar stating each
tile's window, and a metadata-free PNG writer.

Text is drawn at a size that stays readable where the report shows the
picture: the page is :data:`DISPLAY_WIDTH` pixels wide and a wider picture is
scaled down to it, so the font grows with the picture's width (at least
:data:`MIN_TEXT_PX` pixels as displayed)."""

from __future__ import annotations

import math
import os
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from denoise.atomic import atomic_path
from denoise.quality.nps import box_sums
from denoise.report.display import to_display

MARK = np.array([255, 80, 0], dtype=np.uint8)  # orange: box and inset frame
DISPLAY_WIDTH = 1060  # pixels: the width of the report page's content (denoise.report.html_page)
MIN_TEXT_PX = 14  # the smallest text as displayed, in pixels
SCALE_BAR_MM = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0)  # the lengths a scale bar may have
SCALE_BAR_SHARE = 0.3  # at most this share of a tile's width


@lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """DejaVu Sans (shipped with matplotlib) at ``size`` pixels, so every machine draws the same text."""
    import matplotlib

    try:
        return ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"), size)
    except OSError:  # pragma: no cover - matplotlib without its fonts
        return ImageFont.load_default(size=size)


def text_size(width: int) -> int:
    """Font size (pixels in the picture) for a picture ``width`` pixels wide: at least
    :data:`MIN_TEXT_PX` once the page scales it down to :data:`DISPLAY_WIDTH`."""
    return max(MIN_TEXT_PX, math.ceil(MIN_TEXT_PX * width / DISPLAY_WIDTH))


def _text_width(text: str, size: int) -> int:
    return int(np.ceil(_font(size).getlength(text))) if text else 0


def _pad(size: int) -> int:
    return max(2, size // 6)


def _line_height(size: int) -> int:
    """Fixed line height, so every frame of a GIF has the same layout."""
    return int(_font(size).getbbox("Agjy|()")[3]) + 2 * _pad(size)


def scale_bar(spacing_mm: float, cols: int) -> tuple[float, int] | None:
    """The scale bar for a tile ``cols`` pixels wide whose pixels are ``spacing_mm`` apart:
    (length in mm, length in pixels), the longest of :data:`SCALE_BAR_MM` that takes at
    most :data:`SCALE_BAR_SHARE` of the width; None when no length fits (or no spacing)."""
    try:
        spacing = float(spacing_mm)
    except (TypeError, ValueError):
        return None
    if not (math.isfinite(spacing) and spacing > 0):
        return None
    fitting = [(mm, round(mm / spacing)) for mm in SCALE_BAR_MM if 4 <= round(mm / spacing) <= SCALE_BAR_SHARE * cols]
    return fitting[-1] if fitting else None


def window_labels(window: tuple[float, float]) -> tuple[str, str, str]:
    """The grey-level bar's labels: its low end, middle and high end (HU)."""
    low, high = float(window[0]), float(window[1])
    return f"{low:g}", f"{(low + high) / 2:g}", f"{high:g} HU"


def _inset_corner(box: tuple[int, int, int, int], rows: int, cols: int) -> tuple[bool, bool]:
    """(at the top, at the left) of the inset :func:`_zoom_inset` puts in the corner opposite ``box``."""
    r, c, h, w = box
    return not r + h / 2 < rows / 2, not c + w / 2 < cols / 2


def _zoom_inset(rgb: np.ndarray, grey: np.ndarray, box: tuple[int, int, int, int], zoom: int) -> None:
    """Mark ``box`` in place and paste it, enlarged, in the opposite corner."""
    r, c, h, w = box
    rows, cols = grey.shape
    z = max(1, min(zoom, rows // (2 * h), cols // (2 * w)))
    inset = np.repeat(np.repeat(grey[r:r + h, c:c + w], z, axis=0), z, axis=1)
    ih, iw = inset.shape
    at_top, at_left = _inset_corner(box, rows, cols)
    top = 0 if at_top else rows - ih
    left = 0 if at_left else cols - iw
    rgb[top:top + ih, left:left + iw] = inset[..., None]
    for (y, x, hh, ww) in ((top, left, ih, iw), (r, c, h, w)):  # frame of inset, then box
        rgb[y, x:x + ww] = MARK
        rgb[y + hh - 1, x:x + ww] = MARK
        rgb[y:y + hh, x] = MARK
        rgb[y:y + hh, x + ww - 1] = MARK


def _text(draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, size: int, **kw) -> None:
    draw.text(xy, text, fill=(255, 255, 255), font=_font(size), **kw)


def panel(tiles: list[tuple], window: tuple[float, float],
          zoom_box: tuple[int, int, int, int] | None = None, zoom: int = 2,
          header: str | None = None, *, spacing_mm: tuple[float, float] | None = None,
          grey_bars: bool = False, marks=()) -> np.ndarray:
    """RGB uint8 image: HU tiles side by side under their titles.

    Parameters
    ----------
    tiles : list of (title, image) or (title, image, window)
        HU slices of one shape; a tile without its own window is shown in
        ``window`` (one with its own: a residual about 0 HU).
    window : (low, high) HU
    zoom_box : (row, col, height, width), optional
        Marked on every tile and pasted, ``zoom`` times larger, in the
        opposite corner.
    header : str, optional
        A line of text above the titles.
    spacing_mm : (row, column) pixel spacing in mm, optional
        Draws a scale bar (:func:`scale_bar`) with its length in mm in a
        bottom corner of every tile (the one the inset leaves free; the
        length is left out on tiles too small for it).
    grey_bars : bool
        Draws under every tile a grey-level bar from black to white, labelled
        with the low end, middle and high end of that tile's window in HU (as
        wide as the tile, or as its labels where the tile is narrower).
    marks : sequence of (mask, rgb)
        Boolean (rows, cols) masks painted in their colour on every tile.

    Only the caller's strings are drawn. Text grows with the picture's width
    (:func:`text_size`).
    """
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
    windows = [tuple(tile[2]) if len(tile) > 2 else tuple(window) for tile in tiles]
    shown = [to_display(tile[1], w) for tile, w in zip(tiles, windows, strict=True)]  # checks every window
    labels = [window_labels(w) for w in windows]
    bar = scale_bar(spacing_mm[1], cols) if spacing_mm is not None else None

    size = text_size(len(tiles) * cols)
    for _ in range(3):  # titles wider than their tiles widen the picture, which shrinks it on the page
        pad, gap = _pad(size), max(4, (2 * size) // 3)  # room between one tile's labels and the next's
        widths = [max(cols, _text_width(tile[0], size) + 2 * pad,
                      (sum(_text_width(t, size) for t in label) + 4 * pad) if grey_bars else 0)
                  for tile, label in zip(tiles, labels, strict=True)]
        lefts = np.concatenate([[0], np.cumsum(np.add(widths, gap))[:-1]]).astype(int)
        width = max(int(lefts[-1]) + widths[-1], _text_width(header or "", size) + 2 * pad)
        if text_size(width) <= size:
            break
        size = text_size(width)
    line = _line_height(size)
    top = line if header else 0
    image_top = top + line
    bar_h = max(6, size // 2)
    height = image_top + rows + ((pad + bar_h + line) if grey_bars else 0)

    grey = np.zeros((height, width), dtype=np.uint8)
    for img, left, span in zip(shown, lefts, widths, strict=True):
        grey[image_top:image_top + rows, left:left + cols] = img
        if grey_bars:  # under the tile, or as wide as its labels need
            y = image_top + rows + pad
            grey[y:y + bar_h, left:left + span] = 128  # a frame, so both ends show on the black page
            ramp = np.rint(np.linspace(0.0, 255.0, max(span - 2, 1))).astype(np.uint8)
            grey[y + 1:y + bar_h - 1, left + 1:left + 1 + ramp.size] = ramp
    rgb = np.repeat(grey[..., None], 3, axis=2)
    for img, left in zip(shown, lefts, strict=True):
        view = rgb[image_top:image_top + rows, left:left + cols]
        if zoom_box is not None:
            _zoom_inset(view, img, zoom_box, zoom)
        for mask, colour in marks:
            view[np.asarray(mask, dtype=bool)] = colour

    canvas = Image.fromarray(rgb)
    draw = ImageDraw.Draw(canvas)
    if header:
        _text(draw, (pad, pad), header, size)
    for tile, label, left, span in zip(tiles, labels, lefts, widths, strict=True):
        left = int(left)
        _text(draw, (left + pad, top + pad), tile[0], size)
        if grey_bars:
            y = image_top + rows + pad + bar_h + pad
            low, mid, high = label
            _text(draw, (left, y), low, size)
            _text(draw, (left + span, y), high, size, anchor="ra")
            if sum(_text_width(t, size) for t in label) + 6 * pad <= span:
                _text(draw, (left + span / 2, y), mid, size, anchor="ma")
        if bar is not None:
            _scale_bar(draw, bar, left, image_top, rows, cols, size, zoom_box)
    return np.asarray(canvas)


def _scale_bar(draw: ImageDraw.ImageDraw, bar: tuple[float, int], left: int, top: int, rows: int, cols: int,
               size: int, zoom_box) -> None:
    """A white bar ``bar[1]`` pixels long, outlined in black, with its length in mm above it, in the
    bottom-left corner of the tile (bottom-right when the zoomed inset is there)."""
    mm, length = bar
    margin, thick = max(4, size // 2), max(3, size // 5)
    at_left = True
    if zoom_box is not None:
        inset_top, inset_left = _inset_corner(zoom_box, rows, cols)
        at_left = not (not inset_top and inset_left)
    x0 = left + margin if at_left else left + cols - margin - length
    y1 = top + rows - margin
    draw.rectangle((x0 - 1, y1 - thick - 1, x0 + length, y1 + 1), fill=(0, 0, 0))
    draw.rectangle((x0, y1 - thick, x0 + length - 1, y1), fill=(255, 255, 255))
    label = f"{mm:g} mm"
    width = _text_width(label, size)
    if width > cols / 2:  # a small tile: the bar alone, the caption gives its length
        return
    x = min(max(x0 + (length - width) / 2, left + 2), left + cols - width - 2)  # centred, inside the tile
    _text(draw, (x, y1 - thick - 2), label, size, anchor="ld", stroke_width=max(1, size // 8),
          stroke_fill=(0, 0, 0))


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
