"""Approach 2 (isoFLOP profiles): per FLOP budget, a parabola of loss in log10 N (and in log10 D) locates the
compute-optimal model; power laws N_opt(C) ∝ C^a, D_opt(C) ∝ C^b and L_opt(C) are then fitted across budgets.

Units: N in parameters, D in tokens, C in FLOPs, loss in nats/token. Logs in parabolas are base 10.
Bootstrap ("runs"): resample runs with replacement inside each budget, refit every parabola and every law on
each resample (the window and the set of usable budgets stay those of the full data). ("budgets"): resample whole
budgets with replacement and refit the laws on their optima.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis.data import budgets_of, require_columns
from analysis.powerlaw import (
    AllocationFit,
    bootstrap_counts,
    power_law_result,
    samples_summary,
    weighted_line,
)
from analysis.result import percentile_interval
from scaling.errors import ConfigError

FLAGS = ("edge_minimum", "too_few_points", "not_convex")


def parabola_batch(x: np.ndarray, y: np.ndarray, W: np.ndarray) -> np.ndarray:
    """Coefficients (c0, c1, c2) of y ≈ c0 + c1·x + c2·x² by weighted least squares for each row of W (B x n).

    Rows with fewer than 3 distinct x carrying weight give NaN. Center x beforehand for conditioning.
    """
    X = np.stack([np.ones_like(x), x, x * x], axis=1)  # (n, 3)
    XtWX = np.einsum("bn,ni,nj->bij", W, X, X)
    XtWy = np.einsum("bn,ni,n->bi", W, X, y)
    _, inverse = np.unique(x, return_inverse=True)
    distinct = ((W > 0).astype(float) @ np.eye(inverse.max() + 1)[inverse] > 0).sum(1)
    ok = distinct >= 3
    out = np.full((len(W), 3), np.nan)
    if ok.any():
        out[ok] = np.linalg.solve(XtWX[ok], XtWy[ok][..., None])[..., 0]
    return out


def vertex(coef: np.ndarray, center: float) -> tuple[np.ndarray, np.ndarray]:
    """Vertex position (in uncentered x) and value of c0 + c1·(x-center) + c2·(x-center)²; NaN unless c2 > 0."""
    c0, c1, c2 = coef[..., 0], coef[..., 1], coef[..., 2]
    with np.errstate(invalid="ignore", divide="ignore"):
        convex = c2 > 0
        xv = np.where(convex, center - c1 / (2 * np.where(convex, c2, 1.0)), np.nan)
        yv = np.where(convex, c0 - c1 * c1 / (4 * np.where(convex, c2, 1.0)), np.nan)
    return xv, yv


def uncentered(coef: np.ndarray, center: float) -> list[float]:
    """[p2, p1, p0] for numpy.polyval on raw x, from centered coefficients (c0, c1, c2)."""
    c0, c1, c2 = (float(v) for v in coef)
    return [c2, c1 - 2 * c2 * center, c0 - c1 * center + c2 * center * center]


@dataclass
class BudgetProfile:
    """One budget's isoFLOP parabola fits: point estimates, bootstrap draws, flags."""

    budget: float
    n_points: int
    n_fit: int
    flags: list[str]
    logN: float  # vertex in log10 N (or best observed point when no vertex)
    logD: float
    L: float
    boot_logN: np.ndarray
    boot_logD: np.ndarray
    boot_L: np.ndarray
    parabola_N: list[float]
    parabola_D: list[float]
    fit_range_N: tuple[float, float]
    fit_range_D: tuple[float, float]
    best_N: float
    best_loss: float


def _profile(budget, logN, logD, loss, counts, window, min_side) -> BudgetProfile:
    """Fit one budget: window around the lowest loss, parabolas in log N and log D, flags, bootstrap draws."""
    order = np.argsort(logN)
    logN, logD, loss = logN[order], logD[order], loss[order]
    counts = counts[:, order]
    best = int(np.argmin(loss))
    sel = np.ones(loss.size, bool) if window is None else np.abs(logN - logN[best]) <= window + 1e-12
    flags = []
    if logN[best] <= logN.min() or logN[best] >= logN.max():
        flags.append("edge_minimum")
    xs, ds, ys = logN[sel], logD[sel], loss[sel]
    mN, mD = float(xs.mean()), float(ds.mean())
    nan_b = np.full(len(counts), np.nan)
    result = {"budget": budget, "n_points": int(loss.size), "n_fit": int(sel.sum()), "logN": float(logN[best]),
              "logD": float(logD[best]), "L": float(loss[best]), "boot_logN": nan_b, "boot_logD": nan_b,
              "boot_L": nan_b, "parabola_N": [math.nan] * 3, "parabola_D": [math.nan] * 3,
              "fit_range_N": (10 ** xs.min(), 10 ** xs.max()), "fit_range_D": (10 ** ds.min(), 10 ** ds.max()),
              "best_N": float(10 ** logN[best]), "best_loss": float(loss[best])}
    if np.unique(xs).size < 3:
        return BudgetProfile(flags=flags + ["too_few_points"], **result)
    cN = parabola_batch(xs - mN, ys, np.ones((1, xs.size)))[0]
    cD = parabola_batch(ds - mD, ys, np.ones((1, ds.size)))[0]
    result["parabola_N"], result["parabola_D"] = uncentered(cN, mN), uncentered(cD, mD)
    xv, yv = vertex(cN, mN)
    dv, _ = vertex(cD, mD)
    if not (np.isfinite(xv) and np.isfinite(dv)):
        flags.append("not_convex")
    else:
        result.update(logN=float(xv), logD=float(dv), L=float(yv))
        if (xv < xs.min() or xv > xs.max()) and "edge_minimum" not in flags:
            flags.append("edge_minimum")
        if min((xs < xv).sum(), (xs > xv).sum()) < min_side:
            flags.append("too_few_points")
    if len(counts):
        W = counts[:, sel].astype(float)
        bN, bL = vertex(parabola_batch(xs - mN, ys, W), mN)
        bD, _ = vertex(parabola_batch(ds - mD, ys, W), mD)
        result.update(boot_logN=bN, boot_logD=bD, boot_L=bL)
    return BudgetProfile(flags=flags, **result)


@dataclass(repr=False, eq=False)
class IsoflopFit(AllocationFit):
    """IsoFLOP fit (approach 2): the AllocationFit laws, and .budgets: one row per budget (optimum, 95% interval,
    flags, parabola coefficients for plotting)."""

    budgets: pd.DataFrame = field(default_factory=pd.DataFrame)
    table_name = "budgets"
    summary_keys = ("n_budgets", "n_used", "window", "bootstrap", "min_points_per_side")

    def table_lines(self) -> list[str]:
        lines = ["  per budget:      C [FLOPs]   N_opt [params] (95% CI)          D_opt [tokens]   L_opt   flags"]
        for r in self.budgets.itertuples():
            lines.append(f"    {r.budget:14.4g}   {r.N_opt:10.4g} [{r.N_opt_lo:.3g}, {r.N_opt_hi:.3g}]   "
                         f"{r.D_opt:12.4g}   {r.L_opt:.4f}   {','.join(r.flags) or '-'}")
        return lines


def _budget_table(profiles: list[BudgetProfile]) -> pd.DataFrame:
    rows = []
    for pr in profiles:
        row = {"budget": pr.budget}
        for key, boot, scale in (("N_opt", pr.boot_logN, True), ("D_opt", pr.boot_logD, True),
                                 ("L_opt", pr.boot_L, False)):
            est = {"N_opt": pr.logN, "D_opt": pr.logD, "L_opt": pr.L}[key]
            lo, hi = percentile_interval(boot)
            row[key] = 10 ** est if scale else est
            row[f"{key}_lo"], row[f"{key}_hi"] = (10 ** lo, 10 ** hi) if scale else (lo, hi)
        row.update(n_points=pr.n_points, n_fit=pr.n_fit, flags=list(pr.flags), used=not pr.flags,
                   best_N=pr.best_N, best_loss=pr.best_loss, parabola_N=pr.parabola_N, parabola_D=pr.parabola_D,
                   N_fit_min=pr.fit_range_N[0], N_fit_max=pr.fit_range_N[1],
                   D_fit_min=pr.fit_range_D[0], D_fit_max=pr.fit_range_D[1])
        rows.append(row)
    return pd.DataFrame(rows)


def fit_isoflop(df: pd.DataFrame, *, window: float | None = None, n_boot: int = 1000, seed: int = 0,
                k: float | None = None, bootstrap: str = "runs", min_points_per_side: int = 1) -> IsoflopFit:
    """Approach 2: parabola per budget, then N_opt(C), D_opt(C), L_opt(C) power laws across usable budgets.

    df: runs with N [params], D [tokens], loss and a `budget` column (else C, else k·N·D with k = 6, grouped
    within 5%). window: keep points within this many decades of N from the lowest-loss run (None = all).
    Flags per budget: edge_minimum (lowest loss at the smallest/largest N of the grid, or vertex outside the
    fitted range), too_few_points (< 3 points, or < min_points_per_side on a side of the vertex), not_convex.
    Only unflagged budgets enter the laws; at least 2 are needed.
    """
    require_columns(df, ["N", "D", "loss"], "isoflop")
    if bootstrap not in ("runs", "budgets"):
        raise ConfigError("bootstrap", '"runs" or "budgets"', bootstrap)
    if window is not None and not window > 0:
        raise ConfigError("window", "a positive distance in decades of N, or None for all points", window)
    df = df.copy(deep=False)
    df.attrs = {}
    if "C" not in df.columns and "budget" not in df.columns:
        df["C"] = (6.0 if k is None else float(k)) * df["N"] * df["D"]
    budget = budgets_of(df, need=2, what="isoFLOP profiles (one parabola per budget)")
    logN = np.log10(df["N"].to_numpy(float))
    logD = np.log10(df["D"].to_numpy(float))
    loss = df["loss"].to_numpy(float)
    # Per-budget spread always comes from resampling runs inside each budget.
    counts = bootstrap_counts(len(df), n_boot, seed, strata=budget)
    levels = np.unique(budget)
    profiles = [_profile(float(c), logN[budget == c], logD[budget == c], loss[budget == c],
                         counts[:, budget == c], window, min_points_per_side) for c in levels]
    table = _budget_table(profiles)
    used = [pr for pr in profiles if not pr.flags]
    if len(used) < 2:
        flagged = {f"{pr.budget:.3g}": pr.flags for pr in profiles if pr.flags}
        raise ConfigError("isoflop budgets", "at least 2 budgets whose loss minimum is interior and convex "
                          "(widen or re-centre the grids of the flagged budgets)", flagged)
    C = np.array([pr.budget for pr in used])
    est = {"N": np.array([pr.logN for pr in used]), "D": np.array([pr.logD for pr in used]),
           "L": np.log10([pr.L for pr in used])}
    if bootstrap == "runs":
        boot = {"N": np.stack([pr.boot_logN for pr in used], 1), "D": np.stack([pr.boot_logD for pr in used], 1),
                "L": np.log10(np.stack([pr.boot_L for pr in used], 1))}
        wb = np.ones((n_boot, len(used)))
    else:
        boot = {key: np.broadcast_to(v, (n_boot, len(used))) for key, v in est.items()}
        wb = bootstrap_counts(len(used), n_boot, seed + 1).astype(float)
    laws, samples = {}, []
    labels = {"N": ("N_opt(C)", "N_opt [params]"), "D": ("D_opt(C)", "D_opt [tokens]"), "L": ("L_opt(C)", "L_opt")}
    for key in ("N", "D", "L"):
        i0, s0 = weighted_line(np.log10(C), est[key], np.ones(len(used)))
        bi, bs = weighted_line(np.log10(C), boot[key], wb) if n_boot else (np.empty(0), np.empty(0))
        law_samples = np.column_stack([10 ** bi, bs]) if n_boot else None
        laws[key] = power_law_result(C, 10 ** est[key], float(10 ** i0), float(s0), law_samples,
                                     name=labels[key][0], x_name="C [FLOPs]", y_name=labels[key][1],
                                     bootstrap=bootstrap)
        samples.append(law_samples)
    params = {"a": laws["N"].params["exponent"], "b": laws["D"].params["exponent"],
              "N_coef": laws["N"].params["coef"], "D_coef": laws["D"].params["coef"],
              "L_coef": laws["L"].params["coef"], "L_exponent": laws["L"].params["exponent"]}
    all_samples = None
    if n_boot:
        all_samples = np.column_stack([samples[0][:, 1], samples[1][:, 1], samples[0][:, 0], samples[1][:, 0],
                                       samples[2][:, 0], samples[2][:, 1]])
    intervals, stderr = samples_summary(all_samples, list(params))
    diagnostics = {"n_budgets": len(profiles), "n_used": len(used), "n_runs": len(df),
                   "window": "all points" if window is None else f"{window} decades of N",
                   "bootstrap": bootstrap, "min_points_per_side": min_points_per_side,
                   "flagged": {f"{pr.budget:.4g}": pr.flags for pr in profiles if pr.flags},
                   "k": 6.0 if k is None else float(k)}
    if n_boot:
        diagnostics["boot_failed"] = int((~np.isfinite(all_samples).all(axis=1)).sum())
    return IsoflopFit(params=params, intervals=intervals, stderr=stderr, n_boot=n_boot if n_boot else 0,
                      diagnostics=diagnostics, name="isoFLOP (approach 2)", budgets=table,
                      N_opt=laws["N"], D_opt=laws["D"], L_opt=laws["L"], samples=all_samples)
