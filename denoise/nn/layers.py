"""Layers with explicit backward passes on channels-last (N, H, W, C) arrays.

Contract (every layer): ``params`` and ``grads`` dicts with the same keys;
``forward(x, *, cache=True)`` keeps only what ``backward`` needs (nothing when
``cache=False``, for inference); ``backward(dy)`` returns ``dx`` and adds
(``+=``) into ``grads``; ``zero_grad()`` resets the gradients.
``output_hw`` and ``flops`` describe one image of a given size without running.
"""

from __future__ import annotations

import numpy as np

from denoise.backend import get_array_module
from denoise.nn.conv import (
    PADDING_MODES,
    conv2d,
    conv2d_and_weight_grad,
    conv2d_backward,
    conv2d_transpose,
    pad2d,
    pad2d_adjoint,
)
from denoise.nn.threads import blas_single_thread


class Layer:
    """Base class: no parameters, shape-preserving, free."""

    def __init__(self):
        self.params: dict = {}
        self.grads: dict = {}

    def zero_grad(self) -> None:
        for g in self.grads.values():
            g.fill(0)

    def output_hw(self, h: int, w: int) -> tuple[int, int]:
        return h, w

    def flops(self, h: int, w: int) -> int:
        """Forward multiply-adds * 2 for one (h, w) input image."""
        return 0

    def _init_params(self, rng: np.random.Generator, shapes: dict, fan_in: int, dtype, xp):
        """He-normal weights (std sqrt(2 / fan_in), for ReLU-like nets), zero bias."""
        for name, shape in shapes.items():
            if name == "weight":
                host = rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)
            else:
                host = np.zeros(shape)
            self.params[name] = xp.asarray(host.astype(dtype))
            self.grads[name] = xp.zeros(shape, dtype=dtype)


def channel_sum(dy):
    """Sum (N, H, W, C) over all but channels, as a ones-vector matmul (10x ``sum``).

    BLAS runs single-threaded: 2-thread OpenBLAS stalled on this gemv for ms.
    """
    xp = get_array_module(dy)
    d2 = dy.reshape(-1, dy.shape[3])  # (N*H*W, C)
    with blas_single_thread():
        return xp.ones(d2.shape[0], dtype=dy.dtype) @ d2


def check_positive_ints(**values) -> None:
    for name, v in values.items():
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")


class Conv2d(Layer):
    """2-D convolution with stride, zero or reflect padding and bias.

    Weight (k, k, C_in, C_out), He-initialized; ``padding`` defaults to k // 2
    ("same" size at stride 1).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, *,
                 stride: int = 1, padding: int | None = None, padding_mode: str = "zero",
                 bias: bool = True, rng: np.random.Generator, dtype=np.float32, xp=np):
        super().__init__()
        check_positive_ints(in_channels=in_channels, out_channels=out_channels,
                             kernel_size=kernel_size, stride=stride)
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
        self.kernel_size, self.stride = kernel_size, stride
        self.padding = kernel_size // 2 if padding is None else padding
        if not isinstance(self.padding, (int, np.integer)) or self.padding < 0:
            raise ValueError(f"padding must be an integer >= 0, got {padding!r}")
        self.padding_mode = padding_mode
        shapes = {"weight": (kernel_size, kernel_size, in_channels, out_channels)}
        if bias:
            shapes["bias"] = (out_channels,)
        self._init_params(rng, shapes, kernel_size * kernel_size * in_channels, dtype, xp)
        self._xpad = None

    def forward(self, x, *, cache: bool = True):
        xpad = pad2d(x, self.padding, mode=self.padding_mode)  # (N, H+2p, W+2p, C_in)
        self._xpad = xpad if cache else None
        return conv2d(xpad, self.params["weight"], self.params.get("bias"), stride=self.stride)

    def backward(self, dy, *, input_grad: bool = True):
        """dx, or None with ``input_grad=False`` (the network's first layer in training)."""
        # xpad (N, Hp, Wp, C_in); dy (N, Ho, Wo, C_out)
        dxpad, dw = conv2d_backward(self._xpad, dy, self.params["weight"], stride=self.stride,
                                    input_grad=input_grad)
        self.grads["weight"] += dw
        if "bias" in self.grads:
            self.grads["bias"] += channel_sum(dy)
        return None if dxpad is None else pad2d_adjoint(dxpad, self.padding, mode=self.padding_mode)

    def output_hw(self, h, w):
        k, s, p = self.kernel_size, self.stride, self.padding
        return (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1

    def flops(self, h, w):
        ho, wo = self.output_hw(h, w)
        return 2 * ho * wo * self.params["weight"].size


class ConvTranspose2d(Layer):
    """Transposed convolution: the adjoint of a Conv2d from C_out to C_in channels.

    Output size (H - 1) * stride - 2 * padding + kernel_size + output_padding
    (as ``torch.nn.ConvTranspose2d``). The weight (k, k, C_out, C_in) is that of
    the convolution it is the adjoint of; fan-in for He init is
    C_in * k * k / stride**2, the number of terms summed per output pixel.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 2, *,
                 stride: int = 2, padding: int = 0, output_padding: int = 0,
                 bias: bool = True, rng: np.random.Generator, dtype=np.float32, xp=np):
        super().__init__()
        check_positive_ints(in_channels=in_channels, out_channels=out_channels,
                             kernel_size=kernel_size, stride=stride)
        if not 0 <= output_padding < stride:
            raise ValueError(f"output_padding must be in [0, stride), got {output_padding}")
        if not 0 <= 2 * padding < kernel_size + output_padding:
            raise ValueError(f"padding must be in [0, (kernel_size + output_padding) / 2), got {padding}")
        self.kernel_size, self.stride = kernel_size, stride
        self.padding, self.output_padding = padding, output_padding
        shapes = {"weight": (kernel_size, kernel_size, out_channels, in_channels)}
        if bias:
            shapes["bias"] = (out_channels,)
        fan_in = max(1, in_channels * kernel_size * kernel_size // stride**2)
        self._init_params(rng, shapes, fan_in, dtype, xp)
        self._x = None

    def _full_hw(self, h, w):
        k, s, op = self.kernel_size, self.stride, self.output_padding
        return (h - 1) * s + k + op, (w - 1) * s + k + op

    def forward(self, x, *, cache: bool = True):
        self._x = x if cache else None  # (N, H, W, C_in)
        p = self.padding
        full = conv2d_transpose(x, self.params["weight"], stride=self.stride,
                                out_hw=self._full_hw(*x.shape[1:3]))
        z = full[:, p : full.shape[1] - p, p : full.shape[2] - p]  # (N, Ho, Wo, C_out)
        return z + self.params["bias"] if "bias" in self.params else z

    def backward(self, dz):
        dfull = pad2d(dz, self.padding)  # (N, Hfull, Wfull, C_out)
        dx, dw = conv2d_and_weight_grad(dfull, self.params["weight"], self._x, stride=self.stride)
        self.grads["weight"] += dw
        if "bias" in self.grads:
            self.grads["bias"] += channel_sum(dz)
        return dx

    def output_hw(self, h, w):
        hf, wf = self._full_hw(h, w)
        return hf - 2 * self.padding, wf - 2 * self.padding

    def flops(self, h, w):
        return 2 * h * w * self.params["weight"].size


def _block_sum(x, s: int):
    """Sum non-overlapping s x s blocks: (N, H, W, C) -> (N, H/s, W/s, C).

    Adds whole rows, then channel chunks: 4-7x faster than ``sum(axis=(2, 4))``
    on the 6-D view, whose inner loops are only C long.
    """
    n, h, w, c = x.shape
    v = x.reshape(n, h // s, s, w // s, s * c)
    rows = sum(v[:, :, i] for i in range(1, s)) + v[:, :, 0]  # (N, H/s, W/s, s*C)
    return sum(rows[..., i * c : (i + 1) * c] for i in range(1, s)) + rows[..., :c]


def _repeat_blocks(x, s: int):
    """Nearest-neighbour repeat of each pixel into an s x s block."""
    xp = get_array_module(x)
    n, h, w, c = x.shape
    big = xp.broadcast_to(x[:, :, None, :, None, :], (n, h, s, w, s, c))
    return big.reshape(n, h * s, w * s, c)


class MeanPool2d(Layer):
    """Mean over non-overlapping size x size blocks; H and W must be multiples of size."""

    def __init__(self, size: int = 2):
        super().__init__()
        check_positive_ints(size=size)
        self.size = size

    def forward(self, x, *, cache: bool = True):
        s = self.size
        if x.shape[1] % s or x.shape[2] % s:
            raise ValueError(f"MeanPool2d({s}) needs H and W divisible by {s}, got "
                             f"{x.shape[1]}x{x.shape[2]}: pad or crop the input")
        return _block_sum(x, s) * (1.0 / (s * s))

    def backward(self, dy):
        s = self.size
        return _repeat_blocks(dy * (1.0 / (s * s)), s)

    def output_hw(self, h, w):
        return h // self.size, w // self.size


class Upsample2d(Layer):
    """Nearest-neighbour upsampling: repeat each pixel into a factor x factor block."""

    def __init__(self, factor: int = 2):
        super().__init__()
        check_positive_ints(factor=factor)
        self.factor = factor

    def forward(self, x, *, cache: bool = True):
        return _repeat_blocks(x, self.factor)

    def backward(self, dy):
        return _block_sum(dy, self.factor)

    def output_hw(self, h, w):
        return h * self.factor, w * self.factor


class Add(Layer):
    """Residual/skip merge ``a + b``; the gradient flows unchanged to both."""

    def forward(self, a, b, *, cache: bool = True):
        return a + b

    def backward(self, dy):
        return dy, dy


class Concat(Layer):
    """U-Net skip merge: concatenate channels ``[a, b]``; the gradient is split."""

    def forward(self, a, b, *, cache: bool = True):
        if cache:
            self._ca = a.shape[3]
        return get_array_module(a).concatenate([a, b], axis=3)

    def backward(self, dy):
        return dy[..., : self._ca], dy[..., self._ca :]
