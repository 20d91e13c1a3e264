"""Job: denoise a DICOM file or folder with a trained model (``ct-denoise denoise``); a NIfTI
volume, or DICOM written as NIfTI (``--format nifti``), through the Python API (:func:`run_nifti`).

Every batch rule of :mod:`denoise.batch` holds (mirror paths, atomic writes,
resume, one-line reasons, exit codes); the transform and its derivation key
are :mod:`denoise.denoising`'s.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from denoise.batch import (
    BatchReport,
    UsageError,
    VolumeReport,
    check_paths,
    check_writable,
    run_batch,
)
from denoise.conditioning import DEFAULT_STRENGTH, strength_level
from denoise.denoising import DenoiseJob, Prebuilt, build_checked
from denoise.inference import BUNDLED_MODEL, DEFAULT_ENSEMBLE
from denoise.nifti import is_nifti_path
from denoise.nn.serialize import model_paths
from denoise.text import one_line


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
        noise_sd_hu: float | None = None, allow_non_hu: bool = False, on_scan=None,
        fmt: str = "dicom") -> BatchReport | VolumeReport:
    """Denoise every CT file under ``input_path`` into ``output_root`` (``fmt`` nifti: :func:`run_nifti`)."""
    if fmt == "nifti":
        return run_nifti(input_path, output_root, model_path=model_path, tile=tile, overlap=overlap, device=device,
                         force=force, ensemble=ensemble, strength=strength, noise_sd_hu=noise_sd_hu)
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


# ---------------------------------------------------------------- NIfTI


FORMATS = ("dicom", "nifti")


def check_nifti_options(input_path, output, *, fmt: str | None, workers: int = 1, scheduler: str | None = None,
                        allow_non_hu: bool = False) -> str:
    """The output format (``dicom`` or ``nifti``: ``fmt``, else the input's); UsageError (one line) for an
    option that has no meaning with NIfTI output."""
    nifti_in = is_nifti_path(input_path)
    fmt = fmt or ("nifti" if nifti_in else "dicom")
    if fmt not in FORMATS:
        raise UsageError(f"--format takes dicom or nifti, got {fmt!r}")
    if nifti_in and fmt == "dicom":
        raise UsageError(f"{input_path}: a NIfTI input is written as NIfTI; --format dicom needs a DICOM input")
    if fmt == "dicom":
        return fmt
    given = [name for name, on in (("--workers", workers != 1), ("--scheduler/--dask", scheduler is not None),
                                   ("--allow-non-hu", allow_non_hu)) if on]
    if given:
        raise UsageError(f"{' and '.join(given)}: not with NIfTI (a volume is denoised in this process, in HU)")
    return fmt


def run_nifti(input_path, output, *, model_path=None, tile: int | None = None, overlap: float = 0.25,
              device: str = "cpu", force: bool = False, ensemble: int = DEFAULT_ENSEMBLE, strength=DEFAULT_STRENGTH,
              noise_sd_hu: float | None = None, on_volume=None) -> VolumeReport:
    """Denoise a NIfTI volume, or each CT series of a DICOM input, into NIfTI (see docs/commands/denoise.md).

    A ``.nii``/``.nii.gz`` INPUT goes to OUTPUT when it ends in ``.nii``/``.nii.gz``, else to
    OUTPUT/<input's name>, with the input's affine and header. A DICOM INPUT gives each series
    as OUTPUT/<SeriesDescription>_<SeriesNumber>.nii.gz (or OUTPUT itself for one series).
    Every target is checked before the model loads: an existing one needs ``force``.
    ``on_volume(done, total)`` after each volume."""
    from denoise.api import _volume_step, load_denoiser
    from denoise.api import denoise as denoise_volume
    from denoise.dicom.scan import scan
    from denoise.nifti import read_nifti, write_nifti
    from denoise.volume import series_volume

    input_path, output = Path(input_path), Path(output)
    if not input_path.exists():
        raise UsageError(f"{input_path}: no such file or folder")
    report = VolumeReport(str(input_path), str(output))
    if is_nifti_path(input_path):
        try:
            volumes = [(None, read_nifti(input_path))]
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        target = output if is_nifti_path(output) else output / input_path.name
        jobs = [(volumes[0], target)]
    else:
        found = scan(input_path).series
        names = nifti_names([(s.description, s.number) for s in found])
        if is_nifti_path(output):
            if len(found) > 1:
                raise UsageError(f"{output}: one NIfTI file takes one series; {input_path} holds {len(found)}: "
                                 "give a folder")
            names = [output.name] if found else []
        folder = output.parent if is_nifti_path(output) else output
        jobs = [((s, None), folder / name) for s, name in zip(found, names, strict=True)]
    for _, target in jobs:
        if target.resolve() == input_path.resolve() or input_path.resolve() in target.resolve().parents:
            raise UsageError(f"{target}: writing there would write into the input {input_path}")
        if target.is_dir() or (target.exists() and not force):
            raise UsageError(f"{target} exists; use --force to overwrite it")
    if jobs:
        check_writable(jobs[0][1].parent)
    try:
        den = load_denoiser(model_path, strength=strength, noise_sd=noise_sd_hu, ensemble=ensemble, device=device,
                            tile=tile, overlap=overlap)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    with_neighbours = 0
    for done, ((series, vol), target) in enumerate(jobs, 1):
        entry = {"input": str(input_path)}
        try:
            if vol is None:
                entry["series_uid"], entry["series_number"] = series.uid, series.number
                vol = series_volume(series, input_path)
            entry["slices"] = vol.shape[0]
            out = denoise_volume(vol, model=den)
            write_nifti(out, target, force=force)
            entry["output"] = str(target)
            if den.model.neighbours and _volume_step(vol):
                with_neighbours += vol.shape[0]
        except (ValueError, OSError) as exc:
            entry["reason"] = one_line(str(exc))
        report.volumes.append(entry)
        if on_volume is not None:
            on_volume(done, len(jobs))
    report.settings = settings(den, model_path, device=device, with_neighbours=with_neighbours)
    return report


def nifti_names(series: list[tuple[str | None, int | None]]) -> list[str]:
    """File names for DICOM series written as NIfTI, as dcm2niix names them by default (``%p_%s``):
    the series description (letters, digits, ``-`` and ``.`` kept, others ``_``; ``series`` when
    there is none) and the series number, ``.nii.gz``; a name taken twice gets ``a``, ``b``...

    >>> nifti_names([("Chest 1.0 B30f", 3), (None, None), ("Chest 1.0 B30f", 3)])
    ['Chest_1.0_B30f_3.nii.gz', 'series_1.nii.gz', 'Chest_1.0_B30f_3a.nii.gz']
    """
    names, seen = [], {}
    for k, (description, number) in enumerate(series, 1):
        text = re.sub(r"[^A-Za-z0-9.-]+", "_", description or "").strip("_.") or "series"
        stem = f"{text}_{number if number is not None else k}"
        count = seen.get(stem, 0)
        seen[stem] = count + 1
        names.append(f"{stem}{'' if count == 0 else chr(ord('a') + count - 1)}.nii.gz")
    return names
