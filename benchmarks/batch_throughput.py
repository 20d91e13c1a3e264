"""Batch denoising throughput: files/s for 1 process, N local processes and a
local Dask cluster, with peak memory per worker.

The folder is made by adding Gaussian noise (sigma 50 HU) to the shared CT
series (``../shared/data/ct``), a few hundred 512x512 slices by default.

    python benchmarks/batch_throughput.py --files 300 --workers 2
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from pipelines import denoise_folder, noise  # noqa: E402

SHARED = ROOT.parent / "shared" / "data" / "ct"


def make_folder(dst: Path, n_files: int) -> int:
    """Noisy copies of up to ``n_files`` shared CT slices under ``dst``."""
    src = dst.parent / "src"
    count = 0
    for path in sorted(SHARED.rglob("*.dcm")):
        if count >= n_files:
            break
        target = src / path.relative_to(SHARED)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        count += 1
    noise.run(src, dst, sigma_hu=50.0, seed=0, workers=2)
    return count


def peak_rss_mb(who=resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024


def timed_run(label: str, folder: Path, out: Path, **kw) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    report = denoise_folder.run(folder, out, **kw)
    secs = time.perf_counter() - t0
    n = report.count("written")
    return {"mode": label, "files": n, "seconds": secs, "files_per_s": n / secs, "failed": report.count("failed")}


def dask_worker_peaks(workers: int, folder: Path, out: Path, model) -> tuple[dict, list[float]]:
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        row = timed_run(f"dask local cluster ({workers} workers)", folder, out, model_path=model,
                        scheduler=cluster.scheduler_address, workers=workers)
        peaks = list(client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024).values())
    return row, peaks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=300)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--model", default=None, help="model path (default: the bundled model)")
    args = ap.parse_args()
    if not SHARED.is_dir():
        raise SystemExit(f"needs the shared CT data at {SHARED}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        n = make_folder(tmp / "noisy", args.files)
        print(f"{n} noisy slices in {tmp / 'noisy'}")
        rows = [timed_run("1 process", tmp / "noisy", tmp / "out1", model_path=args.model)]
        print(f"  driver peak RSS {peak_rss_mb():.0f} MB")
        rows.append(timed_run(f"{args.workers} local processes", tmp / "noisy", tmp / "outN",
                              model_path=args.model, workers=args.workers))
        child_peak = peak_rss_mb(resource.RUSAGE_CHILDREN)
        row, peaks = dask_worker_peaks(args.workers, tmp / "noisy", tmp / "outD", args.model)
        rows.append(row)
    print("\n| mode | files | seconds | files/s | peak MB per worker |\n|---|---|---|---|---|")
    mems = [f"{peak_rss_mb():.0f} (driver)", f"{child_peak:.0f} (largest child)",
            " / ".join(f"{p:.0f}" for p in peaks)]
    for r, m in zip(rows, mems, strict=True):
        print(f"| {r['mode']} | {r['files']} | {r['seconds']:.1f} | {r['files_per_s']:.2f} | {m} |")


if __name__ == "__main__":
    main()
