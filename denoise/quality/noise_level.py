"""Noise magnitude in HU, measured on the image alone.

:func:`noise_sd` is a global noise level in the style of Christianson et
al.: the standard deviation over small uniform windows of water or soft
tissue, then the mode of their histogram. :func:`roi_noise_sd` is the plain
standard deviation in ROIs the user names.

References
----------
.. [1] O. Christianson, J. Winslow, J. Frush, E. Samei, "Automated technique
   to measure noise in clinical CT examinations", AJR 205:W93-W99 (2015).
.. [2] AAPM Report 233 (TG-233), "Performance evaluation of computed
   tomography systems" (2019), section on noise magnitude.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

# A window's mean: water (0 HU) and soft tissue, enhanced organs included; fat (about -100 HU) and bone are out.
# Wider than Christianson et al.'s 0..100 HU, which they apply pixel by pixel: a mean has noise of its own, and a
# water phantom at 0 HU must not sit on the bound.
SOFT_TISSUE_HU = (-50.0, 150.0)
# No pixel of the smoothed slice lies further than this from its window's mean: half the width of Christianson
# et al.'s 0..100 HU, centred on the window's own tissue instead of fixed, so fat, air, bone or contrast in the
# window excludes it whatever the tissue's own HU.
SPREAD_HU = 50.0
WINDOW_MM = 6.0  # side of the local-SD window
MIN_WINDOWS = 50  # fewer qualifying window centres: no uniform region


class NoUniformRegion(ValueError):
    """The image has no uniform region to measure in (one-line reason)."""


def window_pixels(pixel_spacing: tuple[float, float], mm: float, *, minimum: int = 5) -> tuple[int, int]:
    """(rows, cols) of an odd-sided window about ``mm`` wide, at least ``minimum`` pixels."""
    out = []
    for spacing in pixel_spacing:
        n = max(minimum, int(round(mm / float(spacing))))
        out.append(n + 1 - n % 2)
    return out[0], out[1]


def soft_tissue_centres(hu: np.ndarray, pixel_spacing: tuple[float, float], *,
                        hu_range: tuple[float, float] = SOFT_TISSUE_HU, spread_hu: float = SPREAD_HU,
                        window_mm: float = WINDOW_MM) -> np.ndarray:
    """Centres of the ``window_mm`` windows of uniform water or soft tissue.

    A window qualifies when its mean lies in ``hu_range`` (which tissue it
    is), every pixel of the slice smoothed by a Gaussian of a quarter window
    lies within ``spread_hu`` of that mean (no other tissue in it; smoothed,
    so the noise itself does not decide) and it lies wholly inside the image.

    Parameters
    ----------
    hu : (H, W) array
        One slice in HU.
    pixel_spacing : (row, col) mm
    hu_range : (low, high), optional
        Range of a window's mean.
    spread_hu : float, optional
        Largest distance of a smoothed pixel from its window's mean.
    window_mm : float, optional
        Side of the window.

    Returns
    -------
    (H, W) bool array

    Notes
    -----
    Both tests are relative to the window's own mean, never a fixed range
    per pixel: one keeps only the windows whose noise happens to stay in
    range, so it clips the very distribution :func:`noise_sd` measures, most
    where the tissue lies near a bound (a water phantom at 0 HU had none or
    a biased few). The mean and the SD of a window of Gaussian noise are
    nearly independent, so selecting on the mean leaves the SDs unbiased;
    the spread test clips only noise whose smoothed excursions approach
    ``spread_hu`` (strongly correlated noise of SD above about 50 HU).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> water = rng.normal(0, 20, (64, 64))  # a water phantom at 0 HU
    >>> int(soft_tissue_centres(water, (0.7, 0.7)).sum()) == (64 - 8) ** 2  # every window inside the image
    True
    """
    hu = np.asarray(hu, dtype=np.float64)
    size = window_pixels(pixel_spacing, window_mm)
    inside = np.zeros(hu.shape, dtype=bool)
    inside[size[0] // 2: hu.shape[0] - size[0] // 2, size[1] // 2: hu.shape[1] - size[1] // 2] = True
    mean = ndimage.uniform_filter(hu, size=size, mode="reflect")
    smooth = ndimage.gaussian_filter(hu, sigma=(size[0] / 4, size[1] / 4))
    highest = ndimage.maximum_filter(smooth, size=size, mode="reflect")
    lowest = ndimage.minimum_filter(smooth, size=size, mode="reflect")
    return (inside & (mean >= hu_range[0]) & (mean <= hu_range[1])
            & (highest - mean <= spread_hu) & (mean - lowest <= spread_hu))


def tissue_mask(hu: np.ndarray, sigma_px: tuple[float, float], *,
                hu_range: tuple[float, float] = SOFT_TISSUE_HU) -> np.ndarray:
    """Pixels of the slice smoothed by a Gaussian of ``sigma_px`` that lie in ``hu_range``."""
    smooth = ndimage.gaussian_filter(np.asarray(hu, dtype=np.float64), sigma=sigma_px)
    return (smooth >= hu_range[0]) & (smooth <= hu_range[1])


def local_sd(hu: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Sample standard deviation (ddof 1) over every ``size`` window, centred."""
    hu = np.asarray(hu, dtype=np.float64)
    n = size[0] * size[1]
    mean = ndimage.uniform_filter(hu, size=size, mode="reflect")
    mean_sq = ndimage.uniform_filter(hu * hu, size=size, mode="reflect")
    return np.sqrt(np.maximum(mean_sq - mean * mean, 0.0) * (n / (n - 1)))


def histogram_mode(values: np.ndarray) -> float:
    """Mode of a positive sample: a 150-bin histogram over 0..3 x median,
    smoothed by a Gaussian of 2 bins, peak refined by a parabola."""
    values = np.asarray(values, dtype=np.float64)
    top = 3.0 * float(np.median(values))
    if not top > 0:
        return 0.0
    counts, edges = np.histogram(values, bins=150, range=(0.0, top))
    smooth = ndimage.gaussian_filter1d(counts.astype(np.float64), 2.0, mode="constant")
    k = int(np.argmax(smooth))
    width = edges[1] - edges[0]
    shift = 0.0
    if 0 < k < len(smooth) - 1:
        a, b, c = smooth[k - 1], smooth[k], smooth[k + 1]
        denom = a - 2 * b + c
        shift = 0.5 * (a - c) / denom if denom < 0 else 0.0
    return float(edges[0] + (k + 0.5 + shift) * width)


def noise_sd(hu: np.ndarray, pixel_spacing: tuple[float, float], *, centres: np.ndarray | None = None,
             hu_range: tuple[float, float] = SOFT_TISSUE_HU, window_mm: float = WINDOW_MM,
             min_windows: int = MIN_WINDOWS) -> float:
    """Global noise level in HU: the mode of local SDs in uniform water or soft tissue.

    Parameters
    ----------
    hu : (H, W) array
        One slice in HU.
    pixel_spacing : (row, col) mm
    centres : (H, W) bool array, optional
        Window centres to use; default :func:`soft_tissue_centres` of ``hu``.
        Pass the centres found on one image to measure another image (its
        denoised version) in the same places.
    hu_range, window_mm : optional
        As in :func:`soft_tissue_centres`.
    min_windows : int, optional
        Fewer qualifying centres than this raise :class:`NoUniformRegion`.

    Returns
    -------
    float
        Noise SD in HU.

    Notes
    -----
    The local SD of white noise over ``n`` pixels follows a chi distribution
    with ``n - 1`` degrees of freedom, whose mode lies at
    ``sigma * sqrt((n - 2) / (n - 1))``; the histogram mode is divided by
    that factor, so white noise of ``sigma`` gives ``sigma``. For CT's
    correlated noise the small window removes some low-frequency noise power,
    as in the published method.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> round(noise_sd(40 + rng.normal(0, 20, (128, 128)), (0.7, 0.7)) / 20, 1)
    1.0
    """
    hu = np.asarray(hu, dtype=np.float64)
    if hu.ndim != 2:
        raise ValueError(f"noise_sd needs one 2-D slice, got shape {hu.shape}")
    size = window_pixels(pixel_spacing, window_mm)
    if centres is None:
        centres = soft_tissue_centres(hu, pixel_spacing, hu_range=hu_range, window_mm=window_mm)
    count = int(np.count_nonzero(centres))
    if count < min_windows:
        raise NoUniformRegion(f"no uniform soft-tissue region (window mean {hu_range[0]:g}..{hu_range[1]:g} HU, "
                              f"{window_mm:g} mm windows: {count} found, {min_windows} needed)")
    n = size[0] * size[1]
    return histogram_mode(local_sd(hu, size)[centres]) * float(np.sqrt((n - 1) / (n - 2)))


def check_rois(rois, shape: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    """ROIs as (x, y, w, h) ints (x column and y row of the top-left pixel),
    each inside an image of ``shape``; raises ValueError naming a bad one."""
    out = []
    for roi in rois:
        try:
            x, y, w, h = (int(v) for v in roi)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"ROI {roi!r} is not four integers x,y,w,h") from exc
        if w < 2 or h < 2 or x < 0 or y < 0 or x + w > shape[1] or y + h > shape[0]:
            raise ValueError(f"ROI {x},{y},{w},{h} (x,y,w,h) does not fit a {shape[0]}x{shape[1]} image")
        out.append((x, y, w, h))
    if not out:
        raise ValueError("no ROI given")
    return out


def roi_noise_sd(hu: np.ndarray, rois) -> float:
    """Pooled standard deviation in HU over user ROIs.

    Parameters
    ----------
    hu : (H, W) array
    rois : sequence of (x, y, w, h)
        Pixel ROIs: x is the column and y the row of the top-left pixel.

    Returns
    -------
    float
        ``sqrt(sum((n_i - 1) var_i) / sum(n_i - 1))``: each ROI about its own
        mean, so a different mean per ROI (two organs) adds nothing.
    """
    hu = np.asarray(hu, dtype=np.float64)
    num = den = 0.0
    for x, y, w, h in check_rois(rois, hu.shape):
        patch = hu[y:y + h, x:x + w]
        num += float(np.var(patch, ddof=1)) * (patch.size - 1)
        den += patch.size - 1
    return float(np.sqrt(num / den))
