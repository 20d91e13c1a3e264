"""The tables of the results, declared once: each column names a key of the
result's JSON, its label, its unit and how its numbers are written. The
terminal (``ct-denoise evaluate``, ``qa``, ``info``) and the HTML report
(``ct-denoise report``) both build their tables from these declarations,
each in its own :class:`Style`:

* :data:`TEXT`, the terminal: short headers (``noise SD HU``), ``-`` for a
  missing number, ``a -> b`` for before and after, aligned plain columns
  (:meth:`Table.lines`: readable in logs and pipes, any terminal width);
* :data:`HTML`, the report: full headers (``noise SD (HU)``), ``n/a``,
  ``a → b``, a table dict for :func:`denoise.report.render_html`
  (:meth:`Table.html`).

:data:`QA_FORMAT` names the document ``ct-denoise qa --json`` writes and the report reads.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from denoise.text import printable

NOISY_LABEL = "noisy input"  # the noisy input's row in evaluate's comparison (the report marks it)
QA_FORMAT = "ct-denoise qa"  # the "format" of the document `ct-denoise qa --json` writes and the report reads


@dataclass(frozen=True)
class Column:
    key: str  # the key in the result's JSON
    label: str
    unit: str = ""
    fmt: str | Callable[[object], str] = ""  # a format spec for numbers; "" for text; or a function
    short: str = ""  # the terminal's header, where label and unit are too wide for it


def _number(value, fmt: str, missing: str) -> str:
    """``value`` formatted by ``fmt``; ``missing`` for None, NaN or what is not a number."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return missing
    return missing if math.isnan(value) else format(value, fmt)


@dataclass(frozen=True)
class Style:
    missing: str
    arrow: str
    full: bool  # full headers, "label (unit)"; else the short ones, "label unit"

    def head(self, column: Column, paired: bool = False) -> str:
        if not self.full:
            return column.short or f"{column.label} {column.unit}".rstrip()
        text = f"{column.label} ({column.unit})" if column.unit else column.label
        return f"{text}: before {self.arrow} after" if paired else text

    def cell(self, column: Column, value) -> str:
        if value is None or (isinstance(value, str | list | tuple) and not value):
            return self.missing
        if callable(column.fmt):
            return column.fmt(value)
        return _number(value, column.fmt, self.missing) if column.fmt else str(value)

    def value(self, record: Mapping, key: str) -> str:
        """``record[key]`` as its declared column writes it (one of :data:`METRICS`, :data:`QUALITY` ...)."""
        return self.cell(BY_KEY[key], record.get(key))

    def cells(self, columns: Iterable[Column], record: Mapping | None) -> list[str]:
        record = record if isinstance(record, Mapping) else {}
        return [self.cell(c, record.get(c.key)) for c in columns]


TEXT = Style(missing="-", arrow="->", full=False)
HTML = Style(missing="n/a", arrow="→", full=True)


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]

    def lines(self, right: bool = True) -> list[str]:
        """Aligned plain columns under a rule; numbers (all but the first column) right-aligned."""
        rows = [[printable(c) for c in r] for r in [self.header, *self.rows]]
        widths = [max(len(r[k]) for r in rows) for k in range(len(self.header))]
        out = []
        for r in rows:
            out.append("  ".join(c.rjust(w) if right and k else c.ljust(w)
                                 for k, (c, w) in enumerate(zip(r, widths, strict=True))).rstrip())
        out.insert(1, "  ".join("-" * w for w in widths))
        return out

    def html(self, caption: str, **extra) -> dict:
        return {"caption": caption, "columns": self.header, "rows": self.rows, **extra}


def _spacing(value) -> str:
    return "x".join(f"{v:.3g}" for v in value)


# ------------------------------------------------------------ the declarations

# evaluate: reference metrics per file, their mean and each method's mean
METRICS = (Column("psnr", "PSNR", "dB", ".2f"), Column("ssim", "SSIM", fmt=".4f"),
           Column("rmse_hu", "RMSE", "HU", ".1f"), Column("mse", "MSE", fmt=".3e"),
           Column("seconds_per_slice", "seconds per slice", fmt=".3g", short="s/slice"))
# evaluate and qa: the no-reference measures of an image ...
QUALITY = (Column("noise_sd_hu", "noise SD", "HU", ".1f"),
           Column("nps_peak_freq_mm", "NPS peak", "cycles/mm", ".3f", short="NPS peak /mm"),
           Column("nps_mean_freq_mm", "NPS mean", "cycles/mm", ".3f", short="NPS mean /mm"),
           Column("edge_width_mm", "edge 10-90 %", "mm", ".2f", short="edge 10-90 mm"),
           Column("mtf50_per_mm", "MTF50", "cycles/mm", ".3f", short="MTF50 /mm"))
# ... what processing changed (qa: before -> after) ...
CHANGE = (Column("noise_reduction_pct", "noise reduction", "%", ".0f"),
          Column("edge_width_change_pct", "edge width change", "%", "+.1f", short="edge +%"))
# ... and the residual, what it removed (qa: before - after; evaluate: noisy input - output)
RESIDUAL = (Column("residual_sd_hu", "residual SD", "HU", ".1f", short="resid SD HU"),
            Column("residual_structure", "residual structure", fmt=".2f", short="resid struct"))
def _scanner(record: Mapping) -> str:
    return " ".join(p for p in (record.get("manufacturer"), record.get("model")) if p)


# info: one row per series (after its number in the listing, what adapt --series takes, and its shortened
# UID): what it is and its geometry ...
SERIES = (Column("series_number", "series no.", short="no."), Column("slices", "slices"), Column("size", "size"),
          Column("pixel_spacing_mm", "pixel", "mm", _spacing),
          Column("slice_thickness_mm", "thickness", "mm", ".3g", short="thick mm"),
          Column("slice_spacing_mm", "spacing", "mm", ".3g"),  # between slice positions
          Column("transfer_syntax", "transfer syntax"), Column("description", "description"))
# ... and how it was acquired and reconstructed
ACQUISITION = (Column("kernel", "kernel"), Column("kvp", "kVp", fmt=".4g"),
               Column("exposure_mas", "exposure", "mAs", ".4g", short="mAs"),
               Column("ctdi_vol_mgy", "CTDIvol", "mGy", ".3g"), Column("image_type", "type"),
               Column("scanner", "scanner"))
SERIES_DERIVED = {"scanner": _scanner}  # columns made of several keys of the record

BY_KEY = {c.key: c for c in METRICS + QUALITY + CHANGE + RESIDUAL}


def pick(columns: Iterable[Column], *keys: str) -> list[Column]:
    """The columns of ``keys``, in that order."""
    by_key = {c.key: c for c in columns}
    return [by_key[k] for k in keys]


Names = str | Sequence[str]  # one name column, or several (none: ())


def _names(names: Names) -> list[str]:
    return [names] if isinstance(names, str) else [str(n) for n in names]


def table(style: Style, first: Names, columns: Iterable[Column], records: Iterable[tuple[Names, Mapping]]) -> Table:
    """One row per (name, record): the name(s), then the record's value of each column."""
    columns = list(columns)
    return Table([*_names(first), *(style.head(c) for c in columns)],
                 [[*_names(name), *style.cells(columns, record)] for name, record in records])


def quality_table(style: Style, measured: Mapping[str, Mapping]) -> Table:
    """evaluate's no-reference measures: one row per image kind (reference, test, noisy input, baselines)."""
    return table(style, "image", QUALITY + RESIDUAL, [(str(k), v) for k, v in measured.items()])


def qa_table(style: Style, first: Names, records: Iterable[tuple[Names, Mapping]], paired: bool) -> Table:
    """qa's rows (a file, a series or the mean): the measures of BEFORE; when
    paired, before -> after, then the change and the residual."""
    header = [style.head(c, paired) for c in QUALITY] + ([style.head(c) for c in CHANGE + RESIDUAL] if paired else [])
    return Table([*_names(first), *header], [[*_names(name), *qa_cells(style, record, paired)]
                                             for name, record in records])


def qa_cells(style: Style, record: Mapping, paired: bool) -> list[str]:
    before = style.cells(QUALITY, record.get("before"))
    if not paired:
        return before
    after = style.cells(QUALITY, record.get("after"))
    return ([f"{b} {style.arrow} {a}" for b, a in zip(before, after, strict=True)]
            + style.cells(CHANGE, record.get("change")) + style.cells(RESIDUAL, record))
