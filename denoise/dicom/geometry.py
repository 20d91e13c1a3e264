"""Slice geometry from single-frame and Enhanced (multi-frame) CT headers.

Enhanced CT keeps orientation, position, spacing and rescale in functional
groups: a per-frame item overrides the shared one. :func:`functional_group`
is the one lookup for that rule.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset


@dataclass(frozen=True)
class Geometry:
    orientation: np.ndarray | None  # (6,) row and column direction cosines
    positions: list[np.ndarray | None]  # per frame (3,) ImagePositionPatient, mm
    pixel_spacing: tuple[float, float] | None  # (row, column) mm


def functional_group(ds: Dataset, frame: int, sequence: str) -> Dataset | None:
    """The first item of functional-group ``sequence`` for ``frame``: the
    per-frame item if present, else the shared one, else None."""
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame is not None and frame < len(per_frame):
        seq = per_frame[frame].get(sequence)
        if seq:
            return seq[0]
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared:
        seq = shared[0].get(sequence)
        if seq:
            return seq[0]
    return None


def is_enhanced(ds: Dataset) -> bool:
    return "PerFrameFunctionalGroupsSequence" in ds or "SharedFunctionalGroupsSequence" in ds


def _floats(value, n: int) -> np.ndarray | None:
    try:
        arr = np.asarray([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return arr if arr.shape == (n,) and np.all(np.isfinite(arr)) else None


def frame_geometry(ds: Dataset) -> Geometry:
    """Orientation, per-frame positions and pixel spacing (None where absent
    or malformed: geometry is optional for denoising, needed for ordering)."""
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    if not is_enhanced(ds):
        orient = _floats(ds.get("ImageOrientationPatient"), 6)
        pos = _floats(ds.get("ImagePositionPatient"), 3)
        spacing = _floats(ds.get("PixelSpacing"), 2)
        return Geometry(orient, [pos] * n_frames, _spacing(spacing))
    item = functional_group(ds, 0, "PlaneOrientationSequence")
    orient = _floats(item.get("ImageOrientationPatient"), 6) if item is not None else None
    positions = []
    for k in range(n_frames):
        item = functional_group(ds, k, "PlanePositionSequence")
        positions.append(_floats(item.get("ImagePositionPatient"), 3) if item is not None else None)
    item = functional_group(ds, 0, "PixelMeasuresSequence")
    spacing = _floats(item.get("PixelSpacing"), 2) if item is not None else None
    return Geometry(orient, positions, _spacing(spacing))


def _spacing(values: np.ndarray | None) -> tuple[float, float] | None:
    if values is None or np.any(values <= 0):
        return None
    return float(values[0]), float(values[1])


def slice_normal(orientation: np.ndarray) -> np.ndarray | None:
    """Unit normal (row cosine x column cosine), or None if degenerate."""
    normal = np.cross(orientation[:3], orientation[3:])
    norm = float(np.linalg.norm(normal))
    return normal / norm if norm > 1e-6 else None
