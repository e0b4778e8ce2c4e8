"""Approach 2 (isoFLOP profiles): per FLOP budget, a parabola of loss in log10 N (and in log10 D) locates the
compute-optimal model; power laws N_opt(C) ∝ C^a, D_opt(C) ∝ C^b and L_opt(C) are then fitted across budgets.

Units: N in parameters, D in tokens, C in FLOPs, loss in nats/token. Logs in parabolas are base 10.

Noise model (analysis.noise): runs that differ only in seed are replicates; their mean is the point's loss and
their spread gives sigma (relative sd of one run's loss). Without replicates sigma comes from the parabolas'
residuals. Each point's weight in its parabola is its number of replicates (sigma is one relative value).

Intervals (method "bootstrap:residual", the default when sigma is known): a parametric bootstrap that draws new
losses around each fitted parabola with noise sigma (itself drawn from its chi-square uncertainty), refits every
parabola and every law. The draw is done on the parabolas' sufficient statistics, so its cost does not grow with
the draws times the rows. "bootstrap:runs" resamples points inside each budget (needs >= 5 per budget);
"bootstrap:budgets" resamples whole budgets (needs >= 5 usable budgets). A draw whose vertex is not convex or lies
more than half the grid's width beyond the grid is a failed draw; fewer than 90% successful draws make an interval
undetermined. A budget whose own vertex draws succeed less than 90% of the time is flagged "vertex_undetermined" and
left out of the laws, as an edge budget is (its row says how many of its draws succeeded), unless fewer than 2
budgets would remain, in which case the laws' intervals are undetermined with that reason. In each draw of a law, a
remaining budget whose vertex draw failed is left out of that draw's refit; the draw fails only when fewer than 2
budgets (3 for the loss frontier) are left. (Failing the whole draw with any one budget made the laws undetermined
in most sweeps of 5 budgets x 5 models at 1% noise, and the sweeps that survived were a biased subset.)

Model error, measured rather than assumed (benchmarks/bench_calibration.py): the parabola is a biased local model
of the isoFLOP curve on wide or off-centre grids (alpha != beta). Two terms widen the draws, each only when the
data show it beyond the noise: per budget, the difference between a cubic's minimum and the parabola's (>= 5
points); across budgets, the scatter of the optima about their law beyond their draws' spread (chi-square test).
Lack of fit: a budget whose points scatter about its parabola beyond its 95% chi-square point under the noise model
(the shortest runs are noisier than the replicates near the optimum, and a skewed profile is not a parabola) has the
residual bootstrap's sigma scaled by sqrt(chi2 / dof) for its draws (the budget table's noise_scale).
L_opt is extrapolated with the loss frontier L = E + A·C^-gamma through the budgets' optimal losses (>= 3 budgets),
because a pure power law in C has no irreducible loss and lands far too low at 100x.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.special import chdtri

from analysis.data import budgets_of, require_columns
from analysis.noise import NoiseEstimate, collapse_replicates, residual_noise
from analysis.powerlaw import (
    AllocationFit,
    PowerLawFit,
    SaturatingFit,
    allocation_fields,
    power_law_result,
    weighted_line,
)
from analysis.result import (
    LOSS_EXPONENT,
    MAX_SPAN_RATIO,
    MIN_OK_FRACTION,
    MIN_RESAMPLE_UNITS,
    Interval,
    interval_from_draws,
    unreliable_reasons,
)
from scaling.errors import ConfigError

FLAGS = ("edge_minimum", "too_few_points", "not_convex", "vertex_undetermined")
BOOTSTRAPS = ("auto", "residual", "runs", "budgets")
EDGE_TOLERANCE = 0.1  # a vertex within this fraction of the grid spacing of the outermost point is on the edge
BIAS_QUANTILE = 0.95  # the parabola's bias counts only when the cubic's minimum differs more than this share of
# the differences drawn under noise alone
FAILED_DRAW_REACH = 0.5  # a draw's vertex beyond the grid by more than this fraction of the grid's width fails
MIN_LINE_BUDGETS = 2  # a draw of a power law in C needs this many budgets whose vertex draw succeeded
MIN_FRONTIER_BUDGETS = 3  # the loss frontier E + A C^-gamma (3 parameters) needs this many
_DRAW_CHUNK_CELLS = 4_000_000  # draws x points per chunk of the runs bootstrap (bounds its memory)


# ---------------------------------------------------------------- parabolas


def parabola_batch(x: np.ndarray, y: np.ndarray, W: np.ndarray) -> np.ndarray:
    """Coefficients (c0, c1, c2) of y ≈ c0 + c1·x + c2·x² by weighted least squares for each row of W (B x n).

    Rows with fewer than 3 distinct x carrying weight give NaN. Center x beforehand for conditioning.
    Linear in B·n: distinct x are counted per row by reducing the sorted columns.
    """
    x, y, W = np.asarray(x, float), np.asarray(y, float), np.atleast_2d(np.asarray(W, float))
    X = np.stack([np.ones_like(x), x, x * x], axis=1)  # (n, 3)
    XtWX = W @ (X[:, :, None] * X[:, None, :]).reshape(len(x), 9)
    XtWy = W @ (X * y[:, None])
    return _solve_parabolas(XtWX.reshape(-1, 3, 3), XtWy, _distinct_weighted(x, W))


def _distinct_weighted(x: np.ndarray, W: np.ndarray) -> np.ndarray:
    """Number of distinct x values carrying positive weight, per row of W."""
    order = np.argsort(x, kind="stable")
    xs = x[order]
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
    return np.logical_or.reduceat(W[:, order] > 0, starts, axis=1).sum(1)


def _solve_parabolas(XtWX: np.ndarray, XtWy: np.ndarray, distinct: np.ndarray) -> np.ndarray:
    out = np.full((len(XtWy), 3), np.nan)
    ok = distinct >= 3
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


# ---------------------------------------------------------------- one budget


@dataclass
class BudgetProfile:
    """One budget's points (replicates averaged, sorted by N), its parabolas, flags and bootstrap draws."""

    budget: float
    logN: np.ndarray  # every point of the budget
    logD: np.ndarray
    loss: np.ndarray
    weight: np.ndarray  # replicates per point
    fit: np.ndarray  # bool mask of the points inside the window
    coef_N: np.ndarray = field(default_factory=lambda: np.full(3, np.nan))  # centered at center_N
    coef_D: np.ndarray = field(default_factory=lambda: np.full(3, np.nan))
    center_N: float = math.nan
    center_D: float = math.nan
    flags: list[str] = field(default_factory=list)
    draws: dict[str, np.ndarray] = field(default_factory=dict)  # logN, logD, L per draw (NaN = failed)
    bias_sd: float = 0.0  # model-error spread added to the vertex draws [decades of N] (see _residual_draws)
    bias_L: float = 0.0  # the same for the vertex loss [nats/token]
    noise_scale: float = 1.0  # the residual bootstrap's sigma for this budget, x sigma (see _lack_of_fit_scale)

    @property
    def vertex_N(self) -> tuple[float, float]:
        xv, yv = vertex(self.coef_N, self.center_N)
        return float(xv), float(yv)

    @property
    def vertex_D(self) -> float:
        return float(vertex(self.coef_D, self.center_D)[0])

    @property
    def used(self) -> bool:
        return not self.flags

    def fitted(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(logN, logD, loss, weight) of the points in the window."""
        return self.logN[self.fit], self.logD[self.fit], self.loss[self.fit], self.weight[self.fit]

    def grid_bounds(self, axis: str = "N") -> tuple[float, float]:
        x = self.logN[self.fit] if axis == "N" else self.logD[self.fit]
        return float(x.min()), float(x.max())

    def residuals(self) -> np.ndarray:
        """Relative residuals (loss / parabola - 1) of the fitted points in log N."""
        x, _, y, _ = self.fitted()
        pred = np.polyval(uncentered(self.coef_N, self.center_N), x)
        return y / pred - 1.0


def _window_mask(logN: np.ndarray, loss: np.ndarray, weight: np.ndarray, window: float | None) -> np.ndarray:
    """Points within `window` decades of N of the budget's optimum: the vertex of the parabola through all points
    when it is convex and inside the grid (robust to ties and tiny changes of a loss), else the lowest loss."""
    if window is None:
        return np.ones(logN.size, bool)
    centre = math.nan
    if np.unique(logN).size >= 3:
        m = float(logN.mean())
        xv, _ = vertex(parabola_batch(logN - m, loss, weight[None, :])[0], m)
        if np.isfinite(xv) and logN.min() <= xv <= logN.max():
            centre = float(xv)
    if not math.isfinite(centre):
        centre = float(logN[np.argmin(loss)])
    return np.abs(logN - centre) <= window + 1e-12


def _fit_profile(pr: BudgetProfile, min_side: int) -> None:
    """Parabolas in log N and log D through the window's points, and the flags (from the vertex and the grid)."""
    x, d, y, w = pr.fitted()
    if np.unique(x).size < 3:
        pr.flags.append("too_few_points")
        return
    pr.center_N, pr.center_D = float(np.average(x, weights=w)), float(np.average(d, weights=w))
    pr.coef_N = parabola_batch(x - pr.center_N, y, w[None, :])[0]
    pr.coef_D = parabola_batch(d - pr.center_D, y, w[None, :])[0]
    xv, _ = pr.vertex_N
    if not (np.isfinite(xv) and np.isfinite(pr.vertex_D)):
        pr.flags.append("not_convex")
        return
    ux = np.unique(x)
    tol = EDGE_TOLERANCE * float(np.median(np.diff(ux)))
    if xv < ux[0] + tol or xv > ux[-1] - tol:
        pr.flags.append("edge_minimum")
    if min((ux < xv - tol).sum(), (ux > xv + tol).sum()) < min_side:
        pr.flags.append("too_few_points")


def _vertex_draws(pr: BudgetProfile, coef_N: np.ndarray, coef_D: np.ndarray) -> dict[str, np.ndarray]:
    """logN, logD, L of each draw's vertices; NaN (failed) when not convex or beyond the grid by more than
    FAILED_DRAW_REACH of its width."""
    xv, yv = vertex(coef_N, pr.center_N)
    dv, _ = vertex(coef_D, pr.center_D)
    ok = np.isfinite(xv) & np.isfinite(dv) & np.isfinite(yv)
    for axis, v in (("N", xv), ("D", dv)):
        lo, hi = pr.grid_bounds(axis)
        reach = FAILED_DRAW_REACH * (hi - lo)
        with np.errstate(invalid="ignore"):
            ok &= (v >= lo - reach) & (v <= hi + reach)
    nan = np.float64(np.nan)
    return {"logN": np.where(ok, xv, nan), "logD": np.where(ok, dv, nan), "L": np.where(ok, yv, nan)}


def _cubic_minimum(coef: np.ndarray, center: float) -> tuple[np.ndarray, np.ndarray]:
    """Position (uncentered x) and value of the local minimum of c0 + c1·u + c2·u² + c3·u³ (u = x - center)
    nearest the centre; NaN where there is none."""
    c0, c1, c2, c3 = (coef[..., j] for j in range(4))
    with np.errstate(invalid="ignore", divide="ignore"):
        cubic = np.abs(c3) > 1e-12 * np.abs(c2)
        disc = 4 * c2 * c2 - 12 * c3 * c1
        root = np.sqrt(np.where(disc >= 0, disc, np.nan))
        u0, u1 = (-2 * c2 + root) / (6 * c3), (-2 * c2 - root) / (6 * c3)
        u0 = np.where(2 * c2 + 6 * c3 * u0 > 0, u0, np.nan)  # keep the stationary points that are minima
        u1 = np.where(2 * c2 + 6 * c3 * u1 > 0, u1, np.nan)
        u = np.where(np.isnan(u1) | (np.abs(u0) <= np.abs(u1)), u0, u1)
        u = np.where(cubic, u, np.where(c2 > 0, -c1 / (2 * c2), np.nan))
        value = c0 + c1 * u + c2 * u * u + c3 * u ** 3
    return center + u, value


def _bias_beyond_noise(observed: float, null_draws: np.ndarray) -> float:
    """Spread to add for a model's bias: sqrt(d² - v) when the observed cubic-minus-parabola difference d lies
    beyond the BIAS_QUANTILE of |difference| over draws made without bias (robust to their heavy tails), else 0;
    v is the noise variance of the difference (from its interquartile range)."""
    d = null_draws[np.isfinite(null_draws)]
    if not math.isfinite(observed) or d.size < 20:
        return 0.0
    if abs(observed) <= np.quantile(np.abs(d), BIAS_QUANTILE):
        return 0.0
    q25, q75 = np.percentile(d, [25, 75])
    return math.sqrt(max(0.0, observed * observed - ((q75 - q25) / 1.349) ** 2))


def _residual_draws(pr: BudgetProfile, sigma: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Parametric bootstrap of one budget: losses redrawn around the fitted parabola with relative noise sigma_b
    (one per draw) / sqrt(replicates), both parabolas refitted. Done exactly on the sufficient statistics: with
    y* = yhat·(1 + sigma·e/sqrt(w)), the refitted coefficients are the fitted ones plus H·sigma·e with
    H = (X'WX)^-1 X'W diag(yhat/sqrt(w)) (both parabolas share the losses); H·e is drawn from its covariance
    H·H' (a few x a few), so a draw costs a few normal numbers whatever the number of points.

    Model error: with >= 5 points a cubic in log N is fitted too. Its minimum minus the parabola's (position and
    value) estimates the parabola's bias; when it is significant (beyond the BIAS_QUANTILE of the same difference over
    the draws, which carry noise but no bias), its size beyond the noise is added as Gaussian spread to the vertex draws
    (pr.bias_sd in decades of N, pr.bias_L in loss)."""
    x, d, y, w = pr.fitted()
    yhat = np.polyval(uncentered(pr.coef_N, pr.center_N), x)
    u, v = x - pr.center_N, d - pr.center_D
    designs = [np.stack([np.ones_like(u), u, u * u], 1), np.stack([np.ones_like(v), v, v * v], 1)]
    cubic = x.size >= 5 and np.unique(x).size >= 5
    if cubic:
        designs.append(np.stack([np.ones_like(u), u, u * u, u ** 3], 1))
    bases, rows = [], []
    for X in designs:
        XtWX = X.T @ (w[:, None] * X)
        bases.append(np.linalg.solve(XtWX, X.T @ (w * yhat)))
        rows.append(np.linalg.solve(XtWX, (X * (np.sqrt(w) * yhat)[:, None]).T))
    H = np.vstack(rows)
    lam, U = np.linalg.eigh(H @ H.T)  # H e' ~ N(0, H H'): drawn as U sqrt(lam) g, g ~ N(0, I)
    z = rng.standard_normal((sigma.size, lam.size)) @ (U * np.sqrt(np.clip(lam, 0.0, None))).T * sigma[:, None]
    out = _vertex_draws(pr, bases[0][None, :] + z[:, :3], bases[1][None, :] + z[:, 3:6])
    if cubic:
        X3 = designs[2]
        observed = np.linalg.solve(X3.T @ (w[:, None] * X3), X3.T @ (w * y))
        cub_x, cub_y = _cubic_minimum(observed, pr.center_N)
        null_x, null_y = _cubic_minimum(bases[2][None, :] + z[:, 6:], pr.center_N)  # draws: no bias by design
        par_x, par_y = vertex(bases[0][None, :] + z[:, :3], pr.center_N)
        xv, yv = pr.vertex_N
        pr.bias_sd = _bias_beyond_noise(float(cub_x) - xv, null_x - par_x)
        pr.bias_L = _bias_beyond_noise(float(cub_y) - yv, null_y - par_y)
    shift = rng.standard_normal((2, sigma.size))
    out["logN"] = out["logN"] + pr.bias_sd * shift[0]
    out["logD"] = out["logD"] - pr.bias_sd * shift[0]
    out["L"] = out["L"] + pr.bias_L * shift[1]
    return out


def _runs_draws(pr: BudgetProfile, n_boot: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Nonparametric bootstrap of one budget: its points resampled with replacement, both parabolas refitted.
    Memory is bounded by refitting in chunks of draws."""
    x, d, y, w = pr.fitted()
    n = x.size
    chunk = max(1, _DRAW_CHUNK_CELLS // max(n, 1))
    parts_N, parts_D = [], []
    for start in range(0, n_boot, chunk):
        counts = rng.multinomial(n, np.full(n, 1.0 / n), size=min(chunk, n_boot - start)).astype(float)
        W = counts * w[None, :]
        parts_N.append(parabola_batch(x - pr.center_N, y, W))
        parts_D.append(parabola_batch(d - pr.center_D, y, W))
    return _vertex_draws(pr, np.concatenate(parts_N), np.concatenate(parts_D))


# ---------------------------------------------------------------- the result


@dataclass(eq=False, repr=False)
class IsoflopFit(AllocationFit):
    """IsoFLOP fit (approach 2): the AllocationFit laws N_opt, D_opt, L_opt (power laws in C), the loss frontier
    L_frontier (L = E + A·C^-gamma through the budgets' optimal losses, when >= 3 budgets are used; predict uses it
    for L_opt because a pure power law in C has no irreducible loss and extrapolates too low), and .budgets: one row
    per budget (optimum with its interval, flags, whether it entered the laws, parabola coefficients for plotting)."""

    kind = "isoflop"
    table_name = "budgets"
    fit_members = ("N_opt", "D_opt", "L_opt", "L_frontier")
    summary_keys = ("n_budgets", "n_used", "n_runs", "window", "bootstrap", "bootstrap_reason",
                    "min_points_per_side")

    budgets: pd.DataFrame = field(default_factory=pd.DataFrame)
    L_frontier: SaturatingFit | None = None

    def predict(self, C) -> dict:
        """Compute-optimal N [params], D [tokens] and loss at C [FLOPs]; the loss from L_frontier when present."""
        out = super().predict(C)
        if self.L_frontier is not None:
            out["L_opt"] = self.L_frontier.predict(C)
        return out

    def predict_samples(self, C) -> dict:
        """Draws of the same three quantities, each (n_draws, *C.shape)."""
        out = super().predict_samples(C)
        if self.L_frontier is not None:
            out["L_opt"] = self.L_frontier.predict_samples(C)
        return out

    def table_lines(self) -> list[str]:
        lines = ["  per budget:      C [FLOPs]   N_opt [params] (95% CI)          D_opt [tokens]   L_opt   flags"]
        for r in self.budgets.to_dict("records"):
            ci = (f"[{r['N_opt_lo']:.3g}, {r['N_opt_hi']:.3g}] ({r['n_ok']}/{r['n_total']})"
                  if not r.get("N_opt_reason") else f"undetermined: {r['N_opt_reason']}")
            scale = r.get("noise_scale", 1.0)
            scatter = (f"  (points scatter {scale:.2g}x the noise model: sigma x {scale:.2g} in its draws)"
                       if scale and scale > 1 else "")
            lines.append(f"    {r['budget']:14.4g}   {r['N_opt']:10.4g} {ci}   {r['D_opt']:12.4g}   "
                         f"{r['L_opt']:.4f}   {','.join(r['flags']) or '-'}{'' if r['used'] else ' (not used)'}"
                         + scatter)
        if self.L_frontier is not None:
            lines.append("  " + self.L_frontier.headline())
        bend = self.diagnostics.get("frontier_bend")
        if bend:
            iv = bend.get("curvature_interval")
            iv = f"95% [{iv[0]:.3g}, {iv[1]:.3g}]" if isinstance(iv, list) else str(iv)
            verdict = " - falls faster at larger budgets: no loss law here follows it" if bend.get("accelerates") else ""
            lines.append("  frontier bend: d ln L_opt / d ln C between budgets " + ", ".join(
                f"{v:.3f}" for v in bend["local_slopes"]) + f"; curvature in ln C {bend['curvature']:.3g} {iv}{verdict}")
        return lines


# ---------------------------------------------------------------- the fit


def _profiles(df: pd.DataFrame, budget: np.ndarray, window: float | None, min_side: int) -> list[BudgetProfile]:
    """One BudgetProfile per budget; sorts once, so it is linear (after the sort) in the rows."""
    order = np.lexsort((df["N"].to_numpy(float), budget))
    b = budget[order]
    logN = np.log10(df["N"].to_numpy(float))[order]
    logD = np.log10(df["D"].to_numpy(float))[order]
    loss = df["loss"].to_numpy(float)[order]
    weight = df["n_replicates"].to_numpy(float)[order]
    starts = np.flatnonzero(np.r_[True, b[1:] != b[:-1]])
    stops = np.r_[starts[1:], b.size]
    profiles = []
    for s, e in zip(starts, stops):
        sl = slice(s, e)
        pr = BudgetProfile(budget=float(b[s]), logN=logN[sl], logD=logD[sl], loss=loss[sl], weight=weight[sl],
                           fit=_window_mask(logN[sl], loss[sl], weight[sl], window))
        _fit_profile(pr, min_side)
        profiles.append(pr)
    return profiles


def _noise(profiles: list[BudgetProfile], replicates: NoiseEstimate) -> NoiseEstimate:
    """The replicate estimate when there is one, else sigma from the parabolas' residuals."""
    if replicates.determined:
        return replicates
    fitted = [pr for pr in profiles if np.isfinite(pr.coef_N).all()]
    r = np.concatenate([pr.residuals() for pr in fitted]) if fitted else np.empty(0)
    w = np.concatenate([pr.fitted()[3] for pr in fitted]) if fitted else np.empty(0)
    dof = sum(int(pr.fit.sum()) - 3 for pr in fitted)
    return residual_noise(r, w, dof)


def _choose_bootstrap(requested: str, noise: NoiseEstimate, used: list[BudgetProfile]) -> tuple[str, str]:
    """(method, reason it cannot be used or ""). auto: residual when sigma is known, else runs when every used budget
    has >= 5 points, else budgets when >= 5 budgets are used."""
    min_points = min(int(pr.fit.sum()) for pr in used)
    can = {"residual": "" if noise.determined else f"no noise estimate ({noise.reason})",
           "runs": "" if min_points >= MIN_RESAMPLE_UNITS else
           f"resampling runs is degenerate with {min_points} points in a budget (< {MIN_RESAMPLE_UNITS})",
           "budgets": "" if len(used) >= MIN_RESAMPLE_UNITS else
           f"resampling budgets is degenerate with {len(used)} usable budgets (< {MIN_RESAMPLE_UNITS})"}
    if requested != "auto":
        return requested, can[requested]
    for method in ("residual", "runs", "budgets"):
        if not can[method]:
            return method, ""
    return "residual", "; ".join(can.values())


def _lack_of_fit_scale(pr: BudgetProfile, sigma: float) -> float:
    """sqrt(chi2 / dof) of the budget's parabola residuals against the noise model (relative sd sigma of one run,
    sigma / sqrt(replicates) of a point) when that chi-square is beyond its 95% point, else 1: a budget whose points
    scatter about its parabola more than the noise allows (a profile the parabola does not follow, or runs noisier
    than the replicates near the optimum, such as the shortest ones) gets that much more noise in its draws."""
    dof = int(pr.fit.sum()) - 3
    if dof < 1 or not (math.isfinite(sigma) and sigma > 0):
        return 1.0
    chi2 = float(np.sum(pr.fitted()[3] * pr.residuals() ** 2) / sigma ** 2)
    return math.sqrt(chi2 / dof) if chi2 > chdtri(dof, 0.05) else 1.0


def _budget_draws(profiles, method: str, noise: NoiseEstimate, n_boot: int, rng) -> None:
    """Fill each profile's draws (per-budget vertices) for the residual or runs bootstrap."""
    sigma = noise.sigma_draws(n_boot, rng) if method == "residual" else None
    for pr in profiles:
        if not np.isfinite(pr.coef_N).all() or not np.isfinite(pr.coef_D).all():
            pr.draws = {k: np.full(n_boot, np.nan) for k in ("logN", "logD", "L")}
        elif method == "residual":
            pr.noise_scale = _lack_of_fit_scale(pr, float(noise.sigma))
            pr.draws = _residual_draws(pr, sigma * pr.noise_scale, rng)
        else:
            pr.draws = _runs_draws(pr, n_boot, rng)


def _drop_undetermined_vertices(profiles: list[BudgetProfile],
                                used: list[BudgetProfile]) -> tuple[list[BudgetProfile], str]:
    """Flag "vertex_undetermined" the used budgets whose own vertex draws succeed less than MIN_OK_FRACTION of the
    time: like an edge budget, such a budget is reported but left out of the laws, instead of failing every law's
    draw with it. Returns (the budgets still used, reason the laws' intervals are undetermined or ""): when fewer
    than MIN_LINE_BUDGETS budgets would remain, none is dropped and the laws' intervals are undetermined."""
    weak = [pr for pr in used if np.isfinite(pr.draws["logN"]).mean() < MIN_OK_FRACTION]
    if not weak:
        return used, ""
    kept = [pr for pr in used if pr not in weak]
    if len(kept) < MIN_LINE_BUDGETS:
        return used, (f"only {len(kept)} budget(s) have a determined vertex interval "
                      f"(< {MIN_LINE_BUDGETS}; the others' vertex draws succeed < {MIN_OK_FRACTION:.0%})")
    for pr in weak:
        pr.flags.append("vertex_undetermined")
    return kept, ""


def _excess_variance(resid: np.ndarray, dof: int, draws: np.ndarray) -> float:
    """Variance of the residuals about a law beyond what the optima's own draws explain, counted only when the
    excess is significant (residual variance / draw variance above the 95% point of chi2(dof) / dof); else 0.
    Testing first keeps the term from widening every interval when the law fits (a truncated estimate is biased
    up)."""
    if dof < 1:
        return 0.0
    resid_var = float(np.sum(resid ** 2) / dof)
    with np.errstate(invalid="ignore"):
        noise_var = float(np.nanmean(np.nanvar(draws, axis=0))) if draws.size else math.nan
    if not math.isfinite(noise_var) or noise_var <= 0:
        return 0.0
    if resid_var <= noise_var * chdtri(dof, 0.05) / dof:  # the 95% point of chi2(dof)
        return 0.0
    return resid_var - noise_var


def _with_model_error(draws: np.ndarray, extra_var: float, rng: np.random.Generator) -> np.ndarray:
    """Draws with independent model-error noise of variance extra_var added to every budget's optimum."""
    if extra_var <= 0:
        return draws
    return draws + math.sqrt(extra_var) * rng.standard_normal(draws.shape)


def _line_law(logC: np.ndarray, est: np.ndarray, draws: np.ndarray | None, logC_draws: np.ndarray | None,
              method: str, reason: str, name: str, y_name: str) -> PowerLawFit:
    """A power law in C through the budgets' optima (log10 values); its draws refit the line on each row of draws
    (n_boot x n_used, log10; a failed budget's draw leaves that budget out of that row's line, and a row with fewer
    than MIN_LINE_BUDGETS successful budgets fails), at logC_draws when budgets were resampled."""
    i0, s0 = weighted_line(logC, est, np.ones(est.size))
    C = 10 ** logC
    law_draws = None
    if draws is not None and not reason:
        ok = np.isfinite(draws).sum(axis=1) >= MIN_LINE_BUDGETS
        x = logC if logC_draws is None else logC_draws
        bi, bs = weighted_line(x, draws, np.ones_like(draws))  # non-finite entries carry no weight
        law_draws = {"coef": np.where(ok, 10 ** bi, np.nan), "exponent": np.where(ok, bs, np.nan)}
    return power_law_result(C, 10 ** est, float(10 ** i0), float(s0), draws=law_draws, name=name,
                            x_name="C [FLOPs]", y_name=y_name, method=method,
                            undetermined_reason="" if law_draws is not None else
                            (reason or "no bootstrap draws requested"))


def _frontier(logC: np.ndarray, L: np.ndarray, L_draws: np.ndarray | None, method: str, reason: str,
              rng: np.random.Generator) -> tuple[SaturatingFit, float]:
    """L(C) = E + A·C^-gamma through the used budgets' optimal losses, each draw refitted on that draw's optima (with
    the model-error term when the optima scatter about the curve more than their draws explain); and that term."""
    theta = saturating_batch(logC, L[None, :])[0]
    params = {"E": float(theta[0]), "A": float(theta[1]), "gamma": float(theta[2])}
    resid = np.log10(L) - np.log10(params["E"] + params["A"] * (10 ** logC) ** -params["gamma"])
    diagnostics = {"n_points": int(L.size), "rmse_log10": float(np.sqrt(np.mean(resid ** 2))),
                   "C_min": float(10 ** logC.min()), "C_max": float(10 ** logC.max()),
                   "E_at_bound": bool(theta[0] <= 1e-9 * L.min())}
    extra = 0.0
    if L_draws is None or reason:
        why = reason or "no bootstrap draws requested"
        intervals = {k: Interval.undetermined(why, method=method) for k in params}
        return SaturatingFit(params=params, intervals=intervals, diagnostics=diagnostics,
                             name="loss frontier (isoFLOP optima)"), extra
    with np.errstate(invalid="ignore", divide="ignore"):
        log_draws = np.log10(L_draws)
    extra = _excess_variance(resid, L.size - 3, log_draws)
    log_draws = _with_model_error(log_draws, extra, rng)
    t = _saturating_rows(logC, 10 ** log_draws)
    ok = np.isfinite(t).all(axis=1)
    draws = {k: np.where(ok, t[:, j], np.nan) for j, k in enumerate(("E", "A", "gamma"))}
    intervals = {k: interval_from_draws(v, method=method) for k, v in draws.items()}
    unreliable = unreliable_reasons(params, intervals, exponents={"gamma": LOSS_EXPONENT})
    return SaturatingFit(params=params, intervals=intervals, draws=draws, diagnostics=diagnostics,
                         unreliable=unreliable, name="loss frontier (isoFLOP optima)"), math.sqrt(extra)


def _saturating_rows(logC: np.ndarray, L_draws: np.ndarray) -> np.ndarray:
    """saturating_batch per row on the budgets whose vertex draw succeeded in that row (rows grouped by which
    succeeded); a row with fewer than MIN_FRONTIER_BUDGETS successful budgets is NaN."""
    finite = np.isfinite(L_draws)
    out = np.full((len(L_draws), 3), np.nan)
    patterns, which = np.unique(finite, axis=0, return_inverse=True)
    for j, cols in enumerate(patterns):
        if cols.sum() >= MIN_FRONTIER_BUDGETS:
            rows = which.ravel() == j
            out[rows] = saturating_batch(logC[cols], L_draws[rows][:, cols])
    return out


def _budget_table(profiles: list[BudgetProfile], method: str, reason: str) -> pd.DataFrame:
    rows = []
    for pr in profiles:
        xv, yv = pr.vertex_N if np.isfinite(pr.coef_N).all() else (math.nan, math.nan)
        dv = pr.vertex_D if np.isfinite(pr.coef_D).all() else math.nan
        best = int(np.argmin(pr.loss))
        fitted = pr.fitted()
        row = {"budget": pr.budget, "N_opt": 10 ** xv, "D_opt": 10 ** dv, "L_opt": yv}
        for key, draws, to_lin in (("N_opt", pr.draws.get("logN"), True), ("D_opt", pr.draws.get("logD"), True),
                                   ("L_opt", pr.draws.get("L"), False)):
            iv = (Interval.undetermined(reason or "no per-budget draws with this bootstrap", method=method)
                  if draws is None or reason else interval_from_draws(draws, method=method))
            lo, hi = (10 ** iv.lo, 10 ** iv.hi) if to_lin else (iv.lo, iv.hi)
            row.update({f"{key}_lo": lo, f"{key}_hi": hi, f"{key}_reason": iv.reason})
        row.update(bias_sd=pr.bias_sd, bias_L=pr.bias_L, noise_scale=pr.noise_scale,
                   n_ok=int(np.isfinite(pr.draws["logN"]).sum()) if pr.draws else 0,
                   n_total=int(pr.draws["logN"].size) if pr.draws else 0,
                   n_points=int(pr.logN.size), n_fit=int(pr.fit.sum()), n_runs=int(pr.weight.sum()),
                   flags=list(pr.flags), used=pr.used, best_N=float(10 ** pr.logN[best]),
                   best_loss=float(pr.loss[best]),
                   parabola_N=uncentered(pr.coef_N, pr.center_N) if np.isfinite(pr.coef_N).all() else [math.nan] * 3,
                   parabola_D=uncentered(pr.coef_D, pr.center_D) if np.isfinite(pr.coef_D).all() else [math.nan] * 3,
                   N_fit_min=float(10 ** fitted[0].min()), N_fit_max=float(10 ** fitted[0].max()),
                   D_fit_min=float(10 ** fitted[1].min()), D_fit_max=float(10 ** fitted[1].max()))
        rows.append(row)
    return pd.DataFrame(rows)


def _law_draws(used, logC, est, method, reason, n_boot, rng):
    """The laws' inputs per draw: (boot, logC_draws, L_draws, model_error); with the residual or runs bootstrap the
    budgets' own draws must already be made (_budget_draws).

    boot: key (N, D, L) -> (n_boot x n_used) log10 optima per draw, None without draws; with the residual or runs
    bootstrap they are the budgets' own vertex draws plus the law-level model-error term (model_error, log10), and
    L_draws are the raw vertex losses for the frontier; with the budgets bootstrap the optima of resampled budgets
    at logC_draws (a draw with fewer than 2 distinct budgets fails)."""
    boot: dict = {key: None for key in est}
    logC_draws = L_draws = None
    model_error: dict[str, float] = {}
    if reason:
        return boot, logC_draws, L_draws, model_error
    if method in ("residual", "runs"):
        boot = {"N": np.stack([pr.draws["logN"] for pr in used], 1), "D": np.stack([pr.draws["logD"] for pr in used], 1)}
        L_draws = np.stack([pr.draws["L"] for pr in used], 1)
        with np.errstate(invalid="ignore", divide="ignore"):
            boot["L"] = np.log10(L_draws)
        for key in ("N", "D", "L"):
            i0, s0 = weighted_line(logC, est[key], np.ones(logC.size))
            extra = _excess_variance(est[key] - i0 - s0 * logC, logC.size - 2, boot[key])
            model_error[key] = math.sqrt(extra)
            boot[key] = _with_model_error(boot[key], extra, rng)
    else:
        picks = rng.integers(0, len(used), size=(n_boot, len(used)))
        distinct = (np.diff(np.sort(picks, axis=1), axis=1) > 0).sum(1) + 1
        logC_draws = logC[picks]
        boot = {key: np.where(distinct[:, None] >= 2, v[picks], np.nan) for key, v in est.items()}
    return boot, logC_draws, L_draws, model_error


def _budget_unreliable(table: pd.DataFrame) -> dict[str, str]:
    """Unreliable marks of the budgets: flagged ones (not used in the laws), and used ones whose N_opt interval
    spans more than MAX_SPAN_RATIO."""
    out = {}
    for r in table.to_dict("records"):
        if r["flags"]:
            out[f"budget {r['budget']:.4g}"] = "flagged " + ", ".join(r["flags"]) + "; not used in the laws"
        elif not r["N_opt_reason"] and r["N_opt_hi"] / r["N_opt_lo"] > MAX_SPAN_RATIO:
            out[f"budget {r['budget']:.4g}"] = f"N_opt interval spans {r['N_opt_hi'] / r['N_opt_lo']:.3g}x"
    return out


def fit_isoflop(df: pd.DataFrame, *, window: float | None = None, n_boot: int = 1000, seed: int = 0,
                k: float | None = None, bootstrap: str = "auto", min_points_per_side: int = 1) -> IsoflopFit:
    """Approach 2: parabola per budget, then N_opt(C), D_opt(C), L_opt(C) power laws across usable budgets, and the
    loss frontier L = E + A·C^-gamma through their optimal losses (>= 3 usable budgets).

    df: runs with N [params], D [tokens], loss and a `budget` column (else C, else k·N·D with k = 6, grouped
    within 5%). Runs that differ only in seed are averaged (analysis.noise). window: keep points within this many
    decades of N of the budget's optimum (None = all). bootstrap: "auto" (residual when the noise sigma is known,
    else runs, else budgets), "residual", "runs" or "budgets"; an interval that cannot be honestly computed is
    undetermined with the reason. Flags per budget, from the fitted vertex and the grid: edge_minimum (vertex not
    inside the grid by EDGE_TOLERANCE of a spacing), too_few_points (< 3 distinct N, or < min_points_per_side on a
    side of the vertex), not_convex, and (with the residual or runs bootstrap) vertex_undetermined (its vertex draws
    succeed < 90%). A flagged budget is reported but does not enter the laws; 2 are needed.
    """
    require_columns(df, ["N", "D", "loss"], "isoflop")
    if bootstrap not in BOOTSTRAPS:
        raise ConfigError("bootstrap", f"one of {BOOTSTRAPS}", bootstrap)
    if window is not None and not window > 0:
        raise ConfigError("window", "a positive distance in decades of N, or None for all points", window)
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 0:
        raise ConfigError("n_boot", "a non-negative number of bootstrap draws", n_boot)
    k_value = 6.0 if k is None else float(k)
    df = df.copy(deep=False)
    df.attrs = {}
    if "C" not in df.columns and "budget" not in df.columns:
        df["C"] = k_value * df["N"] * df["D"]
    df["budget"] = budgets_of(df, need=2, what="isoFLOP profiles (one parabola per budget)")
    points, replicate_noise = collapse_replicates(df)
    profiles = _profiles(points, points["budget"].to_numpy(float), window, min_points_per_side)
    used = [pr for pr in profiles if pr.used]
    if len(used) < 2:
        flagged = {f"{pr.budget:.3g}": pr.flags for pr in profiles if pr.flags}
        raise ConfigError("isoflop budgets", "at least 2 budgets whose loss minimum is interior and convex "
                          "(widen or re-centre the grids of the flagged budgets)", flagged)
    noise = _noise(profiles, replicate_noise)
    method, reason = _choose_bootstrap(bootstrap, noise, used)
    if n_boot == 0:
        reason = "no bootstrap draws requested (n_boot = 0)"
    label = f"bootstrap:{method}"
    rng = np.random.default_rng(seed)
    law_reason = reason  # why the laws' intervals are undetermined; the budgets' own intervals keep `reason`
    if method in ("residual", "runs") and not reason:
        _budget_draws(profiles, method, noise, n_boot, rng)
        used, law_reason = _drop_undetermined_vertices(profiles, used)
    logC = np.log10([pr.budget for pr in used])
    L_est = np.array([pr.vertex_N[1] for pr in used])
    est = {"N": np.array([pr.vertex_N[0] for pr in used]), "D": np.array([pr.vertex_D for pr in used]),
           "L": np.log10(L_est)}
    boot, logC_draws, L_draws, model_error = _law_draws(used, logC, est, method, law_reason, n_boot,
                                                        rng)
    labels = {"N": ("N_opt(C)", "N_opt [params]"), "D": ("D_opt(C)", "D_opt [tokens]"), "L": ("L_opt(C)", "L_opt")}
    laws = {key: _line_law(logC, est[key], boot[key], logC_draws, label, law_reason, *labels[key]) for key in est}
    frontier = None
    if len(used) >= MIN_FRONTIER_BUDGETS:
        frontier_reason = law_reason or ("" if method != "budgets" else "the frontier's draws need the residual or "
                                     "runs bootstrap")
        frontier, model_error["L_frontier"] = _frontier(logC, L_est, L_draws, label, frontier_reason, rng)
    fields = allocation_fields(laws["N"], laws["D"], laws["L"])
    unreliable = fields.pop("unreliable")
    bend = _frontier_bend(logC, L_est, L_draws, label)
    table = _budget_table(profiles, label, reason)
    unreliable.update(_budget_unreliable(table))
    diagnostics = {"n_budgets": len(profiles), "n_used": len(used), "n_runs": len(df),
                   "n_points": len(points),
                   "window": "all points" if window is None else f"{window} decades of N",
                   "bootstrap": label, "min_points_per_side": min_points_per_side,
                   "flagged": {f"{pr.budget:.4g}": pr.flags for pr in profiles if pr.flags}, "k": k_value,
                   "model_error_log10": model_error}
    if bend:
        diagnostics["frontier_bend"] = bend
    if not noise.determined:
        diagnostics["noise"] = noise.reason
    if law_reason:
        diagnostics["bootstrap_reason"] = law_reason
    if fields["draws"]:
        ok = np.isfinite(np.column_stack(list(fields["draws"].values()))).all(axis=1)
        diagnostics["n_ok"], diagnostics["n_total"] = int(ok.sum()), int(ok.size)
    return IsoflopFit(**fields, unreliable=unreliable, diagnostics=diagnostics, noise=noise.to_dict(),
                      name="isoFLOP (approach 2)", budgets=table,
                      L_frontier=frontier)


# ---------------------------------------------------------------- the loss frontier L(C) = E + A C^-gamma


def _frontier_bend(logC: np.ndarray, L: np.ndarray, L_draws: np.ndarray | None, method: str) -> dict:
    """How the optimal losses bend in log-log: the local slopes d ln L / d ln C between neighbouring budgets, and the
    curvature c2 of ln L = c0 + c1 x + c2 x^2 (x = ln C) with its interval over the vertex draws (>= 3 budgets).

    c2 > 0 (the decrease slows) is what an irreducible loss does, and the frontier L = E + A C^-gamma follows it;
    c2 < 0 (the decrease speeds up) is a bend that no law here can extrapolate: `accelerates` is then True when the
    interval excludes 0, and a power law through these budgets overpredicts the loss at larger ones."""
    if L.size < 3:
        return {}
    x = logC * math.log(10)
    x = x - x.mean()
    X = np.column_stack([np.ones_like(x), x, x ** 2])
    out = {"local_slopes": [float(v) for v in np.diff(np.log(L)) / np.diff(x)],
           "curvature": float(np.linalg.lstsq(X, np.log(L), rcond=None)[0][2])}
    if L_draws is None:
        out["curvature_interval"] = "undetermined: no vertex draws"
        return out
    with np.errstate(invalid="ignore", divide="ignore"):
        y = np.log(L_draws)
    ok = np.isfinite(y).all(axis=1)
    c2 = np.full(len(y), np.nan)
    if ok.any():
        c2[ok] = np.linalg.lstsq(X, y[ok].T, rcond=None)[0][2]
    iv = interval_from_draws(c2, method=method)
    out["curvature_interval"] = list(iv) if iv.determined else f"undetermined: {iv.reason}"
    out["accelerates"] = bool(iv.determined and iv.hi < 0)
    return out


def saturating_batch(logC: np.ndarray, L: np.ndarray, n_grid: int = 64, n_refine: int = 2) -> np.ndarray:
    """(E, A, gamma) of L ≈ E + A·C^-gamma per row of L (B x n), least squares on ln L, 0 <= E < min L.

    Variable projection: for a fixed E, ln(L - E) is a line in ln C, so A and gamma are closed-form; E is searched
    on a grid in [0, min L) and the grid is refined `n_refine` times around the best value. NaN rows stay NaN.
    logC: log10 C (n,).
    """
    L = np.atleast_2d(np.asarray(L, float))
    lc = np.asarray(logC, float) * math.log(10)
    lc = lc - lc.mean()
    ly = np.log(L)
    Lmin = L.min(axis=1)
    lo, hi = np.zeros(len(L)), np.ones(len(L))  # E as a fraction of min L
    frac = 1 - np.geomspace(1, 1e-4, n_grid)  # dense near min L
    best_E = np.full(len(L), np.nan)
    for _ in range(n_refine + 1):
        f = lo[:, None] + (hi - lo)[:, None] * frac[None, :]  # (B, G)
        E = Lmin[:, None] * f
        with np.errstate(invalid="ignore", divide="ignore"):
            z = np.log(L[:, None, :] - E[..., None])  # (B, G, n)
            la, slope = weighted_line(lc[None, None, :], z, np.ones_like(z))
            fit = np.log(E[..., None] + np.exp(la[..., None] + slope[..., None] * lc))
        sse = np.where(np.isfinite(fit).all(-1), ((ly[:, None, :] - fit) ** 2).sum(-1), np.inf)
        j = np.argmin(sse, axis=1)
        rows = np.arange(len(L))
        best_E, best_la, best_slope = E[rows, j], la[rows, j], slope[rows, j]
        step = np.diff(f, axis=1)
        left = np.where(j > 0, f[rows, np.maximum(j - 1, 0)], lo)
        right = np.where(j < n_grid - 1, f[rows, np.minimum(j + 1, n_grid - 1)], hi)
        lo, hi = left, np.maximum(right, left + 1e-12 * np.maximum(step.max(1), 1e-12))
        frac = np.linspace(0, 1, n_grid)
    A = np.exp(best_la - best_slope * 0.0)  # A at the centred ln C; moved back below
    gamma = -best_slope
    A = A * np.exp(gamma * np.asarray(logC, float).mean() * math.log(10))
    out = np.column_stack([best_E, A, gamma])
    out[~np.isfinite(L).all(axis=1)] = np.nan
    return out
