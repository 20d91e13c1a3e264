"""Job: a self-contained HTML report (``ct-denoise report``).

``source`` is a training run folder (``config.toml``, ``log.json``,
``progress.gif``, ``curves.png``, ``checkpoints/``; see ``pipelines/train.py``),
an evaluation folder holding ``evaluation.json`` (``ct-denoise evaluate
--json``), a folder holding ``qa.json`` (``ct-denoise qa --json``; or that
file itself), or a folder holding several of them. The report goes to
``out/index.html`` with every picture embedded, and each picture is also
written beside it::

    OUT/index.html     tables, notes and every image below as data: URIs
    OUT/panel_N.png    noisy | test | clean | noisy - test for up to 3 matched files, zoomed inset
    OUT/quality.png, OUT/qa_*.png   noise texture and sharpness (see denoise/report/quality_sections.py)
    OUT/scroll.gif     the matched series, noisy beside test
    OUT/curves.png     copied from the run (or drawn from log.json)
    OUT/progress.gif   copied from the run

Pictures are drawn in a stated display window (default soft tissue), with a
grey-level bar labelled with it, the residual's own window, and a mm scale bar
from the pixel spacing; text in them is sized for the page
(:mod:`denoise.report.panels`). Every table has a "how to read this" beside it.
The model's seconds per slice come from the evaluation, or are timed here when
the test series was written by the bundled model (its derivation names the
model and its settings). An ``out`` folder that is not empty is refused unless
``force``. Only numbers, the caller's labels and paths relative to the
evaluated folders are written: no patient attributes, no absolute source
paths; the footer says the report is for research use only.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import time
from collections import Counter
from pathlib import Path

import numpy as np

from denoise.atomic import atomic_path
from denoise.report.parts import (
    Scrub,
    check_window,
    num,
    read_slice,
    scale_text,
    shown_spacing,
    spread,
    window_text,
)
from denoise.report.quality_sections import EXPLAIN, evaluation_quality, load_qa, qa_file, qa_sections
from denoise.tables import HTML, METRICS, NOISY_LABEL, pick, table
from denoise.text import one_line

EVALUATION_JSON = "evaluation.json"
MAX_PANELS = 3
MAX_SCROLL_SLICES = 60
PANEL_MAX_SIDE = 512  # larger slices are area-shrunk for the panels
SCROLL_MAX_SIDE = 256
_STALE = re.compile(r"panel_\d+\.png|scroll\.gif|quality\.png|qa_(curves|panel|regions)_\d+\.png")  # only ours
RESEARCH_USE = ("For research use only, not for diagnosis: ct-denoise is not a medical device and has not been "
                "cleared or approved for clinical use; do not use these images or numbers for diagnosis or "
                "treatment decisions.")
PRIVACY = ("Written by ct-denoise. Images are embedded; files are named by their path relative to the evaluated "
           "folders; no patient names, IDs or dates are included.")


class ReportExists(ValueError):
    """The output folder holds something already and --force was not given; nothing was written."""


def _copy(src: Path, dst: Path) -> None:
    """Copy atomically; nothing to do when ``dst`` is ``src`` (report written into the run folder)."""
    if dst.exists() and dst.resolve() == src.resolve():
        return
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def _is_training_run(folder: Path) -> bool:
    return folder.is_dir() and ((folder / "log.json").is_file() or (folder / "config.toml").is_file())


def _evaluation_file(source: Path) -> Path | None:
    if source.is_file():
        return source if source.suffix.lower() == ".json" else None
    path = source / EVALUATION_JSON
    return path if path.is_file() else None


def _load_evaluation(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: cannot read the evaluation ({one_line(exc)})") from exc
    try:
        ok = isinstance(data, dict) and isinstance(data.get("files"), list)
        check_window(data["window_hu"] if ok else None)
    except (KeyError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"{path}: not an evaluation written by `ct-denoise evaluate --json`")
    return data


# ---------------------------------------------------------------- evaluation


METHODS_HOW = ("Each row is one method's output scored against the clean reference, averaged over the files. "
               "PSNR: higher is closer to the reference (3 dB more halves the squared error); RMSE (HU) and MSE: "
               "lower is closer. \"noisy input\" is the input itself, scored as it is: a method should beat it "
               "(it runs nothing, so it has no time).")
SSIM_HOW = ("SSIM compares local brightness, contrast and structure, 0..1: higher is closer to the reference. "
            "Differences in the third decimal are small: look at the pictures below too.")
FILES_HOW = ("One row per file, the measures of the tables above. A file well below the others is worth a "
             "look: another scanner, anatomy or noise level than the model knows.")
QUALITY_HOW = ("Measured on each image alone; the reference row is the clean image, and closer to it is better "
               "in every column. Noise SD well below the reference's: over-smoothed (a waxy look). NPS peak and "
               "mean below the reference's: coarser, blotchier noise. Edge 10-90 % wider (MTF50 lower) than the "
               "reference's: blurred edges. Residual SD: how much was removed (about the noise added to the "
               "input). Residual structure near 0: what was removed looks like noise; higher: anatomy went "
               "with it. n/a: not measurable on these images.")


def _test_timing(ev: dict, label: str, derivation: str | None, inputs: list[np.ndarray]) -> tuple[float | None, str]:
    """The test's seconds per slice: from the evaluation where it has it, else timed here (:func:`_time_model`)."""
    recorded = ((ev.get("methods") or {}).get(label) or {}).get("seconds_per_slice")
    try:
        if recorded is not None and math.isfinite(float(recorded)):
            return float(recorded), "recorded in the evaluation"
    except (TypeError, ValueError):
        pass
    return _time_model(derivation, inputs)


def _methods_tables(ev: dict, label: str, seconds: float | None, timing: str) -> list[dict]:
    methods = ev.get("methods") or {}
    if not methods and ev.get("mean"):
        methods = {label: ev["mean"]}
    if not methods:
        return []
    methods = {str(name): dict(m) if isinstance(m, dict) else {} for name, m in methods.items()}
    if seconds is not None and label in methods:
        methods[label]["seconds_per_slice"] = seconds
    rows = list(methods.items())
    fidelity = table(HTML, "method", pick(METRICS, "psnr", "rmse_hu", "mse", "seconds_per_slice"), rows)
    for name, row in zip(methods, fidelity.rows, strict=True):
        if name == NOISY_LABEL and row[-1] == HTML.missing:
            row[-1] = "—"  # nothing was run
    timed = (f"Seconds per slice of {label}: {timing}." if seconds is not None
             else f"Seconds per slice of {label}: not measured ({timing}).")
    how = f"{METHODS_HOW}\n\n{timed} The baselines' seconds were timed by `ct-denoise evaluate` as it ran them."
    structure = table(HTML, "method", pick(METRICS, "ssim"), rows)
    return [fidelity.html("Mean over files: PSNR (higher is better), RMSE and MSE (lower is better)",
                          highlight_best={"column": fidelity.header[1], "max": True}, how=how),
            structure.html("Mean over files: SSIM (higher is better)",
                           highlight_best={"column": structure.header[1], "max": True}, how=SSIM_HOW)]


def _files_table(ev: dict) -> dict:
    files = [f for f in ev["files"] if isinstance(f, dict)]
    same = all(f.get("reference") == f.get("test") for f in files)
    rows = [((str(f.get("test", "")),) if same else (str(f.get("reference", "")), str(f.get("test", ""))), f)
            for f in files]
    return table(HTML, ("file",) if same else ("reference", "test"), METRICS[:4], rows).html(
        f"{ev.get('test_label', 'test')} against the reference, per file", how=FILES_HOW)


def _pictures(ev: dict, out: Path, display: tuple[float, float], scrub: Scrub,
              notes: list[str]) -> tuple[list[dict], list[str], list[np.ndarray], str | None]:
    """Panels and the scroll GIF; (images, names written, the slices the model was given in the
    panels (for timing it), the test files' derivation). Anything missing or unreadable becomes a
    note instead of an error."""
    from denoise.dicom.matching import match_files
    from denoise.dicom.scan import scan
    from denoise.report import panel, pick_zoom_box, residual_window, save_png, shrink

    sources = ev.get("sources") or {}
    label = str(ev.get("test_label", "test"))
    if not sources.get("reference") or not sources.get("test"):
        notes.append("pictures skipped: the evaluation does not record its reference and test folders")
        return [], [], [], None
    gone = [k for k in ("reference", "test") if not Path(sources[k]).exists()]
    if gone:
        notes.append(f"pictures skipped: the {' and '.join(gone)} folder(s) recorded in the evaluation "
                     "no longer exist")
        return [], [], [], None
    noisy_root = sources.get("noisy")
    if noisy_root and not Path(noisy_root).exists():
        notes.append("the noisy folder recorded in the evaluation no longer exists: "
                     "panels without the noisy input, no scroll GIF")
        noisy_root = None
    elif not noisy_root:
        notes.append("the evaluation has no noisy input (--noisy): panels without it, no scroll GIF")
    match = str(ev.get("match", "path"))
    try:
        ref_scan = scan(sources["reference"])
        pairs, _, _ = match_files(ref_scan, scan(sources["test"]), match)
        noisy_of = {}
        if noisy_root:
            noisy_pairs, _, _ = match_files(ref_scan, scan(noisy_root), match)
            noisy_of = {str(r.relpath): n for r, n in noisy_pairs}
    except (OSError, ValueError) as exc:
        notes.append(f"pictures skipped: {scrub(one_line(exc))}")
        return [], [], [], None
    by_name = {(str(r.relpath), str(t.relpath)): (r, t) for r, t in pairs}

    images, written, inputs, derivation, spacing = [], [], [], None, None
    files = [f for f in ev["files"] if isinstance(f, dict)]
    for number, index in enumerate(spread(len(files), MAX_PANELS), start=1):
        entry = files[index]
        name = str(entry.get("test", ""))
        pair = by_name.get((str(entry.get("reference", "")), name))
        if pair is None:
            notes.append(f"panel for {name} skipped: the file no longer pairs with its reference")
            continue
        ref_ct, test_ct = pair
        try:
            clean, test = read_slice(ref_ct.path), read_slice(test_ct.path)
            noisy_ct = noisy_of.get(str(ref_ct.relpath))
            noisy = read_slice(noisy_ct.path).hu if noisy_ct is not None else None
            tiles = ([("noisy", noisy)] if noisy is not None else []) + [(label, test.hu), ("clean", clean.hu)]
            if len({t.shape for _, t in tiles}) != 1:
                raise ValueError(f"slice sizes differ ({', '.join('x'.join(map(str, t.shape)) for _, t in tiles)})")
            full = clean.hu.shape
            tiles = [(title, shrink(t, PANEL_MAX_SIDE)) for title, t in tiles]
            spacing = shown_spacing(clean.spacing_mm, full, tiles[0][1].shape)
            residual_text = ""
            if noisy is not None:  # what the method removed, beside the pictures
                residual = tiles[0][1] - tiles[1][1]
                shown = residual_window(residual)
                tiles.append((f"noisy - {label} (residual)", residual, shown))
                residual_text = (f"; the residual noisy - {label} (what it removed) in its own window "
                                 f"{window_text(shown)}")
            clean_small = tiles[-2 if noisy is not None else -1][1]
            box = pick_zoom_box(clean_small, max(8, min(clean_small.shape) // 8))
            header = f"{label}: PSNR {HTML.value(entry, 'psnr')} dB, SSIM {HTML.value(entry, 'ssim')}"
            png = f"panel_{number}.png"
            save_png(panel(tiles, window=display, zoom_box=box, zoom=3, header=header, spacing_mm=spacing,
                           grey_bars=True), out / png)
        except (OSError, ValueError) as exc:
            notes.append(f"panel for {name} skipped: {scrub(one_line(exc))}")
            continue
        written.append(png)
        inputs.append(noisy if noisy is not None else clean.hu)
        derivation = derivation or test.derivation
        pictures = " | ".join(tile[0] for tile in tiles[:3 if noisy is not None else 2])
        images.append({"path": out / png,
                       "caption": f"{name}: {header}. {pictures} in the display window {window_text(display)}"
                                  f"{residual_text}. {scale_text(spacing, clean_small.shape[1])} Orange box: "
                                  "enlarged in the opposite corner."})

    if noisy_root:
        triples = sorted(((noisy_of[str(r.relpath)], t) for r, t in pairs if str(r.relpath) in noisy_of),
                         key=lambda nt: str(nt[1].relpath))
        caption = _scroll(triples, out / "scroll.gif", display, label, scrub, notes)
        if caption:
            written.append("scroll.gif")
            images.append({"path": out / "scroll.gif", "caption": caption})
    return images, written, inputs, derivation


def _scroll(pairs, path: Path, display, label: str, scrub: Scrub, notes: list[str]) -> str | None:
    """Write the scroll GIF of (noisy, test) file pairs, already in display
    order; return its caption, or None (with a note) when there is nothing."""
    from denoise.report import scroll_gif, shrink

    if not pairs:
        notes.append("scroll GIF skipped: no test file matched a noisy file")
        return None
    shape, _ = Counter((t.rows, t.columns) for _, t in pairs).most_common(1)[0]
    pairs = [(n, t) for n, t in pairs if (t.rows, t.columns) == shape == (n.rows, n.columns)]
    total = len(pairs)
    if total > MAX_SCROLL_SLICES:
        keep = np.unique(np.linspace(0, total - 1, MAX_SCROLL_SLICES).round().astype(int))
        pairs = [pairs[i] for i in keep]
    noisy, test, spacings = [], [], []
    for n, t in pairs:
        try:
            a, b = read_slice(n.path), read_slice(t.path)
        except (OSError, ValueError) as exc:
            notes.append(f"scroll GIF: {t.relpath} left out: {scrub(one_line(exc))}")
            continue
        if a.hu.shape != b.hu.shape:
            notes.append(f"scroll GIF: {t.relpath} left out: its noisy slice has another size")
            continue
        noisy.append(shrink(a.hu, SCROLL_MAX_SIDE))
        test.append(shrink(b.hu, SCROLL_MAX_SIDE))
        spacings.append(shown_spacing(a.spacing_mm, a.hu.shape, noisy[-1].shape))
    if not noisy:
        notes.append("scroll GIF skipped: no slice could be read")
        return None
    scroll_gif(np.stack(noisy), np.stack(test), path, window=display, max_side=None, spacing_mm=spacings,
               grey_bars=True, titles=("noisy", label))
    subsampled = f", evenly chosen from {total}" if total > len(pairs) else ""
    if len(set(spacings)) == 1:
        scale = scale_text(spacings[0], noisy[0].shape[1])
    else:
        scale = "White bar: a scale, its length in mm above it (the slices' pixel spacings differ)."
    return (f"scroll through {len(noisy)} slice(s){subsampled}, sorted by test file path "
            f"({shape[0]}x{shape[1]} files): noisy (left) beside {label} (right), both in the display window "
            f"{window_text(display)}. {scale}")


# "Denoised by ct-denoise (NumPy convolutional autoencoder MODEL_ID, HOW)": denoise.denoising.derivation_for
_DENOISED = re.compile(r"Denoised by ct-denoise \(NumPy convolutional autoencoder (?P<model>\S+@[0-9a-f]+), "
                       r"(?P<how>.*)\)\Z")


def _time_model(derivation: str | None, slices: list[np.ndarray]) -> tuple[float | None, str]:
    """Seconds per slice of the model that wrote the test files, timed here on ``slices`` (the
    inputs it was given, one untimed run first) with the settings the derived files record, when
    that model is the bundled one and the settings rebuild the same derivation; else (None, why)."""
    from denoise.conditioning import DEFAULT_STRENGTH
    from denoise.denoising import derivation_for
    from denoise.inference import Denoiser
    from denoise.nn import ModelFileError

    found = _DENOISED.match(derivation or "")
    if found is None:
        return None, "the test files were not written by `ct-denoise denoise` (their derivation does not say so)"
    if not slices:
        return None, "no slice of the test series could be read to time it on"
    how = found["how"]
    tiles = re.search(r"tiles (\d+) px, overlap ([0-9.]+)", how)
    views = re.search(r"mean of (\d+) flipped views", how)
    strength = re.search(r"strength ([0-9.]+)(?: \((\w+)\))?", how)
    given = re.search(r"noise SD ([0-9.eE+-]+) HU given", how)
    try:
        denoiser = Denoiser.load(None, tile=int(tiles[1]) if tiles else None,
                                 overlap=float(tiles[2]) if tiles else 0.25, ensemble=int(views[1]) if views else 1,
                                 strength=(strength[2] or strength[1]) if strength else DEFAULT_STRENGTH,
                                 noise_sd_hu=float(given[1]) if given else None)
    except (ModelFileError, ValueError, OSError):
        return None, "the bundled model cannot be loaded to time it"
    if denoiser.model_id != found["model"]:
        return None, f"the test files were made by model {found['model']}, not the bundled {denoiser.model_id}"
    if derivation_for(denoiser).description != derivation:
        return None, "the settings the test files record could not be rebuilt"
    denoiser(slices[0])  # one untimed run: thread pools and memory
    start = time.perf_counter()
    for hu in slices:
        denoiser(hu)
    seconds = (time.perf_counter() - start) / len(slices)
    size = "x".join(map(str, slices[0].shape))
    return seconds, (f"timed by this report on this machine: the bundled model {denoiser.model_id} run again with "
                     f"the settings its derived files record ({how}) on {len(slices)} {size} slice(s) of the "
                     "panels, after one untimed run")


def _evaluation_sections(ev: dict, out: Path, display, display_given: bool, scrub: Scrub) -> tuple[list, list]:
    label = str(ev.get("test_label", "test"))
    low, high = ev["window_hu"]
    n = ev.get("n_matched", len(ev["files"]))
    text = (f"{label} scored against the reference on {n} matched file(s), paired by {ev.get('match', 'path')}.\n"
            f"Metrics use the HU window {window_text((low, high))}, mapped to [0, 1] "
            f"(data range {num(ev.get('data_range', 1.0), 'g')}); "
            f"{'body only (mask)' if ev.get('body_mask') else 'whole image'}. "
            "The best value in each table is highlighted.")
    notes: list[str] = []
    images, written, inputs, derivation = _pictures(ev, out, display, scrub, notes)
    seconds, timing = _test_timing(ev, label, derivation, inputs)
    quality_tables, quality_images, quality_written = evaluation_quality(ev, out, QUALITY_HOW)
    written += quality_written
    sections = [{"heading": "Evaluation", "text": text, "tables": _methods_tables(ev, label, seconds, timing)}]
    if quality_tables:
        sections.append({"heading": "Noise, texture and sharpness", "text": EXPLAIN, "tables": quality_tables,
                         "images": quality_images})

    picture_text = (f"Pictures use the display window {window_text(display)} "
                    f"({'as requested' if display_given else 'soft tissue, the default'}), shown by the grey-level "
                    "bar under each picture (black at its low end, white at its high end); the residual has its "
                    "own window about 0 HU, stated under it. The metrics above use the metric window. The white "
                    "bar in a corner of each picture is a scale in mm. The first frame of each file is shown.")
    sections.append({"heading": "Before and after", "text": picture_text, "images": images})
    sections.append({"heading": "Per-file scores", "tables": [_files_table(ev)]})

    for key, what in (("unmatched_reference", "reference"), ("unmatched_test", "test")):
        missed = [str(p) for p in ev.get(key) or []]
        if missed:
            shown = ", ".join(missed[:10]) + (f" and {len(missed) - 10} more" if len(missed) > 10 else "")
            notes.append(f"{len(missed)} {what} file(s) without a match: {shown}")
    recorded = [scrub(one_line(x, 300)) for k in ("notes", "problems") for x in ev.get(k) or []]
    all_notes = recorded + notes
    if all_notes:
        sections.append({"heading": "Notes", "text": "\n".join(f"- {x}" for x in all_notes)})
    return sections, written


# ---------------------------------------------------------------- training run

SUMMARY_HOW = ("The best validation PSNR and SSIM are measured on the validation slices with the noise stated "
               "under \"validation\", in its metric window: higher is better, and only runs validated the same "
               "way compare. The training noise says which noise the model learned to remove; a scan with "
               "other noise (kind or level) may be denoised less well.")
EPOCHS_HOW = ("One row per epoch. The training loss should fall; the validation PSNR should rise and level off "
              "(the best is highlighted). A validation PSNR falling while the loss still falls means the model "
              "fits its training patches and no longer improves on new slices.")


def _architecture(run_dir: Path, cfg) -> tuple[dict | None, int | None]:
    """The resolved architecture and parameter count, from the best (else
    last) checkpoint's description, else from the config."""
    for name in ("best", "last"):
        path = run_dir / "checkpoints" / f"{name}.json"
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            arch, params = doc["architecture"], doc["parameters"]
            count = sum(int(np.prod(spec["shape"])) for spec in params.values())
            return dict(arch), count
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
    if cfg is None:
        return None, None
    try:
        from denoise.nn import validate_config

        return validate_config(dict(cfg.model)), None
    except ValueError:
        return dict(cfg.model), None


def _best(rows: list[dict], key: str) -> tuple[float, object] | None:
    found = []
    for row in rows:
        try:
            value = float(row.get(key))
        except (TypeError, ValueError):
            continue
        if math.isfinite(value):
            found.append((value, row.get("epoch")))
    return max(found, key=lambda p: p[0]) if found else None


def _mean(rows: list[dict], key: str) -> float | None:
    values = []
    for row in rows:
        try:
            values.append(float(row.get(key)))
        except (TypeError, ValueError):
            continue
    values = [v for v in values if math.isfinite(v)]
    return float(np.mean(values)) if values else None


def _training_sections(run_dir: Path, out: Path, scrub: Scrub) -> tuple[list, list, str]:
    from denoise.config import ConfigError
    from denoise.report import training_curves
    from denoise.runs import config_for

    notes: list[str] = []
    cfg = None
    if (run_dir / "config.toml").is_file():
        try:
            cfg = config_for(run_dir)
        except (OSError, ConfigError, ValueError) as exc:
            notes.append(f"config.toml unreadable: {scrub(one_line(exc))}")
    else:
        notes.append("no config.toml in the run folder")
    rows: list[dict] = []
    if (run_dir / "log.json").is_file():
        try:
            loaded = json.loads((run_dir / "log.json").read_text(encoding="utf-8"))
            rows = [r for r in loaded if isinstance(r, dict)] if isinstance(loaded, list) else []
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            notes.append(f"log.json unreadable: {scrub(one_line(exc))}")
    if not rows:
        notes.append("no epoch logged yet")

    name = cfg.name if cfg is not None else "(unknown)"
    summary = [["config name", name]]
    configured = f" of {cfg.training.epochs} configured" if cfg is not None else ""
    summary.append(["epochs", f"{len(rows)} logged{configured}"])
    for key, label, fmt, unit in (("val_psnr", "best validation PSNR", ".2f", " dB"),
                                  ("val_ssim", "best validation SSIM", ".4f", "")):
        best = _best(rows, key)
        summary.append([label, "n/a" if best is None else f"{num(best[0], fmt, unit)} (epoch {best[1]})"])
    summary.append(["training speed", num(_mean(rows, "patches_per_s"), ".0f", " patches/s (mean over epochs)")])
    seconds = sum(float(r.get("epoch_seconds") or 0.0) for r in rows)
    summary.append(["training time", f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.1f} s"])
    if cfg is not None:
        nz = cfg.noise
        noise = f"Gaussian sigma {nz.gaussian_sigma_hu[0]:g}..{nz.gaussian_sigma_hu[1]:g} HU"
        if nz.low_dose_fraction > 0:
            noise += (f"; low-dose on {nz.low_dose_fraction:.0%} of patches, I0 {nz.low_dose_i0[0]:.3g}.."
                      f"{nz.low_dose_i0[1]:.3g}, {nz.low_dose_views} views")
        val = cfg.validation
        validation = f"Gaussian sigma {val.sigma_hu:g} HU"
        if val.low_dose_i0 > 0:
            validation += f" and low-dose I0 {val.low_dose_i0:.3g}"
        validation += f", up to {val.max_slices} slices; metric window {window_text(val.window)}"
        p, o = cfg.patches, cfg.optimizer
        summary += [
            ["training noise", noise],
            ["validation", validation],
            ["normalization", f"{window_text((cfg.normalization.low, cfg.normalization.high))} to [0, 1]"],
            ["patches", f"{p.size}x{p.size}, batch {p.batch_size}, {p.per_epoch} per epoch"],
            ["optimizer", f"{o.kind}, lr {o.lr:g} ({o.schedule}, warm-up {o.warmup_steps} steps), "
                          f"loss {cfg.training.loss}"],
            ["training data", ", ".join(Path(m).name for m in cfg.data.manifests)],  # names only, no paths
        ]
    arch, n_params = _architecture(run_dir, cfg)
    if arch is not None:
        summary.append(["architecture", ", ".join(f"{k} {v}" for k, v in arch.items())])
    if n_params is not None:
        summary.append(["parameters", f"{n_params:,}"])
    checkpoints = [c for c in ("best", "last") if (run_dir / "checkpoints" / f"{c}.npz").is_file()]
    summary.append(["checkpoints", ", ".join(checkpoints) or "none"])

    images, written = [], []
    if (run_dir / "curves.png").is_file():
        _copy(run_dir / "curves.png", out / "curves.png")
    elif rows:
        training_curves(rows, out / "curves.png")
        notes.append("curves.png drawn from log.json (the run folder has none)")
    if (out / "curves.png").is_file():
        written.append("curves.png")
        images.append({"path": out / "curves.png", "caption": "loss (left); validation PSNR and SSIM (right)"})
    if (run_dir / "progress.gif").is_file():
        _copy(run_dir / "progress.gif", out / "progress.gif")
        written.append("progress.gif")
        shown = f", display window {window_text(cfg.report.display_window)}" if cfg is not None else ""
        images.append({"path": out / "progress.gif",
                       "caption": f"one validation slice per epoch: noisy | denoised | clean{shown}"})
    else:
        notes.append("no progress.gif in the run folder")

    epochs = [[r.get("epoch", k + 1), num(r.get("train_loss"), ".4g"), num(r.get("val_psnr"), ".2f"),
               num(r.get("val_ssim"), ".4f"), num(r.get("patches_per_s"), ".0f")] for k, r in enumerate(rows)]
    sections = [{"heading": f"Training run: {name}",
                 "tables": [{"caption": "Run summary", "columns": ["item", "value"], "rows": summary,
                             "how": SUMMARY_HOW}],
                 "images": images, "text": "\n".join(f"- {x}" for x in notes)},
                {"heading": "Per-epoch log",
                 "tables": [{"caption": "One row per epoch", "rows": epochs,
                             "columns": ["epoch", "train loss", "val PSNR (dB)", "val SSIM", "patches/s"],
                             "highlight_best": {"column": "val PSNR (dB)", "max": True}, "how": EPOCHS_HOW}]}]
    return sections, written, f"training run {name} ({len(rows)} epoch(s))"


# ---------------------------------------------------------------- job


def run(source_dir: str | os.PathLike, out_dir: str | os.PathLike, *,
        window: tuple[float, float] | None = None, force: bool = False) -> Path:
    """Write the report of a training run and/or evaluation folder to
    ``out_dir/index.html`` (plus its images beside it); returns that path.
    ``window`` is the display window (HU) of the evaluation pictures. An
    ``out_dir`` that exists and is not empty is refused (:class:`ReportExists`,
    nothing written) unless ``force``; with it, index.html and the report's own
    pictures there are replaced and nothing else is touched."""
    from denoise.report import render_html

    source = Path(source_dir)
    if not source.exists():
        raise ValueError(f"{source}: no such file or folder")
    display = check_window(window)
    qa_path = qa_file(source)
    eval_path = _evaluation_file(source) if qa_path != source else None
    run_dir = source if _is_training_run(source) else None
    if eval_path is None and run_dir is None and qa_path is None:
        raise ValueError(f"{source}: neither a training run folder (config.toml, log.json), "
                         f"an evaluation folder ({EVALUATION_JSON}) nor a qa result (qa.json)")
    evaluation = _load_evaluation(eval_path) if eval_path is not None else None
    qa_doc = load_qa(qa_path) if qa_path is not None else None

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: the report needs a folder there, not a file")
    if out.is_dir() and not force and any(out.iterdir()):
        raise ReportExists(f"{out}: the folder exists and is not empty; use --force to write the report over it")
    out.mkdir(parents=True, exist_ok=True)
    scrub = Scrub()
    for doc in (evaluation, qa_doc):
        for key, path in ((doc or {}).get("sources") or {}).items():
            scrub.add(path, f"<{key}>")
    scrub.add(source, "<source>")
    scrub.add(out, "<report>")

    sections, written, parts = [], [], []
    if evaluation is not None:
        ev_sections, ev_written = _evaluation_sections(evaluation, out, display, window is not None, scrub)
        sections += ev_sections
        written += ev_written
        parts.append(f"evaluation of {evaluation.get('test_label', 'test')} "
                     f"({evaluation.get('n_matched', len(evaluation['files']))} file(s))")
    if qa_doc is not None:
        qa_parts, qa_written, what = qa_sections(qa_doc, out, display, scrub)
        sections += qa_parts
        written += qa_written
        parts.append(what)
    if run_dir is not None:
        tr_sections, tr_written, what = _training_sections(run_dir, out, scrub)
        sections += tr_sections
        written += tr_written
        parts.append(what)
    for stale in out.iterdir():
        if _STALE.fullmatch(stale.name) and stale.name not in written and stale.is_file():
            stale.unlink()  # left by an earlier report into this folder
    index = out / "index.html"
    render_html({"title": "ct-denoise report", "subtitle": "; ".join(parts), "notice": RESEARCH_USE,
                 "sections": sections, "footer": f"{RESEARCH_USE}\n\n{PRIVACY}"}, index)
    return index
