"""Where and how to measure one CT slice, and how to compare two.

:func:`plan` looks at one slice (the original, BEFORE) and fixes where every
quantity is measured: the soft-tissue windows of the noise level (or the
user's ROIs), the NPS ROIs and the edge profiles. :func:`measure` then
measures any slice of that geometry in those places, so the original and its
denoised version are compared on the same tissue and the same edges.
:class:`Quality` holds what a slice gave (or several, pooled with
:meth:`Quality.pool`); :meth:`Quality.summary` turns it into the numbers a
report shows. :func:`neighbour_rois` finds noise-only ROIs in the difference
of two neighbouring slices.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from denoise.body import body_mask
from denoise.quality.edges import EdgeSet, edge_spread, edge_width, find_edges, mtf50
from denoise.quality.noise_level import (
    MIN_WINDOWS,
    SOFT_TISSUE_HU,
    WINDOW_MM,
    NoUniformRegion,
    check_rois,
    noise_sd,
    roi_noise_sd,
    soft_tissue_centres,
)
from denoise.quality.nps import (
    NPS_TISSUE_HU,
    STRUCTURE_FACTOR,
    detrend,
    nps_2d,
    nps_frequencies,
    radial_nps,
    roi_side,
    uniform_rois,
)
from denoise.quality.residual import residual_sd, residual_structure

MEASURE_KEYS = ("noise_sd_hu", "nps_peak_freq_mm", "nps_mean_freq_mm", "edge_width_mm")
CHANGE_KEYS = ("noise_reduction_pct", "nps_peak_shift_mm", "nps_mean_shift_mm", "edge_width_change_pct",
               "mtf50_change_pct")
RESIDUAL_KEYS = ("residual_sd_hu", "residual_structure")


@dataclass(frozen=True)
class Layout:
    """Where to measure, found on one slice (see :func:`plan`)."""

    shape: tuple[int, int]
    pixel_spacing: tuple[float, float] | None
    noise_centres: np.ndarray | None  # (H, W) bool: soft-tissue window centres
    user_rois: tuple[tuple[int, int, int, int], ...]  # (x, y, w, h); override the automatic regions
    nps_corners: tuple[tuple[int, int], ...]  # (x, y) top-left of each uniform NPS ROI
    nps_size: int
    noise_sd_hu: float | None  # this slice's own noise level
    edges: EdgeSet | None
    body: np.ndarray  # (H, W) bool: the residual's pixels
    notes: tuple[str, ...] = ()  # why a quantity cannot be measured here


@dataclass
class Quality:
    """What one slice (or several pooled) measured; None where it could not."""

    noise_sd_hu: float | None = None
    nps: np.ndarray | None = None  # 2-D NPS averaged over nps_count ROIs
    nps_count: int = 0
    pixel_spacing: tuple[float, float] | None = None
    esf: np.ndarray | None = None  # mean edge spread over edge_count profiles
    offsets_mm: np.ndarray | None = None
    edge_count: int = 0
    noise_values: list[float] = field(default_factory=list)  # per slice, for pooling

    def slice_noise(self) -> list[float]:
        """The per-slice noise SDs behind ``noise_sd_hu`` (itself, for one slice)."""
        if self.noise_values:
            return list(self.noise_values)
        return [] if self.noise_sd_hu is None else [self.noise_sd_hu]

    def summary(self) -> dict:
        """The measurement object: :data:`MEASURE_KEYS`, ``mtf50_per_mm`` and
        the counts behind them; None for what could not be measured."""
        out = dict.fromkeys(MEASURE_KEYS)
        out["mtf50_per_mm"] = None
        out["noise_sd_hu"] = self.noise_sd_hu
        if self.nps is not None and self.pixel_spacing is not None:
            try:
                out["nps_peak_freq_mm"], out["nps_mean_freq_mm"] = nps_frequencies(
                    *radial_nps(self.nps, self.pixel_spacing))
            except ValueError:
                pass
        if self.esf is not None:
            for key, fn in (("edge_width_mm", edge_width), ("mtf50_per_mm", mtf50)):
                try:
                    out[key] = fn(self.offsets_mm, self.esf)
                except ValueError:
                    pass
        out.update(nps_rois=self.nps_count, edge_profiles=self.edge_count)
        return out

    def nps_curve(self) -> dict | None:
        """The 1-D NPS as JSON-ready lists, or None."""
        if self.nps is None or self.pixel_spacing is None:
            return None
        freq, values = radial_nps(self.nps, self.pixel_spacing)
        return {"freq_mm": [round(float(f), 5) for f in freq], "nps_hu2mm2": [float(v) for v in values]}

    def esf_curve(self) -> dict | None:
        """The mean edge spread function (HU) as JSON-ready lists, or None."""
        if self.esf is None:
            return None
        return {"offset_mm": [round(float(t), 4) for t in self.offsets_mm], "esf_hu": [float(v) for v in self.esf]}

    @staticmethod
    def pool(parts: list[Quality]) -> Quality:
        """Several slices as one. The ESF is averaged weighted by profile
        counts (its offsets are in mm, the same for every slice); the NPS
        weighted by ROI counts over the slices of the most common geometry
        (ROI size and pixel spacing: NPS of other grids do not add); the noise
        SD is the mean of the slices' values."""
        out = Quality()
        out.noise_values = [v for p in parts for v in p.slice_noise()]
        out.noise_sd_hu = float(np.mean(out.noise_values)) if out.noise_values else None
        groups: dict = {}
        for p in parts:
            if p.nps is not None and p.nps_count:
                groups.setdefault((p.nps.shape, p.pixel_spacing), []).append(p)
        if groups:
            chosen = max(groups.values(), key=lambda g: sum(p.nps_count for p in g))
            out.nps_count = sum(p.nps_count for p in chosen)
            out.nps = sum(p.nps * p.nps_count for p in chosen) / out.nps_count
            out.pixel_spacing = chosen[0].pixel_spacing
        edged = [p for p in parts if p.esf is not None and p.edge_count]
        if edged:
            out.edge_count = sum(p.edge_count for p in edged)
            out.esf = sum(p.esf * p.edge_count for p in edged) / out.edge_count
            out.offsets_mm = edged[0].offsets_mm
        return out


def _user_nps_corners(rois, size_cap: int) -> tuple[tuple[tuple[int, int], ...], int]:
    """NPS ROIs inside user ROIs: the largest square (at most ``size_cap``)
    that every ROI holds, one per ROI at its top-left corner."""
    side = min(size_cap, *(min(w, h) for _, _, w, h in rois))
    if side < 8:
        return (), side
    return tuple((x, y) for x, y, _, _ in rois), side


def plan(hu: np.ndarray, pixel_spacing: tuple[float, float] | None, *, rois=None,
         nps_size: int | None = None, hu_range: tuple[float, float] = SOFT_TISSUE_HU,
         window_mm: float = WINDOW_MM) -> Layout:
    """Find where to measure on one slice.

    Parameters
    ----------
    hu : (H, W) array, HU
    pixel_spacing : (row, col) mm, or None
        Without it, frequencies and widths in mm cannot be had (notes say so);
        the noise level is then measured over windows of 9 pixels.
    rois : sequence of (x, y, w, h), optional
        User ROIs: the noise SD and the NPS are measured in them instead of
        the automatic soft-tissue regions.
    nps_size : int, optional
        Side of the automatic NPS ROIs in pixels; default about 20 mm
        (:func:`denoise.quality.nps.roi_side`).
    hu_range, window_mm : optional
        Soft-tissue range and noise window (see :func:`noise_sd`).

    Returns
    -------
    Layout
        With a note for each quantity that cannot be measured on this slice.
    """
    hu = np.asarray(hu, dtype=np.float64)
    if hu.ndim != 2:
        raise ValueError(f"plan needs one 2-D slice, got shape {hu.shape}")
    notes: list[str] = []
    spacing = tuple(float(v) for v in pixel_spacing) if pixel_spacing is not None else None
    if spacing is None:
        notes.append("no PixelSpacing: NPS frequencies and edge width (mm) not measured")
    grid = spacing or (window_mm / 9.0, window_mm / 9.0)
    size = nps_size or roi_side(grid)
    centres, user, corners, gnl = None, (), (), None
    if rois:
        user = tuple(check_rois(rois, hu.shape))
        corners, size = _user_nps_corners(user, size)
        gnl = roi_noise_sd(hu, user)
        if not corners:
            notes.append("NPS: the ROIs are smaller than 8x8 pixels")
    else:
        centres = soft_tissue_centres(hu, grid, hu_range=hu_range, window_mm=window_mm)
        try:
            gnl = noise_sd(hu, grid, centres=centres, window_mm=window_mm)
        except NoUniformRegion as exc:
            notes.append(f"noise SD: {exc}")
        if min(hu.shape) < size:
            notes.append(f"NPS: image {hu.shape[0]}x{hu.shape[1]} is smaller than one {size}x{size} ROI")
        elif spacing is not None:
            corners = tuple(uniform_rois(hu, spacing, size=size, noise_sd=gnl, window_mm=window_mm))
            if not corners:
                notes.append(f"NPS: no uniform {size}x{size} ROI of tissue "
                             f"({NPS_TISSUE_HU[0]:g}..{NPS_TISSUE_HU[1]:g} HU) in this slice")
    edges = find_edges(hu, spacing) if spacing is not None else None
    if spacing is not None and edges is None:
        notes.append("edge width: no high-contrast air/body edge with flat sides found")
    return Layout(shape=hu.shape, pixel_spacing=spacing, noise_centres=centres, user_rois=user,
                  nps_corners=corners, nps_size=size, noise_sd_hu=gnl,
                  edges=edges, body=body_mask(hu), notes=tuple(notes))


def crop_rois(hu: np.ndarray, corners, size: int) -> np.ndarray:
    """(M, size, size) stack of the squares at ``corners`` (x, y)."""
    return np.stack([hu[y:y + size, x:x + size] for x, y in corners]) if corners else np.empty((0, size, size))


def measure(hu: np.ndarray, layout: Layout, *, window_mm: float = WINDOW_MM) -> Quality:
    """Measure a slice where ``layout`` says (found on this slice or on the
    one it is compared with); raises ValueError if the shapes differ."""
    hu = np.asarray(hu, dtype=np.float64)
    if hu.shape != layout.shape:
        raise ValueError(f"image {hu.shape} does not match the layout's {layout.shape}")
    q = Quality(pixel_spacing=layout.pixel_spacing)
    if layout.user_rois:
        q.noise_sd_hu = roi_noise_sd(hu, layout.user_rois)
    elif layout.noise_centres is not None and np.count_nonzero(layout.noise_centres) >= MIN_WINDOWS:
        grid = layout.pixel_spacing or (window_mm / 9.0, window_mm / 9.0)
        q.noise_sd_hu = noise_sd(hu, grid, centres=layout.noise_centres, window_mm=window_mm)
    if layout.nps_corners and layout.pixel_spacing is not None:
        q.nps = nps_2d(crop_rois(hu, layout.nps_corners, layout.nps_size), layout.pixel_spacing)
        q.nps_count = len(layout.nps_corners)
    if layout.edges is not None:
        q.esf, q.offsets_mm, q.edge_count = edge_spread(hu, layout.edges), layout.edges.offsets_mm, layout.edges.count
    return q


def neighbour_rois(first: np.ndarray, second: np.ndarray, a: Layout, b: Layout) -> tuple[tuple[int, int], ...]:
    """NPS ROIs in the difference of two neighbouring slices where it holds only noise.

    Neighbouring slices carry nearly the same anatomy and independent noise,
    so ``(first - second) / sqrt(2)`` is noise of the slices' own NPS where
    the anatomy is the same: the little structure a uniform ROI still holds
    cancels. Of the uniform ROIs the two slices share, one qualifies when the
    detrended SD of that difference is at most :data:`STRUCTURE_FACTOR` x
    the slices' noise level (root mean square of the two), since anatomy that
    differs only adds to it. Over tissue that is not uniform the difference
    is not noise-only (cardiac motion, vessels that move between slices):
    measured on chest CT, it moved the NPS peak to 0.1 cycles/mm. Neighbours
    whose noise is correlated (overlapping reconstructions) give a smaller
    difference: the NPS shape holds, its magnitude is low.
    """
    if (a.shape != b.shape or a.pixel_spacing != b.pixel_spacing or a.nps_size != b.nps_size or a.user_rois
            or a.noise_sd_hu is None or b.noise_sd_hu is None):
        return ()
    common = tuple(sorted(set(a.nps_corners) & set(b.nps_corners)))
    if not common:
        return ()
    diff = (np.asarray(first, np.float64) - np.asarray(second, np.float64)) / math.sqrt(2)
    sd = detrend(crop_rois(diff, common, a.nps_size)).std(axis=(1, 2), ddof=1)
    limit = STRUCTURE_FACTOR * math.sqrt((a.noise_sd_hu ** 2 + b.noise_sd_hu ** 2) / 2)
    return tuple(c for c, v in zip(common, sd, strict=True) if v <= limit)


def neighbour_nps(first: np.ndarray, second: np.ndarray, corners, layout: Layout) -> Quality:
    """The NPS of ``(first - second) / sqrt(2)`` in ``corners`` (from :func:`neighbour_rois`)."""
    q = Quality(pixel_spacing=layout.pixel_spacing)
    if corners and layout.pixel_spacing is not None:
        diff = (np.asarray(first, np.float64) - np.asarray(second, np.float64)) / math.sqrt(2)
        q.nps = nps_2d(crop_rois(diff, corners, layout.nps_size), layout.pixel_spacing)
        q.nps_count = len(corners)
    return q


def residual(before: np.ndarray, after: np.ndarray, layout: Layout) -> dict:
    """``residual_sd_hu`` and ``residual_structure`` of BEFORE - AFTER over
    the body found on BEFORE (all pixels when it has none)."""
    mask = layout.body if np.count_nonzero(layout.body) >= 64 else None
    if np.size(before) < 2:
        return dict.fromkeys(RESIDUAL_KEYS)
    return {"residual_sd_hu": residual_sd(before, after, mask=mask),
            "residual_structure": residual_structure(before, after, mask=mask)}


def _ratio_pct(after, before, *, minus: bool) -> float | None:
    if after is None or before is None or not before > 0:
        return None
    return 100.0 * ((1.0 - after / before) if minus else (after / before - 1.0))


def change(before: dict, after: dict) -> dict:
    """Before -> after in a physicist's terms: noise reduction %, NPS peak and
    mean frequency shift (cycles/mm, negative = coarser texture), edge width
    change % (positive = blurrier) and MTF50 change %; None where either side
    is missing."""
    def shift(key):
        a, b = after.get(key), before.get(key)
        return None if a is None or b is None else a - b

    return {
        "noise_reduction_pct": _ratio_pct(after.get("noise_sd_hu"), before.get("noise_sd_hu"), minus=True),
        "nps_peak_shift_mm": shift("nps_peak_freq_mm"),
        "nps_mean_shift_mm": shift("nps_mean_freq_mm"),
        "edge_width_change_pct": _ratio_pct(after.get("edge_width_mm"), before.get("edge_width_mm"), minus=False),
        "mtf50_change_pct": _ratio_pct(after.get("mtf50_per_mm"), before.get("mtf50_per_mm"), minus=False),
    }


def mean_measurement(rows: list[dict], keys=None) -> dict:
    """Mean of each key over the rows that have a number for it (None if none do)."""
    keys = keys or sorted({k for r in rows for k in r})
    out = {}
    for key in keys:
        values = [r[key] for r in rows if isinstance(r.get(key), int | float) and math.isfinite(r[key])]
        out[key] = float(np.mean(values)) if values else None
    return out
