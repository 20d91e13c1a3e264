"""Every layer, activation and loss against central finite differences (float64)."""

import numpy as np
import pytest

from denoise.nn import (
    ACTIVATIONS,
    Add,
    Concat,
    Conv2d,
    ConvTranspose2d,
    MeanPool2d,
    Upsample2d,
    UpsampleConv2d,
    conv2d_naive,
    l1_loss,
    mse_loss,
)

from .gradcheck import check_layer_grads, numeric_grad, rel_error


def _with_random_bias(layer, rng):
    """Zero-initialized biases are legal but make a weak test; randomize them."""
    if "bias" in layer.params:
        layer.params["bias"][...] = rng.standard_normal(layer.params["bias"].shape)
    return layer


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("mode", ["zero", "reflect"])
def test_conv2d_gradients(rng, stride, mode):
    layer = Conv2d(3, 4, 3, stride=stride, padding_mode=mode, rng=rng, dtype=np.float64)
    _with_random_bias(layer, rng)
    check_layer_grads(layer, (rng.standard_normal((2, 7, 6, 3)),), rng=rng)


def test_conv2d_gradients_5x5_without_bias(rng):
    layer = Conv2d(2, 3, 5, padding_mode="reflect", bias=False, rng=rng, dtype=np.float64)
    assert "bias" not in layer.params
    check_layer_grads(layer, (rng.standard_normal((1, 6, 7, 2)),), rng=rng)


def test_conv2d_gradients_more_inputs_than_outputs(rng):
    # This shape takes the im2col-of-dy branch of the weight gradient.
    layer = _with_random_bias(Conv2d(5, 1, 3, rng=rng, dtype=np.float64), rng)
    check_layer_grads(layer, (rng.standard_normal((2, 6, 5, 5)),), rng=rng)


def test_conv2d_forward_matches_reference(rng):
    layer = Conv2d(3, 4, 3, stride=2, padding_mode="reflect", rng=rng, dtype=np.float64)
    _with_random_bias(layer, rng)
    x = rng.standard_normal((2, 9, 8, 3))
    expected = conv2d_naive(x, layer.params["weight"], layer.params["bias"], stride=2, padding=1,
                            padding_mode="reflect")
    assert rel_error(layer.forward(x), expected) < 1e-12
    assert layer.output_hw(9, 8) == expected.shape[1:3]


def test_conv2d_he_initialization(rng):
    layer = Conv2d(16, 32, 3, rng=rng)
    assert layer.params["weight"].dtype == np.float32
    assert np.std(layer.params["weight"]) == pytest.approx(np.sqrt(2 / (9 * 16)), rel=0.05)
    assert not layer.params["bias"].any()


@pytest.mark.parametrize("bad", [{"in_channels": 0}, {"kernel_size": 2.5}, {"padding_mode": "wrap"}])
def test_conv2d_rejects_bad_settings(rng, bad):
    kwargs = {"in_channels": 2, "out_channels": 3, "kernel_size": 3, **bad}
    with pytest.raises(ValueError):
        Conv2d(rng=rng, **kwargs)


@pytest.mark.parametrize("k,stride,pad,out_pad", [(2, 2, 0, 0), (3, 2, 1, 1), (3, 1, 1, 0)])
def test_conv_transpose_gradients_and_size(rng, k, stride, pad, out_pad):
    layer = _with_random_bias(ConvTranspose2d(3, 2, k, stride=stride, padding=pad, output_padding=out_pad,
                                              rng=rng, dtype=np.float64), rng)
    x = rng.standard_normal((2, 4, 5, 3))
    assert layer.forward(x).shape[1:3] == layer.output_hw(4, 5) == (
        (4 - 1) * stride - 2 * pad + k + out_pad, (5 - 1) * stride - 2 * pad + k + out_pad)
    check_layer_grads(layer, (x,), rng=rng)


@pytest.mark.parametrize("k", [1, 3, 5])
def test_fused_upsample_conv_equals_upsample_then_conv(rng, k):
    fused = _with_random_bias(UpsampleConv2d(3, 4, k, rng=rng, dtype=np.float64), rng)
    conv = Conv2d(3, 4, k, rng=rng, dtype=np.float64)
    for name in ("weight", "bias"):
        conv.params[name][...] = fused.params[name]
    x = rng.standard_normal((2, 5, 6, 3))

    composed = conv.forward(Upsample2d(2).forward(x))

    assert rel_error(fused.forward(x), composed) < 1e-12
    assert fused.output_hw(5, 6) == composed.shape[1:3]
    assert fused.flops(5, 6) == conv.flops(10, 12)
    check_layer_grads(fused, (x,), rng=rng)


def test_mean_pool_and_upsample_gradients_and_values(rng):
    x = rng.standard_normal((2, 6, 4, 3))
    pooled = MeanPool2d(2).forward(x)
    np.testing.assert_allclose(pooled[0, 1, 0, 2], x[0, 2:4, 0:2, 2].mean())
    up = Upsample2d(2).forward(x)
    np.testing.assert_array_equal(up[:, ::2, ::2], x)
    np.testing.assert_array_equal(up[:, 1::2, 1::2], x)
    check_layer_grads(MeanPool2d(2), (x,), rng=rng)
    check_layer_grads(Upsample2d(2), (x,), rng=rng)
    check_layer_grads(MeanPool2d(3), (rng.standard_normal((1, 6, 9, 2)),), rng=rng)


def test_mean_pool_rejects_indivisible_size():
    with pytest.raises(ValueError, match="divisible"):
        MeanPool2d(2).forward(np.zeros((1, 5, 4, 1)))


@pytest.mark.parametrize("merge", [Add, Concat])
def test_skip_merge_gradients(rng, merge):
    a, b = rng.standard_normal((2, 3, 4, 2)), rng.standard_normal((2, 3, 4, 2))
    check_layer_grads(merge(), (a, b), rng=rng)


def test_concat_stacks_channels(rng):
    a, b = rng.standard_normal((1, 2, 2, 3)), rng.standard_normal((1, 2, 2, 5))
    y = Concat().forward(a, b)
    assert y.shape == (1, 2, 2, 8)
    np.testing.assert_array_equal(y[..., 3:], b)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_gradients(rng, name):
    # Keep |x| > 0.05 so no finite difference straddles the ReLU kink.
    x = rng.standard_normal((2, 3, 4, 2))
    x[np.abs(x) < 0.05] = 0.5
    check_layer_grads(ACTIVATIONS[name](), (x,), rng=rng)


def test_activation_values():
    x = np.array([-2.0, 0.5])
    np.testing.assert_allclose(ACTIVATIONS["relu"]().forward(x), [0, 0.5])
    np.testing.assert_allclose(ACTIVATIONS["leaky_relu"]().forward(x), [-0.02, 0.5])
    np.testing.assert_allclose(ACTIVATIONS["sigmoid"]().forward(x), 1 / (1 + np.exp(-x)))
    np.testing.assert_allclose(ACTIVATIONS["arctan"]().forward(x), np.arctan(x))
    assert np.isfinite(ACTIVATIONS["sigmoid"]().forward(np.array([-1e4, 1e4]))).all()


@pytest.mark.parametrize("loss_fn", [mse_loss, l1_loss])
def test_loss_gradients(rng, loss_fn):
    pred, target = rng.standard_normal((2, 3, 3, 1)), rng.standard_normal((2, 3, 3, 1))
    _, grad = loss_fn(pred, target)
    idx, num = numeric_grad(lambda: loss_fn(pred, target)[0], pred)
    assert rel_error(num, grad.reshape(-1)[idx]) < 1e-6


def test_loss_values_and_shape_check():
    pred, target = np.array([1.0, 2.0, 4.0]), np.array([1.0, 0.0, 1.0])
    assert mse_loss(pred, target)[0] == pytest.approx((0 + 4 + 9) / 3)
    assert l1_loss(pred, target)[0] == pytest.approx((0 + 2 + 3) / 3)
    with pytest.raises(ValueError, match="shapes differ"):
        mse_loss(pred, target[:2])
