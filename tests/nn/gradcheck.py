"""Finite-difference gradient checks: the reference every backward pass is tested against."""

from __future__ import annotations

import numpy as np


def rel_error(a, b) -> float:
    """max |a - b| / max(|a|, |b|): scale-free, so one threshold fits every array."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(a)), np.max(np.abs(b)), 1e-30))


def numeric_grad(loss, x, *, eps=1e-6, max_entries=None, rng=None):
    """Central-difference d loss / d x for (a sample of) the entries of ``x``, perturbed in place.

    Returns ``(indices, values)`` so callers compare the same entries of the
    analytic gradient.
    """
    flat = x.reshape(-1)  # a view: perturbing it perturbs x
    idx = np.arange(flat.size)
    if max_entries is not None and flat.size > max_entries:
        idx = np.sort(rng.choice(flat.size, max_entries, replace=False))
    values = np.empty(idx.size)
    for n, i in enumerate(idx):
        old = flat[i]
        flat[i] = old + eps
        plus = loss()
        flat[i] = old - eps
        minus = loss()
        flat[i] = old
        values[n] = (plus - minus) / (2 * eps)
    return idx, values


def check_layer_grads(layer, inputs, *, rng, tol=1e-6):
    """Gradient check of ``layer`` (float64) w.r.t. every input and parameter.

    The loss is ``sum(y * w)`` for a fixed random ``w``, so ``dy = w``.
    Returns the worst relative error.
    """
    y = layer.forward(*inputs)
    w = rng.standard_normal(y.shape)

    def loss():
        return float(np.sum(layer.forward(*inputs, cache=False) * w))

    layer.zero_grad()
    layer.forward(*inputs)
    dxs = layer.backward(w)
    dxs = dxs if isinstance(dxs, tuple) else (dxs,)
    errors = {}
    for n, (x, dx) in enumerate(zip(inputs, dxs, strict=True)):
        idx, num = numeric_grad(loss, x)
        errors[f"input{n}"] = rel_error(num, np.asarray(dx).reshape(-1)[idx])
    for name, p in layer.params.items():
        idx, num = numeric_grad(loss, p)
        errors[name] = rel_error(num, layer.grads[name].reshape(-1)[idx])
    worst = max(errors, key=errors.get)
    assert errors[worst] < tol, f"gradient mismatch in {worst}: {errors}"
    return errors[worst]
