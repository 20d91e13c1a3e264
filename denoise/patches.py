"""Training patches: sampled from whole slices, mostly-air patches skipped,
random flips/90-degree rotations, noise added on the fly. Vectorized over the
batch (fancy indexing), never a Python loop over patches.

All arrays are in model space (see :mod:`denoise.normalize`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BODY_HU = -500.0  # pixels above this count as "inside the patient" for patch selection
_GRID = 8  # candidate patch corners lie on this grid (plus random jitter)


@dataclass
class PatchSource:
    """Same-shaped slices to cut patches from.

    ``targets`` (S, H, W) are the clean images; ``inputs`` (S, H, W), when
    given, are pre-noised versions (low-dose realizations) cut at the same
    places; otherwise the caller adds noise to the target patches.
    """

    targets: np.ndarray
    inputs: np.ndarray | None
    corners: np.ndarray  # (K, 3) int: slice index, row, col of acceptable patches
    size: int
    context: np.ndarray | None = None  # (S, C, H, W): each slice's neighbours (2.5-D), cut at the same places

    @classmethod
    def build(cls, targets: np.ndarray, body: np.ndarray, *, size: int, min_body_fraction: float,
              inputs: np.ndarray | None = None, context: np.ndarray | None = None) -> PatchSource:
        """Find every grid corner whose ``size`` x ``size`` patch is at least
        ``min_body_fraction`` body (``body`` is a bool (S, H, W) mask)."""
        s, h, w = targets.shape
        if h < size or w < size:
            raise ValueError(f"slices of {h}x{w} are smaller than the patch size {size}")
        integral = np.zeros((s, h + 1, w + 1), dtype=np.int64)
        integral[:, 1:, 1:] = body.cumsum(1).cumsum(2)
        rows = np.arange(0, h - size + 1, _GRID)
        cols = np.arange(0, w - size + 1, _GRID)
        r, c = rows[:, None], cols[None, :]
        counts = (integral[:, r + size, c + size] - integral[:, r, c + size]
                  - integral[:, r + size, c] + integral[:, r, c])  # (S, R, C)
        ok = counts >= min_body_fraction * size * size
        si, ri, ci = np.nonzero(ok)
        corners = np.stack([si, rows[ri], cols[ci]], axis=1)
        return cls(targets, inputs, corners, size, context)

    def __len__(self) -> int:
        return len(self.corners)

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None]:
        """``n`` patches (n, size, size) of targets (and of inputs if present)."""
        return self.sample_with_context(n, rng)[:2]

    def sample_with_context(self, n: int, rng: np.random.Generator):
        """As :meth:`sample`, with the context's patches (n, C, size, size) at the same places (or None)."""
        if len(self.corners) == 0:
            raise ValueError("no patch position has enough body; lower patches.min_body_fraction")
        pick = self.corners[rng.integers(0, len(self.corners), size=n)]
        h, w = self.targets.shape[1:]
        jitter = rng.integers(0, _GRID, size=(n, 2))
        r0 = np.minimum(pick[:, 1] + jitter[:, 0], h - self.size)
        c0 = np.minimum(pick[:, 2] + jitter[:, 1], w - self.size)
        offs = np.arange(self.size)
        idx = (pick[:, 0, None, None], r0[:, None, None] + offs[None, :, None],
               c0[:, None, None] + offs[None, None, :])
        context = None
        if self.context is not None:
            channels = np.arange(self.context.shape[1])[None, :, None, None]
            context = self.context[idx[0][:, None], channels, idx[1][:, None], idx[2][:, None]]
        return self.targets[idx], (self.inputs[idx] if self.inputs is not None else None), context


def augment(arrays: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """Apply the same random dihedral transform (flip + 90-degree rotation)
    to the n-th patch of every array in ``arrays`` (each (n, p, p))."""
    n = arrays[0].shape[0]
    code = rng.integers(0, 8, size=n)
    out = [a.copy() for a in arrays]
    for k in range(1, 8):  # loop over the 7 non-identity transforms, not over patches
        sel = np.nonzero(code == k)[0]
        if sel.size == 0:
            continue
        for a, o in zip(arrays, out, strict=True):
            t = a[sel]
            if k & 4:
                t = t[:, :, ::-1]
            o[sel] = np.rot90(t, k & 3, axes=(1, 2))
    return out


def gaussian_batch(clean: np.ndarray, sigma_range: tuple[float, float], rng: np.random.Generator,
                   log_fraction: float = 0.0) -> np.ndarray:
    """Add white Gaussian noise with a per-patch sigma drawn uniformly from
    ``sigma_range`` (model-space units) to clean patches (n, p, p).

    With ``log_fraction`` > 0 that share of the patches draws sigma log-uniformly
    instead, over [max(low, high / 100), high]: more patches at low noise, where
    an L2 loss dominated by the noisiest patches otherwise gives little signal.
    """
    return gaussian_noise(clean, sigma_range, rng, log_fraction)[0]


def gaussian_noise(clean: np.ndarray, sigma_range: tuple[float, float], rng: np.random.Generator,
                   log_fraction: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """As :func:`gaussian_batch`, also returning each patch's sigma (n,)."""
    n = clean.shape[0]
    lo, hi = sigma_range
    sigma = rng.uniform(lo, hi, size=n)
    if log_fraction > 0 and hi > 0:
        log_lo = np.log(max(lo, hi / 100.0))
        use_log = rng.random(n) < log_fraction
        sigma = np.where(use_log, np.exp(rng.uniform(log_lo, np.log(hi), size=n)), sigma)
    sigma = sigma.astype(np.float32).reshape(n, 1, 1)
    return clean + sigma * rng.standard_normal(clean.shape, dtype=np.float32), sigma.reshape(n)


def _bilinear_matrix(n_out: int, n_in: int) -> np.ndarray:
    """(n_out, n_in) matrix that linearly interpolates n_in samples to n_out."""
    pos = np.linspace(0.0, n_in - 1.0, n_out)
    lo = np.minimum(np.floor(pos).astype(int), n_in - 2)
    frac = pos - lo
    m = np.zeros((n_out, n_in), dtype=np.float32)
    m[np.arange(n_out), lo] = 1.0 - frac
    m[np.arange(n_out), lo + 1] = frac
    return m


def hard_edge_batch(clean: np.ndarray, fraction: float, value_range: tuple[float, float],
                    rng: np.random.Generator, grid: int = 5) -> np.ndarray:
    """Replace a random smooth-bounded region of about ``fraction`` of the clean
    patches (n, p, p) with a constant (drawn from ``value_range``, model units).

    Why: scanners pad outside the field of view, and masked or skull-stripped
    series put -1024 HU right against tissue, with a step sharper than any the
    scanner's point spread leaves in the training slices. Without such steps the
    network learns that every edge is blurred and smears them. The region is a
    thresholded bilinear random field: blobs, holes and curved borders.
    """
    n, p = clean.shape[0], clean.shape[1]
    pick = np.nonzero(rng.random(n) < fraction)[0]
    if pick.size == 0:
        return clean
    up = _bilinear_matrix(p, grid)
    field = np.einsum("ij,njk,lk->nil", up, rng.standard_normal((pick.size, grid, grid), dtype=np.float32), up)
    threshold = rng.uniform(-0.6, 0.6, size=(pick.size, 1, 1)).astype(np.float32)
    value = rng.uniform(*value_range, size=(pick.size, 1, 1)).astype(np.float32)
    out = clean.copy()
    out[pick] = np.where(field > threshold, value, clean[pick])
    return out
