"""Pooling measurements over slices: one :class:`Tally` per image kind
(before, after, a baseline's output...), fed slice by slice, so a whole
series is never held in memory."""

from __future__ import annotations

import math

import numpy as np

from denoise.quality.measure import RESIDUAL_KEYS, Quality, change


class Tally:
    """Accumulates :class:`Quality` parts and residual numbers of one image kind."""

    def __init__(self):
        self.parts: list[Quality] = []
        self.residuals: list[dict] = []
        self.neighbour: list[Quality] = []

    def add(self, quality: Quality, residual: dict | None = None) -> None:
        # Keep only what pooling needs: a slice's masks and images are not held.
        self.parts.append(Quality.pool([quality]))
        if residual is not None:
            self.residuals.append(residual)

    def extend(self, other: Tally) -> None:
        """Add everything ``other`` holds."""
        self.parts += other.parts
        self.residuals += other.residuals
        self.neighbour += other.neighbour

    def add_neighbour(self, quality: Quality) -> None:
        """The NPS of one neighbour difference (see :func:`denoise.quality.neighbour_nps`)."""
        if quality.nps_count:
            self.neighbour.append(quality)

    def pooled(self, *, min_neighbour_rois: int = 0) -> tuple[Quality, str]:
        """All parts as one Quality, and how its NPS was had: from neighbour
        differences when they gave at least ``min_neighbour_rois`` ROIs (and
        any), else from the slices' own uniform ROIs."""
        pooled = Quality.pool(self.parts)
        method = "single slice"
        neighbour = Quality.pool(self.neighbour) if self.neighbour else None
        if neighbour is not None and neighbour.nps_count and neighbour.nps_count >= min_neighbour_rois:
            pooled.nps, pooled.nps_count, method = neighbour.nps, neighbour.nps_count, "neighbour difference"
        return pooled, method

    def residual_mean(self) -> dict:
        out = {}
        for key in RESIDUAL_KEYS:
            values = [r[key] for r in self.residuals if r.get(key) is not None and math.isfinite(r[key])]
            out[key] = float(np.mean(values)) if values else None
        return out


def compare_tallies(before: Tally, after: Tally | None, *, min_neighbour_rois: int = 0) -> dict:
    """The JSON-ready comparison of two tallies (or one): ``before`` (and
    ``after``) measurement objects, the residual numbers, ``change``, the NPS
    method, the 1-D NPS curves and the mean edge spread functions."""
    b, method = before.pooled(min_neighbour_rois=min_neighbour_rois)
    out = {"nps_method": method, "before": b.summary()}
    pooled = {"before": b}
    if after is not None:
        a, _ = after.pooled(min_neighbour_rois=min_neighbour_rois)  # its neighbour ROIs are before's
        out["after"] = a.summary()
        out.update(after.residual_mean())
        out["change"] = change(out["before"], out["after"])
        pooled["after"] = a
    out["nps_curve"] = _curves({k: q.nps_curve() for k, q in pooled.items()}, "freq_mm", "nps_hu2mm2")
    out["esf_curve"] = _curves({k: q.esf_curve() for k, q in pooled.items()}, "offset_mm", "esf_hu")
    return out


def _curves(curves: dict, axis: str, values: str) -> dict | None:
    """{axis: [...], "before": [...], "after": [...]} on one axis, or None;
    a curve on another axis (other pixel spacing) is None."""
    shown = {k: v for k, v in curves.items() if v is not None}
    if not shown:
        return None
    grid = next(iter(shown.values()))[axis]
    out = {axis: grid}
    for key, curve in shown.items():
        out[key] = curve[values] if curve[axis] == grid else None
    return out
