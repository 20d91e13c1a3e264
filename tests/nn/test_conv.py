"""The fast convolution against the loop reference (and PyTorch when it is installed)."""

import numpy as np
import pytest

from denoise.nn import conv2d, conv2d_naive, conv2d_transpose, conv2d_weight_grad, pad2d
from denoise.nn.conv import conv2d_and_weight_grad, conv2d_backward, pad2d_adjoint
from denoise.nn.threads import get_num_threads, set_num_threads

from .gradcheck import rel_error

CASES = [  # (kernel, stride, padding, mode)
    (3, 1, 1, "zero"), (3, 2, 1, "zero"), (3, 1, 1, "reflect"), (3, 2, 1, "reflect"),
    (5, 1, 2, "reflect"), (1, 1, 0, "zero"), (2, 2, 0, "zero"), (3, 3, 0, "zero"),
]


@pytest.mark.parametrize("k,stride,pad,mode", CASES)
def test_conv2d_matches_naive_reference(rng, k, stride, pad, mode):
    x = rng.standard_normal((2, 9, 11, 3))
    w = rng.standard_normal((k, k, 3, 4))
    b = rng.standard_normal(4)

    y = conv2d(pad2d(x, pad, mode=mode), w, b, stride=stride)

    assert rel_error(y, conv2d_naive(x, w, b, stride=stride, padding=pad, padding_mode=mode)) < 1e-12


def test_flipped_kernel_or_shifted_padding_fails_the_comparison(rng):
    # The threshold used everywhere (1e-6) must catch the classic bugs.
    x = rng.standard_normal((2, 8, 8, 3))
    w = rng.standard_normal((3, 3, 3, 4))
    reference = conv2d_naive(x, w, padding=1)

    flipped = conv2d(pad2d(x, 1), w[::-1, ::-1])
    transposed_channels = conv2d(pad2d(x, 1), w.transpose(1, 0, 2, 3))
    off_by_one = conv2d(pad2d(x, 2), w)[:, 1:-1, :-2]

    for wrong in (flipped, transposed_channels, off_by_one):
        assert rel_error(wrong, reference) > 0.1


@pytest.mark.parametrize("k,stride,pad,mode", CASES)
def test_transpose_and_weight_grad_are_adjoints_of_conv(rng, k, stride, pad, mode):
    # <conv(x, w), dy> = <x, conv^T(dy)> = <w, dW(x, dy)> for every x, w, dy.
    x = rng.standard_normal((2, 9, 11, 3))
    w = rng.standard_normal((k, k, 3, 4))
    xpad = pad2d(x, pad, mode=mode)
    y = conv2d(xpad, w, stride=stride)
    dy = rng.standard_normal(y.shape)

    dx = pad2d_adjoint(conv2d_transpose(dy, w, stride=stride, out_hw=xpad.shape[1:3]), pad, mode=mode)
    dw = conv2d_weight_grad(xpad, dy, kernel_size=k, stride=stride)

    assert np.isclose(np.sum(y * dy), np.sum(x * dx), rtol=1e-12)
    assert np.isclose(np.sum(y * dy), np.sum(w * dw), rtol=1e-12)


@pytest.mark.parametrize("c,co,stride", [(6, 2, 1), (2, 6, 1), (6, 2, 2)])
def test_fused_backward_equals_separate_gradients(rng, c, co, stride):
    # c > co at stride 1 takes the shared-tiles path; the others the plain one.
    x = rng.standard_normal((2, 9, 10, c))
    w = rng.standard_normal((3, 3, c, co))
    dy = rng.standard_normal(conv2d(x, w, stride=stride).shape)

    dx, dw = conv2d_backward(x, dy, w, stride=stride)

    assert rel_error(dx, conv2d_transpose(dy, w, stride=stride, out_hw=x.shape[1:3])) < 1e-12
    assert rel_error(dw, conv2d_weight_grad(x, dy, kernel_size=3, stride=stride)) < 1e-12
    y, g = conv2d_and_weight_grad(x, w, dy, stride=stride)
    assert rel_error(y, conv2d(x, w, stride=stride)) < 1e-12 and rel_error(g, dw) < 1e-12


def test_reflect_padding_matches_numpy_pad(rng):
    x = rng.standard_normal((1, 5, 6, 2))
    expected = np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)), mode="reflect")
    np.testing.assert_array_equal(pad2d(x, 2, mode="reflect"), expected)


def test_pad2d_rejects_bad_mode_and_too_small_input(rng):
    with pytest.raises(ValueError, match="padding mode"):
        pad2d(np.zeros((1, 4, 4, 1)), 1, mode="circular")
    with pytest.raises(ValueError, match="reflect padding"):
        pad2d(np.zeros((1, 2, 2, 1)), 2, mode="reflect")


def test_tiled_threaded_path_matches_reference_and_thread_count(rng):
    # Large enough to be cut into row tiles and run on several threads.
    x = rng.standard_normal((2, 70, 90, 8)).astype(np.float32)
    w = rng.standard_normal((3, 3, 8, 16)).astype(np.float32)
    xpad = pad2d(x, 1)
    dy = rng.standard_normal((2, 70, 90, 16)).astype(np.float32)
    before = get_num_threads()
    try:
        set_num_threads(1)
        y1, dw1 = conv2d(xpad, w), conv2d_weight_grad(xpad, dy, kernel_size=3)
        set_num_threads(2)
        y2, dw2 = conv2d(xpad, w), conv2d_weight_grad(xpad, dy, kernel_size=3)
    finally:
        set_num_threads(before)

    np.testing.assert_array_equal(y1, y2)
    assert rel_error(dw1, dw2) < 1e-5
    assert rel_error(y2, conv2d_naive(x.astype(np.float64), w.astype(np.float64), padding=1)) < 1e-5


def test_set_num_threads_rejects_zero():
    with pytest.raises(ValueError, match="threads"):
        set_num_threads(0)


def test_conv2d_transpose_rejects_mismatched_size(rng):
    with pytest.raises(ValueError, match="out_hw"):
        conv2d_transpose(np.zeros((1, 4, 4, 2)), np.zeros((3, 3, 1, 2)), stride=1, out_hw=(9, 9))


@pytest.mark.parametrize("k,stride,pad,mode", [(3, 1, 1, "zero"), (3, 2, 1, "reflect"), (5, 1, 2, "zero")])
def test_conv2d_matches_torch(rng, k, stride, pad, mode):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = rng.standard_normal((2, 10, 12, 3))
    w = rng.standard_normal((k, k, 3, 5))
    b = rng.standard_normal(5)

    ours = conv2d(pad2d(x, pad, mode=mode), w, b, stride=stride)
    torch_mode = "constant" if mode == "zero" else "reflect"
    xt = F.pad(torch.from_numpy(x).permute(0, 3, 1, 2), (pad,) * 4, mode=torch_mode)
    theirs = F.conv2d(xt, torch.from_numpy(w).permute(3, 2, 0, 1), torch.from_numpy(b), stride=stride)

    assert rel_error(ours, theirs.permute(0, 2, 3, 1).numpy()) < 1e-12


@pytest.mark.parametrize("k,stride,pad,out_pad", [(2, 2, 0, 0), (3, 2, 1, 1), (4, 2, 1, 0), (3, 1, 1, 0)])
def test_conv_transpose_layer_matches_torch(rng, k, stride, pad, out_pad):
    torch = pytest.importorskip("torch")
    from denoise.nn import ConvTranspose2d

    layer = ConvTranspose2d(3, 5, k, stride=stride, padding=pad, output_padding=out_pad,
                            rng=rng, dtype=np.float64)
    layer.params["bias"][...] = rng.standard_normal(5)
    x = rng.standard_normal((2, 6, 7, 3))

    ours = layer.forward(x, cache=False)
    theirs = torch.nn.functional.conv_transpose2d(
        torch.from_numpy(x).permute(0, 3, 1, 2), torch.from_numpy(layer.params["weight"]).permute(3, 2, 0, 1),
        torch.from_numpy(layer.params["bias"]), stride=stride, padding=pad, output_padding=out_pad)

    assert rel_error(ours, theirs.permute(0, 2, 3, 1).numpy()) < 1e-12
