"""The one training engine of the project (:mod:`denoise.training.engine`):
``train``, ``adapt`` and the benchmarks run their epochs through it."""

from denoise.training.engine import BatchSource, Budget, Engine, EpochHooks, LoopState

__all__ = ["BatchSource", "Budget", "Engine", "EpochHooks", "LoopState"]
