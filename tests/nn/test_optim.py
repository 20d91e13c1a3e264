"""Optimizers against values worked by hand, clipping, state round trips, bad settings."""

import math

import numpy as np
import pytest

from denoise.nn import SGD, Adam, clip_grad_norm


def test_adam_first_two_steps_match_hand_computation():
    p = {"w": np.array([1.0, -2.0])}
    opt = Adam(p, lr=0.1, betas=(0.9, 0.999), eps=1e-8)

    opt.step({"w": np.array([0.5, -1.0])})
    # m = 0.1 g, v = 0.001 g^2; bias-corrected m/sqrt(v) = sign(g): each moves by lr.
    np.testing.assert_allclose(p["w"], [0.9, -1.9], atol=1e-7)

    opt.step({"w": np.array([0.5, 2.0])})
    # second coordinate: m = 0.9 * -0.1 + 0.1 * 2 = 0.11, v = 0.999 * 0.001 + 0.001 * 4 = 0.004999
    m_hat, v_hat = 0.11 / (1 - 0.9**2), 0.004999 / (1 - 0.999**2)
    np.testing.assert_allclose(p["w"], [0.8, -1.9 - 0.1 * m_hat / math.sqrt(v_hat)], atol=1e-7)
    assert opt.step_count == 2


def test_adam_weight_decay_adds_l2_gradient():
    p = {"w": np.array([1.0])}
    Adam(p, lr=0.1, weight_decay=0.5).step({"w": np.array([0.0])})
    np.testing.assert_allclose(p["w"], [0.9], atol=1e-7)  # effective gradient 0.5 * w > 0


def test_sgd_momentum_steps():
    p = {"w": np.array([1.0])}
    opt = SGD(p, lr=0.1, momentum=0.9)
    seen = []
    for _ in range(3):
        opt.step({"w": np.array([1.0])})
        seen.append(p["w"][0])
    # velocity 1, 1.9, 2.71
    np.testing.assert_allclose(seen, [0.9, 0.71, 0.439])


def test_updates_are_in_place_on_the_live_arrays():
    w = np.ones(3, np.float32)
    Adam({"w": w}, lr=0.01).step({"w": np.ones(3, np.float32)})
    assert w.dtype == np.float32 and np.all(w < 1)


def test_lr_is_settable_for_schedules():
    opt = Adam({"w": np.zeros(1)}, lr=1e-3)
    opt.lr = 5e-4
    assert opt.lr == 5e-4
    with pytest.raises(ValueError, match="lr"):
        opt.lr = -1


def test_clip_grad_norm_scales_in_place_and_returns_norm_before():
    grads = {"a": np.array([3.0, 0.0]), "b": np.array([[4.0]])}
    assert clip_grad_norm(grads, 1.0) == pytest.approx(5.0)
    np.testing.assert_allclose(grads["a"], [0.6, 0.0], rtol=1e-5)
    np.testing.assert_allclose(grads["b"], [[0.8]], rtol=1e-5)

    assert clip_grad_norm(grads, 10.0) == pytest.approx(1.0, rel=1e-5)
    np.testing.assert_allclose(grads["a"], [0.6, 0.0], rtol=1e-5)  # below the limit: unchanged


@pytest.mark.parametrize("make", [
    lambda p: Adam(p, lr=0),
    lambda p: Adam(p, lr=float("nan")),
    lambda p: Adam(p, betas=(1.0, 0.999)),
    lambda p: Adam(p, betas=(0.9,)),
    lambda p: Adam(p, eps=0),
    lambda p: Adam(p, weight_decay=-1e-4),
    lambda p: SGD(p, lr=0.1, momentum=1.0),
    lambda p: SGD(p, lr=-0.1),
    lambda p: Adam({}, lr=1e-3),
])
def test_bad_settings_raise_value_error(make):
    with pytest.raises(ValueError):
        make({"w": np.zeros(2)})


def test_clip_and_step_reject_bad_input():
    with pytest.raises(ValueError, match="max_norm"):
        clip_grad_norm({"w": np.ones(2)}, 0)
    with pytest.raises(ValueError, match="missing"):
        Adam({"w": np.zeros(2)}).step({"v": np.zeros(2)})


@pytest.mark.parametrize("kind", [Adam, SGD])
def test_state_dict_round_trip_continues_identically(rng, kind):
    def grads():
        return {"w": rng.standard_normal(4)}

    p1 = {"w": rng.standard_normal(4)}
    opt1 = kind(p1, lr=0.05)
    for _ in range(3):
        opt1.step(grads())
    p2 = {"w": p1["w"].copy()}
    opt2 = kind(p2, lr=0.9)  # hyper-parameters come back from the state too
    opt2.load_state_dict(opt1.state_dict())

    g = grads()
    opt1.step(g)
    opt2.step(g)
    np.testing.assert_array_equal(p1["w"], p2["w"])
    assert opt2.step_count == 4 and opt2.lr == 0.05


def test_load_state_dict_rejects_other_optimizer_and_shapes():
    adam = Adam({"w": np.zeros(2)})
    with pytest.raises(ValueError, match="sgd"):
        adam.load_state_dict(SGD({"w": np.zeros(2)}, lr=0.1).state_dict())
    with pytest.raises(ValueError, match="shape"):
        adam.load_state_dict(Adam({"w": np.zeros(3)}).state_dict())
