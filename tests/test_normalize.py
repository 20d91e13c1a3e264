"""HU <-> model space: affine, unclipped, exactly invertible."""

import numpy as np
import pytest

from denoise.normalize import HUWindow


def test_window_maps_to_unit_interval():
    w = HUWindow(-1000, 1000)
    assert np.allclose(w.to_model(np.array([-1000.0, 0.0, 1000.0])), [0.0, 0.5, 1.0])


def test_round_trip_is_tight_in_float32_and_exact_after_rounding():
    w = HUWindow(-160, 240)
    hu = np.linspace(-3024, 3071, 10_001)
    back = w.to_hu(w.to_model(hu))
    assert back.dtype == np.float32
    # float32 keeps 24 bits: within a thousandth of a HU over the CT range
    assert np.max(np.abs(back - hu)) < 1e-3
    integers = np.arange(-3024, 3072, dtype=np.float64)  # every stored CT value
    assert np.array_equal(np.rint(w.to_hu(w.to_model(integers))), integers)


def test_values_outside_the_window_are_not_clipped():
    w = HUWindow()  # -1000..1000
    hu = np.array([-3024.0, -2000.0, 1800.0, 3071.0])
    x = w.to_model(hu)
    assert x[0] < 0 and x[-1] > 1  # outside [0, 1], order kept
    assert np.all(np.diff(x) > 0)
    assert np.allclose(w.to_hu(x), hu)


def test_bad_windows_are_refused():
    with pytest.raises(ValueError, match="low < high"):
        HUWindow(100, 100)
    with pytest.raises(ValueError, match="finite"):
        HUWindow(-np.inf, 0)


def test_serialises_to_plain_dict():
    w = HUWindow(-500, 1500)
    assert HUWindow.from_dict(w.to_dict()) == w
    with pytest.raises(ValueError, match="unknown normalization"):
        HUWindow.from_dict({"kind": "log", "low": 0, "high": 1})


def test_sigma_in_model_units():
    assert HUWindow(-1000, 1000).sigma_to_model(50) == pytest.approx(0.025)


def test_apply_feeds_the_clipped_input_and_keeps_out_of_range_values():
    from denoise.normalize import HUWindow

    w = HUWindow(-1000.0, 1000.0, margin=0.25)
    hu = np.array([[-3024.0, -1000.0, 40.0, 1400.0, 3071.0]], dtype=np.float32)
    x = w.to_model(hu)
    seen = []

    def predict(c):
        seen.append(c.copy())
        return c - np.float32(0.01)  # "removes" 20 HU everywhere

    out = w.to_hu(w.apply(predict, x))
    assert seen[0].min() == pytest.approx(-0.25) and seen[0].max() == pytest.approx(1.25)
    np.testing.assert_allclose(out, hu - 20.0, atol=1e-3)  # padding and metal keep their magnitude
    assert HUWindow.from_dict(w.to_dict()) == w
    with pytest.raises(ValueError, match="margin"):
        HUWindow(margin=-1)
