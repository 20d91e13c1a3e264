"""How much noise the network removes: the noise-level input it is given
(FFDNet-style input maps) and the strength of its correction.

A model whose architecture has ``noise_level_input`` takes three channels:

0. the image in model space;
1. the noise level: the SD of the noise to remove, in model units (HU /
   (high - low)), times :data:`LEVEL_SCALE` so that typical levels are
   ~0.05-1 like the image;
2. 1 where that level is given, 0 where the network must judge it itself
   (blind: the level channel is then 0).

Training gives the true level (the SD of the noise actually added) to part
of the patches and none to the rest, so one network serves both ``denoise
--noise-sd HU`` and the default blind use. A level of 0 given as known means
"there is no noise to remove": trained on pairs with nothing added, the
network learns to leave such an image alone.

References
----------
.. [1] K. Zhang, W. Zuo, L. Zhang, "FFDNet: Toward a fast and flexible
   solution for CNN-based image denoising", IEEE TIP 27(9):4608-4622 (2018).
"""

from __future__ import annotations

import numpy as np

LEVEL_SCALE = 10.0
CHANNELS = 3

# --strength: the share of the network's correction that is applied (output = input + strength x
# (network - input)), as vendors blend their iterative/deep-learning reconstructions.
STRENGTHS = {"low": 1 / 3, "medium": 2 / 3, "high": 1.0}
DEFAULT_STRENGTH = "high"


def parse_strength(value) -> float:
    """``low``/``medium``/``high`` or a number 0..1 -> the share of the correction applied."""
    if isinstance(value, str) and value.strip().lower() in STRENGTHS:
        return STRENGTHS[value.strip().lower()]
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"--strength must be low, medium, high or a number 0..1, got {value!r}") from None
    if not 0.0 <= number <= 1.0:
        raise ValueError(f"--strength must be low, medium, high or a number 0..1, got {value!r}")
    return number


def strength_level(value: float) -> str | None:
    """The level name (low/medium/high) of a strength, or None for another number."""
    return next((k for k, v in STRENGTHS.items() if abs(v - value) < 1e-9), None)


def strength_name(value: float) -> str:
    """``0.667 (medium)`` style label of a strength."""
    level = strength_level(value)
    return f"{value:.3g}" + (f" ({level})" if level else "")


def network_input(x, level=None, *, known=None):
    """The conditioned network's input for images ``x`` (N, H, W, 1 + 2n).

    Parameters
    ----------
    x : (N, H, W, 1 + 2n) array, model space
        The image, then its ``n`` neighbour slices on each side (2.5-D models).
    level : float or (N,) array, optional
        SD of the noise to remove, model units; None: blind for every image.
    known : (N,) bool array, optional
        Which images' level is given (default: all when ``level`` is given);
        the level of the others is zeroed.

    Returns
    -------
    (N, H, W, 3 + 2n) array of ``x``'s dtype and array module: the image, the
    level and flag maps, the neighbours.
    """
    n, h, w, _ = x.shape
    xp = np if isinstance(x, np.ndarray) else _module(x)
    if level is None:
        flag = xp.zeros((n,), dtype=x.dtype)
        value = flag
    else:
        value = xp.broadcast_to(xp.asarray(level, dtype=x.dtype), (n,))
        flag = (xp.ones((n,), dtype=x.dtype) if known is None
                else xp.asarray(known, dtype=x.dtype).reshape(n))
        value = value * flag * x.dtype.type(LEVEL_SCALE)
    maps = xp.broadcast_to(xp.stack([value, flag], axis=1)[:, None, None, :], (n, h, w, 2))
    return xp.concatenate([x[..., :1], maps.astype(x.dtype), x[..., 1:]], axis=3)


LIMIT_FACTOR = 1.3  # a given level's local removal may exceed it by this much (noise fluctuates)
LIMIT_SCALE_PX = 3.0  # Gaussian scale of the local RMS


def limit_correction(correction: np.ndarray, level: float, *, factor: float = LIMIT_FACTOR,
                     scale_px: float = LIMIT_SCALE_PX) -> np.ndarray:
    """Scale a correction (input - output, one 2-D slice) down wherever its
    local RMS exceeds ``factor`` x ``level``.

    Parameters
    ----------
    correction : (H, W) array
        What the network would remove.
    level : float
        The noise SD the user says the input holds, same units.
    factor, scale_px : float, optional
        Headroom for the local fluctuation of removed noise, and the Gaussian
        scale (pixels) of the local RMS.

    Returns
    -------
    (H, W) array
        ``correction * min(1, factor * level / local_rms)``: never more than
        the stated noise is removed anywhere (so a level of 0 leaves the image
        exactly as it is), and an edge the network would blur, where the
        correction's energy piles up, is kept. Monotone in ``level``.
    """
    from scipy import ndimage

    c = np.asarray(correction, dtype=np.float32)
    if level <= 0:
        return np.zeros_like(c)
    local = np.sqrt(ndimage.gaussian_filter(c * c, scale_px))
    return c * np.minimum(1.0, np.float32(factor * level) / np.maximum(local, np.float32(1e-12)))


def blind_input(model, x):
    """``x`` (N, H, W, 1 + 2n) as ``model`` takes it with no level given:
    itself for a plain model, with blind level maps for a conditioned one.
    Images alone (N, H, W, 1) given to a 2.5-D model stand in for their
    neighbours (as a single file is denoised)."""
    if x.shape[-1] == 1 and model.neighbours:
        x = x[..., [0] * (1 + 2 * model.neighbours)]
    return network_input(x) if model.conditioned else x


def _module(x):
    from denoise.backend import get_array_module

    return get_array_module(x)
