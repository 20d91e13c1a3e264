"""Optimizers that update a model's live parameter arrays in place, and gradient clipping.

Both keep one buffer per parameter name, so ``state_dict()`` is plain arrays
and ints that go straight into an ``.npz`` for resuming.
"""

from __future__ import annotations

import math

from denoise.backend import get_array_module, to_numpy


def _check_positive(name: str, value) -> None:
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


class _Optimizer:
    """Shared bookkeeping: parameter dict, per-name buffers, step count, state dict."""

    kind = ""
    buffer_names: tuple[str, ...] = ()

    def __init__(self, params: dict, lr: float):
        if not isinstance(params, dict) or not params:
            raise ValueError("params must be a non-empty dict name -> array, e.g. model.parameters()")
        self.params = params
        self.lr = lr
        self.step_count = 0
        self.buffers = {b: {k: get_array_module(p).zeros_like(p) for k, p in params.items()}
                        for b in self.buffer_names}

    @property
    def lr(self) -> float:
        return self._lr

    @lr.setter
    def lr(self, value: float) -> None:
        _check_positive("lr", value)
        self._lr = float(value)

    def _check_grads(self, grads: dict) -> None:
        if grads.keys() != self.params.keys():
            missing, extra = sorted(self.params.keys() - grads), sorted(grads.keys() - self.params)
            raise ValueError(f"grads must have the parameters' names; missing {missing}, extra {extra}")

    def hyperparams(self) -> dict:
        raise NotImplementedError

    def state_dict(self) -> dict:
        """{'kind', 'step', 'hyperparams', 'buffers': {buffer: {param name: host array}}}."""
        return {
            "kind": self.kind,
            "step": self.step_count,
            "hyperparams": self.hyperparams(),
            "buffers": {b: {k: to_numpy(v) for k, v in bufs.items()} for b, bufs in self.buffers.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore step, hyper-parameters and buffers saved by :meth:`state_dict`."""
        if state.get("kind") != self.kind:
            raise ValueError(f"state is for optimizer {state.get('kind')!r}, not {self.kind!r}")
        for b in self.buffer_names:
            saved = state["buffers"][b]
            if saved.keys() != self.params.keys():
                raise ValueError(f"optimizer buffer {b!r} names do not match the parameters")
            for k, p in self.params.items():
                if tuple(saved[k].shape) != p.shape:
                    raise ValueError(f"optimizer buffer {b}/{k} has shape {tuple(saved[k].shape)}, "
                                     f"parameter has {p.shape}")
                self.buffers[b][k][...] = get_array_module(p).asarray(saved[k], dtype=p.dtype)
        self._set_hyperparams(**state["hyperparams"])
        self.step_count = int(state["step"])

    def _set_hyperparams(self, **hyper) -> None:
        raise NotImplementedError


class Adam(_Optimizer):
    """Adam with bias correction (Kingma & Ba 2015, as ``torch.optim.Adam``).

    ``weight_decay`` adds ``weight_decay * p`` to the gradient (L2, not AdamW).
    """

    kind = "adam"
    buffer_names = ("m", "v")

    def __init__(self, params: dict, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        super().__init__(params, lr)
        self._set_hyperparams(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)

    def _set_hyperparams(self, *, lr, betas, eps, weight_decay) -> None:
        if len(betas) != 2 or not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {betas!r}")
        _check_positive("eps", eps)
        if not isinstance(weight_decay, (int, float)) or not weight_decay >= 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
        self.lr = lr
        self.betas = (float(betas[0]), float(betas[1]))
        self.eps, self.weight_decay = float(eps), float(weight_decay)

    def hyperparams(self) -> dict:
        return {"lr": self.lr, "betas": list(self.betas), "eps": self.eps,
                "weight_decay": self.weight_decay}

    def step(self, grads: dict) -> None:
        """One update of every parameter in place from ``grads`` (same names)."""
        self._check_grads(grads)
        self.step_count += 1
        b1, b2 = self.betas
        step_size = self.lr / (1 - b1**self.step_count)
        root_c2 = math.sqrt(1 - b2**self.step_count)
        for k, p in self.params.items():
            xp = get_array_module(p)
            g = grads[k] + self.weight_decay * p if self.weight_decay else grads[k]
            m, v = self.buffers["m"][k], self.buffers["v"][k]
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * (g * g)
            p -= step_size * m / (xp.sqrt(v) / root_c2 + self.eps)


class SGD(_Optimizer):
    """SGD with momentum: ``u = momentum * u + g; p -= lr * u`` (as ``torch.optim.SGD``)."""

    kind = "sgd"
    buffer_names = ("momentum",)

    def __init__(self, params: dict, lr: float, momentum: float = 0.9):
        super().__init__(params, lr)
        self._set_hyperparams(lr=lr, momentum=momentum)

    def _set_hyperparams(self, *, lr, momentum) -> None:
        if not isinstance(momentum, (int, float)) or not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
        self.lr, self.momentum = lr, float(momentum)

    def hyperparams(self) -> dict:
        return {"lr": self.lr, "momentum": self.momentum}

    def step(self, grads: dict) -> None:
        self._check_grads(grads)
        self.step_count += 1
        for k, p in self.params.items():
            u = self.buffers["momentum"][k]
            u *= self.momentum
            u += grads[k]
            p -= self.lr * u


OPTIMIZERS = {"adam": Adam, "sgd": SGD}


def cosine_decay(t: float, lr: float, min_lr: float) -> float:
    """Learning rate at fraction ``t`` of a cosine decay from ``lr`` to ``min_lr``.

    Parameters
    ----------
    t : float
        Progress through the decay, clipped to [0, 1] (steps or seconds done / budget).
    lr, min_lr : float
        The rates at ``t = 0`` and ``t = 1``.

    Returns
    -------
    float
        ``min_lr + (lr - min_lr) * (1 + cos(pi * t)) / 2``.
    """
    t = min(max(float(t), 0.0), 1.0)
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * t))


def clip_grad_norm(grads: dict, max_norm: float) -> float:
    """Scale all gradients in place so their global L2 norm is at most ``max_norm``.

    Returns the norm before clipping (to log it).
    """
    _check_positive("max_norm", max_norm)
    total = math.sqrt(sum(float((g * g).sum()) for g in grads.values()))
    if total > max_norm:
        scale = max_norm / (total + 1e-6)
        for g in grads.values():
            g *= scale
    return total
