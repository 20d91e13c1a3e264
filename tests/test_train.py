"""Training pipeline: configs, patches, a tiny run through the CLI, resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import cli
from denoise.config import ConfigError, config_from_dict, load_config, to_toml
from denoise.nn import ConvAutoencoder, load_model, save_model
from denoise.normalize import HUWindow
from denoise.patches import PatchSource, augment, gaussian_batch, hard_edge_batch
from denoise.training import EngineConfig
from pipelines import train as train_job
from tests.factory import PATIENT_ID, PATIENT_NAME, write_config


def test_shipped_configs_load_and_round_trip(tmp_path):
    for name in ("quick_chest", "default_ct", "default_ct_finetune", "kernels_ct"):
        cfg = load_config(Path(cli.__file__).parent / "pipelines" / "configs" / f"{name}.toml")
        again = tmp_path / f"{name}.toml"
        again.write_text(to_toml(cfg.to_dict()))
        assert load_config(again) == cfg


def test_patches_skip_air_and_augment_consistently():
    hu = np.full((1, 64, 64), -1000.0, dtype=np.float32)
    hu[0, :, :32] = 40.0  # left half is body
    src = PatchSource.build(HUWindow().to_model(hu), hu > -500, size=16, min_body_fraction=0.9)
    assert len(src) and (src.corners[:, 2] + 16 <= 32 + 8).all()
    clean, _ = src.sample(200, np.random.default_rng(0))
    assert clean.shape == (200, 16, 16) and (clean > 0.4).mean() > 0.85
    a = np.random.default_rng(1).random((64, 8, 8))
    out_a, out_b = augment([a, a + 1.0], np.random.default_rng(2))
    np.testing.assert_array_equal(out_b, out_a + 1.0)  # same transform for input and target
    assert not np.array_equal(out_a, a)
    assert np.allclose(np.sort(out_a.reshape(64, -1)), np.sort(a.reshape(64, -1)))  # a permutation


def test_hard_edge_patches_are_sharp_constant_regions():
    rng = np.random.default_rng(0)
    clean = rng.uniform(0.3, 0.7, size=(400, 32, 32)).astype(np.float32)
    assert hard_edge_batch(clean, 0.0, (-0.1, -0.05), rng) is clean
    out = hard_edge_batch(clean, 0.5, (-0.1, -0.05), rng)
    assert out.dtype == np.float32 and out.shape == clean.shape
    changed = out != clean
    edited = changed.any(axis=(1, 2))
    assert 0.4 < edited.mean() < 0.6  # about `fraction` of the patches
    # Each edited patch: one constant in range where changed, the original elsewhere.
    vals = np.where(changed, out, np.nan)
    lo, hi = np.nanmin(vals[edited], axis=(1, 2)), np.nanmax(vals[edited], axis=(1, 2))
    np.testing.assert_array_equal(lo, hi)
    assert (lo >= -0.1).all() and (lo <= -0.05).all()
    share = changed[edited].mean(axis=(1, 2))
    assert 0.1 < share.mean() < 0.9 and (share < 1).mean() > 0.9  # regions, not whole patches


def test_training_batches_carry_hard_edges_through_to_the_target():
    from denoise.config import NoiseConfig, PatchConfig
    from denoise.training_data import Slice, TrainingPatches

    hu = np.random.default_rng(0).normal(40.0, 20.0, size=(2, 64, 64)).astype(np.float32)
    window = HUWindow()
    patches = TrainingPatches([Slice(h, 0.7, f"s{i}") for i, h in enumerate(hu)], window=window,
                              noise=NoiseConfig(gaussian_sigma_hu=(0.0, 0.0)),
                              patches=PatchConfig(size=16, batch_size=64, hard_edge_fraction=1.0,
                                                  hard_edge_hu=(-1300.0, -1200.0)),
                              rng=np.random.default_rng(1))
    noisy, clean = patches.batch()
    np.testing.assert_array_equal(noisy, clean)  # sigma 0: the edited patch is input and target alike
    lo, hi = window.to_model(np.array([-1300.0, -1200.0]))
    in_range = (clean >= lo) & (clean <= hi)
    assert in_range.any(axis=(1, 2, 3)).mean() > 0.9 and in_range.mean() < 0.9


def test_gaussian_sigma_uniform_or_partly_log_uniform():
    clean = np.zeros((4000, 4, 4), np.float32)
    # log_fraction 0 keeps the original draws (and so old runs' random streams) exactly.
    a = gaussian_batch(clean, (0.0, 0.06), np.random.default_rng(7))
    rng = np.random.default_rng(7)
    sigma = rng.uniform(0.0, 0.06, size=4000).astype(np.float32).reshape(-1, 1, 1)
    np.testing.assert_array_equal(a, sigma * rng.standard_normal(clean.shape, dtype=np.float32))
    est = gaussian_batch(clean, (0.0, 0.06), np.random.default_rng(8), log_fraction=1.0).std(axis=(1, 2))
    assert est.max() < 0.06 * 1.8 and est.min() > 0.0006 * 0.2
    # log-uniform over [0.0006, 0.06]: the median sigma is 0.006, the uniform one 0.03
    assert np.median(est) < 0.012 and np.median(a.std(axis=(1, 2))) > 0.02


def test_warm_start_copies_weights_and_refuses_another_architecture(tmp_path):
    donor = ConvAutoencoder({"channels": [4, 8]}, np.random.default_rng(5))
    save_model(tmp_path / "donor", donor)
    cfg = config_from_dict({"model": {"channels": [4, 8]}, "training": {"init": str(tmp_path / "donor")}})
    model = ConvAutoencoder(cfg.model, np.random.default_rng(6))
    train_job.warm_start(model, cfg)
    for name, w in donor.parameters().items():
        np.testing.assert_array_equal(model.parameters()[name], w, err_msg=name)
    other = config_from_dict({"model": {"channels": [4, 16]}, "training": {"init": str(tmp_path / "donor")}})
    with pytest.raises(ConfigError, match="architecture"):
        train_job.warm_start(ConvAutoencoder(other.model, np.random.default_rng(6)), other)


def test_trains_rate_warms_up_then_decays_over_its_steps():
    cfg = load_config.__globals__["OptimizerConfig"](lr=1e-3, min_lr=1e-5, warmup_steps=10)
    engine = EngineConfig(steps_per_epoch=11, epochs=10, schedule=train_job.schedule(cfg))
    lrs = [engine.rate(s, 0.0) for s in range(111)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert lrs[60] == pytest.approx(0.5 * (1e-3 + 1e-5)) and lrs[110] == pytest.approx(1e-5)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:], strict=False))


def _killed_after(config, run_dir, *, epoch: int) -> None:
    """Train until ``epoch`` is logged and checkpointed, then stop as a kill would."""
    def interrupt(row):
        if row["epoch"] == epoch:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_job.run(config, run_dir, show_progress=False, on_epoch=interrupt)


def test_train_cli_writes_a_complete_run_and_resume_matches(tmp_path, tiny_manifest):
    runner = CliRunner()
    config = write_config(tmp_path, tiny_manifest, epochs=3)
    full = runner.invoke(cli.app, ["train", "--config", str(config), "--out", str(tmp_path / "full"), "--quiet"])
    assert full.exit_code == 0, full.output
    assert "trained 3 epoch(s)" in full.output
    run = tmp_path / "full"
    for name in ("config.toml", "log.csv", "log.json", "progress.gif", "curves.png",
                 "checkpoints/last.npz", "checkpoints/last.json", "checkpoints/best.npz"):
        assert (run / name).is_file(), name
    rows = json.loads((run / "log.json").read_text())
    assert [r["epoch"] for r in rows] == [1, 2, 3] and all(np.isfinite(r["val_psnr"]) for r in rows)
    assert load_config(run / "config.toml").training.seed == 3
    for path in run.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert PATIENT_ID.encode() not in data and PATIENT_NAME.encode() not in data, path

    # Interrupted after epoch 2 (as by a kill), then resumed: identical weights and optimizer state.
    part = tmp_path / "part"
    _killed_after(config, part, epoch=2)
    again = runner.invoke(cli.app, ["train", "--config", str(config), "--out", str(part), "--quiet"])
    assert again.exit_code == 2 and "--resume" in again.output
    resumed = runner.invoke(cli.app, ["train", "--out", str(part), "--resume", "--quiet"])
    assert resumed.exit_code == 0, resumed.output
    assert "trained 3 epoch(s)" in resumed.output
    a, meta_a, opt_a = load_model(run / "checkpoints" / "last")
    b, meta_b, opt_b = load_model(part / "checkpoints" / "last")
    assert meta_a["step"] == meta_b["step"] == 12
    for (name, wa), wb in zip(a.parameters().items(), b.parameters().values(), strict=True):
        np.testing.assert_array_equal(wa, wb, err_msg=name)
    assert json.loads((part / "log.json").read_text())[-1]["val_psnr"] == rows[-1]["val_psnr"]
    assert opt_a["step"] == opt_b["step"]


def test_train_cli_bad_inputs(tmp_path, tiny_manifest):
    runner = CliRunner()
    nothing = runner.invoke(cli.app, ["train", "--out", str(tmp_path / "x"), "--resume"])
    assert nothing.exit_code == 2 and "no checkpoint to resume" in nothing.output
    no_config = runner.invoke(cli.app, ["train", "--out", str(tmp_path / "y")])
    assert no_config.exit_code == 2 and "--config" in no_config.output
    bad = tmp_path / "bad.toml"
    bad.write_text(f'[data]\nmanifests = ["{(tmp_path / "missing.json").as_posix()}"]\n')
    missing = runner.invoke(cli.app, ["train", "--config", str(bad), "--out", str(tmp_path / "z")])
    assert missing.exit_code == 2 and "missing.json" in missing.output
    config = write_config(tmp_path, tiny_manifest)
    neg = runner.invoke(cli.app, ["train", "--config", str(config), "--out", str(tmp_path / "w"), "--epochs", "0"])
    assert neg.exit_code == 2 and "--epochs" in neg.output  # a standard usage error (min=1)


def _slices_with_context(n=4, size=48):
    from denoise.training_data import Slice

    rng = np.random.default_rng(0)
    out = []
    for k in range(n):
        hu = rng.normal(40.0, 30.0, (size, size)).astype(np.float32)
        out.append(Slice(hu, 0.7, f"s{k}", "series-a", np.stack([hu + 100.0, hu + 200.0])))
    return out


def test_25d_batches_carry_each_patchs_neighbours_through_the_same_augmentation():
    from denoise.config import NoiseConfig, PatchConfig
    from denoise.training_data import TrainingPatches

    window = HUWindow()
    def batch(dropout):
        patches = TrainingPatches(_slices_with_context(), window=window, rng=np.random.default_rng(1),
                                  noise=NoiseConfig(gaussian_sigma_hu=(0.0, 0.0), context_dropout=dropout),
                                  patches=PatchConfig(size=16, batch_size=32, min_body_fraction=0.0),
                                  neighbours=1)
        return patches.batch()

    x, clean = batch(0.0)
    assert x.shape == (32, 16, 16, 3) and clean.shape == (32, 16, 16, 1)
    step = window.sigma_to_model(100.0)  # neighbours are +100 and +200 HU: the same patch, flipped alike
    np.testing.assert_allclose(x[..., 1] - x[..., 0], step, atol=1e-5)
    np.testing.assert_allclose(x[..., 2] - x[..., 0], 2 * step, atol=1e-5)
    x, _ = batch(1.0)  # every patch shown alone: the slice stands in for its neighbours
    np.testing.assert_array_equal(x[..., 1], x[..., 0])
    np.testing.assert_array_equal(x[..., 2], x[..., 0])


def test_gaussian_noise_of_neighbours_is_independent_at_the_same_level():
    from denoise.config import NoiseConfig, PatchConfig
    from denoise.training_data import TrainingPatches

    window = HUWindow()
    patches = TrainingPatches(_slices_with_context(), window=window, rng=np.random.default_rng(2),
                              noise=NoiseConfig(gaussian_sigma_hu=(50.0, 50.0), context_dropout=0.0),
                              patches=PatchConfig(size=16, batch_size=64, min_body_fraction=0.0), neighbours=1)
    x, clean = patches.batch()
    noise = [x[..., c] - clean[..., 0] - c * window.sigma_to_model(100.0) for c in range(3)]
    sd = [float(n.std()) / window.sigma_to_model(1.0) for n in noise]
    assert sd == pytest.approx([50.0] * 3, rel=0.05)
    assert abs(np.corrcoef(noise[0].ravel(), noise[1].ravel())[0, 1]) < 0.05


def test_scan_matched_noise_is_the_measured_models_at_the_drawn_dose(tmp_path):
    from denoise.config import NoiseConfig, PatchConfig
    from denoise.scanner_noise import measure
    from denoise.training_data import TrainingPatches

    rng = np.random.default_rng(3)
    anatomy = np.full((64, 96, 96), 40.0, np.float32)
    stack = anatomy + rng.normal(0.0, 10.0, anatomy.shape).astype(np.float32)  # 10 HU white noise
    model = measure(stack, (0.7, 0.7))
    slices = [s for s in _slices_with_context(4, 96)]
    for s, hu in zip(slices, stack[:4], strict=True):
        s.hu, s.context = hu, None
    window = HUWindow()
    dose = 0.2  # added SD = sqrt(1/0.2 - 1) x 10 HU = 20 HU
    patches = TrainingPatches(slices, window=window, rng=np.random.default_rng(4),
                              noise=NoiseConfig(scanner_fraction=1.0, scanner_dose=(dose, dose),
                                                scanner_bank_slices=4, scanner_refresh=2),
                              patches=PatchConfig(size=32, batch_size=64, min_body_fraction=0.0, augment=False),
                              noise_models={"series-a": model.to_dict()})
    x, clean = patches.batch()
    added = float((x - clean).std()) / window.sigma_to_model(1.0)
    assert added == pytest.approx(20.0, rel=0.15)


def test_a_checkpoint_carried_alone_resumes_as_the_whole_run_folder(tmp_path, tiny_manifest):
    """A run longer than a session commits only checkpoints/last.*; on another machine that file
    pair alone resumes the run (its config and log come from the checkpoint) to the same weights."""
    config = write_config(tmp_path, tiny_manifest, epochs=3)
    train_job.run(config, tmp_path / "whole", show_progress=False)
    partial = tmp_path / "partial"
    _killed_after(config, partial, epoch=2)
    carried = tmp_path / "carried"
    (carried / "checkpoints").mkdir(parents=True)
    for name in ("last.npz", "last.json"):
        (carried / "checkpoints" / name).write_bytes((partial / "checkpoints" / name).read_bytes())
    result = train_job.run(None, carried, resume=True, show_progress=False)
    assert result.epochs_done == 3 and [r["epoch"] for r in result.log] == [1, 2, 3]
    a, _, _ = load_model(tmp_path / "whole" / "checkpoints" / "last")
    b, _, _ = load_model(carried / "checkpoints" / "last")
    for (name, wa), wb in zip(a.parameters().items(), b.parameters().values(), strict=True):
        np.testing.assert_array_equal(wa, wb, err_msg=name)
