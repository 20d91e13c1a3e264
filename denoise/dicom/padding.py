"""Pixel padding: stored values that mark "no image here" (outside the
reconstruction circle, a cropped or masked area) and must stay exactly so.

The header declares padding with PixelPaddingValue (0028,0120), in stored
units, optionally with PixelPaddingRangeLimit (0028,0121): every stored value
between the two, inclusive, is padding (PS3.3 C.7.5.1.1.2). A derived image
keeps the input's padding pixel for pixel, and no other pixel may take a
padding value, or a viewer would blank it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset


@dataclass(frozen=True)
class Padding:
    """Where a file's padding is and what it holds."""

    mask: np.ndarray  # (frames, rows, cols) bool: True where the input is padding
    values: np.ndarray  # the input's stored values at ``mask`` (1-D, in mask order)
    low: int  # padding stored values run from low to high, inclusive
    high: int


def padding_range(ds: Dataset) -> tuple[int, int] | None:
    """(low, high) stored values that are padding, or None when none is declared.

    A value written with the wrong sign for PixelRepresentation (e.g. 63536 in
    a signed image) is read as the two's complement the pixels hold.
    """
    value = ds.get("PixelPaddingValue")
    if value is None or value == "":
        return None
    limit = ds.get("PixelPaddingRangeLimit")
    values = [int(value)] + ([int(limit)] if limit not in (None, "") else [])
    bits = int(ds.get("BitsAllocated", 16) or 16)
    if int(ds.get("PixelRepresentation", 0) or 0) == 1:
        values = [v - (1 << bits) if v >= 1 << (bits - 1) else v for v in values]
    return min(values), max(values)


def find_padding(ds: Dataset, stored: np.ndarray) -> Padding | None:
    """The padding of ``stored`` ((frames, rows, cols) stored values of ``ds``), or None."""
    limits = padding_range(ds)
    if limits is None:
        return None
    low, high = limits
    mask = (stored >= low) & (stored <= high)
    return Padding(mask=mask, values=stored[mask], low=low, high=high)


def keep_padding(stored: np.ndarray, padding: Padding | None, lo: int, hi: int) -> np.ndarray:
    """``stored`` with the input's padding put back and every other pixel
    moved off the padding range to the nearest allowed value (``lo``..``hi``:
    the range BitsStored allows). Works in place and returns ``stored``."""
    if padding is None:
        return stored
    if padding.mask.shape != stored.shape:
        raise ValueError(f"padding mask {padding.mask.shape} does not match the image {stored.shape}")
    inside = (stored >= padding.low) & (stored <= padding.high) & ~padding.mask
    if inside.any():
        below, above = padding.low - 1, padding.high + 1
        values = stored[inside].astype(np.int64)
        go_down = ((values - below) <= (above - values)) if below >= lo else np.zeros(values.shape, bool)
        if above > hi:
            go_down[:] = True
        if below < lo and above > hi:
            raise ValueError("the padding range covers every stored value: no image value is left")
        stored[inside] = np.where(go_down, below, above)
    stored[padding.mask] = padding.values
    return stored
