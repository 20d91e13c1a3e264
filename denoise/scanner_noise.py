"""A noise model measured from the scan itself, and noise synthesized from it.

Neighbouring slices of a series carry nearly the same anatomy and nearly
independent noise, so ``d = (s[k + offset] - s[k]) / sqrt(2)`` is a sample of
one slice's noise wherever the anatomy cancels. :func:`measure` takes from
these differences

* which ROIs hold noise only: squares of uniform tissue in both slices of a
  pair, as ``qa`` chooses its NPS ROIs (:func:`denoise.quality.nps.uniform_rois`),
  less those whose difference SD is far above the median (anatomy that moved);
* the 2-D noise power spectrum (NPS) in them, by the ICRU 87 / TG-233 method
  of :mod:`denoise.quality.nps` (detrended periodograms, averaged), kept on
  the ROIs' own frequency grid, normalized to unit variance and *deconvolved*
  from the measurement (:func:`expected_roi_nps`, :func:`deconvolve_nps`), so
  that interpolated bilinearly in cycles/mm onto any image size it gives
  noise that measures like the scan's;
* how the noise SD varies across the image: the ROIs' SDs fitted in log space
  to the attenuation along the rays through each point (:func:`ray_feature`),
  which is what sets a CT pixel's noise and which any new slice gives, plus a
  quadratic in the position within the body (bowtie filter);
* how far apart the slices of a pair must be: the noise of overlapping or
  helically interpolated reconstructions is shared between neighbours, which
  lowers the variance of their difference; it is measured 1, 2, 3 slices
  apart and the pairs are taken at the first distance past which it stops
  growing (:func:`choose_offset`).

:meth:`NoiseModel.synthesize` filters white Gaussian noise by the square root
of the spectrum (one real FFT pair, the filter cached per image shape) and
scales it by the SD map computed for the slice at hand. :func:`check`
measures a model, synthesizes noise for the same slices and measures that the
same way; :func:`measure_series` reads a DICOM series.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.fft
from scipy import ndimage, signal

from denoise.body import body_mask
from denoise.quality.noise_level import NoUniformRegion, noise_sd
from denoise.quality.nps import (
    detrend,
    nps_2d,
    nps_frequencies,
    nps_variance,
    radial_nps,
    roi_side,
    uniform_rois,
)

SCHEMA = 1
MAX_SLICES = 24  # central slices measure_series reads
MAX_OFFSET = 3  # farthest pair distance tried, in slices
SHARED_RATIO = 1.08  # var(d at k + 1) / var(d at k) above this: slices k apart still share noise
THICK_MM = 3.0  # slice spacing above this: anatomy changes between neighbours
OUTLIER_FACTOR = 2.0  # a difference ROI whose detrended SD exceeds this x the median holds anatomy
COARSE_CELLS = 64  # the SD map is computed on a grid of about this many cells across
ANGLES = 36  # ray directions over 180 degrees
ALPHAS = tuple(np.round(np.arange(0.0, 0.0301, 0.0025), 4))  # 1/mm of water-equivalent path, tried in the fit
MU_MAX = 3.0  # water-equivalent attenuation of the densest bone counted, relative to water
PADDING_HU = -1500.0  # below this a pixel is padding (outside the reconstruction): no noise
MAD_TO_SD = 1.4826  # robust SD of the fit's residuals
DECONVOLVE_ITERATIONS = 40
UV_MAX = 1.5  # u^2 and v^2 are clipped here: the quadratic is not extrapolated far outside the body
FLOAT_KEYS = ("alpha", "log_sd", "gain_xy", "gain_z", "feature_ref", "gain_u", "gain_v", "neighbour_correlation",
              "peak_mm", "mean_mm", "noise_sd_hu")


@dataclass(frozen=True, eq=False)
class NoiseModel:
    """Noise of one CT series: its spectrum, its SD map and how it was measured.

    Attributes
    ----------
    nps : (N, N) float32 array
        2-D NPS normalized to unit variance, unshifted (zero frequency at
        ``[0, 0]``), frequencies ``numpy.fft.fftfreq(N, d=pixel_spacing)``.
    pixel_spacing : (row, col) mm
        Spacing of the slices it was measured on (and the default for
        synthesis).
    alpha : float, 1/mm
        Weight of the water-equivalent path length in :func:`ray_feature`;
        0 means a flat SD map.
    log_sd : float
        ``log`` of the noise SD (HU) where the feature equals ``feature_ref``.
    gain_xy, gain_z : float
        Slope of ``log SD`` against the feature within a slice, and against the
        slice's mean feature (tube current modulation along z flattens it).
    gain_u, gain_v : float
        Slope of ``log SD`` against ``u^2`` and ``v^2``, the squared distance
        from the body's centre across (x) and down (y) in units of its half
        width and height (:func:`body_coordinates`): what the bowtie filter
        and the noise streaks along the body's long axis add.
    feature_ref : float
        Mean body feature of the measured slices.
    offset : int
        Distance in slices of the pairs that were differenced.
    neighbour_correlation : float
        ``1 - var(d at 1) / var(d at offset)``: how much noise neighbours share.
    slice_spacing, slice_thickness : float or None, mm
    peak_mm, mean_mm : float
        Radial NPS peak and mean frequency (cycles/mm) as measured.
    noise_sd_hu : float
        Noise SD over the NPS ROIs as measured (detrended).
    rois, pairs : int
        How many ROIs and slice pairs the NPS comes from.
    note : str
        What was done and why (overlap, thick slices, too few slices).
    """

    nps: np.ndarray
    pixel_spacing: tuple[float, float]
    alpha: float
    log_sd: float
    gain_xy: float
    gain_z: float
    feature_ref: float
    gain_u: float = 0.0
    gain_v: float = 0.0
    offset: int = 1
    neighbour_correlation: float = 0.0
    slice_spacing: float | None = None
    slice_thickness: float | None = None
    peak_mm: float = float("nan")
    mean_mm: float = float("nan")
    noise_sd_hu: float = float("nan")
    rois: int = 0
    pairs: int = 0
    note: str = ""
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    # --- synthesis -----------------------------------------------------------------------------------------------
    def amplitude(self, shape: tuple[int, int], pixel_spacing: tuple[float, float] | None = None) -> np.ndarray:
        """Fourier filter ``sqrt(NPS)`` for an image of ``shape`` (rfft2 layout), unit variance; cached.

        Parameters
        ----------
        shape : (H, W)
        pixel_spacing : (row, col) mm, optional
            Default: the spacing the model was measured at.

        Returns
        -------
        (H, W // 2 + 1) float32 array
        """
        spacing = tuple(float(v) for v in (pixel_spacing or self.pixel_spacing))
        key = ("amp", tuple(shape), spacing)
        if key not in self._cache:
            half = interpolate_nps(self.nps, self.pixel_spacing, shape, spacing)
            weights = np.full(half.shape[1], 2.0)
            weights[0] = 1.0
            if shape[1] % 2 == 0:
                weights[-1] = 1.0
            total = float((half * weights).sum()) / (shape[0] * shape[1])
            self._cache[key] = np.sqrt(half / max(total, 1e-30)).astype(np.float32)
        return self._cache[key]

    def sd_map(self, hu: np.ndarray, pixel_spacing: tuple[float, float] | None = None) -> np.ndarray:
        """Noise SD (HU) at every pixel of ``hu``, from the attenuation along its rays.

        Parameters
        ----------
        hu : (H, W) array, HU
            The slice the noise is for (clean or noisy: only its coarse
            attenuation counts).
        pixel_spacing : (row, col) mm, optional

        Returns
        -------
        (H, W) float32 array
            Zero on padding (below :data:`PADDING_HU`).
        """
        hu = np.asarray(hu, dtype=np.float32)
        if hu.ndim != 2:
            raise ValueError(f"sd_map needs one 2-D slice, got shape {hu.shape}")
        spacing = tuple(float(v) for v in (pixel_spacing or self.pixel_spacing))
        grid = CoarseGrid.of(hu.shape, spacing, self._cache)
        body = body_cells(grid, hu)
        log_sd = self.log_sd_cells(grid.features(hu, (self.alpha,))[0], body, *body_coordinates(body))
        sd = grid.upsample(np.exp(log_sd))
        sd[hu < PADDING_HU] = 0.0
        return sd

    def log_sd_cells(self, feature: np.ndarray, body: np.ndarray, u2: np.ndarray, v2: np.ndarray) -> np.ndarray:
        """``log SD`` on the coarse cells of one slice, from its feature map and body coordinates."""
        out = self.log_sd + self.gain_u * u2 + self.gain_v * v2
        if self.alpha == 0:
            return out
        level = float(feature[body].mean()) if body.any() else float(feature.mean())
        return out + self.gain_xy * (feature - level) + self.gain_z * (level - self.feature_ref)

    def synthesize(self, hu: np.ndarray, rng: np.random.Generator | int | None = None, *,
                   pixel_spacing: tuple[float, float] | None = None, sd_map: np.ndarray | None = None) -> np.ndarray:
        """Noise for one slice: white Gaussian noise filtered by ``sqrt(NPS)``, scaled by :meth:`sd_map`.

        Parameters
        ----------
        hu : (H, W) array, HU
        rng : numpy Generator or seed, optional
        pixel_spacing : (row, col) mm, optional
            Default: the spacing the model was measured at.
        sd_map : (H, W) array, optional
            :meth:`sd_map` of ``hu``, when several realizations are drawn
            for one slice.

        Returns
        -------
        (H, W) float32 array, HU
            To be added to a clean slice.
        """
        hu = np.asarray(hu, dtype=np.float32)
        if hu.ndim != 2:
            raise ValueError(f"synthesize needs one 2-D slice, got shape {hu.shape}")
        rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        workers = min(4, os.cpu_count() or 1)
        amp = self.amplitude(hu.shape, pixel_spacing)
        white = rng.standard_normal(hu.shape, dtype=np.float32)
        spectrum = scipy.fft.rfft2(white, workers=workers)
        spectrum *= amp
        noise = scipy.fft.irfft2(spectrum, s=hu.shape, workers=workers)
        noise *= self.sd_map(hu, pixel_spacing) if sd_map is None else sd_map
        return noise.astype(np.float32, copy=False)

    # --- JSON ----------------------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """JSON-ready form: the spectrum's rfft half (N x (N/2 + 1) numbers, 4 significant digits) and scalars."""
        n = self.nps.shape[1]
        half = self.nps[:, : n // 2 + 1]
        scale = float(half.max()) or 1.0
        out = {"schema": SCHEMA, "nps_shape": list(self.nps.shape),
               "nps_scale": scale, "nps_half": [[float(f"{v:.4g}") for v in row] for row in half / scale]}
        for key in FLOAT_KEYS:
            out[key] = round(float(getattr(self, key)), 6)
        out["pixel_spacing"] = [float(v) for v in self.pixel_spacing]
        out.update(offset=self.offset, slice_spacing=self.slice_spacing, slice_thickness=self.slice_thickness,
                   rois=self.rois, pairs=self.pairs, note=self.note)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> NoiseModel:
        """Inverse of :meth:`to_dict`; raises ValueError for another schema or a malformed spectrum."""
        if data.get("schema") != SCHEMA:
            raise ValueError(f"noise model schema {data.get('schema')!r} is not {SCHEMA}")
        ny, nx = (int(v) for v in data["nps_shape"])
        half = np.asarray(data["nps_half"], dtype=np.float64) * float(data["nps_scale"])
        if half.shape != (ny, nx // 2 + 1):
            raise ValueError(f"nps_half has shape {half.shape}, expected {(ny, nx // 2 + 1)}")
        full = np.zeros((ny, nx))
        full[:, : nx // 2 + 1] = half
        cols = np.arange(nx // 2 + 1, nx)
        full[:, cols] = half[(-np.arange(ny)) % ny][:, nx - cols]  # NPS(-f) = NPS(f)
        return cls(nps=full.astype(np.float32), pixel_spacing=tuple(float(v) for v in data["pixel_spacing"]),
                   offset=int(data["offset"]), slice_spacing=data.get("slice_spacing"),
                   slice_thickness=data.get("slice_thickness"), rois=int(data.get("rois", 0)),
                   pairs=int(data.get("pairs", 0)), note=str(data.get("note", "")),
                   **{k: float(data[k]) for k in FLOAT_KEYS})


# --- the spectrum --------------------------------------------------------------------------------------------------

def interpolate_nps(nps: np.ndarray, grid_spacing: tuple[float, float], shape: tuple[int, int],
                    pixel_spacing: tuple[float, float], *, half: bool = True) -> np.ndarray:
    """A 2-D NPS on one frequency grid, bilinearly interpolated (in cycles/mm) onto another.

    Parameters
    ----------
    nps : (N0, N1) array
        Unshifted, on ``fftfreq(N, d=grid_spacing)``; periodic.
    grid_spacing : (row, col) mm
    shape : (H, W)
        Image the result is for.
    pixel_spacing : (row, col) mm
        Of that image; frequencies past the grid's Nyquist take its edge value.
    half : bool, optional
        The rfft2 half (W // 2 + 1 columns) or the full (H, W) grid.

    Returns
    -------
    float64 array
    """
    n0, n1 = nps.shape
    step = (1.0 / (n0 * grid_spacing[0]), 1.0 / (n1 * grid_spacing[1]))
    padded = np.pad(np.fft.fftshift(np.asarray(nps, dtype=np.float64)), ((0, 1), (0, 1)), mode="wrap")
    fy = np.fft.fftfreq(shape[0], d=pixel_spacing[0])
    fx = (np.fft.rfftfreq if half else np.fft.fftfreq)(shape[1], d=pixel_spacing[1])
    iy = np.clip(fy / step[0] + n0 // 2, 0, n0)
    ix = np.clip(fx / step[1] + n1 // 2, 0, n1)
    y0 = np.minimum(np.floor(iy).astype(int), n0 - 1)
    x0 = np.minimum(np.floor(ix).astype(int), n1 - 1)
    wy, wx = (iy - y0)[:, None], (ix - x0)[None, :]
    a, b = padded[y0][:, x0], padded[y0][:, x0 + 1]
    c, d = padded[y0 + 1][:, x0], padded[y0 + 1][:, x0 + 1]
    return (1 - wy) * ((1 - wx) * a + wx * b) + wy * ((1 - wx) * c + wx * d)


def _poly_basis(n: int) -> np.ndarray:
    """Orthonormal basis (n, n, 6) of the quadratic surfaces :func:`detrend` removes."""
    yy, xx = np.mgrid[:n, :n]
    y, x = (yy.ravel() - (n - 1) / 2) / n, (xx.ravel() - (n - 1) / 2) / n
    design = np.stack([np.ones_like(x), x, y, x * x, x * y, y * y], axis=1)
    q, _ = np.linalg.qr(design)
    return q.reshape(n, n, 6)


def expected_roi_nps(nps: np.ndarray, pixel_spacing: tuple[float, float]) -> np.ndarray:
    """What :func:`denoise.quality.nps.nps_2d` measures, on average, of noise whose NPS is ``nps``.

    The field's NPS is ``nps`` interpolated bilinearly (as :meth:`NoiseModel.synthesize`
    uses it); the measurement crops square ROIs of ``nps``'s size, removes a
    quadratic surface from each and averages their periodograms. That blurs
    the spectrum by the ROI's window and removes most of its two lowest
    rings, which matters for smooth kernels whose NPS peaks at about two
    rings. For ``P = I - Q Q^T`` (the detrending, ``Q`` orthonormal) and
    ``C`` the noise covariance inside the ROI, the expected periodogram is
    ``diag(F P C P F^H)``, computed here exactly from the autocorrelation.

    Parameters
    ----------
    nps : (N, N) array
        Unshifted; its grid is the ROI's (``fftfreq(N, d=pixel_spacing)``).
    pixel_spacing : (row, col) mm

    Returns
    -------
    (N, N) float64 array, unshifted, in the units of ``nps``
    """
    n = nps.shape[0]
    if nps.shape != (n, n):
        raise ValueError(f"expected_roi_nps needs a square spectrum, got {nps.shape}")
    m = 4 * n
    area = pixel_spacing[0] * pixel_spacing[1]
    cov = np.real(np.fft.ifft2(interpolate_nps(nps, pixel_spacing, (m, m), pixel_spacing, half=False))) / area
    lags = np.fft.fftshift(cov)[m // 2 - (n - 1): m // 2 + n, m // 2 - (n - 1): m // 2 + n]  # (2n-1)^2, lag 0 central
    count = n - np.abs(np.arange(-(n - 1), n))
    weighted = lags * np.outer(count, count)
    folded = np.zeros((n, n))
    idx = np.arange(-(n - 1), n) % n
    np.add.at(folded, (idx[:, None], idx[None, :]), weighted)
    t1 = np.real(np.fft.fft2(folded))
    q = _poly_basis(n)
    cq = np.stack([signal.fftconvolve(lags, q[..., j], mode="valid") for j in range(q.shape[-1])], axis=-1)
    fq, fcq = np.fft.fft2(q, axes=(0, 1)), np.fft.fft2(cq, axes=(0, 1))
    t2 = np.real(np.sum(fq * np.conj(fcq), axis=-1))
    qcq = np.einsum("abj,abk->jk", q, cq)
    t4 = np.real(np.einsum("abj,jk,abk->ab", fq, qcq, np.conj(fq)))
    return np.maximum(t1 - 2 * t2 + t4, 0.0) * area / (n * n)


def deconvolve_nps(measured: np.ndarray, pixel_spacing: tuple[float, float], *,
                   iterations: int = DECONVOLVE_ITERATIONS) -> np.ndarray:
    """The NPS whose ROI measurement (:func:`expected_roi_nps`) is ``measured``, at unit variance.

    Multiplicative (Richardson-Lucy-like) updates ``S <- S * measured / E[S]``,
    the factor clipped to 0.5..2 per step; the zero-frequency bin, which
    detrending leaves empty, is extrapolated linearly from the two lowest
    rings (CT noise power falls towards zero frequency).

    Parameters
    ----------
    measured : (N, N) array, unshifted
    pixel_spacing : (row, col) mm
    iterations : int, optional

    Returns
    -------
    (N, N) float64 array, unshifted, variance 1 (``nps_variance``)
    """
    measured = np.maximum(np.asarray(measured, dtype=np.float64), 0.0)
    n = measured.shape[0]
    radius = np.hypot(*np.meshgrid(np.fft.fftfreq(n) * n, np.fft.fftfreq(n) * n, indexing="ij"))
    ring1, ring2 = (radius > 0.5) & (radius < 1.5), (radius >= 1.5) & (radius < 2.5)
    floor = 1e-6 * float(measured.max())
    est = measured.copy()

    def fill_dc(s: np.ndarray) -> np.ndarray:
        s[0, 0] = max(0.0, 2 * float(s[ring1].mean()) - float(s[ring2].mean()))
        return s

    est = fill_dc(est)
    for _ in range(iterations):
        expected = expected_roi_nps(est, pixel_spacing)
        ratio = np.where(expected > floor, measured / np.maximum(expected, floor), 1.0)
        ratio[0, 0] = 1.0
        est = fill_dc(est * np.clip(ratio, 0.5, 2.0))
    return est / nps_variance(est, pixel_spacing)


# --- the SD map ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class CoarseGrid:
    """Cells of ``factor`` x ``factor`` pixels over an image, with its rays and its upsampling.

    The image is cropped at the bottom/right to whole cells; :meth:`upsample`
    extends the map to the full image (edge values beyond).
    """

    shape: tuple[int, int]
    spacing: tuple[float, float]
    factor: int
    cells: tuple[int, int]
    rows: np.ndarray  # (H, h) linear interpolation weights
    cols: np.ndarray  # (W, w)
    ray_coords: np.ndarray  # (2, A, S, T) cell coordinates along each ray
    ray_step: float  # mm between samples along a ray
    back_index: np.ndarray  # (A, h*w) ray index left of each cell centre
    back_weight: np.ndarray  # (A, h*w) interpolation weight of the ray to its right

    @classmethod
    def of(cls, shape: tuple[int, int], spacing: tuple[float, float], cache: dict | None = None) -> CoarseGrid:
        key = ("grid", tuple(shape), tuple(spacing))
        if cache is not None and key in cache:
            return cache[key]
        factor = max(1, int(round(max(shape) / COARSE_CELLS)))
        h, w = max(1, shape[0] // factor), max(1, shape[1] // factor)
        py, px = spacing[0] * factor, spacing[1] * factor
        step = min(py, px)
        radius = 0.5 * math.hypot(h * py, w * px)
        s = np.arange(-radius, radius + step / 2, step)
        theta = np.linspace(0.0, np.pi, ANGLES, endpoint=False)
        cos, sin = np.cos(theta)[:, None, None], np.sin(theta)[:, None, None]
        ss, tt = s[None, :, None], s[None, None, :]
        x_mm, y_mm = ss * cos - tt * sin, ss * sin + tt * cos
        coords = np.stack([y_mm / py + (h - 1) / 2, x_mm / px + (w - 1) / 2])
        yc, xc = np.meshgrid((np.arange(h) - (h - 1) / 2) * py, (np.arange(w) - (w - 1) / 2) * px, indexing="ij")
        pos = (xc.ravel()[None, :] * cos[:, :, 0] + yc.ravel()[None, :] * sin[:, :, 0] + radius) / step
        index = np.clip(np.floor(pos).astype(int), 0, s.size - 2)
        grid = cls(shape=tuple(shape), spacing=tuple(spacing), factor=factor, cells=(h, w),
                   rows=_linear_weights(shape[0], h, factor), cols=_linear_weights(shape[1], w, factor),
                   ray_coords=coords.astype(np.float32), ray_step=step, back_index=index,
                   back_weight=np.clip(pos - index, 0.0, 1.0))
        if cache is not None:
            cache[key] = grid
        return grid

    def cell_mean(self, image: np.ndarray) -> np.ndarray:
        """Mean of ``image`` over each cell (h, w)."""
        h, w, f = *self.cells, self.factor
        return np.asarray(image, dtype=np.float32)[: h * f, : w * f].reshape(h, f, w, f).mean(axis=(1, 3))

    def features(self, hu: np.ndarray, alphas) -> np.ndarray:
        """:func:`ray_feature` of one slice for each alpha: (len(alphas), h, w)."""
        mu = np.clip(1.0 + self.cell_mean(hu) / 1000.0, 0.0, MU_MAX)
        paths = ndimage.map_coordinates(mu, self.ray_coords.reshape(2, -1), order=1, mode="constant", cval=0.0)
        paths = paths.reshape(self.ray_coords.shape[1:]).sum(axis=-1) * self.ray_step  # (A, S) mm of water
        rows = np.arange(paths.shape[0])[:, None]
        left, right = paths[rows, self.back_index], paths[rows, self.back_index + 1]
        through = (1 - self.back_weight) * left + self.back_weight * right  # (A, h*w)
        out = []
        for alpha in alphas:
            if alpha == 0:
                out.append(np.zeros(self.cells))
                continue
            top = alpha * through.max(axis=0)
            mean = np.exp(alpha * through - top).mean(axis=0)
            out.append((0.5 * (np.log(mean) + top)).reshape(self.cells))
        return np.stack(out)

    def upsample(self, cells: np.ndarray) -> np.ndarray:
        """Cell values bilinearly onto the full image (H, W) float32."""
        return (self.rows @ np.asarray(cells, dtype=np.float32) @ self.cols.T).astype(np.float32)


def _linear_weights(n: int, cells: int, factor: int) -> np.ndarray:
    """(n, cells) matrix interpolating cell centres linearly onto pixel centres."""
    pos = np.clip((np.arange(n) + 0.5) / factor - 0.5, 0, cells - 1)
    lo = np.minimum(np.floor(pos).astype(int), max(cells - 2, 0))
    frac = pos - lo if cells > 1 else np.zeros(n)
    out = np.zeros((n, cells), dtype=np.float32)
    out[np.arange(n), lo] = 1 - frac
    if cells > 1:
        out[np.arange(n), lo + 1] += frac
    return out


def ray_feature(hu: np.ndarray, pixel_spacing: tuple[float, float], alpha: float) -> np.ndarray:
    """Half the log of the mean over ray directions of ``exp(alpha * path)``, per coarse cell.

    A CT pixel's noise variance is the back-projection of the variance of the
    line integrals through it, and a line integral's variance grows as
    ``exp(attenuation)``: each ray's water-equivalent path (``1 + HU/1000``,
    clipped, summed along the ray) gives it. ``alpha`` stands in for the
    water attenuation coefficient *after* what the scanner does about it
    (bowtie filter, tube current modulated with angle), so it is fitted, not
    assumed; ``log SD`` is then linear in this feature. The slice is averaged
    onto cells about 1/64 of its width first, which keeps this to a few ms
    and is all the resolution a noise-level map has.

    Parameters
    ----------
    hu : (H, W) array, HU
    pixel_spacing : (row, col) mm
    alpha : float, 1/mm

    Returns
    -------
    (h, w) float64 array, on the grid of :class:`CoarseGrid`
    """
    hu = np.asarray(hu, dtype=np.float32)
    return CoarseGrid.of(hu.shape, tuple(pixel_spacing)).features(hu, (alpha,))[0]


def body_cells(grid: CoarseGrid, hu: np.ndarray) -> np.ndarray:
    """Coarse cells (h, w) inside the patient's body (:func:`denoise.body.body_mask` of the cell means)."""
    return body_mask(grid.cell_mean(hu))


def body_coordinates(body: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(u^2, v^2)`` per cell: squared distance from the body's centroid across and down, in units of twice
    the body's SD along that axis (its half width for an ellipse), clipped at :data:`UV_MAX`; zeros without a body."""
    if not body.any():
        return np.zeros(body.shape), np.zeros(body.shape)
    yy, xx = np.nonzero(body)
    rows, cols = np.arange(body.shape[0])[:, None], np.arange(body.shape[1])[None, :]
    u2 = ((cols - xx.mean()) / max(2 * xx.std(), 1.0)) ** 2
    v2 = ((rows - yy.mean()) / max(2 * yy.std(), 1.0)) ** 2
    return (np.minimum(np.broadcast_to(u2, body.shape), UV_MAX), np.minimum(np.broadcast_to(v2, body.shape), UV_MAX))


def at_rois(cells: np.ndarray, grid: CoarseGrid, corners, size: int) -> np.ndarray:
    """Values of coarse maps (..., h, w) at the centres of the ROIs at ``corners`` (x, y): (..., M)."""
    xy = np.asarray(corners, dtype=np.float64).reshape(-1, 2)
    coords = np.stack([(xy[:, 1] + size / 2) / grid.factor - 0.5, (xy[:, 0] + size / 2) / grid.factor - 0.5])
    flat = np.asarray(cells, dtype=np.float64).reshape(-1, *grid.cells)
    out = np.stack([ndimage.map_coordinates(c, coords, order=1, mode="nearest") for c in flat])
    return out.reshape(*np.shape(cells)[:-2], xy.shape[0])


# --- measuring -----------------------------------------------------------------------------------------------------

@dataclass
class Differences:
    """The slice pairs at one distance and their noise-only NPS ROIs (see :func:`difference_rois`)."""

    offset: int
    size: int
    pairs: list[tuple[int, int]]  # (k, k + offset), those with at least one ROI
    corners: list[list[tuple[int, int]]]  # per pair, (x, y) of each retained ROI
    sds: list[np.ndarray]  # per pair, detrended SD of the difference in each retained ROI (HU)
    variance: float  # mean detrended variance of the retained ROIs (HU^2)

    @property
    def count(self) -> int:
        return sum(len(c) for c in self.corners)


def _stack(slices_hu) -> np.ndarray:
    stack = np.asarray(np.stack(slices_hu) if isinstance(slices_hu, list | tuple) else slices_hu, np.float32)
    if stack.ndim != 3 or stack.shape[0] < 2:
        raise ValueError(f"need at least 2 slices as (Z, Y, X), got shape {stack.shape}")
    return stack


def slice_rois(stack: np.ndarray, pixel_spacing: tuple[float, float], size: int) -> list[set[tuple[int, int]]]:
    """Uniform-tissue NPS ROIs of each slice, as ``qa`` chooses them (:func:`uniform_rois`)."""
    out = []
    for hu in stack:
        try:
            level = noise_sd(hu, pixel_spacing)
        except NoUniformRegion:
            level = None
        out.append(set(uniform_rois(hu, pixel_spacing, size=size, noise_sd=level)))
    return out


def difference(stack: np.ndarray, pair: tuple[int, int]) -> np.ndarray:
    """``(s[j] - s[i]) / sqrt(2)`` for the pair (i, j), float32."""
    i, j = pair
    return (stack[j] - stack[i]) * np.float32(1 / math.sqrt(2))


def crop(image: np.ndarray, corners, size: int) -> np.ndarray:
    """(M, size, size) stack of the squares at ``corners`` (x, y)."""
    return np.stack([image[y:y + size, x:x + size] for x, y in corners])


def roi_sds(image: np.ndarray, corners, size: int) -> np.ndarray:
    """Detrended (quadratic) SD of ``image`` in each ROI, HU."""
    return detrend(crop(image, corners, size)).std(axis=(1, 2), ddof=1)


def difference_rois(stack: np.ndarray, rois: list[set[tuple[int, int]]], offset: int, size: int) -> Differences:
    """Pairs ``offset`` slices apart and the ROIs in which their difference is noise only.

    An ROI is a candidate when it is uniform in both slices; it is kept when
    the detrended SD of the difference there is at most
    :data:`OUTLIER_FACTOR` x the median over all candidates (anatomy that
    changed between the slices only adds to it).
    """
    pairs, crops, sds = [], [], []
    for i in range(stack.shape[0] - offset):
        common = sorted(rois[i] & rois[i + offset])
        if common:
            pairs.append((i, i + offset))
            crops.append(common)
            sds.append(roi_sds(difference(stack, (i, i + offset)), common, size))
    if not pairs:
        return Differences(offset, size, [], [], [], float("nan"))
    limit = OUTLIER_FACTOR * float(np.median(np.concatenate(sds)))
    keep = [sd <= limit for sd in sds]
    out = Differences(offset, size, [], [], [], float("nan"))
    for pair, corners, sd, ok in zip(pairs, crops, sds, keep, strict=True):
        if ok.any():
            out.pairs.append(pair)
            out.corners.append([c for c, k in zip(corners, ok, strict=True) if k])
            out.sds.append(sd[ok])
    if out.sds:
        out.variance = float(np.mean(np.concatenate(out.sds) ** 2))
    return out


def difference_nps(stack: np.ndarray, pixel_spacing: tuple[float, float], diffs: Differences) -> np.ndarray:
    """2-D NPS (:func:`nps_2d`) over every retained ROI of every pair, HU^2 mm^2."""
    if not diffs.count:
        raise ValueError("no noise-only ROI in the slice differences")
    rois = [crop(difference(stack, p), cs, diffs.size) for p, cs in zip(diffs.pairs, diffs.corners, strict=True)]
    return nps_2d(np.concatenate(rois), pixel_spacing)


def choose_offset(stack: np.ndarray, rois, size: int, *, max_offset: int = MAX_OFFSET,
                  ratio: float = SHARED_RATIO) -> tuple[Differences, dict[int, float]]:
    """The first pair distance past which the difference's variance stops growing.

    Noise shared by neighbours (overlapping or helically interpolated
    reconstructions) cancels in their difference; pairs farther apart share
    less. Anatomy is mostly kept out by the ROIs' uniformity, so the
    variance grows with distance until the noise is independent, then stays.

    Returns
    -------
    Differences
        At the chosen distance.
    dict
        Variance (HU^2) at each distance tried.
    """
    chosen = difference_rois(stack, rois, 1, size)
    variances = {1: chosen.variance}
    for k in range(2, max_offset + 1):
        if stack.shape[0] - k < 2:
            break
        farther = difference_rois(stack, rois, k, size)
        variances[k] = farther.variance
        if not farther.count or not variances[k] > ratio * variances[k - 1]:
            break
        chosen = farther
    return chosen, variances


def _trimmed_lstsq(design: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Least squares, refitted twice without the residuals beyond 3 robust SDs: (coef, residuals, kept)."""
    keep = np.ones(y.size, dtype=bool)
    for _ in range(3):
        coef, *_ = np.linalg.lstsq(design[keep], y[keep], rcond=None)
        resid = y - design @ coef
        centre = float(np.median(resid[keep]))
        spread = MAD_TO_SD * float(np.median(np.abs(resid[keep] - centre)))
        keep = np.abs(resid - centre) <= 3 * max(spread, 1e-6)
    return coef, resid, keep


def _fit_sd(features: list[np.ndarray], levels: list[np.ndarray], coords: list[np.ndarray],
            sds: list[np.ndarray]) -> dict:
    """Least squares of ``log SD`` on the feature (within and between slices) and ``u^2, v^2``, for each alpha.

    ``features[p]`` is (len(ALPHAS), M_p) at the ROIs of pair ``p``,
    ``levels[p]`` (len(ALPHAS),) the pair's mean body feature, ``coords[p]``
    (2, M_p) the ROIs' ``u^2, v^2``. Residuals beyond 3 robust SDs are
    trimmed (twice); the alpha of the smallest residual wins. The slope
    between slices is held between 0 and the slope within them: tube current
    modulated along z can flatten the noise level from slice to slice, never
    reverse it, and a few slices of one patient say little about it (on a
    phantom whose slices are all alike a free slope fitted the noise).
    Coefficients: constant, u^2, v^2, feature, level.
    """
    y = np.log(np.concatenate(sds))
    uv = np.concatenate(coords, axis=1).T
    best: dict | None = None
    for a, alpha in enumerate(ALPHAS):
        f = np.concatenate([feat[a] - lev[a] for feat, lev in zip(features, levels, strict=True)])
        z = np.concatenate([np.full(feat.shape[1], lev[a]) for feat, lev in zip(features, levels, strict=True)])
        design = np.column_stack([np.ones_like(f), uv] + ([f] if alpha else []))
        gain_z = 0.0
        if alpha and np.ptp(z) > 1e-9:
            coef, _, _ = _trimmed_lstsq(np.column_stack([design, z]), y)
            gain_z = float(np.clip(coef[-1], 0.0, max(float(coef[-2]), 0.0)))
        coef, resid, keep = _trimmed_lstsq(design, y - gain_z * z)
        score = float(np.mean((resid[keep] - resid[keep].mean()) ** 2))
        if best is None or score < best["score"] * (1 - 1e-3):  # a flat map unless the feature explains more
            best = {"score": score, "alpha": float(alpha),
                    "coef": np.concatenate([coef, np.zeros(4 - coef.size), [gain_z]]),
                    "offset": float(resid[keep].mean())}
    assert best is not None
    return best


@dataclass
class Measurement:
    """A model and what it was measured on: the slices and the pairs with their noise-only ROIs."""

    model: NoiseModel
    stack: np.ndarray  # (Z, Y, X) float32
    diffs: Differences


def measure(slices_hu, pixel_spacing: tuple[float, float], *, offset: int | None = None,
            slice_spacing: float | None = None, slice_thickness: float | None = None,
            roi_size: int | None = None, max_offset: int = MAX_OFFSET) -> NoiseModel:
    """Measure a series' noise model from the differences of its neighbouring slices.

    Parameters
    ----------
    slices_hu : (Z, Y, X) array or list of (Y, X) arrays, HU
        Consecutive, evenly spaced slices in slice order, Z >= 2.
    pixel_spacing : (row, col) mm
    offset : int, optional
        Distance of the differenced pairs in slices; default: chosen by
        :func:`choose_offset` (the first at which neighbours share no noise).
    slice_spacing, slice_thickness : float, optional, mm
        From the header: reported, and used in the note.
    roi_size : int, optional
        NPS ROI side in pixels; default :func:`denoise.quality.nps.roi_side`
        (about 15 mm, as ``qa``).
    max_offset : int, optional

    Returns
    -------
    NoiseModel

    Raises
    ------
    ValueError
        Fewer than 2 slices, or no noise-only ROI in any difference.

    Notes
    -----
    The SD map is fitted to the detrended SDs of the difference in the same
    noise-only ROIs as the NPS: everywhere else (lung, bone, any edge) the
    difference of two slices holds anatomy that moved, which on the shared
    series made local SDs 1.5 to 3 times the noise. The fit needs no ROI
    where the model is applied: :func:`ray_feature` comes from any slice.
    """
    return measure_details(slices_hu, pixel_spacing, offset=offset, slice_spacing=slice_spacing,
                           slice_thickness=slice_thickness, roi_size=roi_size, max_offset=max_offset).model


def measure_details(slices_hu, pixel_spacing: tuple[float, float], *, offset: int | None = None,
                    slice_spacing: float | None = None, slice_thickness: float | None = None,
                    roi_size: int | None = None, max_offset: int = MAX_OFFSET) -> Measurement:
    """:func:`measure`, keeping the slices and the pairs and ROIs it used (for :func:`check`)."""
    stack = _stack(slices_hu)
    spacing = (float(pixel_spacing[0]), float(pixel_spacing[1]))
    size = roi_size or roi_side(spacing)
    rois = slice_rois(stack, spacing, size)
    if offset is None:
        diffs, variances = choose_offset(stack, rois, size, max_offset=min(max_offset, stack.shape[0] - 1))
    else:
        diffs = difference_rois(stack, rois, int(offset), size)
        variances = {int(offset): diffs.variance}
        if offset > 1:
            variances[1] = difference_rois(stack, rois, 1, size).variance
    if not diffs.count:
        raise ValueError("no noise-only ROI of uniform tissue in the slice differences")
    shared = 1.0 - variances[1] / diffs.variance if diffs.offset > 1 and variances[1] > 0 else 0.0
    notes = []
    if diffs.offset > 1:
        notes.append(f"neighbours share noise (difference variance x{variances[diffs.offset] / variances[1]:.2f} "
                     f"from 1 to {diffs.offset} slices apart): pairs {diffs.offset} slices apart")
    elif len(variances) == 1 and offset is None:
        notes.append("too few slices to test whether neighbours share noise")
    if slice_spacing is not None and slice_thickness is not None and slice_spacing < 0.9 * slice_thickness:
        notes.append(f"overlapping reconstruction ({slice_spacing:g} mm spacing, {slice_thickness:g} mm thick)")
    if slice_spacing is not None and slice_spacing > THICK_MM:
        notes.append(f"thick slices ({slice_spacing:g} mm apart): anatomy changes between neighbours, so only "
                     f"ROIs uniform in both slices whose difference SD is within {OUTLIER_FACTOR:g}x the median "
                     "are used")
    measured = difference_nps(stack, spacing, diffs)
    peak, mean = nps_frequencies(*radial_nps(measured, spacing))
    shape_nps = deconvolve_nps(measured / nps_variance(measured, spacing), spacing)

    grid = CoarseGrid.of(stack.shape[1:], spacing)
    unit = NoiseModel(nps=shape_nps.astype(np.float32), pixel_spacing=spacing, alpha=0.0, log_sd=0.0, gain_xy=0.0,
                      gain_z=0.0, feature_ref=0.0)
    white = unit.synthesize(np.zeros(stack.shape[1:], np.float32), np.random.default_rng(0))
    corners = [(x, y) for y in range(0, white.shape[0] - size + 1, size) for x in range(0, white.shape[1] - size + 1,
                                                                                        size)]
    log_kappa = float(np.mean(np.log(roi_sds(white, corners, size))))  # what an ROI measures of unit noise
    features, levels, coords = [], [], []
    for pair, cs in zip(diffs.pairs, diffs.corners, strict=True):
        mid = 0.5 * (stack[pair[0]] + stack[pair[1]])
        body = body_cells(grid, mid)
        feats = grid.features(mid, ALPHAS)  # (len(ALPHAS), h, w)
        levels.append(np.array([f[body].mean() if body.any() else f.mean() for f in feats]))
        features.append(at_rois(feats, grid, cs, size))
        coords.append(at_rois(np.stack(body_coordinates(body)), grid, cs, size))
    fit = _fit_sd(features, levels, coords, diffs.sds)
    a = ALPHAS.index(fit["alpha"])
    feature_ref = float(np.mean([lev[a] for lev in levels]))
    c0, c_u, c_v, c_xy, c_z = (float(v) for v in fit["coef"])
    model = NoiseModel(nps=shape_nps.astype(np.float32), pixel_spacing=spacing, alpha=fit["alpha"],
                       log_sd=c0 + fit["offset"] + c_z * feature_ref - log_kappa, gain_xy=c_xy, gain_z=c_z,
                       feature_ref=feature_ref, gain_u=c_u, gain_v=c_v, offset=diffs.offset,
                       neighbour_correlation=float(max(shared, 0.0)), slice_spacing=slice_spacing,
                       slice_thickness=slice_thickness, peak_mm=peak, mean_mm=mean,
                       noise_sd_hu=math.sqrt(diffs.variance), rois=diffs.count, pairs=len(diffs.pairs),
                       note="; ".join(notes))
    return Measurement(model=model, stack=stack, diffs=diffs)


# --- checking a model against its own scan ---------------------------------------------------------------------------

def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    if a.size < 3 or np.std(a) == 0 or np.std(b) == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def _pct(value: float, reference: float) -> float:
    return 100.0 * (value / reference - 1.0)


def check(slices_hu, pixel_spacing: tuple[float, float], *, rng: np.random.Generator | int | None = 0,
          min_rois: int = 2000, max_realizations: int = 8, **options) -> tuple[NoiseModel, dict]:
    """Measure a model, synthesize noise for the same slices and measure that noise the same way.

    The synthesized noise of the two slices of each pair is differenced like
    the slices were, and its NPS and SDs measured in the very ROIs the
    slices' were.

    Parameters
    ----------
    slices_hu, pixel_spacing, **options
        As :func:`measure`.
    rng : numpy Generator or seed, optional
    min_rois, max_realizations : int, optional
        The synthesized noise is measured over as many realizations (at most
        ``max_realizations``) as give ``min_rois`` ROIs: a smooth kernel's
        NPS has a flat top over its two lowest rings, whose peak one
        realization in a few ROIs cannot place.

    Returns
    -------
    NoiseModel
    dict
        ``measured_peak_mm``, ``synth_peak_mm``, ``peak_diff_pct``, the same
        for ``mean`` (mean frequency) and for ``sd`` (``*_sd_hu``: the noise
        SD over the ROIs, from the NPS), ``sd_map_corr`` (Pearson, over every
        ROI of every pair, of the model's SD map at the ROI against the SD of
        the slices' difference there), ``synth_sd_corr`` (the synthesized
        noise's ROI SDs against the same) and ``rois``.
    """
    m = measure_details(slices_hu, pixel_spacing, **options)
    model, stack, diffs, spacing = m.model, m.stack, m.diffs, m.model.pixel_spacing
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    needed = sorted({i for p in diffs.pairs for i in p})
    realizations = int(np.clip(math.ceil(min_rois / diffs.count), 1, max_realizations))
    maps = {i: model.sd_map(stack[i]) for i in needed}
    noise, synth_nps = np.zeros_like(stack), 0.0
    for _ in range(realizations):
        for i in needed:
            noise[i] = model.synthesize(stack[i], rng, sd_map=maps[i])
        synth_nps = synth_nps + difference_nps(noise, spacing, diffs) / realizations
    real_nps = difference_nps(stack, spacing, diffs)
    out: dict = {}
    for name, nps in (("measured", real_nps), ("synth", synth_nps)):
        out[f"{name}_peak_mm"], out[f"{name}_mean_mm"] = nps_frequencies(*radial_nps(nps, spacing))
        out[f"{name}_sd_hu"] = math.sqrt(nps_variance(nps, spacing))
    for key, unit in (("peak", "mm"), ("mean", "mm"), ("sd", "hu")):
        out[f"{key}_diff_pct"] = _pct(out[f"synth_{key}_{unit}"], out[f"measured_{key}_{unit}"])
    mapped, synthesized = [], []
    for pair, cs in zip(diffs.pairs, diffs.corners, strict=True):
        sd_map = np.sqrt(0.5 * (maps[pair[0]] ** 2 + maps[pair[1]] ** 2))
        mapped.append(crop(sd_map, cs, diffs.size).mean(axis=(1, 2)))
        synthesized.append(roi_sds(difference(noise, pair), cs, diffs.size))
    measured = np.concatenate(diffs.sds)
    out["sd_map_corr"] = _pearson(np.concatenate(mapped), measured)
    out["synth_sd_corr"] = _pearson(np.concatenate(synthesized), measured)
    out["rois"] = int(measured.size)
    out["realizations"] = realizations
    return model, out


# --- DICOM series --------------------------------------------------------------------------------------------------

@dataclass
class SeriesSlices:
    """Central slices of a series, evenly spaced, with what the header says about them."""

    slices: np.ndarray  # (Z, Y, X) float32 HU
    pixel_spacing: tuple[float, float]
    slice_spacing: float | None
    slice_thickness: float | None
    kernel: str
    description: str


def even_run(positions: list[float | None], *, tolerance: float = 0.02) -> tuple[int, int]:
    """(start, stop) of the longest run of slices whose consecutive gaps agree within ``tolerance`` (relative)."""
    if len(positions) < 3 or any(p is None for p in positions):
        return 0, len(positions)
    gaps = np.abs(np.diff(np.asarray(positions, dtype=np.float64)))
    cuts = [0]
    for i in range(1, gaps.size):
        if abs(gaps[i] - gaps[cuts[-1]]) > tolerance * max(gaps[cuts[-1]], 1e-6):
            cuts.append(i)
    bounds = [*cuts, gaps.size]
    start, stop = max(zip(bounds[:-1], bounds[1:], strict=True), key=lambda r: r[1] - r[0])
    return start, stop + 1


def load_series(series_or_folder, *, max_slices: int = MAX_SLICES) -> SeriesSlices:
    """Read up to ``max_slices`` central slices of the longest evenly spaced run of a series.

    Parameters
    ----------
    series_or_folder : denoise.dicom.scan.Series, or a path
        A folder (or file) must hold exactly one CT series.
    max_slices : int, optional

    Returns
    -------
    SeriesSlices
    """
    import pydicom

    from denoise.dicom.pixels import load_ct
    from denoise.dicom.scan import Series, scan

    series = series_or_folder
    if not isinstance(series, Series):
        found = scan(Path(series_or_folder)).series
        if len(found) != 1:
            raise ValueError(f"{series_or_folder} holds {len(found)} CT series, not one: pass a Series "
                             "(denoise.dicom.scan.scan(path).series)")
        series = found[0]
    if any(f.n_frames != 1 for f in series.files):
        raise ValueError("multi-frame series: pass its frames to measure()")
    files = series.files
    start, stop = even_run([f.position for f in files])
    centre = (start + stop) // 2
    lo = max(start, centre - max_slices // 2)
    files = files[lo: min(stop, lo + max_slices)]
    if len(files) < 2:
        raise ValueError("a noise model needs at least 2 slices")
    spacings = {f.pixel_spacing for f in files}
    if len(spacings) != 1 or None in spacings:
        raise ValueError("the slices have no PixelSpacing, or several")
    positions = [f.position for f in files]
    slice_spacing = (float(np.median(np.abs(np.diff(positions)))) if None not in positions else None)
    header = pydicom.dcmread(files[len(files) // 2].path, stop_before_pixels=True)
    thickness = header.get("SliceThickness")
    kernel = header.get("ConvolutionKernel", "")
    kernel = "\\".join(str(k) for k in kernel) if isinstance(kernel, pydicom.multival.MultiValue) else str(kernel)
    stack = np.stack([load_ct(f.path).hu[0] for f in files]).astype(np.float32)
    return SeriesSlices(slices=stack, pixel_spacing=files[0].pixel_spacing, slice_spacing=slice_spacing,
                        slice_thickness=float(thickness) if thickness not in (None, "") else None,
                        kernel=kernel.strip(), description=series.description)


def measure_series(series_or_folder, *, max_slices: int = MAX_SLICES, **options) -> NoiseModel:
    """:func:`measure` on the central slices of a DICOM series (:func:`load_series`).

    Parameters
    ----------
    series_or_folder : denoise.dicom.scan.Series, or a path holding one series
    max_slices : int, optional
    **options
        Passed to :func:`measure` (``offset``, ``roi_size``, ``max_offset``).

    Returns
    -------
    NoiseModel
    """
    data = load_series(series_or_folder, max_slices=max_slices)
    return measure(data.slices, data.pixel_spacing, slice_spacing=data.slice_spacing,
                   slice_thickness=data.slice_thickness, **options)


def measure_volume(volume, *, max_slices: int = MAX_SLICES, **options) -> NoiseModel:
    """:func:`measure` on the central slices of a :class:`denoise.volume.Volume` (a NIfTI volume:
    evenly spaced by its affine, ``spacing_mm[0]`` apart; the thickness a sidecar states).

    Parameters
    ----------
    volume : denoise.volume.Volume
    max_slices : int, optional
    **options
        Passed to :func:`measure` (``offset``, ``roi_size``, ``max_offset``).
    """
    z = volume.shape[0]
    if z < 2:
        raise ValueError("a noise model needs at least 2 slices")
    lo = max(0, z // 2 - max_slices // 2)
    return measure(volume.hu[lo: lo + max_slices], tuple(volume.spacing_mm[1:]), slice_spacing=volume.spacing_mm[0],
                   slice_thickness=volume.source.get("slice_thickness_mm"), **options)
