"""ct-denoise command line: parses arguments, calls one job, prints what it
returns (:mod:`denoise.summaries`, through :mod:`denoise.terminal`).

Exit codes (all commands):
  0   success: every CT input was handled
  1   partial failure: some files failed (each one is listed with its reason)
  2   usage error: bad arguments or paths, unreadable config/model; nothing done
  3   nothing to do: no CT image found in the input (or nothing matched)
  70  internal error: an unexpected exception, a bug (one line; -v adds the traceback)
  130 interrupted (Ctrl-C)
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from typer import Argument as Arg
from typer import Option as Opt

from denoise import summaries, terminal
from denoise.backend import DeviceError
from denoise.batch import EXIT_NOTHING, EXIT_PARTIAL, UsageError
from denoise.node.admit import DEFAULT_MAX_PIXELS
from denoise.terminal import batch_progress, command, finish, present, refused, show

app = typer.Typer(
    help="Denoise CT DICOM with a NumPy convolutional autoencoder.\n\n"
    "Exit codes: 0 done, 1 some files failed, 2 usage error, 3 nothing to do, 70 internal error (a bug).",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help is plain text: ".[dask]" stays ".[dask]"
)


@app.callback()
def main(
    version: Annotated[bool, Opt("--version", callback=terminal.show_version, is_eager=True,
                                 help="Print the version and the bundled model's id, then exit.")] = False,
    verbose: Annotated[bool, Opt("-v", "--verbose", help=terminal.VERBOSE_HELP)] = False,
    quiet: Annotated[bool, Opt("-q", "--quiet", help=terminal.QUIET_HELP)] = False,
):
    """Denoise CT DICOM with a NumPy convolutional autoencoder."""
    terminal.configure_logging(verbose=verbose, quiet=quiet)


def run() -> None:
    """The console entry point (``ct-denoise``, ``python -m denoise``)."""
    terminal.guarded(app)


Device = StrEnum("Device", ["cpu", "gpu"])
Match = StrEnum("Match", ["path", "sop", "position"])
Format = StrEnum("Format", ["dicom", "nifti"])
AdaptMethod = StrEnum("AdaptMethod", ["auto", "neighbours", "recorrupted"])
JsonOut = Annotated[Path | None, Opt("--json", metavar="FILE|-", help="Also write the result as strict JSON to FILE; "
    "'-' writes it to stdout instead, and the human-readable report goes to stderr.")]
Workers = Annotated[int, Opt(min=1, help="Parallel worker processes.")]
AllowNonHU = Annotated[bool, Opt("--allow-non-hu", help="Also process CT whose values are not HU (perfusion, iodine or "
    "material maps, RescaleType other than HU), as if they were HU; ignored with their reason by default.")]
ModelFile = Annotated[Path | None, Opt(help="Model file (.npz with its .json); default: bundled.")]
Strength = Annotated[str, Opt(help="How much of the network's correction to apply: low (1/3), medium (2/3), high "
    "(all) or a number 0..1.")]
Ensemble = Annotated[int, Opt(min=1, max=8, help="Average the model over 1, 2 (a flip), 4 (flips) or 8 (flips and "
    "transposes) views; more is cleaner and proportionally slower.")]
NoiseSD = Annotated[float | None, Opt(
    "--noise-sd", help="HU of noise the input holds, to remove (as BM3D is given its sigma); 0 leaves the image as it "
    "is. Default: the network judges it from the image. Needs a model with a noise-level input.")]


@command(app, "ct-denoise info scans/", "ct-denoise info scans/ --json series.json")
def info(
    path: Annotated[Path, Arg(help="DICOM file or folder (scanned recursively), or a .nii/.nii.gz volume.")],
    json_out: JsonOut = None,
):
    """List the CT series under PATH and the files skipped.

    No patient identifiers. # is the number `adapt --series` takes (for the same PATH); the shortened UID
    is in full in --json. The scan's facts are as its headers state them ("-": not stated)."""
    from pipelines import info as job

    with refused(FileNotFoundError), refused(ValueError, code=EXIT_NOTHING):  # a NIfTI that is not CT in HU
        summary = job.run(path)
    raise finish(json_out, summaries.info(summary))


@command(app, "ct-denoise noise scans/ noisy/ --sigma 50", "ct-denoise noise scans/ low/ --dose 1e5 --clean-out clean/")
def noise(
    input: Annotated[Path, Arg(help="DICOM file or folder, or a .nii/.nii.gz volume.")],
    output: Annotated[Path, Arg(help="Output folder (mirrors input paths), or a .dcm file for one INPUT file; a "
                                ".nii/.nii.gz file for a volume.")],
    sigma: Annotated[float | None, Opt(help="Gaussian noise sigma in HU.")] = None,
    dose: Annotated[float | None, Opt(
        help="Low-dose simulation: incident photons I0 per detector bin and view (e.g. 1e5).")] = None,
    seed: Annotated[int, Opt(help="Random seed (per file streams derive from it).")] = 0,
    views: Annotated[int, Opt(min=16, help="Projection views for --dose.")] = 720,
    clean_out: Annotated[Path | None, Opt(
        help="With --dose: also write the clean reference (FBP of the noiseless sinogram) here.")] = None,
    matched: Annotated[float | None, Opt(help="Scan-matched noise: what a scan at this fraction of the dose "
                                         "adds (0.25: quarter dose), measured on each series.")] = None,
    force: Annotated[bool, Opt(help="Overwrite existing outputs.")] = False,
    workers: Workers = 1,
    allow_non_hu: AllowNonHU = False,
    json_out: JsonOut = None,
):
    """Write noisy copies of CT files.

    One derived series per input series: Gaussian (--sigma), low-dose (--dose) or scan-matched (--matched)."""
    from pipelines import noise as job

    with refused(UsageError):
        targets = job.targets(input, output, clean_out, workers=workers, allow_non_hu=allow_non_hu)
    reports = {}
    for name, target in targets.items():
        label = "reference" if name == "clean" else "noise"
        with refused(UsageError, ValueError), batch_progress(label) as (plan, outcome):
            reports[name] = job.run(input, target, sigma_hu=sigma, i0=dose, seed=seed, n_views=views,
                                    clean=name == "clean", force=force, workers=workers, on_scan=plan.scan,
                                    on_plan=plan, on_outcome=outcome, allow_non_hu=allow_non_hu, matched=matched)
        present(summaries.run_report(reports[name]), json_out, with_json=False)
    raise finish(json_out, summaries.noise(reports))


@command(app, "ct-denoise denoise scans/ denoised/", "ct-denoise denoise scan.dcm out/scan-dn.dcm --strength medium",
         "ct-denoise denoise ct.nii.gz out/ct-dn.nii.gz")
def denoise(
    input: Annotated[Path, Arg(help="DICOM file or folder (scanned recursively), or a .nii/.nii.gz volume.")],
    output: Annotated[Path, Arg(help="Output folder (mirrors input paths; not inside INPUT), or a .dcm file for one "
                                "INPUT file; a .nii/.nii.gz file for one volume.")],
    model: ModelFile = None,
    workers: Workers = 1,
    force: Annotated[bool, Opt(help="Overwrite outputs that are not this model's result.")] = False,
    tile: Annotated[int | None, Opt(min=8, help="Tiled inference with N x N tiles (bounds memory).")] = None,
    overlap: Annotated[float, Opt(min=0.0, max=0.95, help="Tile overlap fraction, with --tile.")] = 0.25,
    ensemble: Ensemble = 2,
    device: Annotated[Device, Opt(help="cpu, or gpu (needs CuPy).")] = Device.cpu,
    strength: Strength = "high",
    noise_sd: NoiseSD = None,
    scheduler: Annotated[str | None, Opt(
        help="Distribute files over a Dask cluster at this address (tcp://HOST:PORT); needs .[dask].")] = None,
    dask: Annotated[str | None, Opt(
        help="'local': start a local Dask cluster of --workers processes for this run; needs .[dask].")] = None,
    allow_non_hu: AllowNonHU = False,
    output_format: Annotated[Format | None, Opt("--format", help="dicom: derived series; nifti: one .nii.gz per "
        "series (<description>_<number>, as dcm2niix names them). Default: the input's.")] = None,
    json_out: JsonOut = None,
):
    """Denoise CT DICOM (or NIfTI) with the NumPy autoencoder.

    Writes one derived series per input series (NIfTI: a volume); --json records the model and every setting."""
    from pipelines import denoise_folder as job

    with refused(UsageError):
        scheduler = job.scheduler_address(scheduler, dask)
        fmt = job.check_nifti_options(input, output, fmt=output_format and output_format.value, workers=workers,
                                      scheduler=scheduler, allow_non_hu=allow_non_hu)
    with refused(UsageError, DeviceError), batch_progress("denoise") as (plan, outcome):
        report = job.run(input, output, model_path=model, tile=tile, overlap=overlap, device=device.value,
                         ensemble=ensemble, force=force, workers=workers, scheduler=scheduler,
                         on_plan=plan, on_outcome=outcome, strength=strength, noise_sd_hu=noise_sd,
                         allow_non_hu=allow_non_hu, on_scan=plan.scan, fmt=fmt)
    raise finish(json_out, summaries.run_report(report, "denoise"))


@command(app, "ct-denoise evaluate clean/ denoised/", "ct-denoise evaluate clean/ out/ --noisy in/ --baselines nlm,tv")
def evaluate(
    reference: Annotated[Path, Arg(help="Reference (clean) DICOM file or folder, or a .nii/.nii.gz volume.")],
    test: Annotated[Path, Arg(help="Test (noisy or denoised) DICOM file or folder, or a .nii/.nii.gz volume.")],
    match: Annotated[Match, Opt(help="Pair files by: path (relative path), sop (SourceImageSequence/SOP UID) or "
        "position.")] = Match.path,
    window: Annotated[tuple[float, float], Opt(metavar="LOW HIGH", help="Metric window, HU, mapped to [0, 1].")] = (
        -1000.0, 1000.0),
    mask: Annotated[bool, Opt("--mask", help="Score only the body (exclude air outside the patient).")] = False,
    json_out: JsonOut = None,
    noisy: Annotated[Path | None, Opt(help="The noisy inputs (file or folder) that TEST was made from; scored too, and "
        "fed to --baselines.")] = None,
    baselines: Annotated[str | None, Opt(help="Comma-separated classical denoisers run on --noisy: nlm,tv,wavelet,bm3d "
        "(bm3d needs pip install .[bm3d]; its licence allows non-commercial use only).")] = None,
    label: Annotated[str, Opt(help="Name of TEST in the comparison table.")] = "test",
):
    """Score TEST against a clean REFERENCE: PSNR, SSIM, RMSE.

    PSNR, SSIM, RMSE (HU) and MSE per matched file and their mean; with --noisy/--baselines one
    table comparing TEST with the noisy input and classical denoisers."""
    from pipelines import evaluate as job

    with refused(FileNotFoundError, ValueError):
        names = job.parse_baselines(baselines)
        with batch_progress("evaluate") as (plan, outcome):
            result = job.run(reference, test, match=match.value, window=window, mask=mask, noisy=noisy,
                             baselines=names, test_label=label, on_plan=plan,
                             on_pair=lambda score: outcome("scored"), on_step=lambda name, file: outcome(name))
    raise finish(json_out, summaries.evaluation(result, reference, test, match))


@command(app, "ct-denoise qa scans/", "ct-denoise qa scans/ denoised/ --json qa/qa.json")
def qa(
    before: Annotated[Path, Arg(help="DICOM file or folder (scanned recursively), or a .nii/.nii.gz volume.")],
    after: Annotated[Path | None, Arg(
        help="Its processed version (file or folder), paired with BEFORE as --match says.")] = None,
    match: Annotated[Match, Opt(help="Pair AFTER with BEFORE by: path (relative path), sop (SourceImageSequence/SOP "
        "UID) or position.")] = Match.path,
    json_out: JsonOut = None,
    roi: Annotated[list[str] | None, Opt("--roi", metavar="X,Y,W,H", help="A pixel ROI (x column, y row of its "
        "top-left pixel) for noise SD and NPS, not the automatic soft-tissue regions; repeat for several.")] = None,
):
    """Measure noise, its texture and sharpness, no reference.

    Noise SD (HU), NPS peak and mean frequency (cycles/mm) and 10-90 % edge width (mm) on the images alone;
    with AFTER, before vs after on the same regions and edges, and the residual BEFORE - AFTER."""
    from pipelines import qa as job

    with refused(FileNotFoundError, ValueError):
        rois = [job.parse_roi(text) for text in roi or []]
        with batch_progress("qa") as (plan, outcome):
            result = job.run(before, after, match=match.value, rois=rois, on_plan=plan, on_file=outcome)
    raise finish(json_out, summaries.qa(result, before, after, json_out))


manifest_app = typer.Typer(help="Build data-set manifests split by patient.\n\nA manifest lists files, SHA-256, "
                           "series and the patient split.", no_args_is_help=True)
app.add_typer(manifest_app, name="manifest")


@command(manifest_app, "ct-denoise manifest build data/ --out mine.json --test-from data/held-out", name="build")
def manifest_build(
    folders: Annotated[list[Path], Arg(metavar="FOLDER", help="One or more folders of CT DICOM.")],
    out_path: Annotated[Path, Opt("--out", help="Manifest JSON to write, e.g. data_manifests/NAME.json")],
    val: Annotated[float, Opt(min=0.0, max=1.0, help="Fraction of patients for validation.")] = 0.15,
    test: Annotated[float, Opt(min=0.0, max=1.0, help="Fraction of patients for testing.")] = 0.15,
    seed: Annotated[int, Opt(help="Seed of the patient shuffle.")] = 0,
    test_from: Annotated[list[Path] | None, Opt(
        metavar="FOLDER", help="Hold out for testing every patient with a file under FOLDER (repeat it).")] = None,
    val_from: Annotated[list[Path] | None, Opt(
        metavar="FOLDER", help="Put every patient with a file under FOLDER into validation (repeat it).")] = None,
    json_out: JsonOut = None,
):
    """Write a manifest of CT folders, split by patient.

    Split into train/val/test by patient (never by slice): --test-from / --val-from choose patients by
    folder; --val / --test split the others at random."""
    from denoise.manifest import ManifestError
    from pipelines import manifest as job

    with refused(ValueError), refused(ManifestError, code=EXIT_NOTHING):
        manifest = job.run(folders, out_path, val=val, test=test, seed=seed, val_from=val_from, test_from=test_from)
    raise finish(json_out, summaries.manifest(manifest, out_path))


@command(app, "ct-denoise train --config quick_chest --out runs/quick", "ct-denoise train --out runs/quick --resume")
def train(
    config: Annotated[Path | None, Opt(help="Run config: a TOML file, or the name of a bundled one (default_ct, "
        "kernels_ct, quick_chest, default_ct_finetune).")] = None,
    out_dir: Annotated[Path, Opt("--out", help="Run folder (checkpoints, logs, progress GIF).")] = Path("runs/run"),
    epochs: Annotated[int | None, Opt(min=1, help="Override training.epochs.")] = None,
    lr: Annotated[float | None, Opt(help="Override optimizer.lr.")] = None,
    patch_size: Annotated[int | None, Opt(min=8, max=1024, help="Override patches.size.")] = None,
    batch_size: Annotated[int | None, Opt(min=1, help="Override patches.batch_size.")] = None,
    seed: Annotated[int | None, Opt(help="Override training.seed.")] = None,
    device: Annotated[Device | None, Opt(help="cpu, or gpu (needs CuPy).")] = None,
    resume: Annotated[bool, Opt("--resume", help="Continue the run in --out from its last checkpoint.")] = False,
    json_out: JsonOut = None,
):
    """Train the autoencoder on a manifest's training split.

    Validated on the manifest's val split; the run folder holds checkpoints, logs and a progress GIF."""
    from denoise.config import ConfigError, train_overrides
    from denoise.manifest import ManifestError
    from denoise.nn import ModelFileError
    from pipelines import train as job

    overrides = train_overrides(epochs=epochs, lr=lr, patch_size=patch_size, batch_size=batch_size, seed=seed,
                                device=device)
    with refused(ConfigError, ManifestError, ModelFileError, job.RunFolderError, DeviceError):
        result = job.run(config, out_dir, overrides=overrides, resume=resume, show_progress=terminal.progress_shown())
    raise finish(json_out, summaries.train(result))


@command(app, "ct-denoise adapt series/ --out models/mine", "ct-denoise adapt study/ --series 2 --out models/mine")
def adapt(
    series_dir: Annotated[Path, Arg(help="Folder of one (or, with --series, more) noisy CT series.")],
    out_path: Annotated[Path, Opt("--out", help="Model path stem to write (.npz + .json).")],
    from_model: Annotated[Path | None, Opt("--from", help="Model to start from (default: the bundled model).")] = None,
    minutes: Annotated[float | None, Opt(help="Time budget (default 5 minutes).")] = None,
    epochs: Annotated[int | None, Opt(min=1, help="Train this many epochs instead of a time budget.")] = None,
    seed: Annotated[int, Opt(help="Random seed.")] = 0,
    series: Annotated[str | None, Opt(
        help="Which series, when the folder holds several: its # in `ct-denoise info SERIES_DIR` or its UID.")] = None,
    run_dir: Annotated[Path | None, Opt("--run", help="Run folder (default: <out>.run beside the model).")] = None,
    resume: Annotated[bool, Opt("--resume", help="Continue the run from its last checkpoint.")] = False,
    noise_sd: Annotated[float | None, Opt("--noise-sd", help="The noise to remove, HU: what your low-dose protocol "
        "adds over the standard one, sqrt(SD_low^2 - SD_standard^2) in soft tissue. Switches to the recorrupted method "
        "(keeps the texture beneath that noise; thick slices allowed).")] = None,
    dose: Annotated[float | None, Opt("--dose", help="The noise to remove as low-dose noise at I0 photons per bin and "
        "view (as `noise --dose` simulates it); recorrupted method.")] = None,
    method: Annotated[AdaptMethod, Opt(help="neighbours (slices k+-d), recorrupted (with --noise-sd/--dose, or the "
        "noise measured on the series) or auto: neighbours where slices allow, else recorrupted.")] = "auto",
):
    """Adapt a model to your scanner from one noisy series.

    No clean images needed: self-supervised on neighbour slices (as in Noise2Sim) where the slices
    allow, else on recorrupted pairs of the noise measured on the series; with --noise-sd or --dose,
    on recorrupted pairs of the noise you name. Then use it with `denoise --model OUT`."""
    from denoise.dicom.pixels import PixelDataError
    from pipelines import adapt as job

    with refused(UsageError, PixelDataError, DeviceError), refused(job.AdaptCheckFailed, code=EXIT_PARTIAL):
        result = job.run(series_dir, out_path, from_model=from_model, minutes=minutes, epochs=epochs, seed=seed,
                         resume=resume, run_dir=run_dir, series=series, show_progress=terminal.progress_shown(),
                         noise_sd=noise_sd, dose_i0=dose, method=str(method))
    show([job.summary(result)])


@command(app, "ct-denoise serve --out node/ --forward PACS@10.0.0.5:104", "ct-denoise serve --status node/")
def serve(
    out_dir: Annotated[Path | None, Opt(
        "--out", help="Node folder: spool, queue, derived series and node.log.")] = None,
    aet: Annotated[str, Opt(help="This node's AE title.")] = "CTDENOISE",
    port: Annotated[int, Opt(min=0, max=65535, help="TCP port to listen on (0: any free one).")] = 11112,
    bind: Annotated[str, Opt(
        help="Address to listen on; 127.0.0.1 by default (opening to the network is your choice).")] = "127.0.0.1",
    forward: Annotated[list[str] | None, Opt(
        metavar="AET@HOST:PORT", help="Send each derived series to this node; repeat for several nodes.")] = None,
    allow: Annotated[list[str] | None, Opt(
        metavar="AET", help="Accept associations only from this calling AE title; repeat for several.")] = None,
    series_timeout: Annotated[float, Opt(
        help="A series is complete when nothing new arrived for this many seconds.")] = 10.0,
    model: ModelFile = None,
    strength: Strength = "high",
    ensemble: Ensemble = 2,
    noise_sd: NoiseSD = None,
    max_pixels: Annotated[int, Opt(min=1, help="Refuse (0xC000) an instance of more pixels than this, rows x columns x "
        "frames; it bounds the memory one instance takes.")] = DEFAULT_MAX_PIXELS,
    keep_days: Annotated[float, Opt(min=0, help="Delete finished and quarantined jobs (originals and derived series) "
        "after this many days; inf keeps them.")] = 7.0,
    connect_timeout: Annotated[float, Opt(
        min=0.001, help="Seconds to wait for a --forward destination to accept the TCP connection.")] = 10.0,
    max_associations: Annotated[int, Opt(min=1, help="Associations at once; more are rejected.")] = 16,
    max_per_peer: Annotated[int, Opt(
        min=1, help="Connections at once from one peer address; more are closed at once.")] = 4,
    idle_timeout: Annotated[float, Opt(
        min=0.001, help="Seconds for a new connection to send its whole association request.")] = 30.0,
    pdu_timeout: Annotated[float, Opt(
        min=0.001, help="Seconds for any PDU to arrive whole once it has begun; a slower peer is dropped.")] = 60.0,
    max_pdu: Annotated[int, Opt(min=1024, help="Largest P-DATA PDU the node announces and accepts, in bytes; a peer "
        "that sends a larger one is dropped.")] = 16382,
    drain: Annotated[float, Opt(
        min=0.001, help="Seconds open associations get to finish after SIGTERM/SIGINT.")] = 30.0,
    status_of: Annotated[Path | None, Opt("--status", metavar="DIR", help="Show node folder DIR's queue.")] = None,
    json_out: JsonOut = None,
):
    """Run a DICOM node that denoises the series it receives.

    Receives CT (C-STORE, C-ECHO), denoises each complete series, forwards the derived series."""
    from pipelines import serve as job

    if status_of is not None:
        with refused(UsageError):
            state = job.status(status_of)
        raise finish(json_out, summaries.node_status(state))
    with refused(UsageError):  # no --out, a bad option, a port in use, a folder in use, a model that does not load
        code = job.run(job.ServeOptions(
            out=out_dir, aet=aet, port=port, bind=bind, forward=forward, allow=allow, series_timeout_s=series_timeout,
            model_path=model, strength=strength, ensemble=ensemble, noise_sd_hu=noise_sd, max_pixels=max_pixels,
            keep_days=keep_days, connect_timeout_s=connect_timeout, max_associations=max_associations,
            max_per_peer=max_per_peer, idle_timeout_s=idle_timeout, pdu_timeout_s=pdu_timeout, max_pdu=max_pdu,
            drain_s=drain))
    raise typer.Exit(code)


@command(app, "ct-denoise export-model runs/quick --out models/quick", name="export-model")
def export_model(
    run_dir: Annotated[Path, Arg(help="Training run folder (from `train --out`).")],
    out_path: Annotated[Path, Opt("--out", help="Model path stem, e.g. denoise/models/default_ct")],
    checkpoint: Annotated[str, Opt(help="Which checkpoint: best or last.")] = "best",
    reproduce: Annotated[list[str] | None, Opt(metavar="COMMAND", help="Commands that reproduce the run, recorded "
        "in the metadata (repeat the option; default: the train and export commands for the run's config).")] = None,
):
    """Export a run's checkpoint as a model file.

    Writes the .npz weights and the .json metadata with their provenance."""
    from denoise.nn import ModelFileError
    from pipelines import export as job

    with refused(FileNotFoundError, ModelFileError, ValueError):
        path = job.run(run_dir, out_path, checkpoint=checkpoint, reproduce=reproduce)
    raise finish(None, summaries.written("model", path, " (+ .json)"))


@command(app, "ct-denoise report runs/eval --out runs/eval/report", "ct-denoise report qa/ --out qa/report")
def report(
    source: Annotated[Path, Arg(
        help="Training run folder, evaluation folder (evaluation.json) and/or qa result (qa.json, or the file).")],
    out_dir: Annotated[Path, Opt("--out", help="Folder for index.html and its images.")] = Path("report"),
    window: Annotated[tuple[float, float] | None, Opt(
        metavar="LOW HIGH", help="Display window in HU for the pictures (default -160 240, soft tissue).")] = None,
    force: Annotated[bool, Opt(help="Write the report into an --out folder that is not empty.")] = False,
):
    """Assemble a self-contained HTML report.

    Metric tables, noise SD / NPS / edge-width tables and plots, progress GIF, before/after panels with
    residuals, scroll GIF."""
    from pipelines import report as job

    with refused(FileNotFoundError, ValueError):
        html = job.run(source, out_dir, window=window, force=force)
    raise finish(None, summaries.written("report", html))


@command(app, "ct-denoise demo", "ct-denoise demo --out demo_out")
def demo(
    out_dir: Annotated[Path, Opt("--out", help="Folder for the demo's inputs and outputs.")] = Path("demo_out"),
    model: ModelFile = None,
):
    """Quick start on pydicom's sample CT, to an HTML report.

    noise -> denoise (bundled model) -> evaluate vs baselines -> HTML report; the CT ships with pydicom-data."""
    from pipelines import demo as job

    with refused(UsageError, ValueError):
        result = job.run(out_dir, model_path=model, on_step=terminal.show_step)
    raise finish(None, summaries.demo(result))
