"""Model files: exact round trip, resumable optimizer, and clean refusal of bad files."""

import io
import json
import zipfile

import numpy as np
import pytest

from denoise.nn import Adam, ConvAutoencoder, ModelFileError, load_model, mse_loss, save_model

UNPICKLED = []


def _mark_unpickled():
    UNPICKLED.append(True)


class Payload:
    """Unpickling this would call _mark_unpickled: the loader must never do it."""

    def __reduce__(self):
        return (_mark_unpickled, ())


def _train_steps(model, opt, rng, n):
    for _ in range(n):
        x = rng.random((2, 8, 8, 1), dtype=np.float32)
        model.zero_grad()
        _, dy = mse_loss(model.forward(x), x * 0.5)
        model.backward(dy)
        opt.step(model.gradients())


@pytest.fixture
def saved(tmp_path, rng):
    """A small trained model with its Adam state saved as tmp_path/model.{npz,json}."""
    model = ConvAutoencoder({"channels": [4, 8], "skip": "concat"}, rng)
    opt = Adam(model.parameters(), lr=1e-3, weight_decay=1e-5)
    _train_steps(model, opt, rng, 2)
    save_model(tmp_path / "model", model, optimizer=opt,
               metadata={"normalization": {"hu_low": -1000, "hu_high": 1000}, "epoch": 3})
    return tmp_path / "model", model, opt


def test_round_trip_predicts_bit_identically(saved, rng):
    path, model, _ = saved
    loaded, metadata, _ = load_model(path.with_suffix(".npz"))  # suffix optional
    x = rng.random((1, 13, 10, 1), dtype=np.float32)

    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    assert loaded.config == model.config
    assert metadata == {"normalization": {"hu_low": -1000, "hu_high": 1000}, "epoch": 3}
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.json", "model.npz"]  # no temp files


def test_resumed_training_step_equals_uninterrupted_run(saved):
    path, model, opt = saved
    loaded, _, state = load_model(path)
    resumed = Adam(loaded.parameters())
    resumed.load_state_dict(state)

    _train_steps(model, opt, np.random.default_rng(7), 1)
    _train_steps(loaded, resumed, np.random.default_rng(7), 1)

    for name, p in model.parameters().items():
        np.testing.assert_array_equal(loaded.parameters()[name], p, err_msg=name)
    assert resumed.step_count == 3 and resumed.weight_decay == 1e-5


def test_model_without_optimizer_has_no_state(tmp_path, rng):
    save_model(tmp_path / "m", ConvAutoencoder({"channels": [2]}, rng))
    assert load_model(tmp_path / "m")[2] is None


def test_save_rejects_unserializable_metadata(tmp_path, rng):
    with pytest.raises(ValueError, match="JSON"):
        save_model(tmp_path / "m", ConvAutoencoder({"channels": [2]}, rng), metadata={"a": object()})
    assert not list(tmp_path.iterdir())


def _rewrite_npz(path, change):
    with np.load(path.with_suffix(".npz"), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    change(arrays)
    np.savez(path.with_suffix(".npz"), **arrays)


def _assert_refused(path, match, file_suffix):
    with pytest.raises(ModelFileError, match=match) as info:
        load_model(path)
    message = str(info.value)
    assert str(path.with_suffix(file_suffix)) in message and "\n" not in message
    assert isinstance(info.value, ValueError)


def test_refuses_missing_file(tmp_path):
    _assert_refused(tmp_path / "nothing", "not found", ".json")


HEAD_BIAS = "param/decoder.head.bias"


@pytest.mark.parametrize("change,match", [
    (lambda a: a.update({HEAD_BIAS: np.zeros(2, np.float32)}), "expected"),
    (lambda a: a.update({HEAD_BIAS: a[HEAD_BIAS].astype(np.float64)}), "float64"),
    (lambda a: a.pop("param/encoder.0.conv0.weight"), "missing"),
    (lambda a: a.update({"param/extra": np.zeros(1, np.float32)}), "extra"),
    (lambda a: a.pop("optim/m/decoder.head.bias"), "missing"),
])
def test_refuses_arrays_that_do_not_match(saved, change, match):
    path, _, _ = saved
    _rewrite_npz(path, change)
    _assert_refused(path, match, ".npz")


def test_refuses_object_array(saved):
    path, _, _ = saved
    _rewrite_npz(path, lambda a: a.update({"param/decoder.head.bias": np.array([None, 1], dtype=object)}))
    _assert_refused(path, "unsafe", ".npz")


def test_refuses_pickle_payload_without_running_it(saved):
    path, _, _ = saved
    npz = path.with_suffix(".npz")
    with zipfile.ZipFile(npz) as z:
        entries = {name: z.read(name) for name in z.namelist()}
    buf = io.BytesIO()
    np.save(buf, np.array([Payload()], dtype=object), allow_pickle=True)
    entries["param/decoder.head.bias.npy"] = buf.getvalue()
    with zipfile.ZipFile(npz, "w") as z:
        for name, data in entries.items():
            z.writestr(name, data)

    _assert_refused(path, "unsafe", ".npz")
    assert not UNPICKLED


def test_refuses_garbage_npz(saved):
    path, _, _ = saved
    path.with_suffix(".npz").write_bytes(b"not a zip archive")
    _assert_refused(path, "unsafe|not an .npz", ".npz")


@pytest.mark.parametrize("edit,match", [
    (lambda text: text[:-5], "not valid JSON"),
    (lambda text: text.replace('"format"', '"formt"'), "not a ct-denoise"),
    (lambda text: json.dumps({**json.loads(text), "architecture": {"channels": [4, 9], "skip": "concat"}}),
     "parameters do not match|needs"),
    (lambda text: json.dumps({**json.loads(text), "architecture": {"channels": "four"}}), "bad architecture"),
])
def test_refuses_bad_json(saved, edit, match):
    path, _, _ = saved
    json_path = path.with_suffix(".json")
    json_path.write_text(edit(json_path.read_text()))
    _assert_refused(path, match, ".json")


def test_refuses_weights_and_description_from_different_saves(tmp_path, rng):
    """A kill between replacing the .npz and the .json must not mix two saves."""
    from denoise.nn import ConvAutoencoder, ModelFileError, load_model, save_model

    model = ConvAutoencoder({"channels": [4, 8]}, rng)
    save_model(tmp_path / "a", model, metadata={"epoch": 1})
    old_json = (tmp_path / "a.json").read_bytes()
    next(iter(model.parameters().values()))[...] += 1.0
    save_model(tmp_path / "a", model, metadata={"epoch": 2})
    (tmp_path / "a.json").write_bytes(old_json)  # what the disk holds if killed between the renames
    with pytest.raises(ModelFileError, match="different saves"):
        load_model(tmp_path / "a")
