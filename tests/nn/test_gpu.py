"""The same layers, Adam and checkpoints on CuPy. Skipped without CuPy and a
CUDA GPU; on CPU-only machines the clear --device gpu error is tested instead."""

from __future__ import annotations

import numpy as np
import pytest

from denoise.backend import DeviceError, array_module
from denoise.nn import Adam, ConvAutoencoder, load_model, mse_loss, save_model


def _gpu_or_none():
    try:
        return array_module("gpu")
    except DeviceError:
        return None


cp = _gpu_or_none()
needs_gpu = pytest.mark.skipif(cp is None, reason="CuPy or a CUDA GPU is not available here")


@pytest.mark.skipif(cp is not None, reason="a GPU is available: the error path does not apply")
def test_device_gpu_without_cupy_is_a_clear_usage_error(tmp_path, series_dir, tiny_model_path):
    from typer.testing import CliRunner

    import cli

    with pytest.raises(DeviceError, match=r"pip install \.\[gpu\]"):
        array_module("gpu")
    result = CliRunner().invoke(cli.app, ["denoise", str(series_dir), str(tmp_path / "o"), "--model",
                                          str(tiny_model_path), "--device", "gpu"])
    assert result.exit_code == 2 and "CuPy" in result.output


@needs_gpu
def test_gpu_matches_cpu_forward_backward_and_adam(tmp_path):
    config = {"channels": [4, 8], "skip": "concat", "residual": True}
    cpu = ConvAutoencoder(config, np.random.default_rng(0))
    gpu = ConvAutoencoder(config, np.random.default_rng(0), device="gpu")
    x = np.random.default_rng(1).random((2, 16, 16, 1), dtype=np.float32)
    t = np.clip(x + 0.05, 0, 1).astype(np.float32)
    for model, xs, ts in ((cpu, x, t), (gpu, cp.asarray(x), cp.asarray(t))):
        opt = Adam(model.parameters(), lr=1e-3)
        for _ in range(3):
            model.zero_grad()
            _, dy = mse_loss(model.forward(xs), ts)
            model.backward(dy)
            opt.step(model.gradients())
    for (name, a), b in zip(cpu.parameters().items(), gpu.parameters().values(), strict=True):
        np.testing.assert_allclose(a, cp.asnumpy(b), rtol=1e-4, atol=1e-5, err_msg=name)
    save_model(tmp_path / "m", gpu, optimizer=opt)  # checkpoints stay NumPy .npz
    back, _, _ = load_model(tmp_path / "m", device="cpu")
    np.testing.assert_allclose(back.predict(x), cpu.predict(x), rtol=1e-4, atol=1e-5)
