"""Time one training step (forward + backward + Adam) and one 512x512 inference.

Runs the default architecture (or ``--arch`` overrides) on a batch of patches
in float32 NumPy and prints ms/step, GFLOP/s and inference seconds. If PyTorch
is installed it builds the identical network with the same weights (checked:
same output), times it on the same CPU threads, NCHW and channels-last, and
prints the ratios. PyTorch is never a dependency of the package.

    python benchmarks/train_step.py                     # batch 16 of 64x64
    python benchmarks/train_step.py --batch 32 --patch 96 --threads 2
    python benchmarks/train_step.py --parallel threads  # shards on threads, not worker processes
    python benchmarks/train_step.py --blas-study        # weight-gradient matmul variants
    python benchmarks/train_step.py --gemm-floor        # the step's convolution matmuls alone

The header names OpenBLAS's kernel set (``architecture``); an ``OPENBLAS_CORETYPE``
variable in the environment (this project's VMs set Haswell) overrides OpenBLAS's
own CPU detection and changes the NumPy figures by up to 1.6x.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

from denoise.nn import (
    DEFAULT_ARCH,
    Adam,
    ConvAutoencoder,
    DataParallel,
    conv,
    get_num_threads,
    mse_loss,
    set_num_threads,
)
from denoise.nn.threads import run_shards


def timed(fn, *, warmup: int, repeats: int) -> tuple[float, float]:
    """(median, max) seconds of ``fn()`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), float(max(times))


def numpy_step(model, opt, x, target, *, parallel: DataParallel | None):
    """One training step as pipelines/train.py runs it (batch shards over the cores), or with
    only the convolutions split into tiles over the threads (``parallel=None``)."""

    def step():
        model.zero_grad()
        if parallel is not None:
            parallel.forward_backward(x, target, mse_loss)
        else:
            _, dy = mse_loss(model.forward(x), target)
            model.backward(dy, input_grad=False)
        opt.step(model.gradients())
    return step


def torch_mirror(model):
    """The same network in PyTorch (NCHW), with this model's weights copied in."""
    import torch
    from torch import nn

    from denoise.nn import activations as A
    from denoise.nn import layers as L
    from denoise.nn.upconv import UpsampleConv2d

    def with_weights(m, layer):
        with torch.no_grad():
            w = np.ascontiguousarray(layer.params["weight"].transpose(3, 2, 0, 1))
            m.weight.copy_(torch.from_numpy(w))
            m.bias.copy_(torch.from_numpy(layer.params["bias"]))
        return m

    def convert(layer):
        w = layer.params.get("weight")
        if isinstance(layer, UpsampleConv2d):  # one fused layer here, two in torch
            k = layer.kernel_size
            conv = with_weights(nn.Conv2d(w.shape[2], w.shape[3], k, 1, k // 2), layer)
            return nn.Sequential(nn.Upsample(scale_factor=2), conv)
        if isinstance(layer, L.Conv2d):
            mode = "zeros" if layer.padding_mode == "zero" else "reflect"
            return with_weights(nn.Conv2d(w.shape[2], w.shape[3], layer.kernel_size, layer.stride,
                                          layer.padding, padding_mode=mode), layer)
        if isinstance(layer, L.ConvTranspose2d):
            return with_weights(nn.ConvTranspose2d(w.shape[3], w.shape[2], layer.kernel_size, layer.stride,
                                                   layer.padding, layer.output_padding), layer)
        atan = type("Atan", (nn.Module,), {"forward": lambda self, x: torch.atan(x)})
        return {L.MeanPool2d: lambda: nn.AvgPool2d(layer.size),
                L.Upsample2d: lambda: nn.Upsample(scale_factor=layer.factor),
                A.ReLU: nn.ReLU, A.Tanh: nn.Tanh, A.Sigmoid: nn.Sigmoid, A.Arctan: atan,
                A.LeakyReLU: lambda: nn.LeakyReLU(layer.slope)}[type(layer)]()

    def seq(layers):
        return nn.Sequential(*[convert(layer) for _, layer in layers])

    class Mirror(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = nn.ModuleList(seq(level.layers) for level in model.encoder.levels)
            self.ups = nn.ModuleList(seq(up.layers) for _, up, _, _ in model.decoder.levels)
            self.convs = nn.ModuleList(seq(convs.layers) for _, _, _, convs in model.decoder.levels)
            self.head = convert(model.decoder.head)

        def forward(self, x):
            feats, h = [], x
            for level in self.enc:
                h = level(h)
                feats.append(h)
            for (lvl, _, merge, _), up, convs in zip(model.decoder.levels, self.ups, self.convs, strict=True):
                h = up(h)
                if isinstance(merge, L.Add):
                    h = h + feats[lvl]
                elif isinstance(merge, L.Concat):
                    h = torch.cat([h, feats[lvl]], 1)
                h = convs(h)
            y = self.head(h)
            return x - y if model.config["residual"] else y

    return Mirror()


def time_torch(net, x, target, slice_512, *, layout: str, args) -> tuple[float, float]:
    """(train step s, inference s) of the torch network in one memory layout."""
    import torch

    fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    net = net.to(memory_format=fmt)
    xt, tt, st = (torch.from_numpy(a).permute(0, 3, 1, 2).contiguous(memory_format=fmt)
                  for a in (x, target, slice_512))
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)

    def step():
        opt.zero_grad()
        torch.nn.functional.mse_loss(net(xt), tt).backward()
        opt.step()

    def infer():
        with torch.inference_mode():
            net(st)

    return timed(step, warmup=args.warmup, repeats=args.repeats)[0], timed(infer, warmup=1, repeats=3)[0]


def bench_torch(model, x, target, slice_512, args) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    net = torch_mirror(model)
    with torch.no_grad():
        out = net(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
    print(f"torch mirror max |output difference| vs NumPy: {np.abs(out - model.predict(x)).max():.2e}")
    return {layout: time_torch(net, x, target, slice_512, layout=layout, args=args)
            for layout in ("nchw", "channels_last")}


def blas_study(model, args):
    """Weight-gradient matmul of the largest full-resolution conv, several ways."""
    rng = np.random.default_rng(0)
    c_in = max(layer.params["weight"].shape[2] for name, layer in model.named_layers()
               if name.startswith("decoder.0") and "weight" in layer.params)
    n, hw = args.batch, args.patch
    x = rng.standard_normal((n, hw + 2, hw + 2, c_in), dtype=np.float32)
    dy = rng.standard_normal((n, hw, hw, 16), dtype=np.float32)
    cols = np.ascontiguousarray(conv.windows(x, 3, 3)).reshape(n * hw * hw, -1)
    d2 = dy.reshape(-1, 16)
    chunks = np.array_split(np.arange(cols.shape[0]), 8)
    print(f"\nBLAS study: dW for cols {cols.shape} x dy {d2.shape} (median / max ms of 15)")
    variants = {
        "cols.T @ dy": lambda: cols.T @ d2,
        "dy.T @ cols": lambda: d2.T @ cols,
        "8 chunks of cols.T @ dy, summed": lambda: sum(cols[c].T @ d2[c] for c in chunks),
    }
    for name, fn in variants.items():
        for blas_threads in (1, 2):
            with threadpool_limits(blas_threads, user_api="blas"):
                med, mx = timed(fn, warmup=2, repeats=15)
            print(f"  {name:34s} BLAS threads {blas_threads}: {med * 1e3:7.2f} / {mx * 1e3:7.2f}")
    for workers in (1, args.threads):
        set_num_threads(workers)
        med, mx = timed(lambda: conv.conv2d_weight_grad(x, dy, kernel_size=3), warmup=2, repeats=15)
        print(f"  tiled conv2d_weight_grad (im2col incl.) {workers} worker(s), BLAS 1: "
              f"{med * 1e3:7.2f} / {mx * 1e3:7.2f}")
    set_num_threads(args.threads)


def record_convolutions(model, x, target) -> list[list[tuple]]:
    """The ``conv._conv_tiles`` calls of one data-parallel step, per worker thread, with copies of their arrays."""
    calls: dict[int, list[tuple]] = {}
    original = conv._conv_tiles

    def recording(a, kh, kw, stride, *, w=None, b=None, grad_of=None):
        copies = tuple(None if v is None else v.copy() for v in (a, w, b, grad_of))
        calls.setdefault(threading.get_ident(), []).append((kh, kw, stride, *copies))
        return original(a, kh, kw, stride, w=w, b=b, grad_of=grad_of)

    conv._conv_tiles = recording
    try:
        model.zero_grad()
        DataParallel(model, mode="threads").forward_backward(x, target, mse_loss)  # every shard seen here
    finally:
        conv._conv_tiles = original
    return list(calls.values())


def matmuls_only(kh, kw, stride, a, w, b, grad_of) -> None:
    """The matmuls ``conv._conv_tiles`` runs for these arguments, on a constant im2col buffer (no copy)."""
    plan = conv._Plan(a, kh, kw, stride)
    buf = np.ones(plan.buffer_size, dtype=a.dtype)
    k = plan.win[0, 0, 0].size
    if w is not None:
        y = np.empty((a.shape[0], plan.ho, plan.wo, w.shape[3]), dtype=a.dtype)
        wg = w.reshape(plan.groups, -1, w.shape[3])
    if grad_of is not None:
        g_acc = np.zeros((plan.groups, k, grad_of.shape[3]), dtype=a.dtype)
    for n0, n1, r0, r1 in plan.tiles:
        cols_all = buf[: (n1 - n0) * (r1 - r0 + plan.groups - 1) * plan.wo * k].reshape(-1, k)
        p = (n1 - n0) * (r1 - r0) * plan.wo
        for g in range(plan.groups):
            cols = cols_all[g * plan.wo : g * plan.wo + p]
            if w is not None:
                out = y[n0:n1, r0:r1].reshape(-1, w.shape[3])
                if g == 0:
                    np.matmul(cols, wg[0], out=out)
                else:
                    out += cols @ wg[g]
            if grad_of is not None:
                g_acc[g] += cols.T @ grad_of[n0:n1, r0:r1].reshape(-1, grad_of.shape[3])


def gemm_floor(model, x, target, args) -> tuple[float, float]:
    """(convolutions alone, their matmuls alone) in seconds: replays one step's convolutions
    per thread, as the step runs them, once with and once without the im2col copies.

    The matmuls alone are the floor of the im2col + BLAS design: what the step would take
    if everything else (copies, element-wise layers, Adam) cost nothing.
    """
    per_thread = record_convolutions(model, x, target)

    def replay(fn):
        def shard(i):
            for kh, kw, stride, a, w, b, grad_of in per_thread[i]:
                fn(kh, kw, stride, a, w, b, grad_of)
        return lambda: run_shards(shard, len(per_thread))

    def full(kh, kw, stride, a, w, b, grad_of):
        conv._conv_tiles(a, kh, kw, stride, w=w, b=b, grad_of=grad_of)

    with threadpool_limits(1, user_api="blas"):  # as in the step: one BLAS thread per worker
        return (timed(replay(full), warmup=args.warmup, repeats=args.repeats)[0],
                timed(replay(matmuls_only), warmup=args.warmup, repeats=args.repeats)[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--patch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--arch", type=json.loads, default={}, help='JSON overrides, e.g. \'{"skip": "concat"}\'')
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--parallel", choices=["auto", "processes", "threads"], default="auto",
                    help="how DataParallel runs the other batch shards (auto: processes on Linux)")
    ap.add_argument("--tiles-only", action="store_true",
                    help="split only the convolutions over the threads, not the batch (the pre-DataParallel step)")
    ap.add_argument("--blas-study", action="store_true")
    ap.add_argument("--gemm-floor", action="store_true",
                    help="also time the step's convolutions alone and their matmuls alone (no im2col copies)")
    args = ap.parse_args()

    set_num_threads(args.threads)
    model = ConvAutoencoder({**DEFAULT_ARCH, **args.arch}, np.random.default_rng(0))
    rng = np.random.default_rng(1)
    x = rng.random((args.batch, args.patch, args.patch, 1), dtype=np.float32)
    target = x * 0.9
    slice_512 = rng.random((1, 512, 512, 1), dtype=np.float32)
    # The kernel set matters: OpenBLAS's Haswell (AVX2) kernels measured 1.4-1.6x slower than its
    # SkylakeX (AVX-512) ones on a Zen 5 VM; OPENBLAS_CORETYPE in the environment overrides the detection.
    blas = [f"{i['internal_api']} {i['version']} {i.get('architecture', '?')} kernels ({i['num_threads']} threads)"
            for i in threadpool_info() if i["user_api"] == "blas"]
    print(f"architecture: {json.dumps(model.config)}")
    print(f"load average {os.getloadavg()[0]:.2f}; NumPy {np.__version__}, BLAS {', '.join(blas)}; "
          f"NumPy conv worker threads {get_num_threads()}, BLAS pinned to 1 inside tiles")

    flops_train = 3 * model.flops(args.patch, args.patch) * args.batch  # forward, dX, dW
    parallel = None if args.tiles_only else DataParallel(model, mode=args.parallel)
    step_fn = numpy_step(model, Adam(model.parameters(), lr=1e-4), x, target, parallel=parallel)
    step_s, step_max = timed(step_fn, warmup=args.warmup, repeats=args.repeats)
    if parallel is not None:
        parallel.close()
    if args.gemm_floor:
        conv_s, gemm_s = gemm_floor(model, x, target, args)
    infer_s = timed(lambda: model.predict(slice_512), warmup=1, repeats=3)[0]
    split = ("one thread" if get_num_threads() == 1 else "convolution tiles" if args.tiles_only
             else f"batch shards (DataParallel, {parallel.mode})")
    print(f"\nNumPy  train step (batch {args.batch} x {args.patch}^2, {split}): {step_s * 1e3:7.1f} ms "
          f"(max {step_max * 1e3:.1f}), {flops_train / step_s / 1e9:5.1f} GFLOP/s "
          f"[{flops_train / 1e9:.2f} GFLOP/step]")
    if args.gemm_floor:
        print(f"       of which convolutions (im2col + matmul) {conv_s * 1e3:7.1f} ms, "
              f"their matmuls alone {gemm_s * 1e3:7.1f} ms ({flops_train / gemm_s / 1e9:5.1f} GFLOP/s)")
    print(f"NumPy  inference 512x512: {infer_s:.3f} s, "
          f"{model.flops(512, 512) / infer_s / 1e9:5.1f} GFLOP/s [{model.flops(512, 512) / 1e9:.2f} GFLOP]")

    if not args.no_torch:
        try:
            import torch
        except ImportError:
            print("PyTorch not installed: no comparison")
        else:
            for layout, (t_step, t_inf) in bench_torch(model, x, target, slice_512, args).items():
                floor = f", matmuls alone/torch {gemm_s / t_step:4.2f}x" if args.gemm_floor else ""
                print(f"torch {torch.__version__} {layout:13s} ({torch.get_num_threads()} threads): "
                      f"train {t_step * 1e3:7.1f} ms, NumPy/torch {step_s / t_step:4.2f}x{floor}; "
                      f"inference {t_inf:.3f} s, NumPy/torch {infer_s / t_inf:4.2f}x")
    if args.blas_study:
        blas_study(model, args)


if __name__ == "__main__":
    main()
