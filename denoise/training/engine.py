"""The training loop every job shares: epochs of optimizer steps on batches
from a source, within a budget of epochs or of wall time.

The engine owns what does not depend on the job: the budget (a time budget
counts the whole epoch: new noise for the source, the steps and the
validation), the learning rate from the config's :class:`Schedule` before
each step, the gradient norm (clipped when asked) logged per epoch, the
progress bar, the epoch's timing and speed, the log with the job's own
columns, the progress frames, and the checkpoints (``last`` every epoch,
``best`` at the best validation score) with all an exact resume needs
(:mod:`denoise.training.checkpoint`). The order of an epoch's end is fixed:
the job validates and gives its frame, the row is logged, the checkpoints
are written, then the job's ``end_epoch`` runs (pictures, a console line,
early stopping), so that a checkpoint never lags its log. The job gives it
the batch source, the loss, a typed :class:`EngineConfig` and its
:class:`EpochHooks`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, Strict, model_validator

from denoise.nn import DataParallel, clip_grad_norm
from denoise.runs import save_progress_frame, write_log
from denoise.training import checkpoint
from denoise.training.checkpoint import LoopState
from denoise.training.schedule import Schedule


class BatchSource(Protocol):
    """Batches of (input, target) for the loss; ``new_epoch`` renews its pool (new patches, new noise)."""

    batch_size: int

    def batch(self, model) -> tuple[Any, Any]: ...

    def new_epoch(self) -> None: ...


class EngineConfig(BaseModel):
    """How the engine trains: ``steps_per_epoch`` steps an epoch within a budget of
    ``epochs`` or ``seconds`` of wall time in all (resumed sessions included), the
    rate from ``schedule`` (its cosine runs over the budget), the global gradient
    norm clipped to ``grad_clip`` (None: measured, not clipped), the source
    renewed before each epoch but the run's first (``refresh_first``: also before
    a resumed session's first), the log's columns, and the validation column
    whose highest value is kept as ``checkpoints/best`` (None: no best)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    steps_per_epoch: Annotated[int, Strict(), Field(ge=1)]
    schedule: Schedule
    epochs: Annotated[int, Strict(), Field(ge=1)] | None = None
    seconds: Annotated[float, Field(gt=0)] | None = None
    grad_clip: Annotated[float, Field(gt=0)] | None = None
    refresh_first: bool = False
    log_fields: tuple[str, ...] = ()
    best: str | None = None
    name: str = "epoch"

    @model_validator(mode="after")
    def _one_budget(self):
        if (self.epochs is None) == (self.seconds is None):
            raise ValueError("a budget is a number of epochs or of seconds, not both or neither")
        return self

    def spent(self, state: LoopState) -> bool:
        return state.epoch >= self.epochs if self.epochs is not None else state.seconds >= self.seconds

    def rate(self, step: int, seconds: float) -> float:
        """The rate for global step ``step`` when ``seconds`` of the run have been spent."""
        warmup = self.schedule.warmup_steps
        fraction = ((step - warmup) / max(self.epochs * self.steps_per_epoch - warmup, 1) if self.epochs is not None
                    else seconds / self.seconds)
        return self.schedule.rate(step, fraction)

    def label(self, epoch: int) -> str:
        return f"{self.name} {epoch}" + (f"/{self.epochs}" if self.epochs is not None else "")


@dataclass
class EpochHooks:
    """What the job does around the engine's steps.

    ``validate(state)`` after the steps of epoch ``state.epoch``: the
    validation columns of its log row. ``frame(state, last)``: the image to
    keep as the epoch's progress frame, or None (``last``: the run ends here
    and its last epoch has no frame yet). ``checkpoint(state, row)``: the
    job's own fields for the epoch's checkpoints (its config, normalization).
    ``end_epoch(state, row)`` once the row is logged and the checkpoints are
    written: pictures, a line on the console; True stops the run (early
    stopping).
    """

    validate: Callable[[LoopState], dict] = lambda state: {}
    frame: Callable[[LoopState, bool], np.ndarray | None] = lambda state, last: None
    checkpoint: Callable[[LoopState, dict], dict] = lambda state, row: {}
    end_epoch: Callable[[LoopState, dict], bool] = lambda state, row: False


@dataclass
class Engine:
    """Trains ``model`` with ``optimizer`` on ``source`` under ``loss``, as ``config`` says.

    ``rng`` is the generator behind the source, saved in the checkpoints so that a
    resume draws what the uninterrupted run would have. Without ``run_dir``
    nothing is written (benchmarks).
    """

    model: Any
    optimizer: Any
    source: BatchSource
    loss: Callable
    config: EngineConfig
    run_dir: Path | None = None
    rng: np.random.Generator | None = None
    show_progress: bool = True
    to_device: Callable = np.asarray

    def run(self, state: LoopState, hooks: EpochHooks | None = None) -> LoopState:
        """Train until the budget is spent or ``hooks.end_epoch`` says stop; ``state`` is updated and returned."""
        hooks = hooks or EpochHooks()
        cfg = self.config
        first = True
        progress = _progress(self.show_progress, by_time=cfg.seconds is not None)
        self._console = progress.console
        with progress, DataParallel(self.model) as parallel:
            while not cfg.spent(state):
                state.epoch += 1
                t0 = time.perf_counter()
                if state.epoch > 1 and (not first or cfg.refresh_first):
                    self.source.new_epoch()
                first = False
                task = progress.add_task(cfg.label(state.epoch), total=cfg.steps_per_epoch, loss=float("nan"),
                                         speed=0.0)
                t1 = time.perf_counter()
                losses, norms = self._steps(parallel, state, t0, lambda loss, speed, task=task: progress.update(
                    task, advance=1, loss=loss, speed=speed))
                train_s = time.perf_counter() - t1
                row = {"epoch": state.epoch, "step": state.step, "train_loss": float(np.mean(losses)),
                       **hooks.validate(state), "lr": self.optimizer.lr, "grad_norm": float(np.mean(norms)),
                       "patches_per_s": len(losses) * self.source.batch_size / train_s}
                self._save_frame(state.epoch, hooks.frame(state, False))
                epoch_s = time.perf_counter() - t0
                state.seconds += epoch_s
                row.update(epoch_seconds=epoch_s, seconds=state.seconds)
                if self.run_dir is not None:
                    row = {k: row[k] for k in cfg.log_fields if k in row}
                state.rows.append(row)
                if self.run_dir is not None:
                    write_log(self.run_dir, state.rows, cfg.log_fields)
                    self._checkpoint(state, row, hooks)
                progress.remove_task(task)
                if hooks.end_epoch(state, row):
                    break
        if self.run_dir is not None and state.rows and not self._frame_path(state.rows[-1]["epoch"]).is_file():
            self._save_frame(state.rows[-1]["epoch"], hooks.frame(state, True))  # the frames end on the last epoch
        return state

    def say(self, text: str) -> None:
        """A line on the console (stderr) above the progress bar; silent when the progress is hidden."""
        self._console.print(text, highlight=False)

    def _checkpoint(self, state: LoopState, row: dict, hooks: EpochHooks) -> None:
        metric = self.config.best
        improved = state.improved = metric is not None and row[metric] > state.best
        if improved:
            state.best = row[metric]
        fields = hooks.checkpoint(state, row)
        folder = self.run_dir / "checkpoints"
        if improved:
            checkpoint.save(folder / "best", self.model, state, rng=self.rng, fields=fields)
        checkpoint.save(folder / "last", self.model, state, optimizer=self.optimizer, rng=self.rng, fields=fields)

    def _frame_path(self, epoch: int) -> Path:
        return self.run_dir / "progress" / f"epoch_{epoch:04d}.npy"

    def _save_frame(self, epoch: int, image) -> None:
        if image is not None and self.run_dir is not None:
            save_progress_frame(self.run_dir, epoch, image)

    def _steps(self, parallel, state: LoopState, t0: float, on_step) -> tuple[list[float], list[float]]:
        """Up to ``steps_per_epoch`` steps, fewer when a time budget runs out; losses and gradient norms."""
        cfg = self.config
        losses, norms = [], []
        t1 = time.perf_counter()
        for _ in range(cfg.steps_per_epoch):
            x, target = self.source.batch(self.model)
            self.model.zero_grad()
            losses.append(float(parallel.forward_backward(self.to_device(x), self.to_device(target), self.loss)))
            grads = self.model.gradients()
            norms.append(clip_grad_norm(grads, cfg.grad_clip) if cfg.grad_clip
                         else float(math.sqrt(sum(float((g * g).sum()) for g in grads.values()))))
            spent = state.seconds + time.perf_counter() - t0
            self.optimizer.lr = cfg.rate(state.step, spent)
            self.optimizer.step(grads)
            state.step += 1
            on_step(float(np.mean(losses[-20:])), len(losses) * self.source.batch_size
                    / max(time.perf_counter() - t1, 1e-9))
            if cfg.seconds is not None and state.seconds + time.perf_counter() - t0 >= cfg.seconds:
                break
        return losses, norms


def _progress(show: bool, *, by_time: bool):
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("loss {task.fields[loss]:.3e}"), TextColumn("{task.fields[speed]:.0f} patches/s"),
                    TimeElapsedColumn() if by_time else TimeRemainingColumn(),
                    console=Console(stderr=True, quiet=not show))

