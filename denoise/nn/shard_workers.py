"""Forked worker processes that each run one shard of a training batch through a model replica.

Why processes and not threads: two threads running whole shards in one process
contend for the GIL between every NumPy call (thousands per step) and for the
process's memory map (page faults, unmaps); see docs/design/training-speed.md
for the step times of both (``benchmarks/train_step.py --parallel
processes|threads``).

Layout: one anonymous shared mapping (``mmap``) created before the fork holds a
copy of the parameters, one gradient block per worker, and one input and
target buffer per worker. Each step the parent copies the parameters (a few
hundred KB) and the workers' shards in, sends each worker one small message
(rows, weight), runs its own shard, and adds the workers' gradient blocks into
the model's. Nothing is pickled: messages are packed structs.

Linux only (``fork``; see :func:`available`); elsewhere DataParallel uses threads.
"""

from __future__ import annotations

import mmap
import multiprocessing
import os
import signal
import struct
import sys
import traceback
import warnings

import numpy as np

from denoise.nn.threads import set_num_threads, shutdown_pool

_REQUEST = struct.Struct("<qd")  # rows in this worker's buffers, weight of its shard in the batch
_REPLY = struct.Struct("<cd")  # b"k", weighted loss; an error is b"e" + its one-line message


def available() -> bool:
    """Whether worker processes can be forked here (Linux; macOS's fork is unsafe with its BLAS)."""
    return sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods()


class ShardWorkers:
    """``n`` forked replicas of ``model``, each taking shards of up to ``rows`` inputs of
    ``image_shape`` and targets of ``target_shape`` (default: the same).

    ``loss_fn`` is fixed at the fork. Call :meth:`close` when done (also run at
    garbage collection; the workers are daemons and exit with the parent).
    """

    def __init__(self, model, loss_fn, n: int, rows: int, image_shape: tuple, target_shape: tuple | None = None):
        self.loss_fn, self.n, self.rows = loss_fn, n, rows
        self.image_shape, self.dtype = tuple(image_shape), model.dtype  # inputs are cast to it, as forward does
        self.target_shape = tuple(target_shape) if target_shape is not None else self.image_shape
        params = model.parameters()
        self.names = list(params)
        shapes = [params[k].shape for k in self.names]
        n_params = sum(int(np.prod(s)) for s in shapes)
        n_input = rows * int(np.prod(self.image_shape))
        n_target = rows * int(np.prod(self.target_shape))
        self._mem = mmap.mmap(-1, (n_params * (1 + n) + n * (n_input + n_target)) * self.dtype.itemsize)
        flat = np.frombuffer(self._mem, dtype=self.dtype)
        blocks = [flat[i * n_params : (i + 1) * n_params] for i in range(1 + n)]
        self.params = _views(blocks[0], self.names, shapes)
        self.grads = [_views(b, self.names, shapes) for b in blocks[1:]]
        io = flat[(1 + n) * n_params :]
        self.inputs = io[: n * n_input].reshape(n, rows, *self.image_shape)
        self.targets = io[n * n_input :].reshape(n, rows, *self.target_shape)
        self._conns, self._procs = [], []
        ctx = multiprocessing.get_context("fork")
        shutdown_pool()  # no idle pool threads to copy into the children
        with warnings.catch_warnings():  # 3.12+ warns on fork with threads; the children only run NumPy
            warnings.simplefilter("ignore", DeprecationWarning)
            for i in range(n):
                parent, child = ctx.Pipe()
                proc = ctx.Process(target=self._serve, args=(i, model, child, parent), daemon=True,
                                   name=f"denoise-shard-{i + 1}")
                proc.start()
                child.close()
                self._conns.append(parent)
                self._procs.append(proc)

    def fits(self, model, loss_fn, n: int, rows: int, image_shape: tuple, target_shape: tuple | None = None) -> bool:
        """Whether these workers can take this step (else the caller forks new ones)."""
        target_shape = tuple(target_shape) if target_shape is not None else tuple(image_shape)
        return (n == self.n and loss_fn is self.loss_fn and rows <= self.rows
                and tuple(image_shape) == self.image_shape and target_shape == self.target_shape
                and model.dtype == self.dtype
                and bool(self._procs) and all(p.is_alive() for p in self._procs))

    def start(self, model, shards: list[tuple]) -> None:
        """Copy the parameters and the workers' shards ``(x, target, weight)`` in; start their steps."""
        live = model.parameters()
        for k in self.names:
            self.params[k][...] = live[k]
        for i, (x, target, weight) in enumerate(shards):
            m = x.shape[0]
            self.inputs[i, :m] = x
            self.targets[i, :m] = target
            self._conns[i].send_bytes(_REQUEST.pack(m, weight))

    def finish(self, model) -> float:
        """Wait for every worker; add their gradients into ``model.gradients()``; their weighted loss."""
        total, errors = 0.0, []
        for i, conn in enumerate(self._conns):
            try:
                reply = conn.recv_bytes()
            except (EOFError, OSError):
                self._procs[i].join(timeout=1)  # for its exit code
                errors.append(f"shard worker {i + 1} died (exit code {self._procs[i].exitcode})")
                continue
            if reply[:1] == b"e":
                errors.append(f"shard worker {i + 1}: {reply[1:].decode(errors='replace')}")
                continue
            total += _REPLY.unpack(reply)[1]
        if errors:
            self.close()
            raise RuntimeError("; ".join(errors))
        grads = model.gradients()
        for block in self.grads:
            for k in self.names:
                grads[k] += block[k]
        return total

    def _serve(self, i: int, model, conn, parent_end) -> None:
        """Worker loop (in the child): a replica on the shared parameters, one shard per request.

        Closes every inherited parent end of the pipes first, so that the parent
        closing its end reaches this loop as end of file.
        """
        from threadpoolctl import threadpool_limits

        from denoise.nn.model import ConvAutoencoder

        for other in [*self._conns, parent_end]:
            other.close()
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it closes us
        set_num_threads(1)
        threadpool_limits(1, user_api="blas")
        replica = ConvAutoencoder(model.config, np.random.default_rng(0), dtype=model.dtype)
        for name, layer in replica.named_layers():
            for k in layer.params:
                layer.params[k] = self.params[f"{name}.{k}"]
                layer.grads[k] = self.grads[i][f"{name}.{k}"]
        while True:
            try:
                rows, weight = _REQUEST.unpack(conn.recv_bytes())
            except (EOFError, OSError):
                os._exit(0)
            try:
                replica.zero_grad()
                loss = weighted_step(replica, self.loss_fn, self.inputs[i, :rows], self.targets[i, :rows], weight)
                conn.send_bytes(_REPLY.pack(b"k", loss))
            except Exception as exc:  # reported by the parent, which stops the workers
                line = traceback.format_exception_only(exc)[-1].strip().replace("\n", " ")
                conn.send_bytes(b"e" + line.encode())

    def close(self) -> None:
        """Stop the workers (closing their pipes ends their loops) and release the mapping."""
        for conn in self._conns:
            conn.close()
        for proc in self._procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
                proc.join()
        self._conns, self._procs = [], []

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def weighted_step(model, loss_fn, x, target, weight: float = 1.0) -> float:
    """Forward and backward of one shard, its loss gradient scaled by ``weight`` (its share of
    the batch); returns the weighted loss. Adds into the model's gradients; no input gradient."""
    loss, grad = loss_fn(model.forward(x), target)
    if weight != 1.0:
        grad *= weight
    model.backward(grad, input_grad=False)
    return float(loss) * weight


def _views(block, names, shapes) -> dict:
    """Named arrays of ``shapes`` laid end to end in ``block``."""
    out, at = {}, 0
    for name, shape in zip(names, shapes, strict=True):
        size = int(np.prod(shape))
        out[name] = block[at : at + size].reshape(shape)
        at += size
    return out
