"""Convolution on channels-last arrays: padding, im2col tiles + matmul, and adjoints.

Layout: activations ``(N, H, W, C)``, weights ``(k, k, C_in, C_out)``. Every
convolution here is a *valid* cross-correlation of an already padded input;
layers pad (zero or reflect) before and apply the padding's adjoint after.

- :func:`conv2d` is im2col + matmul. The im2col block is a strided window view
  (no copy) copied tile by tile into a buffer that stays in cache, and the
  tiles run on :mod:`denoise.nn.threads` (on CuPy: one tile, one matmul). At
  stride 1 the copy covers (kw, C) only and the kh kernel rows are kh matmuls
  on row-shifted blocks (see :class:`_Plan`).
- :func:`conv2d_weight_grad` recomputes the im2col tiles from the padded input
  instead of caching a 9x larger column matrix, and sums ``cols.T @ dy`` per tile.
- :func:`conv2d_transpose` is the adjoint of :func:`conv2d` (gradient w.r.t. the
  input, and the forward pass of a transposed convolution). It gathers instead
  of scattering (a col2im of slice-adds is slower: NumPy's inner loop is only
  C long): for stride 1 it is a convolution of the zero-padded ``dy`` with the
  flipped kernel; for stride s it splits the output into s*s phases, each a
  stride-1 convolution with a sub-kernel.
- :func:`conv2d_naive` is the slow loop reference the tests trust.

Measurements: docs/design/training-speed.md.
"""

from __future__ import annotations

import numpy as np

from denoise.backend import get_array_module
from denoise.nn.threads import run_split

TILE_BYTES = 1 << 20  # im2col block per tile, about the L2 cache; 512 KiB-4 MiB measured within noise
PADDING_MODES = ("zero", "reflect")


def zero_pad(x, top: int, bottom: int, left: int, right: int):
    """Zero-pad the spatial axes of ``x`` (N, H, W, C); ``x`` itself when all pads are 0."""
    if top == bottom == left == right == 0:
        return x
    xp = get_array_module(x)
    n, h, w, c = x.shape
    out = xp.zeros((n, h + top + bottom, w + left + right, c), dtype=x.dtype)
    out[:, top : top + h, left : left + w] = x
    return out


def pad2d(x, pad: int, *, mode: str = "zero"):
    """Pad both spatial axes of ``x`` (N, H, W, C) by ``pad`` pixels.

    ``mode='reflect'`` mirrors without repeating the edge (as ``numpy.pad``).
    """
    if mode not in PADDING_MODES:
        raise ValueError(f"padding mode must be one of {PADDING_MODES}, got {mode!r}")
    n, h, w, c = x.shape
    if mode == "zero" or pad == 0:
        return zero_pad(x, pad, pad, pad, pad)
    if h <= pad or w <= pad:
        raise ValueError(f"reflect padding of {pad} needs H and W > {pad}, got {h}x{w}")
    p = pad
    out = zero_pad(x, p, p, p, p)
    out[:, :p, p : p + w] = x[:, 1 : p + 1][:, ::-1]
    out[:, p + h :, p : p + w] = x[:, h - 1 - p : h - 1][:, ::-1]
    out[:, :, :p] = out[:, :, p + 1 : 2 * p + 1][:, :, ::-1]
    out[:, :, p + w :] = out[:, :, w - 1 : w - 1 + p][:, :, ::-1]
    return out


def pad2d_adjoint(dxp, pad: int, *, mode: str = "zero"):
    """Adjoint of :func:`pad2d`: crop (zero) or fold the mirrored borders back (reflect).

    Folds in place, so ``dxp`` must be a scratch array.
    """
    p = pad
    h, w = dxp.shape[1] - 2 * p, dxp.shape[2] - 2 * p
    if mode == "reflect" and p > 0:
        dxp[:, :, p + 1 : 2 * p + 1] += dxp[:, :, :p][:, :, ::-1]
        dxp[:, :, w - 1 : w - 1 + p] += dxp[:, :, p + w :][:, :, ::-1]
        dxp[:, p + 1 : 2 * p + 1, p : p + w] += dxp[:, :p, p : p + w][:, ::-1]
        dxp[:, h - 1 : h - 1 + p, p : p + w] += dxp[:, p + h :, p : p + w][:, ::-1]
    return dxp[:, p : p + h, p : p + w]


def windows(x, kh: int, kw: int, stride: int = 1):
    """Read-only im2col view of ``x`` (N, H, W, C): (N, Ho, Wo, kh, kw, C), no copy."""
    xp = get_array_module(x)
    n, h, w, c = x.shape
    ho, wo = (h - kh) // stride + 1, (w - kw) // stride + 1
    sn, sh, sw, sc = x.strides
    return xp.lib.stride_tricks.as_strided(
        x, shape=(n, ho, wo, kh, kw, c), strides=(sn, stride * sh, stride * sw, sh, sw, sc)
    )


class _Plan:
    """How a valid convolution of ``x`` with a (kh, kw) kernel is cut into tiles.

    Stride 1 (NumPy): im2col over (kw, C) only, of the tile's rows plus kh - 1,
    then kh matmuls on row-shifted blocks of it, one per kernel row: 3x less
    copying than a full im2col, measured 15-40% faster. Other strides, fewer
    than 8 columns per kernel row (1-channel input: such thin matmuls are
    slower) and CuPy: full im2col, one group of kh*kw*C columns. Tiles are
    single-image row bands of ~TILE_BYTES of columns (CuPy: one tile), so every
    output block ``y[n0:n1, r0:r1]`` is contiguous.
    """

    def __init__(self, x, kh: int, kw: int, stride: int):
        on_numpy = get_array_module(x) is np
        self.groups = kh if stride == 1 and on_numpy and kw * x.shape[3] >= 8 else 1
        self.win = windows(x, kh - self.groups + 1, kw, stride)  # (N, rows, Wo, kh/groups, kw, C)
        n, _, self.wo = self.win.shape[:3]
        self.ho = (x.shape[1] - kh) // stride + 1
        row = self.win[0, 0].size  # columns per output row and group
        rows = max(1, min(self.ho, TILE_BYTES // (row * x.itemsize))) if on_numpy else self.ho
        if on_numpy:
            self.tiles = [(i, i + 1, r, min(r + rows, self.ho))
                          for i in range(n) for r in range(0, self.ho, rows)]
        else:
            self.tiles = [(0, n, 0, self.ho)]
        self.buffer_size = (self.tiles[0][1] - self.tiles[0][0]) * (rows + self.groups - 1) * row

    def cols(self, buf, n0, n1, r0, r1):
        """Copy the tile's im2col rows into ``buf``; yield (group, its (P, K/groups) block)."""
        tile = self.win[n0:n1, r0 : r1 + self.groups - 1]
        cols = buf[: tile.size].reshape(tile.shape)
        cols[...] = tile
        cols = cols.reshape(-1, self.win[0, 0, 0].size)
        p = (n1 - n0) * (r1 - r0) * self.wo
        for g in range(self.groups):
            yield g, cols[g * self.wo : g * self.wo + p]


def _conv_tiles(x, kh: int, kw: int, stride: int, *, w=None, b=None, grad_of=None):
    """One pass over the im2col tiles of ``x``: ``y = cols @ w (+ b)`` if ``w`` is given,
    and ``g = cols.T @ grad_of`` if ``grad_of`` (shaped like y) is given.

    Returns ``(y, g)``, g as (kh, kw, C, C_grad); sharing the tiles saves a copy
    whenever a backward pass needs both.
    """
    xp = get_array_module(x)
    plan = _Plan(x, kh, kw, stride)
    y = wg = None
    if w is not None:
        co = w.shape[3]
        y = xp.empty((x.shape[0], plan.ho, plan.wo, co), dtype=x.dtype)
        wg = w.reshape(plan.groups, -1, co)  # (groups, kh/groups*kw*C, Co)
    if grad_of is not None:
        grad_of = xp.ascontiguousarray(grad_of)  # (N, Ho, Wo, C_grad)
        cg = grad_of.shape[3]
    wg_rows = kh * kw * x.shape[3] // plan.groups

    def work(share):
        buf = xp.empty(plan.buffer_size, dtype=x.dtype)
        g_acc = None if grad_of is None else xp.zeros((plan.groups, wg_rows, cg), dtype=x.dtype)
        for n0, n1, r0, r1 in share:
            out = None if y is None else y[n0:n1, r0:r1].reshape(-1, co)
            d = None if grad_of is None else grad_of[n0:n1, r0:r1].reshape(-1, cg)
            for g, cols in plan.cols(buf, n0, n1, r0, r1):
                if out is not None and g == 0:
                    xp.matmul(cols, wg[0], out=out)
                elif out is not None:
                    out += cols @ wg[g]
                if d is not None:
                    g_acc[g] += cols.T @ d
            if b is not None:
                out += b
        return g_acc

    parts = run_split(work, plan.tiles)
    return y, None if grad_of is None else sum(parts).reshape(kh, kw, x.shape[3], cg)


def conv2d(x, w, b=None, *, stride: int = 1):
    """Valid cross-correlation: (N, H, W, C) * (kh, kw, C, Co) -> (N, Ho, Wo, Co), plus bias."""
    return _conv_tiles(x, w.shape[0], w.shape[1], stride, w=w, b=b)[0]


def conv2d_weight_grad(x, dy, *, kernel_size: int, stride: int = 1):
    """Gradient of ``<conv2d(x, w, stride=stride), dy>`` w.r.t. ``w``: (k, k, C, Co)."""
    return _conv_tiles(x, kernel_size, kernel_size, stride, grad_of=dy)[1]


def conv2d_and_weight_grad(x, w, dy_other, *, stride: int = 1):
    """``(conv2d(x, w, stride), conv2d_weight_grad(x, dy_other, ...))`` from one set of tiles.

    The backward pass of a transposed convolution needs exactly this pair.
    """
    return _conv_tiles(x, w.shape[0], w.shape[1], stride, w=w, grad_of=dy_other)


def conv2d_backward(x, dy, w, *, stride: int = 1, input_grad: bool = True):
    """Gradients of ``conv2d(x, w, stride)`` given ``dy``: ``(dx, dw)``.

    At stride 1 with no more output than input channels (all but the channel-
    widening convs), dx and dw come from the same tiles of the zero-padded
    ``dy``: dx is its convolution with the flipped kernel and dw^T its
    correlation with ``x``; one im2col pass instead of two (16 -> 16 channels
    at 64x64: 3.1 vs 3.5 ms). Otherwise dx by :func:`conv2d_transpose` and dw
    from the tiles of ``x``. ``input_grad=False`` skips dx (returns None).
    """
    k, c, co = w.shape[0], w.shape[2], w.shape[3]
    if not input_grad:
        return None, conv2d_weight_grad(x, dy, kernel_size=k, stride=stride)
    if stride == 1 and co <= c:
        dyp = zero_pad(dy, k - 1, k - 1, k - 1, k - 1)  # (N, H + k - 1, W + k - 1, Co)
        dx, dw_flipped = conv2d_and_weight_grad(dyp, _flip(w), x)
        return dx, _flip(dw_flipped)
    return (conv2d_transpose(dy, w, stride=stride, out_hw=x.shape[1:3]),
            conv2d_weight_grad(x, dy, kernel_size=k, stride=stride))


def _flip(w):
    """Kernel of the adjoint convolution: spatially flipped, channels swapped."""
    xp = get_array_module(w)
    return xp.ascontiguousarray(w[::-1, ::-1].transpose(0, 1, 3, 2))


def conv2d_transpose(dy, w, *, stride: int = 1, out_hw: tuple[int, int]):
    """Adjoint of :func:`conv2d` for an input of spatial size ``out_hw``.

    (N, Ho, Wo, Co) -> (N, H, W, C) with ``w`` (k, k, C, Co); requires
    ``(H - k) // stride + 1 == Ho`` (likewise W).
    """
    xp = get_array_module(dy)
    k, s = w.shape[0], stride
    n, ho, wo, _ = dy.shape
    h, wd = out_hw
    if (h - k) // s + 1 != ho or (wd - k) // s + 1 != wo:
        raise ValueError(
            f"out_hw {out_hw} does not match dy {ho}x{wo} for kernel {k}, stride {s}"
        )
    if s == 1:
        return conv2d(zero_pad(dy, k - 1, h - ho, k - 1, wd - wo), _flip(w))
    if k == s:  # taps do not overlap (2x2 stride-2 up-conv): a 1x1 conv, then depth-to-space
        c = w.shape[2]
        taps = conv2d(dy, w.reshape(1, 1, -1, w.shape[3]).transpose(0, 1, 3, 2))  # (N, Ho, Wo, k*k*C)
        dx = xp.empty((n, ho, k, wo, k, c), dtype=dy.dtype)
        dx[...] = taps.reshape(n, ho, wo, k, k, c).transpose(0, 1, 3, 2, 4, 5)
        return zero_pad(dx.reshape(n, ho * k, wo * k, c), 0, h - ho * k, 0, wd - wo * k)
    dx = xp.zeros((n, h, wd, w.shape[2]), dtype=dy.dtype)
    for rh in range(min(s, k)):
        for rw in range(min(s, k)):
            wr = w[rh::s, rw::s]  # taps i = rh + s*t: (Th, Tw, C, Co)
            th, tw = wr.shape[:2]
            qh, qw = -(-(h - rh) // s), -(-(wd - rw) // s)  # rows/cols of this phase
            dyp = zero_pad(dy, th - 1, qh - ho, tw - 1, qw - wo)
            dx[:, rh::s, rw::s] = conv2d(dyp, _flip(wr))
    return dx


def conv2d_naive(x, w, b=None, *, stride: int = 1, padding: int = 0, padding_mode: str = "zero"):
    """Slow loop reference for padded, strided convolution (host NumPy only).

    Pads with ``numpy.pad`` (independent of :func:`pad2d`) and loops over
    output pixels; the tests compare the fast path against it.
    """
    mode = {"zero": "constant", "reflect": "reflect"}[padding_mode]
    p = padding
    xpad = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)), mode=mode)
    k, co = w.shape[0], w.shape[3]
    ho = (xpad.shape[1] - k) // stride + 1
    wo = (xpad.shape[2] - k) // stride + 1
    y = np.zeros((x.shape[0], ho, wo, co), dtype=np.result_type(x, w))
    for i in range(ho):
        for j in range(wo):
            patch = xpad[:, i * stride : i * stride + k, j * stride : j * stride + k, :]
            y[:, i, j, :] = np.tensordot(patch, w, axes=([1, 2, 3], [0, 1, 2]))
    return y if b is None else y + b
