"""Nearest-neighbour x2 upsampling followed by a convolution, computed at low resolution.

Repeating every pixel into a 2x2 block and convolving with a k x k kernel (zero
padding p = k // 2) gives, for each of the four output phases (row parity,
column parity), a (p+1) x (p+1) convolution of the *low-resolution* input
whose taps are sums of the k x k taps that land on the same low-resolution
pixel. Same function and parameters as ``Upsample2d`` then ``Conv2d``
(the tests compare them), 2.25x fewer multiply-adds for k = 3 and no 4x larger
intermediate.
"""

from __future__ import annotations

import numpy as np

from denoise.backend import get_array_module
from denoise.nn.conv import conv2d, conv2d_backward, zero_pad
from denoise.nn.layers import Layer, channel_sum, check_positive_ints


def _phase_taps(k: int):
    """Per output parity r: (first low-res offset into the padded input, combine matrix (p+1, k))."""
    p = k // 2
    lo = (p + 1) // 2  # low-res zero padding on each side
    phases = []
    for r in (0, 1):
        first = (r - p) // 2  # low-res offset of tap 0
        combine = np.zeros((p + 1, k))
        for i in range(k):
            combine[(r + i - p) // 2 - first, i] = 1
        phases.append((first + lo, combine))
    return lo, phases


class UpsampleConv2d(Layer):
    """``Conv2d(Upsample2d(x))`` with zero padding k // 2, as one layer: (N, H, W, C) -> (N, 2H, 2W, Co).

    Weight (k, k, C_in, C_out) and bias exactly as the Conv2d it replaces.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, *,
                 rng: np.random.Generator, dtype=np.float32, xp=np):
        super().__init__()
        check_positive_ints(in_channels=in_channels, out_channels=out_channels, kernel_size=kernel_size)
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        k = kernel_size
        self.kernel_size, self.taps = k, k // 2 + 1
        self._lo, self._phases = _phase_taps(k)
        self._init_params(rng, {"weight": (k, k, in_channels, out_channels), "bias": (out_channels,)},
                          k * k * in_channels, dtype, xp)
        self._xpad = None

    def _each_phase(self, h: int, w: int):
        """Yield (rh, rw, window slice of the padded input, combine_h, combine_w, phase kernel)."""
        weight = self.params["weight"]
        xp, t = get_array_module(weight), self.taps
        for rh, (oh, ch) in enumerate(self._phases):
            for rw, (ow, cw) in enumerate(self._phases):
                ch_, cw_ = xp.asarray(ch, weight.dtype), xp.asarray(cw, weight.dtype)
                kernel = xp.einsum("ui,vj,ijco->uvco", ch_, cw_, weight)  # (t, t, C, Co)
                window = (slice(None), slice(oh, oh + h + t - 1), slice(ow, ow + w + t - 1))
                yield rh, rw, window, ch_, cw_, kernel

    def forward(self, x, *, cache: bool = True):
        xp = get_array_module(x)
        n, h, w, _ = x.shape
        xpad = zero_pad(x, self._lo, self._lo, self._lo, self._lo)  # (N, H+2lo, W+2lo, C)
        self._xpad = xpad if cache else None
        y = xp.empty((n, 2 * h, 2 * w, self.params["weight"].shape[3]), dtype=x.dtype)
        for rh, rw, window, _, _, kernel in self._each_phase(h, w):
            y[:, rh::2, rw::2] = conv2d(xpad[window], kernel, self.params["bias"])
        return y

    def backward(self, dy):
        xpad = self._xpad
        xp, lo = get_array_module(dy), self._lo
        h, w = xpad.shape[1] - 2 * lo, xpad.shape[2] - 2 * lo
        dxpad = xp.zeros_like(xpad)
        for rh, rw, window, ch, cw, kernel in self._each_phase(h, w):
            dy_phase = xp.ascontiguousarray(dy[:, rh::2, rw::2])  # (N, H, W, Co)
            dx_window, dk = conv2d_backward(xpad[window], dy_phase, kernel)
            self.grads["weight"] += xp.einsum("ui,vj,uvco->ijco", ch, cw, dk)
            dxpad[window] += dx_window
        self.grads["bias"] += channel_sum(dy)
        return dxpad[:, lo : lo + h, lo : lo + w]

    def output_hw(self, h, w):
        return 2 * h, 2 * w

    def flops(self, h, w):
        """Those of the Upsample2d + Conv2d it stands for (the network as defined)."""
        return 2 * (2 * h) * (2 * w) * self.params["weight"].size
