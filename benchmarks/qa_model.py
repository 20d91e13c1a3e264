"""What the bundled model does to real scans, measured without a reference.

For each series of ``../shared/data/ct`` it takes ``--slices`` contiguous
slices from the middle, denoises them with the bundled model (``ct-denoise
denoise`` defaults) and runs ``ct-denoise qa BEFORE AFTER`` on the pair:
noise SD before -> after, NPS peak and mean frequency before -> after, the
10-90 % edge width and MTF50 change at the air/body edge, and the residual.
No noise is added: this is the model on the scans as they come.

    python benchmarks/qa_model.py --slices 12 --json benchmarks/results/qa_model.json \\
        --markdown benchmarks/results/qa_model.md

Series are marked by the model's split: the held-out ones say what it does to
patients, scanners and kernels it never saw, the training ones what it does
to data like its training data.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import pydicom

ROOT = Path(__file__).resolve().parents[1]

from denoise.dicom import scan  # noqa: E402
from pipelines import denoise_folder, qa  # noqa: E402

SHARED = ROOT.parent / "shared" / "data" / "ct"
SERIES = {  # folder -> label, by the bundled model's split (data_manifests/kernels.json)
    "lidc-chest": "LIDC chest (held out)",
    "rider-chest": "RIDER chest (held out)",
    "acrin-abdomen-pelvis": "ACRIN abdomen/pelvis (held out)",
    "ricord-chest/dicom": "RICORD chest (training)",
    "ge-head": "GE head (training)",
    "crlm-liver": "CRLM liver (training)",
    "kits-kidney": "KiTS kidney (training)",
    "philips-chest-kernels/recon3": "Lung-PET-CT-Dx chest, soft B (training)",
    "philips-chest-kernels/recon2": "Lung-PET-CT-Dx chest, sharp L (training)",
}


def header(path: Path) -> dict:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    kernel = ds.get("ConvolutionKernel", "")
    kernel = "\\".join(kernel) if isinstance(kernel, pydicom.multival.MultiValue) else str(kernel)
    words = str(ds.get("Manufacturer", "") or "").split()
    vendor = (words[0] if len(words[0]) <= 3 else words[0].title()) if words else "(vendor not recorded)"
    return {"vendor": vendor, "kernel": kernel, "slice_mm": float(ds.get("SliceThickness", 0) or 0)}


def middle(folder: Path, dest: Path, n: int) -> tuple[int, Path]:
    files = scan(folder).series[0].files
    start = max(0, len(files) // 2 - n // 2)
    chosen = files[start:start + n]
    dest.mkdir(parents=True)
    for k, ct in enumerate(chosen):
        (dest / f"{k:03d}.dcm").symlink_to(ct.path)
    return len(chosen), chosen[0].path


def run(slices: int) -> list[dict]:
    work = Path(tempfile.mkdtemp(prefix="qa_model_"))
    rows = []
    try:
        for folder, label in SERIES.items():
            src = SHARED / folder
            if not src.is_dir():
                print(f"skipped {folder}: not found", file=sys.stderr)
                continue
            before, after = work / "before" / folder, work / "after" / folder
            n, first = middle(src, before, slices)
            denoise_folder.run(before, after)
            result = qa.run(before, after)
            (series,) = result.series
            rows.append({"series": label, "folder": folder, "slices": n, **header(first),
                         **{k: series[k] for k in ("nps_method", "before", "after", "change", "residual_sd_hu",
                                                   "residual_structure")}})
            print(f"{label}: done", file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return rows


def fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def markdown(rows: list[dict]) -> str:
    lines = ["| series | vendor, kernel, slice | noise SD HU | noise | NPS peak cycles/mm | NPS mean cycles/mm "
             "| edge 10-90 % mm | edge width | MTF50 | residual SD HU / structure |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        b, a, c = r["before"], r["after"], r["change"]
        lines.append(
            f"| {r['series']} ({r['slices']} slices) | {r['vendor']} {r['kernel']}, {r['slice_mm']:g} mm "
            f"| {fmt(b['noise_sd_hu'], '.1f')} -> {fmt(a['noise_sd_hu'], '.1f')} "
            f"| {fmt(None if c['noise_reduction_pct'] is None else -c['noise_reduction_pct'], '+.0f')} % "
            f"| {fmt(b['nps_peak_freq_mm'], '.2f')} -> {fmt(a['nps_peak_freq_mm'], '.2f')} "
            f"| {fmt(b['nps_mean_freq_mm'], '.2f')} -> {fmt(a['nps_mean_freq_mm'], '.2f')} "
            f"| {fmt(b['edge_width_mm'], '.2f')} -> {fmt(a['edge_width_mm'], '.2f')} "
            f"| {fmt(c['edge_width_change_pct'], '+.1f')} % | {fmt(c['mtf50_change_pct'], '+.1f')} % "
            f"| {fmt(r['residual_sd_hu'], '.1f')} / {fmt(r['residual_structure'], '.2f')} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=12)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()
    rows = run(args.slices)
    table = markdown(rows)
    print(table)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2, allow_nan=False) + "\n")
    if args.markdown:
        args.markdown.write_text(table)


if __name__ == "__main__":
    main()
