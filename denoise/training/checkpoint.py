"""A run's checkpoints: ``RUN/checkpoints/last`` after every epoch and
``RUN/checkpoints/best`` at the best validation score, each a model file pair
(:func:`denoise.nn.save_model`) whose metadata holds what an exact resume
needs: the epoch, the global step, the seconds spent, the random generator's
state and the log so far, beside the job's own fields (its config, the HU
normalization). ``last`` also holds the optimizer's moments.

Runs written before the engine owned its checkpoints are read too: ``train``'s
(no seconds, the log in ``log.json`` and the checkpoint's own row) and
``adapt``'s (kind ``ct-denoise adapt checkpoint``). Anything else is refused
with a one-line reason.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from denoise.nn import ModelFileError, load_model, save_model
from denoise.nn.serialize import model_paths

KIND = "ct-denoise checkpoint"
FORMAT = 2  # 1: the train and adapt checkpoints from before the engine wrote them
OLD_ADAPT_KIND = "ct-denoise adapt checkpoint"
ENGINE_FIELDS = ("kind", "checkpoint_format", "epoch", "step", "seconds", "best", "rng_state", "log")


class CheckpointError(ValueError):
    """A checkpoint cannot be resumed from (missing, unreadable, or of another kind)."""


@dataclass
class LoopState:
    """Where a run is: epochs and steps done, seconds spent, the log rows so far and
    the best validation score (all restored on resume)."""

    epoch: int = 0
    step: int = 0
    seconds: float = 0.0
    rows: list[dict] = field(default_factory=list)
    best: float = -math.inf
    improved: bool = False  # the last epoch set a new best (not saved: it describes the session)


@dataclass
class Resumed:
    """A checkpoint as a resume needs it. ``metadata`` holds the job's own fields (``config``, ...)."""

    model: object
    optimizer_state: dict | None
    state: LoopState
    rng_state: dict
    metadata: dict


def save(path: Path, model, state: LoopState, *, optimizer=None, rng: np.random.Generator | None = None,
         fields: dict | None = None) -> None:
    """Write the checkpoint ``path`` (``.npz`` + ``.json``, atomically) at ``state``."""
    metadata = {**(fields or {}), "kind": KIND, "checkpoint_format": FORMAT, "epoch": state.epoch,
                "step": state.step, "seconds": state.seconds,
                "best": None if state.best == -math.inf else state.best,
                "rng_state": None if rng is None else rng.bit_generator.state, "log": state.rows}
    save_model(path, model, optimizer=optimizer, metadata=metadata)


def load(path: Path, *, device: str = "cpu") -> Resumed:
    """The checkpoint ``path`` to resume from, in this format or an older one."""
    if not model_paths(path)[0].is_file():
        raise CheckpointError(f"{path.parent.parent}: no checkpoint to resume ({path.parent.name}/{path.name}.npz "
                              "missing)")
    try:
        model, meta, optimizer_state = load_model(path, device=device)
    except (ModelFileError, OSError) as exc:
        raise CheckpointError(f"{model_paths(path)[0]}: not a readable checkpoint ({exc})") from exc
    kind = meta.get("kind")
    try:
        if kind == KIND and meta.get("checkpoint_format") == FORMAT:
            best = -math.inf if meta["best"] is None else meta["best"]
            state = LoopState(meta["epoch"], meta["step"], meta["seconds"], list(meta["log"]), best)
        elif kind == KIND and "checkpoint_format" not in meta:  # train, format 1
            rows = _old_train_log(path.parent.parent, meta)
            state = LoopState(meta["epoch"], meta["step"], sum(r.get("epoch_seconds", 0.0) for r in rows), rows,
                              meta["best_val_psnr"])
        elif kind == OLD_ADAPT_KIND:  # adapt, format 1
            state = LoopState(meta["epoch"], meta["step"], meta["seconds"], list(meta["log"]))
        else:
            raise CheckpointError(f"{model_paths(path)[1]}: not a training checkpoint this version resumes (kind "
                                  f"{kind!r}, format {meta.get('checkpoint_format', 1)}; this version writes "
                                  f"format {FORMAT})")
        rng_state = meta["rng_state"]
    except KeyError as exc:
        raise CheckpointError(f"{model_paths(path)[1]}: the checkpoint lacks {exc} (written by another version)") \
            from None
    fields = {k: v for k, v in meta.items() if k not in ENGINE_FIELDS}
    return Resumed(model, optimizer_state, state, rng_state, fields)


def _old_train_log(run_dir: Path, meta: dict) -> list[dict]:
    """The log rows up to the checkpoint's epoch: from ``log.json``, repaired with the
    row the checkpoint carries (a kill between the two writes left the log a row short)."""
    try:
        rows = json.loads((run_dir / "log.json").read_text())
    except (OSError, ValueError):
        rows = []
    rows = [r for r in rows if isinstance(r, dict)]
    if "log_row" not in meta:  # written before rows were stored in it
        return [r for r in rows if r.get("epoch", 0) <= meta["epoch"]]
    return [r for r in rows if r.get("epoch", 0) < meta["epoch"]] + [meta["log_row"]]
