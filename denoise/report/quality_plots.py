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
from denoise.report.panels import DISPLAY_WIDTH


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


ESF_SHIFT = 0.5  # each edge profile is drawn this much above the one before it
# colour, line style and marker per line, so lines that coincide can still be told apart
STYLES = (("-", "o"), ("--", "s"), ("-.", "^"), (":", "D"), ("-", "v"), ("--", "P"), ("-.", "X"), (":", "*"))


def quality_curves(lines: Sequence[tuple[str, dict | None, dict | None]], path: str | os.PathLike, *,
                   title: str = "") -> bool:
    """Plot NPS curves and edge spread functions to a PNG.

    The NPS lines share one log axis, each in its own colour, line style and
    marker; the edge profiles are normalised (0 air, 1 tissue) and each is
    shifted up by :data:`ESF_SHIFT` from the one before it, named at its right
    end, with the first line's profile dashed in grey under every later one to
    compare against. One legend serves both plots.

    Parameters
    ----------
    lines : sequence of (label, nps, esf)
        ``nps`` is ``{"freq_mm": [...], "nps_hu2mm2": [...]}`` and ``esf``
        ``{"offset_mm": [...], "esf_hu": [...]}`` (either may be None), as
        :meth:`denoise.quality.Quality.nps_curve` and ``esf_curve`` give them.
        The first line is the one the others are compared with (the reference,
        or BEFORE).
    path : path of the PNG
    title : str, optional

    Returns
    -------
    bool
        False (and nothing written) when no line has data.
    """
    import matplotlib

    with matplotlib.rc_context({"font.size": 11, "legend.fontsize": 11}):
        fig = Figure(figsize=(DISPLAY_WIDTH / 100, 4.8), dpi=100, layout="constrained")
        FigureCanvasAgg(fig)
        ax_nps, ax_esf = fig.subplots(1, 2)
        drawn = {ax_nps: False, ax_esf: False}
        handles, first_esf, shift = [], None, 0
        for k, (label, nps, esf) in enumerate(lines):
            linestyle, marker = STYLES[k % len(STYLES)]
            style = {"color": f"C{k % 10}", "linestyle": linestyle, "linewidth": 1.6}
            handle = None
            xy = _xy(nps, "freq_mm", (nps or {}).get("nps_hu2mm2"))
            if xy is not None:
                x, y = xy
                positive = (x > 0) & (y > 0)  # the zero-frequency ring is ~0 after detrending: not on a log axis
                if positive.any():
                    handle, = ax_nps.plot(x[positive], y[positive], marker=marker, markersize=4, label=str(label),
                                          **style)
                    drawn[ax_nps] = True
            xy = _xy(esf, "offset_mm", (esf or {}).get("esf_hu"))
            if xy is not None:
                e = _normalised_esf(*xy)
                keep = np.isfinite(e)
                if keep.any():
                    x, e = xy[0][keep], e[keep]
                    base = shift * ESF_SHIFT
                    if first_esf is None:
                        first_esf = (x, e)
                    else:
                        ax_esf.plot(first_esf[0], first_esf[1] + base, color="0.6", linestyle="--", linewidth=1.0)
                    line, = ax_esf.plot(x, e + base, marker=marker, markersize=3, markevery=max(1, x.size // 12),
                                        label=str(label), **style)
                    ax_esf.annotate(str(label), (x[-1], e[-1] + base), xytext=(4, 0), textcoords="offset points",
                                    va="center", color=style["color"])
                    handle = handle or line
                    drawn[ax_esf] = True
                    shift += 1
            if handle is not None:
                handles.append(handle)
        if not any(drawn.values()):
            return False
        ax_nps.set(yscale="log", xlabel="spatial frequency (cycles/mm)", ylabel="NPS (HU² mm²)",
                   title="noise power spectrum (radial)")
        ax_esf.set(xlabel="distance from the air/body edge (mm)",
                   ylabel=f"edge profile (0 air, 1 tissue),\neach {ESF_SHIFT:g} above the last",
                   title="mean edge spread function")
        if drawn[ax_esf]:
            low, high = ax_esf.get_xlim()
            ax_esf.set_xlim(low, high + 0.5 * (high - low))  # room for the names at the right end
        for ax in (ax_nps, ax_esf):
            ax.grid(alpha=0.3)
            if not drawn[ax]:
                ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        fig.legend(handles, [h.get_label() for h in handles], loc="outside right center")
        if title:
            fig.suptitle(title)
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
