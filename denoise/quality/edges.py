"""Sharpness at high-contrast edges found automatically: edge spread, 10-90 %
edge width and an MTF50 estimate.

:func:`find_edges` finds profiles across the air/body boundary, the one
high-contrast edge every CT slice of a patient has: short lines along the
boundary's normal where both sides are flat (air on one side, soft tissue on
the other), each centred on its own 50 % crossing. :func:`edge_spread`
samples an image along them (cubic spline) and averages them into one
oversampled edge spread function (ESF), as the slanted-edge method does with
an edge's many sub-pixel phases. Sampling a denoised image along the profiles
found on the original compares both on exactly the same edges.

References
----------
.. [1] ICRU Report 87 (2012), section 5: edge spread, line spread and MTF.
.. [2] S. N. Friedman et al., "A simple approach to measure computed
   tomography (CT) modulation transfer function (MTF) and noise-power spectrum
   (NPS) using the American College of Radiology (ACR) accreditation
   phantom", Med. Phys. 40(5):051907 (2013).
.. [3] E. Samei, M. J. Flynn, D. A. Reimann, "A method for measuring the
   presampled MTF of digital radiographic systems using an edge test device",
   Med. Phys. 25(1):102-113 (1998).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from denoise.body import body_mask

HALF_LENGTH_MM = 5.0  # profile from -5 to +5 mm about the edge
STEP_MM = 0.1
PLATEAU_MM = 2.5  # |offset| beyond this is plateau
AIR_HU = (-1100.0, -850.0)
TISSUE_HU = (-250.0, 250.0)
MIN_CONTRAST_HU = 600.0
MAX_PROFILES = 300
MIN_PROFILES = 10


@dataclass(frozen=True)
class EdgeSet:
    """Profiles across edges: where to sample, in pixel coordinates."""

    coords: np.ndarray  # (2, P, T) row and column of each sample of each profile
    offsets_mm: np.ndarray  # (T,) signed distance from the edge, air side negative

    @property
    def count(self) -> int:
        return int(self.coords.shape[1])


def _sample(image: np.ndarray, coords: np.ndarray, order: int) -> np.ndarray:
    flat = coords.reshape(2, -1)
    return ndimage.map_coordinates(image, flat, order=order, mode="nearest").reshape(coords.shape[1:])


def find_edges(hu: np.ndarray, pixel_spacing: tuple[float, float], *, max_profiles: int = MAX_PROFILES,
               half_length_mm: float = HALF_LENGTH_MM, step_mm: float = STEP_MM) -> EdgeSet | None:
    """Profiles across the air/body boundary with flat air and tissue sides.

    Parameters
    ----------
    hu : (H, W) array
        One slice in HU.
    pixel_spacing : (row, col) mm
    max_profiles : int, optional
        At most this many, spread evenly along the boundary.
    half_length_mm, step_mm : float, optional
        Each profile runs from ``-half_length_mm`` (air) to
        ``+half_length_mm`` (tissue) in steps of ``step_mm``.

    Returns
    -------
    EdgeSet or None
        None when fewer than :data:`MIN_PROFILES` edges qualify.

    Notes
    -----
    On the slice smoothed by a Gaussian of 1 pixel, a profile qualifies when
    its air side (beyond :data:`PLATEAU_MM`) has a median in
    :data:`AIR_HU`, its tissue side one in :data:`TISSUE_HU`, they differ by
    at least :data:`MIN_CONTRAST_HU`, and each side varies by less than 10 %
    (air) or 20 % (tissue) of that contrast. Its centre is moved to its own
    50 % crossing.
    """
    hu = np.asarray(hu, dtype=np.float64)
    if hu.ndim != 2 or min(hu.shape) < 16:
        return None
    dy, dx = (float(v) for v in pixel_spacing)
    body = body_mask(hu)
    boundary = body & ~ndimage.binary_erosion(body)
    ys, xs = np.nonzero(boundary)
    if ys.size < MIN_PROFILES:
        return None
    gy = ndimage.gaussian_filter(hu, 1.5, order=(1, 0)) / dy  # HU/mm
    gx = ndimage.gaussian_filter(hu, 1.5, order=(0, 1)) / dx
    g = np.hypot(gy[ys, xs], gx[ys, xs])
    strong = g > 100.0
    ys, xs, ny, nx = ys[strong], xs[strong], gy[ys, xs][strong] / g[strong], gx[ys, xs][strong] / g[strong]
    if ys.size < MIN_PROFILES:
        return None
    order = np.argsort(np.arctan2(ys - ys.mean(), xs - xs.mean()), kind="stable")  # around the body
    keep = order[np.unique(np.linspace(0, order.size - 1, min(order.size, 4 * max_profiles)).astype(int))]
    ys, xs, ny, nx = ys[keep], xs[keep], ny[keep], nx[keep]

    offsets = np.arange(-half_length_mm, half_length_mm + step_mm / 2, step_mm)
    smooth = ndimage.gaussian_filter(hu, 1.0)
    coords = _coords(ys, xs, ny, nx, offsets, dy, dx)
    prof = _sample(smooth, coords, order=1)  # (P, T)
    low_side, high_side = offsets <= -PLATEAU_MM, offsets >= PLATEAU_MM
    lo, hi = np.median(prof[:, low_side], axis=1), np.median(prof[:, high_side], axis=1)
    contrast = hi - lo
    ok = ((lo >= AIR_HU[0]) & (lo <= AIR_HU[1]) & (hi >= TISSUE_HU[0]) & (hi <= TISSUE_HU[1])
          & (contrast >= MIN_CONTRAST_HU)
          & (np.ptp(prof[:, low_side], axis=1) <= 0.1 * contrast)
          & (np.ptp(prof[:, high_side], axis=1) <= 0.2 * contrast))
    shift = _half_crossing(prof, offsets, (lo + hi) / 2)
    ok &= np.abs(shift) <= 1.5
    idx = np.flatnonzero(ok)
    if idx.size < MIN_PROFILES:
        return None
    idx = idx[np.unique(np.linspace(0, idx.size - 1, min(idx.size, max_profiles)).astype(int))]
    y0 = ys[idx] + shift[idx] * ny[idx] / dy
    x0 = xs[idx] + shift[idx] * nx[idx] / dx
    return EdgeSet(coords=_coords(y0, x0, ny[idx], nx[idx], offsets, dy, dx), offsets_mm=offsets)


def _coords(ys, xs, ny, nx, offsets, dy, dx) -> np.ndarray:
    """(2, P, T) pixel coordinates of profiles through (ys, xs) along the
    physical unit normal (ny, nx), at ``offsets`` mm."""
    rows = ys[:, None] + offsets[None, :] * ny[:, None] / dy
    cols = xs[:, None] + offsets[None, :] * nx[:, None] / dx
    return np.stack([rows, cols])


def _half_crossing(prof: np.ndarray, offsets: np.ndarray, level: np.ndarray) -> np.ndarray:
    """Per profile, the offset (mm) of the upward crossing of ``level`` nearest
    to zero offset, by linear interpolation; inf where there is none."""
    above = prof >= level[:, None]
    up = ~above[:, :-1] & above[:, 1:]  # (P, T-1): crossing between t and t+1
    a, b = prof[:, :-1], prof[:, 1:]
    frac = np.divide(level[:, None] - a, b - a, out=np.zeros_like(a), where=b != a)
    where = offsets[:-1][None, :] + frac * (offsets[1] - offsets[0])
    where = np.where(up, where, np.inf)
    pick = np.argmin(np.abs(where), axis=1)
    return where[np.arange(prof.shape[0]), pick]


def _flat_top(n: int, flat: float) -> np.ndarray:
    """Tukey window of ``n`` samples, 1 over the middle ``flat`` fraction with
    cosine tapers to 0 at both ends (scipy.signal.windows.tukey with alpha =
    1 - flat; written here because importing scipy.signal costs half a second)."""
    t = np.linspace(0.0, 1.0, n)
    taper = (1.0 - flat) / 2
    w = np.ones(n)
    if taper > 0:
        edge = np.minimum(t, 1.0 - t)
        ramp = edge < taper
        w[ramp] = 0.5 * (1 - np.cos(np.pi * edge[ramp] / taper))
    return w


def edge_spread(hu: np.ndarray, edges: EdgeSet) -> np.ndarray:
    """Mean edge spread function (HU) of ``hu`` along ``edges``' profiles.

    Parameters
    ----------
    hu : (H, W) array
    edges : EdgeSet
        From :func:`find_edges` on this image or on another of the same
        geometry (to compare both on the same edges).

    Returns
    -------
    (T,) float64 array
        Sampled with a cubic spline at ``edges.offsets_mm``.
    """
    return _sample(np.asarray(hu, dtype=np.float64), edges.coords, order=3).mean(axis=0)


def _normalised(offsets: np.ndarray, esf: np.ndarray) -> np.ndarray:
    offsets, esf = np.asarray(offsets, dtype=np.float64), np.asarray(esf, dtype=np.float64)
    lo = esf[offsets <= -PLATEAU_MM].mean()
    hi = esf[offsets >= PLATEAU_MM].mean()
    if not abs(hi - lo) > 0:
        raise ValueError("edge spread function has no contrast")
    return (esf - lo) / (hi - lo)


def edge_width(offsets: np.ndarray, esf: np.ndarray) -> float:
    """10-90 % rise distance (mm) of an edge spread function.

    Parameters
    ----------
    offsets : (T,) array, mm
        Increasing; both ends reach beyond :data:`PLATEAU_MM`.
    esf : (T,) array
        Edge spread function, rising from the low side to the high side.

    Returns
    -------
    float
        Distance between the 10 % and 90 % crossings next to the 50 %
        crossing nearest zero offset (levels relative to the mean of each
        plateau), so an overshoot beyond the edge does not count. For a
        Gaussian blur of SD ``s`` it is ``2 * 1.2816 * s``.
    """
    offsets = np.asarray(offsets, dtype=np.float64)
    e = _normalised(offsets, esf)
    above = e >= 0.5
    ups = np.flatnonzero(~above[:-1] & above[1:])
    if ups.size == 0:
        raise ValueError("edge spread function never crosses 50 %")
    i = int(ups[np.argmin(np.abs(offsets[ups]))])  # e[i] < 0.5 <= e[i + 1]
    low = i
    while low > 0 and e[low] >= 0.1:
        low -= 1
    high = i + 1
    while high < e.size - 1 and e[high] <= 0.9:
        high += 1
    if e[low] >= 0.1 or e[high] <= 0.9:
        raise ValueError("edge spread function does not span 10-90 %")
    t10 = np.interp(0.1, [e[low], e[low + 1]], [offsets[low], offsets[low + 1]])
    t90 = np.interp(0.9, [e[high - 1], e[high]], [offsets[high - 1], offsets[high]])
    return float(t90 - t10)


def mtf50(offsets: np.ndarray, esf: np.ndarray) -> float:
    """Frequency (cycles/mm) where the MTF from an edge spread function falls to 0.5.

    Parameters
    ----------
    offsets, esf : (T,) arrays
        As for :func:`edge_width`, evenly spaced.

    Returns
    -------
    float
        The line spread function (the ESF's derivative), tapered by a Tukey
        window that is flat within the plateau limits, Fourier transformed
        (zero-padded to 4096 samples) and normalised to 1 at zero frequency;
        the first crossing of 0.5 by linear interpolation. For a Gaussian blur
        of SD ``s`` it is ``sqrt(ln 2 / 2) / (pi s)``.
    """
    offsets = np.asarray(offsets, dtype=np.float64)
    step = float(offsets[1] - offsets[0])
    lsf = np.gradient(_normalised(offsets, esf), step)
    span = offsets[-1] - offsets[0]
    taper = _flat_top(offsets.size, float(np.clip(2 * PLATEAU_MM / span, 0.0, 1.0)))
    n = max(4096, offsets.size)
    mtf = np.abs(np.fft.rfft(lsf * taper, n=n))
    if not mtf[0] > 0:
        raise ValueError("line spread function has no area")
    mtf /= mtf[0]
    freq = np.fft.rfftfreq(n, d=step)
    below = np.flatnonzero(mtf < 0.5)
    if below.size == 0:
        raise ValueError("MTF never falls to 0.5 below the sampling limit")
    k = int(below[0])
    return float(np.interp(0.5, [mtf[k], mtf[k - 1]], [freq[k], freq[k - 1]]))
