"""ct-denoise command line: parses arguments, calls one pipeline, prints.

Exit codes (all commands):
  0   success: every CT input was handled
  1   partial failure: some files failed (each one is listed with its reason)
  2   usage error: bad arguments or paths, unreadable config/model; nothing done
  3   nothing to do: no CT image found in the input (or nothing matched)
  70  internal error: an unexpected exception, a bug (one line; -v adds the traceback)
  130 interrupted (Ctrl-C)
"""

from __future__ import annotations

import json
import logging
import sys
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from denoise.atomic import finite
from denoise.backend import DeviceError
from denoise.batch import EXIT_NOTHING, EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, BatchReport, UsageError, check_paths
from denoise.logs import OneLineFormatter
from denoise.node.admit import DEFAULT_MAX_PIXELS
from denoise.text import one_line, printable

EXIT_INTERNAL, EXIT_INTERRUPTED = 70, 130

app = typer.Typer(
    help="Denoise CT DICOM with a NumPy convolutional autoencoder.\n\n"
    "Exit codes: 0 done, 1 some files failed, 2 usage error, 3 nothing to do, 70 internal error (a bug).",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help is plain text: ".[dask]" stays ".[dask]"
)
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def installed_version() -> str:
    """The installed distribution's version (importlib.metadata); a plain checkout's own."""
    from importlib.metadata import PackageNotFoundError, version

    from denoise import __version__

    try:
        return version("ct-denoise")
    except PackageNotFoundError:
        return __version__


def _show_version(value: bool) -> None:
    if value:
        from denoise.hashing import sha256_file
        from denoise.inference import BUNDLED_MODEL

        npz = BUNDLED_MODEL.with_name(BUNDLED_MODEL.name + ".npz")
        model = f"{npz.stem}@{sha256_file(npz)[:16]}" if npz.is_file() else "not installed"
        typer.echo(f"ct-denoise {installed_version()} (bundled model {model})")
        raise typer.Exit(EXIT_OK)


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", callback=_show_version, is_eager=True,
                                          help="Print the version and the bundled model's id, then exit.")] = False,
    verbose: Annotated[bool, typer.Option("-v", "--verbose", help="Log more: DEBUG records, pydicom's warnings per "
                                          "file, tracebacks of internal errors.")] = False,
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="Log only warnings and errors.")] = False,
):
    """Denoise CT DICOM with a NumPy convolutional autoencoder."""
    configure_logging(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)


def configure_logging(level: int) -> None:
    """Records of the package (logger ``ct_denoise``) go to stderr at ``level``;
    pydicom's and pynetdicom's own loggers only from WARNING unless -v."""
    logger = logging.getLogger("ct_denoise")
    logger.setLevel(level)
    if not any(getattr(h, "ct_denoise", False) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(OneLineFormatter())
        handler.ct_denoise = True
        logger.addHandler(handler)
    for name in ("pydicom", "pynetdicom"):
        logging.getLogger(name).setLevel(logging.DEBUG if level <= logging.DEBUG else logging.WARNING)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record is emitted (Typer's test
    runner swaps it per invocation)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):  # StreamHandler.__init__ sets it; the property decides
        pass


def run() -> None:
    """The console entry point: the Typer app, with an unexpected exception
    reported as one line and exit code 70 (its traceback logged at DEBUG: -v)."""
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted", markup=False)
        sys.exit(EXIT_INTERRUPTED)
    except Exception as exc:  # the last boundary: anything that reaches here is a bug
        logger = logging.getLogger("ct_denoise")
        logger.debug("internal error", exc_info=True)
        hint = "" if logger.isEnabledFor(logging.DEBUG) else " (-v shows the traceback)"
        err.print(f"internal error (a bug in ct-denoise, please report it): {type(exc).__name__}: {one_line(exc)}"
                  + hint, markup=False)
        sys.exit(EXIT_INTERNAL)


def fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    err.print(f"[red]error:[/red] {escape(message)}", markup=True, highlight=False)
    return typer.Exit(code)


@contextmanager
def batch_progress(label: str):
    """A Rich progress bar fed by the batch callbacks."""
    progress = Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[last]}"), TimeRemainingColumn(), console=err)
    task = None

    scanning = None

    def on_scan(done: int, total: int):
        """The scan before a batch: one step per file found."""
        nonlocal scanning
        if scanning is None:
            scanning = progress.add_task("scan", total=total, last="")
        progress.update(scanning, completed=done, last="files read")

    def on_plan(total: int):
        nonlocal task
        if scanning is not None:
            progress.remove_task(scanning)
        task = progress.add_task(label, total=total, last="")

    on_plan.scan = on_scan  # batch jobs also report their scan

    def on_outcome(outcome):
        if task is not None:
            progress.update(task, advance=1, last=getattr(outcome, "status", outcome))

    with progress:
        yield on_plan, on_outcome


class Device(StrEnum):
    cpu = "cpu"
    gpu = "gpu"


class Match(StrEnum):
    path = "path"
    sop = "sop"
    position = "position"


STDOUT = "-"
JsonOut = Annotated[Path | None, typer.Option(
    "--json", metavar="FILE|-", help="Also write the result as strict JSON to FILE; '-' writes it to stdout "
    "instead, and the human-readable report goes to stderr.")]


def to_stdout(json_out: Path | None) -> bool:
    return json_out is not None and str(json_out) == STDOUT


@contextmanager
def human_report(json_out: Path | None):
    """With ``--json -`` stdout carries only the JSON: the human-readable lines go to stderr."""
    global out
    saved = out
    if to_stdout(json_out):
        out = err
    try:
        yield
    finally:
        out = saved


def emit_json(json_out: Path | None, data) -> None:
    """Strict JSON (non-finite numbers as null) to stdout (``-``) or atomically to a file."""
    if json_out is None:
        return
    if to_stdout(json_out):
        typer.echo(json.dumps(finite(data), indent=2, allow_nan=False))  # never styled, whatever FORCE_COLOR says
    else:
        from denoise.atomic import write_json

        write_json(json_out, data)


def print_batch(report: BatchReport) -> int:
    """Per-file problems, then the summary line; returns the exit code."""
    for o in report.outcomes:
        if o.status == "failed":
            out.print(f"FAILED  {o.relpath}: {o.reason}", markup=False)
        elif o.status == "ignored":
            out.print(f"ignored {o.relpath}: {o.reason}", markup=False)
    out.print(f"{report.summary()} -> {report.output}", markup=False)
    if report.exit_code == EXIT_NOTHING:
        err.print(f"nothing to do: no CT image found in {report.input}", markup=False)
    return report.exit_code


@app.command()
def info(
    path: Annotated[Path, typer.Argument(help="DICOM file or folder (scanned recursively).")],
    json_out: JsonOut = None,
):
    """List the CT series found (no patient identifiers) and the skipped files with reasons."""
    from pipelines import info as job

    try:
        summary = job.run(path)
    except FileNotFoundError as exc:
        raise fail(str(exc)) from exc
    emit_json(json_out, summary)
    if not to_stdout(json_out):  # the summary is the JSON: no table beside it
        rows = [("series", "slices", "size", "pixel mm", "gap mm", "transfer syntax", "description")]
        for row in summary["series"]:
            px = "x".join(f"{v:.3g}" for v in row["pixel_spacing_mm"]) if row["pixel_spacing_mm"] else "-"
            gap = f"{row['slice_spacing_mm']:.3g}" if row["slice_spacing_mm"] else "-"
            rows.append((row["series"], str(row["slices"]), row["size"], px, gap,
                         row["transfer_syntax"], row["description"] or "-"))
        print_rows(rows)
        for row in summary["series"]:
            for warning in row["warnings"]:
                out.print(f"warning: series {row['series']}: {warning}", markup=False)
        for skipped in summary["skipped"]:
            out.print(f"skipped {skipped['file']}: {skipped['reason']}", markup=False)
        out.print(f"{len(summary['series'])} series, "
                  f"{sum(r['slices'] for r in summary['series'])} slices, "
                  f"{len(summary['skipped'])} files skipped", markup=False)
    raise typer.Exit(EXIT_OK if summary["series"] else EXIT_NOTHING)


@app.command()
def noise(
    input: Annotated[Path, typer.Argument(help="DICOM file or folder.")],
    output: Annotated[Path, typer.Argument(help="Output folder (mirrors input paths).")],
    sigma: Annotated[float | None, typer.Option(help="Gaussian noise sigma in HU.")] = None,
    dose: Annotated[float | None, typer.Option(
        help="Low-dose simulation: incident photons I0 per detector bin and view (e.g. 1e5).")] = None,
    seed: Annotated[int, typer.Option(help="Random seed (per file streams derive from it).")] = 0,
    views: Annotated[int, typer.Option(min=16, help="Projection views for --dose.")] = 720,
    clean_out: Annotated[Path | None, typer.Option(
        help="With --dose: also write the clean reference (FBP of the noiseless sinogram) here.")] = None,
    force: Annotated[bool, typer.Option(help="Overwrite existing outputs.")] = False,
    workers: Annotated[int, typer.Option(min=1, help="Parallel worker processes.")] = 1,
    allow_non_hu: Annotated[bool, typer.Option(
        "--allow-non-hu", help="Also process CT whose values are not HU (perfusion, iodine or material maps, "
        "RescaleType other than HU), as if they were HU; ignored with their reason by default.")] = False,
    json_out: JsonOut = None,
):
    """Write noisy copies of CT files as a derived DICOM series (Gaussian --sigma or low-dose --dose)."""
    from pipelines import noise as job

    codes, summaries = [], {}
    runs = [(output, False)] + ([(clean_out, True)] if clean_out is not None else [])
    if clean_out is not None:  # the second run's folder is checked before the first run writes anything
        try:
            check_paths(input, clean_out)
        except UsageError as exc:
            raise fail(str(exc)) from exc
    with human_report(json_out):
        for target, clean in runs:
            try:
                with batch_progress("reference" if clean else "noise") as (on_plan, on_outcome):
                    report = job.run(input, target, sigma_hu=sigma, i0=dose, seed=seed, n_views=views,
                                     clean=clean, force=force, workers=workers, on_scan=on_plan.scan,
                                     on_plan=on_plan, on_outcome=on_outcome, allow_non_hu=allow_non_hu)
            except (UsageError, ValueError) as exc:
                raise fail(str(exc)) from exc
            codes.append(print_batch(report))
            summaries["clean" if clean else "noisy"] = report.to_dict()
    emit_json(json_out, {"command": "noise", "exit_code": max(codes), **summaries})
    raise typer.Exit(max(codes))


@app.command()
def denoise(
    input: Annotated[Path, typer.Argument(help="DICOM file or folder (scanned recursively).")],
    output: Annotated[Path, typer.Argument(help="Output folder (mirrors input paths; never inside INPUT).")],
    model: Annotated[Path | None, typer.Option(help="Model file (.npz with its .json); default: bundled.")]
    = None,
    workers: Annotated[int, typer.Option(min=1, help="Parallel worker processes.")] = 1,
    force: Annotated[bool, typer.Option(help="Overwrite outputs that are not this model's result.")] = False,
    tile: Annotated[int | None, typer.Option(min=8, help="Tiled inference with N x N tiles (bounds memory).")]
    = None,
    overlap: Annotated[float, typer.Option(min=0.0, max=0.95, help="Tile overlap fraction, with --tile.")] = 0.25,
    ensemble: Annotated[int, typer.Option(min=1, max=8,
        help="Average the model over 1, 2 (a flip), 4 (flips) or 8 (flips and transposes) views; "
             "more is cleaner and proportionally slower.")] = 2,
    device: Annotated[Device, typer.Option(help="cpu, or gpu (needs CuPy).")] = Device.cpu,
    strength: Annotated[str, typer.Option(
        help="How much of the network's correction to apply: low (1/3), medium (2/3), high (all) or a "
             "number 0..1.")] = "high",
    noise_sd: Annotated[float | None, typer.Option(
        "--noise-sd", help="HU of noise the input holds, to remove (as BM3D is given its sigma); 0 leaves the "
        "image as it is. Default: the network judges it from the image. Needs a model with a noise-level "
        "input.")] = None,
    scheduler: Annotated[str | None, typer.Option(
        help="Distribute files over a Dask cluster at this address (tcp://HOST:PORT); needs .[dask].")] = None,
    dask: Annotated[str | None, typer.Option(
        help="'local': start a local Dask cluster of --workers processes for this run; needs .[dask].")] = None,
    allow_non_hu: Annotated[bool, typer.Option(
        "--allow-non-hu", help="Also process CT whose values are not HU (perfusion, iodine or material maps, "
        "RescaleType other than HU), as if they were HU; ignored with their reason by default.")] = False,
    json_out: JsonOut = None,
):
    """Denoise CT DICOM with the NumPy autoencoder; writes one derived series per input series."""
    from pipelines import denoise_folder as job

    if dask is not None and dask != "local":
        raise fail(f"--dask takes 'local' (a cluster on this machine); use --scheduler tcp://HOST:PORT, got {dask!r}")
    with human_report(json_out):
        try:
            with batch_progress("denoise") as (on_plan, on_outcome):
                report = job.run(input, output, model_path=model, tile=tile, overlap=overlap, device=device.value,
                                 ensemble=ensemble, force=force, workers=workers, scheduler=dask or scheduler,
                                 on_plan=on_plan, on_outcome=on_outcome, strength=strength, noise_sd_hu=noise_sd,
                                 allow_non_hu=allow_non_hu, on_scan=on_plan.scan)
        except (UsageError, DeviceError) as exc:
            raise fail(str(exc)) from exc
        code = print_batch(report)
    emit_json(json_out, {"command": "denoise", **report.to_dict()})
    raise typer.Exit(code)


@app.command()
def evaluate(
    reference: Annotated[Path, typer.Argument(help="Reference (clean) DICOM file or folder.")],
    test: Annotated[Path, typer.Argument(help="Test (noisy or denoised) DICOM file or folder.")],
    match: Annotated[Match, typer.Option(help="Pair files by: path (relative path), sop "
                                         "(SourceImageSequence/SOP UID) or position.")] = Match.path,
    window: Annotated[tuple[float, float], typer.Option(help="Metric window in HU, mapped to [0, 1].")] = (
        -1000.0, 1000.0),
    mask: Annotated[bool, typer.Option(
        "--mask", help="Score only the body (exclude air outside the patient).")] = False,
    json_out: JsonOut = None,
    noisy: Annotated[Path | None, typer.Option(
        help="The noisy inputs (file or folder) that TEST was made from; scored too, and fed to --baselines.")]
    = None,
    baselines: Annotated[str | None, typer.Option(
        help="Comma-separated classical denoisers run on --noisy: nlm,tv,wavelet,bm3d (bm3d needs "
        "pip install .[bm3d]; its licence allows non-commercial use only).")] = None,
    label: Annotated[str, typer.Option(help="Name of TEST in the comparison table.")] = "test",
):
    """PSNR, SSIM, RMSE (HU) and MSE per matched file and their mean; with --noisy/--baselines one
    table comparing TEST with the noisy input and classical denoisers."""
    from pipelines import evaluate as job

    try:
        names = job.parse_baselines(baselines)
        with batch_progress("evaluate") as (on_plan, on_outcome):
            result = job.run(reference, test, match=match.value, window=window, mask=mask,
                             json_out=None if to_stdout(json_out) else json_out,
                             noisy=noisy, baselines=names, test_label=label, on_plan=on_plan,
                             on_pair=lambda score: on_outcome("scored"),
                             on_step=lambda name, file: on_outcome(name))
    except (FileNotFoundError, ValueError) as exc:
        raise fail(str(exc)) from exc
    with human_report(json_out):
        print_evaluation(result)
    if to_stdout(json_out):
        emit_json(json_out, result.to_dict())
    if not result.files:
        raise fail(f"nothing matched between {reference} and {test} (match by {match})", EXIT_NOTHING)
    raise typer.Exit(EXIT_PARTIAL if result.problems else EXIT_OK)


@app.command()
def qa(
    before: Annotated[Path, typer.Argument(help="DICOM file or folder (scanned recursively).")],
    after: Annotated[Path | None, typer.Argument(
        help="Its processed version (file or folder), paired with BEFORE as --match says.")] = None,
    match: Annotated[Match, typer.Option(help="Pair AFTER with BEFORE by: path (relative path), sop "
                                         "(SourceImageSequence/SOP UID) or position.")] = Match.path,
    json_out: JsonOut = None,
    roi: Annotated[list[str] | None, typer.Option(
        "--roi", help="x,y,w,h: a pixel ROI (x column, y row of its top-left pixel) for noise SD and NPS "
        "instead of the automatic soft-tissue regions; repeat for several.")] = None,
):
    """Noise SD (HU), noise texture (NPS peak and mean frequency, cycles/mm) and edge sharpness (10-90 %
    width, mm) measured on the images alone; with AFTER, before vs after on the same regions and edges,
    and the residual BEFORE - AFTER."""
    from pipelines import qa as job

    try:
        rois = [job.parse_roi(text) for text in roi or []]
        with batch_progress("qa") as (on_plan, on_outcome):
            result = job.run(before, after, match=match.value, rois=rois,
                             json_out=None if to_stdout(json_out) else json_out, on_plan=on_plan, on_file=on_outcome)
    except (FileNotFoundError, ValueError) as exc:
        raise fail(str(exc)) from exc
    with human_report(json_out):
        print_qa(result)
        if json_out is not None and not to_stdout(json_out):
            out.print(f"results written: {json_out}", markup=False)
    if to_stdout(json_out):
        emit_json(json_out, result.to_dict())
    if not result.files:
        what = "nothing matched between BEFORE and AFTER" if result.paired else "no CT image found"
        raise fail(f"{what} ({before}{' and ' + str(after) if after else ''})", EXIT_NOTHING)
    raise typer.Exit(result.exit_code)


manifest_app = typer.Typer(help="Build data-set manifests (files, SHA-256, series, patient split).",
                           no_args_is_help=True)
app.add_typer(manifest_app, name="manifest")


@manifest_app.command("build")
def manifest_build(
    folders: Annotated[list[Path], typer.Argument(help="One or more folders of CT DICOM.")],
    out_path: Annotated[Path, typer.Option("--out", help="Manifest JSON to write, e.g. data_manifests/NAME.json")],
    val: Annotated[float, typer.Option(min=0.0, max=1.0, help="Fraction of patients for validation.")] = 0.15,
    test: Annotated[float, typer.Option(min=0.0, max=1.0, help="Fraction of patients for testing.")] = 0.15,
    seed: Annotated[int, typer.Option(help="Seed of the patient shuffle.")] = 0,
    test_from: Annotated[list[Path] | None, typer.Option(
        help="Hold out for testing every patient with a file under this folder (repeat the option).")] = None,
    val_from: Annotated[list[Path] | None, typer.Option(
        help="Put every patient with a file under this folder into validation (repeat the option).")] = None,
    json_out: JsonOut = None,
):
    """Scan folders and write a manifest split into train/val/test by patient (never by slice).
    --test-from / --val-from choose patients by folder; --val / --test split the others at random."""
    from denoise.manifest import ManifestError, build_manifest, save_manifest

    holdout = {**{f: "val" for f in val_from or []}, **{f: "test" for f in test_from or []}}
    for folder in [*folders, *holdout]:
        if not Path(folder).is_dir():
            raise fail(f"{folder}: not a folder")
    try:
        manifest = build_manifest(folders, out_path, val=val, test=test, seed=seed, holdout=holdout)
    except (ManifestError, ValueError) as exc:
        raise fail(str(exc), EXIT_NOTHING if isinstance(exc, ManifestError) else EXIT_USAGE) from exc
    save_manifest(manifest, out_path)
    counts = manifest["counts"]
    with human_report(json_out):
        out.print(f"{len(manifest['files'])} files in {len(manifest['series'])} series, split by "
                  f"{manifest['split_by']}: " + ", ".join(
                      f"{s} {counts[s]['groups']} group(s)/{counts[s]['files']} files" for s in counts)
                  + f" -> {out_path}", markup=False)
        for row in manifest["series"]:
            out.print(f"  {row['split']:5s}  {row['n_slices']:4d} slices  {row['description']}", markup=False)
    emit_json(json_out, {"command": "manifest build", "output": str(out_path), "files": len(manifest["files"]),
                         "series": len(manifest["series"]), "split_by": manifest["split_by"], "counts": counts})


@app.command()
def train(
    config: Annotated[Path | None, typer.Option(help="Run config: a TOML file, or the name of a bundled one "
                                                 "(default_ct, kernels_ct, quick_chest, default_ct_finetune).")]
    = None,
    out_dir: Annotated[Path, typer.Option("--out", help="Run folder (checkpoints, logs, progress GIF).")] = Path(
        "runs/run"),
    epochs: Annotated[int | None, typer.Option(min=1, help="Override training.epochs.")] = None,
    lr: Annotated[float | None, typer.Option(help="Override optimizer.lr.")] = None,
    patch_size: Annotated[int | None, typer.Option(min=8, max=1024, help="Override patches.size.")] = None,
    batch_size: Annotated[int | None, typer.Option(min=1, help="Override patches.batch_size.")] = None,
    seed: Annotated[int | None, typer.Option(help="Override training.seed.")] = None,
    device: Annotated[Device | None, typer.Option(help="cpu, or gpu (needs CuPy).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its last checkpoint.")]
    = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
    json_out: JsonOut = None,
):
    """Train the NumPy autoencoder on a manifest's training split (validated on its val split)."""
    from denoise.config import ConfigError
    from denoise.manifest import ManifestError
    from denoise.nn import ModelFileError
    from pipelines import train as train_job

    given = {"training.epochs": epochs, "optimizer.lr": lr, "patches.size": patch_size,
             "patches.batch_size": batch_size, "training.seed": seed,
             "training.device": None if device is None else device.value}
    overrides = {k: v for k, v in given.items() if v is not None}
    try:
        result = train_job.run(config, out_dir, overrides=overrides, resume=resume, show_progress=not quiet)
    except (ConfigError, ManifestError, ModelFileError, train_job.RunFolderError, DeviceError) as exc:
        raise fail(str(exc)) from exc
    with human_report(json_out):
        out.print(f"trained {result.epochs_done} epoch(s); best validation PSNR {result.best_val_psnr:.2f} dB"
                  + (" (stopped early)" if result.stopped_early else "") + f"; run folder {result.run_dir}",
                  markup=False)
    emit_json(json_out, {"command": "train", "run_dir": str(result.run_dir), "epochs_done": result.epochs_done,
                         "best_val_psnr_db": result.best_val_psnr, "stopped_early": result.stopped_early,
                         "seconds": sum(row.get("epoch_seconds", 0.0) for row in result.log),
                         "outputs": {"config": str(result.run_dir / "config.toml"),
                                     "log": str(result.run_dir / "log.json"),
                                     "checkpoints": str(result.run_dir / "checkpoints")}})


@app.command()
def adapt(
    series_dir: Annotated[Path, typer.Argument(help="Folder of one (or, with --series, more) noisy CT series.")],
    out_path: Annotated[Path, typer.Option("--out", help="Model path stem to write (.npz + .json).")],
    from_model: Annotated[Path | None, typer.Option(
        "--from", help="Model to start from (default: the bundled model).")] = None,
    minutes: Annotated[float | None, typer.Option(help="Time budget (default 5 minutes).")] = None,
    epochs: Annotated[int | None, typer.Option(min=1, help="Train this many epochs instead of a time budget.")]
    = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    series: Annotated[str | None, typer.Option(
        help="Which series, when the folder holds several: its number in `ct-denoise info` or its UID.")] = None,
    run_dir: Annotated[Path | None, typer.Option(
        "--run", help="Run folder (default: <out>.run beside the model).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run from its last checkpoint.")] = False,
    noise_sd: Annotated[float | None, typer.Option(
        "--noise-sd", help="The noise to remove, HU: what your low-dose protocol adds over the standard one, "
                           "sqrt(SD_low^2 - SD_standard^2) in soft tissue. Switches to the recorrupted method "
                           "(keeps the texture beneath that noise; thick slices allowed).")] = None,
    dose: Annotated[float | None, typer.Option(
        "--dose", help="The noise to remove as low-dose noise at I0 photons per bin and view (as `noise --dose` "
                       "simulates it); recorrupted method.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
):
    """Adapt a model to your own scanner from one noisy series, no clean images needed. By default
    self-supervised on neighbour slices (as in Noise2Sim); with --noise-sd or --dose, on recorrupted
    pairs of the noise you name. Then use it with `denoise --model OUT`."""
    from denoise.dicom.pixels import PixelDataError
    from pipelines import adapt as job

    try:
        result = job.run(series_dir, out_path, from_model=from_model, minutes=minutes, epochs=epochs, seed=seed,
                         resume=resume, run_dir=run_dir, series=series, show_progress=not quiet,
                         noise_sd=noise_sd, dose_i0=dose)
    except (UsageError, PixelDataError, DeviceError) as exc:
        raise fail(str(exc)) from exc
    except job.AdaptCheckFailed as exc:
        raise fail(str(exc), EXIT_PARTIAL) from exc
    out.print(job.summary(result), markup=False)


@app.command()
def serve(
    out_dir: Annotated[Path | None, typer.Option(
        "--out", help="Node folder: spool, queue, derived series and node.log.")] = None,
    aet: Annotated[str, typer.Option(help="This node's AE title.")] = "CTDENOISE",
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port to listen on (0: any free one).")] = 11112,
    bind: Annotated[str, typer.Option(
        help="Address to listen on; 127.0.0.1 by default (opening to the network is your choice).")] = "127.0.0.1",
    forward: Annotated[list[str] | None, typer.Option(
        help="Send each derived series here, AET@HOST:PORT; repeat for several destinations.")] = None,
    allow: Annotated[list[str] | None, typer.Option(
        help="Accept associations only from this calling AE title; repeat for several.")] = None,
    series_timeout: Annotated[float, typer.Option(
        help="A series is complete when nothing new arrived for this many seconds.")] = 10.0,
    model: Annotated[Path | None, typer.Option(help="Model file; default: bundled.")] = None,
    strength: Annotated[str, typer.Option(help="low, medium, high or a number 0..1 (as for denoise).")] = "high",
    ensemble: Annotated[int, typer.Option(min=1, max=8, help="Self-ensemble views: 1, 2, 4 or 8 (as for denoise).")]
    = 2,
    noise_sd: Annotated[float | None, typer.Option("--noise-sd", help="HU of noise to remove (as for denoise).")]
    = None,
    max_pixels: Annotated[int, typer.Option(
        min=1, help="Refuse (0xC000) an instance of more pixels than this, rows x columns x frames; it bounds the "
        "memory one instance takes.")] = DEFAULT_MAX_PIXELS,
    keep_days: Annotated[float, typer.Option(
        min=0, help="Delete finished and quarantined jobs (originals and derived series) after this many days; "
        "inf keeps them.")] = 7.0,
    connect_timeout: Annotated[float, typer.Option(
        min=0.001, help="Seconds to wait for a --forward destination to accept the TCP connection.")] = 10.0,
    max_associations: Annotated[int, typer.Option(min=1, help="Associations at once; more are rejected.")] = 16,
    max_per_peer: Annotated[int, typer.Option(
        min=1, help="Connections at once from one peer address; more are closed at once.")] = 4,
    idle_timeout: Annotated[float, typer.Option(
        min=0.001, help="Seconds for a new connection to send its whole association request.")] = 30.0,
    pdu_timeout: Annotated[float, typer.Option(
        min=0.001, help="Seconds for any PDU to arrive whole once it has begun; a slower peer is dropped.")] = 60.0,
    max_pdu: Annotated[int, typer.Option(
        min=1024, help="Largest P-DATA PDU the node announces and accepts, in bytes; a peer that sends a larger one "
        "is dropped.")] = 16382,
    drain: Annotated[float, typer.Option(
        min=0.001, help="Seconds open associations get to finish after SIGTERM/SIGINT.")] = 30.0,
    status_of: Annotated[Path | None, typer.Option(
        "--status", help="Show the queue of the node folder DIR and exit.")] = None,
    json_out: JsonOut = None,
):
    """Run a DICOM node: receive CT (C-STORE, C-ECHO), denoise each complete series, forward the derived series."""

    from denoise.node.forward import Destination
    from pipelines import serve as job

    if status_of is not None:
        try:
            state = job.status(status_of)
        except UsageError as exc:
            raise fail(str(exc)) from exc
        emit_json(json_out, state)
        if not to_stdout(json_out):
            print_node_status(state)
        raise typer.Exit(EXIT_OK)
    if out_dir is None:
        raise fail("serve needs --out DIR (or --status DIR to show a node's queue)")
    try:
        destinations = tuple(Destination.parse(f) for f in forward or [])
    except ValueError as exc:
        raise fail(str(exc)) from exc
    options = job.ServeOptions(out=out_dir, aet=aet, port=port, bind=bind, forward=destinations,
                               allow=tuple(allow or []), series_timeout_s=series_timeout,
                               model_path=None if model is None else str(model), strength=strength,
                               ensemble=ensemble, noise_sd_hu=noise_sd, max_pixels=max_pixels,
                               keep_days=keep_days, connect_timeout_s=connect_timeout,
                               max_associations=max_associations, max_per_peer=max_per_peer,
                               idle_timeout_s=idle_timeout, pdu_timeout_s=pdu_timeout, max_pdu=max_pdu, drain_s=drain)
    try:
        code = job.run(options)
    except UsageError as exc:
        raise fail(str(exc)) from exc
    raise typer.Exit(code)


def print_node_status(state: dict) -> None:
    pid = state["pid"]
    out.print(f"node: {'running, PID ' + str(pid) if pid else 'not running'}", markup=False)
    for r in state["receiving"]:
        out.print(f"receiving  series {r['series']}: {r['instances']} instances, last {r['idle_s']:g} s ago",
                  markup=False)
    for q in state["queue"]:
        extra = f", retry in {q['next_try_in_s']:g} s after: {q['last_error']}" if q["last_error"] else ""
        out.print(f"queued     series {q['series']}: {q['instances']} instances, stage {q['stage']}{extra}",
                  markup=False)
    for q in state["quarantined"]:
        for name, reason in q["files"].items():
            out.print(f"quarantine series {q['series']}: {name}: {reason} (in quarantine/{q['job']})", markup=False)
    out.print(f"{len(state['receiving'])} receiving, {len(state['queue'])} queued, "
              f"{sum(len(q['files']) for q in state['quarantined'])} quarantined, "
              f"{state['finished_jobs']} finished jobs, {state['derived_series']} derived series", markup=False)


@app.command("export-model")
def export_model(
    run_dir: Annotated[Path, typer.Argument(help="Training run folder (from `train --out`).")],
    out_path: Annotated[Path, typer.Option("--out", help="Model path stem, e.g. denoise/models/default_ct")],
    checkpoint: Annotated[str, typer.Option(help="Which checkpoint: best or last.")] = "best",
    reproduce: Annotated[list[str] | None, typer.Option(
        help="Commands that reproduce the run, recorded in the metadata (repeat the option; default: the "
        "train and export commands for the run's config).")] = None,
):
    """Export a run's checkpoint as a model file (.npz weights + .json metadata with provenance)."""
    from denoise.nn import ModelFileError
    from pipelines import export as job

    if checkpoint not in ("best", "last"):
        raise fail(f"--checkpoint must be best or last, got {checkpoint!r}")
    try:
        path = job.run(run_dir, out_path, checkpoint=checkpoint, reproduce=reproduce)
    except (FileNotFoundError, ModelFileError, ValueError) as exc:
        raise fail(str(exc)) from exc
    out.print(f"model written: {path} (+ .json)", markup=False)


@app.command()
def report(
    source: Annotated[Path, typer.Argument(
        help="Training run folder, evaluation folder (evaluation.json) and/or qa result (qa.json, or the file).")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for index.html and its images.")] = Path("report"),
    window: Annotated[tuple[float, float] | None, typer.Option(
        help="Display window in HU for the pictures (default -160 240, soft tissue).")] = None,
):
    """Assemble a self-contained HTML report: metric tables, noise SD / NPS / edge-width tables and plots,
    progress GIF, before/after panels with residuals, scroll GIF."""
    from pipelines import report as job

    try:
        html = job.run(source, out_dir, window=window)
    except (FileNotFoundError, ValueError) as exc:
        raise fail(str(exc)) from exc
    out.print(f"report written: {html}", markup=False)


@app.command()
def demo(
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the demo's inputs and outputs.")] = Path(
        "demo_out"),
    model: Annotated[Path | None, typer.Option(help="Model file; default: the bundled model.")] = None,
):
    """Quick start: noise -> denoise (bundled model) -> evaluate vs baselines -> HTML report, on the
    sample CT that ships with pydicom/pydicom-data."""
    from pipelines import demo as job

    try:
        result = job.run(out_dir, model_path=model, on_step=lambda text: err.print(f"... {text}", markup=False))
    except (UsageError, ValueError) as exc:
        raise fail(str(exc)) from exc
    out.print(f"sample CT: {result['inputs']} (noise added: sigma 50 HU)", markup=False)
    out.print(f"denoised: {result['denoise'].summary()}", markup=False)
    print_evaluation(result["evaluation"])
    mean = result["qa"].mean()
    change = mean.get("change") or {}
    out.print(f"\nno reference (qa, noisy -> denoised, mean of {mean['files']} files): noise SD "
              f"{_num(mean['before'].get('noise_sd_hu'), '.1f')} -> {_num(mean['after'].get('noise_sd_hu'), '.1f')} HU "
              f"({_num(change.get('noise_reduction_pct'), '.0f')} % lower), NPS mean frequency "
              f"{_num(mean['before'].get('nps_mean_freq_mm'), '.3f')} -> "
              f"{_num(mean['after'].get('nps_mean_freq_mm'), '.3f')} cycles/mm, edge width "
              f"{_num(change.get('edge_width_change_pct'), '+.1f')} %", markup=False)
    out.print(f"\nreport (noisy | model | clean | residual, metrics vs baselines, noise texture and sharpness): "
              f"{result['report']}", markup=False)
    raise typer.Exit(max(result["noise"].exit_code, result["denoise"].exit_code))


def print_rows(rows: list[tuple[str, ...]], right: tuple[int, ...] = ()) -> None:
    """Plain aligned columns (readable in logs and pipes, any terminal width)."""
    rows = [tuple(printable(c) for c in r) for r in rows]
    widths = [max(len(r[k]) for r in rows) for k in range(len(rows[0]))]
    for n, r in enumerate(rows):
        cells = [c.rjust(w) if k in right else c.ljust(w)
                 for k, (c, w) in enumerate(zip(r, widths, strict=True))]
        out.print("  ".join(cells).rstrip(), markup=False)
        if n == 0:
            out.print("  ".join("-" * w for w in widths), markup=False)


def print_unmatched(first: list[str], second: list[str], first_name: str, second_name: str) -> None:
    """Each unmatched file of the second set by name, the first set's count."""
    for name in second:
        out.print(f"unmatched {second_name} file: {printable(name)}", markup=False)
    if first:
        out.print(f"{len(first)} {first_name} file(s) had no {second_name} file", markup=False)


def print_evaluation(result) -> None:
    low, high = result.window_hu
    out.print(f"metrics in window {low:g}..{high:g} HU mapped to [0, 1], data_range 1"
              + (", body mask" if result.masked else ""), markup=False)
    rows = [("file", "PSNR dB", "SSIM", "RMSE HU", "MSE")]

    def row(name, s):
        rows.append((name, f"{s['psnr']:.2f}", f"{s['ssim']:.4f}", f"{s['rmse_hu']:.1f}", f"{s['mse']:.3e}"))

    for f in result.files:
        row(f.test, f.scores)
    if result.files:
        row(f"mean of {len(result.files)} files", result.mean())
    print_rows(rows, right=(1, 2, 3, 4))
    print_unmatched(result.unmatched_reference, result.unmatched_test, "reference", "test")
    for line in result.problems:
        out.print(f"FAILED  {line}", markup=False)
    if len(result.methods) > 1:
        print_methods(result.methods)
    print_quality_methods(result.quality)
    for note in result.notes:
        out.print(f"note: {note}", markup=False)


def _num(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _qa_cells(row: dict, paired: bool) -> tuple[str, ...]:
    b = row.get("before") or {}
    if not paired:
        return (_num(b.get("noise_sd_hu"), ".1f"), _num(b.get("nps_peak_freq_mm"), ".3f"),
                _num(b.get("nps_mean_freq_mm"), ".3f"), _num(b.get("edge_width_mm"), ".2f"),
                _num(b.get("mtf50_per_mm"), ".3f"))
    a, c = row.get("after") or {}, row.get("change") or {}

    def pair(key, spec):
        return f"{_num(b.get(key), spec)} -> {_num(a.get(key), spec)}"

    reduction = c.get("noise_reduction_pct")
    return (pair("noise_sd_hu", ".1f"), _num(None if reduction is None else -reduction, "+.0f"),
            pair("nps_peak_freq_mm", ".3f"), pair("nps_mean_freq_mm", ".3f"), pair("edge_width_mm", ".2f"),
            _num(c.get("edge_width_change_pct"), "+.1f"), _num(row.get("residual_sd_hu"), ".1f"),
            _num(row.get("residual_structure"), ".2f"))


def print_qa(result) -> None:
    """Per-series table, per-slice table and the mean; then notes and problems."""
    paired = result.paired
    head = (("noise SD HU", "noise %", "NPS peak /mm", "NPS mean /mm", "edge 10-90 mm", "edge +%",
             "resid SD HU", "resid struct") if paired
            else ("noise SD HU", "NPS peak /mm", "NPS mean /mm", "edge 10-90 mm", "MTF50 /mm"))
    right = tuple(range(1, len(head) + 1))
    if paired:
        out.print("before -> after, measured where BEFORE has uniform tissue and edges; "
                  "noise % and edge +% are the changes of noise SD and edge width", markup=False)
    rows = [("series", *head)]
    for s in result.series:
        rows.append((f"{s['series']} ({s['slices']} slices, NPS: {s['nps_method']})", *_qa_cells(s, paired)))
    if len(rows) > 1:
        print_rows(rows, right=right)
        out.print("", markup=False)
    rows = [("file", *head)]
    for f in result.measured:
        d = f.to_dict()
        rows.append((f.file, *_qa_cells(d, paired)))
    if result.measured:
        rows.append((f"mean of {len(result.measured)} files", *_qa_cells(result.mean(), paired)))
        print_rows(rows, right=right)
    for note in result.notes():
        out.print(f"note: {printable(note)}", markup=False)
    print_unmatched(result.unmatched_before, result.unmatched_after, "before", "after")
    for line in result.ignored:
        out.print(f"ignored {printable(line)}", markup=False)
    for line in result.problems:
        out.print(f"FAILED  {printable(line)}", markup=False)


def print_quality_methods(measured: dict) -> None:
    """One table: no-reference measures per image kind (reference, test, noisy input, baselines)."""
    if not measured:
        return
    out.print("\nno-reference measures (where the reference has uniform tissue and edges; residual = noisy - "
              "output)", markup=False)
    rows = [("image", "noise SD HU", "NPS peak /mm", "NPS mean /mm", "edge 10-90 mm", "MTF50 /mm",
             "resid SD HU", "resid struct")]
    for name, m in measured.items():
        rows.append((name, _num(m.get("noise_sd_hu"), ".1f"), _num(m.get("nps_peak_freq_mm"), ".3f"),
                     _num(m.get("nps_mean_freq_mm"), ".3f"), _num(m.get("edge_width_mm"), ".2f"),
                     _num(m.get("mtf50_per_mm"), ".3f"), _num(m.get("residual_sd_hu"), ".1f"),
                     _num(m.get("residual_structure"), ".2f")))
    print_rows(rows, right=tuple(range(1, 8)))


def print_methods(methods: dict) -> None:
    """One table: mean metrics per method (test, noisy input, baselines)."""
    out.print("", markup=False)
    rows = [("method", "PSNR dB", "SSIM", "RMSE HU", "s/slice")]
    for name, s in methods.items():
        secs = s.get("seconds_per_slice")
        rows.append((name, f"{s['psnr']:.2f}", f"{s['ssim']:.4f}", f"{s['rmse_hu']:.1f}",
                     "-" if secs is None else f"{secs:.2f}"))
    print_rows(rows, right=(1, 2, 3, 4))
