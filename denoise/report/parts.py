"""Pieces shared by the report's sections: number formatting, the display
window, path scrubbing and reading a slice."""

from __future__ import annotations

import math
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
    from denoise.dicom import load_ct

    return load_ct(ct.path).hu[0]
