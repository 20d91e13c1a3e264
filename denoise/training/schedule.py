"""The learning rate over a run: a linear warm-up, then constant or a cosine
decay over the budget (its steps, or its wall time)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict

from denoise.nn import cosine_decay


class Schedule(BaseModel):
    """``lr`` after ``warmup_steps`` of linear warm-up: constant, or (``cosine``)
    decaying to ``min_lr`` at the end of the budget."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    lr: Annotated[float, Field(gt=0)]
    kind: Literal["constant", "cosine"] = "constant"
    min_lr: Annotated[float, Field(ge=0)] = 0.0
    warmup_steps: Annotated[int, Strict(), Field(ge=0)] = 0

    def rate(self, step: int, fraction: float) -> float:
        """The rate for global step ``step`` (0-based), when ``fraction`` of the
        budget that follows the warm-up has been spent (clipped to 0..1).

        Examples
        --------
        >>> Schedule(lr=1e-3, warmup_steps=10).rate(0, 0.0)
        0.0001
        >>> Schedule(lr=1e-3, kind="cosine", min_lr=1e-5).rate(100, 1.0)
        1e-05
        """
        if self.warmup_steps and step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        if self.kind == "constant":
            return self.lr
        return cosine_decay(fraction, self.lr, self.min_lr)
