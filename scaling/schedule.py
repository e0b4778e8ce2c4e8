"""Learning-rate schedules as pure functions of the step, so a resumed run needs only the step to continue.

Convention: `lr_at(step, ...)` is the rate used by optimizer step `step` (0-based), evaluated at the END of that
step, t = step + 1, so the first step uses lr / warmup_steps, step `warmup_steps - 1` uses the peak, and the last
step (`steps - 1`) uses the floor `min_lr_ratio * lr` exactly.

- cosine: linear warmup, then a half cosine from the peak to the floor over the remaining steps.
- wsd (warmup-stable-decay): linear warmup, constant peak, then over the last `decay_steps` a decay to the floor
  shaped `linear` (1 - q), `sqrt` (1 - sqrt(q)) or `cosine` ((1 + cos(pi q)) / 2), q going from 0 to 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Schedule:
    lr: float  # peak learning rate
    steps: int  # optimizer steps in the run
    warmup_steps: int = 0
    kind: str = "cosine"  # "cosine" | "wsd"
    min_lr_ratio: float = 0.1  # floor / peak
    decay_steps: int = 0  # wsd only
    decay_shape: str = "linear"  # wsd only: "linear" | "sqrt" | "cosine"

    def __call__(self, step: int) -> float:
        return lr_at(step, self)


def lr_at(step: int, s: Schedule) -> float:
    """Learning rate for optimizer step `step` (0-based) under schedule `s`."""
    t = step + 1
    if t <= s.warmup_steps:
        return s.lr * t / s.warmup_steps
    floor = s.lr * s.min_lr_ratio
    if s.kind == "cosine":
        q = (t - s.warmup_steps) / max(1, s.steps - s.warmup_steps)
        return floor + (s.lr - floor) * 0.5 * (1 + math.cos(math.pi * min(q, 1.0)))
    decay_start = max(s.warmup_steps, s.steps - s.decay_steps)
    if t <= decay_start:
        return s.lr
    q = min(1.0, (t - decay_start) / max(1, s.steps - decay_start))
    return floor + (s.lr - floor) * decay_factor(q, s.decay_shape)


def decay_factor(q: float, shape: str) -> float:
    """Fraction of the way from floor to peak left after a fraction q in [0, 1] of the WSD decay phase."""
    if shape == "linear":
        return 1.0 - q
    if shape == "sqrt":
        return 1.0 - math.sqrt(q)
    if shape == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * q))
    raise ValueError(f"unknown decay shape {shape!r}")
