"""A training run folder, as ``train`` and ``adapt`` write it and ``export``
and ``report`` read it: the resolved config, the manifests it names, the
per-epoch log (each job's own columns) and the progress frames.

    RUN/config.toml            the resolved config (``train``)
    RUN/log.csv, log.json      one row per epoch, the columns the job names
    RUN/progress/epoch_N.npy   the validation slice denoised after epoch N (float16)
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import numpy as np

from denoise.atomic import atomic_path, write_json, write_text
from denoise.config import ConfigError, RunConfig, config_from_dict

PROJECT_ROOT = Path(__file__).resolve().parents[1]  # a checkout, where the bundled configs' manifests live


def find_manifest(name: str, config_dir: Path | None = None) -> Path:
    """A manifest path as written in a config: absolute, or relative to the
    working folder, to the config's own folder, or to the project checkout
    (the bundled configs name ``data_manifests/X.json``), first that exists."""
    path = Path(name)
    if path.is_absolute():
        return path
    bases = [Path.cwd(), *([config_dir] if config_dir else []), PROJECT_ROOT]
    for base in bases:
        if (base / path).is_file():
            return (base / path).resolve()
    raise ConfigError(f"manifest {name} not found (looked in {', '.join(str(b) for b in bases)}); "
                      "give its path in data.manifests")


def write_log(run_dir: Path, rows: list[dict], fields: tuple[str, ...]) -> None:
    """``log.csv`` with exactly ``fields`` as columns (a value a row lacks is
    left empty), and ``log.json`` with the rows as they are."""
    unknown = sorted({k for row in rows for k in row} - set(fields))
    if unknown:  # a column would be dropped from the CSV: a bug in the caller
        raise ValueError(f"log rows hold columns the log does not name: {', '.join(unknown)}")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    write_text(run_dir / "log.csv", buf.getvalue())
    write_json(run_dir / "log.json", rows)


def save_progress_frame(run_dir: Path, epoch: int, image: np.ndarray) -> None:
    with atomic_path(run_dir / "progress" / f"epoch_{epoch:04d}.npy") as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, image.astype(np.float16), allow_pickle=False)


def config_for(run_dir: str | os.PathLike) -> RunConfig:
    """The resolved config saved in a run folder."""
    import tomllib

    return config_from_dict(tomllib.loads((Path(run_dir) / "config.toml").read_text()))
