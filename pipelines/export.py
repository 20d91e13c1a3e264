"""Job: turn a training run into a shippable model file (``ct-denoise export-model``).

Writes ``<out>.npz`` (weights only, no optimizer moments) and ``<out>.json``
whose metadata says what the model is and where it came from: architecture,
normalization, the training data (series, split, licences), the noise ranges,
epochs, the model it was fine-tuned from (if any, with that model's own
record), the validation metrics of the exported checkpoint, and the commands
that reproduce it. Nothing patient-identifying is copied (the manifest holds
only salted hashes).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path

from denoise import __version__
from denoise.nn import load_model, save_model
from denoise.nn.serialize import model_paths
from denoise.runs import config_for, find_manifest

# Licences of the real CT series this project trains on (../shared/data/README.md).
KNOWN_SOURCES = {
    "ricord-chest": "TCIA MIDRC-RICORD-1A, CC BY-NC 4.0 (research use; cite the collection)",
    "rider-chest": "TCIA RIDER Pilot, TCIA data usage policy (attribution)",
    "ge-head": "dcm_qa_ct sample set (Aliza Medical Imaging), BSD-2-Clause",
    "philips-chest-kernels": "TCIA Lung-PET-CT-Dx, CC BY 4.0",
    "lidc-chest": "TCIA LIDC-IDRI, CC BY 3.0",
    "crlm-liver": "TCIA Colorectal-Liver-Metastases, CC BY 4.0",
    "kits-kidney": "TCIA C4KC-KiTS, CC BY 3.0",
    "acrin-abdomen-pelvis": "TCIA ACRIN-FLT-Breast, TCIA data usage policy (attribution)",
}


def _source_of(path: str) -> str:
    for key, licence in KNOWN_SOURCES.items():
        if f"/{key}/" in f"/{path}":
            return f"{key}: {licence}"
    return "unknown source (licence not recorded)"


def training_data(manifests: list[str]) -> list[dict]:
    """Per manifest: each series' description, slice count, split and licence."""
    out = []
    for name in manifests:
        data = json.loads(find_manifest(name).read_text())
        first_path = {}
        for e in data["files"]:
            first_path.setdefault(e["series_uid"], e["path"])
        series = [{"description": row["description"], "slices": row["n_slices"], "split": row["split"],
                   "source": _source_of(first_path.get(row["uid"], ""))} for row in data["series"]]
        out.append({"manifest": name, "split_by": data["split_by"], "series": series})
    return out


def warm_start_record(init: str) -> dict | None:
    """Provenance of the model a run started from (``training.init``): its path,
    weights hash and, when it was itself exported, its training and reproduce
    records, so a fine-tuned model carries its whole recipe."""
    if not init:
        return None
    record = {"path": init}
    json_path = model_paths(init)[1]
    if json_path.is_file():
        doc = json.loads(json_path.read_text())
        record["weights_sha256"] = doc.get("weights_sha256")
        meta = doc.get("metadata") or {}
        for key in ("noise", "training", "validation", "reproduce"):
            if key in meta:
                record[key] = meta[key]
        if meta.get("kind") == "ct-denoise checkpoint":  # a run's checkpoint: its config and what it started from
            config = meta.get("config") or {}
            record.update(epoch=meta.get("epoch"), config_name=config.get("name"), noise=config.get("noise"))
            record["warm_start"] = warm_start_record((config.get("training") or {}).get("init", ""))
    return record


def run(run_dir: str | os.PathLike, out: str | os.PathLike, *, checkpoint: str = "best",
        config_path: str | None = None, reproduce: list[str] | None = None) -> Path:
    """Export ``run_dir/checkpoints/<checkpoint>`` (best or last) to ``out`` (.npz + .json)."""
    if checkpoint not in ("best", "last"):
        raise ValueError(f"--checkpoint must be best or last, got {checkpoint!r}")
    run_dir = Path(run_dir)
    ckpt = run_dir / "checkpoints" / checkpoint
    if not model_paths(ckpt)[0].is_file():
        raise FileNotFoundError(f"{ckpt}.npz: no such checkpoint (is {run_dir} a training run folder?)")
    model, meta, _ = load_model(ckpt)
    cfg = config_for(run_dir)
    log = json.loads((run_dir / "log.json").read_text())
    config_arg = config_path or f"pipelines/configs/{cfg.name}.toml"
    metadata = {
        "name": Path(out).name,
        "kind": "ct-denoise model",
        "package_version": __version__,
        "created": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "normalization": meta["normalization"],
        "noise": {"gaussian_sigma_hu": list(cfg.noise.gaussian_sigma_hu),
                  "low_dose_fraction": cfg.noise.low_dose_fraction,
                  "low_dose_i0": list(cfg.noise.low_dose_i0), "low_dose_views": cfg.noise.low_dose_views,
                  "low_dose_filters": list(cfg.noise.low_dose_filters),
                  "textured_fraction": cfg.noise.textured_fraction,
                  "noise_level_input": bool(model.config.get("noise_level_input")),
                  "blind": True},  # blind by default; with a noise-level input, --noise-sd gives the level
        "training": {"epochs_run": log[-1]["epoch"] if log else 0, "epochs_configured": cfg.training.epochs,
                     "exported_epoch": meta["epoch"], "steps": meta["step"], "seed": cfg.training.seed,
                     "loss": cfg.training.loss, "patch_size": cfg.patches.size,
                     "batch_size": cfg.patches.batch_size, "optimizer": cfg.optimizer.kind,
                     "lr": cfg.optimizer.lr, "data": training_data(list(cfg.data.manifests)),
                     "warm_start": warm_start_record(cfg.training.init)},
        "validation": {**meta["validation"], "sigma_hu": cfg.validation.sigma_hu,
                       "low_dose_i0": cfg.validation.low_dose_i0, "window_hu": list(cfg.validation.window),
                       "data_range": 1.0},
        "reproduce": reproduce or [f"ct-denoise train --config {config_arg} --out runs/{cfg.name}",
                      f"ct-denoise export-model runs/{cfg.name} --out denoise/models/{Path(out).name}"],
        "config": cfg.to_dict(),
    }
    return save_model(out, model, metadata=metadata)
