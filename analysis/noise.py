"""The run-to-run noise model: replicates, their mean, and the noise sigma with its degrees of freedom.

Runs that differ only in their seed are replicates of one point. The point's loss is their mean, and their spread
estimates sigma, the relative (log-scale) standard deviation of one run's final loss, by pooled variance:
sigma^2 = sum over points of sum (ln L_i - mean ln L)^2 / sum (n_point - 1), with dof = sum (n_point - 1).
Without replicates, sigma comes from the residuals of the per-budget fits (labelled source "residuals"); it then
also absorbs any misfit of the local model, which is the honest direction to err in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from scaling.errors import ConfigError

POINT_KEYS = ("budget", "N", "D", "kind", "lr", "batch_size")  # what makes a point; seed and run_id do not
SOURCES = ("replicates", "residuals", "none")


@dataclass(frozen=True)
class NoiseEstimate:
    """sigma: relative sd of one run's loss (sd of ln loss); dof: its degrees of freedom; source: where it came from."""

    sigma: float
    dof: int
    source: str
    reason: str = ""  # why there is no estimate (source "none")

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ConfigError("noise.source", f"one of {SOURCES}", self.source)

    @property
    def determined(self) -> bool:
        """True when sigma is a finite, positive estimate with at least one degree of freedom."""
        return self.source != "none" and self.dof >= 1 and math.isfinite(self.sigma) and self.sigma > 0

    def sigma_draws(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n draws of sigma from its sampling uncertainty: sigma * sqrt(dof / chi2(dof)) (NaN when undetermined).

        Using them in a parametric bootstrap widens the intervals when sigma rests on few degrees of freedom.
        """
        if not self.determined:
            return np.full(n, np.nan)
        return self.sigma * np.sqrt(self.dof / rng.chisquare(self.dof, size=n))

    def to_dict(self) -> dict:
        """The result's `noise` member: {"sigma", "dof", "source"}, or {} when there is no estimate (its reason
        then belongs in the result's diagnostics)."""
        if not self.determined:
            return {}
        return {"sigma": float(self.sigma), "dof": int(self.dof), "source": self.source}

    @classmethod
    def none(cls, reason: str) -> NoiseEstimate:
        """No estimate, with the reason."""
        return cls(sigma=math.nan, dof=0, source="none", reason=reason)


def collapse_replicates(df: pd.DataFrame, keys=POINT_KEYS) -> tuple[pd.DataFrame, NoiseEstimate]:
    """One row per point (replicates averaged) and the noise estimate from the replicates.

    Points are the distinct values of the `keys` columns present in df. Each output row keeps the first row's other
    columns, with loss = the replicates' mean loss and n_replicates = their count. Linear in the rows.
    The estimate has source "none" (with the reason) when no point has two or more runs.
    """
    if "loss" not in df.columns:
        raise ConfigError("runs: columns", "a loss column", list(df.columns))
    by = [k for k in keys if k in df.columns]
    if not by:
        raise ConfigError("replicate keys", f"at least one of the columns {list(keys)}", list(df.columns))
    work = df.reset_index(drop=True)
    group = work.groupby(by, sort=False, dropna=False).ngroup().to_numpy()
    n_groups = int(group.max()) + 1 if len(group) else 0
    count = np.bincount(group, minlength=n_groups)
    loss = work["loss"].to_numpy(float)
    mean = np.bincount(group, weights=loss, minlength=n_groups) / np.maximum(count, 1)
    log_loss = np.log(loss)
    log_mean = np.bincount(group, weights=log_loss, minlength=n_groups) / np.maximum(count, 1)
    ss = float(np.sum((log_loss - log_mean[group]) ** 2))
    dof = int(np.sum(count - 1))
    first = np.unique(group, return_index=True)[1]
    points = work.iloc[first].copy()
    points["loss"] = mean[group[first]]
    points["n_replicates"] = count[group[first]]
    points = points.reset_index(drop=True)
    if dof == 0:
        return points, NoiseEstimate.none("no replicates (no two runs differ only in seed)")
    return points, NoiseEstimate(sigma=math.sqrt(ss / dof), dof=dof, source="replicates")


def residual_noise(relative_residuals: np.ndarray, weights: np.ndarray, dof: int) -> NoiseEstimate:
    """sigma from the relative residuals of local fits: sqrt(sum w r^2 / dof), w = replicates per point.

    dof = points minus fitted coefficients, summed over the fits; "none" with the reason when it is below 1.
    """
    if dof < 1:
        return NoiseEstimate.none("no residual degrees of freedom (every budget has as many points as the parabola "
                                  "has coefficients) and no replicates")
    r = np.asarray(relative_residuals, float)
    w = np.asarray(weights, float)
    return NoiseEstimate(sigma=math.sqrt(float(np.sum(w * r * r)) / dof), dof=int(dof), source="residuals")
