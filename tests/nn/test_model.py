"""The whole autoencoder: gradients, config, any-size prediction, and a tiny overfit."""

import time

import numpy as np
import pytest

from denoise.nn import DEFAULT_ARCH, Adam, ConvAutoencoder, mse_loss, validate_config

from .gradcheck import numeric_grad, rel_error

GRAD_CONFIGS = [
    {"skip": "add", "residual": True},
    {"skip": "concat", "residual": False, "down": "strided_conv", "up": "transposed_conv"},
    {"skip": "none", "residual": True, "padding": "reflect", "activation": "tanh"},
    {"skip": "concat", "residual": True, "activation": "leaky_relu", "convs_per_level": 1},
    {"skip": "add", "residual": False, "activation": "sigmoid", "up": "transposed_conv"},
    {"skip": "add", "residual": True, "activation": "arctan", "down": "strided_conv", "kernel_size": 5},
    {"skip": "concat", "residual": True, "noise_level_input": True},
    {"skip": "concat", "residual": False, "noise_level_input": True},
    {"skip": "concat", "residual": True, "neighbour_slices": 1},
    {"skip": "concat", "residual": True, "noise_level_input": True, "neighbour_slices": 2},
]


def _tiny_model(config, rng, channels=(2, 3, 4)):
    model = ConvAutoencoder({**config, "channels": list(channels)}, rng, dtype=np.float64)
    for name, p in model.parameters().items():
        if name.endswith("bias"):  # avoid exact ReLU kinks from all-zero biases
            p[...] = rng.uniform(-0.3, 0.3, p.shape)
    return model


@pytest.mark.parametrize("config", GRAD_CONFIGS, ids=lambda c: "-".join(map(str, c.values())))
def test_autoencoder_gradients_wrt_input_and_every_parameter(rng, config):
    model = _tiny_model(config, rng)
    x, target = rng.standard_normal((2, 8, 8, model.in_channels)), rng.standard_normal((2, 8, 8, 1))

    def loss():
        return mse_loss(model.predict(x), target)[0]

    model.zero_grad()
    _, dy = mse_loss(model.forward(x), target)
    dx = model.backward(dy)

    errors = {}
    for name, p in [("input", x), *model.parameters().items()]:
        analytic = dx if name == "input" else model.gradients()[name]
        idx, num = numeric_grad(loss, p, eps=1e-5, max_entries=12, rng=rng)
        errors[name] = rel_error(num, analytic.reshape(-1)[idx])
    worst = max(errors, key=errors.get)
    assert errors[worst] < 1e-5, f"{worst}: {errors[worst]:.2e}"


def test_parameter_names_are_stable_and_live(rng):
    model = ConvAutoencoder({"channels": [4, 8], "skip": "concat"}, rng)
    params = model.parameters()
    assert list(params)[:2] == ["encoder.0.conv0.weight", "encoder.0.conv0.bias"]
    assert "decoder.0.conv_up.weight" in params and "decoder.head.weight" in params
    assert params.keys() == model.gradients().keys()
    assert params["decoder.0.conv0.weight"].shape == (3, 3, 8, 4)  # concat doubles the input
    params["decoder.head.bias"][...] = 7.0
    assert model.parameters()["decoder.head.bias"][0] == 7.0


def test_zero_grad_resets_accumulated_gradients(rng):
    model = ConvAutoencoder({"channels": [2, 3]}, rng)
    x = rng.random((1, 8, 8, 1), dtype=np.float32)
    model.backward(model.forward(x))
    assert any(g.any() for g in model.gradients().values())
    model.zero_grad()
    assert not any(g.any() for g in model.gradients().values())


def test_backward_accumulates_like_a_bigger_batch(rng):
    model = _tiny_model({}, rng)
    x = rng.standard_normal((2, 8, 8, 1))
    model.zero_grad()
    model.backward(model.forward(x))
    both = {k: g.copy() for k, g in model.gradients().items()}
    model.zero_grad()
    for i in range(2):
        model.backward(model.forward(x[i : i + 1]))
    for k, g in model.gradients().items():
        assert rel_error(g, both[k]) < 1e-10, k


@pytest.mark.parametrize("config", GRAD_CONFIGS[:2], ids=["add", "concat-strided"])
def test_backward_without_input_grad_gives_the_same_parameter_gradients(rng, config, monkeypatch):
    model = _tiny_model(config, rng)
    x = rng.standard_normal((2, 8, 8, 1))
    model.zero_grad()
    model.backward(model.forward(x))
    full = {k: g.copy() for k, g in model.gradients().items()}

    first = model.encoder.levels[0].layers[0][1]
    calls = []
    real = first.backward
    monkeypatch.setattr(first, "backward", lambda dy, **kw: calls.append(kw) or real(dy, **kw))
    model.zero_grad()
    assert model.backward(model.forward(x), input_grad=False) is None
    assert calls == [{"input_grad": False}]  # the first conv was told to skip its dx
    for k, g in model.gradients().items():
        assert rel_error(g, full[k]) < 1e-12, k


@pytest.mark.parametrize("config", [{}, {"down": "strided_conv", "up": "transposed_conv", "skip": "concat"}])
def test_predict_any_size_matches_forward_on_padded_input(rng, config):
    model = ConvAutoencoder({**config, "channels": [4, 6, 8]}, rng)
    x = rng.random((3, 37, 45, 1), dtype=np.float32)

    y = model.predict(x, batch_size=2)

    padded = np.pad(x, ((0, 0), (0, 3), (0, 3), (0, 0)), mode="edge")  # to multiples of 4
    assert y.shape == x.shape and y.dtype == np.float32
    np.testing.assert_allclose(y, model.forward(padded)[:, :37, :45], rtol=1e-6, atol=1e-7)


def test_forward_asks_for_divisible_sizes_and_nhwc(rng):
    model = ConvAutoencoder({"channels": [2, 3]}, rng)
    with pytest.raises(ValueError, match="divisible by 2"):
        model.forward(np.zeros((1, 7, 8, 1), np.float32))
    with pytest.raises(ValueError, match=r"\(N, H, W, 1\)"):
        model.predict(np.zeros((8, 8), np.float32))


def test_residual_model_passes_out_of_window_values_through(rng):
    model = ConvAutoencoder({"channels": [4, 8]}, rng)
    for p in model.parameters().values():
        p[...] = 0  # predicts zero noise
    x = np.full((1, 8, 8, 1), -1.1, np.float32)
    x[0, 2:4, 2:4] = 2.1  # scanner padding and metal, outside [0, 1]
    np.testing.assert_array_equal(model.predict(x), x)


def test_config_validation_fills_defaults_and_explains_errors():
    assert validate_config({}) == DEFAULT_ARCH
    assert validate_config({"skip": "concat"})["skip"] == "concat"
    for bad, match in [({"channels": []}, "channels"), ({"kernel_size": 4}, "odd"),
                       ({"down": "max_pool"}, "down"), ({"depth": 3}, "unknown"),
                       ({"residual": "yes"}, "residual")]:
        with pytest.raises(ValueError, match=match):
            validate_config(bad)
    with pytest.raises(ValueError, match="Generator"):
        ConvAutoencoder({}, rng=0)


def test_flops_counts_each_conv(rng):
    model = ConvAutoencoder({"channels": [4, 8], "convs_per_level": 1, "skip": "none"}, rng)
    k2 = 9
    expected = 2 * k2 * (
        16 * 16 * 1 * 4  # encoder level 0 at 16x16
        + 8 * 8 * 4 * 8  # encoder level 1 after pooling
        + 16 * 16 * 8 * 4  # up-conv after nearest upsampling
        + 16 * 16 * 4 * 1  # head
    )
    assert model.flops(16, 16) == expected
    assert model.flops(15, 15) == expected  # predict pads to the multiple of 2


def test_tiny_model_overfits_a_few_patches(rng):
    # Memorizing 3 fixed noisy -> clean pairs of white noise: MSE must fall ~1000x.
    clean = rng.random((3, 16, 16, 1)).astype(np.float32)
    noisy = clean + 0.05 * rng.standard_normal(clean.shape).astype(np.float32)
    model = ConvAutoencoder({"channels": [8, 16], "residual": False}, np.random.default_rng(0))
    opt = Adam(model.parameters(), lr=3e-3)
    start = time.perf_counter()
    losses = []
    for _ in range(600):
        model.zero_grad()
        loss, dy = mse_loss(model.forward(noisy), clean)
        model.backward(dy)
        opt.step(model.gradients())
        losses.append(loss)
    assert losses[-1] < 2e-4 and losses[-1] < losses[0] / 1000, (losses[0], losses[-1])
    assert time.perf_counter() - start < 20


def test_noise_level_input_model_takes_the_level_maps(rng):
    from denoise.conditioning import LEVEL_SCALE, network_input

    model = ConvAutoencoder({"channels": [2, 3], "noise_level_input": True}, rng)
    x = rng.random((2, 8, 8, 1), dtype=np.float32)
    blind = network_input(x)
    given = network_input(x, np.array([0.01, 0.02]), known=np.array([True, False]))
    assert blind.shape == given.shape == (2, 8, 8, 3)
    np.testing.assert_array_equal(blind[..., 1:], 0)
    np.testing.assert_allclose(given[0, ..., 1], 0.01 * LEVEL_SCALE)
    np.testing.assert_array_equal(given[0, ..., 2], 1)
    np.testing.assert_array_equal(given[1, ..., 1:], 0)  # not known: blind
    assert model.predict(given).shape == (2, 8, 8, 1)
    with pytest.raises(ValueError, match="'noise_level_input' must be true or false"):
        validate_config({"noise_level_input": 1})
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\).*network_input"):
        model.predict(x)
    for p in model.parameters().values():
        p[...] = 0  # predicts zero noise: the image channel comes back alone
    np.testing.assert_array_equal(model.predict(given), x)
