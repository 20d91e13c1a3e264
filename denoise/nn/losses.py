"""Reconstruction losses; each returns ``(loss, dloss/dpred)`` so training needs no autograd."""

from __future__ import annotations

from denoise.backend import get_array_module


def _check(pred, target) -> None:
    if pred.shape != target.shape:
        raise ValueError(f"pred and target shapes differ: {pred.shape} vs {target.shape}")
    if pred.size == 0:
        raise ValueError("loss of an empty array is undefined")


def mse_loss(pred, target) -> tuple[float, object]:
    """Mean squared error (L2) over all elements and its gradient ``2 (pred - target) / n``."""
    _check(pred, target)
    diff = pred - target
    return float((diff * diff).mean()), diff * (2.0 / diff.size)


def l1_loss(pred, target) -> tuple[float, object]:
    """Mean absolute error (L1) and its (sub)gradient ``sign(pred - target) / n``.

    At ``pred == target`` the subgradient 0 is used.
    """
    _check(pred, target)
    diff = pred - target
    xp = get_array_module(diff)
    return float(xp.abs(diff).mean()), xp.sign(diff) * (1.0 / diff.size)
