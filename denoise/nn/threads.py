"""Run independent tiles of work on one Python thread per core, BLAS pinned to 1 thread.

Why: on a 2-core laptop a convolution done as one big im2col copy plus one
2-thread OpenBLAS matmul is slow: NumPy's copies use one core, the matmuls with
only 16-32 output columns reach half of BLAS peak, and the weight-gradient
matmul (inner dimension N*H*W) can stall OpenBLAS's threads. Cutting the work
into tiles whose im2col block stays in cache and running the tiles on a small
thread pool (NumPy releases the GIL in copies and matmuls) is faster; see
docs/design/training-speed.md and ``benchmarks/train_step.py --blas-study``.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from threadpoolctl import ThreadpoolController

_num_threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
_pool: ThreadPoolExecutor | None = None
_controller: ThreadpoolController | None = None
_local = threading.local()  # .inline: this thread runs one shard of run_shards; no nested splitting


def _forget_pool_in_child() -> None:
    """A forked child has none of the parent's worker threads: start a new pool on demand."""
    global _pool
    _pool = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_in_child)


def set_num_threads(n: int) -> None:
    """Use ``n`` worker threads for convolution tiles (1 runs everything inline)."""
    global _num_threads
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"number of threads must be an integer >= 1, got {n!r}")
    shutdown_pool()
    _num_threads = n


def shutdown_pool() -> None:
    """Stop the worker threads (e.g. before a fork); the next split starts new ones."""
    global _pool
    if _pool is not None:
        _pool.shutdown()
        _pool = None


def get_num_threads() -> int:
    """Number of worker threads used for convolution tiles."""
    return _num_threads


def blas_single_thread():
    """Context pinning BLAS to one thread while our own threads share the cores.

    Inside a :func:`run_shards` worker BLAS is already pinned (the limit is
    process-wide), so this is a no-op there.
    """
    global _controller
    if getattr(_local, "inline", False):
        return contextlib.nullcontext()
    if _controller is None:
        _controller = ThreadpoolController()
    return _controller.limit(limits=1, user_api="blas")


def run_split(fn: Callable[[Sequence], Any], tasks: Sequence) -> list:
    """Split ``tasks`` round-robin over the worker threads; return each ``fn(share)``.

    BLAS is pinned to one thread throughout: with its own threads on these small
    tile matmuls OpenBLAS measured 10-20x slower. One thread or one task runs
    ``fn(tasks)`` inline (the CuPy path, tiny arrays).
    """
    n = 1 if getattr(_local, "inline", False) else min(_num_threads, len(tasks))
    with blas_single_thread():
        if n <= 1:
            return [fn(tasks)]
        return list(_get_pool().map(fn, [tasks[i::n] for i in range(n)]))


def run_shards(fn: Callable[[int], Any], n: int) -> list:
    """Run ``fn(0) ... fn(n - 1)`` one per worker thread; return the results in order.

    For data parallelism: each call does a whole share of the work (e.g. a
    shard of the batch through the whole network), so everything in it runs on
    its thread, the element-wise steps too, and :func:`run_split` inside it
    runs inline. BLAS is pinned to one thread once, around all of them.
    """
    if n <= 1 or getattr(_local, "inline", False):
        return [fn(i) for i in range(n)]

    def marked(i):
        with _inline_flag():
            return fn(i)

    with blas_single_thread():
        return list(_get_pool().map(marked, range(n)))


@contextlib.contextmanager
def _inline_flag():
    """Mark this thread as running one shard: splits inside it run inline."""
    before = getattr(_local, "inline", False)
    _local.inline = True
    try:
        yield
    finally:
        _local.inline = before


@contextlib.contextmanager
def inline():
    """Run everything inside on this thread, BLAS pinned to one thread: a shard whose
    sibling shards run elsewhere (other threads or processes) keeps to its own core."""
    with blas_single_thread(), _inline_flag():
        yield


def _get_pool() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(_num_threads, thread_name_prefix="denoise-nn")
    return _pool
