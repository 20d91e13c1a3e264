"""Report sections for the no-reference measures: the quality table and NPS /
edge-profile plot of an evaluation, and the sections of a ``ct-denoise qa
--json`` result (series and file tables, curves, before | after | residual
panels with the regions where it measured).

Writes, beside the report's index.html::

    quality.png      evaluation: NPS and edge profiles of every image kind
    qa_curves_N.png  qa: NPS and edge profiles before/after, per series (up to 4)
    qa_panel_N.png   qa: before | after | residual (up to 3 files)
    qa_regions_N.png qa: the same slice with the NPS ROIs and edge profiles it used
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from denoise.report.parts import Scrub, read_slice, scale_text, spread, window_text
from denoise.report.quality_plots import ESF_SHIFT
from denoise.tables import HTML, QA_FORMAT, qa_table, quality_table
from denoise.text import one_line

QA_JSON = "qa.json"
MAX_QA_PANELS = 3
MAX_QA_CURVES = 4
PANEL_MAX_SIDE = 512
ROI_COLOUR = np.array([255, 80, 0], dtype=np.uint8)
EDGE_COLOUR = np.array([0, 200, 255], dtype=np.uint8)

QA_PAIRED_HOW = ("No reference here: AFTER is judged against BEFORE. Noise SD should fall (noise reduction, %). "
                 "The NPS mean frequency falls as the noise gets coarser: a large drop means a blotchy, waxy look "
                 "even where the noise SD is right. Edge width change near 0 % (positive: edges blurred; MTF50 "
                 "falls with it). Residual structure near 0: what was removed looks like noise; higher: anatomy "
                 "went with it. n/a: not measurable (no uniform region or no air/body edge).")
QA_FILES_HOW = ("One row per file: read it as the per-series table above. A file unlike the others of its series "
                "is worth a look.")
QA_HOW = ("Each image as it is, without a reference: noise SD (lower is less noisy), the NPS frequencies (lower: "
          "coarser noise), the edge 10-90 % width and MTF50 (sharper: narrower edge, higher MTF50). Compare "
          "series of one kind of scan only. n/a: not measurable (no uniform region or no air/body edge).")
EXPLAIN = ("Measured on the images alone, as medical physicists do (ICRU 87, AAPM TG-233): noise SD is the mode "
           "of local SDs over 6 mm windows of uniform water or soft tissue (mean -50..150 HU); the noise power "
           "spectrum (NPS) comes from detrended uniform ROIs of about 15 mm, radially averaged, summarised by its "
           "peak and power-weighted mean frequency (lower = coarser, blotchier texture); sharpness is the 10-90 % "
           "width of the mean edge profile across the air/body boundary, with the MTF50 from it. The residual is "
           "what the processing removed; its structure (0..1) says how much of it follows the anatomy's "
           "edges rather than looking like noise.")


# ---------------------------------------------------------------- evaluation


def evaluation_quality(ev: dict, out: Path, how: str = "") -> tuple[list[dict], list[dict], list[str]]:
    """(tables, images, written files) for an evaluation's ``quality`` block;
    all empty when the evaluation has none (written before it existed).
    ``how``: how to read the table, set beside it."""
    measured = ev.get("quality")
    if not isinstance(measured, dict) or not measured:
        return [], [], []
    table = quality_table(HTML, measured).html("No-reference measures, where the reference has uniform tissue and "
                                               "edges (residual = noisy input - output)", how=how)
    from denoise.report import quality_curves

    lines = [(name, m.get("nps_curve"), m.get("esf_curve")) for name, m in measured.items() if isinstance(m, dict)]
    images, written = [], []
    if quality_curves(lines, out / "quality.png", title="noise texture and edge profile per image"):
        written.append("quality.png")
        first = lines[0][0] if lines else "reference"
        images.append({"path": out / "quality.png",
                       "caption": "Left: the 1-D noise power spectrum (log scale) of each image kind, each in its "
                                  "own colour, line style and marker: closer to the reference is better; lower at "
                                  "high frequencies = smoother, coarser noise. Right: the mean profile across the "
                                  "air/body edge (0 = air, 1 = tissue), each image's shifted up by "
                                  f"{ESF_SHIFT:g} from the one below and named at its end, with the {first}'s "
                                  "profile dashed in grey under each for comparison: a flatter rise than the "
                                  f"{first}'s = blurred edges."})
    return [table], images, written


# ---------------------------------------------------------------- qa.json


def qa_file(source: Path) -> Path | None:
    """The qa result in ``source`` (a folder holding qa.json, or the file itself)."""
    if source.is_file():
        return source if _is_qa(source) else None
    path = source / QA_JSON
    return path if path.is_file() else None


def _is_qa(path: Path) -> bool:
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("format") == QA_FORMAT
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        return False


def load_qa(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: cannot read the qa result ({one_line(exc)})") from exc
    if not (isinstance(data, dict) and data.get("format") == QA_FORMAT and isinstance(data.get("files"), list)
            and isinstance(data.get("series"), list)):
        raise ValueError(f"{path}: not a result written by `ct-denoise qa --json`")
    return data


def qa_sections(doc: dict, out: Path, display, scrub: Scrub) -> tuple[list[dict], list[str], str]:
    """(sections, written files, subtitle part) of a qa result."""
    paired = bool(doc.get("paired"))
    series = [s for s in doc["series"] if isinstance(s, dict)]
    files = [f for f in doc["files"] if isinstance(f, dict) and not f.get("failed")]
    text = EXPLAIN + ("\n\nAFTER is measured in the regions and on the edges found on BEFORE." if paired else "")
    if doc.get("rois"):
        text += f"\n\nNoise SD and NPS in the user's ROIs (x, y, w, h): {doc['rois']}."
    series_rows = [(f"{s.get('series', '')} ({s.get('slices', '?')} slices; NPS: {s.get('nps_method', '?')})", s)
                   for s in series]
    mean = doc.get("mean") if isinstance(doc.get("mean"), dict) else {}
    how = QA_PAIRED_HOW if paired else QA_HOW
    tables = [qa_table(HTML, "series", series_rows, paired).html("Per series", how=how),
              qa_table(HTML, (), [((), mean)], paired).html(f"Mean over {mean.get('files', len(files))} file(s)",
                                                            how="The files' mean: read it as the table above.")]
    per_file = qa_table(HTML, "file", [(str(f.get("file", "")), f) for f in files], paired)
    images, written = [], []
    for number, s in enumerate(series[:MAX_QA_CURVES], start=1):
        nps, esf = s.get("nps_curve") or {}, s.get("esf_curve") or {}
        lines = [(side, {"freq_mm": nps.get("freq_mm"), "nps_hu2mm2": nps.get(side)},
                  {"offset_mm": esf.get("offset_mm"), "esf_hu": esf.get(side)}) for side in ("before", "after")
                 if side in nps or side in esf]
        from denoise.report import quality_curves

        name = f"qa_curves_{number}.png"
        if quality_curves(lines, out / name, title=f"series {s.get('series', '')}"):
            written.append(name)
            images.append({"path": out / name, "caption": f"series {s.get('series', '')}: NPS (left, log scale; "
                                                          f"from {s.get('nps_method', '?')}) and mean edge profile "
                                                          "(right, 0 = air, 1 = tissue)" + (
                                                              f"; before and after, AFTER's profile {ESF_SHIFT:g} "
                                                              "above BEFORE's with BEFORE's dashed in grey under "
                                                              "it: a flatter rise = blurred edges" if paired else "")})
    notes: list[str] = []
    panels, panel_files = _qa_panels(doc, files, out, display, scrub, notes)
    sections = [{"heading": "Image quality without a reference (qa)", "text": text, "tables": tables,
                 "images": images},
                {"heading": "Where it measured" + (": before, after, residual" if paired else ""),
                 "text": f"Slices in the display window {window_text(display)}, shown by the grey-level bar under "
                         "each picture" + ("; the residual (before - after) in its own window about 0 HU, stated "
                                           "under it" if paired else "") + ". The white bar in a corner of each "
                         "picture is a scale in mm.", "images": panels},
                {"heading": "Per file (qa)", "tables": [per_file.html("One row per file", how=QA_FILES_HOW)]}]
    recorded = [scrub(one_line(x, 300)) for k in ("problems", "notes") for x in doc.get(k) or []]
    if recorded + notes:
        sections.append({"heading": "Notes (qa)", "text": "\n".join(f"- {x}" for x in recorded + notes)})
    part = f"qa of {len(files)} file(s) in {len(series)} series" + (", before vs after" if paired else "")
    return sections, written + panel_files, part


def _resolve(root: str | None, relpath: str | None) -> Path | None:
    if not root or relpath is None:
        return None
    base = Path(root)
    return base if base.is_file() else base / relpath


def _marks(hu: np.ndarray, pixel_spacing) -> list[tuple[np.ndarray, np.ndarray]]:
    """(mask, colour) of the NPS ROIs' outlines and the edge-profile centres that
    :func:`denoise.quality.plan` finds on ``hu``, for :func:`denoise.report.panel`."""
    from denoise import quality

    layout = quality.plan(hu, pixel_spacing)
    rois = np.zeros(hu.shape, dtype=bool)
    size = layout.nps_size
    for x, y in layout.nps_corners:
        rois[y, x:x + size] = rois[y + size - 1, x:x + size] = True
        rois[y:y + size, x] = rois[y:y + size, x + size - 1] = True
    edges = np.zeros(hu.shape, dtype=bool)
    if layout.edges is not None:
        centre = layout.edges.coords[:, :, layout.edges.offsets_mm.size // 2]
        rows = np.clip(np.rint(centre[0]).astype(int), 0, hu.shape[0] - 1)
        cols = np.clip(np.rint(centre[1]).astype(int), 0, hu.shape[1] - 1)
        edges[rows, cols] = True
    return [(rois, ROI_COLOUR), (edges, EDGE_COLOUR)]


def _qa_panels(doc: dict, files: list[dict], out: Path, display, scrub: Scrub,
               notes: list[str]) -> tuple[list[dict], list[str]]:
    from denoise.report import panel, pick_zoom_box, residual_window, save_png

    sources = doc.get("sources") or {}
    if not sources.get("before") or not Path(sources["before"]).exists():
        notes.append("qa pictures skipped: the BEFORE folder recorded in the qa result is not there")
        return [], []
    paired = bool(doc.get("paired"))
    images, written = [], []
    for number, index in enumerate(spread(len(files), MAX_QA_PANELS), start=1):
        entry = files[index]
        name = str(entry.get("file", ""))
        try:
            first = read_slice(_resolve(sources["before"], name))
            before, spacing = first.hu, first.spacing_mm
            tiles = [("before", before)]
            residual_text = ""
            if paired:
                after_path = _resolve(sources.get("after"), entry.get("after_file"))
                if after_path is None or not after_path.exists():
                    raise ValueError("its AFTER file is not there any more")
                after = read_slice(after_path).hu
                if after.shape != before.shape:
                    raise ValueError("its AFTER file has another size")
                residual = before - after
                shown = residual_window(residual)
                tiles += [("after", after), ("before - after (residual)", residual, shown)]
                residual_text = f"; the residual before - after in its own window {window_text(shown)}"
            if max(before.shape) > PANEL_MAX_SIDE:
                raise ValueError(f"slice larger than {PANEL_MAX_SIDE} pixels: not drawn")
            box = pick_zoom_box(before, max(8, min(before.shape) // 8))
            b, a = entry.get("before") or {}, entry.get("after") or {}
            header = ",  ".join(f"{what} {HTML.value(b, key)}" + (f" → {HTML.value(a, key)}" if paired else "")
                                + unit for what, key, unit in (("noise SD", "noise_sd_hu", " HU"),
                                                               ("NPS mean", "nps_mean_freq_mm", " /mm"),
                                                               ("edge", "edge_width_mm", " mm")))
            image = panel(tiles, window=display, zoom_box=box, zoom=2, header=header, spacing_mm=spacing,
                          grey_bars=True)
            regions = panel([("where it measured", before)], window=display, spacing_mm=spacing, grey_bars=True,
                            marks=_marks(before, spacing))
        except (OSError, ValueError) as exc:
            notes.append(f"qa panel for {name} skipped: {scrub(one_line(exc))}")
            continue
        png, where = f"qa_panel_{number}.png", f"qa_regions_{number}.png"
        save_png(image, out / png)
        save_png(regions, out / where)
        written += [png, where]
        scale = scale_text(spacing, before.shape[1])
        pictures = " | ".join(t[0] for t in tiles[:2])
        images.append({"path": out / png, "caption": f"{name}: {header}. {pictures} in the display window "
                                                     f"{window_text(display)}{residual_text}. {scale} Orange box: "
                                                     "enlarged in the opposite corner."})
        images.append({"path": out / where, "caption": f"{name}: where it measured, in the display window "
                                                       f"{window_text(display)} (orange: the NPS ROIs; blue: the "
                                                       f"centres of the edge profiles). {scale}"})
    return images, written
