"""The scan's own noise model (denoise.scanner_noise) on every real series: measured, synthesized, measured again.

For each CT series under the data folder (default ``../shared/data/ct``; a
folder holding several series, as philips-chest-kernels, is split by
``denoise.dicom.scan``): up to ``--slices`` central slices of its longest
evenly spaced run are read, the model is measured from the differences of
slice pairs (``denoise.scanner_noise.check``), noise is synthesized for the
same slices, differenced the same way and measured in the very ROIs the
scan's noise was. Reported per series: kernel, slice spacing / thickness, the
pair distance used (and the noise correlation between neighbours), the radial
NPS peak and mean frequency measured and synthesized with their differences,
the noise SD both ways, the correlation of the model's SD map with the SDs of
the slices' difference over the ROIs, and the seconds one 512x512 slice's
synthesis takes (SD map included, the filter cached; median of ``--repeats``).

    env -u OPENBLAS_CORETYPE python benchmarks/scanner_noise.py \\
        --json benchmarks/results/scanner_noise.json --markdown benchmarks/results/scanner_noise.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

from denoise import scanner_noise
from denoise.dicom.scan import scan

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ct"
RESULTS = Path(__file__).resolve().parent / "results"


def synthesis_seconds(model: scanner_noise.NoiseModel, hu: np.ndarray, repeats: int) -> float:
    """Median seconds of ``model.synthesize`` on one slice, the filter already cached."""
    rng = np.random.default_rng(0)
    model.synthesize(hu, rng)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model.synthesize(hu, rng)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure_all(data: Path, slices: int, repeats: int) -> list[dict]:
    rows = []
    for series in scan(data).series:
        name = f"{series.files[0].relpath.parts[0]} ({series.uid[-6:]})"
        loaded = scanner_noise.load_series(series, max_slices=slices)
        t0 = time.perf_counter()
        model, out = scanner_noise.check(loaded.slices, loaded.pixel_spacing, slice_spacing=loaded.slice_spacing,
                                         slice_thickness=loaded.slice_thickness, rng=0)
        measure_s = time.perf_counter() - t0
        centre = loaded.slices[len(loaded.slices) // 2]
        row = {"series": name, "description": loaded.description, "kernel": loaded.kernel,
               "slices": int(loaded.slices.shape[0]), "shape": list(centre.shape),
               "pixel_spacing_mm": list(loaded.pixel_spacing), "slice_spacing_mm": loaded.slice_spacing,
               "slice_thickness_mm": loaded.slice_thickness, "offset": model.offset,
               "neighbour_correlation": model.neighbour_correlation, "note": model.note,
               "check_s": measure_s, "synthesis_s": synthesis_seconds(model, centre, repeats),
               "model": model.to_dict(), **out}
        rows.append(row)
        print(f"{name:40s} off {model.offset}  peak {out['measured_peak_mm']:.3f}/{out['synth_peak_mm']:.3f} "
              f"({out['peak_diff_pct']:+.1f} %)  mean {out['measured_mean_mm']:.3f}/{out['synth_mean_mm']:.3f} "
              f"({out['mean_diff_pct']:+.1f} %)  SD {out['measured_sd_hu']:.1f}/{out['synth_sd_hu']:.1f}  "
              f"map r {out['sd_map_corr']:.2f}  {row['synthesis_s'] * 1000:.0f} ms/slice", flush=True)
    return rows


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def mm(value) -> str:
    return "?" if value is None else f"{value:.3g}"


def markdown(rows: list[dict], header: dict) -> str:
    lines = [
        "| series | kernel | spacing / thickness mm | pairs (neighbour corr.) | NPS peak c/mm measured -> synth "
        "| diff | NPS mean c/mm measured -> synth | diff | noise SD HU measured -> synth | SD-map r | ms / slice |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        pairs = f"{r['offset']} apart" + (f" ({r['neighbour_correlation']:.2f})" if r["offset"] > 1 else "")
        lines.append(
            f"| {r['series']} | {r['kernel'] or '?'} | {mm(r['slice_spacing_mm'])} / {mm(r['slice_thickness_mm'])} "
            f"| {pairs} | {r['measured_peak_mm']:.3f} -> {r['synth_peak_mm']:.3f} | {r['peak_diff_pct']:+.1f} % "
            f"| {r['measured_mean_mm']:.3f} -> {r['synth_mean_mm']:.3f} | {r['mean_diff_pct']:+.1f} % "
            f"| {r['measured_sd_hu']:.1f} -> {r['synth_sd_hu']:.1f} | {r['sd_map_corr']:.2f} "
            f"| {r['synthesis_s'] * 1000:.0f} |")
    lines += ["", f"Up to {header['slices']} central slices per series. The synthesized noise is measured in the "
              f"scan's own ROIs over as many realizations (at most 8) as give {header['min_rois']} ROIs. "
              f"SD-map r: Pearson correlation, over those ROIs, of the model's SD map with the SD of the slices' "
              f"difference. ms / slice: one 512x512 synthesis, SD map included (median of {header['repeats']}), "
              f"on {header['machine']} ({header['cores']} cores), "
              f"OPENBLAS_CORETYPE={header['openblas_coretype']}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of CT series (default %(default)s)")
    parser.add_argument("--slices", type=int, default=scanner_noise.MAX_SLICES, help="central slices per series")
    parser.add_argument("--repeats", type=int, default=20, help="timed syntheses per series")
    parser.add_argument("--json", type=Path, default=RESULTS / "scanner_noise.json")
    parser.add_argument("--markdown", type=Path, default=RESULTS / "scanner_noise.md")
    args = parser.parse_args()
    if not args.data.is_dir():
        parser.error(f"no data folder {args.data}")
    rows = measure_all(args.data, args.slices, args.repeats)
    header = {"slices": args.slices, "min_rois": 2000, "repeats": args.repeats, "machine": cpu_name(),
              "cores": os.cpu_count(), "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE", "(unset)")}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"settings": header, "series": rows}, indent=1) + "\n")
    args.markdown.write_text(markdown(rows, header))
    print(f"wrote {args.json} and {args.markdown}")


if __name__ == "__main__":
    main()
