"""Noise texture and sharpness as pictures: 1-D NPS curves (log scale) beside
mean edge spread functions, one line per image kind, to a metadata-free PNG."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from denoise.atomic import atomic_path


def _xy(curve: dict | None, x_key: str, y_values) -> tuple[np.ndarray, np.ndarray] | None:
    if not curve or y_values is None:
        return None
    try:
        x, y = np.asarray(curve[x_key], dtype=np.float64), np.asarray(y_values, dtype=np.float64)
    except (KeyError, TypeError, ValueError):
        return None
    if x.shape != y.shape or x.ndim != 1 or x.size < 2:
        return None
    keep = np.isfinite(x) & np.isfinite(y)
    return x[keep], y[keep]


def _normalised_esf(offsets: np.ndarray, esf: np.ndarray) -> np.ndarray:
    """0 at the mean of the air side, 1 at the mean of the tissue side (beyond 2.5 mm)."""
    lo, hi = esf[offsets <= -2.5].mean(), esf[offsets >= 2.5].mean()
    return (esf - lo) / (hi - lo) if abs(hi - lo) > 0 else esf * np.nan


def quality_curves(lines: Sequence[tuple[str, dict | None, dict | None]], path: str | os.PathLike, *,
                   title: str = "") -> bool:
    """Plot NPS curves and edge spread functions to a PNG.

    Parameters
    ----------
    lines : sequence of (label, nps, esf)
        ``nps`` is ``{"freq_mm": [...], "nps_hu2mm2": [...]}`` and ``esf``
        ``{"offset_mm": [...], "esf_hu": [...]}`` (either may be None), as
        :meth:`denoise.quality.Quality.nps_curve` and ``esf_curve`` give them.
    path : path of the PNG
    title : str, optional

    Returns
    -------
    bool
        False (and nothing written) when no line has data.
    """
    fig = Figure(figsize=(10.0, 3.8), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax_nps, ax_esf = fig.subplots(1, 2)
    drawn = {ax_nps: False, ax_esf: False}
    for k, (label, nps, esf) in enumerate(lines):
        style = {"color": f"C{k % 10}", "label": str(label), "linestyle": "-" if k < 10 else "--"}
        xy = _xy(nps, "freq_mm", (nps or {}).get("nps_hu2mm2"))
        if xy is not None:
            x, y = xy
            positive = (x > 0) & (y > 0)  # the zero-frequency ring is ~0 after detrending: not on a log axis
            if positive.any():
                ax_nps.plot(x[positive], y[positive], marker="o", markersize=2.5, **style)
                drawn[ax_nps] = True
        xy = _xy(esf, "offset_mm", (esf or {}).get("esf_hu"))
        if xy is not None:
            e = _normalised_esf(*xy)
            if np.isfinite(e).any():
                ax_esf.plot(xy[0], e, **style)
                drawn[ax_esf] = True
    if not any(drawn.values()):
        return False
    ax_nps.set(yscale="log", xlabel="spatial frequency (cycles/mm)", ylabel="NPS (HU² mm²)",
               title="noise power spectrum (radial)")
    ax_esf.set(xlabel="distance from the air/body edge (mm)", ylabel="normalised edge profile",
               title="mean edge spread function")
    for ax in (ax_nps, ax_esf):
        ax.grid(alpha=0.3)
        if drawn[ax]:
            ax.legend(loc="best", fontsize=8)
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    if drawn[ax_esf]:
        for level in (0.1, 0.9):
            ax_esf.axhline(level, color="0.7", linewidth=0.8)
    if title:
        fig.suptitle(title, fontsize=10)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", metadata={"Software": None})
    return True


def residual_window(residual: np.ndarray, *, minimum: float = 20.0) -> tuple[float, float]:
    """A symmetric display window for a residual image: +-3 robust SDs
    (1.4826 x the median absolute deviation), at least +-``minimum`` HU,
    rounded to 10 HU."""
    r = np.asarray(residual, dtype=np.float64)
    r = r[np.isfinite(r)]
    spread = 1.4826 * float(np.median(np.abs(r - np.median(r)))) if r.size else 0.0
    half = max(minimum, 10.0 * math.ceil(3.0 * spread / 10.0))
    return -half, half
