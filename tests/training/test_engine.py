"""denoise.training: the one loop of train, adapt and the benchmarks, its
typed config and its checkpoints (exact resume, older formats read)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pydantic import ValidationError

from denoise.nn import Adam, ConvAutoencoder, load_model, mse_loss, save_model
from denoise.training import Engine, EngineConfig, EpochHooks, LoopState, Schedule, checkpoint


class Toy:
    """Random 16x16 patches and themselves as targets; counts its renewals."""

    batch_size = 4

    def __init__(self, rng=None):
        self.rng = rng if rng is not None else np.random.default_rng(0)
        self.renewed = 0

    def batch(self, model):
        x = self.rng.random((4, 16, 16, 1), dtype=np.float32)
        return x, x

    def new_epoch(self):
        self.renewed += 1


FIELDS = ("epoch", "step", "train_loss", "val_loss", "lr", "grad_norm", "seconds")


class Decay(Schedule):
    """1e-3 / (1 + step): a rate that shows which step set it."""

    def rate(self, step, fraction):
        return 1e-3 / (1 + step)


def engine(tmp_path, *, rng=None, **budget):
    model = ConvAutoencoder({"channels": [4, 8]}, np.random.default_rng(0))
    settings = {"steps_per_epoch": 3, "schedule": Decay(lr=1e-3), "log_fields": FIELDS, **budget}
    return Engine(model, Adam(model.parameters(), lr=1e-3), Toy(rng), mse_loss, EngineConfig(**settings),
                  run_dir=tmp_path, rng=rng, show_progress=False)


def test_an_epoch_budget_runs_its_epochs_and_logs_the_callers_columns(tmp_path):
    calls = []
    e = engine(tmp_path, epochs=3)
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
    e = engine(tmp_path, epochs=10, refresh_first=True)
    state = e.run(LoopState(epoch=4, step=12, seconds=1.0),
                  EpochHooks(end_epoch=lambda s, row: s.epoch == 6))  # e.g. early stopping
    assert (state.epoch, state.step) == (6, 18) and state.seconds > 1.0
    assert e.source.renewed == 2  # refresh_first: renewed before the session's first epoch too


def test_a_time_budget_stops_within_the_epoch_and_counts_the_whole_epoch(tmp_path):
    e = engine(tmp_path, seconds=1e-9)
    state = e.run(LoopState())
    assert state.epoch == 1 and state.step == 1  # one step, then the budget was spent
    assert state.seconds >= 1e-9


def test_with_clipping_the_norm_before_clipping_is_logged_and_budgets_are_one_kind(tmp_path):
    e = engine(tmp_path, epochs=1, grad_clip=1e-3)
    state = e.run(LoopState())
    assert state.rows[0]["grad_norm"] > 1e-3  # the norm before clipping is what is logged
    for budget in ({"epochs": 1, "seconds": 1.0}, {}, {"epochs": 0}, {"seconds": float("inf")}):
        with pytest.raises(ValidationError):
            EngineConfig(steps_per_epoch=3, schedule=Schedule(lr=1e-3), **budget)


def test_the_schedule_runs_over_the_budget_in_steps_or_seconds():
    cosine = Schedule(lr=1e-3, kind="cosine", min_lr=1e-5)
    by_steps = EngineConfig(steps_per_epoch=10, epochs=2, schedule=cosine)
    by_time = EngineConfig(steps_per_epoch=10, seconds=60.0, schedule=cosine)
    assert by_steps.rate(10, 999.0) == by_time.rate(999, 30.0) == pytest.approx(0.5 * (1e-3 + 1e-5))
    assert by_steps.rate(20, 0.0) == by_time.rate(0, 60.0) == pytest.approx(1e-5)
    assert Schedule(lr=1e-3, warmup_steps=4).rate(1, 0.0) == pytest.approx(5e-4)


def _weights(model):
    return {name: np.array(w) for name, w in model.parameters().items()}


def test_checkpoints_resume_exactly_where_the_run_was_killed(tmp_path):
    def hooks():
        return EpochHooks(validate=lambda s: {"val_loss": -float(s.epoch % 2)},  # best at epochs 2 and 4
                          frame=lambda s, last: np.full((4, 4), s.epoch, np.float32) if s.epoch != 3 or last else None,
                          checkpoint=lambda s, row: {"config": {"job": "toy"}})

    whole = engine(tmp_path / "whole", epochs=4, best="val_loss", rng=np.random.default_rng(1))
    whole.run(LoopState(), hooks())

    killed = engine(tmp_path / "part", epochs=4, best="val_loss", rng=np.random.default_rng(1))

    def kill(state, row):
        if state.epoch == 2:
            raise KeyboardInterrupt
        return False

    with pytest.raises(KeyboardInterrupt):
        killed.run(LoopState(), EpochHooks(**{**hooks().__dict__, "end_epoch": kill}))
    saved = checkpoint.load(tmp_path / "part" / "checkpoints" / "last")
    assert (saved.state.epoch, saved.state.step, saved.state.best) == (2, 6, 0.0) and saved.state.seconds > 0
    assert saved.metadata["config"] == {"job": "toy"} and len(saved.state.rows) == 2
    rng = np.random.default_rng()
    rng.bit_generator.state = saved.rng_state
    optimizer = Adam(saved.model.parameters(), lr=1e-3)
    optimizer.load_state_dict(saved.optimizer_state)
    resumed = Engine(saved.model, optimizer, Toy(rng), mse_loss, killed.config, run_dir=tmp_path / "part",
                     rng=rng, show_progress=False).run(saved.state, hooks())
    assert resumed.epoch == 4 and resumed.step == 12
    after = _weights(saved.model)
    for name, w in _weights(whole.model).items():
        np.testing.assert_array_equal(after[name], w, err_msg=name)
    for run in ("whole", "part"):
        best, meta, _ = load_model(tmp_path / run / "checkpoints" / "best")
        assert meta["epoch"] == 2 and meta["best"] == 0.0  # -0 at epochs 2 and 4: the first is kept
        # frames: every epoch the job gave one, and the last (epoch 4's) whatever it said
        assert sorted(p.name for p in (tmp_path / run / "progress").iterdir()) == [
            "epoch_0001.npy", "epoch_0002.npy", "epoch_0004.npy"]
    logs = [json.loads((tmp_path / run / "log.json").read_text()) for run in ("whole", "part")]
    assert [r["train_loss"] for r in logs[0]] == [r["train_loss"] for r in logs[1]]


def test_a_run_that_ends_on_an_epoch_without_a_frame_gets_its_last_frame(tmp_path):
    e = engine(tmp_path, epochs=3)
    e.run(LoopState(), EpochHooks(frame=lambda s, last: np.zeros((2, 2)) if last or s.epoch == 1 else None))
    assert sorted(p.name for p in (tmp_path / "progress").iterdir()) == ["epoch_0001.npy", "epoch_0003.npy"]


def test_checkpoints_of_older_versions_are_read_and_others_refused(tmp_path):
    model = ConvAutoencoder({"channels": [4, 8]}, np.random.default_rng(0))
    run = tmp_path / "train_run"
    rows = [{"epoch": 1, "step": 3, "val_psnr": 20.0, "epoch_seconds": 2.0}]
    (run / "checkpoints").mkdir(parents=True)
    (run / "log.json").write_text(json.dumps(rows))  # killed before epoch 2's row reached the log
    row2 = {"epoch": 2, "step": 6, "val_psnr": 21.0, "epoch_seconds": 3.0}
    save_model(run / "checkpoints" / "last", model, metadata={
        "kind": "ct-denoise checkpoint", "epoch": 2, "step": 6, "best_val_psnr": 21.0, "log_row": row2,
        "rng_state": {"x": 1}, "config": {"name": "old"}, "normalization": {}, "validation": {}})
    old = checkpoint.load(run / "checkpoints" / "last")
    assert (old.state.epoch, old.state.step, old.state.best, old.state.seconds) == (2, 6, 21.0, 5.0)
    assert old.state.rows == [rows[0], row2] and old.metadata["config"] == {"name": "old"}
    save_model(tmp_path / "adapt_last", model, metadata={
        "kind": "ct-denoise adapt checkpoint", "epoch": 3, "step": 75, "seconds": 9.5, "rng_state": {},
        "log": [{"epoch": 3}], "config": {}, "start_metadata": {"name": "default_ct"}})
    adapt = checkpoint.load(tmp_path / "adapt_last")
    assert (adapt.state.epoch, adapt.state.seconds, adapt.metadata["start_metadata"]) == (3, 9.5,
                                                                                          {"name": "default_ct"})
    save_model(tmp_path / "model", model, metadata={"kind": "ct-denoise model"})
    with pytest.raises(checkpoint.CheckpointError, match="not a training checkpoint"):
        checkpoint.load(tmp_path / "model")
    save_model(tmp_path / "partial", model, metadata={"kind": "ct-denoise adapt checkpoint", "epoch": 1})
    with pytest.raises(checkpoint.CheckpointError, match="lacks 'step'"):
        checkpoint.load(tmp_path / "partial")
    with pytest.raises(checkpoint.CheckpointError, match="no checkpoint to resume"):
        checkpoint.load(tmp_path / "nothing" / "checkpoints" / "last")
