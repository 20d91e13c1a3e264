"""No-reference image quality of CT slices, as medical physicists measure it.

Measured on the images alone, with no clean reference:

- noise magnitude: :func:`noise_sd` (a global noise level in uniform soft
  tissue) or :func:`roi_noise_sd` in user ROIs;
- noise texture: the noise power spectrum, :func:`nps_2d`, :func:`radial_nps`
  and :func:`nps_frequencies` (peak and mean frequency, cycles/mm);
- sharpness: :func:`find_edges` at the air/body boundary, :func:`edge_spread`,
  :func:`edge_width` (10-90 %) and :func:`mtf50`;
- what a denoiser removed (BEFORE - AFTER): :func:`residual_sd` and
  :func:`residual_structure`.

:mod:`denoise.quality.measure` puts them together: :func:`plan` finds where
to measure on one image, :func:`measure` measures any image of the same
geometry there, so before and after are compared on the same regions and
edges. Every function here is pure (arrays in, numbers out).
"""

from denoise.quality.edges import EdgeSet, edge_spread, edge_width, find_edges, mtf50
from denoise.quality.measure import (
    CHANGE_KEYS,
    MEASURE_KEYS,
    RESIDUAL_KEYS,
    Layout,
    Quality,
    change,
    mean_measurement,
    measure,
    neighbour_nps,
    neighbour_rois,
    plan,
    residual,
)
from denoise.quality.noise_level import (
    SOFT_TISSUE_HU,
    NoUniformRegion,
    noise_sd,
    roi_noise_sd,
    soft_tissue_centres,
)
from denoise.quality.nps import detrend, nps_2d, nps_frequencies, nps_variance, radial_nps, uniform_rois
from denoise.quality.residual import residual_sd, residual_structure

__all__ = [
    "CHANGE_KEYS", "MEASURE_KEYS", "RESIDUAL_KEYS", "SOFT_TISSUE_HU", "EdgeSet", "Layout", "NoUniformRegion",
    "Quality", "change", "detrend", "edge_spread", "edge_width", "find_edges", "mean_measurement", "measure",
    "mtf50", "neighbour_nps", "neighbour_rois", "noise_sd", "nps_2d", "nps_frequencies", "nps_variance", "plan",
    "radial_nps", "residual", "residual_sd", "residual_structure", "roi_noise_sd", "soft_tissue_centres",
    "uniform_rois",
]
