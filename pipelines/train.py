"""Job: train the NumPy autoencoder (``ct-denoise train``).

A run folder is self-describing and resumable::

    RUN/config.toml            the resolved config (every default filled in)
    RUN/log.csv, log.json      one row per epoch (loss, validation PSNR/SSIM, lr, speed)
    RUN/checkpoints/last.*     weights + optimizer moments + step, seconds, RNG state and log, every epoch
    RUN/checkpoints/best.*     the best validation PSNR so far
    RUN/progress/epoch_*.npy   the fixed validation slice denoised after each epoch
    RUN/progress.gif           noisy | denoised at epoch k | clean, per epoch
    RUN/curves.png             loss and validation PSNR/SSIM per epoch

Checkpoints and logs are written atomically, so a killed run never leaves a
half-written file, and ``resume=True`` continues from ``checkpoints/last``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from denoise import metrics
from denoise.atomic import write_text
from denoise.backend import array_module, to_numpy
from denoise.conditioning import blind_input
from denoise.config import ConfigError, RunConfig, load_config, to_toml
from denoise.manifest import load_manifest, split_files
from denoise.nn import (
    SGD,
    Adam,
    ConvAutoencoder,
    l1_loss,
    load_model,
    mse_loss,
)
from denoise.nn.model import channel_roles
from denoise.nn.model import validate_config as validate_arch
from denoise.normalize import HUWindow
from denoise.runs import PROJECT_ROOT, find_manifest
from denoise.training import Engine, EngineConfig, EpochHooks, LoopState, Schedule, checkpoint
from denoise.training_data import (
    TrainingPatches,
    ValidationSet,
    load_slices,
    make_validation_set,
    measure_noise_models,
)

LOG_FIELDS = ("epoch", "step", "train_loss", "val_loss", "val_psnr", "val_ssim", "lr", "grad_norm",
              "patches_per_s", "epoch_seconds")


class RunFolderError(ValueError):
    """The run folder cannot be used as asked (exists, or nothing to resume)."""


@dataclass
class TrainResult:
    run_dir: Path
    epochs_done: int
    best_val_psnr: float
    stopped_early: bool
    log: list[dict]


def schedule(cfg) -> Schedule:
    """The optimizer config's rate: linear warm-up to ``cfg.lr``, then cosine decay to ``cfg.min_lr`` (or constant)."""
    return Schedule(lr=cfg.lr, kind="constant" if cfg.schedule == "constant" else "cosine", min_lr=cfg.min_lr,
                    warmup_steps=cfg.warmup_steps)


def make_optimizer(model: ConvAutoencoder, cfg):
    if cfg.kind == "adam":
        return Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    return SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum)


def bundled_configs() -> dict[str, Path]:
    """The run configs shipped with the package, by name (``default_ct`` -> its TOML)."""
    from importlib.resources import files

    folder = files("pipelines") / "configs"
    return {p.name.removesuffix(".toml"): Path(str(p)) for p in folder.iterdir() if p.name.endswith(".toml")}


def config_file(config: str | os.PathLike) -> Path:
    """``--config``: a TOML file, or the name of a bundled config (``--config default_ct``)."""
    path = Path(config)
    if path.is_file():
        return path
    bundled = bundled_configs()
    if path.name == str(config) and path.stem in bundled and path.suffix in ("", ".toml"):
        return bundled[path.stem]
    raise ConfigError(f"{config}: no such config file, and no bundled config of that name "
                      f"(bundled: {', '.join(sorted(bundled))})")


def resolve_config(config_path, run_dir: Path, overrides: dict, resume: bool) -> RunConfig:
    saved = run_dir / "config.toml"
    if resume:
        if not (run_dir / "checkpoints" / "last.npz").is_file():
            raise RunFolderError(f"{run_dir}: no checkpoint to resume (checkpoints/last.npz missing)")
        if not saved.is_file():  # a checkpoint carried alone (committed mid-training): its own config
            write_text(saved, to_toml(_checkpoint_fields(run_dir).get("config") or {}))
        return load_config(saved, overrides)
    if (run_dir / "checkpoints").exists():
        raise RunFolderError(f"{run_dir} already holds a run; use --resume to continue it "
                             "or choose another --out")
    if config_path is None:
        raise ConfigError("--config is required for a new run")
    path = config_file(config_path)
    cfg = load_config(path, overrides)
    # A manifest found only beside the config is saved with its full path, so that the run folder's
    # config.toml (resume, export) finds it from anywhere; the others stay as written.
    manifests = tuple(m if _in_cwd_or_checkout(m) else str(find_manifest(m, path.parent))
                      for m in cfg.data.manifests)
    return cfg.model_copy(update={"data": cfg.data.model_copy(update={"manifests": manifests})})


def _in_cwd_or_checkout(name: str) -> bool:
    return Path(name).is_absolute() or (Path.cwd() / name).is_file() or (PROJECT_ROOT / name).is_file()


def validate_model(model: ConvAutoencoder, vset: ValidationSet, window: HUWindow,
                   metric_window: tuple[float, float]) -> tuple[dict, list[np.ndarray]]:
    """Mean PSNR/SSIM/MSE over the validation slices and the denoised slices (HU)."""
    psnrs, ssims, losses, outputs = [], [], [], []
    for noisy, clean in zip(vset.noisy, vset.clean, strict=True):
        pred = window.apply(lambda c: to_numpy(model.predict(blind_input(model, c[None, ..., None])))[0, ..., 0],
                            window.to_model(noisy))
        hu = window.to_hu(pred)
        outputs.append(hu)
        psnrs.append(metrics.psnr(clean, hu, window=metric_window))
        ssims.append(metrics.ssim(clean, hu, window=metric_window))
        losses.append(float(np.mean((pred - window.to_model(clean)) ** 2)))
    return ({"val_psnr": float(np.mean(psnrs)), "val_ssim": float(np.mean(ssims)),
             "val_loss": float(np.mean(losses))}, outputs)


GIF_EVERY = 5  # re-encoding the whole GIF grows with the epochs: do it every few epochs and at the end


def render_progress(run_dir: Path, rows: list[dict], vset: ValidationSet, gif_index: int,
                    cfg: RunConfig, *, gif: bool = True) -> None:
    """Regenerate the curves PNG (and, with ``gif``, the progress GIF) from what is on disk."""
    from denoise.report import ProgressFrame, progress_gif, training_curves

    training_curves(rows, run_dir / "curves.png")
    if not (cfg.report.gif and gif):
        return
    frames = []
    for row in rows:
        frame_path = run_dir / "progress" / f"epoch_{row['epoch']:04d}.npy"
        if frame_path.is_file():
            denoised = np.load(frame_path, allow_pickle=False).astype(np.float32)
            frames.append(ProgressFrame(vset.noisy[gif_index], denoised, vset.clean[gif_index],
                                        row["epoch"], row["train_loss"], row["val_psnr"], row["val_ssim"]))
    if frames:
        progress_gif(frames, run_dir / "progress.gif", window=cfg.report.display_window)


def run(config_path: str | os.PathLike | None, run_dir: str | os.PathLike, *, overrides: dict | None = None,
        resume: bool = False, show_progress: bool = True, on_epoch=None) -> TrainResult:
    """Train (or resume) a run; see the module docstring for what it writes."""
    run_dir = Path(run_dir)
    cfg = resolve_config(config_path, run_dir, overrides or {}, resume)
    window = HUWindow(cfg.normalization.low, cfg.normalization.high, cfg.normalization.margin)
    rng = np.random.default_rng(cfg.training.seed)

    files = []
    for manifest in cfg.data.manifests:
        files += load_manifest(find_manifest(manifest), verify=cfg.data.verify_checksums)
    train_files, val_files = split_files(files, "train"), split_files(files, "val")
    if not train_files or not val_files:
        raise ConfigError(f"the manifests {list(cfg.data.manifests)} need both train and val files")
    neighbours = validate_arch(cfg.model)["neighbour_slices"]
    train_slices = load_slices([f.path for f in train_files], limit=cfg.data.max_train_slices, rng=rng,
                               neighbours=neighbours)
    vset = make_validation_set(load_slices([f.path for f in val_files]), cfg.validation)
    gif_index = len(vset.noisy) // 2
    noise_models = (scanner_noise_models(run_dir, train_slices, [f.path for f in train_files], resume)
                    if cfg.noise.scanner_fraction > 0 else None)

    model = ConvAutoencoder(cfg.model, rng, device=cfg.training.device)
    if cfg.training.init and not resume:
        warm_start(model, cfg)
    optimizer = make_optimizer(model, cfg.optimizer)
    state = LoopState()
    if resume:
        try:
            saved = checkpoint.load(run_dir / "checkpoints" / "last", device=cfg.training.device)
        except checkpoint.CheckpointError as exc:
            raise RunFolderError(str(exc)) from None
        model, state = saved.model, saved.state
        optimizer = make_optimizer(model, cfg.optimizer)
        if saved.optimizer_state is not None:
            optimizer.load_state_dict(saved.optimizer_state)
        rng.bit_generator.state = saved.rng_state
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text(run_dir / "config.toml", to_toml(cfg.to_dict()))

    patches = TrainingPatches(train_slices, window=window, noise=cfg.noise, patches=cfg.patches, rng=rng,
                              conditioned=model.conditioned, neighbours=model.neighbours, noise_models=noise_models)
    engine = Engine(model, optimizer, _Supervised(patches, cfg.patches.batch_size),
                    mse_loss if cfg.training.loss == "l2" else l1_loss,
                    EngineConfig(steps_per_epoch=cfg.patches.per_epoch // cfg.patches.batch_size,
                                 epochs=cfg.training.epochs, schedule=schedule(cfg.optimizer),
                                 grad_clip=cfg.optimizer.grad_clip or None, log_fields=LOG_FIELDS, best="val_psnr"),
                    run_dir=run_dir, rng=rng, show_progress=show_progress,
                    to_device=array_module(cfg.training.device).asarray)
    first_epoch = state.epoch + 1
    outputs: list = []
    stale, stopped_early = epochs_since_best(state.rows), False

    def validate(state: LoopState) -> dict:
        val, outputs[:] = validate_model(model, vset, window, cfg.validation.window)
        return val

    def fields(state: LoopState, row: dict) -> dict:
        return {"normalization": window.to_dict(), "config": cfg.to_dict(), "best_val_psnr": state.best,
                "validation": {k: row[k] for k in ("val_psnr", "val_ssim", "val_loss")},
                **({"noise_models": noise_models} if noise_models else {})}

    def end_epoch(state: LoopState, row: dict) -> bool:
        nonlocal stale, stopped_early
        epoch, improved = state.epoch, state.improved
        stale = 0 if improved else stale + 1
        stopped_early = bool(cfg.training.early_stopping and stale >= cfg.training.early_stopping)
        render_progress(run_dir, state.rows, vset, gif_index, cfg, gif=epoch == first_epoch or epoch % GIF_EVERY == 0
                        or epoch == cfg.training.epochs or stopped_early)
        engine.say(f"epoch {epoch}: loss {row['train_loss']:.3e}  val PSNR {row['val_psnr']:.2f} dB  "
                   f"SSIM {row['val_ssim']:.4f}  {row['patches_per_s']:.0f} patches/s"
                   + ("  (best)" if improved else ""))
        if on_epoch is not None:
            on_epoch(row)
        return stopped_early

    state = engine.run(state, EpochHooks(validate, lambda state, last: outputs[gif_index] if outputs else None,
                                         fields, end_epoch))
    rows = state.rows
    return TrainResult(run_dir, rows[-1]["epoch"] if rows else 0, state.best, stopped_early, rows)


def _checkpoint_fields(run_dir: Path) -> dict:
    """The metadata of ``RUN/checkpoints/last`` (its JSON side), or {} when unreadable."""
    try:
        return json.loads((run_dir / "checkpoints" / "last.json").read_text()).get("metadata") or {}
    except (OSError, ValueError, AttributeError):
        return {}


def scanner_noise_models(run_dir: Path, slices, paths, resume: bool) -> dict:
    """The noise models of the training series (scan-matched noise), measured once and kept in
    ``RUN/noise_models.json`` and every checkpoint, so that a resumed run synthesizes from the very
    same models."""
    saved = run_dir / "noise_models.json"
    if resume and saved.is_file():
        return json.loads(saved.read_text())
    carried = _checkpoint_fields(run_dir).get("noise_models") if resume else None
    if carried:
        return carried
    models = measure_noise_models(slices, paths)
    if not models:
        raise ConfigError("noise.scanner_fraction > 0, but no training series has slices a noise model can be "
                          "measured on (denoise.scanner_noise needs evenly spaced neighbouring slices)")
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text(saved, json.dumps(models))
    return models


class _Supervised:
    """Noisy/clean patch batches as the engine takes them (the model is not needed to draw them)."""

    def __init__(self, patches: TrainingPatches, batch_size: int):
        self.patches, self.batch_size = patches, batch_size

    def batch(self, model):
        return self.patches.batch()

    def new_epoch(self) -> None:
        self.patches.new_epoch()


def warm_start(model: ConvAutoencoder, cfg: RunConfig) -> None:
    """Copy the weights of the saved model ``cfg.training.init`` into ``model``
    (its optimizer state is not used). The architecture must be the same, or
    differ only in gaining inputs (the noise-level maps, neighbour slices):
    then the first convolution's weights for the new input channels start at
    zero, so the warm-started model first computes exactly what the saved one
    did, whatever the level or the neighbours."""
    init, _, _ = load_model(cfg.training.init, device=cfg.training.device)
    inputs = ("noise_level_input", "neighbour_slices")
    old, new = channel_roles(init.config), channel_roles(model.config)
    same_net = {k: v for k, v in init.config.items() if k not in inputs} == {
        k: v for k, v in model.config.items() if k not in inputs}
    if not (same_net and set(old) <= set(new)):
        raise ConfigError(f"training.init {cfg.training.init}: its architecture {init.config} "
                          f"differs from [model] {model.config}")
    source = init.parameters()
    for name, p in model.parameters().items():
        if p.shape == source[name].shape:
            p[...] = source[name]
        else:  # the first convolution: (k, k, channels in, out); each old input keeps its weights
            p[...] = 0
            for k, role in enumerate(old):
                p[:, :, new.index(role), :] = source[name][:, :, k, :]


def epochs_since_best(rows: list[dict]) -> int:
    """Epochs logged after the (first) best validation PSNR."""
    if not rows:
        return 0
    best = max(range(len(rows)), key=lambda i: rows[i]["val_psnr"])
    return len(rows) - 1 - best
