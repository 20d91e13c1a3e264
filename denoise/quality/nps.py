"""Noise power spectrum (NPS) of CT noise, as ICRU 87 and AAPM TG-233 define it.

For square ROIs of noise (uniform regions, or differences of neighbouring
slices), each detrended::

    NPS(fx, fy) = dx dy / (Nx Ny) * < |DFT2(roi - trend)|^2 >      [HU^2 mm^2]

averaged over ROIs, so that its integral over frequency is the noise
variance. The 1-D NPS is its radial average over rings of width
``1 / (N dx)`` in cycles/mm up to the Nyquist frequency; texture is summarised
by its peak frequency and its mean frequency ``f_av = sum f NPS(f) /
sum NPS(f)``.

References
----------
.. [1] ICRU Report 87, "Radiation dose and image-quality assessment in
   computed tomography", J. ICRU 12(1) (2012), eq. 11.1.
.. [2] AAPM Report 233 (TG-233), "Performance evaluation of computed
   tomography systems" (2019), noise texture: NPS peak and average frequency.
.. [3] J. Solomon, J. Wilson, E. Samei, "Characteristic image quality of a
   third generation dual-source MDCT scanner: noise, resolution, and
   detectability", Med. Phys. 42(8):4941-4953 (2015).
"""

from __future__ import annotations

import numpy as np

from denoise.quality.noise_level import WINDOW_MM, local_sd, tissue_mask, window_pixels

NPS_TISSUE_HU = (-150.0, 150.0)  # fat to enhanced soft tissue
ROI_MM = 15.0  # side of an NPS ROI: small enough to fit between organs, frequency step ~0.07 cycles/mm
MAX_ROIS = 64  # per slice
STRUCTURE_FACTOR = 1.1  # an ROI whose detrended SD exceeds this x the noise SD holds anatomy
CALM_FACTOR = 1.5  # no local SD in a uniform ROI exceeds this x the noise SD
NO_POWER = 1e-9  # HU^2 mm^2: below this everywhere, there is no noise to describe


def box_sums(a: np.ndarray, h: int, w: int) -> np.ndarray:
    """Sum of ``a`` over every h x w window, indexed by its top-left pixel."""
    s = np.zeros((a.shape[0] + 1, a.shape[1] + 1))
    s[1:, 1:] = a.cumsum(0).cumsum(1)
    return s[h:, w:] - s[:-h, w:] - s[h:, :-w] + s[:-h, :-w]


def detrend(rois: np.ndarray, *, order: int = 2) -> np.ndarray:
    """Subtract from each ROI its least-squares polynomial surface.

    Parameters
    ----------
    rois : (M, h, w) array
    order : {0, 1, 2}, optional
        0 subtracts the mean (ICRU 87), 1 a plane, 2 a quadratic surface
        (TG-233's recommendation for patient images, which are never flat).

    Returns
    -------
    (M, h, w) float64 array
    """
    rois = np.asarray(rois, dtype=np.float64)
    if rois.ndim != 3:
        raise ValueError(f"detrend needs a stack of ROIs (M, h, w), got shape {rois.shape}")
    if order not in (0, 1, 2):
        raise ValueError(f"detrend order must be 0, 1 or 2, got {order}")
    m, h, w = rois.shape
    yy, xx = np.mgrid[:h, :w]
    y, x = (yy.ravel() - (h - 1) / 2) / max(h, 1), (xx.ravel() - (w - 1) / 2) / max(w, 1)
    terms = [np.ones_like(x)] + ([x, y] if order >= 1 else []) + ([x * x, x * y, y * y] if order >= 2 else [])
    design = np.stack(terms, axis=1)  # (h w, p)
    flat = rois.reshape(m, h * w).T  # (h w, M)
    coef, *_ = np.linalg.lstsq(design, flat, rcond=None)
    return (flat - design @ coef).T.reshape(m, h, w)


def roi_side(pixel_spacing: tuple[float, float], mm: float = ROI_MM) -> int:
    """Side in pixels of an NPS ROI about ``mm`` wide: even, 16 to 64."""
    n = int(round(mm / max(pixel_spacing) / 2)) * 2
    return int(np.clip(n, 16, 64))


def tissue_rois(hu: np.ndarray, pixel_spacing: tuple[float, float], *, size: int,
                hu_range: tuple[float, float] = NPS_TISSUE_HU) -> list[tuple[int, int]]:
    """Top-left corners (x, y), on a grid of stride ``size // 2``, of the
    ``size`` squares whose every pixel lies in ``hu_range`` once the slice is
    smoothed by a Gaussian of 1 mm; raster order."""
    hu = np.asarray(hu, dtype=np.float64)
    rows, cols = hu.shape
    if rows < size or cols < size:
        return []
    ok = tissue_mask(hu, (1.0 / pixel_spacing[0], 1.0 / pixel_spacing[1]), hu_range=hu_range)
    inside = box_sums(ok.astype(np.float64), size, size)
    stride = max(1, size // 2)
    ys, xs = np.meshgrid(np.arange(0, rows - size + 1, stride), np.arange(0, cols - size + 1, stride),
                         indexing="ij")
    full = inside[ys, xs] >= size * size - 0.5
    return [(int(x), int(y)) for y, x in zip(ys[full], xs[full], strict=True)]


def uniform_rois(hu: np.ndarray, pixel_spacing: tuple[float, float], *, size: int, noise_sd: float | None = None,
                 candidates: list[tuple[int, int]] | None = None, window_mm: float = WINDOW_MM,
                 max_rois: int = MAX_ROIS) -> list[tuple[int, int]]:
    """Top-left corners (x, y) of square ROIs of uniform tissue, for the NPS of one slice.

    Of the ``candidates`` (default :func:`tissue_rois`), an ROI qualifies
    when every one of its pixels has a local SD (over ``window_mm``) of at
    most :data:`CALM_FACTOR` x ``noise_sd`` (no edge between two tissues, no
    vessel runs through it) and its own SD once detrended (order 2) is at
    most :data:`STRUCTURE_FACTOR` x ``noise_sd``. Without ``noise_sd`` only
    the second test applies, with the median detrended SD of the candidates
    standing in for it. More than ``max_rois`` are thinned evenly, in raster
    order (deterministic).

    Anatomy left in an ROI puts power at the lowest frequencies, where CT
    noise (ramp-filtered) has little: on real chest slices looser limits moved
    the peak of a sharp kernel's NPS from about 0.4 to 0.07 cycles/mm.

    Parameters
    ----------
    hu : (H, W) array
    pixel_spacing : (row, col) mm
    size : int
        ROI side in pixels.
    noise_sd : float, optional
        The slice's noise level (:func:`denoise.quality.noise_sd`), HU.
    candidates : list of (x, y), optional
    window_mm : float, optional
    max_rois : int, optional

    Returns
    -------
    list of (x, y)
        Empty when none qualifies (or the image is smaller than one ROI).
    """
    hu = np.asarray(hu, dtype=np.float64)
    if candidates is None:
        candidates = tissue_rois(hu, pixel_spacing, size=size)
    if not candidates:
        return []
    xs, ys = (np.array(v) for v in zip(*candidates, strict=True))
    if noise_sd is not None:
        calm = local_sd(hu, window_pixels(pixel_spacing, window_mm)) <= CALM_FACTOR * noise_sd
        full = box_sums(calm.astype(np.float64), size, size)[ys, xs] >= size * size - 0.5
        xs, ys = xs[full], ys[full]
        if xs.size == 0:
            return []
    stack = np.stack([hu[y:y + size, x:x + size] for y, x in zip(ys, xs, strict=True)])
    sd = detrend(stack).std(axis=(1, 2), ddof=1)
    limit = STRUCTURE_FACTOR * (float(np.median(sd)) if noise_sd is None else float(noise_sd))
    keep = np.flatnonzero(sd <= limit)
    if keep.size > max_rois:
        keep = keep[np.unique(np.linspace(0, keep.size - 1, max_rois).round().astype(int))]
    return [(int(xs[k]), int(ys[k])) for k in keep]


def nps_2d(rois: np.ndarray, pixel_spacing: tuple[float, float], *, detrend_order: int = 2) -> np.ndarray:
    """2-D noise power spectrum of a stack of noise ROIs (ICRU 87 eq. 11.1).

    Parameters
    ----------
    rois : (M, Ny, Nx) array, HU
        Square or rectangular ROIs of noise, all one size.
    pixel_spacing : (row, col) mm
    detrend_order : int, optional
        Polynomial removed from each ROI first (see :func:`detrend`).

    Returns
    -------
    (Ny, Nx) float64 array, HU^2 mm^2
        Unshifted (zero frequency at ``[0, 0]``, as ``numpy.fft.fft2``).
        Frequencies are ``numpy.fft.fftfreq(N, d=spacing)`` per axis.

    Examples
    --------
    White noise of SD 10 HU has a flat NPS of 100 HU^2 times the pixel area:

    >>> rng = np.random.default_rng(0)
    >>> nps = nps_2d(rng.normal(0, 10, (200, 32, 32)), (0.5, 0.5), detrend_order=0)
    >>> round(float(nps.mean()), 0)
    25.0
    """
    rois = np.asarray(rois, dtype=np.float64)
    if rois.ndim == 2:
        rois = rois[None]
    if rois.ndim != 3 or rois.shape[0] == 0 or min(rois.shape[1:]) < 4:
        raise ValueError(f"nps_2d needs ROIs (M, Ny, Nx) of at least 4x4, got shape {rois.shape}")
    ny, nx = rois.shape[1:]
    power = np.abs(np.fft.fft2(detrend(rois, order=detrend_order))) ** 2
    return power.mean(axis=0) * (pixel_spacing[0] * pixel_spacing[1]) / (nx * ny)


def nps_variance(nps: np.ndarray, pixel_spacing: tuple[float, float]) -> float:
    """Integral of a 2-D NPS over frequency: the noise variance in HU^2."""
    ny, nx = nps.shape
    return float(nps.sum() / (nx * pixel_spacing[1] * ny * pixel_spacing[0]))


def radial_nps(nps: np.ndarray, pixel_spacing: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Radial average of a 2-D NPS.

    Parameters
    ----------
    nps : (Ny, Nx) array
        As :func:`nps_2d` returns it (unshifted).
    pixel_spacing : (row, col) mm

    Returns
    -------
    freq : (K,) array, cycles/mm
        Ring centres ``k * df``, ``df = max(1 / (Nx dx), 1 / (Ny dy))``,
        from 0 up to the Nyquist frequency of the coarser axis.
    values : (K,) array, HU^2 mm^2
        Mean of the 2-D NPS over each ring.
    """
    ny, nx = nps.shape
    fy = np.fft.fftfreq(ny, d=pixel_spacing[0])
    fx = np.fft.fftfreq(nx, d=pixel_spacing[1])
    radius = np.hypot(fy[:, None], fx[None, :])
    df = max(1.0 / (nx * pixel_spacing[1]), 1.0 / (ny * pixel_spacing[0]))
    nyquist = 0.5 / max(pixel_spacing)
    k_max = int(np.floor(nyquist / df + 1e-9))
    ring = np.rint(radius / df).astype(int).ravel()
    keep = ring <= k_max
    sums = np.bincount(ring[keep], weights=nps.ravel()[keep], minlength=k_max + 1)
    counts = np.bincount(ring[keep], minlength=k_max + 1)
    values = np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0)
    return np.arange(k_max + 1) * df, values


def nps_frequencies(freq: np.ndarray, values: np.ndarray) -> tuple[float, float]:
    """Peak and mean frequency of a 1-D NPS (cycles/mm).

    Parameters
    ----------
    freq, values : (K,) arrays
        From :func:`radial_nps`.

    Returns
    -------
    peak : float
        Frequency of the largest value above zero frequency, refined by a
        parabola through it and its neighbours.
    mean : float
        ``sum(f NPS(f)) / sum(NPS(f))`` (TG-233's average frequency), over
        the rings above zero frequency: the zero-frequency ring holds only
        what detrending left (rounding error), which must not weigh in.

    Raises
    ------
    ValueError
        For fewer than 3 rings, or no noise power (a noise-free image has no
        noise texture).
    """
    freq, values = np.asarray(freq, dtype=np.float64), np.asarray(values, dtype=np.float64)
    if freq.shape != values.shape or freq.size < 3:
        raise ValueError("nps_frequencies needs a 1-D NPS of at least 3 rings")
    f, v = freq[1:], values[1:]
    if not v.max() > NO_POWER:
        raise ValueError("no noise power: the regions are noise-free")
    k = 1 + int(np.argmax(v))
    peak = freq[k]
    if k < freq.size - 1:
        a, b, c = values[k - 1], values[k], values[k + 1]
        denom = a - 2 * b + c
        if denom < 0:
            peak += 0.5 * (a - c) / denom * (freq[1] - freq[0])
    return float(peak), float(np.sum(f * v) / np.sum(v))
