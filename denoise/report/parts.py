"""Pieces shared by the report's sections: number formatting, the display
window, path scrubbing and reading a slice."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DEFAULT_DISPLAY_WINDOW = (-160.0, 240.0)  # soft tissue


class Scrub:
    """Replace known absolute paths in free text (notes, error messages) by
    placeholders, so no source location reaches the report."""

    def __init__(self):
        self.pairs: list[tuple[str, str]] = []

    def add(self, path, label: str) -> None:
        if not path:
            return
        for form in {str(Path(path)), str(Path(path).absolute()), str(Path(path).resolve())}:
            if len(form) > 1:
                self.pairs.append((form, label))
        self.pairs.sort(key=lambda p: -len(p[0]))

    def __call__(self, text) -> str:
        text = str(text)
        for path, label in self.pairs:
            text = text.replace(path, label)
        return text


def num(value, fmt: str, unit: str = "") -> str:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return "n/a"
    if math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return format(value, fmt) + unit


def window_text(window) -> str:
    return f"{float(window[0]):g}..{float(window[1]):g} HU"


def check_window(window) -> tuple[float, float]:
    if window is None:
        return DEFAULT_DISPLAY_WINDOW
    try:
        low, high = (float(v) for v in window)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"display window must be two numbers (low, high) in HU, got {window!r}") from exc
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(f"display window needs finite low < high, got ({low:g}, {high:g})")
    return low, high


def spread(n: int, k: int) -> list[int]:
    """``k`` indices spread through ``range(n)``, away from the very ends."""
    k = min(k, n)
    return sorted({min(n - 1, int((i + 0.5) * n / k)) for i in range(k)})


def first_frame(ct) -> np.ndarray:
    return read_slice(ct.path).hu


@dataclass(frozen=True)
class Slice:
    """A file's first frame in HU, its pixel spacing (row, column mm; None where the file has
    none) and what the file says was done to it (DerivationDescription; None for an original)."""

    hu: np.ndarray
    spacing_mm: tuple[float, float] | None
    derivation: str | None


def read_slice(path) -> Slice:
    from denoise.dicom import load_ct
    from denoise.dicom.geometry import frame_geometry

    image = load_ct(path)
    derivation = image.dataset.get("DerivationDescription")
    return Slice(image.hu[0], frame_geometry(image.dataset).pixel_spacing, str(derivation) if derivation else None)


def shown_spacing(spacing_mm, before: tuple[int, ...], after: tuple[int, ...]) -> tuple[float, float] | None:
    """The pixel spacing of a slice of shape ``before`` once shrunk to ``after`` (its pixels further apart)."""
    if spacing_mm is None:
        return None
    return float(spacing_mm[0]) * before[0] / after[0], float(spacing_mm[1]) * before[1] / after[1]


def scale_text(spacing_mm, cols: int) -> str:
    """The caption's words for the scale bar :func:`denoise.report.panel` draws on tiles ``cols`` pixels wide."""
    from denoise.report.panels import scale_bar

    if spacing_mm is None:
        return "No scale bar (no pixel spacing recorded)."
    bar = scale_bar(spacing_mm[1], cols)
    return f"White bar: {bar[0]:g} mm (pixels {spacing_mm[1]:.3g} mm apart as shown)." if bar else ""
