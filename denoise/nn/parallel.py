"""Data-parallel training step: one shard of the batch per worker thread, whole network.

Why: splitting every convolution into tiles over the threads
(:func:`denoise.nn.threads.run_split`) leaves the element-wise work (ReLU,
padding, concat, pooling) on one core and meets at a barrier after each of the
~40 convolutions of a step. Running each shard of the batch through the whole
forward and backward pass on its own thread parallelizes all of it, with one
barrier per step. Measured on the 2-core VM (batch 16 of 64x64, default
architecture): 128 -> 96 ms per step with OpenBLAS's Haswell kernels, 112 -> 96
ms with its SkylakeX ones (``benchmarks/train_step.py``).

Each extra thread gets a replica of the model that shares the parameter arrays
(the optimizer updates them in place) but keeps its own gradients and forward
caches; after the shards, the replicas' gradients are added into the model's.
"""

from __future__ import annotations

import numpy as np

from denoise.backend import get_array_module
from denoise.nn.model import ConvAutoencoder
from denoise.nn.threads import get_num_threads, run_shards


class DataParallel:
    """``forward_backward`` of a :class:`ConvAutoencoder` on a batch, sharded over threads.

    On one thread, a batch of one, or CuPy arrays it is exactly
    ``loss_fn(model.forward(x), target)`` then ``model.backward(grad)``.
    """

    def __init__(self, model: ConvAutoencoder):
        self.model = model
        self._replicas: list[ConvAutoencoder] = []

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
            loss, grad = loss_fn(self.model.forward(x), target)
            self.model.backward(grad)
            return float(loss)
        bounds = np.linspace(0, x.shape[0], n + 1).round().astype(int)
        models = [self.model] + [self._replica(i) for i in range(1, n)]
        for rep in models[1:]:
            rep.zero_grad()

        def shard(i: int) -> float:
            lo, hi = bounds[i], bounds[i + 1]
            weight = (hi - lo) / x.shape[0]
            loss, grad = loss_fn(models[i].forward(x[lo:hi]), target[lo:hi])
            grad *= weight
            models[i].backward(grad)
            return float(loss) * weight

        loss = sum(run_shards(shard, n))
        total = self.model.gradients()
        for rep in models[1:]:
            for k, g in rep.gradients().items():
                total[k] += g
        return loss
