"""Image-quality metrics in a stated HU window. Pure functions.

Every metric works on HU images clipped to the metric window ``(low, high)``
and mapped to ``[0, 1]``, so ``data_range`` is always 1.0 and is reported with
the numbers. PSNR and SSIM come from ``skimage.metrics``. An optional boolean
``mask`` (e.g. :func:`body_mask`) restricts the metrics to the patient.
"""

from __future__ import annotations

import numpy as np
from skimage.metrics import mean_squared_error, peak_signal_noise_ratio, structural_similarity

from denoise.body import body_mask

__all__ = ["DATA_RANGE", "DEFAULT_WINDOW", "body_mask", "compare", "mse", "psnr", "rmse_hu", "ssim", "to_unit"]

DEFAULT_WINDOW = (-1000.0, 1000.0)
DATA_RANGE = 1.0


def to_unit(hu: np.ndarray, *, window: tuple[float, float] = DEFAULT_WINDOW) -> np.ndarray:
    """Clip HU to ``window`` and map it to [0, 1] (float64)."""
    low, high = _check_window(window)
    return (np.clip(np.asarray(hu, dtype=np.float64), low, high) - low) / (high - low)


def _check_window(window) -> tuple[float, float]:
    low, high = float(window[0]), float(window[1])
    if not high > low:
        raise ValueError(f"metric window needs low < high, got {window}")
    return low, high


def _prepare(reference, test, window, mask):
    ref, tst = np.asarray(reference), np.asarray(test)
    if ref.shape != tst.shape:
        raise ValueError(f"reference and test shapes differ: {ref.shape} vs {tst.shape}")
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != ref.shape:
            raise ValueError(f"mask shape {mask.shape} does not match images {ref.shape}")
        if not mask.any():
            raise ValueError("mask selects no pixels")
    return to_unit(ref, window=window), to_unit(tst, window=window), mask


def mse(reference, test, *, window=DEFAULT_WINDOW, mask=None) -> float:
    """Mean squared error of the windowed images in [0, 1] units (L2)."""
    ref, tst, mask = _prepare(reference, test, window, mask)
    if mask is not None:
        ref, tst = ref[mask], tst[mask]
    return float(mean_squared_error(ref, tst))


def rmse_hu(reference, test, *, window=DEFAULT_WINDOW, mask=None) -> float:
    """Root mean squared error in HU of the window-clipped images."""
    low, high = _check_window(window)
    return float(np.sqrt(mse(reference, test, window=window, mask=mask)) * (high - low))


def psnr(reference, test, *, window=DEFAULT_WINDOW, mask=None) -> float:
    """Peak signal-to-noise ratio in dB, data_range 1 (the whole window)."""
    ref, tst, mask = _prepare(reference, test, window, mask)
    if mask is not None:
        ref, tst = ref[mask], tst[mask]
    with np.errstate(divide="ignore"):
        return float(peak_signal_noise_ratio(ref, tst, data_range=DATA_RANGE))


def ssim(reference, test, *, window=DEFAULT_WINDOW, mask=None) -> float:
    """Mean structural similarity (skimage defaults: 7x7 uniform window),
    data_range 1; for a stack (frames, H, W) the mean over frames; with a
    mask, the mean of the SSIM map over the masked pixels."""
    ref, tst, mask = _prepare(reference, test, window, mask)
    if ref.ndim == 2:
        ref, tst = ref[None], tst[None]
        mask = mask[None] if mask is not None else None
    if ref.ndim != 3 or min(ref.shape[1:]) < 7:
        raise ValueError(f"ssim needs 2-D images (or a stack) of at least 7x7, got {ref.shape}")
    values, weights = [], []
    for k in range(ref.shape[0]):
        score, smap = structural_similarity(ref[k], tst[k], data_range=DATA_RANGE, full=True)
        if mask is None:
            values.append(score)
            weights.append(1.0)
        elif mask[k].any():
            values.append(float(smap[mask[k]].mean()))
            weights.append(float(mask[k].sum()))
    return float(np.average(values, weights=weights))


def compare(reference, test, *, window=DEFAULT_WINDOW, mask=None) -> dict:
    """All metrics at once, with the window and data range they used."""
    low, high = _check_window(window)
    value = mse(reference, test, window=window, mask=mask)
    return {
        "mse": value,
        "rmse_hu": float(np.sqrt(value) * (high - low)),
        "psnr": psnr(reference, test, window=window, mask=mask),
        "ssim": ssim(reference, test, window=window, mask=mask),
        "window_hu": [low, high],
        "data_range": DATA_RANGE,
        "masked": mask is not None,
    }
