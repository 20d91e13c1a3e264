"""Noise models for making (noisy, clean) CT pairs. Pure functions.

* :func:`add_gaussian`: white Gaussian noise with sigma in HU.
* :func:`low_dose_noise`: a fast stand-in for the noise part of
  :func:`low_dose_pair` (``noisy - clean``), made in the image domain from
  the same physics: the local noise variance is the back projection of the
  sinogram variance ``exp(p) / i0`` (on a coarse grid), the texture is the
  measured noise power spectrum of the FBP, split into angular sectors so
  that the views that see the most attenuation give the noise its streaky
  direction. For the many realizations adaptation needs; how close and how
  fast it is: docs/design/low-dose-noise.md.
* :func:`low_dose_pair`: the physically realistic kind. HU -> linear
  attenuation -> parallel-beam sinogram (``skimage.transform.radon``) ->
  Poisson photon counts for an incident count ``i0`` per detector bin and
  view -> ``-log`` -> filtered back projection (``iradon``, ramp filter) ->
  HU. The clean reference is the FBP of the noiseless sinogram, so the pair
  differs by quantum noise only (not by the FBP's own blur).

Randomness is explicit: every function takes a ``numpy.random.Generator``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.transform import iradon, radon

MU_WATER_PER_MM = 0.0192  # linear attenuation of water at ~70 keV, 1/mm
DEFAULT_VIEWS = 720
# iradon's filters, sharpest first: the noise texture of a low-dose realization (a kernel's role).
FBP_FILTERS = ("ramp", "shepp-logan", "cosine", "hamming", "hann")


def add_gaussian(hu: np.ndarray, *, sigma_hu: float, rng: np.random.Generator) -> np.ndarray:
    """``hu`` plus white Gaussian noise of standard deviation ``sigma_hu`` (HU)."""
    if not np.isfinite(sigma_hu) or sigma_hu < 0:
        raise ValueError(f"sigma_hu must be a finite number >= 0, got {sigma_hu}")
    if not isinstance(rng, np.random.Generator):
        raise TypeError("rng must be a numpy.random.Generator (np.random.default_rng(seed))")
    noise = rng.standard_normal(np.shape(hu), dtype=np.float32) * np.float32(sigma_hu)
    return (np.asarray(hu, dtype=np.float32) + noise).astype(np.float32, copy=False)


def hu_to_mu(hu: np.ndarray) -> np.ndarray:
    """HU -> linear attenuation (1/mm), clipped at 0 (nothing below air)."""
    return np.maximum(MU_WATER_PER_MM * (1.0 + np.asarray(hu, dtype=np.float64) / 1000.0), 0.0)


def mu_to_hu(mu: np.ndarray) -> np.ndarray:
    return (1000.0 * (np.asarray(mu, dtype=np.float64) / MU_WATER_PER_MM - 1.0)).astype(np.float32)


def _fov(shape: tuple[int, int]) -> np.ndarray:
    """Inscribed circle of a square image (the region the scanner measured),
    exactly as ``radon``/``iradon`` define it with ``circle=True``."""
    n = shape[0]
    yy, xx = np.mgrid[:n, :n] - n // 2
    return yy**2 + xx**2 <= (n // 2) ** 2


def field_of_view(shape: tuple[int, int]) -> np.ndarray:
    """Where a (rows, cols) slice is reconstructed by :func:`reconstruct` and given noise by
    :func:`low_dose_noise`: the circle inscribed in the square it is padded to, cropped back."""
    rows, cols = shape
    n = max(rows, cols)
    top, left = (n - rows) // 2, (n - cols) // 2
    return _fov((n, n))[top:top + rows, left:left + cols]


@dataclass(frozen=True)
class Projection:
    """A slice's noiseless parallel-beam sinogram and what is needed to map
    reconstructions back onto the slice (computed once, reused per dose)."""

    line_integrals: np.ndarray  # (n, n_views) in units of mu*mm
    theta: np.ndarray  # (n_views,) degrees
    pixel_spacing_mm: float
    background: np.ndarray  # (n, n) padded input HU, kept outside the field of view
    fov: np.ndarray  # (n, n) bool
    crop: tuple[int, int, int, int]  # top, left, rows, cols


def _square(hu: np.ndarray, pixel_spacing_mm: float, what: str):
    """A checked 2-D slice padded with air to a square: (padded, field of view, crop)."""
    hu = np.asarray(hu, dtype=np.float32)
    if hu.ndim != 2:
        raise ValueError(f"{what} takes one 2-D slice, got shape {hu.shape}")
    if not np.isfinite(pixel_spacing_mm) or pixel_spacing_mm <= 0:
        raise ValueError(f"pixel_spacing_mm must be > 0, got {pixel_spacing_mm}")
    rows, cols = hu.shape
    n = max(rows, cols)
    padded = np.full((n, n), -1000.0, dtype=np.float32)
    top, left = (n - rows) // 2, (n - cols) // 2
    padded[top:top + rows, left:left + cols] = hu
    return padded, _fov((n, n)), (top, left, rows, cols)


def project(hu: np.ndarray, *, pixel_spacing_mm: float, n_views: int = DEFAULT_VIEWS) -> Projection:
    """HU slice -> attenuation -> noiseless sinogram (``radon``)."""
    if n_views < 2:
        raise ValueError(f"n_views must be >= 2, got {n_views}")
    padded, fov, crop = _square(hu, pixel_spacing_mm, "low-dose simulation")
    theta = np.linspace(0.0, 180.0, n_views, endpoint=False)
    sino = radon(hu_to_mu(padded) * fov, theta, circle=True) * pixel_spacing_mm
    return Projection(sino, theta, float(pixel_spacing_mm), padded, fov, crop)


def noisy_line_integrals(proj: Projection, *, i0: float, rng: np.random.Generator) -> np.ndarray:
    """Poisson counts for ``i0`` incident photons per bin and view, then -log."""
    if not np.isfinite(i0) or i0 <= 0:
        raise ValueError(f"i0 (incident photons) must be > 0, got {i0}")
    counts = rng.poisson(i0 * np.exp(-proj.line_integrals))
    return -np.log(np.maximum(counts, 1) / i0)


def reconstruct(proj: Projection, line_integrals: np.ndarray, *, filter_name: str = "ramp") -> np.ndarray:
    """Filtered back projection -> HU, cropped to the input slice; pixels
    outside the field of view keep the input's values. ``filter_name`` is one
    of :data:`FBP_FILTERS` (ramp: sharp noise texture; hann: smooth)."""
    if filter_name not in FBP_FILTERS:
        raise ValueError(f"filter_name must be one of {FBP_FILTERS}, got {filter_name!r}")
    mu = iradon(line_integrals, proj.theta, circle=True, filter_name=filter_name) / proj.pixel_spacing_mm
    img = np.where(proj.fov, mu_to_hu(mu), proj.background)
    top, left, rows, cols = proj.crop
    return img[top:top + rows, left:left + cols].astype(np.float32)


def low_dose_pair(hu: np.ndarray, *, i0: float, pixel_spacing_mm: float,
                  rng: np.random.Generator, n_views: int = DEFAULT_VIEWS) -> tuple[np.ndarray, np.ndarray]:
    """Simulate a low-dose acquisition of one 2-D slice.

    Parameters
    ----------
    hu : (H, W) array
        The slice in HU (non-square slices are padded with air to a square).
    i0 : float
        Incident photons per detector bin and view (e.g. 1e5; lower = noisier).
    pixel_spacing_mm : float
        Pixel size in mm (isotropic in-plane); line integrals are in 1/mm * mm.
    rng : numpy.random.Generator
    n_views : int
        Projection angles over 180 degrees.

    Returns
    -------
    noisy, clean : (H, W) float32 arrays in HU
        FBP of the Poisson-noisy and of the noiseless sinogram. Pixels outside
        the reconstructed field of view keep their input values.
    """
    if not np.isfinite(i0) or i0 <= 0:
        raise ValueError(f"i0 (incident photons) must be > 0, got {i0}")
    proj = project(hu, pixel_spacing_mm=pixel_spacing_mm, n_views=n_views)
    noisy = reconstruct(proj, noisy_line_integrals(proj, i0=i0, rng=rng))
    return noisy, reconstruct(proj, proj.line_integrals)


NOISE_SECTORS = 8  # angular sectors of the fast noise's texture (the direction of its streaks)
NOISE_COARSE = 4  # the variance map is projected and back-projected on a grid this many times coarser


@functools.lru_cache(maxsize=4)
def _fbp_noise_spectrum(n: int, n_views: int) -> tuple[float, np.ndarray]:
    """The FBP (``iradon``, ramp) of unit-variance white sinogram noise on an ``n`` x ``n`` grid:
    its SD (in line-integral units) and its radial amplitude spectrum, sampled at ``n`` radii
    0..0.5 cycles/pixel and normalized to unit mean power over the 2-D frequency grid."""
    rng = np.random.default_rng(20260)
    theta = np.linspace(0.0, 180.0, n_views, endpoint=False)
    image = iradon(rng.standard_normal((n, n_views)), theta, circle=True, filter_name="ramp")
    half = max(8, int(n / (2 * np.sqrt(2))))  # the largest square well inside the reconstruction circle
    c = n // 2
    crop = image[c - half:c + half, c - half:c + half]
    power = np.abs(np.fft.fft2(crop - crop.mean())) ** 2
    f = np.hypot(*np.meshgrid(np.fft.fftfreq(crop.shape[0]), np.fft.fftfreq(crop.shape[1]), indexing="ij"))
    edges = np.linspace(0.0, np.sqrt(0.5), 48)
    which = np.clip(np.digitize(f.ravel(), edges) - 1, 0, len(edges) - 2)
    counts = np.bincount(which, minlength=len(edges) - 1)
    mean = np.bincount(which, power.ravel(), minlength=len(edges) - 1) / np.maximum(counts, 1)
    centres = 0.5 * (edges[1:] + edges[:-1])
    keep = counts > 0
    radii = np.linspace(0.0, np.sqrt(0.5), n)
    profile = np.sqrt(np.maximum(np.interp(radii, centres[keep], mean[keep]), 0.0))
    return float(crop.std()), profile


@functools.lru_cache(maxsize=4)
def _sector_filters(n: int, n_views: int, sectors: int) -> tuple[float, np.ndarray]:
    """The texture filters of :func:`low_dose_noise` on an ``n`` x ``n`` grid, on the half plane of
    ``numpy.fft.rfft2``: per angular sector, the FBP's amplitude spectrum inside the sector (0
    outside), scaled by ``1 / sqrt(share of the grid)`` so that each sector's field has unit mean
    power; (the FBP's SD for unit sinogram noise, (sectors, n, n // 2 + 1) float32)."""
    unit_sd, profile = _fbp_noise_spectrum(n, n_views)
    radii = np.linspace(0.0, np.sqrt(0.5), n)

    def grid(cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        fr, fc = np.meshgrid(np.fft.fftfreq(n), cols, indexing="ij")
        # a view at angle t measures along the detector direction (cos t, -sin t) in (col, row) terms
        return np.interp(np.hypot(fr, fc), radii, profile), np.mod(np.degrees(np.arctan2(-fr, fc)), 180.0)

    full_amplitude, full_angle = grid(np.fft.fftfreq(n))
    amplitude, angle = grid(np.fft.rfftfreq(n))
    amplitude = amplitude / np.sqrt(np.mean(full_amplitude ** 2))
    filters = np.zeros((sectors, n, n // 2 + 1), dtype=np.float32)
    for s in range(sectors):
        lo, hi = 180.0 * s / sectors, 180.0 * (s + 1) / sectors
        share = np.count_nonzero((full_angle >= lo) & (full_angle < hi)) / full_angle.size
        filters[s] = amplitude * ((angle >= lo) & (angle < hi)) / np.sqrt(share)
    return unit_sd, filters


@functools.lru_cache(maxsize=8)
def _linear_upsampling(m: int, n: int) -> np.ndarray:
    """(n, m) matrix of linear interpolation from ``m`` samples to ``n``, end points on end points
    (``U @ x @ U.T`` is ``scipy.ndimage.zoom(x, n / m, order=1)`` of an m x m ``x``)."""
    where = np.arange(n) * ((m - 1) / max(n - 1, 1))
    left = np.minimum(np.floor(where).astype(int), m - 2) if m > 1 else np.zeros(n, dtype=int)
    right_weight = where - left if m > 1 else np.zeros(n)
    out = np.zeros((n, m))
    out[np.arange(n), left] = 1.0 - right_weight
    if m > 1:
        out[np.arange(n), left + 1] += right_weight
    return out


def low_dose_noise(hu: np.ndarray, *, i0: float, pixel_spacing_mm: float, rng: np.random.Generator,
                   n_views: int = DEFAULT_VIEWS, sectors: int = NOISE_SECTORS,
                   coarse: int = NOISE_COARSE) -> np.ndarray:
    """A fast realization of the noise a low-dose scan of ``hu`` at ``i0`` adds.

    Parameters
    ----------
    hu : (H, W) array
        The slice in HU (non-square slices are padded with air, as for :func:`project`).
    i0 : float
        Incident photons per detector bin and view, as for :func:`low_dose_pair`.
    pixel_spacing_mm : float
        Pixel size in mm.
    rng : numpy.random.Generator
    n_views : int
        The views of the simulated acquisition (sets the noise level per ``i0``).
    sectors : int
        Angular sectors of the texture (1: isotropic noise).
    coarse : int
        Downsampling of the grid on which the variance map is computed.

    Returns
    -------
    (H, W) float32 array, HU
        Zero-mean noise, 0 outside the reconstructed field of view. Its local
        SD and its noise power spectrum follow ``low_dose_pair(...)[0] -
        low_dose_pair(...)[1]`` (within ~10 % on chest CT), at ~1/50 of the cost.

    Notes
    -----
    FBP noise is linear in the sinogram noise. The variance of a line integral
    is ``exp(p) / i0`` (the -log of a Poisson count), so the variance at a pixel
    is the mean, over the views, of that variance along the rays through it,
    times the FBP's gain for white noise (:func:`_fbp_noise_spectrum`). Views
    contribute along their own direction of the 2-D spectrum (the Fourier slice
    theorem), so each angular sector of the spectrum gets the variance of its
    own views.
    """
    if not np.isfinite(i0) or i0 <= 0:
        raise ValueError(f"i0 (incident photons) must be > 0, got {i0}")
    if not isinstance(rng, np.random.Generator):
        raise TypeError("rng must be a numpy.random.Generator (np.random.default_rng(seed))")
    padded, fov, (top, left, rows, cols) = _square(hu, pixel_spacing_mm, "low-dose noise")
    n = padded.shape[0]
    small = ndimage.zoom(hu_to_mu(padded) * fov, 1.0 / coarse, order=1)
    small = small * _fov(small.shape)
    views = max(4 * sectors, n_views // coarse)
    theta = np.linspace(0.0, 180.0, views, endpoint=False)
    variance = np.exp(radon(small, theta, circle=True) * pixel_spacing_mm * coarse) / i0
    unit_sd, filters = _sector_filters(n, n_views, sectors)
    white = np.fft.rfft2(rng.standard_normal((n, n)))
    fields = np.fft.irfft2(white * filters, s=(n, n))  # one unit-power texture per sector
    mean_var = []
    for s in range(sectors):
        views_s = (theta >= 180.0 * s / sectors) & (theta < 180.0 * (s + 1) / sectors)
        back = iradon(variance[:, views_s], theta[views_s], circle=True, filter_name=None) * (2.0 / np.pi)
        mean_var.append(np.maximum(back, 0.0) * (np.count_nonzero(views_s) / views))
    grow = _linear_upsampling(len(mean_var[0]), n)
    out = np.einsum("shw,shw->hw", np.sqrt(grow @ np.stack(mean_var) @ grow.T), fields)
    hu_noise = (1000.0 * unit_sd / (MU_WATER_PER_MM * pixel_spacing_mm)) * out * fov
    return hu_noise[top:top + rows, left:left + cols].astype(np.float32)
