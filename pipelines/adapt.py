"""Job: adapt a model to one noisy series with no clean reference (``ct-denoise adapt``).

Self-supervised neighbour-slice training (:mod:`denoise.adaptation`),
starting from the bundled model (or ``--from``), for ``--minutes`` or
``--epochs``. The run folder (``<out>.run`` unless ``run_dir`` is given) is
self-describing and resumable, as ``train`` writes it::

    RUN/config.toml          what was asked: series, budget, seed, patch settings
    RUN/log.csv, log.json    one row per epoch (loss, neighbour validation loss, speed, time)
    RUN/checkpoints/last.*   weights + Adam moments + RNG state + time spent, every epoch
    RUN/progress/epoch_*.npy the middle slice denoised after each epoch
    RUN/progress.gif         that slice before | after, per epoch

It ends by writing the model file ``<out>.npz`` + ``<out>.json``, as
``export-model`` writes one; its metadata records the method, the series
(a digest of its UID, never patient data), the time spent and the model it
started from.

Refused with a one-line reason (UsageError, exit 2) before anything is written:
no CT series, several series without ``series``, fewer than 3 slices,
multi-frame files, unknown, uneven or duplicate slice positions, slices more
than :data:`MAX_SPACING_MM` apart (neighbours no longer share anatomy: adapt
a thinner reconstruction of the same scan instead), and a ``--from`` model
that does not load.
"""

from __future__ import annotations

import copy
import datetime as _dt
import functools
import hashlib
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pydicom

from denoise import __version__
from denoise.adaptation import NeighbourPairs, PairConfig, masked_mse_loss, neighbour_offsets, similarity_mask
from denoise.atomic import write_text
from denoise.batch import UsageError
from denoise.conditioning import blind_input
from denoise.config import to_toml
from denoise.dicom.pixels import load_ct
from denoise.dicom.reading import lenient
from denoise.dicom.scan import Series, scan
from denoise.inference import Denoiser
from denoise.nn import Adam, DataParallel, ModelFileError, load_model, save_model
from denoise.nn.serialize import model_paths
from denoise.report import ProgressFrame, progress_gif, training_curves
from pipelines.train import save_progress_frame, write_log

METHOD = "noise2sim-neighbour-slices"
MAX_SPACING_MM = 3.0
MIN_SLICES = 3
STEPS_PER_EPOCH = 25
LR = 1e-4
DEFAULT_MINUTES = 5.0


@dataclass
class AdaptResult:
    model_path: Path
    run_dir: Path
    epochs: int
    seconds: float
    log: list[dict]


def _series_label(series: Series) -> str:
    return hashlib.sha256(series.uid.encode()).hexdigest()[:12]


def select_series(root: Path, choice: str | None) -> Series:
    """The one series to adapt to, checked for neighbour training (UsageError otherwise)."""
    if not root.exists():
        raise UsageError(f"{root}: no such file or folder")
    result = scan(root)
    if not result.series:
        reasons = "; ".join(f"{s.relpath}: {s.reason}" for s in result.skipped[:3])
        raise UsageError(f"{root}: no CT series to adapt to" + (f" ({reasons})" if reasons else ""))
    if choice is not None:
        picked = [s for k, s in enumerate(result.series, 1)
                  if choice in (s.uid, str(k), _series_label(s))]
        if not picked:
            raise UsageError(f"{root}: no series {choice!r} (give its number 1..{len(result.series)} as "
                             "ct-denoise info lists them, or its SeriesInstanceUID)")
        series = picked[0]
    elif len(result.series) > 1:
        raise UsageError(f"{root}: {len(result.series)} series found; choose one with --series N "
                         "(1..{0}, in the order ct-denoise info lists them)".format(len(result.series)))
    else:
        series = result.series[0]
    check_series(series)
    return series


def check_series(series: Series) -> None:
    if any(f.n_frames > 1 for f in series.files):
        raise UsageError("multi-frame (Enhanced CT) series: adapt needs single-frame slices")
    if len(series.files) < MIN_SLICES:
        raise UsageError(f"series has {len(series.files)} slice(s): neighbour-slice adaptation needs at "
                         f"least {MIN_SLICES}")
    if any(f.position is None for f in series.files):
        raise UsageError("slice positions are unknown (no ImagePositionPatient/ImageOrientationPatient): "
                         "neighbours cannot be found")
    bad = [w for w in series.warnings if "uneven" in w or "duplicate" in w]
    if bad:
        raise UsageError(f"{'; '.join(bad)}: neighbour slices need an even spacing")
    spacing = series.slice_spacing or 0.0
    if spacing > MAX_SPACING_MM:
        raise UsageError(f"slices are {spacing:.3g} mm apart: too far for neighbour similarity (at most "
                         f"{MAX_SPACING_MM:g} mm); adapt a thinner reconstruction of the same scan")
    if len({(f.rows, f.columns) for f in series.files}) > 1:
        raise UsageError("slices of different sizes in one series")


def load_start_model(path) -> Denoiser:
    try:
        return Denoiser.load(path, ensemble=1)
    except (ModelFileError, ValueError, OSError) as exc:
        raise UsageError(f"--from: {exc}") from exc


def series_record(series: Series) -> dict:
    with lenient(series.files[0].path):
        head = pydicom.dcmread(series.files[0].path, stop_before_pixels=True, force=True)
    kernel = head.get("ConvolutionKernel", "")
    kernel = "\\".join(kernel) if isinstance(kernel, list | pydicom.multival.MultiValue) else str(kernel)
    return {"series_uid_sha256": _series_label(series), "slices": len(series.files),
            "slice_spacing_mm": series.slice_spacing, "size": list(series.sizes[0]),
            "manufacturer": str(head.get("Manufacturer", "") or ""), "kernel": kernel}


def _validation(series: Series, read) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Three fixed neighbour pairs (a quarter, half and three quarters in): slices and masks."""
    n = len(series.files)
    out = []
    for c in sorted({n // 4, n // 2, (3 * n) // 4}):
        d = c + 1 if c + 1 < n else c - 1
        a, b = read(c), read(d)
        out.append((a, b, similarity_mask(a, b)))
    return out


def _val_loss(den: Denoiser, pairs) -> float:
    losses = []
    for a, b, mask in pairs:
        x = den.window.clip(den.window.to_model(a))[None, ..., None]
        pred = np.asarray(den.model.predict(blind_input(den.model, x)))[0, ..., 0]
        target = den.window.clip(den.window.to_model(b))
        losses.append(float(np.mean(mask * (pred - target) ** 2)))
    return float(np.mean(losses))


def run(series_dir, out, *, from_model=None, minutes: float | None = None, epochs: int | None = None,
        seed: int = 0, resume: bool = False, run_dir=None, series: str | None = None,
        show_progress: bool = True, pair_config: PairConfig | None = None) -> AdaptResult:
    """Adapt to the series under ``series_dir`` and write the model ``out``; see the module docstring."""
    if minutes is not None and epochs is not None:
        raise UsageError("give --minutes or --epochs, not both")
    if epochs is not None and epochs < 1:
        raise UsageError(f"--epochs must be >= 1, got {epochs}")
    if minutes is not None and not (math.isfinite(minutes) and minutes > 0):
        raise UsageError(f"--minutes must be > 0, got {minutes}")
    asked = epochs is not None or minutes is not None
    out = model_paths(out)[0].with_suffix("")
    run_dir = Path(run_dir) if run_dir is not None else out.with_name(out.name + ".run")
    last = run_dir / "checkpoints" / "last"
    if resume and not model_paths(last)[0].is_file():
        raise UsageError(f"{run_dir}: no checkpoint to resume (checkpoints/last.npz missing)")
    if not resume and run_dir.exists() and any(run_dir.iterdir()):
        raise UsageError(f"{run_dir} already holds a run; use --resume to continue it or choose another --out")
    picked = select_series(Path(series_dir), series)
    den = load_start_model(from_model)
    start_meta = copy.deepcopy(den.metadata)
    pcfg = pair_config or PairConfig(offsets=neighbour_offsets(picked.slice_spacing))
    if not asked and not resume:
        minutes = DEFAULT_MINUTES
    config = {"adapt": {"method": METHOD, "series_dir": str(series_dir), "series": _series_label(picked),
                        "from_model": den.model_id, "minutes": minutes, "epochs": epochs, "seed": seed,
                        "lr": LR, "steps_per_epoch": STEPS_PER_EPOCH, "offsets": list(pcfg.offsets)},
              "pairs": asdict(pcfg)}
    rng = np.random.default_rng(seed)
    optimizer = Adam(den.model.parameters(), lr=LR)
    epoch, step, seconds, rows = 0, 0, 0.0, []
    if resume:
        model, meta, opt_state = load_model(last)
        den.model = model
        optimizer = Adam(model.parameters(), lr=LR)
        if opt_state is not None:
            optimizer.load_state_dict(opt_state)
        if meta["config"]["adapt"]["series"] != _series_label(picked):
            raise UsageError(f"{run_dir} adapted to another series; resume it on that one or choose another --out")
        rng.bit_generator.state = meta["rng_state"]
        epoch, step, seconds = meta["epoch"], meta["step"], meta["seconds"]
        start_meta, rows = meta["start_metadata"], meta["log"]
        if not asked:  # continue to the budget the run was started with
            minutes, epochs = meta["config"]["adapt"]["minutes"], meta["config"]["adapt"]["epochs"]
        config = meta["config"]
        config["adapt"].update(minutes=minutes, epochs=epochs)
    paths = [f.path for f in picked.files]

    def read(index: int) -> np.ndarray:
        return load_ct(paths[index]).hu[0]

    pairs = NeighbourPairs(len(paths), read, den.window, pcfg, rng)
    val_pairs = _validation(picked, read)
    shown = read(len(paths) // 2)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text(run_dir / "config.toml", to_toml({name: {k: v for k, v in table.items() if v is not None}
                                                 for name, table in config.items()}))
    budget = None if epochs is not None else minutes * 60.0
    progress = _progress(show_progress)
    with progress, DataParallel(den.model) as parallel:
        while (epochs is not None and epoch < epochs) or (budget is not None and seconds < budget):
            epoch += 1
            if epoch > 1:
                pairs.new_epoch()
            task = progress.add_task(f"adapt epoch {epoch}", total=STEPS_PER_EPOCH, loss=float("nan"), speed=0.0)
            t0 = time.perf_counter()
            left = None if budget is None else budget - seconds
            losses = train_steps(den.model, parallel, optimizer, pairs, STEPS_PER_EPOCH, left,
                                 on_step=functools.partial(_advance, progress, task))
            step += len(losses)
            train_s = time.perf_counter() - t0
            row = {"epoch": epoch, "step": step, "train_loss": float(np.mean(losses)),
                   "val_loss": _val_loss(den, val_pairs), "lr": LR,
                   "patches_per_s": len(losses) * pcfg.batch / train_s}
            save_progress_frame(run_dir, epoch, den(shown))
            seconds += time.perf_counter() - t0
            row.update(epoch_seconds=time.perf_counter() - t0, seconds=seconds)
            rows.append(row)
            write_log(run_dir, rows)
            save_model(last, den.model, optimizer=optimizer, metadata={
                "kind": "ct-denoise adapt checkpoint", "normalization": den.window.to_dict(), "epoch": epoch,
                "step": step, "seconds": seconds, "rng_state": rng.bit_generator.state, "config": config,
                "log": rows, "start_metadata": start_meta})
            progress.remove_task(task)
            progress.console.print(f"epoch {epoch}: loss {row['train_loss']:.3e}  neighbour val loss "
                                   f"{row['val_loss']:.3e}  {row['patches_per_s']:.0f} patches/s  "
                                   f"{seconds / 60:.1f} min", highlight=False)
    _render(run_dir, rows, shown)
    metadata = _model_metadata(out, start_meta, config, picked, rows, seconds, seed)
    model_path = save_model(out, den.model, metadata=metadata)
    return AdaptResult(model_path, run_dir, epoch, seconds, rows)


def _advance(progress, task, loss: float, speed: float) -> None:
    progress.update(task, advance=1, loss=loss, speed=speed)


def train_steps(model, parallel, optimizer, pairs: NeighbourPairs, steps: int, seconds_left: float | None,
                on_step=None) -> list[float]:
    """Up to ``steps`` Adam steps on ``pairs`` batches with the masked loss, stopping early when
    ``seconds_left`` (None: no limit) runs out; the losses. ``on_step(recent mean loss, patches/s)``."""
    t0, losses = time.perf_counter(), []
    for _ in range(steps):
        x, target = pairs.batch(model)
        model.zero_grad()
        losses.append(parallel.forward_backward(x, target, masked_mse_loss))
        optimizer.step(model.gradients())
        spent = time.perf_counter() - t0
        if on_step is not None:
            on_step(float(np.mean(losses[-10:])), len(losses) * pairs.cfg.batch / max(spent, 1e-9))
        if seconds_left is not None and spent >= seconds_left:
            break
    return losses


def _render(run_dir: Path, rows: list[dict], shown: np.ndarray) -> None:
    frames = []
    for row in rows:
        frame = run_dir / "progress" / f"epoch_{row['epoch']:04d}.npy"
        if frame.is_file():
            denoised = np.load(frame, allow_pickle=False).astype(np.float32)
            frames.append(ProgressFrame(shown, denoised, None, row["epoch"], row["train_loss"], None, None))
    if frames:
        progress_gif(frames, run_dir / "progress.gif", window=(-160.0, 240.0), max_side=256)
    training_curves(rows, run_dir / "curves.png")


def _model_metadata(out: Path, start: dict, config: dict, series: Series, rows: list[dict], seconds: float,
                    seed: int) -> dict:
    adapt = config["adapt"]
    return {
        "name": out.name,
        "kind": "ct-denoise model",
        "package_version": __version__,
        "created": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "normalization": start["normalization"],
        "noise": {**(start.get("noise") or {}), "blind": True},
        "adaptation": {
            "method": METHOD,
            "description": "self-supervised: slice k -> slice k+-1..2 of the same series, pixels whose 7x7 "
                           "local means differ by more than 30 HU left out of the loss (after Noise2Sim)",
            "series": series_record(series),
            "from_model": adapt["from_model"],
            "epochs": rows[-1]["epoch"] if rows else 0,
            "steps": rows[-1]["step"] if rows else 0,
            "seconds": round(seconds, 1),
            "seed": seed,
            "final_train_loss": rows[-1]["train_loss"] if rows else None,
            "final_neighbour_val_loss": rows[-1]["val_loss"] if rows else None,
        },
        "adapted_from": {key: start.get(key) for key in ("name", "training", "validation", "reproduce")
                         if key in start},
        "reproduce": [f"ct-denoise adapt SERIES_DIR --out {out.name} --epochs {rows[-1]['epoch'] if rows else 0} "
                      f"--seed {seed}" + (f" --from {adapt['from_model']}" if not adapt["from_model"].startswith(
                          "default_ct@") else "")],
    }


def _progress(show: bool):
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("loss {task.fields[loss]:.3e}"),
                    TextColumn("{task.fields[speed]:.0f} patches/s"), TimeElapsedColumn(),
                    console=Console(stderr=True, quiet=not show))


def summary(result: AdaptResult) -> str:
    last = result.log[-1] if result.log else {}
    return (f"adapted in {result.seconds / 60:.1f} min, {result.epochs} epochs, final loss "
            f"{last.get('train_loss', float('nan')):.3e} -> {result.model_path} (run folder {result.run_dir})")


