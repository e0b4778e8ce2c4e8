"""Power laws y = coef·x^exponent and the saturating law L(C) = E + A·C^-gamma, with bootstrap intervals.

Conventions: fits are least squares on natural-log residuals (a 2% miss counts the same at every scale).
Bootstrap resamples are represented as count weights (n_boot x n): row b says how many times each point was
drawn, so every resample is a weighted fit on the same points and all resamples are solved at once with numpy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares

from analysis.bootstrap import bootstrap_indices
from analysis.result import FitResult, json_safe, percentile_interval
from scaling.errors import ConfigError

# ---------------------------------------------------------------- bootstrap counts


def bootstrap_counts(n: int, n_boot: int, seed: int = 0, *, strata=None, groups=None) -> np.ndarray:
    """Count weights (n_boot x n, int) of bootstrap resamples of `n` rows.

    Plain: draw n rows with replacement. `groups` (one label per row): draw whole groups with replacement
    (analysis.bootstrap.bootstrap_indices). `strata` (one label per row): draw with replacement inside each
    stratum separately, keeping each stratum's size (e.g. resample runs within each FLOP budget).
    """
    if n_boot <= 0:
        return np.zeros((0, n), dtype=np.int64)
    if strata is None:
        idx = bootstrap_indices(n, n_boot, seed, groups=groups)
        return np.stack([np.bincount(i, minlength=n) for i in idx])
    labels = np.asarray(strata)
    if labels.shape != (n,):
        raise ConfigError("strata", f"one stratum label per row ({n} labels)", labels.shape)
    rng = np.random.default_rng(seed)
    counts = np.zeros((n_boot, n), dtype=np.int64)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        draws = rng.integers(0, members.size, size=(n_boot, members.size))
        for j in range(members.size):
            counts[:, members[j]] = (draws == j).sum(axis=1)
    return counts


def samples_summary(samples: np.ndarray, names: list[str]) -> tuple[dict, dict]:
    """Percentile intervals and bootstrap standard deviations of each column of `samples`."""
    intervals, stderr = {}, {}
    if samples is None or len(samples) == 0:
        return intervals, stderr
    for j, name in enumerate(names):
        col = samples[:, j]
        col = col[np.isfinite(col)]
        if col.size >= 2:
            intervals[name] = percentile_interval(col)
            stderr[name] = float(np.std(col, ddof=1))
    return intervals, stderr


def round_samples(samples, digits: int = 6) -> list:
    """Samples as nested lists rounded to `digits` significant digits (NaN -> None), for fit.json."""
    if samples is None:
        return []
    arr = np.asarray(samples, dtype=float)
    return [[float(f"{v:.{digits}g}") if math.isfinite(v) else None for v in row] for row in arr]


def format_value(v) -> str:
    """Short human form of a diagnostic value (floats to 4 significant digits)."""
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.4g}"
    return str(v)


def summary_lines(fit: FitResult, header: str, diag_keys=None) -> list[str]:
    """Header, one line per parameter with its 95% interval and bootstrap SE, then chosen diagnostics."""
    lines = [header, *fit.param_lines()]
    keys = diag_keys if diag_keys is not None else list(fit.diagnostics)
    for k in keys:
        v = fit.diagnostics.get(k)
        if isinstance(v, (int, float, str, bool, np.floating, np.integer)):
            lines.append(f"  {k}: {format_value(v)}")
    return lines


# ---------------------------------------------------------------- weighted line fits, batched


def weighted_line(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Intercept and slope of y ≈ i + s·x by weighted least squares, batched over leading axes.

    x, y, w broadcast to (..., n); entries with w == 0 or non-finite y are ignored. Returns NaN where fewer
    than two distinct x carry weight.
    """
    x, y, w = np.broadcast_arrays(np.asarray(x, float), np.asarray(y, float), np.asarray(w, float))
    w = np.where(np.isfinite(y) & np.isfinite(x), w, 0.0)
    y = np.where(w > 0, y, 0.0)
    x = np.where(w > 0, x, 0.0)
    sw = w.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        xm = (w * x).sum(-1) / sw
        ym = (w * y).sum(-1) / sw
        dx = x - xm[..., None]
        sxx = (w * dx * dx).sum(-1)
        sxy = (w * dx * (y - ym[..., None])).sum(-1)
        scale = np.maximum((w * x * x).sum(-1) / sw, 1.0)
        ok = sxx > 1e-12 * scale
        slope = np.where(ok, sxy / np.where(ok, sxx, 1.0), np.nan)
        intercept = np.where(ok, ym - slope * xm, np.nan)
    return intercept, slope


# ---------------------------------------------------------------- power law


@dataclass(repr=False, eq=False)
class PowerLawFit(FitResult):
    """y = coef·x^exponent fitted in log space. `samples` is (n_boot x 2) bootstrap draws of (coef, exponent)."""

    samples: np.ndarray | None = None
    x_name: str = "x"
    y_name: str = "y"

    def predict(self, x):
        """coef·x^exponent (same shape as x)."""
        return self.params["coef"] * np.asarray(x, dtype=float) ** self.params["exponent"]

    def predict_samples(self, x) -> np.ndarray:
        """Bootstrap draws of the prediction, shape (n_boot, *x.shape); empty if there are no samples."""
        x = np.asarray(x, dtype=float)
        if self.samples is None or len(self.samples) == 0:
            return np.empty((0, *x.shape))
        coef, expo = self.samples[:, 0], self.samples[:, 1]
        shape = (-1,) + (1,) * x.ndim
        return coef.reshape(shape) * x[None] ** expo.reshape(shape)

    def predict_interval(self, x, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
        """Pointwise percentile interval of the prediction at x from the bootstrap draws."""
        draws = self.predict_samples(x)
        if draws.shape[0] == 0:
            nan = np.full(np.shape(x), np.nan)
            return nan, nan.copy()
        with np.errstate(invalid="ignore"):
            lo, hi = np.nanpercentile(draws, [50 * (1 - level), 50 * (1 + level)], axis=0)
        return lo, hi

    def summary(self) -> str:
        head = f"{self.name}: {self.y_name} = {self.params['coef']:.4g} · {self.x_name}^{self.params['exponent']:.4f}"
        return "\n".join(summary_lines(self, head, ["n_points", "rmse_log", "x_min", "x_max", "bootstrap"]))

    def to_dict(self) -> dict:
        d = super().to_dict()
        d["samples"] = round_samples(self.samples)
        d["x_name"], d["y_name"], d["name"] = self.x_name, self.y_name, self.name
        return d

    @classmethod
    def from_dict(cls, d: dict) -> PowerLawFit:
        """Rebuild from to_dict() output (e.g. a law object read back from fit.json)."""
        samples = d.get("samples") or []
        arr = np.array([[np.nan if v is None else v for v in row] for row in samples], dtype=float).reshape(-1, 2)
        return cls(params={"coef": float(d["coef"]), "exponent": float(d["exponent"])},
                   intervals={k: tuple(v) for k, v in (d.get("intervals") or {}).items()},
                   stderr=dict(d.get("stderr") or {}), n_boot=int(d.get("n_boot") or len(arr)),
                   diagnostics=dict(d.get("diagnostics") or {}), samples=arr,
                   x_name=d.get("x_name", "x"), y_name=d.get("y_name", "y"), name=d.get("name", "power law"))


@dataclass(repr=False, eq=False)
class AllocationFit(FitResult):
    """Base of the fits that end in compute-optimal laws (approaches 1 and 2). params: a, b (exponents of N_opt,
    D_opt in C), N_coef, D_coef, L_coef, L_exponent; .N_opt, .D_opt, .L_opt: PowerLawFit laws in C [FLOPs];
    .samples: (n_boot x 6) draws in params order. Subclasses add their table (`table_name`) and diagnostics."""

    N_opt: PowerLawFit | None = None
    D_opt: PowerLawFit | None = None
    L_opt: PowerLawFit | None = None
    samples: np.ndarray | None = None
    table_name = ""  # the subclass's per-budget / per-FLOP-value DataFrame attribute, written by to_dict
    summary_keys = ()  # diagnostics shown by summary() (a class attribute, not a field)

    def predict(self, C) -> dict:
        """Compute-optimal N [params], D [tokens] and loss at C [FLOPs] from the three laws."""
        return {"N_opt": self.N_opt.predict(C), "D_opt": self.D_opt.predict(C), "L_opt": self.L_opt.predict(C)}

    def summary_head(self) -> list[str]:
        p = self.params
        head = (f"{self.name}: N_opt ∝ C^{p['a']:.3f}, D_opt ∝ C^{p['b']:.3f} "
                f"(N in params, D in tokens, C in FLOPs; a + b = {p['a'] + p['b']:.3f})")
        return summary_lines(self, head, list(self.summary_keys))

    def summary(self) -> str:
        lines = self.summary_head() + self.table_lines()
        for law in (self.N_opt, self.D_opt, self.L_opt):
            lines.append("  " + law.summary().splitlines()[0])
        return "\n".join(lines)

    def table_lines(self) -> list[str]:
        """Extra summary lines for the subclass's table (none by default)."""
        return []

    def to_dict(self) -> dict:
        d = super().to_dict()
        d["samples"] = round_samples(self.samples)
        d[self.table_name] = json_safe(getattr(self, self.table_name).to_dict(orient="records"))
        for name in ("N_opt", "D_opt", "L_opt"):
            d[name] = getattr(self, name).to_dict()
        return d


def power_law_result(x, y, coef: float, exponent: float, samples: np.ndarray | None, *, weights=None,
                     name: str = "power law", x_name: str = "x", y_name: str = "y",
                     bootstrap: str = "points") -> PowerLawFit:
    """Assemble a PowerLawFit from an estimate and its bootstrap draws (used by the fits that bootstrap a chain)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    w = np.ones_like(x) if weights is None else np.asarray(weights, float)
    resid = np.log(y) - np.log(coef) - exponent * np.log(x)
    ok = w > 0
    rmse = float(np.sqrt(np.average(resid[ok] ** 2, weights=w[ok]))) if ok.any() else math.nan
    ss_tot = float(np.sum(w[ok] * (np.log(y[ok]) - np.average(np.log(y[ok]), weights=w[ok])) ** 2)) if ok.any() else 0
    r2 = 1.0 - float(np.sum(w[ok] * resid[ok] ** 2)) / ss_tot if ss_tot > 0 else math.nan
    samples = None if samples is None else np.asarray(samples, float).reshape(-1, 2)
    intervals, stderr = samples_summary(samples, ["coef", "exponent"])
    n_boot = 0 if samples is None else len(samples)
    diagnostics = {"n_points": int(ok.sum()), "rmse_log": rmse, "r2_log": r2,
                   "x_min": float(x[ok].min()) if ok.any() else math.nan,
                   "x_max": float(x[ok].max()) if ok.any() else math.nan,
                   "bootstrap": bootstrap}
    if n_boot:
        diagnostics["boot_failed"] = int((~np.isfinite(samples).all(axis=1)).sum())
    return PowerLawFit(params={"coef": float(coef), "exponent": float(exponent)}, intervals=intervals,
                       stderr=stderr, n_boot=n_boot, diagnostics=diagnostics, samples=samples,
                       name=name, x_name=x_name, y_name=y_name)


def _positive_finite(name: str, values) -> np.ndarray:
    arr = np.asarray(values, dtype=float).ravel()
    bad = ~(np.isfinite(arr) & (arr > 0))
    if bad.any():
        raise ConfigError(name, "positive finite values", f"{int(bad.sum())} of {arr.size} values are not")
    return arr


def fit_power_law(x, y, weights=None, *, n_boot: int = 1000, seed: int = 0, name: str = "power law",
                  x_name: str = "x", y_name: str = "y") -> PowerLawFit:
    """Fit y = coef·x^exponent by (weighted) least squares of ln y on ln x; bootstrap by resampling points.

    Needs at least 2 points with distinct x (3 or more for a meaningful interval). `weights` multiply each
    point's squared log residual. Bootstrap draws where all picked points share one x are left out.
    """
    x, y = _positive_finite(f"{name}: x", x), _positive_finite(f"{name}: y", y)
    if x.size != y.size:
        raise ConfigError(f"{name}: x, y", "arrays of equal length", (x.size, y.size))
    w = np.ones_like(x) if weights is None else np.asarray(weights, float).ravel()
    if w.size != x.size or not np.all(np.isfinite(w) & (w >= 0)):
        raise ConfigError(f"{name}: weights", f"{x.size} non-negative finite weights", w.size)
    if np.unique(x[w > 0]).size < 2:
        raise ConfigError(f"{name}: x", "at least 2 points with distinct x to fit a power law",
                          f"{np.unique(x[w > 0]).size} distinct")
    lx, ly = np.log(x), np.log(y)
    lc, e = weighted_line(lx, ly, w)
    samples = None
    if n_boot > 0:
        counts = bootstrap_counts(x.size, n_boot, seed)
        blc, be = weighted_line(lx, ly, counts * w)
        samples = np.column_stack([np.exp(blc), be])
    return power_law_result(x, y, float(np.exp(lc)), float(e), samples, weights=w, name=name,
                            x_name=x_name, y_name=y_name)


# ---------------------------------------------------------------- saturating law


@dataclass(repr=False, eq=False)
class SaturatingFit(FitResult):
    """L(C) = E + A·C^-gamma (E irreducible loss). `samples` is (n_boot x 3) draws of (E, A, gamma);
    `power_law` is the competing pure power law L = coef·C^exponent fitted to the same points."""

    samples: np.ndarray | None = None
    power_law: PowerLawFit | None = None
    x_name: str = "C [FLOPs]"
    y_name: str = "L [nats/token]"

    def predict(self, C):
        """E + A·C^-gamma."""
        p = self.params
        return p["E"] + p["A"] * np.asarray(C, dtype=float) ** (-p["gamma"])

    def predict_samples(self, C) -> np.ndarray:
        """Bootstrap draws of L(C), shape (n_boot, *C.shape)."""
        C = np.asarray(C, dtype=float)
        if self.samples is None or len(self.samples) == 0:
            return np.empty((0, *C.shape))
        shape = (-1,) + (1,) * C.ndim
        E, A, g = (self.samples[:, j].reshape(shape) for j in range(3))
        return E + A * C[None] ** (-g)

    def summary(self) -> str:
        p, d = self.params, self.diagnostics
        head = f"{self.name}: {self.y_name} = {p['E']:.4g} + {p['A']:.4g} · {self.x_name}^-{p['gamma']:.4f}"
        lines = summary_lines(self, head, ["n_points", "rmse_log", "rmse_log_power", "E_at_bound"])
        if self.power_law is not None:
            pl = self.power_law.params
            lines.append(f"  pure power law: L = {pl['coef']:.4g} · C^{pl['exponent']:.4f}")
            lines.append(f"  preferred by BIC: {d.get('preferred')} (saturating {d.get('bic_saturating', 0):.2f} "
                         f"with 3 params vs power {d.get('bic_power', 0):.2f} with 2)")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        d = super().to_dict()
        d["samples"] = round_samples(self.samples)
        if self.power_law is not None:
            d["power_law_fit"] = self.power_law.to_dict()
        return d


def _saturating_objective(theta, lc, ly, w):
    """Weighted sum of squared log residuals for theta (..., 3) = (E, lnA, gamma)."""
    E, la, g = theta[..., 0:1], theta[..., 1:2], theta[..., 2:3]
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        m = np.log(E + np.exp(la - g * lc))
        r = np.where(w > 0, ly - m, 0.0)
    out = (w * r * r).sum(-1)
    return np.where(np.isfinite(out), out, np.inf)


def _saturating_batch(lc: np.ndarray, ly: np.ndarray, W: np.ndarray, n_grid: int = 48, n_iter: int = 40):
    """Fit (E, lnA, gamma) for each row of count weights W (B x n) with 0 <= E < min L.

    Variable projection for the start: for E on a grid in [0, min L), ln(L - E) is linear in ln C, so lnA and
    gamma come in closed form; the best grid point is refined by batched Levenberg-Marquardt on log residuals.
    """
    L = np.exp(ly)
    Lmin = np.where(W > 0, L, np.inf).min(-1)  # (B,)
    frac = np.concatenate([[0.0], 1 - np.geomspace(1, 1e-3, n_grid - 1)])  # denser near min L
    E = Lmin[:, None] * frac[None, :] * (1 - 1e-6)  # (B, G)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = np.log(L[None, None, :] - E[..., None])  # (B, G, n)
    la, slope = weighted_line(lc[None, None, :], z, W[:, None, :])
    theta = np.stack([E, la, -slope], axis=-1)  # (B, G, 3)
    obj = _saturating_objective(theta, lc, ly, W[:, None, :])
    best = np.argmin(obj, axis=1)
    theta = theta[np.arange(len(W)), best]  # (B, 3)
    f = obj[np.arange(len(W)), best]
    lam = np.full(len(W), 1e-3)
    upper = Lmin * (1 - 1e-9)
    for _ in range(n_iter):
        E_, la_, g_ = theta[:, 0:1], theta[:, 1:2], theta[:, 2:3]
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            P = np.exp(la_ - g_ * lc)
            S = E_ + P
            r = np.where(W > 0, ly - np.log(S), 0.0)
            J = np.stack([1 / S, P / S, -lc * P / S], axis=-1)  # d model / d theta, (B, n, 3)
        J = np.where(np.isfinite(J), J, 0.0)
        JtJ = np.einsum("bn,bni,bnj->bij", W, J, J)
        Jtr = np.einsum("bn,bni,bn->bi", W, J, r)
        A = JtJ + lam[:, None, None] * (np.eye(3) * (np.diagonal(JtJ, axis1=1, axis2=2)[:, None, :] + 1e-12))
        try:
            step = np.linalg.solve(A, Jtr[..., None])[..., 0]
        except np.linalg.LinAlgError:
            step = np.stack([np.linalg.lstsq(a, b, rcond=None)[0] for a, b in zip(A, Jtr)])
        cand = theta + np.where(np.isfinite(step), step, 0.0)
        cand[:, 0] = np.clip(cand[:, 0], 0.0, upper)
        fc = _saturating_objective(cand, lc, ly, W)
        better = fc < f
        theta = np.where(better[:, None], cand, theta)
        f = np.where(better, fc, f)
        lam = np.where(better, lam * 0.3, lam * 10.0)
    return theta, f


def _information_criteria(rss: float, n: int, p: int) -> tuple[float, float]:
    """AIC and BIC of a Gaussian model of the log residuals with p parameters."""
    ll_term = n * math.log(max(rss, 1e-300) / n)
    return ll_term + 2 * p, ll_term + p * math.log(n)


def fit_saturating(C, L, *, n_boot: int = 1000, seed: int = 0) -> SaturatingFit:
    """Fit L(C) = E + A·C^-gamma (0 <= E < min L) on log residuals, and the pure power law L = k·C^-e.

    Needs at least 4 points (3 parameters + 1 degree of freedom). diagnostics: preferred ("saturating" or
    "power", by BIC on log residuals; AIC also reported), power_law {coef, exponent}, rmse_log of both,
    aic_*/bic_* with the parameter counts (3 and 2). Bootstrap resamples points (C, L pairs).
    """
    C, L = _positive_finite("loss_vs_compute: C", C), _positive_finite("loss_vs_compute: L", L)
    if C.size != L.size:
        raise ConfigError("loss_vs_compute: C, L", "arrays of equal length", (C.size, L.size))
    if C.size < 4 or np.unique(C).size < 4:
        raise ConfigError("loss_vs_compute", "at least 4 points with distinct C to fit L = E + A·C^-gamma "
                          "(3 parameters)", f"{np.unique(C).size} distinct")
    # Center ln C so lnA is well conditioned; convert back at the end.
    c0 = float(np.mean(np.log(C)))
    lc, ly = np.log(C) - c0, np.log(L)
    theta, _ = _saturating_batch(lc, ly, np.ones((1, C.size)))
    theta = theta[0]
    upper = L.min() * (1 - 1e-9)

    def resid(t):
        return ly - np.log(t[0] + np.exp(t[1] - t[2] * lc))

    x0 = np.clip(theta, [0, -np.inf, -np.inf], [upper, np.inf, np.inf])
    x0[0] = min(max(x0[0], 0.0), upper * (1 - 1e-9))
    sol = least_squares(resid, x0, bounds=([0, -np.inf, -np.inf], [upper, np.inf, np.inf]), method="trf")
    if sol.cost * 2 <= np.sum(resid(theta) ** 2):
        theta = sol.x
    E, la, g = (float(v) for v in theta)
    A = math.exp(la + g * c0)
    rss_sat = float(np.sum(resid(theta) ** 2))

    power = fit_power_law(C, L, n_boot=n_boot, seed=seed, name="L(C) pure power law", x_name="C [FLOPs]",
                          y_name="L [nats/token]")
    rss_pow = float(np.sum((ly - np.log(power.predict(C))) ** 2))
    n = C.size
    aic_s, bic_s = _information_criteria(rss_sat, n, 3)
    aic_p, bic_p = _information_criteria(rss_pow, n, 2)

    samples = None
    if n_boot > 0:
        counts = bootstrap_counts(n, n_boot, seed)
        bt, bf = _saturating_batch(lc, ly, counts.astype(float))
        ok = np.isfinite(bf) & (np.count_nonzero(counts, axis=1) >= 3)
        samples = np.column_stack([bt[:, 0], np.exp(bt[:, 1] + bt[:, 2] * c0), bt[:, 2]])
        samples[~ok] = np.nan
    names = ["E", "A", "gamma"]
    intervals, stderr = samples_summary(samples, names)
    diagnostics = {
        "n_points": n, "rmse_log": math.sqrt(rss_sat / n), "rmse_log_power": math.sqrt(rss_pow / n),
        "n_params_saturating": 3, "n_params_power": 2,
        "aic_saturating": aic_s, "aic_power": aic_p, "bic_saturating": bic_s, "bic_power": bic_p,
        "preferred": "saturating" if bic_s < bic_p else "power",
        "preferred_by_aic": "saturating" if aic_s < aic_p else "power",
        "power_law": {"coef": power.params["coef"], "exponent": power.params["exponent"]},
        "E_at_bound": bool(E <= 1e-12 or E >= upper * (1 - 1e-6)),
        "C_min": float(C.min()), "C_max": float(C.max()),
    }
    return SaturatingFit(params={"E": E, "A": A, "gamma": g}, intervals=intervals, stderr=stderr,
                         n_boot=0 if samples is None else len(samples), diagnostics=diagnostics,
                         samples=samples, power_law=power, name="loss vs compute")

