"""Data-parallel training step: one shard of the batch per core, whole network.

Why: splitting every convolution into tiles over the threads
(:func:`denoise.nn.threads.run_split`) leaves the element-wise work (ReLU,
padding, concat, pooling) on one core and meets at a barrier after each of the
~40 convolutions of a step. Running each shard of the batch through the whole
forward and backward pass on its own core parallelizes all of it, with one
meeting per step.

Two ways to run the other shards (the calling thread always runs the first):

- ``"processes"`` (default on Linux): forked workers with model replicas on
  shared memory (:mod:`denoise.nn.shard_workers`), free of the GIL and of one
  process's memory-map contention, so faster than threads.
- ``"threads"`` (elsewhere): replicas that share the parameter arrays (the
  optimizer updates them in place) but keep their own gradients and caches;
  after the shards, the replicas' gradients are added into the model's.

Measurements: docs/design/training-speed.md.
"""

from __future__ import annotations

import numpy as np

from denoise.backend import get_array_module
from denoise.nn import shard_workers
from denoise.nn.model import ConvAutoencoder
from denoise.nn.shard_workers import weighted_step
from denoise.nn.threads import get_num_threads, inline, run_shards

MODES = ("auto", "processes", "threads")


class DataParallel:
    """``forward_backward`` of a :class:`ConvAutoencoder` on a batch, sharded over threads.

    On one thread, a batch of one, or CuPy arrays it is exactly
    ``loss_fn(model.forward(x), target)`` then ``model.backward(grad, input_grad=False)``.
    ``mode``: "auto" (processes where they can be forked, else threads),
    "processes" or "threads". Call :meth:`close` (or use ``with``) to stop
    worker processes early; they also stop with the object or the program.
    """

    def __init__(self, model: ConvAutoencoder, *, mode: str = "auto"):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if mode == "processes" and not shard_workers.available():
            raise ValueError("mode 'processes' needs fork (Linux); use 'threads'")
        self.model = model
        self.mode = mode if mode != "auto" else "processes" if shard_workers.available() else "threads"
        self._replicas: list[ConvAutoencoder] = []
        self._workers: shard_workers.ShardWorkers | None = None

    def close(self) -> None:
        """Stop the worker processes, if any (the next step forks new ones)."""
        if self._workers is not None:
            self._workers.close()
            self._workers = None

    def __enter__(self) -> DataParallel:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _replica(self, i: int) -> ConvAutoencoder:
        while len(self._replicas) < i:
            m = self.model
            rep = ConvAutoencoder(m.config, np.random.default_rng(0), dtype=m.dtype)
            for (_, mine), (_, theirs) in zip(m.named_layers(), rep.named_layers(), strict=True):
                theirs.params = mine.params  # the same dict: sees in-place updates and .to()
                theirs.grads = {k: get_array_module(v).zeros_like(v) for k, v in mine.grads.items()}
            self._replicas.append(rep)
        return self._replicas[i - 1]

    def forward_backward(self, x, target, loss_fn) -> float:
        """Loss of the whole batch; adds its parameter gradients into ``model.gradients()``.

        ``loss_fn(pred, target) -> (mean loss, dloss/dpred)`` must be a mean
        over elements (as :func:`mse_loss` and :func:`l1_loss`): each shard's
        loss and gradient are weighted by its share of the batch.
        """
        n = min(get_num_threads(), x.shape[0])
        if n <= 1 or get_array_module(x) is not np:
            return weighted_step(self.model, loss_fn, x, target)
        bounds = np.linspace(0, x.shape[0], n + 1).round().astype(int)
        shards = [(x[lo:hi], target[lo:hi], (hi - lo) / x.shape[0])  # (x, target, weight)
                  for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]
        if self.mode == "processes":
            return self._in_processes(shards, loss_fn)
        models = [self.model] + [self._replica(i) for i in range(1, n)]
        for rep in models[1:]:
            rep.zero_grad()
        loss = sum(run_shards(lambda i: weighted_step(models[i], loss_fn, *shards[i]), n))
        total = self.model.gradients()
        for rep in models[1:]:
            for k, g in rep.gradients().items():
                total[k] += g
        return loss

    def _in_processes(self, shards: list[tuple], loss_fn) -> float:
        """First shard here, the others in the worker processes (forked on first use)."""
        need = (loss_fn, len(shards) - 1, max(sx.shape[0] for sx, _, _ in shards[1:]), shards[0][0].shape[1:],
                shards[0][1].shape[1:])
        workers = self._workers
        if workers is None or not workers.fits(self.model, *need):
            self.close()
            workers = self._workers = shard_workers.ShardWorkers(self.model, *need)
        try:
            workers.start(self.model, shards[1:])
            with inline():
                loss = weighted_step(self.model, loss_fn, *shards[0])
            return loss + workers.finish(self.model)
        except BaseException:  # this shard's or a worker's error: stop them; the next step forks anew
            self.close()
            raise
