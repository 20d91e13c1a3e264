"""What a denoiser removed: the residual ("method noise") BEFORE - AFTER.

A denoiser should remove noise, not anatomy. The residual of a good one looks
like noise; one that blurs puts edges into it. :func:`residual_structure`
says how much: the rank correlation between the residual's local energy and
the local gradient of the image, over the body.

References
----------
.. [1] A. Buades, B. Coll, J.-M. Morel, "A review of image denoising
   algorithms, with a new one", Multiscale Model. Simul. 4(2):490-530 (2005):
   method noise.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

SIGMA_PX = 2.0  # scale of the local energy and of the gradient


def _check(before, after, mask):
    before, after = np.asarray(before, dtype=np.float64), np.asarray(after, dtype=np.float64)
    if before.shape != after.shape or before.ndim != 2:
        raise ValueError(f"before and after must be 2-D slices of one shape, got {before.shape} and {after.shape}")
    if mask is None:
        mask = np.ones(before.shape, dtype=bool)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != before.shape or np.count_nonzero(mask) < 2:
        raise ValueError("residual needs a mask of the image's shape selecting at least 2 pixels")
    return before, after, mask


def residual_sd(before: np.ndarray, after: np.ndarray, *, mask: np.ndarray | None = None) -> float:
    """Standard deviation (HU) of ``before - after`` over ``mask`` (default: all pixels).

    Parameters
    ----------
    before, after : (H, W) arrays, HU
    mask : (H, W) bool array, optional
        E.g. :func:`denoise.body.body_mask` of ``before``.

    Returns
    -------
    float
    """
    before, after, mask = _check(before, after, mask)
    return float(np.std((before - after)[mask], ddof=1))


def residual_structure(before: np.ndarray, after: np.ndarray, *, mask: np.ndarray | None = None,
                       sigma_px: float = SIGMA_PX) -> float:
    """How much anatomy the residual ``before - after`` holds, in [0, 1].

    Parameters
    ----------
    before, after : (H, W) arrays, HU
    mask : (H, W) bool array, optional
        Pixels to correlate over (default all), e.g. the body.
    sigma_px : float, optional
        Gaussian scale of the local energy and of the gradient.

    Returns
    -------
    float
        Spearman rank correlation, over ``mask``, between the residual's local
        energy (its square smoothed by a Gaussian of ``sigma_px``) and the
        gradient magnitude of ``before`` at the same scale, clipped below at
        0. Pure noise gives about 0: its energy does not follow the edges. A
        residual that is a blurred copy of the edges gives close to 1. A
        residual of zero gives 0.
    """
    before, after, mask = _check(before, after, mask)
    r = before - after
    energy = ndimage.gaussian_filter(r * r, sigma_px)[mask]
    gradient = ndimage.gaussian_gradient_magnitude(before, sigma_px)[mask]
    if np.ptp(energy) == 0 or np.ptp(gradient) == 0:
        return 0.0
    rho = np.corrcoef(_ranks(energy), _ranks(gradient))[0, 1]  # Spearman's rho
    return float(np.clip(rho, 0.0, 1.0)) if np.isfinite(rho) else 0.0


def _ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1 (ties broken by position: both inputs are smoothed, continuous
    values). scipy.stats.rankdata would do; importing scipy.stats costs 0.3 s."""
    out = np.empty(values.size)
    out[np.argsort(values, kind="stable")] = np.arange(values.size)
    return out
