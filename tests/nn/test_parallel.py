"""DataParallel: batch shards on worker processes or threads give the plain step's loss and gradients."""

import os

import numpy as np
import pytest

from denoise.nn import Adam, ConvAutoencoder, DataParallel, l1_loss, mse_loss, shard_workers
from denoise.nn.threads import get_num_threads, run_shards, set_num_threads

ARCH = {"channels": [4, 8], "skip": "concat", "residual": True}
needs_fork = pytest.mark.skipif(not shard_workers.available(), reason="worker processes need fork (Linux)")
MODES = [pytest.param("processes", marks=needs_fork), "threads"]


@pytest.fixture
def threads():
    before = get_num_threads()
    yield set_num_threads
    set_num_threads(before)


def assert_grads_match(model, grads_ref):
    for k, g in model.gradients().items():
        np.testing.assert_allclose(g, grads_ref[k], rtol=1e-10, atol=1e-14, err_msg=k)


@pytest.fixture
def in_processes(threads):
    """(float64 model, its DataParallel on 2 worker processes); the workers are stopped after."""
    threads(2)
    model = ConvAutoencoder(ARCH, np.random.default_rng(0), dtype=np.float64)
    parallel = DataParallel(model, mode="processes")
    yield model, parallel
    parallel.close()


def plain_loss_and_grads(model, x, target, loss_fn):
    model.zero_grad()
    loss, grad = loss_fn(model.forward(x), target)
    model.backward(grad)
    return loss, {k: v.copy() for k, v in model.gradients().items()}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("n_threads,batch", [(2, 5), (3, 4), (2, 1)])
@pytest.mark.parametrize("loss_fn", [mse_loss, l1_loss])
def test_sharded_step_matches_plain_step(threads, rng, n_threads, batch, loss_fn, mode):
    # Uneven shards (5 over 2 threads, 4 over 3) must be weighted by their share of the batch.
    model = ConvAutoencoder(ARCH, np.random.default_rng(0), dtype=np.float64)
    x = rng.random((batch, 8, 12, 1))
    target = rng.random((batch, 8, 12, 1))
    threads(1)
    loss_ref, grads_ref = plain_loss_and_grads(model, x, target, loss_fn)

    threads(n_threads)
    model.zero_grad()
    with DataParallel(model, mode=mode) as parallel:
        loss = parallel.forward_backward(x, target, loss_fn)

    assert loss == pytest.approx(loss_ref, rel=1e-12)
    assert_grads_match(model, grads_ref)


@pytest.mark.parametrize("mode", MODES)
def test_sharded_step_with_level_maps_in_and_one_channel_out(threads, rng, mode):
    # A noise-level-input model: 3 input channels, 1-channel targets (separate shared buffers).
    model = ConvAutoencoder({**ARCH, "noise_level_input": True}, np.random.default_rng(0), dtype=np.float64)
    x, target = rng.random((5, 8, 8, 3)), rng.random((5, 8, 8, 1))
    threads(1)
    loss_ref, grads_ref = plain_loss_and_grads(model, x, target, mse_loss)
    threads(2)
    model.zero_grad()
    with DataParallel(model, mode=mode) as parallel:
        loss = parallel.forward_backward(x, target, mse_loss)
    assert loss == pytest.approx(loss_ref, rel=1e-12)
    assert_grads_match(model, grads_ref)


@pytest.mark.parametrize("mode", MODES)
def test_replicas_follow_optimizer_updates_and_keep_own_gradients(threads, rng, mode):
    # The replica must see the optimizer's in-place update: a second step equals a plain second step.
    threads(2)
    x, target = rng.random((4, 8, 8, 1)), rng.random((4, 8, 8, 1))
    models = [ConvAutoencoder(ARCH, np.random.default_rng(0), dtype=np.float64) for _ in range(2)]
    parallel = DataParallel(models[0], mode=mode)
    opts = [Adam(m.parameters(), lr=1e-2) for m in models]
    for _ in range(2):
        models[0].zero_grad()
        loss = parallel.forward_backward(x, target, mse_loss)
        opts[0].step(models[0].gradients())
        loss_ref, grads_ref = plain_loss_and_grads(models[1], x, target, mse_loss)
        opts[1].step(models[1].gradients())
        assert loss == pytest.approx(loss_ref, rel=1e-12)
    for k, p in models[0].parameters().items():
        np.testing.assert_allclose(p, models[1].parameters()[k], rtol=1e-10, atol=1e-13, err_msg=k)
    if mode == "threads":
        replica = parallel._replica(1)
        assert replica.parameters()["decoder.head.weight"] is models[0].parameters()["decoder.head.weight"]
        assert replica.gradients()["decoder.head.weight"] is not models[0].gradients()["decoder.head.weight"]
    parallel.close()


def only_in_workers(action):
    """A loss that runs ``action()`` in the worker processes and is mse_loss in this one."""
    parent = os.getpid()

    def loss(pred, target):
        if os.getpid() != parent:
            action()
        return mse_loss(pred, target)
    return loss


def raise_value_error():
    raise ValueError("bad\nshard")


def raise_eof_error():
    raise EOFError


@needs_fork
def test_worker_processes_report_errors_refork_for_new_shapes_and_stop_on_close(in_processes, rng):
    model, parallel = in_processes
    x = rng.random((4, 8, 8, 1))
    with pytest.raises(RuntimeError, match=r"^shard worker 1: ValueError: bad shard$"):
        parallel.forward_backward(x, x, only_in_workers(raise_value_error))
    assert parallel._workers is None  # stopped after the error; the next step forks new workers
    with pytest.raises(RuntimeError, match=r"^shard worker 1: EOFError$"):  # as long as a loss reply
        parallel.forward_backward(x, x, only_in_workers(raise_eof_error))

    for shape in [(4, 8, 8, 1), (6, 16, 8, 1), (2, 8, 8, 1)]:  # bigger shards and new sizes re-fork
        x, target = rng.random(shape), rng.random(shape)
        loss_ref, grads_ref = plain_loss_and_grads(model, x, target, mse_loss)
        model.zero_grad()
        assert parallel.forward_backward(x, target, mse_loss) == pytest.approx(loss_ref, rel=1e-12)
        assert_grads_match(model, grads_ref)
    procs = list(parallel._workers._procs)
    assert procs and all(p.is_alive() for p in procs)
    parallel.close()
    assert not any(p.is_alive() for p in procs)


@needs_fork
def test_a_worker_that_dies_is_reported_and_replaced(in_processes, rng):
    model, parallel = in_processes
    x = rng.random((4, 8, 8, 1))
    with pytest.raises(RuntimeError, match=r"shard worker 1 died \(exit code 3\)"):
        parallel.forward_backward(x, x, only_in_workers(lambda: os._exit(3)))
    parallel.forward_backward(x, x, mse_loss)
    first = parallel._workers._procs[0]
    first.kill()  # killed between steps: the next step forks a new worker
    first.join()
    loss_ref, _ = plain_loss_and_grads(model, x, x, mse_loss)
    assert parallel.forward_backward(x, x, mse_loss) == pytest.approx(loss_ref, rel=1e-12)
    assert parallel._workers._procs[0] is not first


def test_mode_is_checked():
    model = ConvAutoencoder(ARCH, np.random.default_rng(0))
    with pytest.raises(ValueError, match="mode must be one of"):
        DataParallel(model, mode="gpu")


def test_run_shards_runs_every_shard_once_and_nested_splits_inline(threads):
    from denoise.nn import threads as T

    threads(2)
    seen = []

    def shard(i):
        inner = T.run_split(lambda share: list(share), list(range(6)))
        seen.append(i)
        return i * 10, len(inner)

    assert run_shards(shard, 3) == [(0, 1), (10, 1), (20, 1)]  # one inline share inside a shard
    assert sorted(seen) == [0, 1, 2]
    assert len(T.run_split(lambda share: list(share), list(range(6)))) == 2  # outside: split again
