"""Convolutional autoencoder for CT denoising: Encoder + Decoder built from an architecture dict.

The input is (N, H, W, C) in model space (:mod:`denoise.normalize`): channel 0
is the image; with ``noise_level_input`` the noise level and the level-given
flag of :mod:`denoise.conditioning` follow; with ``neighbour_slices`` = n the
n slices before and the n after it come last (2.5-D: the slice's neighbours
share its anatomy but not its noise). The output is (N, H, W, 1). With ``residual``
the decoder predicts the noise and the model returns the image channel minus
it (RED-CNN / DnCNN), so values outside the window pass through unchanged up
to the predicted noise.

:data:`DEFAULT_ARCH` is a U-Net: per resolution level two convolutions with
an activation, mean pooling down, nearest repeat + convolution up (fused at
low resolution by :class:`~denoise.nn.upconv.UpsampleConv2d` with zero
padding), concatenated skips, a linear convolution head to one channel, and
the global residual. :func:`validate_config` completes a config with its
values and checks it. The study that chose this architecture, and its
caveat, is in the documentation's design notes (docs/design/architecture.md).
"""

from __future__ import annotations

import numpy as np

from denoise.backend import array_module, get_array_module, to_numpy
from denoise.nn.activations import ACTIVATIONS
from denoise.nn.conv import PADDING_MODES
from denoise.nn.layers import Add, Concat, Conv2d, ConvTranspose2d, Layer, MeanPool2d, Upsample2d
from denoise.nn.upconv import UpsampleConv2d

DEFAULT_ARCH = {
    "channels": [16, 32, 64],  # per resolution level; depth = len(channels)
    "convs_per_level": 2,  # encoder convs per level; decoder: up-conv + (this - 1)
    "kernel_size": 3,
    "padding": "zero",  # "zero" | "reflect"
    "down": "mean_pool",  # "mean_pool" | "strided_conv"
    "up": "repeat_conv",  # "repeat_conv" (nearest x2 then conv) | "transposed_conv" (2x2, stride 2)
    "activation": "relu",  # see denoise.nn.activations.ACTIVATIONS
    "skip": "concat",  # "concat" (U-Net) | "add" | "none"
    "residual": True,  # predict the noise and subtract it from the input
    # Three input channels (image, noise level, level-given flag; see denoise.conditioning)
    # instead of the image alone.
    "noise_level_input": False,
    # Slices on each side of the one denoised, as input channels after the others (0: 2-D).
    "neighbour_slices": 0,
}
MAX_NEIGHBOUR_SLICES = 2

_CHOICES = {
    "padding": PADDING_MODES,
    "down": ("mean_pool", "strided_conv"),
    "up": ("repeat_conv", "transposed_conv"),
    "activation": tuple(ACTIVATIONS),
    "skip": ("add", "concat", "none"),
}


def _positive_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


def validate_config(config: dict) -> dict:
    """Return ``config`` completed with DEFAULT_ARCH's values; ValueError says what to fix."""
    if not isinstance(config, dict):
        raise ValueError(f"architecture config must be a dict, got {type(config).__name__}")
    unknown = sorted(set(config) - set(DEFAULT_ARCH))
    if unknown:
        raise ValueError(f"unknown architecture keys {unknown}; known keys: {sorted(DEFAULT_ARCH)}")
    cfg = {**DEFAULT_ARCH, **config}
    ch = cfg["channels"]
    if not isinstance(ch, (list, tuple)) or not 1 <= len(ch) <= 6 or not all(map(_positive_int, ch)):
        raise ValueError(f"'channels' must be a list of 1 to 6 positive integers, got {ch!r}")
    cfg["channels"] = list(ch)
    if not _positive_int(cfg["convs_per_level"]):
        raise ValueError(f"'convs_per_level' must be an integer >= 1, got {cfg['convs_per_level']!r}")
    k = cfg["kernel_size"]
    if not _positive_int(k) or k % 2 == 0:
        raise ValueError(f"'kernel_size' must be a positive odd integer, got {k!r}")
    for key, allowed in _CHOICES.items():
        if cfg[key] not in allowed:
            raise ValueError(f"'{key}' must be one of {allowed}, got {cfg[key]!r}")
    for key in ("residual", "noise_level_input"):
        if not isinstance(cfg[key], bool):
            raise ValueError(f"'{key}' must be true or false, got {cfg[key]!r}")
    n = cfg["neighbour_slices"]
    if not (isinstance(n, int) and not isinstance(n, bool) and 0 <= n <= MAX_NEIGHBOUR_SLICES):
        raise ValueError(f"'neighbour_slices' must be an integer 0..{MAX_NEIGHBOUR_SLICES}, got {n!r}")
    return cfg


def input_channels(config: dict) -> int:
    """Channels of the network's input: the image, the noise-level maps if conditioned, the neighbours."""
    from denoise.conditioning import CHANNELS

    return (CHANNELS if config.get("noise_level_input") else 1) + 2 * config.get("neighbour_slices", 0)


def channel_roles(config: dict) -> list[str]:
    """What each input channel holds: ``image``, ``level``, ``flag``, then the neighbours by
    their offset (``-1``, ``+1`` ...), so weights can follow a channel when the input grows."""
    n = config.get("neighbour_slices", 0)
    return (["image"] + (["level", "flag"] if config.get("noise_level_input") else [])
            + [f"{d:+d}" for d in range(-n, n + 1) if d])


class Sequential:
    """Named layers applied in order (one resolution level's block)."""

    def __init__(self, layers: list[tuple[str, Layer]]):
        self.layers = layers

    def forward(self, x, *, cache: bool = True):
        for _, layer in self.layers:
            x = layer.forward(x, cache=cache)
        return x

    def backward(self, dy, *, input_grad: bool = True):
        """``input_grad=False``: the first layer, a Conv2d, skips its dx (returns None)."""
        for i, (_, layer) in reversed(list(enumerate(self.layers))):
            if i == 0 and not input_grad and isinstance(layer, Conv2d):
                return layer.backward(dy, input_grad=False)
            dy = layer.backward(dy)
        return dy

    def flops(self, h: int, w: int) -> tuple[int, tuple[int, int]]:
        total = 0
        for _, layer in self.layers:
            total += layer.flops(h, w)
            h, w = layer.output_hw(h, w)
        return total, (h, w)


class _Builder:
    """Creates conv + activation pairs with the config's kernel, padding and activation."""

    def __init__(self, cfg: dict, rng, dtype, xp):
        self.cfg, self.rng, self.dtype, self.xp = cfg, rng, dtype, xp

    def conv(self, c_in, c_out, *, stride=1):
        return Conv2d(c_in, c_out, self.cfg["kernel_size"], stride=stride,
                      padding_mode=self.cfg["padding"], rng=self.rng, dtype=self.dtype, xp=self.xp)

    def conv_act(self, name, c_in, c_out, *, stride=1):
        return [(name, self.conv(c_in, c_out, stride=stride)),
                (f"{name}_act", ACTIVATIONS[self.cfg["activation"]]())]

    def up(self, c_in, c_out):
        """x2 upsampling to ``c_out`` channels + activation; parameters always 'conv_up.*'.

        Nearest repeat + zero-padded conv runs fused at low resolution (UpsampleConv2d);
        with reflect padding the two layers run as written.
        """
        act = ("conv_up_act", ACTIVATIONS[self.cfg["activation"]]())
        opts = {"rng": self.rng, "dtype": self.dtype, "xp": self.xp}
        if self.cfg["up"] == "transposed_conv":
            return [("conv_up", ConvTranspose2d(c_in, c_out, 2, stride=2, **opts)), act]
        if self.cfg["padding"] == "zero":
            return [("conv_up", UpsampleConv2d(c_in, c_out, self.cfg["kernel_size"], **opts)), act]
        return [("upsample", Upsample2d(2)), ("conv_up", self.conv(c_in, c_out)), act]


class Encoder:
    """Resolution levels of convolutions; level l > 0 first halves the resolution
    (mean pool, or a stride-2 first conv). ``forward`` returns every level's output."""

    def __init__(self, build: _Builder):
        cfg = build.cfg
        strided = cfg["down"] == "strided_conv"
        self.levels, c_in = [], input_channels(cfg)
        for lvl, c in enumerate(cfg["channels"]):
            layers = [("pool", MeanPool2d(2))] if lvl > 0 and not strided else []
            for i in range(cfg["convs_per_level"]):
                stride = 2 if lvl > 0 and i == 0 and strided else 1
                layers += build.conv_act(f"conv{i}", c_in, c, stride=stride)
                c_in = c
            self.levels.append(Sequential(layers))

    def forward(self, x, *, cache: bool = True) -> list:
        feats = []
        for level in self.levels:
            x = level.forward(x, cache=cache)
            feats.append(x)
        return feats

    def backward(self, dfeats: list, *, input_grad: bool = True):
        """``dfeats[l]``: gradient w.r.t. level l's output (None where unused)."""
        g = dfeats[-1]
        for lvl in range(len(self.levels) - 1, -1, -1):
            g = self.levels[lvl].backward(g, input_grad=input_grad or lvl > 0)
            if lvl > 0 and dfeats[lvl - 1] is not None:
                g = g + dfeats[lvl - 1]
        return g

    def named_layers(self):
        for lvl, level in enumerate(self.levels):
            for name, layer in level.layers:
                yield f"encoder.{lvl}.{name}", layer


class Decoder:
    """Upsampling levels merging the encoder's skips, then a linear conv head to 1 channel."""

    def __init__(self, build: _Builder):
        cfg = build.cfg
        ch, skip = cfg["channels"], cfg["skip"]
        self.levels, c_in = [], ch[-1]  # (lvl, up, merge, convs), deepest first
        for lvl in range(len(ch) - 2, -1, -1):
            up = Sequential(build.up(c_in, ch[lvl]))
            merge = Add() if skip == "add" else Concat() if skip == "concat" else None
            c_in = 2 * ch[lvl] if skip == "concat" else ch[lvl]
            convs = []
            for i in range(cfg["convs_per_level"] - 1):
                convs += build.conv_act(f"conv{i}", c_in, ch[lvl])
                c_in = ch[lvl]
            self.levels.append((lvl, up, merge, Sequential(convs)))
        self.head = build.conv(c_in, 1)

    def forward(self, feats: list, *, cache: bool = True):
        h = feats[-1]
        for lvl, up, merge, convs in self.levels:
            h = up.forward(h, cache=cache)
            if merge is not None:
                h = merge.forward(h, feats[lvl], cache=cache)
            h = convs.forward(h, cache=cache)
        return self.head.forward(h, cache=cache)

    def backward(self, dy) -> list:
        dh = self.head.backward(dy)
        dfeats = [None] * (len(self.levels) + 1)
        for lvl, up, merge, convs in reversed(self.levels):
            dh = convs.backward(dh)
            if merge is not None:
                dh, dfeats[lvl] = merge.backward(dh)
            dh = up.backward(dh)
        dfeats[-1] = dh
        return dfeats

    def named_layers(self):
        for lvl, up, _, convs in self.levels:
            for name, layer in up.layers + convs.layers:
                yield f"decoder.{lvl}.{name}", layer
        yield "decoder.head", self.head


class ConvAutoencoder:
    """Encoder + Decoder (+ global residual) built from an architecture config dict.

    ``forward``/``backward`` train on (N, H, W, 1) with H, W multiples of
    ``multiple``; ``predict`` takes any H x W. Parameters live on ``device``
    ('cpu' NumPy, 'gpu' CuPy).
    """

    def __init__(self, config: dict, rng: np.random.Generator, *, dtype=np.float32, device: str = "cpu"):
        if not isinstance(rng, np.random.Generator):
            raise ValueError("rng must be a numpy.random.Generator, e.g. np.random.default_rng(0)")
        if np.dtype(dtype) not in (np.float32, np.float64):
            raise ValueError(f"dtype must be float32 or float64, got {dtype!r}")
        self.config = validate_config(config)
        self.dtype = np.dtype(dtype)
        build = _Builder(self.config, rng, self.dtype, array_module(device))
        self.encoder = Encoder(build)
        self.decoder = Decoder(build)
        self.multiple = 2 ** (len(self.config["channels"]) - 1)
        self.in_channels = input_channels(self.config)
        self.conditioned = self.config["noise_level_input"]  # takes the noise-level maps
        self.neighbours = self.config["neighbour_slices"]  # slices on each side it takes (0: 2-D)

    def named_layers(self):
        yield from self.encoder.named_layers()
        yield from self.decoder.named_layers()

    def parameters(self) -> dict:
        """Live parameter arrays by dotted name, e.g. 'encoder.0.conv0.weight'."""
        return {f"{name}.{k}": v for name, layer in self.named_layers() for k, v in layer.params.items()}

    def gradients(self) -> dict:
        return {f"{name}.{k}": v for name, layer in self.named_layers() for k, v in layer.grads.items()}

    def zero_grad(self) -> None:
        for _, layer in self.named_layers():
            layer.zero_grad()

    def _check_input(self, x, *, need_multiple: bool) -> None:
        c = self.in_channels
        if x.ndim != 4 or x.shape[3] != c:
            hint = ("add axes with x[None, ..., None]" if c == 1 else
                    "build it with denoise.conditioning.network_input from the image and its neighbours")
            raise ValueError(f"model input must be (N, H, W, {c}), got shape {x.shape}; {hint}")
        h, w, m = x.shape[1], x.shape[2], self.multiple
        if need_multiple and (h % m or w % m):
            raise ValueError(f"forward needs H and W divisible by {m}, got {h}x{w}; "
                             "crop training patches or use predict() for any size")

    def _run(self, x, *, cache: bool):
        y = self.decoder.forward(self.encoder.forward(x, cache=cache), cache=cache)
        return x[..., :1] - y if self.config["residual"] else y  # channel 0 is the image

    def forward(self, x):
        """Training forward pass on (N, H, W, C) -> (N, H, W, 1); caches what ``backward`` needs."""
        self._check_input(x, need_multiple=True)
        return self._run(x.astype(self.dtype, copy=False), cache=True)

    def backward(self, dy, *, input_grad: bool = True):
        """Gradient of the loss w.r.t. the input; adds parameter gradients into ``gradients()``.

        ``input_grad=False`` (training: nothing needs it) returns None and
        skips the first convolution's input gradient, about 1 % of a step.
        """
        residual = self.config["residual"]
        dx = self.encoder.backward(self.decoder.backward(-dy if residual else dy), input_grad=input_grad)
        if not input_grad:
            return None
        if not residual:
            return dx
        if dx.shape[3] == 1:
            return dx + dy
        dx = dx.copy()
        dx[..., :1] += dy  # the image channel passes straight through
        return dx

    def predict(self, x, *, batch_size: int = 1):
        """Denoise (N, H, W, C) -> (N, H, W, 1) of any H x W, ``batch_size`` images at a time, no cache.

        Edge-pads to a multiple of ``multiple`` and crops back.
        """
        self._check_input(x, need_multiple=False)
        if not _positive_int(batch_size):
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        xp = get_array_module(next(iter(self.parameters().values())))
        x = xp.asarray(x, dtype=self.dtype)
        n, h, w, _ = x.shape
        m = self.multiple
        pad = ((0, 0), (0, -h % m), (0, -w % m), (0, 0))
        out = xp.empty((n, h, w, 1), dtype=x.dtype)
        for i in range(0, n, batch_size):
            out[i : i + batch_size] = self._run(xp.pad(x[i : i + batch_size], pad, mode="edge"),
                                                cache=False)[:, :h, :w]
        return out

    def flops(self, h: int, w: int) -> int:
        """Forward multiply-adds * 2 for one h x w image (as ``predict`` pads it)."""
        m = self.multiple
        h, w = h + -h % m, w + -w % m
        total = 0
        for level in self.encoder.levels:
            f, (h, w) = level.flops(h, w)
            total += f
        for _, up, _, convs in self.decoder.levels:
            f_up, (h, w) = up.flops(h, w)
            total += f_up + convs.flops(h, w)[0]
        return total + self.decoder.head.flops(h, w)

    def to(self, device: str) -> ConvAutoencoder:
        """Move parameters and gradients to 'cpu' or 'gpu' (create optimizers afterwards)."""
        move = to_numpy if device == "cpu" else array_module(device).asarray
        for _, layer in self.named_layers():
            for d in (layer.params, layer.grads):
                for k in d:
                    d[k] = move(d[k])
        return self
