"""Fit results shaped like scipy's OptimizeResult: estimates, intervals, diagnostics, summary(), to_dict(), predict()."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


def json_safe(x):
    """Convert numpy scalars/arrays and nested containers into plain JSON types (NaN/inf become None)."""
    if isinstance(x, dict):
        return {str(k): json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    if isinstance(x, np.ndarray):
        return json_safe(x.tolist())
    if isinstance(x, (np.bool_, bool)):
        return bool(x)
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        x = float(x)
        return x if math.isfinite(x) else None
    return x


def percentile_interval(samples, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the finite samples (NaN, NaN if there are none)."""
    s = np.asarray(samples, dtype=float)
    s = s[np.isfinite(s)]
    if s.size == 0:
        return (math.nan, math.nan)
    lo, hi = np.percentile(s, [50 * (1 - level), 50 * (1 + level)])
    return (float(lo), float(hi))


@dataclass
class FitResult:
    """Base class for every fit. Subclasses fill `params` and add `predict`."""

    params: dict[str, float] = field(default_factory=dict)
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)  # 95% percentile bootstrap
    stderr: dict[str, float] = field(default_factory=dict)  # bootstrap standard deviation
    n_boot: int = 0
    diagnostics: dict = field(default_factory=dict)
    success: bool = True
    message: str = ""
    name: str = "fit"

    def __getattr__(self, item):
        params = self.__dict__.get("params", {})
        if item in params:
            return params[item]
        raise AttributeError(item)

    def param_lines(self) -> list[str]:
        """One line per parameter with its 95% interval and bootstrap SE, then the number of resamples."""
        lines = []
        for k, v in self.params.items():
            line = f"  {k:>12s} = {v:.6g}"
            if k in self.intervals:
                lo, hi = self.intervals[k]
                line += f"   95% CI [{lo:.6g}, {hi:.6g}]"
            if k in self.stderr:
                line += f"   se {self.stderr[k]:.3g}"
            lines.append(line)
        if self.n_boot:
            lines.append(f"  bootstrap resamples: {self.n_boot}")
        return lines

    def summary(self) -> str:
        lines = [f"{self.name}: {'converged' if self.success else 'NOT CONVERGED'}"
                 + (f" ({self.message})" if self.message else "")]
        lines += self.param_lines()
        for k, v in self.diagnostics.items():
            if isinstance(v, (int, float, str, bool, np.floating, np.integer)):
                lines.append(f"  {k}: {v}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return json_safe({
            **self.params,
            "intervals": {k: list(v) for k, v in self.intervals.items()},
            "stderr": self.stderr,
            "n_boot": self.n_boot,
            "diagnostics": self.diagnostics,
            "success": self.success,
            "message": self.message,
        })

    def __repr__(self) -> str:
        return self.summary()
