"""Job: denoise a DICOM file or folder with a trained model (``ct-denoise denoise``).

Every batch rule of :mod:`denoise.batch` holds (mirror paths, atomic writes,
resume, one-line reasons, exit codes); the transform and its derivation key
are :mod:`denoise.denoising`'s.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from denoise.batch import BatchReport, UsageError, check_paths, run_batch
from denoise.conditioning import DEFAULT_STRENGTH, strength_level
from denoise.denoising import DenoiseJob, Prebuilt, build_checked
from denoise.inference import BUNDLED_MODEL, DEFAULT_ENSEMBLE
from denoise.nn.serialize import model_paths


def scheduler_address(scheduler: str | None = None, dask: str | None = None) -> str | None:
    """Where the files go: ``--dask local`` (a local Dask cluster for this
    run), else the ``--scheduler`` address, else None (this machine's workers)."""
    if dask is not None and dask != "local":
        raise UsageError("--dask takes 'local' (a cluster on this machine); use --scheduler tcp://HOST:PORT, "
                         f"got {dask!r}")
    return dask or scheduler


def run(input_path, output_root, *, model_path=None, tile: int | None = None, overlap: float = 0.25,
        device: str = "cpu", force: bool = False, workers: int = 1, scheduler: str | None = None,
        on_outcome=None, on_plan=None, ensemble: int = DEFAULT_ENSEMBLE, strength=DEFAULT_STRENGTH,
        noise_sd_hu: float | None = None, allow_non_hu: bool = False, on_scan=None) -> BatchReport:
    """Denoise every CT file under ``input_path`` into ``output_root``."""
    if tile is not None and tile < 8:
        raise UsageError(f"--tile must be >= 8 pixels, got {tile}")
    if not 0 <= overlap < 1:
        raise UsageError(f"--overlap must be in [0, 1), got {overlap}")
    check_paths(Path(input_path), Path(output_root))  # an unwritable output fails before the model loads
    job = DenoiseJob(None if model_path is None else str(model_path), tile, overlap, device,
                     threads=1 if workers > 1 or scheduler else None, ensemble=ensemble, strength=strength,
                     noise_sd_hu=noise_sd_hu)
    built = build_checked(dataclasses.replace(job, threads=None))  # a bad --ensemble is a usage error here
    in_process = workers == 1 and scheduler is None
    report = run_batch(input_path, output_root, Prebuilt(built) if in_process else job, force=force,
                       workers=workers, scheduler=scheduler,
                       on_outcome=on_outcome, on_plan=on_plan, allow_non_hu=allow_non_hu, on_scan=on_scan)
    report.settings = settings(built.denoiser, model_path, device=device, workers=workers, scheduler=scheduler,
                               with_neighbours=report.with_neighbours)
    return report


def settings(denoiser, model_path=None, *, device: str = "cpu", workers: int = 1, scheduler: str | None = None,
             with_neighbours: int = 0) -> dict:
    """Every setting a denoising ran with (``denoise --json``: ``settings``): the model (id, file, the
    neighbour slices it takes and the files that had them: 2.5-D), views, strength, noise level, tiling,
    device and how the files were spread."""
    npz = model_paths(BUNDLED_MODEL if model_path is None else model_path)[0]
    neighbours = denoiser.model.neighbours
    return {"model_id": denoiser.model_id, "model_path": str(npz.resolve()), "bundled_model": model_path is None,
            "ensemble": denoiser.ensemble, "strength": round(denoiser.strength, 6),
            "strength_level": strength_level(denoiser.strength), "noise_sd_hu": denoiser.noise_sd_hu,
            "tile": denoiser.tile, "overlap": denoiser.overlap, "device": device, "workers": workers,
            "scheduler": scheduler, "neighbour_slices": neighbours,
            "files_with_neighbours": with_neighbours if neighbours else 0}
