"""The one training engine of the project: ``train``, ``adapt`` and the
benchmarks run their epochs through :class:`Engine`, configured by a typed
:class:`EngineConfig`, and resume from :mod:`denoise.training.checkpoint`."""

from denoise.training.checkpoint import LoopState
from denoise.training.engine import BatchSource, Engine, EngineConfig, EpochHooks
from denoise.training.schedule import Schedule

__all__ = ["BatchSource", "Engine", "EngineConfig", "EpochHooks", "LoopState", "Schedule"]
