"""denoise.training.engine: the one loop of train, adapt and the benchmarks."""

from __future__ import annotations

import json

import numpy as np
import pytest

from denoise.nn import Adam, ConvAutoencoder, mse_loss
from denoise.training import Budget, Engine, EpochHooks, LoopState


class Toy:
    """Random 16x16 patches and themselves as targets; counts its renewals."""

    batch_size = 4

    def __init__(self):
        self.rng = np.random.default_rng(0)
        self.renewed = 0

    def batch(self, model):
        x = self.rng.random((4, 16, 16, 1), dtype=np.float32)
        return x, x

    def new_epoch(self):
        self.renewed += 1


def engine(tmp_path, budget, **kw):
    model = ConvAutoencoder({"channels": [4, 8]}, np.random.default_rng(0))
    return Engine(model, Adam(model.parameters(), lr=1e-3), Toy(), mse_loss, 3, budget,
                  lambda step, seconds: 1e-3 / (1 + step), run_dir=tmp_path, show_progress=False,
                  log_fields=("epoch", "step", "train_loss", "val_loss", "lr", "grad_norm", "seconds"), **kw)


def test_an_epoch_budget_runs_its_epochs_and_logs_the_callers_columns(tmp_path):
    calls = []
    e = engine(tmp_path, Budget(epochs=3))
    state = e.run(LoopState(), EpochHooks(
        validate=lambda s: calls.append(("validate", s.epoch)) or {"val_loss": 0.5},
        end_epoch=lambda s, row: calls.append(("end", s.epoch, (tmp_path / "log.json").is_file())) and False))
    assert (state.epoch, state.step) == (3, 9) and e.source.renewed == 2  # no renewal before the first epoch
    assert calls == [("validate", 1), ("end", 1, True), ("validate", 2), ("end", 2, True), ("validate", 3),
                     ("end", 3, True)]  # the row is logged before the job checkpoints
    header = (tmp_path / "log.csv").read_text().splitlines()[0]
    assert header == "epoch,step,train_loss,val_loss,lr,grad_norm,seconds"
    rows = json.loads((tmp_path / "log.json").read_text())
    assert [r["step"] for r in rows] == [3, 6, 9] and rows[-1]["lr"] == pytest.approx(1e-3 / 9)
    assert rows[-1]["seconds"] == pytest.approx(state.seconds)


def test_a_resumed_run_continues_the_count_and_stops_on_request(tmp_path):
    e = engine(tmp_path, Budget(epochs=10), refresh_first=True)
    state = e.run(LoopState(epoch=4, step=12, seconds=1.0),
                  EpochHooks(end_epoch=lambda s, row: s.epoch == 6))  # e.g. early stopping
    assert (state.epoch, state.step) == (6, 18) and state.seconds > 1.0
    assert e.source.renewed == 2  # refresh_first: renewed before the session's first epoch too


def test_a_time_budget_stops_within_the_epoch_and_counts_the_whole_epoch(tmp_path):
    e = engine(tmp_path, Budget(seconds=1e-9))
    state = e.run(LoopState())
    assert state.epoch == 1 and state.step == 1  # one step, then the budget was spent
    assert state.seconds >= 1e-9


def test_with_clipping_the_norm_before_clipping_is_logged_and_budgets_are_one_kind(tmp_path):
    e = engine(tmp_path, Budget(epochs=1), grad_clip=1e-3)
    state = e.run(LoopState())
    assert state.rows[0]["grad_norm"] > 1e-3  # the norm before clipping is what is logged
    with pytest.raises(ValueError):
        Budget(epochs=1, seconds=1.0)
    with pytest.raises(ValueError):
        Budget()
