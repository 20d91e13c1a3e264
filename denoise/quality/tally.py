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

    def __bool__(self) -> bool:
        return bool(self.parts)


def compare_tallies(before: Tally, after: Tally | None, *, min_neighbour_rois: int = 0) -> dict:
    """The JSON-ready comparison of two tallies (or one): ``before`` (and
    ``after``) measurement objects, the residual numbers, ``change``, the NPS
    method and the 1-D NPS curves."""
    b, method = before.pooled(min_neighbour_rois=min_neighbour_rois)
    out = {"nps_method": method, "before": b.summary()}
    curves = {"before": b.nps_curve()}
    if after is not None:
        a, _ = after.pooled(min_neighbour_rois=min_neighbour_rois)  # its neighbour ROIs are before's
        out["after"] = a.summary()
        out.update(after.residual_mean())
        out["change"] = change(out["before"], out["after"])
        curves["after"] = a.nps_curve()
    out["nps_curve"] = _curves(curves)
    return out


def _curves(curves: dict) -> dict | None:
    """{"freq_mm": [...], "before": [...], "after": [...]} on one frequency grid, or None."""
    shown = {k: v for k, v in curves.items() if v is not None}
    if not shown:
        return None
    grid = next(iter(shown.values()))["freq_mm"]
    out = {"freq_mm": grid}
    for key, curve in shown.items():
        out[key] = curve["nps_hu2mm2"] if curve["freq_mm"] == grid else None
    return out
