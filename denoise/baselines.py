"""Classical denoisers for one CT slice, all with the same interface.

Every baseline is a pure function ``f(hu, *, window=(-1000, 1000),
sigma_hu=None, **tuning) -> hu`` on one 2-D slice in HU (float32 in,
float32 HU out), so an evaluation can loop over :data:`BASELINES`.

Working scale
    The slice is mapped with the model's own affine window map
    (:class:`denoise.normalize.HUWindow`: ``low -> 0``, ``high -> 1``), then
    clipped to ``[-CLIP_MARGIN, 1 + CLIP_MARGIN]`` (-1500..1500 HU for the
    default window) for processing only. The margin is five times the largest
    tuned noise level, so noisy pixels of air, lung or bone near the window
    edges are denoised like any other pixel, while the scanner padding
    (-3024 HU) and metal do not put huge artificial edges into the image.
    Pixels whose *input* lay outside the margin get their input value back
    unchanged: they are outside the metric window (whose clipping maps them
    to the window edge either way) and the autoencoder also passes them
    through in its unclipped model space, so neither side gains from them.

Blind noise level
    With ``sigma_hu=None`` the noise level is estimated from the image
    itself (:func:`estimate_noise_hu`): the median absolute value of the
    finest diagonal Daubechies-2 wavelet detail divided by 0.6745 (Donoho's
    MAD estimator, as ``skimage.restoration.estimate_sigma``), taken only
    over pixels inside the body. The body restriction matters for CT: the
    flat padding outside the reconstruction circle is ~20 % of a slice and
    would pull the median towards zero. Every tuned parameter is a multiple
    of this sigma (in window units), so the same rule serves every noise
    level.

Tuning
    The constants below were chosen by ``benchmarks/tune_baselines.py``
    (grid search of each multiplier for the best mean PSNR over Gaussian
    noise of 25, 50 and 100 HU and simulated low dose at i0 = 1e5 on
    tuning slices of a training-split patient). One rule per method serves
    all noise conditions, since a blind method cannot know the condition.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import numpy as np
import pywt
from scipy import ndimage
from skimage.restoration import cycle_spin, denoise_nl_means, denoise_tv_chambolle
from skimage.restoration import denoise_wavelet as _wavelet_shrink

from denoise.metrics import body_mask
from denoise.normalize import HUWindow

DEFAULT_WINDOW = (-1000.0, 1000.0)
CLIP_MARGIN = 0.25  # window widths kept on either side of the window while processing

# --- tuned constants ---------------------------------------------------------
# nice -n 19 python benchmarks/tune_baselines.py --jobs 1 --out /tmp/tune_baselines.json
# (4 slices of the training patient ricord-chest/dicom, search on 192x192 crops; 7 min on one core).
# Mean PSNR (dB) on the full 512x512 slices, gauss25 / gauss50 / gauss100 / lowdose1e5 -> mean:
#   noisy    39.48 / 33.56 / 27.73 / 33.21 -> 33.49
#   nlm      42.93 / 39.79 / 36.64 / 37.69 -> 39.26   (0.3 s/slice)
#   tv       43.07 / 39.32 / 35.39 / 38.34 -> 39.03   (0.1 s)
#   wavelet  43.16 / 39.25 / 34.39 / 36.70 -> 38.37   (0.2 s)
#   bm3d     44.50 / 41.43 / 38.35 / 37.03 -> 40.33   (11 s)
NLM_H_FACTOR = 0.9        # h = factor * sigma (skimage fast mode, sigma passed too)
NLM_PATCH_SIZE = 5
NLM_PATCH_DISTANCE = 6
TV_WEIGHT_FACTOR = 0.7    # Chambolle weight = factor * sigma
WAVELET_METHOD = "BayesShrink"
WAVELET_NAME = "db2"
WAVELET_MODE = "soft"
WAVELET_SIGMA_FACTOR = 1.1892  # 2 ** 0.25
WAVELET_SHIFTS = 3        # cycle spinning over 0..shifts pixel shifts per axis
BM3D_SIGMA_FACTOR = 1.19  # sigma_psd = factor * sigma
# -----------------------------------------------------------------------------

# Orthonormal Daubechies-2 high-pass (decomposition) filter.
_DB2_HIGH = np.array(pywt.Wavelet("db2").dec_hi)
_MAD_TO_SIGMA = 0.6744897501960817  # median |N(0, 1)|


class BaselineUnavailable(ImportError):
    """An optional dependency of a baseline is not installed."""


def estimate_noise_hu(hu: np.ndarray, *, mask: np.ndarray | None = None) -> float:
    """Blind estimate of the noise standard deviation of a slice, in HU.

    Median absolute finest-scale diagonal db2 wavelet detail / 0.6745 (the
    estimator of ``skimage.restoration.estimate_sigma``, computed undecimated)
    over ``mask``; by default the body (:func:`denoise.metrics.body_mask`,
    eroded by 2 pixels so the filter never straddles the skin), or the whole
    slice when the body covers fewer than 256 pixels.

    For the ramp-filtered, spatially correlated noise of low-dose CT the
    estimate differs from the pixel standard deviation; the tuned multipliers
    absorb that.
    """
    hu = np.asarray(hu, dtype=np.float64)
    if hu.ndim != 2:
        raise ValueError(f"estimate_noise_hu takes one 2-D slice, got shape {hu.shape}")
    detail = ndimage.correlate1d(hu, _DB2_HIGH, axis=0, mode="reflect")
    detail = ndimage.correlate1d(detail, _DB2_HIGH, axis=1, mode="reflect")
    if mask is None:
        mask = ndimage.binary_erosion(body_mask(hu), iterations=2)
        if mask.sum() < 256:
            mask = np.ones(hu.shape, dtype=bool)
    else:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != hu.shape or not mask.any():
            raise ValueError(f"mask must be a non-empty boolean array of shape {hu.shape}")
    return float(np.median(np.abs(detail[mask])) / _MAD_TO_SIGMA)


def _prepare(hu, window, sigma_hu):
    """Validate; return (window map, clipped working image, outside mask, sigma in window units)."""
    hu = np.asarray(hu, dtype=np.float32)
    if hu.ndim != 2:
        raise ValueError(f"baselines take one 2-D slice in HU, got shape {hu.shape}")
    if not np.isfinite(hu).all():
        raise ValueError("the slice contains NaN or infinite values")
    win = HUWindow(float(window[0]), float(window[1]))
    if sigma_hu is None:
        sigma_hu = estimate_noise_hu(hu)
    elif not (np.isfinite(sigma_hu) and sigma_hu >= 0):
        raise ValueError(f"sigma_hu must be None (estimate it) or a finite number >= 0, got {sigma_hu}")
    x = win.to_model(hu)
    outside = (x < -CLIP_MARGIN) | (x > 1.0 + CLIP_MARGIN)
    x = np.clip(x, -CLIP_MARGIN, 1.0 + CLIP_MARGIN).astype(np.float64)
    return hu, win, x, outside, win.sigma_to_model(sigma_hu)


def _finish(y, hu, win, outside):
    out = win.to_hu(y)
    out[outside] = hu[outside]
    return out


def _run(hu, window, sigma_hu, denoise: Callable[[np.ndarray, float], np.ndarray]) -> np.ndarray:
    hu, win, x, outside, sigma = _prepare(hu, window, sigma_hu)
    if sigma <= 0:  # nothing to remove (e.g. a noiseless synthetic image)
        return hu.copy()
    return _finish(denoise(x, sigma), hu, win, outside)


def denoise_nlm(hu, *, window=DEFAULT_WINDOW, sigma_hu=None, h_factor=NLM_H_FACTOR,
                patch_size=NLM_PATCH_SIZE, patch_distance=NLM_PATCH_DISTANCE) -> np.ndarray:
    """Non-local means (``skimage.restoration.denoise_nl_means``, fast mode).

    ``h = h_factor * sigma``; sigma is also passed so the patch distances
    are corrected for the noise variance.
    """
    def nlm(x, sigma):
        return denoise_nl_means(x, h=h_factor * sigma, sigma=sigma, patch_size=patch_size,
                                patch_distance=patch_distance, fast_mode=True, preserve_range=True)
    return _run(hu, window, sigma_hu, nlm)


def denoise_tv(hu, *, window=DEFAULT_WINDOW, sigma_hu=None, weight_factor=TV_WEIGHT_FACTOR) -> np.ndarray:
    """Total-variation denoising (Chambolle), weight = ``weight_factor * sigma``."""
    def tv(x, sigma):
        return denoise_tv_chambolle(x, weight=weight_factor * sigma)
    return _run(hu, window, sigma_hu, tv)


def denoise_wavelet(hu, *, window=DEFAULT_WINDOW, sigma_hu=None, method=WAVELET_METHOD,
                    wavelet=WAVELET_NAME, mode=WAVELET_MODE, sigma_factor=WAVELET_SIGMA_FACTOR,
                    shifts=WAVELET_SHIFTS) -> np.ndarray:
    """Wavelet shrinkage (``skimage.restoration.denoise_wavelet``) with
    ``sigma_factor * sigma`` as the noise level, optionally cycle-spun over
    ``0..shifts`` pixel shifts per axis (``skimage.restoration.cycle_spin``)."""
    kw = {"sigma": None, "method": method, "wavelet": wavelet, "mode": mode, "rescale_sigma": True}

    def wav(x, sigma):
        kw["sigma"] = sigma_factor * sigma
        if shifts <= 0:
            return _wavelet_shrink(x, **kw)
        return cycle_spin(x, _wavelet_shrink, max_shifts=shifts, func_kw=kw, workers=1,
                          channel_axis=None)
    return _run(hu, window, sigma_hu, wav)


def denoise_bm3d(hu, *, window=DEFAULT_WINDOW, sigma_hu=None, sigma_factor=BM3D_SIGMA_FACTOR) -> np.ndarray:
    """BM3D (the optional ``bm3d`` package, both stages, white-noise model)
    with ``sigma_psd = sigma_factor * sigma``."""
    bm3d = _require("bm3d", "bm3d")

    def run(x, sigma):
        return bm3d.bm3d(x, sigma_psd=sigma_factor * sigma, stage_arg=bm3d.BM3DStages.ALL_STAGES)
    return _run(hu, window, sigma_hu, run)


BASELINES: dict[str, Callable[..., np.ndarray]] = {
    "nlm": denoise_nlm,
    "tv": denoise_tv,
    "wavelet": denoise_wavelet,
    "bm3d": denoise_bm3d,
}

_EXTRAS = {"bm3d": "pip install .[bm3d] (its licence allows non-commercial use only)"}


def _require(module: str, baseline: str):
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise BaselineUnavailable(
            f"baseline {baseline!r} needs the optional package {module!r}: {_EXTRAS[module]}") from exc


_NEEDS = {"bm3d": "bm3d"}  # optional dependencies; PyWavelets (wavelet) is a required one


def available_baselines() -> list[str]:
    """Names in :data:`BASELINES` whose optional dependencies are importable."""
    names = []
    for name in BASELINES:
        try:
            if name in _NEEDS:
                _require(_NEEDS[name], name)
        except BaselineUnavailable:
            continue
        names.append(name)
    return names


def run_baseline(name: str, hu, **kw) -> np.ndarray:
    """Run the baseline called ``name`` (a key of :data:`BASELINES`) on one slice."""
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; valid names: {', '.join(BASELINES)}")
    return BASELINES[name](hu, **kw)
