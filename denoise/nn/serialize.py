"""Save and load a model as ``<stem>.npz`` (arrays) + ``<stem>.json`` (everything else).

The .npz holds only numeric arrays and is read with ``allow_pickle=False``, so
a crafted file cannot run code. The JSON holds the architecture, the name,
shape and dtype of every array (checked on load), the optimizer's kind,
hyper-parameters and step, and the caller's ``metadata`` verbatim
(normalization, training info). Both files are written atomically.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np

from denoise.atomic import atomic_path
from denoise.backend import to_numpy
from denoise.hashing import sha256_file
from denoise.nn.model import ConvAutoencoder, validate_config
from denoise.nn.optim import OPTIMIZERS

FORMAT = "ct-denoise.nn/1"


class ModelFileError(ValueError):
    """A model file pair is missing, malformed or does not match its architecture."""


def model_paths(path) -> tuple[Path, Path]:
    """(``<stem>.npz``, ``<stem>.json``) for ``path`` given with or without ``.npz``."""
    path = Path(path)
    stem = path.with_name(path.name[: -len(".npz")]) if path.name.endswith(".npz") else path
    return stem.with_name(stem.name + ".npz"), stem.with_name(stem.name + ".json")


def _atomic_write(path: Path, write) -> None:
    """Write via a temp file in the same folder + ``os.replace``: never a half file."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        write(f)


def _spec(a) -> dict:
    return {"shape": list(a.shape), "dtype": str(a.dtype)}


def save_model(path, model: ConvAutoencoder, *, optimizer=None, metadata: dict | None = None) -> Path:
    """Write ``<stem>.npz`` (``param/<name>``, ``optim/<buffer>/<name>``) and ``<stem>.json``.

    Returns the .npz path. ``metadata`` must be JSON-serializable; it is stored verbatim.
    """
    npz_path, json_path = model_paths(path)
    if metadata is not None and not isinstance(metadata, dict):
        raise ValueError(f"metadata must be a dict or None, got {type(metadata).__name__}")
    params = {k: to_numpy(v) for k, v in model.parameters().items()}
    arrays = {f"param/{k}": v for k, v in params.items()}
    doc = {"format": FORMAT, "architecture": model.config, "dtype": str(model.dtype),
           "parameters": {k: _spec(v) for k, v in params.items()}, "optimizer": None,
           "metadata": metadata or {}}
    if optimizer is not None:
        if optimizer.params.keys() != params.keys():
            raise ValueError("optimizer was not built on this model's parameters()")
        state = optimizer.state_dict()
        doc["optimizer"] = {k: state[k] for k in ("kind", "hyperparams", "step")}
        for b, bufs in state["buffers"].items():
            arrays.update({f"optim/{b}/{k}": v for k, v in bufs.items()})
    try:
        text = json.dumps(doc, indent=2, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"metadata is not JSON-serializable: {exc}") from exc
    npz_path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(npz_path, lambda f: np.savez(f, **arrays))
    # Each file is replaced atomically, but not the pair: the description names
    # the hash of its weights, so a pair torn by a kill between the two renames
    # is refused on load instead of mixing one save's weights with another's state.
    doc["weights_sha256"] = sha256_file(npz_path)
    text = json.dumps(doc, indent=2, allow_nan=False)
    _atomic_write(json_path, lambda f: f.write(text.encode("utf-8")))
    return npz_path


def _read_json(json_path: Path) -> dict:
    if not json_path.is_file():
        raise ModelFileError(f"{json_path}: model description not found (expected next to the .npz)")
    try:
        doc = json.loads(json_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"{json_path}: not valid JSON ({exc})") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ModelFileError(f"{json_path}: not a {FORMAT} model description")
    for key, kind in (("architecture", dict), ("parameters", dict), ("metadata", dict), ("dtype", str)):
        if not isinstance(doc.get(key), kind):
            raise ModelFileError(f"{json_path}: '{key}' missing or not a {kind.__name__}")
    return doc


def _expected_arrays(doc: dict, model: ConvAutoencoder, json_path: Path) -> dict:
    """npz key -> (shape, dtype) from the architecture, cross-checked with the JSON."""
    params = model.parameters()
    if doc["parameters"].keys() != params.keys():
        missing = sorted(params.keys() - doc["parameters"])
        extra = sorted(doc["parameters"].keys() - params)
        raise ModelFileError(f"{json_path}: parameters do not match the architecture "
                             f"(missing {missing}, extra {extra})")
    for k, p in params.items():
        if doc["parameters"][k] != _spec(p):
            raise ModelFileError(f"{json_path}: parameter {k} is {doc['parameters'][k]}, "
                                 f"the architecture needs {_spec(p)}")
    expected = {f"param/{k}": (p.shape, p.dtype) for k, p in params.items()}
    opt = doc.get("optimizer")
    if opt is not None:
        if not isinstance(opt, dict) or opt.get("kind") not in OPTIMIZERS:
            raise ModelFileError(f"{json_path}: unknown optimizer {opt!r}")
        for b in OPTIMIZERS[opt["kind"]].buffer_names:
            expected.update({f"optim/{b}/{k}": (p.shape, p.dtype) for k, p in params.items()})
    return expected


def _read_arrays(npz_path: Path, expected: dict) -> dict:
    if not npz_path.is_file():
        raise ModelFileError(f"{npz_path}: model weights not found")
    try:
        with np.load(npz_path, allow_pickle=False) as z:
            if not isinstance(z, np.lib.npyio.NpzFile):
                raise ModelFileError(f"{npz_path}: not an .npz archive")
            keys = set(z.files)
            if keys != expected.keys():
                raise ModelFileError(f"{npz_path}: arrays do not match the model description "
                                     f"(missing {sorted(expected.keys() - keys)}, "
                                     f"extra {sorted(keys - expected.keys())})")
            arrays = {}
            for key, (shape, dtype) in expected.items():
                a = z[key]  # ValueError for object arrays: allow_pickle=False never unpickles
                if a.shape != shape or a.dtype != dtype:
                    raise ModelFileError(f"{npz_path}: array {key} is {a.dtype}{list(a.shape)}, "
                                         f"expected {dtype}{list(shape)}")
                arrays[key] = a
    except ModelFileError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ModelFileError(f"{npz_path}: unreadable or unsafe archive ({exc})") from exc
    return arrays


def load_model(path, *, device: str = "cpu"):
    """Load a model saved by :func:`save_model`; ``path`` with or without ``.npz``.

    Returns ``(model, metadata, optimizer_state)``; ``optimizer_state`` is None
    or the dict ``Optimizer.load_state_dict`` takes. Raises ModelFileError (a
    ValueError) naming the file and the cause.
    """
    npz_path, json_path = model_paths(path)
    doc = _read_json(json_path)
    try:
        config = validate_config(doc["architecture"])
        model = ConvAutoencoder(config, np.random.default_rng(0), dtype=doc["dtype"])
    except (ValueError, TypeError) as exc:
        raise ModelFileError(f"{json_path}: bad architecture ({exc})") from exc
    arrays = _read_arrays(npz_path, _expected_arrays(doc, model, json_path))
    if doc.get("weights_sha256") not in (None, sha256_file(npz_path)):
        raise ModelFileError(f"{npz_path}: weights and {json_path.name} come from different saves "
                             "(a write was interrupted, or one file was replaced)")
    for k, p in model.parameters().items():
        p[...] = arrays[f"param/{k}"]
    state = None
    if doc.get("optimizer") is not None:
        opt = doc["optimizer"]
        state = {"kind": opt["kind"], "step": opt.get("step", 0), "hyperparams": opt.get("hyperparams", {}),
                 "buffers": {b: {k: arrays[f"optim/{b}/{k}"] for k in model.parameters()}
                             for b in OPTIMIZERS[opt["kind"]].buffer_names}}
    return model.to(device), doc["metadata"], state
