"""The training loop every job shares: epochs of optimizer steps on batches
from a source, within a budget of epochs or of wall time.

The engine owns what does not depend on the job: the budget (a time budget
counts the whole epoch: new noise for the source, the steps and the
validation), the learning rate set before each step by the job's schedule,
the gradient norm (clipped when asked) logged per epoch, the progress bar,
the epoch's timing and speed, the log with the job's own columns, and the
order of the end-of-epoch work: the job validates (and may save a progress
frame), the row is logged, then the job checkpoints, before the next epoch
starts, so that a checkpoint never lags its log and a resume continues
exactly. The job gives it the batch source, the loss, the schedule and its
:class:`EpochHooks`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from denoise.nn import DataParallel, clip_grad_norm
from denoise.runs import write_log


class BatchSource(Protocol):
    """Batches of (input, target) for the loss; ``new_epoch`` renews its pool (new patches, new noise)."""

    batch_size: int

    def batch(self, model) -> tuple[Any, Any]: ...

    def new_epoch(self) -> None: ...


@dataclass(frozen=True)
class Budget:
    """How long to train: ``epochs`` in all, or ``seconds`` of wall time in all (resumed runs included)."""

    epochs: int | None = None
    seconds: float | None = None

    def __post_init__(self):
        if (self.epochs is None) == (self.seconds is None):
            raise ValueError("a budget is a number of epochs or of seconds, not both or neither")

    def spent(self, state: LoopState) -> bool:
        return state.epoch >= self.epochs if self.epochs is not None else state.seconds >= self.seconds


@dataclass
class LoopState:
    """Where a run is: epochs and steps done, seconds spent, the log rows so far (all restored on resume)."""

    epoch: int = 0
    step: int = 0
    seconds: float = 0.0
    rows: list[dict] = field(default_factory=list)


@dataclass
class EpochHooks:
    """What the job does around the engine's steps.

    ``validate(state)`` after the steps of epoch ``state.epoch``: the
    validation columns of its log row (it may save a progress frame too).
    ``end_epoch(state, row)`` once the row is logged: checkpoints, pictures,
    a line on the console; True stops the run (early stopping).
    """

    validate: Callable[[LoopState], dict] = lambda state: {}
    end_epoch: Callable[[LoopState, dict], bool] = lambda state, row: False


@dataclass
class Engine:
    """Trains ``model`` with ``optimizer`` on ``source`` under ``loss``.

    ``lr_at(step, seconds)`` is the rate for global step ``step`` (0-based)
    when ``seconds`` of the run have been spent; ``grad_clip`` clips the
    global gradient norm (None: measured, not clipped). ``refresh_first``
    renews the source before the first epoch of this session too, unless it
    is the run's very first epoch (``adapt`` does so on a resume; ``train``
    builds its pool for the session's first epoch). Without ``run_dir`` no
    log is written (benchmarks).
    """

    model: Any
    optimizer: Any
    source: BatchSource
    loss: Callable
    steps_per_epoch: int
    budget: Budget
    lr_at: Callable[[int, float], float]
    grad_clip: float | None = None
    run_dir: Path | None = None
    log_fields: tuple[str, ...] = ()
    label: Callable[[int], str] = lambda epoch: f"epoch {epoch}"
    refresh_first: bool = False
    show_progress: bool = True
    to_device: Callable = np.asarray

    def run(self, state: LoopState, hooks: EpochHooks | None = None) -> LoopState:
        """Train until the budget is spent or ``hooks.end_epoch`` says stop; ``state`` is updated and returned."""
        hooks = hooks or EpochHooks()
        first = True
        progress = _progress(self.show_progress, by_time=self.budget.seconds is not None)
        self._console = progress.console
        with progress, DataParallel(self.model) as parallel:
            while not self.budget.spent(state):
                state.epoch += 1
                t0 = time.perf_counter()
                if state.epoch > 1 and (not first or self.refresh_first):
                    self.source.new_epoch()
                first = False
                task = progress.add_task(self.label(state.epoch), total=self.steps_per_epoch, loss=float("nan"),
                                         speed=0.0)
                t1 = time.perf_counter()
                losses, norms = self._steps(parallel, state, t0, lambda loss, speed, task=task: progress.update(
                    task, advance=1, loss=loss, speed=speed))
                train_s = time.perf_counter() - t1
                row = {"epoch": state.epoch, "step": state.step, "train_loss": float(np.mean(losses)),
                       **hooks.validate(state), "lr": self.optimizer.lr, "grad_norm": float(np.mean(norms)),
                       "patches_per_s": len(losses) * self.source.batch_size / train_s}
                epoch_s = time.perf_counter() - t0
                state.seconds += epoch_s
                row.update(epoch_seconds=epoch_s, seconds=state.seconds)
                if self.run_dir is not None:
                    row = {k: row[k] for k in self.log_fields if k in row}
                state.rows.append(row)
                if self.run_dir is not None:
                    write_log(self.run_dir, state.rows, self.log_fields)
                progress.remove_task(task)
                if hooks.end_epoch(state, row):
                    break
        return state

    def say(self, text: str) -> None:
        """A line on the console (stderr) above the progress bar; silent when the progress is hidden."""
        self._console.print(text, highlight=False)

    def _steps(self, parallel, state: LoopState, t0: float, on_step) -> tuple[list[float], list[float]]:
        """Up to ``steps_per_epoch`` steps, fewer when a time budget runs out; losses and gradient norms."""
        losses, norms = [], []
        t1 = time.perf_counter()
        for _ in range(self.steps_per_epoch):
            x, target = self.source.batch(self.model)
            self.model.zero_grad()
            losses.append(float(parallel.forward_backward(self.to_device(x), self.to_device(target), self.loss)))
            grads = self.model.gradients()
            norms.append(clip_grad_norm(grads, self.grad_clip) if self.grad_clip
                         else float(math.sqrt(sum(float((g * g).sum()) for g in grads.values()))))
            spent = state.seconds + time.perf_counter() - t0
            self.optimizer.lr = self.lr_at(state.step, spent)
            self.optimizer.step(grads)
            state.step += 1
            on_step(float(np.mean(losses[-20:])), len(losses) * self.source.batch_size
                    / max(time.perf_counter() - t1, 1e-9))
            if self.budget.seconds is not None and state.seconds + time.perf_counter() - t0 >= self.budget.seconds:
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

